"""What the bench's sections share: targets, the machine, BLAS threads, backends, JSON."""

from __future__ import annotations

import contextlib
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

# The report's sections, in bench.json's order. A new section (or a new kind of row) gets a
# module of its own beside churn.py, a call in runner.run, its key here and its lines in report.py.
SECTIONS = ("meta", "sgemm", "flops", "throughput", "end_to_end", "near_duplicate", "memory", "churn", "targets")
EVENTS_PER_SCALE = 218_000
"""Requests the simulator writes at scale 1.0 (it scales accounts, not per-account volume)."""
TARGET_EVENTS_PER_SECOND = 50_000
TARGET_RECALL = 0.99
TARGET_STATE_BYTES = 8 * 1024


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@contextlib.contextmanager
def _blas_threads(count: int | None) -> Iterator[None]:
    """Limit BLAS threads for a block (no-op without threadpoolctl or with count None)."""
    if count is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional
    except ImportError:
        yield
        return
    with threadpool_limits(limits=count, user_api="blas"):
        yield


def _max_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _median_seconds(fn: Callable[[], Any], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("numba", "faiss", "scipy", "pyarrow"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "?"))
        except ImportError:
            out[name] = "not installed"
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415

        out["blas"] = ", ".join(
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')} ({i.get('num_threads')} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        )
    except ImportError:
        out["blas"] = "unknown (threadpoolctl not installed)"
    return out


# ------------------------------------------------------------------ backends


def _backend_names(requested: str | None) -> tuple[list[str], dict[str, str]]:
    """Backends to run and, for the ones left out, why."""
    from streamguard.backends import cuda_unavailable_reason  # noqa: PLC0415

    skipped: dict[str, str] = {}
    names = ["numpy", "cpu", "cuda"] if requested is None else [n.strip() for n in requested.split(",") if n.strip()]
    usable = []
    for name in names:
        if name == "cuda":
            reason = cuda_unavailable_reason()
            if reason is not None:
                skipped[name] = reason
                continue
        if name == "cpu":
            try:
                import numba  # noqa: F401, PLC0415
            except ImportError as exc:
                skipped[name] = f"numba not installed ({exc})"
                continue
        usable.append(name)
    return usable, skipped


def _make_backend(name: str, settings: Any, threads: int | None = None) -> Any:
    from streamguard.backends import create_backend  # noqa: PLC0415

    if name == "cpu" and threads is not None:
        from streamguard.backends.cpu_backend import CpuBackend  # noqa: PLC0415

        backend = CpuBackend(settings.near_duplicate.bands, settings.near_duplicate.table_bits, threads=threads)
    else:
        backend = create_backend(name, settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    backend.warmup()
    return backend


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
