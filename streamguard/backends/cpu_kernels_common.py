"""numba helpers shared by the cpu backend's kernels: popcount, numpy's pairwise summation, serial twins.

The kernels of :mod:`streamguard.backends.cpu_kernels_near_duplicate` and
:mod:`streamguard.backends.cpu_kernels_coverage` call these (inlined or
compiled in); :class:`streamguard.backends.cpu_backend.CpuBackend` runs them.
"""

from __future__ import annotations

import types as pytypes
from typing import Any

import numpy as np
from numba import njit, types
from numba.extending import intrinsic

_ROWS = 64  # rows per unit of work of the row-parallel kernels (scratch is allocated once per unit)


def _serial_twin(kernel: Any) -> Any:
    """The same kernel compiled without ``parallel`` (``prange`` runs as ``range``): no thread pool at all.

    Small batches and one-thread configurations run these: launching a
    parallel region costs more than it brings there, and on a busy machine a
    pool waiting for a core it shares costs milliseconds per launch. A
    distinct qualified name keeps the two compilations apart in the disk cache.
    """
    func = kernel.py_func
    clone = pytypes.FunctionType(func.__code__, func.__globals__, func.__name__ + "_serial", func.__defaults__, func.__closure__)
    clone.__qualname__ = func.__qualname__ + "_serial"
    clone.__doc__ = func.__doc__
    return njit(cache=True)(clone)


@intrinsic
def _popcount(typingctx: Any, word: Any) -> Any:
    """Set bits of a uint64 as an int64: one ``popcnt``, and integer arithmetic stays integer."""

    def codegen(context: Any, builder: Any, signature: Any, args: Any) -> Any:
        return builder.ctpop(args[0])

    return types.int64(types.uint64), codegen


@njit(cache=True, inline="always")
def _hamming(a: np.ndarray, b: np.ndarray) -> int:
    d = 0
    for w in range(a.shape[0]):
        d += _popcount(a[w] ^ b[w])
    return d


@njit(cache=True, inline="always")
def _leaf_sum(a: np.ndarray, start: int, n: int) -> Any:
    """numpy's pairwise-summation leaf (n <= 128): 8 interleaved accumulators, then the tail.

    Starts from ``a[start]`` rather than 0, the same value for the sums of
    squares summed here (they are never -0.0). Needs ``n >= 1``.
    """
    if n < 8:
        res = a[start]
        for i in range(1, n):
            res += a[start + i]
        return res
    r0 = a[start]
    r1 = a[start + 1]
    r2 = a[start + 2]
    r3 = a[start + 3]
    r4 = a[start + 4]
    r5 = a[start + 5]
    r6 = a[start + 6]
    r7 = a[start + 7]
    i = 8
    stop = n - n % 8
    while i < stop:
        r0 += a[start + i]
        r1 += a[start + i + 1]
        r2 += a[start + i + 2]
        r3 += a[start + i + 3]
        r4 += a[start + i + 4]
        r5 += a[start + i + 5]
        r6 += a[start + i + 6]
        r7 += a[start + i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[start + i]
        i += 1
    return res


@njit(cache=True)
def _pairwise_sum(a: np.ndarray, frames: np.ndarray, lefts: np.ndarray) -> Any:
    """``a.sum()`` for a contiguous float row, exactly as numpy sums it (``n >= 1``).

    numpy recurses (split at ``n // 2`` rounded down to a multiple of 8,
    leaves of at most 128 summed by :func:`_leaf_sum`); numba cannot cache
    recursive functions, so this walks the same tree with an explicit stack.
    ``frames`` (64, 4) int64 scratch (start, length, split, phase: 0 to run,
    1 left half running, 2 right half running); ``lefts`` (64,) scratch of
    ``a``'s dtype holding finished left halves.
    """
    n = a.shape[0]
    if n <= 128:
        return _leaf_sum(a, 0, n)
    top = 0
    frames[0, 0] = 0
    frames[0, 1] = n
    frames[0, 3] = 0
    value = a[0]
    while True:
        start = frames[top, 0]
        length = frames[top, 1]
        if length > 128:
            split = length // 2
            split -= split % 8
            frames[top, 2] = split
            frames[top, 3] = 1
            top += 1
            frames[top, 0] = start
            frames[top, 1] = split
            frames[top, 3] = 0
            continue
        value = _leaf_sum(a, start, length)
        top -= 1
        while top >= 0 and frames[top, 3] == 2:  # right halves done: combine upwards
            value = lefts[top] + value
            top -= 1
        if top < 0:
            return value
        lefts[top] = value  # a left half done: run its right half
        frames[top, 3] = 2
        top += 1
        frames[top, 0] = frames[top - 1, 0] + frames[top - 1, 2]
        frames[top, 1] = frames[top - 1, 1] - frames[top - 1, 2]
        frames[top, 3] = 0


@njit(cache=True, inline="always")
def _pairwise_scratch(d: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A float32 row of ``d`` and :func:`_pairwise_sum`'s ``frames`` and ``lefts``: one unit of work's scratch."""
    return np.empty(d, dtype=np.float32), np.empty((64, 4), dtype=np.int64), np.empty(64, dtype=np.float32)
