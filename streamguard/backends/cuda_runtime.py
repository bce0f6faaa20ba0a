"""The cuda backend's device: launch tunables, the runtime protocol, and CuPy's runtime (NVRTC modules, streams, staging).

:class:`streamguard.backends.cuda_backend.CudaBackend` is written against a
:class:`KernelRuntime`; on a GPU machine it is :class:`CupyRuntime`, which
compiles (or loads prebuilt) ``kernels/*.cu`` at warm-up, uploads through
pinned staging buffers and enqueues everything on the backend's own stream.

This is the only module of streamguard that imports CuPy, and only when a
:class:`CupyRuntime` is built. ``CupyRuntime(cupy_module=..., cupyx_module=...)``
runs it over the emulated device of :mod:`streamguard.backends.emulated_cupy`
instead (``pytest -m emulated_gpu``; ``STREAMGUARD_CUDA_EMULATE=1`` with
``--backend cuda``), which executes this module's code, and the backend's,
unchanged without a GPU.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, Protocol

import numpy as np

from streamguard.backends.kernels import COMPILE_OPTIONS, entry_points, prebuilt_binary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LaunchConfig:
    """Launch tunables, passed from Python (the kernels read ``blockDim``/``gridDim``).

    threads : block size of the one-thread-per-item kernels (any value >= 1)
    warps_per_block : block size, in warps, of the one-warp-per-item kernels
        (signature packing, row argmax, centring)
    column_threads : largest block of ``style_prefix`` (one account per block,
        one column per thread; a block of ``d`` rounded up to 32 threads is used when smaller)
    reduce_threads : block size of ``coverage_reduce``: a power of two <= 256,
        the size of its shared-memory tree
    max_blocks : cap of every grid dimension; kernels grid-stride past it, so
        a small cap (the tests use 3) runs the multi-block and tail paths on tiny data
    """

    threads: int = 256
    warps_per_block: int = 4
    column_threads: int = 1024
    reduce_threads: int = 256
    max_blocks: int = 65535

    def __post_init__(self) -> None:
        if not 1 <= self.threads <= 1024:
            raise ValueError(f"threads must be in [1, 1024], got {self.threads}")
        if not 1 <= self.warps_per_block <= 32:
            raise ValueError(f"warps_per_block must be in [1, 32], got {self.warps_per_block}")
        if not 1 <= self.column_threads <= 1024:
            raise ValueError(f"column_threads must be in [1, 1024], got {self.column_threads}")
        r = self.reduce_threads
        if r < 1 or r > 256 or r & (r - 1):
            raise ValueError(f"reduce_threads must be a power of two <= 256 (kMaxReduceThreads), got {r}")
        if not 1 <= self.max_blocks <= 65535:
            raise ValueError(f"max_blocks must be in [1, 65535], got {self.max_blocks}")


Launcher = Callable[[tuple[int, ...], tuple[int, ...], tuple[Any, ...]], None]


class KernelRuntime(Protocol):
    """What :class:`CudaBackend` needs from a device."""

    xp: Any

    def load(self, sources: Mapping[str, str]) -> dict[str, Launcher]:
        """Compile ``{stem: source}`` now; return ``{entry point: launch(grid, block, args)}``."""

    def on_stream(self) -> contextlib.AbstractContextManager[None]:
        """Scope in which array operations and launches are enqueued on the backend's stream."""

    def as_device(self, array: Any, dtype: Any = None) -> Any:
        """A C-contiguous device array of ``dtype`` holding ``array`` (host or device); no copy when it already is one."""

    def upload(self, host: np.ndarray) -> Any:
        """A new device copy of a host array."""

    def download(self, array: Any) -> np.ndarray:
        """A host copy of a device array, once the work that writes it is done."""


class CupyRuntime:
    """The real device: NVRTC through ``cupy.RawModule``, cuBLAS through ``cupy.matmul``.

    Parameters
    ----------
    staging_buffers : number of pinned host buffers that uploads rotate through;
        a buffer is reused only once the copy out of it has completed (an event
        per buffer), so uploads are asynchronous without ever racing.
    cupy_module, cupyx_module : the ``cupy`` and ``cupyx`` modules to run on;
        the real ones unless given. The emulated device
        (:mod:`streamguard.backends.emulated_cupy`, see :meth:`emulated`) gives
        host stand-ins, so that this class's own code runs without a GPU.
    """

    def __init__(self, staging_buffers: int = 4, *, cupy_module: Any = None, cupyx_module: Any = None) -> None:
        if (cupy_module is None) != (cupyx_module is None):
            raise TypeError("give both cupy_module and cupyx_module, or neither")
        if cupy_module is None:
            import cupy as cupy_module  # noqa: PLC0415 - the one place streamguard imports CuPy
            import cupyx as cupyx_module  # noqa: PLC0415
        cupy, cupyx = cupy_module, cupyx_module

        self._cupy = cupy
        self._cupyx = cupyx
        self.xp = cupy
        # The backend's own stream: a batch's uploads, GEMMs, launches and
        # downloads are all enqueued on it, in order. Non-blocking, and joined
        # to the caller's stream by events in on_stream(), so the ordering with
        # the detectors' own CuPy operations holds whatever the default-stream
        # mode (legacy or per-thread) is.
        self.stream = cupy.cuda.Stream(non_blocking=True)
        self._staging: list[list[Any]] = [[None, None] for _ in range(staging_buffers)]  # [pinned buffer, event]
        self._next = 0
        self._modules: list[Any] = []
        self.device: Any = None  # the EmulatedDevice, when emulated (what ran on it, for tests)

    @classmethod
    def emulated(cls, staging_buffers: int = 4) -> CupyRuntime:
        """This runtime on an emulated device (``STREAMGUARD_CUDA_EMULATE=1``): no GPU, the kernels run on the CPU."""
        from streamguard.backends.emulated_cupy import EmulatedDevice  # noqa: PLC0415 - never on a GPU machine

        device = EmulatedDevice()
        runtime = cls(staging_buffers, cupy_module=device.cupy, cupyx_module=device.cupyx)
        runtime.device = device
        return runtime

    def load(self, sources: Mapping[str, str]) -> dict[str, Launcher]:
        launchers: dict[str, Launcher] = {}
        for stem, code in sources.items():
            prebuilt = prebuilt_binary(stem, code)
            if prebuilt is not None:
                # Built for this exact source at image build time (scripts/build_kernel_cache.py).
                module = self._cupy.RawModule(path=str(prebuilt))
                log.info("kernels/%s.cu: prebuilt %s", stem, prebuilt.name)
            else:
                module = self._cupy.RawModule(code=code, options=COMPILE_OPTIONS)
            module.compile()  # NVRTC (or the module load) runs here, at start-up, never on the first batch
            self._modules.append(module)
            for entry in entry_points(code):
                launchers[entry.name] = partial(self._launch, module.get_function(entry.name))
        return launchers

    @staticmethod
    def _launch(kernel: Any, grid: tuple[int, ...], block: tuple[int, ...], args: tuple[Any, ...]) -> None:
        kernel(grid, block, args)  # enqueued on the current stream, which on_stream() made ours

    @contextlib.contextmanager
    def on_stream(self) -> Iterator[None]:
        caller = self._cupy.cuda.get_current_stream()
        if caller.ptr == self.stream.ptr:  # nested scope
            yield
            return
        self.stream.wait_event(caller.record())  # start after what the caller already enqueued
        try:
            with self.stream:
                yield
        finally:
            caller.wait_event(self.stream.record())  # the caller's later work sees ours

    def as_device(self, array: Any, dtype: Any = None) -> Any:
        if isinstance(array, self._cupy.ndarray):
            return self._cupy.ascontiguousarray(array, dtype=dtype)
        return self.upload(np.ascontiguousarray(array, dtype=dtype))

    def upload(self, host: np.ndarray) -> Any:
        cupy = self._cupy
        host = np.asarray(host, order="C")  # not ascontiguousarray: that makes a 0-d array 1-d
        with self.on_stream():
            device = cupy.empty(host.shape, dtype=host.dtype)
            if host.nbytes == 0:
                return device
            slot = self._staging[self._next]
            self._next = (self._next + 1) % len(self._staging)
            buffer, event = slot
            if event is not None:
                event.synchronize()  # the previous copy out of this buffer has finished
            if buffer is None or buffer.nbytes < host.nbytes:
                buffer = self._cupyx.empty_pinned(
                    max(host.nbytes, 2 * (0 if buffer is None else buffer.nbytes)), np.uint8
                )
            staged = buffer[: host.nbytes].view(host.dtype).reshape(host.shape)
            np.copyto(staged, host)
            device.set(staged, stream=self.stream)
            slot[0], slot[1] = buffer, self.stream.record()
        return device

    def download(self, array: Any) -> np.ndarray:
        if not isinstance(array, self._cupy.ndarray):
            return np.asarray(array)
        with self.on_stream():
            host = array.get(stream=self.stream)
            self.stream.synchronize()
        return host

