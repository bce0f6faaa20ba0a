"""numba kernels of the near-duplicate family: signature packing, the window scans, the cross-account lookup.

Twins of ``kernels/near_duplicate.cu``, run by
:class:`streamguard.backends.cpu_backend.CpuBackend` (see its module
docstring for where the time goes).
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange

from streamguard.backends.core import GOLDEN
from streamguard.backends.cpu_kernels_common import _hamming, _popcount

_ONES = np.uint64(0xFFFFFFFFFFFFFFFF)


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
            key = (value + np.uint64(b + 1) * GOLDEN) * GOLDEN
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

