"""The near-duplicate job by every approach (NumPy, faiss, streamguard's scan) on the same requests."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from streamguard.bench.common import TARGET_RECALL, _blas_threads, _max_threads


def _centred_unit(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = x - mean
    return (centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _window_pairs(i: np.ndarray, j: np.ndarray, acct: np.ndarray, window: int) -> np.ndarray:
    """Mask of candidate pairs (query ``i``, earlier ``j``) in the same account within the last ``window``."""
    return (j < i) & (j >= i - window) & (acct[i] == acct[j])


def _scan_blocks(
    n: int, first: int, window: int, block: int, acct: np.ndarray, pairs: Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]
) -> np.ndarray:
    """Which queries ``first..n-1`` have a near duplicate, a block of queries ``s..e-1`` at a time:
    ``pairs(s, e, lo)`` gives the candidate pairs (query, row) against rows ``lo = s - window``
    to ``e - 1``, then the account and window filter."""
    found = np.zeros(n - first, dtype=bool)
    for s in range(first, n, block):
        e = min(n, s + block)
        qi, cj = pairs(s, e, s - window)
        keep = _window_pairs(qi, cj, acct, window)
        found[qi[keep] - first] = True
    return found


def _faiss_range_pairs(index: Any, data: np.ndarray, radius: Any) -> Callable[[int, int, int], tuple[np.ndarray, np.ndarray]]:
    """``pairs`` for :func:`_scan_blocks`: ``index`` rebuilt over the window's rows, then a range search within ``radius``."""

    def pairs(s: int, e: int, lo: int) -> tuple[np.ndarray, np.ndarray]:
        index.reset()
        index.add(data[lo:e])
        lims, _, ids = index.range_search(data[s:e], radius)
        return np.repeat(np.arange(s, e), np.diff(lims.astype(np.int64))), ids.astype(np.int64) + lo

    return pairs


def numpy_bruteforce(z: np.ndarray, acct: np.ndarray, first: int, window: int, threshold: float, block: int) -> np.ndarray:
    """Plain NumPy: each block of queries against its whole window (one matmul), then the account filter."""

    def pairs(s: int, e: int, lo: int) -> tuple[np.ndarray, np.ndarray]:
        qi, cj = np.nonzero(z[s:e] @ z[lo:e].T >= threshold)
        return qi + s, cj + lo

    return _scan_blocks(z.shape[0], first, window, block, acct, pairs)


def faiss_flat(z: np.ndarray, acct: np.ndarray, first: int, window: int, threshold: float, block: int) -> np.ndarray:
    """faiss ``IndexFlatIP`` over the window (rebuilt per block of queries), range search, account filter."""
    import faiss  # noqa: PLC0415

    pairs = _faiss_range_pairs(faiss.IndexFlatIP(z.shape[1]), z, threshold)
    return _scan_blocks(z.shape[0], first, window, block, acct, pairs)


def faiss_binary(codes: np.ndarray, acct: np.ndarray, first: int, window: int, radius: int, block: int) -> np.ndarray:
    """faiss ``IndexBinaryFlat`` over the window's SimHash codes, range search within ``radius`` bits, account filter."""
    import faiss  # noqa: PLC0415

    # faiss keeps distance < radius
    pairs = _faiss_range_pairs(faiss.IndexBinaryFlat(codes.shape[1] * 8), codes, radius + 1)
    return _scan_blocks(codes.shape[0], first, window, block, acct, pairs)


def _min_hamming_in_window(sigs: np.ndarray, acct: np.ndarray, first: int, window: int, block: int) -> tuple[np.ndarray, np.ndarray]:
    """Per query, the smallest Hamming distance to an earlier same-account request in the window (bits+1 if
    none), and the number of those requests (the length of the chain streamguard's scan walks)."""
    n, words = sigs.shape
    best = np.full(n - first, words * 64 + 1, dtype=np.int64)
    chain = np.zeros(n - first, dtype=np.int64)
    order = np.argsort(acct, kind="stable")
    sorted_acct = acct[order]
    for s in range(first, n, block):
        e = min(n, s + block)
        q = np.arange(s, e)
        lo_pos = np.searchsorted(sorted_acct, acct[q], side="left")
        hi_pos = np.searchsorted(sorted_acct, acct[q], side="right")
        counts = hi_pos - lo_pos
        qi = np.repeat(q, counts)
        starts = np.repeat(lo_pos - np.cumsum(np.r_[0, counts[:-1]]), counts)
        cj = order[np.arange(qi.size) + starts]
        keep = (cj < qi) & (cj >= qi - window)
        qi, cj = qi[keep], cj[keep]
        dist = np.bitwise_count(sigs[qi] ^ sigs[cj]).sum(axis=1).astype(np.int64)
        np.minimum.at(best, qi - first, dist)
        np.add.at(chain, qi - first, 1)
    return best, chain


def _ring_analysis(
    z: np.ndarray, sigs: np.ndarray, acct: np.ndarray, first: int, window: int, rings: tuple[int, ...], threshold: float
) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """What a ring of the account's last ``R`` requests can see, for each ``R`` in ``rings``.

    Returns per ``R``: the smallest Hamming distance to those requests (bits+1
    if none) and whether one of them has cosine >= ``threshold`` (the best an
    exact check over the ring could do). Only requests inside the window count.
    """
    n, words = sigs.shape
    order = np.argsort(acct, kind="stable")
    position = np.empty(n, dtype=np.int64)
    position[order] = np.arange(n)
    q = np.arange(first, n)
    best = np.full(q.size, words * 64 + 1, dtype=np.int64)
    reach = np.zeros(q.size, dtype=bool)
    out: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for k in range(1, max(rings) + 1):
        back = position[q] - k
        valid = back >= 0
        cand = order[np.where(valid, back, 0)]
        valid &= (acct[cand] == acct[q]) & (cand >= q - window)
        idx = np.flatnonzero(valid)
        if idx.size:
            i, j = q[idx], cand[idx]
            dist = np.bitwise_count(sigs[i] ^ sigs[j]).sum(axis=1).astype(np.int64)
            best[idx] = np.minimum(best[idx], dist)
            reach[idx] |= np.einsum("ij,ij->i", z[i], z[j]) >= threshold
        if k in rings:
            out[k] = (best.copy(), reach.copy())
    return out


def near_duplicate_bench(batch: Any, codebook: Any, settings: Any, backend: Any, window: int, queries: int) -> dict[str, Any]:
    """The near-duplicate job by every approach on the same requests; see the module docstring."""
    threshold = float(settings.signature.dup_cosine)
    radius = int(settings.hamming_radius())
    bits = int(settings.signature.bits)
    n_all = len(batch)
    queries = min(queries, n_all // 2)
    window = min(window, n_all - queries)
    start = n_all - queries - window
    x = np.ascontiguousarray(batch.embeddings[start:], dtype=np.float32)
    _, acct = np.unique(batch.account_ids[start:], return_inverse=True)
    acct = acct.astype(np.int64)
    first = window
    n = x.shape[0]
    z = _centred_unit(x, codebook.mean)
    planes = np.asarray(codebook.planes, dtype=np.float32)
    offsets = np.asarray(codebook.plane_offsets, dtype=np.float32)
    sigs = np.concatenate([backend.to_host(backend.signatures(backend.asarray(x[s : s + 4096]), planes, offsets)) for s in range(0, n, 4096)])
    codes = np.ascontiguousarray(sigs).view(np.uint8).reshape(n, bits // 8)
    block = 1024
    cores = _max_threads()

    def timed(fn: Callable[[], np.ndarray], threads: int, kind: str) -> tuple[np.ndarray, float]:
        if kind == "faiss":
            import faiss  # noqa: PLC0415

            faiss.omp_set_num_threads(threads)
        with _blas_threads(threads):
            begin = time.perf_counter()
            out = fn()
            return out, time.perf_counter() - begin

    approaches: list[dict[str, Any]] = []
    truth = None
    for name, kind, fn in (
        ("numpy brute force (exact)", "blas", lambda: numpy_bruteforce(z, acct, first, window, threshold, block)),
        ("faiss IndexFlatIP (exact)", "faiss", lambda: faiss_flat(z, acct, first, window, threshold, block)),
        ("faiss IndexBinaryFlat (SimHash)", "faiss", lambda: faiss_binary(codes, acct, first, window, radius, block)),
    ):
        if kind == "faiss":
            try:
                import faiss  # noqa: F401, PLC0415
            except ImportError as exc:
                approaches.append({"name": name, "skipped": f"faiss not installed ({exc})"})
                continue
        runs = []
        for threads in sorted({1, cores}):
            found, seconds = timed(fn, threads, kind)
            runs.append((seconds, threads, found))
        seconds, threads, found = min(runs, key=lambda r: r[0])
        if truth is None:
            truth = found
        approaches.append(
            {
                "name": name,
                "queries_per_second": queries / seconds,
                "seconds": seconds,
                "threads": threads,
                "seconds_by_threads": {str(t): s for s, t, _ in runs},
                "flags": found,
            }
        )
    assert truth is not None

    # streamguard: the detector's window (W = the job's window, 2W rows), warmed on the
    # window's requests, then the queries timed in detector-sized blocks.
    words = bits // 64
    accounts = int(acct.max()) + 1
    step = min(settings.batch.max_size, window)

    def fresh_state() -> list[Any]:
        return [
            backend.asarray(np.zeros((2 * window, words), dtype=np.uint64)),
            backend.asarray(np.full(2 * window, -1, dtype=np.int64)),
            backend.asarray(np.full(accounts, -1, dtype=np.int64)),
        ]

    warm = fresh_state()
    for s in range(0, first, step):
        e = min(first, s + step)
        backend.dup_scan(backend.asarray(sigs[s:e]), backend.asarray(acct[s:e]), *warm, s, window)
    warm_host = [np.array(backend.to_host(a), copy=True) for a in warm]
    best_scan = best_full = math.inf
    within = np.empty(0)
    for _ in range(3):
        state = [backend.asarray(a.copy()) for a in warm_host]
        begin = time.perf_counter()
        parts = [
            backend.to_host(backend.dup_scan(backend.asarray(sigs[s : s + step]), backend.asarray(acct[s : s + step]), *state, s, window).within_dist)
            for s in range(first, n, step)
        ]
        best_scan = min(best_scan, time.perf_counter() - begin)
        within = np.concatenate(parts)
        state = [backend.asarray(a.copy()) for a in warm_host]
        begin = time.perf_counter()
        for s in range(first, n, step):
            sig = backend.signatures(backend.asarray(x[s : s + step]), planes, offsets)
            backend.dup_scan(sig, backend.asarray(acct[s : s + step]), *state, s, window)
        best_full = min(best_full, time.perf_counter() - begin)
    flags = within <= radius
    approaches.append(
        {
            "name": f"streamguard within-account scan (window of {window:,})",
            "queries_per_second": queries / best_scan,
            "seconds": best_scan,
            "threads": getattr(backend, "threads", None),
            "flags": flags,
            "note": "on given signatures, like IndexBinaryFlat; also keeps the window and the chains (the per-account work)",
        }
    )
    approaches.append(
        {
            "name": "streamguard signatures + scan",
            "queries_per_second": queries / best_full,
            "seconds": best_full,
            "threads": getattr(backend, "threads", None),
            "flags": flags,
            "note": "from embeddings, like the exact baselines",
        }
    )
    positives = int(truth.sum())
    for a in approaches:
        found = a.pop("flags", None)
        if found is None:
            continue
        hits = int((found & truth).sum())
        a["recall"] = hits / positives if positives else None
        a["precision"] = hits / int(found.sum()) if found.any() else None
        a["flagged"] = int(found.sum())

    # Recall of every radius: over the whole window (streamguard's scan, an index's view), and, for
    # comparison, over a per-account ring of the last R requests (the scan before the window).
    window_min, chain = _min_hamming_in_window(sigs, acct, first, window, block)
    assert np.array_equal(np.minimum(window_min, bits + 1), within), "the scan must equal the brute-force minimum"
    ring_sizes = (64, 256)
    rings_seen = _ring_analysis(z, sigs, acct, first, window, ring_sizes, threshold)
    p = math.acos(threshold) / math.pi
    sd = math.sqrt(bits * p * (1 - p))
    sweep = []
    for r in range(max(0, radius - 8), min(bits, radius + 16) + 1):
        row: dict[str, Any] = {"radius": r, "z": (r - bits * p) / sd}
        row["recall_window"] = float((window_min[truth] <= r).mean()) if positives else None
        row["false_positive_rate_window"] = float((window_min[~truth] <= r).mean()) if (~truth).any() else None
        for size, (ring_min, _) in rings_seen.items():
            row[f"recall_ring_{size}"] = float((ring_min[truth] <= r).mean()) if positives else None
            row[f"false_positive_rate_ring_{size}"] = float((ring_min[~truth] <= r).mean()) if (~truth).any() else None
        sweep.append(row)
    reaching = {
        str(size): next((s["radius"] for s in sweep if (s[f"recall_ring_{size}"] or 0) >= TARGET_RECALL), None) for size in ring_sizes
    }
    reaching["window"] = next((s["radius"] for s in sweep if (s["recall_window"] or 0) >= TARGET_RECALL), None)
    return {
        "dim": int(x.shape[1]),
        "window": window,
        "queries": queries,
        "dup_cosine": threshold,
        "cosine_space": "stream-centred (x - codebook.mean), as Settings.signature.dup_cosine is defined",
        "radius": radius,
        "bits": bits,
        "positives": positives,
        "positive_rate": positives / queries,
        "approaches": approaches,
        "radius_sweep": sweep,
        "ring_sizes": list(ring_sizes),
        "radius_for_target_recall": reaching,
        "ring_cap": {str(size): float(reach[truth].mean()) if positives else None for size, (_, reach) in rings_seen.items()},
        "ring_cap_note": "history: share of positives with a cos >= dup_cosine partner among the account's last R "
        "requests, the most a per-account ring of R (the scan before the window, R = 64) could find",
        "mean_chain": float(chain.mean()),
        "chain_percentiles": {str(q): float(np.percentile(chain, q)) for q in (50, 90, 99, 100)},
        "chain_note": "chain = the query's account's requests among the last W (what the scan walks and compares); "
        "heavy accounts make it long",
    }


