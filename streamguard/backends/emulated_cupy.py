"""An emulated CUDA device: a host stand-in for the part of CuPy that the cuda backend uses.

``CupyRuntime`` (NVRTC modules, its own stream, pinned staging buffers,
uploads and downloads) and ``CudaBackend`` run *unchanged* over the two
modules that :class:`EmulatedDevice` hands out, ``cupy`` and ``cupyx``:

- ``ndarray`` holds a host NumPy array but behaves as device memory does in
  CuPy: no implicit conversion to or from NumPy (``np.asarray(device)``, a
  host array as an operand, a host array passed to a kernel all raise
  ``TypeError`` as CuPy does), reductions and scalar indexing return 0-d
  device arrays, ``get()``/``set()`` check dtype and shape as CuPy does;
- ``RawModule(code=...)`` compiles the *same* assembled ``.cu`` text with g++
  behind ``kernels/cpu_compat.h`` (:mod:`streamguard.backends.host_kernels`,
  cached on disk by digest); a kernel launched as ``kernel(grid, block, args)``
  runs it on the CPU with the launch ABI checked strictly. ``RawModule(path=...)``
  loads an emulated module image: the CUDA source text itself (an nvcc fat
  binary cannot run here and is refused with a clear message);
- ``cuda.Stream``, events and ``get_current_stream`` keep CUDA's bookkeeping
  (the current stream, what an event covers); every launch records the
  stream it was enqueued on;
- ``cupyx.empty_pinned`` buffers are write-protected while an asynchronous
  copy out of them is in flight, until a synchronisation covers it, so
  reusing a staging buffer too early fails here instead of racing on a GPU.

The arrays are in :mod:`streamguard.backends.emulated_cupy_array`, the
streams, events and pinned memory in
:mod:`streamguard.backends.emulated_cupy_streams`; this module holds the
modules and launches (``RawModule``, ``RawKernel``) and the device that hands
out ``cupy`` and ``cupyx``.

Everything executes synchronously, in order. It is selected only explicitly:
``STREAMGUARD_CUDA_EMULATE=1`` with ``--backend cuda`` (see
``streamguard.backends.create_backend``) or ``CupyRuntime(cupy_module=...)``
in tests (``pytest -m emulated_gpu``). Nothing imports it on a GPU machine.
"""

from __future__ import annotations

import os
import time
import types
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.backends.emulated_cupy_array import _upload, _unwrap, _wrap, ndarray
from streamguard.backends.emulated_cupy_streams import _DEVICE_STREAMS, _PINNED, Event, Stream
from streamguard.backends.host_kernels import BuiltModule, KernelLaunchError, build, launch

CACHE_ENV = "STREAMGUARD_EMULATE_CACHE"
"""Where the emulated device keeps its g++ builds (default ``~/.cache/streamguard/emulated-kernels``)."""


class CompileException(RuntimeError):
    """A module failed to build (CuPy's ``cupy.cuda.compiler.CompileException``)."""


class CUDADriverError(RuntimeError):
    """What the driver would answer (CuPy's ``cupy.cuda.driver.CUDADriverError``)."""


# --------------------------------------------------------------------- modules


class RawKernel:
    """One entry point of a :class:`RawModule`: ``kernel(grid, block, args)`` runs it on the CPU."""

    def __init__(self, device: EmulatedDevice, module: BuiltModule, name: str) -> None:
        entry = next((e for e in module.entries if e.name == name), None)
        if entry is None:
            raise CUDADriverError(f"CUDA_ERROR_NOT_FOUND: named symbol not found ({name!r} in kernels/{module.stem}.cu)")
        self._device, self._module, self._entry = device, module, entry
        self.name = name

    def __call__(self, grid: tuple, block: tuple, args: tuple, *, shared_mem: int = 0, stream: Stream | None = None) -> None:
        if not isinstance(grid, tuple) or not isinstance(block, tuple):
            raise TypeError(f"{self.name}: grid and block must be tuples, got {type(grid).__name__}, {type(block).__name__}")
        host_args = []
        for position, arg in enumerate(args):
            if isinstance(arg, ndarray):
                host_args.append(arg._a)
            elif isinstance(arg, np.ndarray) and arg.size != 1:
                raise TypeError(
                    f"{self.name} argument {position}: You are trying to pass a numpy.ndarray of shape {arg.shape} "
                    "as a kernel parameter. Only numpy.ndarrays of size one can be passed by value. If you meant "
                    "to pass a pointer to __global__ memory, you need to pass a cupy.ndarray instead."
                )
            else:
                host_args.append(arg)
        stream = stream if stream is not None else _DEVICE_STREAMS.current()
        stream._enqueue()
        started = time.perf_counter()
        launch(self._module, self._entry, grid, block, tuple(host_args))
        self._device.launch_seconds[self.name] += time.perf_counter() - started
        self._device.launched[self.name] += 1
        self._device.launch_streams[stream.ptr] += 1


class RawModule:
    """``cupy.RawModule``: CUDA source (or an emulated module image) compiled for the CPU on first use."""

    def __init__(self, device: EmulatedDevice, *, code: str | None = None, path: str | None = None, options: tuple = (), **kwargs: Any) -> None:
        if (code is None) == (path is None):
            raise TypeError("Exactly one of `code` and `path` keyword arguments must be given.")
        if not isinstance(options, tuple):
            raise TypeError(f"Argument 'options' has incorrect type (expected tuple, got {type(options).__name__})")
        if path is not None:
            image = Path(path).read_bytes()
            if b"\0" in image or not image.strip():
                raise CompileException(
                    f"{path}: the emulated device runs CUDA source, not nvcc binaries; unset "
                    "STREAMGUARD_KERNEL_CACHE (or give it emulated images: the source text) to emulate"
                )
            code = image.decode("utf-8")
        self.code, self.file_path, self.options = code, path, options
        self._device = device
        self._built: BuiltModule | None = None

    def compile(self, log_stream: Any = None) -> None:
        if self._built is None:
            self._built = self._device._build(self.code or "")

    def get_function(self, name: str) -> RawKernel:
        self.compile()
        assert self._built is not None
        return RawKernel(self._device, self._built, name)


_MISSING = object()


class _Namespace(types.ModuleType):
    """A module whose missing attributes are NumPy's, operating on device arrays."""

    def __init__(self, name: str, host: types.ModuleType) -> None:
        super().__init__(name)
        self._host = host

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        attr = getattr(self._host, name, _MISSING)
        if attr is _MISSING or isinstance(attr, types.ModuleType):
            raise AttributeError(f"the emulated {self.__name__} has no {name!r}")
        if isinstance(attr, type) or not callable(attr):
            return attr  # dtypes (float32...), constants
        return _device_function(attr, f"{self.__name__}.{name}")


def _device_function(function: Callable[..., Any], where: str) -> Callable[..., Any]:
    def call(*args: Any, **kwargs: Any) -> Any:
        return _wrap(function(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()}))

    call.__name__ = getattr(function, "__name__", where)
    call.__doc__ = f"{where}: NumPy's, over emulated device arrays."
    return call


class EmulatedDevice:
    """One emulated GPU: its ``cupy`` and ``cupyx`` modules, and what ran on it.

    Parameters
    ----------
    cache_dir : where the g++ builds go, named by digest (default
        ``$STREAMGUARD_EMULATE_CACHE``, else ``~/.cache/streamguard/emulated-kernels``)

    Attributes
    ----------
    cupy, cupyx : the modules to hand to ``CupyRuntime(cupy_module=..., cupyx_module=...)``
    launched : launches per entry point
    launch_seconds : wall time spent in each entry point's launches
    launch_streams : launches per stream pointer (0 is the null stream)
    """

    def __init__(self, cache_dir: str | os.PathLike[str] | None = None) -> None:
        where = cache_dir if cache_dir is not None else os.environ.get(CACHE_ENV)
        self.cache_dir = Path(where) if where else Path.home() / ".cache" / "streamguard" / "emulated-kernels"
        self.launched: Counter[str] = Counter()
        self.launch_seconds: Counter[str] = Counter()
        self.launch_streams: Counter[int] = Counter()
        self.cupy = self._cupy_module()
        self.cupyx = self._cupyx_module()

    def _build(self, code: str) -> BuiltModule:
        first = code.split("\n", 1)[0]
        stem = first.rsplit("/", 1)[-1].split(".", 1)[0] if first.startswith('#line 1 "kernels/') else "module"
        try:
            return build({stem: code}, self.cache_dir)[stem]
        except RuntimeError as exc:
            raise CompileException(str(exc)) from None

    def _cupy_module(self) -> types.ModuleType:
        cupy = _Namespace("emulated_cupy", np)
        cupy.__doc__ = "CuPy on the emulated device (streamguard.backends.emulated_cupy)."
        cupy.ndarray = ndarray
        cupy.linalg = _Namespace("emulated_cupy.linalg", np.linalg)
        cupy.RawModule = lambda **kwargs: RawModule(self, **kwargs)
        cupy.asarray = lambda a, dtype=None, order=None: _upload(a, dtype, copy=False)
        cupy.array = lambda obj, dtype=None, copy=True, order="K", **kw: _upload(obj, dtype, copy)

        def ascontiguousarray(a: Any, dtype: Any = None) -> ndarray:
            if not isinstance(a, ndarray):
                raise TypeError(
                    f"Argument 'a' has incorrect type (expected cupy.ndarray, got {type(a).__name__}): "
                    "cupy.ascontiguousarray takes device arrays only"
                )
            out = np.ascontiguousarray(a._a, dtype=dtype)
            return a if out is a._a else ndarray._of(out)  # no copy needed: the array itself, as in CuPy

        cupy.ascontiguousarray = ascontiguousarray
        cupy.asnumpy = lambda a, stream=None: a.get(stream=stream) if isinstance(a, ndarray) else np.asarray(a)
        cupy.get_array_module = lambda *args: cupy if any(isinstance(a, ndarray) for a in args) else np

        cuda = types.ModuleType("emulated_cupy.cuda")
        cuda.Stream = Stream
        cuda.Event = Event
        cuda.get_current_stream = _DEVICE_STREAMS.current
        cuda.compiler = types.SimpleNamespace(CompileException=CompileException)
        cuda.driver = types.SimpleNamespace(CUDADriverError=CUDADriverError)
        cuda.runtime = types.SimpleNamespace(getDeviceCount=lambda: 1, deviceSynchronize=self.synchronize)
        cupy.cuda = cuda
        return cupy

    def _cupyx_module(self) -> types.ModuleType:
        cupyx = types.ModuleType("emulated_cupyx")
        cupyx.empty_pinned = lambda shape, dtype=float, order="C": _PINNED.allocate(shape, dtype)
        return cupyx

    @staticmethod
    def synchronize() -> None:
        """``cudaDeviceSynchronize``: every copy in flight is done."""
        for key in list(_PINNED._in_flight):
            for stream, seq in _PINNED._in_flight.get(key, []):
                stream._complete(seq)


__all__ = ["CACHE_ENV", "CUDADriverError", "CompileException", "EmulatedDevice", "KernelLaunchError", "ndarray"]
