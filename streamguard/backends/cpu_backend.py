"""The numba CPU backend: the reference's semantics, compiled, with BLAS for the GEMMs.

Every function reproduces :mod:`streamguard.backends.numpy_backend`. Integer
results (signatures, cells, distances, slots, window and table state) are
identical, and so are the float state updates, because the float arithmetic
runs in the reference's precision and order: float32 where it works in
float32, numpy's pairwise summation for norms and sums of squares, the same
sequential float64 prefix sums for the account style. Only the dot product
in ``coverage_reduce`` sums in another order (float64; agrees to ~1e-15).

Where the time goes, and what this module does about it:

- GEMMs are numpy matmuls (OpenBLAS), called between the jitted kernels and
  never inside a ``prange``: BLAS threads and numba threads never run at the
  same time.
- The cell of a request is taken after removing its account's style, which
  costs the reference a second ``(n, d) @ (d, K)`` GEMM. Here it is derived in
  O(K) per request from the first GEMM, the centroids' Gram matrix and one
  small GEMM over the batch's accounts (:func:`_gram_cells`), with an error
  bound: rows whose two best cells are closer than the bound go through the
  exact GEMM, so the cells are still the reference's (checked against the
  full GEMM the first time a codebook is seen).
- Causal order inside a batch is kept without sorting where a sequential
  pass is cheap: the within-account scan links the batch into the window in
  arrival order, then walks each account's chain once for all of the
  account's requests in the batch (:func:`_dup_walk`; the reference walks
  one chain per request, the pairs compared are the same); the
  cross-account lookup is the reference's loop, compiled.
- Threads: on a shared or small machine a second BLAS or numba thread can
  cost more than it brings: a pool that waits for a busy core adds
  milliseconds to every call (measured here: 8 ms per numba launch, 16 ms per
  2-thread sgemm, on 2 cores shared with other jobs). The default is one
  thread (scale out by partitions); ``threads=None`` measures 1 thread
  against all cores in :meth:`CpuBackend.warmup` and keeps the faster. Each
  parallel kernel has a serial twin that runs small inputs and 1-thread
  configurations with no pool at all. BLAS threads are process-wide: the
  backend sets them to its count before its GEMMs.

numba is imported here only. Compiled functions are cached on disk
(``cache=True``); :meth:`CpuBackend.warmup` runs each one on tiny inputs so
that compilation, or loading from the cache, never lands on the first batch.
"""

from __future__ import annotations

import contextlib
import logging
import time
import types as pytypes
from collections.abc import Callable
from typing import Any

import numba
import numpy as np
from numba import njit, prange, types
from numba.extending import intrinsic

from streamguard.backends.base import CrossMatch, DupScan
from streamguard.backends.numpy_backend import CLARITY, NumpyBackend, check_window

log = logging.getLogger(__name__)

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)
_NORM_FLOOR = np.float32(1e-12)
_BLOCK = 16  # float32 columns per cache line: column ranges of the column-parallel kernel are multiples of it
_ROWS = 64  # rows per unit of work of the row-parallel kernels (scratch is allocated once per unit)
_PARALLEL_ROWS = 1024  # below this many rows a numba kernel runs on one thread: launching costs more
_GRAM_MIN_ROWS = 64
"""OpenBLAS takes other code paths for tiny GEMMs (gemv for one row, small-matrix kernels for a
few), which round differently from the regular kernel; the rows of a regular GEMM round the same
whatever the number of rows. The Gram path only runs where the reference's second GEMM is a
regular one (at least this many rows, ``K * d >= _GRAM_MIN_WORK``), and its exact fallback pads
the rows it recomputes to ``_FALLBACK_ROWS``: on OpenBLAS 0.3.31 (SkylakeX) every GEMM with
``K * d >= 32768`` and more than 8 rows measured regular."""
_GRAM_MIN_WORK = 1 << 15
_FALLBACK_ROWS = 32
_UNIT_TOLERANCE = 1e-4
"""The error bound of the Gram path assumes unit centroids (the codebook's)."""


def _gram_margin(dim: int) -> float:
    """Gap between the two best cells below which the Gram estimate is not trusted.

    With ``g = d * 2**-24 / (1 - d * 2**-24)`` (the bound on the relative
    error of a float32 dot product of length ``d``, any summation order), the
    reference's float32 GEMM is within ``2g`` of the exact product of its
    float32 operands (``|u - style| <= 2``), and the estimate within ``3g``
    plus a few float32 roundings of it (first GEMM, the accounts' prior
    styles, the residuals' projections). Twice that sum, with room: a gap
    above the margin means both argmaxes agree.
    """
    unit = 2.0**-24
    return 12.0 * dim * unit / (1.0 - dim * unit) + 1e-6


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


# ------------------------------------------------------------------ signatures


@njit(cache=True, parallel=True)
def _pack_signs(projections: np.ndarray, offsets: np.ndarray, out: np.ndarray) -> None:
    """Bit ``j`` of ``out[i, w]`` = ``projections[i, 64w+j] - offsets[64w+j] > 0``."""
    n, words = out.shape
    for i in prange(n):
        for w in range(words):
            acc = np.uint64(0)
            for j in range(64):
                if projections[i, 64 * w + j] - offsets[64 * w + j] > 0:
                    acc |= np.uint64(1) << np.uint64(j)
            out[i, w] = acc


# -------------------------------------------------------------- destyled cells


@njit(cache=True, parallel=True)
def _centre_normalise(x: np.ndarray, mean: np.ndarray, unit: np.ndarray) -> None:
    """``c = x - mean``; ``unit = c / max(|c|, 1e-12)``, with numpy's float32 norm."""
    n, d = x.shape
    for chunk in prange((n + _ROWS - 1) // _ROWS):
        sq = np.empty(d, dtype=np.float32)
        frames = np.empty((64, 4), dtype=np.int64)
        lefts = np.empty(64, dtype=np.float32)
        for i in range(chunk * _ROWS, min(n, (chunk + 1) * _ROWS)):
            for k in range(d):
                c = x[i, k] - mean[k]
                unit[i, k] = c
                sq[k] = c * c
            norm = max(np.sqrt(_pairwise_sum(sq, frames, lefts)), _NORM_FLOOR)
            for k in range(d):
                unit[i, k] = unit[i, k] / norm


@njit(cache=True, fastmath=True)
def _max_fill(out: np.ndarray, scores: np.ndarray, acc: np.ndarray, inv: float) -> float:
    """``out = scores - acc * inv``; returns ``max(out)``. Eight independent running maxima keep the
    loop from waiting on one dependency chain (numba does not vectorise a max reduction)."""
    n = out.shape[0]
    head = n - n % 8
    m0 = m1 = m2 = m3 = m4 = m5 = m6 = m7 = -np.inf
    for j in range(0, head, 8):
        v0 = scores[j] - acc[j] * inv
        v1 = scores[j + 1] - acc[j + 1] * inv
        v2 = scores[j + 2] - acc[j + 2] * inv
        v3 = scores[j + 3] - acc[j + 3] * inv
        v4 = scores[j + 4] - acc[j + 4] * inv
        v5 = scores[j + 5] - acc[j + 5] * inv
        v6 = scores[j + 6] - acc[j + 6] * inv
        v7 = scores[j + 7] - acc[j + 7] * inv
        out[j] = v0
        out[j + 1] = v1
        out[j + 2] = v2
        out[j + 3] = v3
        out[j + 4] = v4
        out[j + 5] = v5
        out[j + 6] = v6
        out[j + 7] = v7
        m0 = max(m0, v0)
        m1 = max(m1, v1)
        m2 = max(m2, v2)
        m3 = max(m3, v3)
        m4 = max(m4, v4)
        m5 = max(m5, v5)
        m6 = max(m6, v6)
        m7 = max(m7, v7)
    top = max(max(max(m0, m1), max(m2, m3)), max(max(m4, m5), max(m6, m7)))
    for j in range(head, n):
        v = scores[j] - acc[j] * inv
        out[j] = v
        top = max(top, v)
    return top


@njit(cache=True, parallel=True)
def _nearest_residuals(
    unit: np.ndarray,
    scores: np.ndarray,
    centroids: np.ndarray,
    weights32: np.ndarray,
    nearest: np.ndarray,
    nearest_score: np.ndarray,
    weighted: np.ndarray,
    residual_sq: np.ndarray,
) -> None:
    """With ``c`` the nearest centroid (``nearest``, from numpy's argmax): ``r = unit - (unit.c) c``,
    ``weighted = w r``, ``|r|**2``; ``nearest_score = unit.c``."""
    n, d = unit.shape
    for chunk in prange((n + _ROWS - 1) // _ROWS):
        sq = np.empty(d, dtype=np.float32)
        frames = np.empty((64, 4), dtype=np.int64)
        lefts = np.empty(64, dtype=np.float32)
        for i in range(chunk * _ROWS, min(n, (chunk + 1) * _ROWS)):
            best = nearest[i]
            s = scores[i, best]
            nearest_score[i] = s
            w = weights32[i]
            for k in range(d):
                r = unit[i, k] - s * centroids[best, k]
                weighted[i, k] = r * w
                sq[k] = r * r
            residual_sq[i] = _pairwise_sum(sq, frames, lefts)


@njit(cache=True)
def _style_weights(
    order: np.ndarray,
    starts: np.ndarray,
    slots: np.ndarray,
    weights: np.ndarray,
    state_weights: np.ndarray,
    style_weight: np.ndarray,
    before_w: np.ndarray,
) -> None:
    """Weight of each request's style, as the reference computes it; then ``style_weight += w``.

    In sorted (account, arrival) order: ``before_w[p] = style_weight[slot] +
    earlier`` with ``earlier = (inclusive[p] - w) - base`` (0 for the
    account's first request), ``inclusive`` the running float64 sum over the
    whole sorted batch and ``base`` its value before the account's first
    request: the reference's expressions, so the same rounding. ``weights``
    (n,) float64; ``state_weights`` the same in ``style_weight``'s dtype.
    """
    n = order.shape[0]
    acc = 0.0
    base = 0.0
    prior = 0.0
    for p in range(n):
        i = order[p]
        w = weights[i]
        if starts[p]:
            base = acc
            prior = np.float64(style_weight[slots[i]])
            acc += w
            before_w[p] = prior + 0.0
        else:
            acc += w
            before_w[p] = prior + ((acc - w) - base)
    for i in range(n):
        style_weight[slots[i]] += state_weights[i]


@njit(cache=True, parallel=True)
def _destyle(
    order: np.ndarray,
    starts: np.ndarray,
    slots: np.ndarray,
    unit: np.ndarray,
    weighted: np.ndarray,
    before_w: np.ndarray,
    style_sum: np.ndarray,
    out: np.ndarray,
    parts: int,
) -> None:
    """``out[i] = unit[i] - float32(style before i)``; then ``style_sum[slot] += weighted`` (float32, in order).

    One pass over the batch in sorted (account, arrival) order, whole rows at
    a time (each column's prefix is independent, so threads take column
    ranges). ``before = prior + ((inclusive - w_i) - base)`` (``prior + 0``
    for the account's first request) is the reference's float64 expression;
    the state is read once per account, at its first request, before any of
    the batch is added to it, as the reference gathers ``style_sum`` before
    its ``np.add.at``.
    """
    n, d = unit.shape
    parts = max(1, min(parts, d // _BLOCK))
    for part in prange(parts):
        lo = (d * part // parts) // _BLOCK * _BLOCK
        hi = d if part == parts - 1 else (d * (part + 1) // parts) // _BLOCK * _BLOCK
        width = hi - lo
        acc = np.zeros(width, dtype=np.float64)
        base = np.zeros(width, dtype=np.float64)
        prior = np.zeros(width, dtype=np.float64)
        for p in range(n):
            i = order[p]
            slot = slots[i]
            first = starts[p]
            if first:
                for kk in range(width):
                    base[kk] = acc[kk]
                    prior[kk] = np.float64(style_sum[slot, lo + kk])
            bw = before_w[p]
            for kk in range(width):
                value = np.float64(weighted[i, lo + kk])
                acc[kk] += value
                if bw > 0:
                    earlier = 0.0 if first else (acc[kk] - value) - base[kk]
                    out[i, lo + kk] = unit[i, lo + kk] - np.float32((prior[kk] + earlier) / bw)
                else:
                    out[i, lo + kk] = unit[i, lo + kk] - np.float32(0.0)
            for kk in range(width):
                style_sum[slot, lo + kk] += weighted[i, lo + kk]


@njit(cache=True, parallel=True)
def _row_norms(x: np.ndarray, out: np.ndarray) -> None:
    """``out[i] = |x[i]|`` as ``np.linalg.norm(x, axis=1)`` computes it in float32 (pairwise sum of squares)."""
    n, d = x.shape
    for chunk in prange((n + _ROWS - 1) // _ROWS):
        sq = np.empty(d, dtype=np.float32)
        frames = np.empty((64, 4), dtype=np.int64)
        lefts = np.empty(64, dtype=np.float32)
        for i in range(chunk * _ROWS, min(n, (chunk + 1) * _ROWS)):
            for k in range(d):
                sq[k] = x[i, k] * x[i, k]
            out[i] = np.sqrt(_pairwise_sum(sq, frames, lefts))


@njit(cache=True, parallel=True, fastmath=True)
def _gram_cells(
    order: np.ndarray,
    firsts: np.ndarray,
    prior_row: np.ndarray,
    scores: np.ndarray,
    nearest: np.ndarray,
    nearest_score: np.ndarray,
    weights32: np.ndarray,
    before_w: np.ndarray,
    prior_scores: np.ndarray,
    gram: np.ndarray,
    threshold: np.ndarray,
    margin: float,
    cells: np.ndarray,
    ambiguous: np.ndarray,
) -> None:
    """Destyled cells without the second GEMM: ``(u - style) . c_k`` from quantities already known.

    ``u . c_k`` is ``scores``; a residual's projection is ``r_j . c_k =
    scores[j, k] - s_j * gram[n_j, k]`` (``gram = C C^T``), so the style's is
    ``(prior_scores[g, k] + sum_j w_j (r_j . c_k)) / before_w`` over the
    account's earlier requests ``j`` of the batch, with ``prior_scores =
    style_sum[slot] @ C.T``: O(K) per request instead of O(K d). The result
    is an estimate within ``margin / 2`` of the reference's GEMM (see
    :func:`_gram_margin`; fast-math rounding is far below it). The reference
    keeps the destyled cell only when its score reaches ``threshold``
    (``CLARITY`` times the nearest cell's score times ``|u - style|``), else
    the nearest cell: a row
    whose best estimate is below ``threshold - margin / 2`` takes the nearest
    cell; one above ``threshold + margin / 2`` whose runner-up is more than
    ``margin`` behind takes its best cell; any other row is marked
    ``ambiguous`` and decided by the exact GEMM. Rows with no style are
    exactly ``u``: their cell is the nearest one.
    """
    n, cells_count = scores.shape
    groups = firsts.shape[0]
    for g in prange(groups):
        stop = firsts[g + 1] if g + 1 < groups else n
        acc = np.zeros(cells_count, dtype=np.float64)
        estimate = np.empty(cells_count, dtype=np.float64)
        if prior_row[g] >= 0:
            for k in range(cells_count):
                acc[k] = prior_scores[prior_row[g], k]
        for p in range(firsts[g], stop):
            i = order[p]
            bw = before_w[p]
            if bw > 0:
                top = _max_fill(estimate, scores[i], acc, 1.0 / bw)
                if top < threshold[i] - 0.5 * margin:
                    cells[i] = nearest[i]
                    ambiguous[i] = False
                elif top < threshold[i] + 0.5 * margin:
                    cells[i] = nearest[i]
                    ambiguous[i] = True
                else:
                    line = top - margin
                    close = 0
                    best = cells_count
                    for k in range(cells_count):  # branch-free, so it vectorises
                        close += 1 if estimate[k] >= line else 0
                        best = min(best, k if estimate[k] == top else cells_count)
                    cells[i] = best
                    ambiguous[i] = close > 1
            else:
                cells[i] = nearest[i]
                ambiguous[i] = False
            if p + 1 < stop:
                w = np.float64(weights32[i])
                s = np.float64(nearest_score[i])
                c = nearest[i]
                for k in range(cells_count):
                    acc[k] += w * (scores[i, k] - s * gram[c, k])


# ---------------------------------------------------------- near-duplicate scan


@njit(cache=True)
def _dup_link(
    sigs: np.ndarray, slots: np.ndarray, window_sig: np.ndarray, window_prev: np.ndarray, head: np.ndarray, start: int
) -> None:
    """Insert the batch in arrival order: row ``q % C`` takes the signature and the account's head, then ``head = q``."""
    n, words = sigs.shape
    capacity = window_sig.shape[0]
    for i in range(n):
        q = start + i
        row = q % capacity
        for w in range(words):
            window_sig[row, w] = sigs[i, w]
        slot = slots[i]
        window_prev[row] = head[slot]
        head[slot] = q


@njit(cache=True, parallel=True)
def _dup_walk(
    order: np.ndarray,
    bounds: np.ndarray,
    sorted_sigs: np.ndarray,
    window_sig: np.ndarray,
    window_prev: np.ndarray,
    start: int,
    window: int,
    best: np.ndarray,
) -> None:
    """One walk of each account's chain serves all of its requests in the batch.

    ``order[bounds[g]:bounds[g + 1]]`` are account ``g``'s requests in batch
    order (positions ``Q`` ascending); ``sorted_sigs`` (W, n) their signatures
    word-major in that order; ``best`` (n,) in that order, filled with
    ``bits + 1``. The walk starts at the entry before the account's last
    request and goes back; entry ``p`` is a partner of exactly the requests
    with ``p < Q <= p + window``, a contiguous range ``[lo, hi)`` that only
    moves down as ``p`` falls, so each entry is read once and compared with
    a run of requests (a loop the compiler vectorises). The reference walks
    each request's chain separately; the pairs compared are the same.
    """
    words = sorted_sigs.shape[0]
    capacity = window_sig.shape[0]
    # Every position a walk visits lies in [base, start + n), fewer than `capacity` positions
    # from `base`: its row is one subtraction away, no 64-bit division per step.
    base = max(0, start - window)
    base_row = base % capacity
    for g in prange(bounds.shape[0] - 1):
        a = bounds[g]
        b = bounds[g + 1]
        dist = np.empty(b - a if words != 2 else 0, dtype=np.int64)  # scratch of the generic path
        oldest = start + order[a] - window
        p = window_prev[(start + order[b - 1]) % capacity]
        lo = b
        hi = b
        while p >= 0 and p >= oldest:
            row = base_row + (p - base)
            if row >= capacity:
                row -= capacity
            while lo > a and start + order[lo - 1] > p:
                lo -= 1
            while hi > lo and start + order[hi - 1] > p + window:
                hi -= 1
            if words == 2 and hi - lo < 8:  # few requests (most accounts): no views to set up
                e0 = window_sig[row, 0]
                e1 = window_sig[row, 1]
                for j in range(lo, hi):
                    best[j] = min(best[j], _popcount(sorted_sigs[0, j] ^ e0) + _popcount(sorted_sigs[1, j] ^ e1))
                p = window_prev[row]
                continue
            # Views from 0: indices the compiler knows are non-negative, so the loop vectorises
            # (indexing [lo, hi) directly costs a negative-index check per element: 5x slower).
            run = best[lo:hi]
            if words == 2:
                e0 = window_sig[row, 0]
                e1 = window_sig[row, 1]
                s0 = sorted_sigs[0, lo:hi]
                s1 = sorted_sigs[1, lo:hi]
                for k in range(hi - lo):
                    run[k] = min(run[k], _popcount(s0[k] ^ e0) + _popcount(s1[k] ^ e1))
            else:
                for w in range(words):
                    acc = sorted_sigs[w, lo:hi]
                    e = window_sig[row, w]
                    for k in range(hi - lo):
                        dist[k] = (0 if w == 0 else dist[k]) + _popcount(acc[k] ^ e)
                for k in range(hi - lo):
                    run[k] = min(run[k], dist[k])
            p = window_prev[row]


@njit(cache=True, parallel=True)
def _dup_query_walk(
    bounds: np.ndarray,
    origin: np.ndarray,
    stop: np.ndarray,
    sorted_sigs: np.ndarray,
    window_sig: np.ndarray,
    window_prev: np.ndarray,
    best: np.ndarray,
) -> None:
    """``dup_query`` with one walk per account, as ``_dup_walk``.

    Requests sorted by slot, in batch order within a slot: ``bounds`` delimit the
    accounts; ``origin``/``stop`` (n,) and ``best`` (n,) in that order, both
    non-decreasing within an account (``best`` filled with ``bits + 1``);
    ``sorted_sigs`` (W, n). Entry ``p`` of the chain is a partner of the
    requests with ``stop <= p <= origin``: a run ``[lo, hi)`` that only moves
    down as ``p`` falls, so each entry is read once.
    """
    words = sorted_sigs.shape[0]
    capacity = window_sig.shape[0]
    for g in prange(bounds.shape[0] - 1):
        a = bounds[g]
        b = bounds[g + 1]
        dist = np.empty(b - a, dtype=np.int64)  # scratch
        floor = max(stop[a], 0)
        p = origin[b - 1]
        lo = b
        hi = b
        while p >= floor:
            row = p % capacity
            while lo > a and origin[lo - 1] >= p:
                lo -= 1
            while hi > lo and stop[hi - 1] > p:
                hi -= 1
            # Views from 0, so the loops vectorise (see _dup_walk).
            run = best[lo:hi]
            part = dist[lo - a : hi - a]
            for w in range(words):
                e = window_sig[row, w]
                acc = sorted_sigs[w, lo:hi]
                for k in range(hi - lo):
                    part[k] = (0 if w == 0 else part[k]) + _popcount(acc[k] ^ e)
            for k in range(hi - lo):
                run[k] = min(run[k], part[k])
            p = window_prev[row]


@njit(cache=True)
def _cross_lookup(
    sigs: np.ndarray,
    slots: np.ndarray,
    ts: np.ndarray,
    table_slot: np.ndarray,
    table_ts: np.ndarray,
    table_sig: np.ndarray,
    table_bits: int,
    radius: int,
    window_ms: int,
    cross_slot: np.ndarray,
    cross_dist: np.ndarray,
) -> None:
    """The reference's loop: look up every band's bucket, keep the closest match (lowest band on ties), then overwrite.

    (Reading a chunk of requests' buckets ahead, to overlap cache misses, did
    not pay here: the tables fit the last-level cache.)
    """
    n, words = sigs.shape
    bands = table_slot.shape[0]
    band_len = words * 64 // bands
    mask = _ONES if band_len >= 64 else (np.uint64(1) << np.uint64(band_len)) - np.uint64(1)
    shift_out = np.uint64(64 - table_bits)
    none = words * 64 + 1
    buckets = np.empty(bands, dtype=np.int64)
    for i in range(n):
        for b in range(bands):
            start = b * band_len
            value = (sigs[i, start // 64] >> np.uint64(start % 64)) & mask
            key = (value + np.uint64(b + 1) * _GOLDEN) * _GOLDEN
            buckets[b] = np.int64(key >> shift_out)
        slot_i = slots[i]
        ts_i = ts[i]
        best_d = none
        best_s = -1
        for b in range(bands):
            q = buckets[b]
            other = table_slot[b, q]
            if other < 0 or other == slot_i or abs(ts_i - table_ts[b, q]) > window_ms:
                continue
            d = _hamming(sigs[i], table_sig[b, q])
            if d <= radius and d < best_d:
                best_d = d
                best_s = other
        cross_slot[i] = best_s
        cross_dist[i] = best_d
        for b in range(bands):
            q = buckets[b]
            table_slot[b, q] = slot_i
            table_ts[b, q] = ts_i
            for w in range(words):
                table_sig[b, q, w] = sigs[i, w]


# --------------------------------------------------------------------- coverage


@njit(cache=True)
def _histogram_add(hist: np.ndarray, slots: np.ndarray, cells: np.ndarray, weights: np.ndarray) -> None:
    """``hist[slots[i], cells[i]] += weights[i]`` in index order, in ``hist``'s precision (as ``np.add.at``)."""
    for i in range(slots.shape[0]):
        hist[slots[i], cells[i]] += weights[i]


@njit(cache=True, parallel=True)
def _coverage_reduce(
    hist: np.ndarray, slots: np.ndarray, surprisal: np.ndarray, sum_sq: np.ndarray, dot: np.ndarray, distinct: np.ndarray
) -> None:
    """Per given slot: ``sum(h**2)`` (numpy's pairwise order), ``h . surprisal`` and ``count(h > 0)``, in float64."""
    m = slots.shape[0]
    topics = hist.shape[1]
    for chunk in prange((m + _ROWS - 1) // _ROWS):
        sq = np.empty(topics, dtype=np.float64)
        frames = np.empty((64, 4), dtype=np.int64)
        lefts = np.empty(64, dtype=np.float64)
        for r in range(chunk * _ROWS, min(m, (chunk + 1) * _ROWS)):
            row = hist[slots[r]]
            total = 0.0
            count = 0
            for t in range(topics):
                h = np.float64(row[t])
                sq[t] = h * h
                total += h * surprisal[t]
                if h > 0:
                    count += 1
            sum_sq[r] = _pairwise_sum(sq, frames, lefts)
            dot[r] = total
            distinct[r] = count


# One serial twin per parallel kernel (see _serial_twin).
_SERIAL = {
    kernel: _serial_twin(kernel)
    for kernel in (
        _pack_signs, _centre_normalise, _nearest_residuals, _destyle, _row_norms, _gram_cells, _coverage_reduce, _dup_walk,
        _dup_query_walk,
    )
}


# ---------------------------------------------------------------------- backend


def _blas_controllers() -> list[tuple[Callable[[], int], Any]]:
    """(thread-count getter, threadpoolctl controller) of the BLAS that ``np.matmul`` calls; empty without threadpoolctl."""
    try:
        from threadpoolctl import ThreadpoolController  # noqa: PLC0415 - optional
    except ImportError:
        return []
    blas = [c for c in ThreadpoolController().lib_controllers if c.user_api == "blas"]
    own = [c for c in blas if "numpy" in str(getattr(c, "filepath", ""))] or blas
    found = []
    for controller in own:
        getter = controller.get_num_threads
        with contextlib.suppress(Exception):  # the raw C getter, when threadpoolctl exposes it: ~1 us a call
            getter = controller._get_symbol("openblas_get_num_threads") or getter
        found.append((getter, controller))
    return found


class _Codebook:
    """What the Gram path derives from one centroids array, and whether it was checked."""

    def __init__(self, centroids: np.ndarray) -> None:
        self.key = _centroids_key(centroids)
        c64 = centroids.astype(np.float64)
        self.gram = (c64 @ c64.T).astype(np.float32)
        norms = np.sqrt(np.einsum("kd,kd->k", c64, c64))
        self.unit = bool(np.all(np.abs(norms - 1.0) <= _UNIT_TOLERANCE))
        self.margin = _gram_margin(centroids.shape[1])
        self.verified: bool | None = None  # None: not compared with the full GEMM yet


def _centroids_key(centroids: np.ndarray) -> tuple[Any, ...]:
    """Identity of a centroids array: buffer, shape, strides and a few values (codebooks are not edited in place)."""
    probe = (float(centroids[0, 0]), float(centroids[-1, -1]), float(centroids[centroids.shape[0] // 2].sum()))
    return (centroids.__array_interface__["data"][0], centroids.shape, centroids.strides, probe)


class CpuBackend:
    """numba implementation of :class:`streamguard.backends.base.Backend` (host NumPy arrays).

    Parameters
    ----------
    bands, table_bits : shape of the cross-account tables (the functions read
        it from the tables; kept for symmetry with the other backends)
    threads : BLAS and numba threads. 1 by default: the stream scales out by
        partitions (one pipeline per partition, one process per replica), and
        on a shared machine a second thread costs more than it brings (2.5-3x
        slower end to end on the 2-core development machines). None measures
        1 thread against all cores in :meth:`warmup` and keeps the faster;
        an int uses that many. BLAS threads (process-wide) are set through
        threadpoolctl when it is installed, and left as they are otherwise.
    """

    name = "cpu"
    xp = np

    def __init__(self, bands: int = 8, table_bits: int = 16, threads: int | None = 1) -> None:
        if threads is not None and threads < 1:
            raise ValueError(f"threads must be >= 1 or None (measure), got {threads}")
        self.bands = bands
        self.table_bits = table_bits
        self.max_threads = int(numba.config.NUMBA_NUM_THREADS)
        self.threads = min(int(threads), self.max_threads) if threads is not None else self.max_threads
        self._measure_threads = threads is None
        self._blas = _blas_controllers()
        self._reference = NumpyBackend(bands=bands, table_bits=table_bits)
        self._codebook: _Codebook | None = None
        self._warm = False
        self.parallel_rows = _PARALLEL_ROWS
        """Inputs with fewer rows run the serial kernels (tests lower it to exercise the parallel ones)."""
        self.gram_rows = 0
        """Requests whose cell came from the Gram estimate (diagnostics)."""
        self.exact_rows = 0
        """Requests whose cell needed the exact GEMM (ambiguous or Gram path not applicable)."""

    def asarray(self, host: np.ndarray) -> np.ndarray:
        return np.asarray(host)

    def to_host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    # ---------------------------------------------------------------- threads

    def _run(self, kernel: Any, rows: int) -> Callable[..., Any]:
        """The parallel kernel for big inputs when more than one thread is in use, else its serial twin."""
        if self.threads == 1 or rows < self.parallel_rows:
            return _SERIAL[kernel]
        if numba.get_num_threads() != self.threads:  # thread-local in numba: set for the calling thread
            numba.set_num_threads(self.threads)
        return kernel

    def _set_blas_threads(self) -> None:
        """BLAS threads are process-wide: set them to this backend's count before its GEMMs, if something changed them."""
        for getter, controller in self._blas:
            if getter() != self.threads:
                controller.set_num_threads(self.threads)

    def _pick_threads(self) -> None:
        """Keep all cores only if they beat one on a detector-shaped GEMM, measured here and now.

        BLAS threads are process-wide: the backend sets them to its count
        before each of its GEMMs (when something else changed them), and
        leaves them so; the detectors' other matmuls follow.
        """
        if self._measure_threads and self.max_threads > 1 and self._blas:
            rng = np.random.default_rng(0)
            a = rng.standard_normal((1024, 384), dtype=np.float32)
            b = rng.standard_normal((384, 1024), dtype=np.float32)
            seconds: dict[int, list[float]] = {1: [], self.max_threads: []}
            for _ in range(5):
                for count, measured in seconds.items():
                    self.threads = count
                    self._set_blas_threads()
                    start = time.perf_counter()
                    a @ b
                    measured.append(time.perf_counter() - start)
            one, many = float(np.median(seconds[1])), float(np.median(seconds[self.max_threads]))
            self.threads = self.max_threads if many < 0.8 * one else 1
            log.info(
                "cpu backend: %d thread(s) (1024x384x1024 sgemm: %.2f ms on 1 thread, %.2f ms on %d)",
                self.threads,
                one * 1e3,
                many * 1e3,
                self.max_threads,
            )
        self._set_blas_threads()

    # ----------------------------------------------------------------- warmup

    def warmup(self) -> None:
        """Choose the thread count, then compile (or load from the disk cache) every kernel on tiny inputs.

        The parallel kernels are loaded only when more than one thread is
        used. Runs once per backend object; later calls return at once.
        """
        if self._warm:
            return
        self._pick_threads()
        rng = np.random.default_rng(0)
        n, d, cells, bits, accounts = 3, 5, 4, 128, 2
        emb = rng.standard_normal((n, d)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        slots = np.array([0, 1, 0], dtype=np.int64)
        sigs = self.signatures(emb, rng.standard_normal((d, bits)).astype(np.float32), np.zeros(bits, np.float32))
        self.dup_scan(sigs, slots, np.zeros((2 * n, bits // 64), np.uint64), np.full(2 * n, -1, np.int64), np.full(accounts, -1, np.int64), 0, n)
        self.dup_query(sigs, slots, np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros((2 * n, bits // 64), np.uint64), np.full(2 * n, -1, np.int64))
        table_slot = np.full((self.bands, 1 << 8), -1, dtype=np.int64)
        self.cross_lookup(
            sigs,
            slots,
            np.arange(n, dtype=np.int64),
            table_slot,
            np.zeros(table_slot.shape, np.int64),
            np.zeros(table_slot.shape + (bits // 64,), np.uint64),
            8,
            1000,
        )
        centroids = rng.standard_normal((cells, d)).astype(np.float32)
        centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
        weights = np.ones(n, dtype=np.float64)
        mean = np.zeros(d, np.float32)
        style_sum = np.zeros((accounts, d), np.float32)
        found, _ = self.destyled_cells(emb, mean, centroids, slots, weights, style_sum, np.zeros(accounts))
        hist = np.zeros((accounts, cells), np.float32)
        self.histogram_add(hist, slots, found, weights)
        self.coverage_reduce(hist, np.arange(accounts, dtype=np.int64), np.ones(cells, np.float32))

        # The kernels the tiny calls above did not reach: the Gram path, and the parallel twins.
        scores = emb @ centroids.T
        order = np.argsort(slots, kind="stable")
        starts = np.array([True, False, True])
        unit = emb.copy()
        weighted = np.zeros_like(emb)
        gram_args = (
            order,
            np.array([0, 2], dtype=np.int64),
            np.array([0, -1], dtype=np.int64),
            scores,
            scores.argmax(axis=1),
            scores.max(axis=1),
            weights.astype(np.float32),
            weights,
            scores[:1].copy(),
            (centroids @ centroids.T).astype(np.float32),
            np.zeros(n, np.float32),
            1e-3,
            np.empty(n, np.int32),
            np.empty(n, np.bool_),
        )
        kernels = [(_gram_cells, gram_args)]
        if self.threads > 1:
            kernels += [
                (_pack_signs, (scores, np.zeros(cells, np.float32), np.empty((n, 0), np.uint64))),
                (_centre_normalise, (emb, mean, unit)),
                (
                    _nearest_residuals,
                    (unit, scores, centroids, weights.astype(np.float32), scores.argmax(axis=1), scores.max(axis=1), weighted, np.empty(n, np.float32)),
                ),
                (_destyle, (order, starts, slots, unit, weighted, weights, style_sum, unit.copy(), self.threads)),
                (_row_norms, (unit, np.empty(n, np.float32))),
                (
                    _dup_walk,
                    (order, np.array([0, 2, 3]), np.zeros((2, n), np.uint64), np.zeros((6, 2), np.uint64), np.full(6, -1, np.int64), 0, 3, np.empty(n, np.int64)),
                ),
                (
                    _dup_query_walk,
                    (np.array([0, 2, 3]), np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros((2, n), np.uint64), np.zeros((6, 2), np.uint64), np.full(6, -1, np.int64), np.empty(n, np.int64)),
                ),
                (_coverage_reduce, (hist, np.arange(accounts, dtype=np.int64), np.ones(cells), np.empty(2), np.empty(2), np.empty(2))),
            ]
        for kernel, args in kernels:
            _SERIAL[kernel](*args)
            if self.threads > 1:
                kernel(*args)
        self._warm = True

    # -------------------------------------------------------------- functions

    def signatures(self, embeddings: np.ndarray, planes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        n, bits = embeddings.shape[0], planes.shape[1]
        if bits % 64:
            raise ValueError(f"signatures need a multiple of 64 hyperplanes, got {bits}")
        out = np.empty((n, bits // 64), dtype=np.uint64)
        if n == 0:
            return out
        self._set_blas_threads()
        projections = embeddings.astype(np.float32, copy=False) @ planes
        self._run(_pack_signs, n)(projections, np.asarray(offsets), out)
        return out

    def destyled_cells(
        self,
        embeddings: np.ndarray,
        mean: np.ndarray,
        centroids: np.ndarray,
        slots: np.ndarray,
        weights: np.ndarray,
        style_sum: np.ndarray,
        style_weight: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        n = embeddings.shape[0]
        if n == 0:
            return np.empty(0, np.int32), np.empty(0, np.float32)
        if mean.dtype != np.float32 or centroids.dtype != np.float32 or style_sum.dtype != np.float32:
            # Other precisions change the reference's arithmetic; it is the definition, so use it.
            return self._reference.destyled_cells(embeddings, mean, centroids, slots, weights, style_sum, style_weight)
        self._set_blas_threads()
        return self._destyled_cells(embeddings, mean, centroids, slots, weights, style_sum, style_weight)

    def _destyled_cells(
        self,
        embeddings: np.ndarray,
        mean: np.ndarray,
        centroids: np.ndarray,
        slots: np.ndarray,
        weights: np.ndarray,
        style_sum: np.ndarray,
        style_weight: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        x = np.ascontiguousarray(embeddings, dtype=np.float32)
        n, d = x.shape
        cells_count = centroids.shape[0]
        unit = np.empty((n, d), dtype=np.float32)
        self._run(_centre_normalise, n)(x, mean, unit)
        scores = unit @ centroids.T
        weights64 = weights.astype(np.float64, copy=False)
        weights32 = weights.astype(np.float32)
        nearest = scores.argmax(axis=1)
        nearest_score = np.empty(n, dtype=np.float32)
        weighted = np.empty((n, d), dtype=np.float32)
        residual_sq = np.empty(n, dtype=np.float32)
        self._run(_nearest_residuals, n)(unit, scores, centroids, weights32, nearest, nearest_score, weighted, residual_sq)

        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        starts = np.empty(n, dtype=np.bool_)
        starts[0] = True
        np.not_equal(sorted_slots[1:], sorted_slots[:-1], out=starts[1:])
        firsts = np.flatnonzero(starts)
        group_slots = sorted_slots[firsts]
        book = self._gram_codebook(centroids, n)
        if book is not None:
            # The accounts' styles before this batch, projected on the cells (before the state moves).
            styled = np.flatnonzero(style_weight[group_slots] > 0)
            prior_row = np.full(firsts.shape[0], -1, dtype=np.int64)
            prior_row[styled] = np.arange(styled.size)
            prior_scores = style_sum[group_slots[styled]] @ centroids.T if styled.size else np.zeros((1, cells_count), np.float32)
        before_w = np.empty(n, dtype=np.float64)
        _style_weights(order, starts, slots, weights64, weights.astype(style_weight.dtype, copy=False), style_weight, before_w)
        destyled = np.empty((n, d), dtype=np.float32)
        kernel = self._run(_destyle, n)
        kernel(order, starts, slots, unit, weighted, before_w, style_sum, destyled, 1 if kernel is _SERIAL[_destyle] else self.threads)

        # The destyled cell counts only if it scores at least CLARITY times the nearest cell's
        # score times |u - style| (the reference's float32 expression, in its order).
        norms = np.empty(n, dtype=np.float32)
        self._run(_row_norms, n)(destyled, norms)
        threshold = CLARITY * nearest_score * norms

        cells = np.empty(n, dtype=np.int32)
        if book is None:
            self._exact_cells(destyled, centroids, nearest, threshold, cells, out=scores)
            self.exact_rows += n
            return cells, residual_sq
        ambiguous = np.empty(n, dtype=np.bool_)
        self._run(_gram_cells, n)(
            order,
            firsts,
            prior_row,
            scores,
            nearest,
            nearest_score,
            weights32,
            before_w,
            prior_scores,
            book.gram,
            threshold,
            book.margin,
            cells,
            ambiguous,
        )
        rows = np.flatnonzero(ambiguous)
        if rows.size:
            cells[rows] = self._exact_rows(destyled, centroids, rows, nearest, threshold)
        if book.verified is None:
            expected = np.empty(n, dtype=np.int32)
            self._exact_cells(destyled, centroids, nearest, threshold, expected, out=scores)
            book.verified = bool(np.array_equal(cells, expected))
            if not book.verified:
                log.warning("cpu backend: Gram cells differ from the GEMM's on this BLAS; using the GEMM for this codebook")
                cells = expected
        self.exact_rows += rows.size
        self.gram_rows += n - rows.size
        return cells, residual_sq

    def _gram_codebook(self, centroids: np.ndarray, n: int) -> _Codebook | None:
        """The Gram data of ``centroids`` when the Gram path applies to a batch of ``n`` rows, else None."""
        cells_count, d = centroids.shape
        if n < _GRAM_MIN_ROWS or cells_count * d < _GRAM_MIN_WORK:
            return None
        book = self._codebook
        if book is None or book.key != _centroids_key(centroids):
            book = self._codebook = _Codebook(centroids)
        if not book.unit or book.verified is False:
            return None
        return book

    @staticmethod
    def _exact_cells(
        destyled: np.ndarray, centroids: np.ndarray, nearest: np.ndarray, threshold: np.ndarray, cells: np.ndarray, out: np.ndarray
    ) -> None:
        """The reference's second GEMM and rule, over every row."""
        np.matmul(destyled, centroids.T, out=out)
        best = out.argmax(axis=1)
        cells[:] = np.where(out[np.arange(out.shape[0]), best] >= threshold, best, nearest)

    @staticmethod
    def _exact_rows(
        destyled: np.ndarray, centroids: np.ndarray, rows: np.ndarray, nearest: np.ndarray, threshold: np.ndarray
    ) -> np.ndarray:
        """The reference's cells of some rows: padded to a regular-size GEMM, whose rows round like the full one's."""
        take = np.resize(rows, max(rows.size, _FALLBACK_ROWS))
        scores = (destyled[take] @ centroids.T)[: rows.size]
        best = scores.argmax(axis=1)
        return np.where(scores[np.arange(rows.size), best] >= threshold[rows], best, nearest[rows]).astype(np.int32)

    def dup_scan(
        self,
        sigs: np.ndarray,
        slots: np.ndarray,
        window_sig: np.ndarray,
        window_prev: np.ndarray,
        head: np.ndarray,
        start: int,
        window: int,
    ) -> DupScan:
        n, words = sigs.shape
        check_window(n, window_sig.shape[0], window)
        none = words * 64 + 1
        if n == 0:
            return DupScan(np.empty(0, dtype=np.int32))
        if slots.min() < 0 or slots.max() >= head.shape[0]:
            raise IndexError(f"dup_scan: an account slot outside head (0 <= slot < {head.shape[0]})")
        sigs = np.ascontiguousarray(sigs, dtype=np.uint64)
        _dup_link(sigs, slots, window_sig, window_prev, head, int(start))
        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        bounds = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1], True])
        best = np.full(n, none, dtype=np.int64)
        kernel = self._run(_dup_walk, n)
        kernel(order, bounds, np.ascontiguousarray(sigs[order].T), window_sig, window_prev, int(start), int(window), best)
        out = np.empty(n, dtype=np.int32)
        out[order] = best
        return DupScan(out)

    def dup_query(
        self,
        sigs: np.ndarray,
        slots: np.ndarray,
        origin: np.ndarray,
        stop: np.ndarray,
        window_sig: np.ndarray,
        window_prev: np.ndarray,
    ) -> DupScan:
        n, words = sigs.shape
        if n == 0:
            return DupScan(np.empty(0, dtype=np.int32))
        order = np.argsort(slots, kind="stable")
        sorted_slots = slots[order]
        bounds = np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1], True])
        best = np.full(n, words * 64 + 1, dtype=np.int64)
        kernel = self._run(_dup_query_walk, n)
        kernel(
            bounds,
            np.ascontiguousarray(origin[order], dtype=np.int64),
            np.ascontiguousarray(stop[order], dtype=np.int64),
            np.ascontiguousarray(np.ascontiguousarray(sigs, dtype=np.uint64)[order].T),
            window_sig,
            window_prev,
            best,
        )
        out = np.empty(n, dtype=np.int32)
        out[order] = best
        return DupScan(out)

    def cross_lookup(
        self,
        sigs: np.ndarray,
        slots: np.ndarray,
        ts: np.ndarray,
        table_slot: np.ndarray,
        table_ts: np.ndarray,
        table_sig: np.ndarray,
        radius: int,
        window_ms: int,
    ) -> CrossMatch:
        n = sigs.shape[0]
        table_bits = int(np.log2(table_slot.shape[1]))
        cross_slot = np.empty(n, dtype=np.int64)
        cross_dist = np.empty(n, dtype=np.int32)
        if n:
            _cross_lookup(
                sigs, slots, ts, table_slot, table_ts, table_sig, table_bits, int(radius), int(window_ms), cross_slot, cross_dist
            )
        return CrossMatch(cross_slot, cross_dist)

    def histogram_add(self, hist: np.ndarray, slots: np.ndarray, cells: np.ndarray, weights: np.ndarray) -> None:
        if slots.shape[0]:
            _histogram_add(hist, slots, cells, weights.astype(hist.dtype, copy=False))

    def coverage_reduce(self, hist: np.ndarray, slots: np.ndarray, surprisal: np.ndarray) -> dict[str, np.ndarray]:
        m = slots.shape[0]
        out = {"sum_sq": np.empty(m), "surprisal": np.empty(m), "distinct": np.empty(m)}
        if m:
            self._run(_coverage_reduce, m)(hist, slots, surprisal.astype(np.float64), out["sum_sq"], out["surprisal"], out["distinct"])
        return out
