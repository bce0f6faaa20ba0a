"""The emulated device's memory: ``ndarray``, a host NumPy array that follows CuPy's rules for device memory.

No implicit conversion to or from NumPy (``np.asarray(device)``, a host
array as an operand or on the right of a basic-index assignment raise
``TypeError`` as CuPy does); reductions and scalar indexing return 0-d device
arrays; ``get()``/``set()`` check dtype and shape as CuPy does, and copy on
the emulated streams of :mod:`streamguard.backends.emulated_cupy_streams`.
Part of the emulated device of :mod:`streamguard.backends.emulated_cupy`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from streamguard.backends.emulated_cupy_streams import _DEVICE_STREAMS, _PINNED

_IMPLICIT = (
    "Implicit conversion to a NumPy array is not allowed. Please use `.get()` to construct a NumPy array explicitly."
)


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

