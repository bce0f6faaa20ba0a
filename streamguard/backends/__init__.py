"""Array backends. The backend is chosen once, at start-up, by :func:`create_backend`."""

from __future__ import annotations

import logging
import os

from streamguard.backends.base import Backend, CrossMatch, DupScan
from streamguard.backends.numpy_backend import NumpyBackend

BACKEND_NAMES = ("auto", "cuda", "cpu", "numpy")
CUDA_EMULATE_ENV = "STREAMGUARD_CUDA_EMULATE"
"""Set to 1: ``--backend cuda`` runs the real cuda backend code on an emulated device
(:mod:`streamguard.backends.emulated_cupy`; kernels compiled for the CPU by g++). Never chosen by 'auto'."""

log = logging.getLogger(__name__)


class BackendUnavailable(RuntimeError):
    """The requested backend cannot run on this machine; the message says why."""


def cuda_unavailable_reason() -> str | None:
    """None when a CUDA device is usable through CuPy, else the reason it is not."""
    try:
        import cupy  # noqa: F401  (only probed here; used by the cuda backend)
    except Exception as exc:  # ImportError, or a broken CUDA install raising at import
        return f"CuPy is not importable ({exc.__class__.__name__}: {exc}); install the 'gpu' extra on a CUDA machine"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return f"no usable CUDA device ({exc})"
    if count < 1:
        return "no CUDA device found"
    return None


def create_backend(name: str, bands: int = 8, table_bits: int = 16) -> Backend:
    """Build the backend called ``name`` ('auto', 'cuda', 'cpu' or 'numpy').

    Raises
    ------
    BackendUnavailable
        When 'cuda' is asked for on a machine without a usable device (never a
        silent fallback), or 'cpu' without numba. With ``STREAMGUARD_CUDA_EMULATE=1``,
        'cuda' is the cuda backend on the emulated device, GPU or not.
    """
    if name not in BACKEND_NAMES:
        raise ValueError(f"unknown backend {name!r}; choose one of {', '.join(BACKEND_NAMES)}")
    if name == "cuda" and os.environ.get(CUDA_EMULATE_ENV, "") not in ("", "0"):
        from streamguard.backends.cuda_backend import CudaBackend  # noqa: PLC0415
        from streamguard.backends.cuda_runtime import CupyRuntime  # noqa: PLC0415

        log.warning("--backend cuda on the EMULATED device (%s is set): kernels run on the CPU, slowly", CUDA_EMULATE_ENV)
        return CudaBackend(bands=bands, table_bits=table_bits, runtime=CupyRuntime.emulated())
    if name == "cuda" or (name == "auto" and cuda_unavailable_reason() is None):
        reason = cuda_unavailable_reason()
        if reason is not None:
            raise BackendUnavailable(f"--backend cuda: {reason}. Use --backend cpu or numpy on this machine.")
        from streamguard.backends.cuda_backend import CudaBackend  # noqa: PLC0415 - cupy only there

        return CudaBackend(bands=bands, table_bits=table_bits)
    if name in ("cpu", "auto"):
        try:
            from streamguard.backends.cpu_backend import CpuBackend  # noqa: PLC0415 - numba only there
        except ImportError as exc:
            if name == "cpu":
                raise BackendUnavailable(f"--backend cpu needs numba ({exc})") from None
            log.info("cpu backend unavailable (%s); using the numpy reference", exc)
            return NumpyBackend(bands=bands, table_bits=table_bits)
        return CpuBackend(bands=bands, table_bits=table_bits)
    return NumpyBackend(bands=bands, table_bits=table_bits)


__all__ = [
    "BACKEND_NAMES",
    "Backend",
    "BackendUnavailable",
    "CrossMatch",
    "DupScan",
    "NumpyBackend",
    "create_backend",
    "cuda_unavailable_reason",
]
