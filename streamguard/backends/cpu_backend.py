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

numba is imported here and in the kernel modules only
(:mod:`~streamguard.backends.cpu_kernels_common`,
:mod:`~streamguard.backends.cpu_kernels_near_duplicate`,
:mod:`~streamguard.backends.cpu_kernels_coverage`); the Gram path's codebook
data is in :mod:`~streamguard.backends.cpu_gram`. Compiled functions are
cached on disk (``cache=True``); :meth:`CpuBackend.warmup` runs each one on
tiny inputs so that compilation, or loading from the cache, never lands on
the first batch.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

import numba
import numpy as np

from streamguard.backends.base import CrossMatch, DupScan
from streamguard.backends.core import CLARITY, check_slots, check_window
from streamguard.backends.cpu_gram import _FALLBACK_ROWS, _GRAM_MIN_ROWS, _GRAM_MIN_WORK, _centroids_key, _Codebook
from streamguard.backends.cpu_kernels_common import _serial_twin
from streamguard.backends.cpu_kernels_coverage import (
    _centre_normalise,
    _coverage_reduce,
    _destyle,
    _gram_cells,
    _histogram_add,
    _nearest_residuals,
    _row_norms,
    _style_weights,
)
from streamguard.backends.cpu_kernels_near_duplicate import (
    _cross_lookup,
    _dup_link,
    _dup_query_walk,
    _dup_walk,
    _pack_signs,
)
from streamguard.backends.numpy_backend import NumpyBackend

log = logging.getLogger(__name__)

_PARALLEL_ROWS = 1024  # below this many rows a numba kernel runs on one thread: launching costs more


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


def _account_runs(slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The batch grouped by account, as the scan kernels walk it: ``order`` (a stable sort by slot) and
    ``bounds``, where the requests ``order[bounds[k]:bounds[k + 1]]`` are the k-th account's."""
    order = np.argsort(slots, kind="stable")
    sorted_slots = slots[order]
    return order, np.flatnonzero(np.r_[True, sorted_slots[1:] != sorted_slots[:-1], True])


def _in_batch_order(order: np.ndarray, best: np.ndarray) -> DupScan:
    """A scan's distances ``best``, found in ``order`` (see :func:`_account_runs`), back in batch order as int32."""
    out = np.empty(best.shape[0], dtype=np.int32)
    out[order] = best
    return DupScan(out)


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
        check_slots(slots, head)
        sigs = np.ascontiguousarray(sigs, dtype=np.uint64)
        _dup_link(sigs, slots, window_sig, window_prev, head, int(start))
        order, bounds = _account_runs(slots)
        best = np.full(n, none, dtype=np.int64)
        kernel = self._run(_dup_walk, n)
        kernel(order, bounds, np.ascontiguousarray(sigs[order].T), window_sig, window_prev, int(start), int(window), best)
        return _in_batch_order(order, best)

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
        order, bounds = _account_runs(slots)
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
        return _in_batch_order(order, best)

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
