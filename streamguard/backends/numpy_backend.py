"""The NumPy reference backend: slow where it must be, obviously correct, the oracle.

Every other backend is tested against these functions. Clarity wins over
speed here; the cross-account lookup is a plain loop over requests because its
causal order (each request sees the buckets as earlier requests left them) is
the definition the fast backends must reproduce.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamguard.backends.base import CrossMatch, DupScan, popcount64
from streamguard.backends.core import CLARITY, GOLDEN, check_slots, check_window


def pack_sign_bits(projections: np.ndarray) -> np.ndarray:
    """Sign bits of ``(n, bits)`` projections packed little-endian into ``(n, bits // 64)`` uint64."""
    n, bits = projections.shape
    packed = np.packbits(projections > 0, axis=1, bitorder="little")
    return np.ascontiguousarray(packed).view("<u8").reshape(n, bits // 64).astype(np.uint64, copy=False)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Hamming distance between signatures along the last axis (broadcasting)."""
    return popcount64(np.bitwise_xor(a, b)).sum(axis=-1, dtype=np.int32)


def band_buckets(sigs: np.ndarray, bands: int, table_bits: int) -> np.ndarray:
    """Bucket of each band of each signature: ``(n, bands)`` int64 in ``[0, 2**table_bits)``.

    Band ``b`` is bits ``[b*L, (b+1)*L)`` of the signature (``L = bits/bands``),
    mixed with the band index and hashed multiplicatively, so bands longer or
    shorter than ``table_bits`` both spread over the table.
    """
    n, words = sigs.shape
    band_len = words * 64 // bands
    out = np.empty((n, bands), dtype=np.int64)
    mask = np.uint64((1 << band_len) - 1) if band_len < 64 else np.uint64(0xFFFFFFFFFFFFFFFF)
    for b in range(bands):
        start = b * band_len
        word, shift = divmod(start, 64)
        value = (sigs[:, word] >> np.uint64(shift)) & mask
        with np.errstate(over="ignore"):  # multiplicative hashing wraps modulo 2**64 by design
            key = (value + np.uint64(b + 1) * GOLDEN) * GOLDEN
        out[:, b] = (key >> np.uint64(64 - table_bits)).astype(np.int64)
    return out


class NumpyBackend:
    """Reference implementation of :class:`streamguard.backends.base.Backend`."""

    name = "numpy"
    xp = np

    def __init__(self, bands: int = 8, table_bits: int = 16) -> None:
        self.bands = bands
        self.table_bits = table_bits

    def asarray(self, host: np.ndarray) -> np.ndarray:
        return np.asarray(host)

    def to_host(self, array: Any) -> np.ndarray:
        return np.asarray(array)

    def warmup(self) -> None:
        """Nothing to compile."""

    def signatures(self, embeddings: np.ndarray, planes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
        projections = embeddings.astype(np.float32, copy=False) @ planes - offsets
        return pack_sign_bits(projections)

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
        centred = embeddings.astype(np.float32, copy=False) - mean
        unit = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
        scores = unit @ centroids.T
        nearest = scores.argmax(axis=1)
        residual = unit - scores[np.arange(n), nearest][:, None] * centroids[nearest]
        weighted = residual * weights[:, None].astype(np.float32)
        # Style before each request: the account's state plus its earlier requests in this batch.
        order = np.argsort(slots, kind="stable")
        s_slots = slots[order]
        starts = np.r_[True, s_slots[1:] != s_slots[:-1]]
        group = np.cumsum(starts) - 1
        first = np.flatnonzero(starts)
        inclusive = np.cumsum(weighted[order], axis=0, dtype=np.float64)
        inclusive_w = np.cumsum(weights[order].astype(np.float64))
        base = np.vstack([np.zeros((1, inclusive.shape[1])), inclusive])[first][group]
        base_w = np.r_[0.0, inclusive_w][first][group]
        earlier = inclusive - weighted[order] - base
        earlier_w = inclusive_w - weights[order] - base_w
        # The first request of each account has nothing earlier in the batch: exactly zero,
        # not the rounding residue of a global cumulative sum.
        earlier[first] = 0.0
        earlier_w[first] = 0.0
        before = style_sum[s_slots].astype(np.float64) + earlier
        before_w = style_weight[s_slots].astype(np.float64) + earlier_w
        style = np.zeros_like(before)
        has = before_w > 0
        style[has] = before[has] / before_w[has, None]
        destyled = np.empty_like(unit)
        destyled[order] = unit[order] - style.astype(np.float32)
        destyled_scores = destyled @ centroids.T
        cells = destyled_scores.argmax(axis=1).astype(np.int32)
        # Keep the style-free cell only where what remains is still clearly a topic: a
        # product's system prompt comes off and leaves its topic, but a batch job's
        # requests are mostly their template, and what remains is noise.
        best = destyled_scores[np.arange(n), cells]
        clearer = best >= CLARITY * scores[np.arange(n), nearest] * np.linalg.norm(destyled, axis=1)
        cells = np.where(clearer, cells, nearest).astype(np.int32)
        np.add.at(style_sum, slots, weighted)
        np.add.at(style_weight, slots, weights.astype(style_weight.dtype))
        return cells, (residual * residual).sum(axis=1).astype(np.float32)

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
        capacity = window_sig.shape[0]
        check_window(n, capacity, window)
        best = np.full(n, words * 64 + 1, dtype=np.int32)
        if n == 0:
            return DupScan(best)
        check_slots(slots, head)
        # Insert, in batch order: each request links to its account's previous request (the
        # previous one of this batch, else the account's head) and becomes the account's head.
        positions = int(start) + np.arange(n, dtype=np.int64)
        order = np.argsort(slots, kind="stable")
        s_slots = slots[order]
        first = np.r_[True, s_slots[1:] != s_slots[:-1]]
        last = np.r_[first[1:], True]
        s_prev = np.empty(n, dtype=np.int64)
        s_prev[1:] = positions[order][:-1]
        s_prev[first] = head[s_slots[first]]
        prev = np.empty(n, dtype=np.int64)
        prev[order] = s_prev
        window_sig[positions % capacity] = sigs
        window_prev[positions % capacity] = prev
        head[s_slots[last]] = positions[order][last]
        # Scan. A request's chain, read back from its own row, is its account's entries; the
        # entries it must see are those of its window [q - window, q). Rather than walking
        # every chain link by link (one numpy pass per link: as many passes as the longest
        # chain), label every *live* entry (positions [oldest, start + n), all still stored)
        # with its account: follow successor links to the end of the chain (pointer doubling,
        # log2(chain) passes); a chain that ends at head[s] is account s's, one that ends
        # elsewhere belongs to an evicted account (its head was reset) and to nobody now.
        # Then each request's partners are the live entries of its account inside its window:
        # a contiguous run of the entries sorted by (account, position).
        oldest = max(0, int(start) - int(window))
        live = np.arange(oldest, int(start) + n, dtype=np.int64)
        m = live.size
        live_prev = window_prev[live % capacity]
        linked = np.flatnonzero(live_prev >= oldest)
        end = np.arange(m)
        end[live_prev[linked] - oldest] = linked  # an entry's successor: the next request of its account
        while True:
            further = end[end]
            if np.array_equal(further, end):
                break
            end = further
        owner_of_end = np.full(m, -1, dtype=np.int64)
        alive = np.flatnonzero(head >= oldest)
        owner_of_end[head[alive] - oldest] = alive
        owner = owner_of_end[end]
        labelled = np.flatnonzero(owner >= 0)
        keys = np.sort(owner[labelled] * m + labelled)  # (account, position - oldest)
        key_rows = (keys % m + oldest) % capacity
        offset = positions - oldest
        run_begin = np.searchsorted(keys, slots * m + np.maximum(offset - int(window), 0))
        count = np.searchsorted(keys, slots * m + offset) - run_begin
        # Pairs (request, partner), in blocks of at most ~2**22 pairs; one signature word at a time.
        ends = np.cumsum(count)
        block_start = 0
        while block_start < n:
            base = ends[block_start - 1] if block_start else 0
            block_end = max(block_start + 1, int(np.searchsorted(ends, base + (1 << 22), side="right")))
            c = count[block_start:block_end]
            pairs = int(c.sum())
            if pairs:
                run_start = np.cumsum(c) - c
                partner_rows = key_rows[np.arange(pairs) + np.repeat(run_begin[block_start:block_end] - run_start, c)]
                dist = np.zeros(pairs, dtype=np.int32)
                for w in range(words):
                    dist += popcount64(np.repeat(sigs[block_start:block_end, w], c) ^ window_sig[partner_rows, w])
                has = np.flatnonzero(c > 0)
                best[block_start + has] = np.minimum.reduceat(dist, run_start[has])
            block_start = block_end
        return DupScan(best)

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
        capacity = window_sig.shape[0]
        best = np.full(n, words * 64 + 1, dtype=np.int32)
        # Every request walks its own chain, one step per pass, all requests at once.
        at = np.asarray(origin, dtype=np.int64).copy()
        floor = np.maximum(np.asarray(stop, dtype=np.int64), 0)
        live = np.flatnonzero(at >= floor)
        while live.size:
            rows = at[live] % capacity
            best[live] = np.minimum(best[live], hamming(sigs[live], window_sig[rows]))
            at[live] = window_prev[rows]
            live = live[at[live] >= floor[live]]
        return DupScan(best)

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
        n, words = sigs.shape
        bands, table_size = table_slot.shape
        none = words * 64 + 1
        cross_slot = np.full(n, -1, dtype=np.int64)
        cross_dist = np.full(n, none, dtype=np.int32)
        if n == 0:
            return CrossMatch(cross_slot, cross_dist)
        buckets = band_buckets(sigs, bands, int(np.log2(table_size)))
        for i in range(n):
            slot_i, ts_i = slots[i], ts[i]
            best_d, best_s = none, -1
            for b in range(bands):
                q = buckets[i, b]
                other = table_slot[b, q]
                if other < 0 or other == slot_i or abs(int(ts_i) - int(table_ts[b, q])) > window_ms:
                    continue
                d = int(hamming(sigs[i], table_sig[b, q]))
                if d <= radius and d < best_d:
                    best_d, best_s = d, int(other)
            cross_slot[i], cross_dist[i] = best_s, best_d
            table_slot[np.arange(bands), buckets[i]] = slot_i
            table_ts[np.arange(bands), buckets[i]] = ts_i
            table_sig[np.arange(bands), buckets[i]] = sigs[i]
        return CrossMatch(cross_slot, cross_dist)

    def histogram_add(self, hist: np.ndarray, slots: np.ndarray, cells: np.ndarray, weights: np.ndarray) -> None:
        np.add.at(hist, (slots, cells), weights.astype(hist.dtype, copy=False))

    def coverage_reduce(self, hist: np.ndarray, slots: np.ndarray, surprisal: np.ndarray) -> dict[str, np.ndarray]:
        rows = hist[slots].astype(np.float64)
        return {
            "sum_sq": (rows * rows).sum(axis=1),
            "surprisal": rows @ surprisal.astype(np.float64),
            "distinct": (rows > 0).sum(axis=1).astype(np.float64),
        }
