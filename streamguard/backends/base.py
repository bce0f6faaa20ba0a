"""The backend interface: every hot path the detectors need, as array functions.

A backend owns the array module (NumPy or CuPy) and implements each function
below. Detectors hold their state in the backend's arrays and call only these
functions, so the NumPy reference, the numba CPU backend and the CUDA backend
are interchangeable and parity-testable one function at a time.

Layouts (n requests in a batch, d dimensions, S account slots, K cells,
C window rows, W = bits/64 signature words, B bands, T = 2**table_bits):

- embeddings ``(n, d)`` float32, unit rows; ``slots``/``ts`` ``(n,)`` int64
- signatures ``(n, W)`` uint64, bit ``j`` of word ``w`` is hyperplane ``64*w+j``
- the near-duplicate window of one pipeline: ``window_sig`` ``(C, W)`` uint64
  and ``window_prev`` ``(C,)`` int64; the pipeline's request at *position*
  ``p`` (its ``p``-th request, from 0) lives in row ``p % C``, and
  ``window_prev`` holds the position of the same account's previous request
  (-1: none), so each account's requests form a chain back in time;
  ``head`` ``(S,)`` int64 is the position of each account's latest request
  (-1: none, or evicted)
- cross-account tables: ``(B, T)`` int64 slot (-1 empty), ``(B, T)`` int64 ts,
  ``(B, T, W)`` uint64 signature
- histograms ``(S, T)`` float32 over topics, in decay units (see detectors/coverage.py)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np


@dataclass
class DupScan:
    """Per-request result of the within-account scan (host arrays).

    within_dist : (n,) int32, smallest Hamming distance to the account's
        requests among the ``window`` positions before the request's own;
        ``bits + 1`` when it has none.
    """

    within_dist: np.ndarray


@dataclass
class CrossMatch:
    """Per-request result of the cross-account lookup (host arrays).

    cross_slot : (n,) int64, slot of a different account that sent a near
        duplicate within the time window, -1 if none.
    cross_dist : (n,) int32, its Hamming distance (``bits + 1`` if none).
    """

    cross_slot: np.ndarray
    cross_dist: np.ndarray


class Backend(Protocol):
    name: str
    xp: Any
    """The array module (numpy or cupy)."""

    def asarray(self, host: np.ndarray) -> Any: ...

    def to_host(self, array: Any) -> np.ndarray: ...

    def warmup(self) -> None:
        """Compile whatever needs compiling, before the first batch."""

    def signatures(self, embeddings: Any, planes: Any, offsets: Any) -> Any:
        """Pack ``sign(embeddings @ planes - offsets)`` into uint64 words: (n, W)."""

    def destyled_cells(
        self,
        embeddings: Any,
        mean: Any,
        centroids: Any,
        slots: Any,
        weights: Any,
        style_sum: Any,
        style_weight: Any,
    ) -> tuple[Any, Any]:
        """Cell of each request once its account's *style* is removed; then learn the style.

        ``u = normalise(x - mean)``; its nearest centroid ``c`` gives the
        residual ``r = u - (u . c) c`` (what the topic does not explain). The
        account's style is the weighted mean of the residuals of its *earlier*
        requests (state ``style_sum`` (S, d) and ``style_weight`` (S,), then
        earlier requests of this batch), and the cell returned is
        ``argmax((u - style) @ centroids.T)`` when that cell's cosine with
        ``u - style`` is at least ``CLARITY`` (0.6) times the raw nearest cell's
        cosine with ``u``, else the raw nearest cell. A system prompt or template shared by all of an
        account's requests thus stops deciding its cells, unless removing it
        leaves nothing recognisable (a batch job's near-copies).
        Finally ``style_sum[slot] += w * r`` and ``style_weight[slot] += w``.

        Returns cells (n,) int32 and ``|r|**2`` (n,) float32.
        """

    def dup_scan(
        self, sigs: Any, slots: Any, window_sig: Any, window_prev: Any, head: Any, start: int, window: int
    ) -> DupScan:
        """Insert the batch into the window, then the causal within-account scan.

        Request ``i`` has position ``q = start + i``. Insertion, in batch
        order: ``window_sig[q % C] = sigs[i]``, ``window_prev[q % C] =
        head[slots[i]]``, ``head[slots[i]] = q``. Scan: request ``i`` is
        compared with every entry of its chain, from ``window_prev[q % C]``
        back, while the position ``p`` is in ``[max(0, q - window), q)``: its
        account's requests among the ``window`` requests before it (earlier
        requests of this batch included, later ones never). Needs ``0 <
        window`` and ``n <= C - window`` (the detector splits bigger batches),
        so no row a query reads has been overwritten; the result is then the
        same however the stream is cut into batches. Slots must lie in
        ``[0, S)`` (IndexError otherwise).
        """

    def dup_query(self, sigs: Any, slots: Any, origin: Any, stop: Any, window_sig: Any, window_prev: Any) -> DupScan:
        """The within-account scan of requests that are not stored (their account holds its cap).

        sigs : (n, W) uint64; slots, origin, stop : (n,) int64 (within one
        account, in batch order, ``origin`` and ``stop`` do not decrease: a
        backend may walk each account's chain once). Request ``i`` is compared
        with the chain from position ``origin[i]`` back (``window_prev``), while
        the position ``p`` is ``>= stop[i]`` (and ``>= 0``): the smallest Hamming
        distance, ``bits + 1`` when there is none. Nothing is written. The rows
        read must still hold their positions (``stop[i]`` within the ``C`` last
        positions stored), which the detector guarantees.
        """

    def cross_lookup(
        self,
        sigs: Any,
        slots: Any,
        ts: Any,
        table_slot: Any,
        table_ts: Any,
        table_sig: Any,
        radius: int,
        window_ms: int,
    ) -> CrossMatch:
        """Causal cross-account lookup through banded hash tables, then insertion.

        Each band of request ``i``'s signature indexes one bucket per band; a
        bucket holds the latest request that hashed there. A bucket entry
        matches when it is from another account, at most ``window_ms`` older
        and within ``radius`` bits; the closest match over bands wins (ties:
        lowest band). Then request ``i`` overwrites its buckets.
        """

    def histogram_add(self, hist: Any, slots: Any, cells: Any, weights: Any) -> None:
        """``hist[slots[i], cells[i]] += weights[i]`` for every i (duplicates add up)."""

    def coverage_reduce(self, hist: Any, slots: Any, surprisal: Any) -> dict[str, np.ndarray]:
        """One reduction over each given account's histogram row (host float64 arrays).

        With ``h = hist[slot]`` over T topics, returns per slot
        ``sum_sq = sum(h**2)``, ``surprisal = sum(h * surprisal)`` and
        ``distinct = count(h > 0)``.
        """


def popcount64(words: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64 (numpy >= 2 has a native ufunc)."""
    return np.bitwise_count(words)
