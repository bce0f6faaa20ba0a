"""Fixtures of the kernel tests: the CUDA backend on the CPU (g++-built kernels) and on a real device.

Every parity test takes the ``backend`` fixture and runs twice: ``cpu``, the
CUDA backend's host code with ``kernels/*.cu`` compiled by g++ and executed on
the CPU, and ``gpu``, the same on a CUDA device (skipped with the reason when
there is none). Both use tiny blocks and grids (:data:`TINY`) so that tails,
grid-stride loops and multi-block paths run on small data.

A test marked ``@pytest.mark.covers("entry", ...)`` must launch those entry
points in its CPU runs (checked when its module finishes), and
tests/kernels/test_meta.py checks that every entry point is covered by some test.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.kernels.kernel_harness import TINY, BuiltModule, CpuRuntime, build
from streamguard.backends import cuda_unavailable_reason
from streamguard.backends.cuda_backend import CudaBackend
from streamguard.backends.kernels import kernel_sources


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "covers(*entries): kernel entry points this parity test must launch")


def _cpu_run(item: pytest.Item) -> bool:
    callspec = getattr(item, "callspec", None)
    return callspec is not None and callspec.params.get("backend") == "cpu"


def _test_key(item: pytest.Item) -> tuple[str, str]:
    return (item.nodeid.split("::")[0], getattr(item, "originalname", item.name))


_PASSED: set[str] = set()
_LAUNCHES: dict[tuple[str, str], Counter[str]] = {}
_PARTIAL: set[tuple[str, str]] = set()  # tests some of whose CPU runs were deselected


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    if report.when == "call" and report.passed:
        _PASSED.add(item.nodeid)
    return report


def pytest_deselected(items: list[pytest.Item]) -> None:
    _PARTIAL.update(_test_key(item) for item in items if _cpu_run(item))


@pytest.fixture(scope="session")
def cpu_modules(tmp_path_factory: pytest.TempPathFactory) -> dict[str, BuiltModule]:
    """``kernels/*.cu`` compiled once per session by g++ (about 10 s on two cores)."""
    return build(kernel_sources(), tmp_path_factory.mktemp("kernels-cpu"))


@pytest.fixture(scope="session")
def gpu_runtime() -> Any:
    reason = cuda_unavailable_reason()
    if reason is not None:
        pytest.skip(f"no CUDA device: {reason}")
    from streamguard.backends.cuda_runtime import CupyRuntime  # noqa: PLC0415

    return CupyRuntime()


@pytest.fixture(params=["cpu", pytest.param("gpu", marks=pytest.mark.gpu)])
def backend(request: pytest.FixtureRequest) -> Iterator[CudaBackend]:
    """A warmed-up CudaBackend with :data:`TINY` launches, on the CPU emulation or the device."""
    if request.param == "cpu":
        runtime: Any = CpuRuntime(request.getfixturevalue("cpu_modules"))
    else:
        runtime = request.getfixturevalue("gpu_runtime")
    backend = CudaBackend(bands=8, table_bits=16, launch=TINY, runtime=runtime)
    backend.warmup()
    yield backend
    if isinstance(runtime, CpuRuntime):
        _LAUNCHES.setdefault(_test_key(request.node), Counter()).update(runtime.launched)


@pytest.fixture(scope="module", autouse=True)
def _coverage_claims(request: pytest.FixtureRequest) -> Iterator[None]:
    """After a module: each test marked ``covers(...)`` launched those entry points in its CPU runs.

    Checked over all parametrizations of a test together (some, n = 0,
    legitimately launch nothing), and only when all of them were selected and
    passed: a failure is already reported, and a partial run proves nothing.
    """
    yield
    runs: dict[tuple[str, str], list[pytest.Item]] = {}
    for item in request.session.items:
        if getattr(item, "module", None) is request.module and _cpu_run(item) and item.get_closest_marker("covers"):
            runs.setdefault(_test_key(item), []).append(item)
    for key, items in runs.items():
        if key in _PARTIAL or not all(item.nodeid in _PASSED for item in items):
            continue
        launched = _LAUNCHES.get(key, Counter())
        missing = [name for name in items[0].get_closest_marker("covers").args if launched[name] == 0]
        assert not missing, f"{key[1]} claims to cover {missing} but never launched them"
