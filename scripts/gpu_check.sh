#!/usr/bin/env bash
# scripts/gpu_check.sh [OUT_DIR] - everything to run the day an NVIDIA GPU is lent, in one command.
#
#   1. fails at once, with exit code 2 and a message, when there is no GPU;
#   2. installs the `gpu` extra (cupy-cuda12x) if CuPy is not importable: from
#      $GPU_WHEELS (a folder of wheels, for a machine without network) or the index;
#   3. the GPU parity tests on the real device: pytest -m "gpu or emulated_gpu"
#      (tests/kernels against the device, replay --backend cuda == numpy on two
#      worlds, and the emulated-device tests where g++ is present);
#   4. nvcc's register/spill report (scripts/check_kernels.py), when nvcc is present;
#   5. streamguard bench --quick with the cuda backend: bench.json and bench.png.
#
# Everything lands in OUT_DIR (default $OUT, else gpu-check-out/): nvidia-smi.txt,
# pytest.log + pytest.xml, check_kernels.log, bench/ and summary.txt. Each step has
# a time limit; the whole is sized for under 8 minutes on an H100. The exit code is
# 0 only when every step passed (2: no GPU, 3: no CuPy, 1: a step failed).
set -uo pipefail

cd "$(dirname "$0")/.." || exit 1
OUT_DIR="${1:-${OUT:-gpu-check-out}}"
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi
fi

fail() { echo "gpu_check: $1" >&2; exit "${2:-1}"; }

# 1. A GPU, or stop here.
if ! command -v nvidia-smi >/dev/null 2>&1; then
  fail "no NVIDIA GPU on this machine (nvidia-smi not found); run this where a device is lent" 2
fi
if ! nvidia-smi -L 2>/dev/null | grep -q '^GPU '; then
  fail "no NVIDIA GPU on this machine (nvidia-smi lists none: $(nvidia-smi -L 2>&1 | head -1))" 2
fi
mkdir -p "$OUT_DIR" || fail "cannot create $OUT_DIR"
nvidia-smi > "$OUT_DIR/nvidia-smi.txt" 2>&1
nvidia-smi -L
started=$(date +%s)
failed=()

# 2. The gpu extra.
if ! "$PY" -c "import cupy" >/dev/null 2>&1; then
  echo "== installing the gpu extra (cupy-cuda12x)"
  if [ -n "${GPU_WHEELS:-}" ]; then
    "$PY" -m pip install --no-index --find-links "$GPU_WHEELS" 'cupy-cuda12x>=13' || true
  else
    timeout 180 "$PY" -m pip install -e '.[gpu]' || true
  fi
  "$PY" -c "import cupy" >/dev/null 2>&1 ||
    fail "CuPy is not importable and the gpu extra could not be installed (no network? set GPU_WHEELS to a folder holding cupy-cuda12x and its fastrlock wheel)" 3
fi
reason=$("$PY" -c "from streamguard.backends import cuda_unavailable_reason as r; print(r() or '')" 2>&1)
[ -z "$reason" ] || fail "CuPy cannot use the GPU: $reason" 3
unset STREAMGUARD_CUDA_EMULATE  # the real device from here on

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log, remember failures
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$(date +%s)
  timeout "$limit" "$@"
  local rc=$?
  echo "   $name: exit $rc after $(( $(date +%s) - t0 ))s"
  [ "$rc" -eq 0 ] || failed+=("$name (exit $rc$([ "$rc" -eq 124 ] && echo ', timed out'))")
}

# 3. Parity on the device.
step "pytest -m 'gpu or emulated_gpu'" 300 \
  bash -c "'$PY' -m pytest -m 'gpu or emulated_gpu' tests -q -rs --durations=10 --junitxml='$OUT_DIR/pytest.xml' 2>&1 | tee '$OUT_DIR/pytest.log'; exit \${PIPESTATUS[0]}"

# 4. Registers and spills, where nvcc is installed (not needed at run time).
if command -v nvcc >/dev/null 2>&1 || [ -x /usr/local/cuda/bin/nvcc ]; then
  step "check_kernels.py" 60 bash -c "'$PY' scripts/check_kernels.py 2>&1 | tee '$OUT_DIR/check_kernels.log'; exit \${PIPESTATUS[0]}"
fi

# 5. Throughput with the cuda backend next to the others (figures in bench/).
backends=numpy,cuda
"$PY" -c "import numba" >/dev/null 2>&1 && backends=numpy,cpu,cuda
step "streamguard bench --quick" 150 "$PY" -m streamguard bench --quick --backends "$backends" --out "$OUT_DIR/bench"

{
  echo "gpu_check $(date -u +%FT%TZ) on $(nvidia-smi -L | head -1)"
  echo "took $(( $(date +%s) - started ))s; outputs in $OUT_DIR"
  if [ ${#failed[@]} -eq 0 ]; then echo "all steps passed"; else printf 'FAILED: %s\n' "${failed[@]}"; fi
} | tee "$OUT_DIR/summary.txt"
[ ${#failed[@]} -eq 0 ]
