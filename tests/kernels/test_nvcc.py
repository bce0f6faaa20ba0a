"""nvcc compiles every kernels/*.cu for sm_80 and sm_90 with warnings as errors and no spills (scripts/check_kernels.py)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from streamguard.backends.kernels import entry_points, kernel_dir, kernel_sources

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "check_kernels.py"


def load_script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("check_kernels", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["check_kernels"] = module  # dataclasses resolve their module by name
    spec.loader.exec_module(module)
    return module


check_kernels = load_script()
NVCC = check_kernels.find_nvcc()
needs_nvcc = pytest.mark.skipif(
    NVCC is None, reason="nvcc not found (PATH, $NVCC, $CUDA_HOME): install the CUDA toolkit"
)


@pytest.fixture(scope="module")
def reports() -> list:
    return check_kernels.check(NVCC)


@needs_nvcc
def test_every_kernel_file_compiles_clean_for_sm80_and_sm90(reports: list) -> None:
    assert [r.file for r in reports] == [f"kernels/{stem}.cu" for stem in sorted(kernel_sources())]
    for report in reports:
        assert report.ok, f"{report.file}: {report.problems}\n{report.output}"
    print("\n" + check_kernels.format_table(reports))


@needs_nvcc
def test_every_entry_point_is_reported_for_both_architectures(reports: list) -> None:
    compiled = {(k.kernel, k.arch) for r in reports for k in r.kernels}
    for source in kernel_sources().values():
        for entry in entry_points(source):
            assert {(entry.name, "sm_80"), (entry.name, "sm_90")} <= compiled, entry.name


@needs_nvcc
def test_a_warning_fails_the_check(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The gate works: a kernel with an unused variable is refused."""
    for name in ("common.cuh", "cpu_compat.h"):
        (tmp_path / name).write_text((kernel_dir() / name).read_text())
    (tmp_path / "sloppy.cu").write_text(
        '#include "common.cuh"\nextern "C" __global__ void sloppy(float* out) { int unused = 3; out[0] = 1.0f; }\n'
    )
    monkeypatch.setenv("STREAMGUARD_KERNEL_DIR", str(tmp_path))
    (report,) = check_kernels.check(NVCC, stems=["sloppy"])
    assert not report.ok and any("unused" in line or "warning" in line for line in report.problems + [report.output])
    assert "kernels/sloppy.cu(2)" in report.output  # the #line directives point at the file's own line


def test_ptxas_report_parsing_counts_spills() -> None:
    output = """ptxas info    : Compiling entry function 'k' for 'sm_90'
ptxas info    : Function properties for k
    16 bytes stack frame, 8 bytes spill stores, 12 bytes spill loads
ptxas info    : Used 255 registers, used 1 barriers, 6144 bytes smem
ptxas info    : Compiling entry function 'j' for 'sm_80'
ptxas info    : Function properties for j
    0 bytes stack frame, 0 bytes spill stores, 0 bytes spill loads
ptxas info    : Used 12 registers, used 0 barriers, 380 bytes cmem[0]
"""
    k, j = check_kernels.parse_ptxas("kernels/x.cu", output)
    assert (k.kernel, k.arch, k.registers, k.shared_bytes, k.stack_bytes, k.spill_stores, k.spill_loads) == (
        "k", "sm_90", 255, 6144, 16, 8, 12,
    )  # fmt: skip
    assert k.spills and not j.spills and (j.registers, j.shared_bytes) == (12, 0)


def test_script_exits_2_without_nvcc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(check_kernels, "find_nvcc", lambda explicit=None: None)
    assert check_kernels.main([]) == 2


NVRTC = check_kernels.find_nvrtc()


@pytest.mark.skipif(NVRTC is None, reason="no libnvrtc (pip install nvidia-cuda-nvrtc-cu12, or set NVRTC_LIBRARY)")
def test_nvrtc_the_compiler_cupy_uses_accepts_the_backend_sources() -> None:
    for report in check_kernels.check_nvrtc(NVRTC):
        assert report.ok, f"{report.file}: {report.problems}\n{report.output}"
