"""numba kernels of the coverage family: destyled cells (with the Gram path's), histograms, coverage reduction.

Twins of ``kernels/coverage.cu``, run by
:class:`streamguard.backends.cpu_backend.CpuBackend` (see its module
docstring for where the time goes).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from streamguard.backends.cpu_kernels_common import _ROWS, _pairwise_scratch, _pairwise_sum

_NORM_FLOOR = np.float32(1e-12)
_BLOCK = 16  # float32 columns per cache line: column ranges of the column-parallel kernel are multiples of it


# -------------------------------------------------------------- destyled cells


@njit(cache=True, parallel=True)
def _centre_normalise(x: np.ndarray, mean: np.ndarray, unit: np.ndarray) -> None:
    """``c = x - mean``; ``unit = c / max(|c|, 1e-12)``, with numpy's float32 norm."""
    n, d = x.shape
    for chunk in prange((n + _ROWS - 1) // _ROWS):
        sq, frames, lefts = _pairwise_scratch(d)
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
        sq, frames, lefts = _pairwise_scratch(d)
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
        sq, frames, lefts = _pairwise_scratch(d)
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
    :func:`streamguard.backends.cpu_gram._gram_margin`; fast-math rounding is far below it). The reference
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


