"""Every ``extern "C" __global__`` entry point of kernels/*.cu has what DESIGN.md (Kernels) requires.

A NumPy reference, a parity test executed on the CPU (a test of
``tests/kernels/test_<stem>_cpu.py`` marked ``covers("<entry>")``, which the
conftest checks really launches it), the nvcc gate (scripts/check_kernels.py
checks every file), a numba CPU twin (``CpuBackend.<backend function>``), a
templated ``_impl`` behind a thin entry point, and a launch contract in the
comment above it. Adding a kernel without these fails here.
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest

from streamguard.backends import base
from streamguard.backends.cuda_backend import CudaBackend
from streamguard.backends.kernels import CONTRACTS, entry_points, kernel_stems, read_kernel
from streamguard.backends.numpy_backend import NumpyBackend

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parents[1]


def _entries() -> dict[str, str]:
    """``{entry point: stem}`` over every kernel file."""
    found: dict[str, str] = {}
    for stem in kernel_stems():
        for entry in entry_points(read_kernel(stem)):
            assert entry.name not in found, f"entry point {entry.name} defined twice"
            found[entry.name] = stem
    return found


ENTRIES = _entries()


def _covered(stem: str) -> set[str]:
    """Entry points named by ``@pytest.mark.covers(...)`` in tests/kernels/test_<stem>_cpu.py."""
    path = TESTS / f"test_{stem}_cpu.py"
    if not path.is_file():
        return set()
    covered: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.FunctionDef) and node.name.startswith("test_"):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and ast.unparse(decorator.func) == "pytest.mark.covers":
                    covered.update(arg.value for arg in decorator.args if isinstance(arg, ast.Constant))
    return covered


def test_there_are_kernels_and_one_file_per_detector_family() -> None:
    assert ENTRIES, "no entry point found in kernels/*.cu"
    for stem in kernel_stems():
        assert (ROOT / "streamguard" / "detectors" / f"{stem}.py").is_file(), (
            f"kernels/{stem}.cu has no detectors/{stem}.py"
        )


def test_the_contract_table_lists_exactly_the_entry_points() -> None:
    assert set(CONTRACTS) == set(ENTRIES), (
        f"missing from kernels.CONTRACTS: {sorted(set(ENTRIES) - set(CONTRACTS))}; "
        f"stale: {sorted(set(CONTRACTS) - set(ENTRIES))}"
    )


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_entry_point_has_a_numpy_reference(entry: str) -> None:
    contract = CONTRACTS[entry]
    module_name, _, attribute = contract.reference.partition(".NumpyBackend.")
    if attribute:
        target = getattr(NumpyBackend, attribute)
    else:
        module_name, _, attribute = contract.reference.rpartition(".")
        target = getattr(importlib.import_module(module_name), attribute)
    assert callable(target), contract.reference
    function = contract.backend_function
    assert function in base.Backend.__dict__, f"{function} is not a function of the Backend protocol"
    assert callable(getattr(NumpyBackend, function)) and callable(getattr(CudaBackend, function))


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_entry_point_has_a_cpu_executed_parity_test(entry: str) -> None:
    stem = ENTRIES[entry]
    assert entry in _covered(stem), f'no test in tests/kernels/test_{stem}_cpu.py is marked covers("{entry}")'


def test_the_nvcc_gate_checks_every_kernel_file() -> None:
    script = (ROOT / "scripts" / "check_kernels.py").read_text()
    tree = ast.parse(script)
    check = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == "check")
    assert "kernel_stems()" in ast.unparse(check), "check_kernels.check must default to every kernels/*.cu"
    assert "-Werror" in script and "all-warnings" in script and "-v," in script
    assert (TESTS / "test_nvcc.py").is_file()


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_entry_point_has_a_numba_twin(entry: str) -> None:
    try:
        cpu_backend = importlib.import_module("streamguard.backends.cpu_backend")
    except ModuleNotFoundError as exc:
        if exc.name not in ("streamguard.backends.cpu_backend", "numba"):
            raise
        pytest.skip(f"the numba CPU backend is not there yet ({exc}): twin of {entry} not checked")
    function = CONTRACTS[entry].backend_function
    assert callable(getattr(cpu_backend.CpuBackend, function, None)), f"CpuBackend.{function} is missing"


_IMPL_CALL = re.compile(r"sg::(\w+_impl)\s*<")


@pytest.mark.parametrize("entry", sorted(ENTRIES))
def test_entry_point_is_a_thin_wrapper_of_a_documented_template(entry: str) -> None:
    source = read_kernel(ENTRIES[entry])
    start = re.search(rf'extern\s+"C"\s+__global__\s+void\s+{entry}\s*\(', source)
    assert start is not None
    body = source[start.end() : source.index("}", start.end())]
    call = _IMPL_CALL.search(body)
    assert call is not None, f"{entry} must call a templated sg::..._impl<T>"
    impl = call.group(1)
    definition = re.search(rf"template\s*<typename \w+>\s*__device__\s+\w+\s+{impl}\s*\(", source)
    assert definition is not None, f"{impl} must be `template <typename T> __device__ ... {impl}(...)`"
    comment = []
    for line in reversed(source[: definition.start()].rstrip("\n").splitlines()):
        if not line.startswith("//"):
            break
        comment.append(line)
    text = " ".join(comment).lower()
    for word in ("grid", "block", "shared"):
        assert word in text, f"the comment above {impl} must state its {word} (launch contract)"
