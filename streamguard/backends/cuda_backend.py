"""The CUDA backend: CuPy arrays, cuBLAS GEMMs and the custom kernels of ``kernels/*.cu``.

Every function of :class:`streamguard.backends.base.Backend` is a short
sequence of array operations and kernel launches written against a
:class:`~streamguard.backends.cuda_runtime.KernelRuntime`: the array module, the compiled entry points, uploads
and downloads. On a GPU machine the runtime is :class:`CupyRuntime` (NVRTC,
cuBLAS, pinned staging buffers, the backend's own stream). The parity tests in
``tests/kernels`` plug in a runtime that runs the *same* ``.cu`` text compiled
by g++ on the CPU, with NumPy arrays, so everything here except
:class:`CupyRuntime` is executed and checked against the NumPy reference on
machines without a device.

State stays on the device: the near-duplicate window, hash tables, histograms and style sums are
CuPy arrays owned by the detectors and updated in place by the kernels; only
the per-request results that detectors read come back to the host.

The runtime, the launch tunables and the loading of ``kernels/*.cu`` are in
:mod:`streamguard.backends.cuda_runtime`, the only module of streamguard that
imports CuPy; ``CupyRuntime(cupy_module=..., cupyx_module=...)`` runs this
module over the emulated device of :mod:`streamguard.backends.emulated_cupy`
instead (``pytest -m emulated_gpu``; ``STREAMGUARD_CUDA_EMULATE=1`` with
``--backend cuda``), which executes its code unchanged without a GPU.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from streamguard.backends.base import CrossMatch, DupScan
from streamguard.backends.core import CLARITY, check_window
from streamguard.backends.cuda_runtime import CupyRuntime, KernelRuntime, Launcher, LaunchConfig
from streamguard.backends.kernels import kernel_sources

_INT64_LIMIT = 2**63
_FAULTS = {
    1: "dup_scan: an account slot outside head (0 <= slot < head.shape[0])",
    2: "destyled_cells: an account slot outside style_sum (0 <= slot < style_sum.shape[0])",
    4: "histogram_add: a slot or cell outside hist",
    8: "coverage_reduce: a slot outside hist",
}


class CudaBackend:
    """:class:`streamguard.backends.base.Backend` on a CUDA device.

    Parameters
    ----------
    bands, table_bits : geometry of the cross-account hash tables (the tables
        themselves are owned by the detector; the kernels read B and T off them)
    launch : block and grid tunables of every kernel
    runtime : the device; a :class:`CupyRuntime` unless given (the CPU parity
        tests give one that executes the kernels on the CPU)

    Kernels are compiled by :meth:`warmup`, once; calling a function before it
    raises, so a compilation can never land on the first batch.
    """

    name = "cuda"

    def __init__(
        self,
        bands: int = 8,
        table_bits: int = 16,
        *,
        launch: LaunchConfig | None = None,
        runtime: KernelRuntime | None = None,
    ) -> None:
        self.bands = int(bands)
        self.table_bits = int(table_bits)
        self.launch = launch if launch is not None else LaunchConfig()
        self.runtime = runtime if runtime is not None else CupyRuntime()
        self.xp = self.runtime.xp
        self._kernels: dict[str, Launcher] | None = None
        self._fault: Any = None
        self._fault_pending = False

    # ----------------------------------------------------------------- plumbing

    def warmup(self) -> None:
        """Compile every kernel of ``kernels/*.cu`` (idempotent)."""
        if self._kernels is None:
            self._kernels = self.runtime.load(kernel_sources())
            with self.runtime.on_stream():
                self._fault = self.xp.zeros(1, dtype=self.xp.int32)

    def asarray(self, host: np.ndarray) -> Any:
        return self.runtime.as_device(host)

    def to_host(self, array: Any) -> np.ndarray:
        host = self.runtime.download(array)
        self._raise_on_fault()
        return host

    def launcher(self, entry: str) -> Launcher:
        """The compiled entry point ``entry`` as ``launch(grid, block, args)`` (for tests and benchmarks)."""
        if self._kernels is None:
            raise RuntimeError(
                "CudaBackend.warmup() must run before the first batch: the kernels are compiled there, never on the hot path"
            )
        return self._kernels[entry]

    def _run(self, name: str, grid: tuple[int, ...], block: tuple[int, ...], *args: Any) -> None:
        self.launcher(name)(grid, block, args)

    def _raise_on_fault(self) -> None:
        # One 4-byte download, only after a kernel that can meet a bad index ran.
        if not self._fault_pending:
            return
        self._fault_pending = False
        fault = int(self.runtime.download(self._fault)[0])
        if fault:
            with self.runtime.on_stream():
                self._fault[...] = 0
            raise IndexError("; ".join(message for bit, message in _FAULTS.items() if fault & bit))

    def _blocks(self, items: int, per_block: int) -> int:
        return max(1, min(self.launch.max_blocks, -(-items // per_block)))

    def _per_warp(self, items: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Grid and block of a one-warp-per-item kernel."""
        warps = self.launch.warps_per_block
        return (self._blocks(items, warps), 1, 1), (32 * warps, 1, 1)

    def _per_thread(self, items: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Grid and block of a one-thread-per-item kernel."""
        return (self._blocks(items, self.launch.threads), 1, 1), (self.launch.threads, 1, 1)

    def _per_block(self, items: int, threads: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        """Grid and block of a one-block-per-item kernel of ``threads`` threads."""
        return (self._blocks(items, 1), 1, 1), (threads, 1, 1)

    def _state(self, array: Any, dtype: Any, ndim: int, what: str) -> Any:
        """Check a state array that kernels update in place: it cannot be converted (the update would be lost)."""
        if not isinstance(array, self.xp.ndarray):
            raise TypeError(
                f"{what} must be a {self.xp.__name__} array owned by the backend, got {type(array).__name__}"
            )
        if array.dtype != np.dtype(dtype) or array.ndim != ndim or not array.flags.c_contiguous:
            raise TypeError(
                f"{what} must be a C-contiguous {ndim}-d {np.dtype(dtype)} array, got {array.ndim}-d {array.dtype}"
                f"{'' if array.flags.c_contiguous else ' (not contiguous)'}"
            )
        return array

    def _scan_window(self, sigs: Any, window_sig: Any, window_prev: Any) -> tuple[Any, Any, Any]:
        """The signatures of a near-duplicate scan and the window it walks, on the device and checked
        against each other (window_sig (C, W) uint64, window_prev (C,) int64)."""
        sigs = self.runtime.as_device(sigs, np.uint64)
        window_sig = self._state(window_sig, np.uint64, 2, "window_sig")
        window_prev = self._state(window_prev, np.int64, 1, "window_prev")
        if window_sig.shape[1] != sigs.shape[1] or window_prev.shape[0] != window_sig.shape[0]:
            raise ValueError(
                f"window_sig {window_sig.shape} / window_prev {window_prev.shape} do not match signatures {sigs.shape}"
            )
        return sigs, window_sig, window_prev

    def _slot_keys(self, slots: Any, n: int, capacity: int) -> Any:
        """Composite keys ``slot * n + i`` sorted ascending (the layout of common.cuh).

        Keys are unique, so any sort keeps each account's requests in batch
        order. An out-of-range slot is mapped to ``capacity``, which the
        kernels recognise as invalid (and report), instead of a negative key
        whose ``/`` and ``%`` would not decode.
        """
        if (capacity + 1) * n >= _INT64_LIMIT:
            raise ValueError(f"{capacity} slots x {n} requests overflow the int64 sort keys; use smaller batches")
        keys = self.xp.empty(n, dtype=self.xp.int64)
        grid, block = self._per_thread(n)
        self._run("slot_keys", grid, block, slots, np.int64(n), np.int64(capacity), keys)
        return self.xp.sort(keys)

    # ------------------------------------------------------------ near-duplicates

    def signatures(self, embeddings: Any, planes: Any, offsets: Any) -> Any:
        """Pack ``sign(embeddings @ planes - offsets)`` into ``(n, bits/64)`` uint64 words.

        embeddings : (n, d) float32 or float16 (cast to float32 first, as the
        reference does); planes : (d, bits) float32; offsets : (bits,) float32.
        The GEMM runs in cuBLAS; ``pack_sign_bits`` subtracts and packs.
        """
        xp = self.xp
        with self.runtime.on_stream():
            x = self.runtime.as_device(embeddings)
            if x.ndim != 2:
                raise ValueError(f"embeddings must be (n, d), got shape {x.shape}")
            x = x if x.dtype == xp.float32 else x.astype(xp.float32)
            planes = self.runtime.as_device(planes, np.float32)
            offsets = self.runtime.as_device(offsets, np.float32)
            n, bits = x.shape[0], planes.shape[1]
            if bits % 64 or planes.shape[0] != x.shape[1] or offsets.shape != (bits,):
                raise ValueError(
                    f"planes must be (d={x.shape[1]}, bits) with bits a multiple of 64 and offsets (bits,); "
                    f"got planes {planes.shape}, offsets {offsets.shape}"
                )
            out = xp.empty((n, bits // 64), dtype=xp.uint64)
            if n == 0:
                return out
            projections = x @ planes
            grid, block = self._per_warp(n * (bits // 64))
            self._run("pack_sign_bits", grid, block, projections, offsets, np.int64(n), np.int64(bits), out)
        return out

    def dup_scan(
        self, sigs: Any, slots: Any, window_sig: Any, window_prev: Any, head: Any, start: int, window: int
    ) -> DupScan:
        """Window insertion, then the causal within-account scan: ``dup_link``, ``dup_scan`` (kernels/near_duplicate.cu).

        sigs : (n, W) uint64; slots : (n,) int64; window_sig : (C, W) uint64,
        window_prev : (C,) int64 and head : (S,) int64, updated in place;
        start : position of ``sigs[0]``; window : positions searched back.
        Returns host (n,) int32.
        """
        xp = self.xp
        with self.runtime.on_stream():
            sigs, window_sig, window_prev = self._scan_window(sigs, window_sig, window_prev)
            slots = self.runtime.as_device(slots, np.int64)
            head = self._state(head, np.int64, 1, "head")
            n, words = sigs.shape
            rows, capacity = window_sig.shape[0], head.shape[0]
            check_window(n, rows, int(window))
            best = xp.empty(n, dtype=xp.int32)
            if n == 0:
                return DupScan(self.to_host(best))
            keys = self._slot_keys(slots, n, capacity)
            grid, block = self._per_thread(n)
            self._fault_pending = True
            common = (keys, np.int64(n), sigs, np.int64(words), window_sig, window_prev, np.int64(rows))
            self._run("dup_link", grid, block, *common, head, np.int64(capacity), np.int64(start), self._fault)
            self._run(
                "dup_scan", grid, block, *common, head, np.int64(capacity), np.int64(start), np.int64(window), best, self._fault
            )
        return DupScan(self.to_host(best))

    def dup_query(self, sigs: Any, slots: Any, origin: Any, stop: Any, window_sig: Any, window_prev: Any) -> DupScan:
        """The scan of requests that are not stored: ``dup_query`` (kernels/near_duplicate.cu).

        sigs : (n, W) uint64; slots, origin, stop : (n,) int64 (slots are not
        needed: one thread walks one request's chain); window_sig (C, W) uint64
        and window_prev (C,) int64, read only. Returns host (n,) int32.
        """
        xp = self.xp
        with self.runtime.on_stream():
            sigs, window_sig, window_prev = self._scan_window(sigs, window_sig, window_prev)
            origin = self.runtime.as_device(origin, np.int64)
            stop = self.runtime.as_device(stop, np.int64)
            n, words = sigs.shape
            rows = window_sig.shape[0]
            if origin.shape != (n,) or stop.shape != (n,):
                raise ValueError(f"dup_query: origin {origin.shape} and stop {stop.shape} do not match signatures {sigs.shape}")
            best = xp.empty(n, dtype=xp.int32)
            if n == 0:
                return DupScan(self.to_host(best))
            grid, block = self._per_thread(n)
            self._run(
                "dup_query", grid, block, np.int64(n), sigs, np.int64(words), origin, stop, window_sig, window_prev,
                np.int64(rows), best,
            )
        return DupScan(self.to_host(best))

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

        The reference is a loop over requests in batch order. Here: hash every
        (band, request) pair, sort the pairs by ``(b*T + bucket)*n + i``, and
        in two launches find each pair's candidate and write the buckets.

        Why it equals the loop. Fix band b and bucket q, and let
        ``i1 < i2 < ... < ik`` be the requests of the batch that hash to q in
        band b: exactly the sorted group (b, q), in this order since i is the
        low part of a unique key. In the loop, only these requests touch
        ``table[b, q]``, and each overwrites it after reading it, so request
        ``i_m`` reads the entry written by ``i_(m-1)`` (slot, ts and signature of
        that request), and ``i1`` reads the entry as the batch found it; after
        the batch the bucket holds ``ik``. That is what ``cross_candidates``
        reads (the previous pair of the group, else the table) and what
        ``cross_best_insert`` writes (the last pair of each group), in a
        separate launch so that every read precedes every write. The match
        test (occupied, another account, ``|ts_i - ts| <= window_ms``,
        ``distance <= radius``) is a function of that entry and request i
        alone, and the best over bands is taken in increasing band order with
        a strict ``<``, so the lowest band wins ties, as in the loop.

        sigs : (n, W) uint64; slots, ts : (n,) int64; tables (B, T) int64,
        (B, T) int64 and (B, T, W) uint64, updated in place. Returns host arrays.
        """
        xp = self.xp
        with self.runtime.on_stream():
            sigs = self.runtime.as_device(sigs, np.uint64)
            slots = self.runtime.as_device(slots, np.int64)
            ts = self.runtime.as_device(ts, np.int64)
            table_slot = self._state(table_slot, np.int64, 2, "table_slot")
            table_ts = self._state(table_ts, np.int64, 2, "table_ts")
            table_sig = self._state(table_sig, np.uint64, 3, "table_sig")
            n, words = sigs.shape
            bands, size = table_slot.shape
            table_bits = size.bit_length() - 1
            if size < 1 or size != 1 << table_bits:
                raise ValueError(f"the hash tables must have a power-of-two number of buckets, got {size}")
            if table_ts.shape != (bands, size) or table_sig.shape != (bands, size, words):
                raise ValueError(
                    f"tables {table_slot.shape}, {table_ts.shape}, {table_sig.shape} do not match W={words}"
                )
            if bands * size * max(n, 1) >= _INT64_LIMIT:
                raise ValueError(f"{bands} x {size} buckets x {n} requests overflow the int64 sort keys")
            cross_slot = xp.full(n, -1, dtype=xp.int64)
            cross_dist = xp.full(n, words * 64 + 1, dtype=xp.int32)
            if n == 0:
                return CrossMatch(self.to_host(cross_slot), self.to_host(cross_dist))
            keys = xp.empty(bands * n, dtype=xp.int64)
            grid, block = self._per_thread(bands * n)
            self._run(
                "band_hash",
                grid,
                block,
                sigs,
                np.int64(n),
                np.int64(words),
                np.int64(bands),
                np.int64(table_bits),
                keys,
            )
            keys = xp.sort(keys)
            cand_dist = xp.empty((n, bands), dtype=xp.int32)
            cand_slot = xp.empty((n, bands), dtype=xp.int64)
            write_bucket = xp.empty((n, bands), dtype=xp.int64)
            # The batch's requests, as both launches take them.
            requests = (np.int64(n), np.int64(bands), np.int64(table_bits), sigs, np.int64(words), slots, ts)
            self._run(
                "cross_candidates",
                grid,
                block,
                keys,
                *requests,
                table_slot,
                table_ts,
                table_sig,
                np.int64(radius),
                np.int64(window_ms),
                cand_dist,
                cand_slot,
                write_bucket,
            )
            grid, block = self._per_thread(n)
            self._run(
                "cross_best_insert",
                grid,
                block,
                *requests,
                cand_dist,
                cand_slot,
                write_bucket,
                table_slot,
                table_ts,
                table_sig,
                cross_slot,
                cross_dist,
            )
        return CrossMatch(self.to_host(cross_slot), self.to_host(cross_dist))

    # ------------------------------------------------------------------ coverage

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
        """Cell of each request once its account's style is removed; then learn the style.

        Four launches around two cuBLAS GEMMs (see kernels/coverage.cu).
        embeddings : (n, d) float32 or float16; mean : (d,) float32;
        centroids : (K, d) float32; slots : (n,) int64; weights : (n,) float64;
        style_sum : (S, d) float32 and style_weight : (S,) float64, updated in
        place. Returns device arrays cells (n,) int32 and residual_sq (n,) float32.
        """
        xp = self.xp
        with self.runtime.on_stream():
            x = self.runtime.as_device(embeddings)
            if x.ndim != 2:
                raise ValueError(f"embeddings must be (n, d), got shape {x.shape}")
            if x.dtype == xp.float16:
                center, x = "center_unit_f16", x.view(xp.uint16)  # converted exactly inside the kernel
            else:
                center, x = "center_unit_f32", x if x.dtype == xp.float32 else x.astype(xp.float32)
            n, d = x.shape
            mean = self.runtime.as_device(mean, np.float32)
            centroids = self.runtime.as_device(centroids, np.float32)
            slots = self.runtime.as_device(slots, np.int64)
            weights = self.runtime.as_device(weights, np.float64)
            style_sum = self._state(style_sum, np.float32, 2, "style_sum")
            style_weight = self._state(style_weight, np.float64, 1, "style_weight")
            cells_k = centroids.shape[0]
            if mean.shape != (d,) or centroids.shape != (cells_k, d) or cells_k < 1 or style_sum.shape[1] != d:
                raise ValueError(
                    f"mean {mean.shape}, centroids {centroids.shape} and style_sum {style_sum.shape} must match d={d}"
                )
            if n == 0:
                return xp.empty(0, dtype=xp.int32), xp.empty(0, dtype=xp.float32)
            grid, block = self._per_warp(n)
            unit = xp.empty((n, d), dtype=xp.float32)
            self._run(center, grid, block, x, mean, np.int64(n), np.int64(d), unit)
            scores = unit @ centroids.T
            residual_sq = xp.empty(n, dtype=xp.float32)
            weighted = xp.empty((n, d), dtype=xp.float32)
            self._run(
                "nearest_residual",
                grid,
                block,
                scores,
                np.int64(n),
                np.int64(cells_k),
                unit,
                centroids,
                np.int64(d),
                weights,
                residual_sq,
                weighted,
            )
            capacity = style_sum.shape[0]
            keys = self._slot_keys(slots, n, capacity)
            destyled = xp.empty((n, d), dtype=xp.float32)
            # One thread per column where d allows: the scan's sequential depth is then the account's size.
            columns = min(self.launch.column_threads, -(-d // 32) * 32)
            self._fault_pending = True
            self._run(
                "style_prefix",
                *self._per_block(n, columns),
                keys,
                np.int64(n),
                np.int64(d),
                unit,
                weighted,
                weights,
                style_sum,
                style_weight,
                np.int64(capacity),
                destyled,
                self._fault,
            )
            destyled_scores = destyled @ centroids.T
            cells = xp.empty(n, dtype=xp.int32)
            self._run("row_argmax", grid, block, destyled_scores, np.int64(n), np.int64(cells_k), cells)
            raw = xp.empty(n, dtype=xp.int32)
            self._run("row_argmax", grid, block, scores, np.int64(n), np.int64(cells_k), raw)
            # The reference's fallback: keep the style-free cell only where it is still clearly
            # a topic (see Backend.destyled_cells).
            rows = xp.arange(n)
            best = destyled_scores[rows, cells]
            clearer = best >= CLARITY * scores[rows, raw] * xp.linalg.norm(destyled, axis=1)
            cells = xp.where(clearer, cells, raw).astype(xp.int32)
        return cells, residual_sq

    def histogram_add(self, hist: Any, slots: Any, cells: Any, weights: Any) -> None:
        """``hist[slots[i], cells[i]] += float32(weights[i])`` with atomics; hist (S, T) float32 in place."""
        with self.runtime.on_stream():
            hist = self._state(hist, np.float32, 2, "hist")
            slots = self.runtime.as_device(slots, np.int64)
            cells = self.runtime.as_device(cells, np.int32)
            weights = self.runtime.as_device(weights, np.float64)
            n = slots.shape[0]
            if cells.shape != (n,) or weights.shape != (n,):
                raise ValueError(
                    f"slots {slots.shape}, cells {cells.shape} and weights {weights.shape} must all be (n,)"
                )
            if n == 0:
                return
            grid, block = self._per_thread(n)
            self._fault_pending = True
            self._run(
                "histogram_add",
                grid,
                block,
                hist,
                np.int64(hist.shape[0]),
                np.int64(hist.shape[1]),
                slots,
                cells,
                weights,
                np.int64(n),
                self._fault,
            )

    def coverage_reduce(self, hist: Any, slots: Any, surprisal: Any) -> dict[str, np.ndarray]:
        """Per requested slot: ``sum_sq``, ``surprisal`` and ``distinct`` of its histogram row (host float64 (m,))."""
        xp = self.xp
        with self.runtime.on_stream():
            hist = self.runtime.as_device(hist, np.float32)
            slots = self.runtime.as_device(slots, np.int64)
            surprisal = self.runtime.as_device(surprisal, np.float32)
            if hist.ndim != 2 or surprisal.shape != (hist.shape[1],):
                raise ValueError(f"hist must be (S, T) and surprisal (T,), got {hist.shape} and {surprisal.shape}")
            m = slots.shape[0]
            out = xp.empty((m, 3), dtype=xp.float64)
            if m:
                self._fault_pending = True
                self._run(
                    "coverage_reduce",
                    *self._per_block(m, self.launch.reduce_threads),
                    hist,
                    np.int64(hist.shape[0]),
                    np.int64(hist.shape[1]),
                    slots,
                    np.int64(m),
                    surprisal,
                    out,
                    self._fault,
                )
        host = self.to_host(out)
        return {
            "sum_sq": np.ascontiguousarray(host[:, 0]),
            "surprisal": np.ascontiguousarray(host[:, 1]),
            "distinct": np.ascontiguousarray(host[:, 2]),
        }
