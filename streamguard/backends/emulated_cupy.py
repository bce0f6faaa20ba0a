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

Everything executes synchronously, in order. It is selected only explicitly:
``STREAMGUARD_CUDA_EMULATE=1`` with ``--backend cuda`` (see
``streamguard.backends.create_backend``) or ``CupyRuntime(cupy_module=...)``
in tests (``pytest -m emulated_gpu``). Nothing imports it on a GPU machine.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
import types
import weakref
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from streamguard.backends.host_kernels import BuiltModule, KernelLaunchError, build, launch

CACHE_ENV = "STREAMGUARD_EMULATE_CACHE"
"""Where the emulated device keeps its g++ builds (default ``~/.cache/streamguard/emulated-kernels``)."""

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
)


class CompileException(RuntimeError):
    """A module failed to build (CuPy's ``cupy.cuda.compiler.CompileException``)."""


class CUDADriverError(RuntimeError):
    """What the driver would answer (CuPy's ``cupy.cuda.driver.CUDADriverError``)."""


# ---------------------------------------------------------------------- arrays


def _host_operand_error(where: str) -> TypeError:
    return TypeError(
        f"{where}: Unsupported type <class 'numpy.ndarray'>: a host array cannot meet device memory implicitly "
        "(upload it with cupy.asarray first)"
    )


def _unwrap(value: Any, where: str) -> Any:
    """Device arrays to their host storage, recursively; a host array is refused as CuPy refuses it."""
    if isinstance(value, ndarray):
        return value._a
    if isinstance(value, np.ndarray):
        raise _host_operand_error(where)
    if isinstance(value, (list, tuple)):
        return type(value)(_unwrap(v, where) for v in value)
    return value


def _wrap(value: Any) -> Any:
    """Host results of an operation back to device arrays (a NumPy scalar is a 0-d device array, as in CuPy)."""
    if isinstance(value, np.ndarray):
        return ndarray._of(value)
    if isinstance(value, np.generic):
        return ndarray._of(np.asarray(value))
    if isinstance(value, tuple):
        return tuple(_wrap(v) for v in value)
    if isinstance(value, list):
        return [_wrap(v) for v in value]
    return value


def _index(key: Any) -> Any:
    """An index for the host storage: device arrays unwrapped; host arrays and lists allowed (CuPy uploads them)."""
    if isinstance(key, ndarray):
        return key._a
    if isinstance(key, tuple):
        return tuple(_index(k) for k in key)
    return key


def _advanced(key: Any) -> bool:
    keys = key if isinstance(key, tuple) else (key,)
    return any(isinstance(k, (ndarray, np.ndarray, list)) for k in keys)


def _binary(name: str) -> Callable[[ndarray, Any], Any]:
    def method(self: ndarray, other: Any) -> Any:
        if isinstance(other, np.ndarray) and not isinstance(other, ndarray):
            raise _host_operand_error(f"cupy.ndarray.{name}")
        if not isinstance(other, (ndarray, np.generic, int, float, complex, bool)):
            return NotImplemented
        return _wrap(getattr(self._a, name)(_unwrap(other, name)))

    method.__name__ = name
    return method


def _inplace(name: str) -> Callable[[ndarray, Any], Any]:
    def method(self: ndarray, other: Any) -> Any:
        if isinstance(other, np.ndarray):
            raise _host_operand_error(f"cupy.ndarray.{name}")
        getattr(self._a, name)(_unwrap(other, name))
        return self

    method.__name__ = name
    return method


def _unary(name: str) -> Callable[[ndarray], Any]:
    def method(self: ndarray) -> Any:
        return _wrap(getattr(self._a, name)())

    method.__name__ = name
    return method


# Attributes of a NumPy array that expose host memory; a CuPy array has none of them.
_HOST_ONLY = frozenset({"ctypes", "data", "base", "__array_interface__", "__array_struct__", "tofile", "dump", "dumps"})


class ndarray:  # noqa: N801 - CuPy's name
    """Device memory of the emulated device (host storage, CuPy's rules)."""

    __slots__ = ("_a", "__weakref__")
    __array_priority__ = 100.0
    __hash__ = None  # type: ignore[assignment]

    def __init__(self, shape: Any, dtype: Any = float, order: str = "C") -> None:
        self._a = np.empty(shape, dtype=dtype, order=order)

    @classmethod
    def _of(cls, host: np.ndarray) -> ndarray:
        out = cls.__new__(cls)
        out._a = host
        return out

    # -- what CuPy adds
    def get(self, stream: Any = None, order: str = "C", out: np.ndarray | None = None, blocking: bool = True) -> np.ndarray:
        """A host copy (CuPy: a device-to-host copy on ``stream``, synchronised unless ``blocking=False``)."""
        stream = stream if stream is not None else _DEVICE_STREAMS.current()
        if out is not None:
            if not isinstance(out, np.ndarray):
                raise TypeError("Only numpy.ndarray can be obtained from cupy.ndarray")
            if out.dtype != self.dtype:
                raise TypeError(f"{out.dtype} array cannot be obtained from {self.dtype} array")
            if out.shape != self.shape:
                raise ValueError(f"Shape mismatch. Expected shape: {self.shape}, actual shape: {out.shape}")
            np.copyto(out, self._a)
            host = out
        else:
            host = np.array(self._a, order=order, copy=True)
        if blocking:
            stream.synchronize()
        return host

    def set(self, arr: np.ndarray, stream: Any = None) -> None:
        """Copy a host array in (CuPy: an asynchronous host-to-device copy on ``stream``)."""
        if not isinstance(arr, np.ndarray) or isinstance(arr, ndarray):
            raise TypeError("Only numpy.ndarray can be set to cupy.ndarray")
        if self.dtype != arr.dtype:
            raise TypeError(f"{arr.dtype} array cannot be set to {self.dtype} array")
        if self.shape != arr.shape:
            raise ValueError(f"Shape mismatch. Old shape: {self.shape}, new shape: {arr.shape}")
        if not (self._a.flags.c_contiguous or self._a.flags.f_contiguous):
            raise RuntimeError("Cannot set to non-contiguous array")
        stream = stream if stream is not None else _DEVICE_STREAMS.current()
        np.copyto(self._a, arr)
        # From pinned memory the copy is asynchronous: the source must stay untouched until it is done.
        _PINNED.copy_started(arr, stream)

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        raise TypeError(_IMPLICIT)

    def __array_ufunc__(self, ufunc: np.ufunc, method: str, *inputs: Any, **kwargs: Any) -> Any:
        where = f"numpy.{ufunc.__name__}"
        if "out" in kwargs:
            kwargs["out"] = tuple(_unwrap(o, where) for o in kwargs["out"])
        result = getattr(ufunc, method)(*_unwrap(inputs, where), **kwargs)
        return None if method == "at" else _wrap(result)

    def __array_function__(self, func: Any, types_: Any, args: Any, kwargs: Any) -> Any:
        where = f"numpy.{func.__name__}"
        return _wrap(func(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()}))

    def __reduce__(self) -> Any:
        return _upload, (self.get(),)

    def __copy__(self) -> ndarray:
        return ndarray._of(self._a.copy())

    def __deepcopy__(self, memo: Any) -> ndarray:
        return ndarray._of(self._a.copy())

    # -- layout
    shape = property(lambda self: self._a.shape)
    dtype = property(lambda self: self._a.dtype)
    ndim = property(lambda self: self._a.ndim)
    size = property(lambda self: self._a.size)
    nbytes = property(lambda self: self._a.nbytes)
    itemsize = property(lambda self: self._a.itemsize)
    strides = property(lambda self: self._a.strides)
    flags = property(lambda self: self._a.flags)
    T = property(lambda self: ndarray._of(self._a.T))

    def __len__(self) -> int:
        if self._a.ndim == 0:
            raise TypeError("len() of unsized object")
        return len(self._a)

    def __iter__(self) -> Iterator[ndarray]:
        if self._a.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(self._a.shape[0]))

    def __getitem__(self, key: Any) -> Any:
        return _wrap(self._a[_index(key)])

    def __setitem__(self, key: Any, value: Any) -> None:
        if isinstance(value, np.ndarray) and not isinstance(value, ndarray) and not _advanced(key):
            # CuPy refuses a host array on the right of a basic-index assignment (cupy/cupy#2079).
            raise _host_operand_error("cupy.ndarray.__setitem__")
        self._a[_index(key)] = value._a if isinstance(value, ndarray) else value

    # -- scalars (CuPy: a device-to-host copy; no __index__, as in CuPy)
    def __bool__(self) -> bool:
        return bool(self._a)

    def __int__(self) -> int:
        return int(self._a)

    def __float__(self) -> float:
        return float(self._a)

    def __complex__(self) -> complex:
        return complex(self._a)

    def item(self) -> Any:
        return self._a.item()

    def tolist(self) -> Any:
        return self._a.tolist()

    def __repr__(self) -> str:
        return f"{self._a!r}  # emulated device"

    def __str__(self) -> str:
        return str(self._a)

    def __format__(self, spec: str) -> str:
        return format(self._a, spec)

    # -- everything else NumPy's ndarray has, with device results
    def __getattr__(self, name: str) -> Any:
        if name in _HOST_ONLY or name.startswith("_"):
            raise AttributeError(f"'cupy.ndarray' object has no attribute {name!r}")
        attr = getattr(self._a, name)
        if not callable(attr):
            return _wrap(attr)

        def method(*args: Any, **kwargs: Any) -> Any:
            where = f"cupy.ndarray.{name}"
            return _wrap(attr(*_unwrap(args, where), **{k: _unwrap(v, where) for k, v in kwargs.items()}))

        return method


for _name in (
    "__add__", "__radd__", "__sub__", "__rsub__", "__mul__", "__rmul__", "__truediv__", "__rtruediv__",
    "__floordiv__", "__rfloordiv__", "__mod__", "__rmod__", "__pow__", "__rpow__", "__matmul__", "__rmatmul__",
    "__and__", "__rand__", "__or__", "__ror__", "__xor__", "__rxor__", "__lshift__", "__rlshift__",
    "__rshift__", "__rrshift__", "__lt__", "__le__", "__gt__", "__ge__", "__eq__", "__ne__",
):  # fmt: skip
    setattr(ndarray, _name, _binary(_name))
for _name in (
    "__iadd__", "__isub__", "__imul__", "__itruediv__", "__ifloordiv__", "__imod__", "__ipow__",
    "__iand__", "__ior__", "__ixor__", "__ilshift__", "__irshift__",
):  # fmt: skip
    setattr(ndarray, _name, _inplace(_name))
for _name in ("__neg__", "__pos__", "__abs__", "__invert__"):
    setattr(ndarray, _name, _unary(_name))


def _upload(obj: Any, dtype: Any = None, copy: bool | None = True) -> ndarray:
    if isinstance(obj, ndarray):
        out = obj._a.astype(dtype, copy=False) if dtype is not None else obj._a
        if out is obj._a:
            return ndarray._of(out.copy()) if copy else obj
        return ndarray._of(out)
    return ndarray._of(np.array(obj, dtype=dtype, copy=True))


# --------------------------------------------------------------------- streams


class Event:
    """A point in one stream's work (``cupy.cuda.Event``)."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        self._stream: Stream | None = None
        self._seq = 0

    def record(self, stream: Stream | None = None) -> None:
        stream = stream if stream is not None else _DEVICE_STREAMS.current()
        self._stream, self._seq = stream, stream._seq

    def synchronize(self) -> None:
        if self._stream is not None:
            self._stream._complete(self._seq)

    @property
    def done(self) -> bool:
        return True


class Stream:
    """A CUDA stream (``cupy.cuda.Stream``): ``with stream:`` makes it the current one."""

    _ptrs = itertools.count(0x5000)

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int = 0) -> None:
        self.ptr = 0 if null else next(Stream._ptrs)
        self.non_blocking = non_blocking
        self._seq = 0  # work enqueued so far
        self._waits: list[tuple[int, Stream, int]] = []  # (own seq, other stream, its seq): waits for it there

    def _enqueue(self) -> int:
        self._seq += 1
        return self._seq

    def record(self, event: Event | None = None) -> Event:
        event = event if event is not None else Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        if event._stream is not None and event._stream is not self:
            self._waits.append((self._enqueue(), event._stream, event._seq))

    def synchronize(self) -> None:
        self._complete(self._seq)

    def _complete(self, seq: int, seen: set[int] | None = None) -> None:
        """The host has waited for this stream up to ``seq``, and so for what it waited on."""
        seen = set() if seen is None else seen
        if id(self) in seen:
            return
        seen.add(id(self))
        _PINNED.completed(self, seq)
        for at, other, other_seq in self._waits:
            if at <= seq:
                other._complete(other_seq, seen)

    def __enter__(self) -> Stream:
        _DEVICE_STREAMS.push(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _DEVICE_STREAMS.pop(self)

    def __repr__(self) -> str:
        return f"<emulated Stream {self.ptr:#x}>"


class _CurrentStreams(threading.local):
    """The current stream of each host thread (the null stream unless a ``with stream:`` is open)."""

    null = Stream(null=True)

    def __init__(self) -> None:
        self.stack: list[Stream] = []

    def current(self) -> Stream:
        return self.stack[-1] if self.stack else self.null

    def push(self, stream: Stream) -> None:
        self.stack.append(stream)

    def pop(self, stream: Stream) -> None:
        if not self.stack or self.stack[-1] is not stream:
            raise RuntimeError("streams must be exited in the reverse order they were entered")
        self.stack.pop()


_DEVICE_STREAMS = _CurrentStreams()


class _PinnedMemory:
    """Pinned host buffers and the asynchronous copies out of them still in flight.

    A buffer is read-only while a copy out of it is in flight, and writable
    again once the host has synchronised with an event or stream that covers
    that copy: writing into it earlier raises ``ValueError: assignment
    destination is read-only`` where a GPU would silently upload the new bytes.
    """

    def __init__(self) -> None:
        self._buffers: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
        self._in_flight: dict[int, list[tuple[Stream, int]]] = {}

    def allocate(self, shape: Any, dtype: Any) -> np.ndarray:
        buffer = np.empty(shape, dtype=dtype)
        self._in_flight.pop(id(buffer), None)  # a freed buffer's id, reused
        self._buffers[id(buffer)] = buffer
        return buffer

    def _owner(self, array: np.ndarray) -> np.ndarray | None:
        while array is not None:
            if self._buffers.get(id(array)) is array:
                return array
            array = array.base  # type: ignore[assignment]
        return None

    def copy_started(self, source: np.ndarray, stream: Stream) -> None:
        owner = self._owner(source)
        if owner is None:
            return  # pageable memory: CUDA stages it before the call returns
        self._in_flight.setdefault(id(owner), []).append((stream, stream._enqueue()))
        owner.flags.writeable = False

    def completed(self, stream: Stream, seq: int) -> None:
        for key in list(self._in_flight):
            left = [(s, q) for s, q in self._in_flight[key] if not (s is stream and q <= seq)]
            if left:
                self._in_flight[key] = left
                continue
            del self._in_flight[key]
            owner = self._buffers.get(key)
            if owner is not None:
                owner.flags.writeable = True


_PINNED = _PinnedMemory()


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
