"""``streamguard bench``: every backend and the baselines a user would pick, in one run.

One run on the current machine measures, side by side (ratios are what
travel between machines, and between runs on a shared one):

- ``sgemm``: this machine's float32 GEMM rate at the detector's shapes, on 1
  thread and on all cores, and ``flops``: the detector's GEMM work per event,
  counted from the settings. Their ratio is the BLAS-bound limit, the rate a
  detector whose every GEMM ran at full speed and that did nothing else
  would reach.
- ``throughput``: the whole detector (``replay_table``, codebook given) over
  simulated traffic, per dimension and backend; p50/p99 batch latency; the
  alerts of every backend compared with the NumPy reference's.
- ``near_duplicate``: "for every request, is there an earlier request of the
  same account among the last W with cosine >= dup_cosine" (cosine in the
  stream-centred space, as the detector defines it), answered by a NumPy
  brute force (the ground truth), faiss ``IndexFlatIP`` (exact), faiss
  ``IndexBinaryFlat`` over streamguard's own SimHash signatures, and
  streamguard's within-account scan (its window of the last W requests,
  walked along each account's chain); queries/s, recall, precision, the
  recall of each Hamming radius, and the length of the chains walked (the
  account's requests in the window: what a query costs). The recall a
  per-account ring of the last R requests would have had (the scan before
  the window) is kept for comparison.
- ``memory``: peak RSS, state bytes per active account and the fixed state
  of a pipeline (the window, the cross-account tables); ``churn``: accounts
  that keep arriving and going idle, and how many stay active.

Output: a table on the terminal, ``bench.json`` and ``bench.png`` in ``--out``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import math
import os
import platform
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = "bench-out"
SECTIONS = ("meta", "sgemm", "flops", "throughput", "near_duplicate", "memory", "churn", "targets")
EVENTS_PER_SCALE = 218_000
"""Requests the simulator writes at scale 1.0 (it scales accounts, not per-account volume)."""
TARGET_EVENTS_PER_SECOND = 50_000
TARGET_RECALL = 0.99
TARGET_STATE_BYTES = 8 * 1024


# ----------------------------------------------------------------------- parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the CLI's subparsers; returns its parser."""
    parser = subparsers.add_parser(
        "bench",
        help="throughput of every backend and of baselines, with the machine's BLAS limit",
        description=__doc__.split("\n\n")[0],
    )
    parser.add_argument("--quick", action="store_true", help="small event counts: a CI run of well under a minute")
    parser.add_argument("--dims", default="384,1024", help="embedding dimensions, comma separated (default 384,1024)")
    parser.add_argument("--events", type=int, default=None, help="requests per dimension (default 150000; --quick 12000)")
    parser.add_argument("--window", type=int, default=None, help="near-duplicate window W (default 65536; --quick 8192)")
    parser.add_argument("--queries", type=int, default=None, help="near-duplicate queries (default 8192; --quick 1024)")
    parser.add_argument(
        "--events-per-tick",
        type=int,
        default=4096,
        help="event-time density of the traffic: requests per scoring tick (the simulator's own is ~75-250)",
    )
    parser.add_argument("--backends", default=None, help="comma separated (default: numpy, cpu and cuda where usable)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"directory for bench.json and bench.png (default {DEFAULT_OUT}/)")
    return parser


# --------------------------------------------------------------------- helpers


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _peak_rss_bytes() -> int:
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


@contextlib.contextmanager
def _blas_threads(count: int | None) -> Iterator[None]:
    """Limit BLAS threads for a block (no-op without threadpoolctl or with count None)."""
    if count is None:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # noqa: PLC0415 - optional
    except ImportError:
        yield
        return
    with threadpool_limits(limits=count, user_api="blas"):
        yield


def _max_threads() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _median_seconds(fn: Callable[[], Any], reps: int) -> float:
    fn()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _versions() -> dict[str, str]:
    out = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("numba", "faiss", "scipy", "pyarrow"):
        try:
            module = __import__(name)
            out[name] = str(getattr(module, "__version__", "?"))
        except ImportError:
            out[name] = "not installed"
    try:
        from threadpoolctl import threadpool_info  # noqa: PLC0415

        out["blas"] = ", ".join(
            f"{i.get('internal_api')} {i.get('version')} {i.get('architecture', '')} ({i.get('num_threads')} threads)"
            for i in threadpool_info()
            if i.get("user_api") == "blas"
        )
    except ImportError:
        out["blas"] = "unknown (threadpoolctl not installed)"
    return out


# ------------------------------------------------------------------ backends


def _backend_names(requested: str | None) -> tuple[list[str], dict[str, str]]:
    """Backends to run and, for the ones left out, why."""
    from streamguard.backends import cuda_unavailable_reason  # noqa: PLC0415

    skipped: dict[str, str] = {}
    names = ["numpy", "cpu", "cuda"] if requested is None else [n.strip() for n in requested.split(",") if n.strip()]
    usable = []
    for name in names:
        if name == "cuda":
            reason = cuda_unavailable_reason()
            if reason is not None:
                skipped[name] = reason
                continue
        if name == "cpu":
            try:
                import numba  # noqa: F401, PLC0415
            except ImportError as exc:
                skipped[name] = f"numba not installed ({exc})"
                continue
        usable.append(name)
    return usable, skipped


def _make_backend(name: str, settings: Any, threads: int | None = None) -> Any:
    from streamguard.backends import create_backend  # noqa: PLC0415

    if name == "cpu" and threads is not None:
        from streamguard.backends.cpu_backend import CpuBackend  # noqa: PLC0415

        backend = CpuBackend(settings.near_duplicate.bands, settings.near_duplicate.table_bits, threads=threads)
    else:
        backend = create_backend(name, settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    backend.warmup()
    return backend


# --------------------------------------------------------------------- sgemm


def measure_sgemm(dims: list[int], cells: int, bits: int, quick: bool) -> dict[str, Any]:
    """GFLOP/s of ``(m, d) @ (d, K)`` and ``(m, d) @ (d, bits)`` float32 matmuls, 1 thread and all cores."""
    rng = np.random.default_rng(0)
    m = 1024 if quick else 4096
    reps = 3 if quick else 7
    rows = []
    for d in dims:
        a = rng.standard_normal((m, d), dtype=np.float32)
        for n, what in ((cells, "cells"), (bits, "signature")):
            b = rng.standard_normal((d, n), dtype=np.float32)
            for threads in sorted({1, _max_threads()}):
                with _blas_threads(threads):
                    seconds = _median_seconds(lambda a=a, b=b: a @ b, reps)
                rows.append({"m": m, "k": d, "n": n, "what": what, "threads": threads, "gflops": 2.0 * m * d * n / seconds / 1e9})
    best: dict[str, float] = {}
    for d in dims:
        cell_rows = [r for r in rows if r["k"] == d and r["what"] == "cells"]
        top = max(cell_rows, key=lambda r: r["gflops"])
        best[str(d)] = top["gflops"]
    return {"shapes": rows, "gflops_by_dim": best, "gflops": max(best.values()), "note": "median of repeated calls"}


def flops_per_event(dim: int, settings: Any) -> dict[str, float]:
    """The detector's float operations per request, counted from the settings (multiply-add = 2).

    ``gemm`` is what the reference algorithm does in GEMMs: the signature
    projection ``d * bits * 2`` and two cell GEMMs ``2 * d * K * 2`` (nearest
    cell, then the destyled cell). ``other`` estimates the rest (centring and
    normalising, residuals, the style prefix, argmaxes; not the Hamming scan,
    whose length is measured in the near-duplicate section).
    """
    bits = settings.signature.bits
    cells = settings.coverage.cells
    signature = dim * bits * 2
    cell_gemms = 2 * dim * cells * 2
    # The Hamming scan (3 integer operations per signature word and chain entry) is not
    # counted: its length is the account's requests in the window, see near_duplicate.mean_chain.
    other = 4 * dim + 5 * dim + 6 * dim + 2 * cells
    return {
        "signature": signature,
        "cells": cell_gemms,
        "gemm": signature + cell_gemms,
        "gemm_cpu_backend": signature + dim * cells * 2,
        "other": other,
        "note": "gemm: the reference's GEMMs (signature + two cell GEMMs); gemm_cpu_backend: the cpu backend's "
        "(its Gram path replaces the second cell GEMM, up to a few % of rows recomputed exactly)",
    }


# ------------------------------------------------------------------- traffic


def make_traffic(dim: int, events: int, seed: int, events_per_tick: int, tick_ms: int) -> tuple[Any, float]:
    """Simulated traffic of about ``events`` requests, squeezed in event time to ``events_per_tick``."""
    from streamguard.sim import SimConfig, simulate  # noqa: PLC0415

    scale = max(events / EVENTS_PER_SCALE, 0.05)
    days = max(events / events_per_tick * tick_ms / 86_400_000, 1.0 / 24)
    traffic = simulate(SimConfig(seed=seed, scale=scale, dim=dim, days=days))
    table = traffic.table
    if table.num_rows > events:
        from streamguard.stream.replay import event_time_order  # noqa: PLC0415

        table = event_time_order(table).slice(0, events)
    return table, days


def ordered_batch(table: Any, dim: int) -> Any:
    from streamguard.schema import validate_table  # noqa: PLC0415
    from streamguard.stream.replay import event_time_order  # noqa: PLC0415

    batch, _ = validate_table(event_time_order(table), dim)
    return batch


def fit_codebook(batch: Any, settings: Any, backend: Any) -> Any:
    from streamguard.stream.pipeline import Pipeline  # noqa: PLC0415

    warm = batch.take(np.arange(min(len(batch), settings.coverage.warmup)))
    return Pipeline(settings, backend).fit_codebook(warm)


# ---------------------------------------------------------------- throughput


def replay_run(table: Any, settings: Any, backend: Any, codebook: Any) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """The whole detector over ``table``; returns its numbers and its alerts."""
    from streamguard.sinks.alerts import MemoryAlertSink  # noqa: PLC0415
    from streamguard.sinks.dead_letter import DeadLetterSink  # noqa: PLC0415
    from streamguard.stream.replay import replay_table  # noqa: PLC0415

    sink = MemoryAlertSink()
    result = replay_table(table, settings, backend, sink, DeadLetterSink(keep_in_memory=0), codebook=codebook)
    pipeline = result.pipelines[0]
    batch_seconds = np.asarray(pipeline.stats.batch_seconds, dtype=np.float64)
    alerts = [(a.account_id, a.kind, a.events_seen, a.ts) for a in sink.alerts]
    numbers = {
        "events": int(result.valid),
        "seconds": float(result.seconds),
        "events_per_second": float(result.events_per_second),
        "batches": int(batch_seconds.size),
        "p50_batch_seconds": float(np.percentile(batch_seconds, 50)) if batch_seconds.size else None,
        "p99_batch_seconds": float(np.percentile(batch_seconds, 99)) if batch_seconds.size else None,
        "stage_seconds": {k: round(float(v), 4) for k, v in pipeline.stats.stage_seconds.items()},
        "alerts": len(alerts),
        "state_bytes_per_account": int(pipeline.state_bytes_per_account()),
        "fixed_state_bytes": dict(pipeline.near_duplicate.fixed_state_bytes()) if pipeline.near_duplicate else {},
    }
    return numbers, alerts


# ------------------------------------------------------------ near-duplicate


def _centred_unit(x: np.ndarray, mean: np.ndarray) -> np.ndarray:
    centred = x - mean
    return (centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def _window_pairs(i: np.ndarray, j: np.ndarray, acct: np.ndarray, window: int) -> np.ndarray:
    """Mask of candidate pairs (query ``i``, earlier ``j``) in the same account within the last ``window``."""
    return (j < i) & (j >= i - window) & (acct[i] == acct[j])


def numpy_bruteforce(z: np.ndarray, acct: np.ndarray, first: int, window: int, threshold: float, block: int) -> np.ndarray:
    """Plain NumPy: each block of queries against its whole window (one matmul), then the account filter."""
    n = z.shape[0]
    found = np.zeros(n - first, dtype=bool)
    for s in range(first, n, block):
        e = min(n, s + block)
        lo = s - window
        sims = z[s:e] @ z[lo:e].T
        qi, cj = np.nonzero(sims >= threshold)
        qi, cj = qi + s, cj + lo
        keep = _window_pairs(qi, cj, acct, window)
        found[qi[keep] - first] = True
    return found


def faiss_flat(z: np.ndarray, acct: np.ndarray, first: int, window: int, threshold: float, block: int) -> np.ndarray:
    """faiss ``IndexFlatIP`` over the window (rebuilt per block of queries), range search, account filter."""
    import faiss  # noqa: PLC0415

    n, d = z.shape
    found = np.zeros(n - first, dtype=bool)
    index = faiss.IndexFlatIP(d)
    for s in range(first, n, block):
        e = min(n, s + block)
        lo = s - window
        index.reset()
        index.add(z[lo:e])
        lims, _, ids = index.range_search(z[s:e], threshold)
        qi = np.repeat(np.arange(s, e), np.diff(lims.astype(np.int64)))
        cj = ids.astype(np.int64) + lo
        keep = _window_pairs(qi, cj, acct, window)
        found[qi[keep] - first] = True
    return found


def faiss_binary(codes: np.ndarray, acct: np.ndarray, first: int, window: int, radius: int, block: int) -> np.ndarray:
    """faiss ``IndexBinaryFlat`` over the window's SimHash codes, range search within ``radius`` bits, account filter."""
    import faiss  # noqa: PLC0415

    n, nbytes = codes.shape
    found = np.zeros(n - first, dtype=bool)
    index = faiss.IndexBinaryFlat(nbytes * 8)
    for s in range(first, n, block):
        e = min(n, s + block)
        lo = s - window
        index.reset()
        index.add(codes[lo:e])
        lims, _, ids = index.range_search(codes[s:e], radius + 1)  # faiss keeps distance < radius
        qi = np.repeat(np.arange(s, e), np.diff(lims.astype(np.int64)))
        cj = ids.astype(np.int64) + lo
        keep = _window_pairs(qi, cj, acct, window)
        found[qi[keep] - first] = True
    return found


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


# --------------------------------------------------------------------- churn


def churn_bench(settings: Any, backend: Any, quick: bool, seed: int) -> dict[str, Any]:
    """Accounts keep arriving, send a few requests, go idle: active slots must stay bounded.

    Accounts arrive at a constant rate, each sends its requests within 30
    minutes and is never heard of again; ``StateConfig.idle_evict_hours`` is
    shortened so that a day of event time shows the steady state.
    """
    from streamguard.config import StateConfig  # noqa: PLC0415
    from streamguard.schema import RequestBatch  # noqa: PLC0415
    from streamguard.stream.pipeline import Pipeline  # noqa: PLC0415

    dim = 64
    hours = 12 if quick else 30
    per_hour = 150 if quick else 800
    per_account = 6 if quick else 8
    idle_hours = 2.0
    rng = np.random.default_rng(seed)
    accounts = hours * per_hour
    arrive = np.sort(rng.uniform(0, hours * 3_600_000, accounts)).astype(np.int64)
    owner = np.repeat(np.arange(accounts), per_account)
    ts = arrive[owner] + rng.integers(0, 1_800_000, owner.size)
    order = np.argsort(ts, kind="stable")
    owner, ts = owner[order], ts[order] + 1_767_225_600_000
    topics = rng.standard_normal((64, dim)).astype(np.float32)
    emb = topics[rng.integers(0, 64, owner.size)] + 0.5 * rng.standard_normal((owner.size, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.array([f"churn-{a}" for a in range(accounts)], dtype=object)
    batch = RequestBatch(
        np.array([f"r{i}" for i in range(owner.size)], dtype=object),
        ts,
        ids[owner],
        np.full(owner.size, None, dtype=object),
        emb,
    )
    state = replace(settings.state, idle_evict_hours=idle_hours) if hasattr(settings.state, "idle_evict_hours") else StateConfig()
    churn_settings = replace(settings, state=state)
    codebook = fit_codebook(batch, churn_settings, backend)
    pipeline = Pipeline(churn_settings, backend, codebook)
    step = min(churn_settings.batch.max_size, max(256, owner.size // 60))
    series = []
    seen: set[int] = set()
    max_active = 0
    for s in range(0, len(batch), step):
        part = batch.take(np.arange(s, min(len(batch), s + step)))
        pipeline.process(part)
        seen.update(owner[s : s + step].tolist())
        active = len(pipeline.accounts)
        max_active = max(max_active, active)
        series.append({"hour": float((part.ts[-1] - ts[0]) / 3_600_000), "active": active, "seen": len(seen), "capacity": int(pipeline.accounts.capacity)})
    per_account_bytes = int(pipeline.state_bytes_per_account())
    capacity = int(pipeline.accounts.capacity)
    return {
        "events": int(owner.size),
        "hours": hours,
        "accounts_seen": accounts,
        "arrivals_per_hour": per_hour,
        "requests_per_account": per_account,
        "idle_evict_hours": idle_hours,
        "max_active_accounts": max_active,
        "final_active_accounts": len(pipeline.accounts),
        "slot_capacity": capacity,
        "evicted": int(pipeline.stats.evicted),
        "state_bytes_at_capacity": capacity * per_account_bytes,
        "state_bytes_without_eviction": accounts * per_account_bytes,
        "expected_active": per_hour * (0.5 + idle_hours + churn_settings.scoring.evict_every_ticks * churn_settings.scoring.tick_ms / 3_600_000)
        if hasattr(churn_settings.scoring, "evict_every_ticks")
        else None,
        "series": series,
    }


# ---------------------------------------------------------------------- run


def run(args: argparse.Namespace) -> int:
    """Run every section, print the tables, write ``bench.json`` and ``bench.png``; returns the exit status."""
    from streamguard.config import Settings  # noqa: PLC0415

    quick = bool(args.quick)
    dims = [int(d) for d in str(args.dims).split(",") if d.strip()]
    events = args.events or (12_000 if quick else 150_000)
    window = args.window or (8_192 if quick else 65_536)
    queries = args.queries or (1_024 if quick else 8_192)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    tick_ms = int(getattr(settings.scoring, "tick_ms", 300_000))
    names, skipped = _backend_names(args.backends)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "cpu": _cpu_model(),
            "cores": _max_threads(),
            "load_average_start": list(os.getloadavg()),
            "versions": _versions(),
            "quick": quick,
            "dims": dims,
            "events": events,
            "events_per_tick": args.events_per_tick,
            "seed": args.seed,
            "backends": names,
            "skipped_backends": skipped,
            "command": "streamguard bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "streamguard bench",
        }
    }
    _log(f"sgemm at d={dims}")
    report["sgemm"] = measure_sgemm(dims, settings.coverage.cells, settings.signature.bits, quick)
    report["flops"] = {str(d): flops_per_event(d, settings) for d in dims}

    report["throughput"] = []
    near_dup: dict[str, Any] | None = None
    state_bytes: dict[str, int] = {}
    fixed_state: dict[str, int] = {}
    cpu_backend = None
    for dim in dims:
        _log(f"d={dim}: simulating {events} requests")
        table, days = make_traffic(dim, events, args.seed, args.events_per_tick, tick_ms)
        batch = ordered_batch(table, dim)
        backends = {name: _make_backend(name, settings) for name in names}
        if "cpu" in backends:
            cpu_backend = backends["cpu"]
        fitter = backends.get("cpu") or backends.get("cuda") or backends["numpy"] if backends else None
        codebook = fit_codebook(batch, settings, fitter)
        limit = report["sgemm"]["gflops_by_dim"][str(dim)] * 1e9 / report["flops"][str(dim)]["gemm"]
        runs: list[tuple[str, Any, int | None]] = [(name, backends[name], None) for name in names]
        if not quick and "cpu" in backends and _max_threads() > 1:
            chosen = backends["cpu"].threads
            other = 1 if chosen > 1 else _max_threads()
            runs.append((f"cpu ({other} thread{'s' if other > 1 else ''})", _make_backend("cpu", settings, threads=other), other))
            runs.append(("cpu (threads measured)", _make_backend("cpu", settings, threads=None), None))
        reference_alerts = None
        for label, backend, _ in runs:
            _log(f"d={dim}: replay on {label}")
            threads = getattr(backend, "threads", None) if backend.name == "cpu" else (cpu_backend.threads if cpu_backend else None)
            counters = (getattr(backend, "gram_rows", 0), getattr(backend, "exact_rows", 0))
            with _blas_threads(threads if backend.name == "numpy" else None):
                numbers, alerts = replay_run(table, settings, backend, codebook)
            if backend.name == "cpu":
                gram = backend.gram_rows - counters[0]
                exact = backend.exact_rows - counters[1]
                numbers["cells_without_second_gemm"] = gram / max(1, gram + exact)
                own_limit = report["sgemm"]["gflops_by_dim"][str(dim)] * 1e9 / report["flops"][str(dim)]["gemm_cpu_backend"]
                numbers["blas_limit_own_gemms_events_per_second"] = own_limit
                numbers["share_of_own_blas_limit"] = numbers["events_per_second"] / own_limit
            if label == "numpy":
                reference_alerts = alerts
            numbers.update(
                {
                    "dim": dim,
                    "backend": label if label != "cpu" else "cpu",
                    "threads": threads,
                    "traffic_days": days,
                    "events_per_tick": numbers["events"] / max(1.0, days * 86_400_000 / tick_ms),
                    "blas_limit_events_per_second": limit,
                    "share_of_blas_limit": numbers["events_per_second"] / limit,
                    "alerts_match_reference": None if reference_alerts is None else alerts == reference_alerts,
                }
            )
            state_bytes[str(dim)] = numbers["state_bytes_per_account"]
            fixed_state = numbers["fixed_state_bytes"] or fixed_state
            report["throughput"].append(numbers)
        if not quick and "cpu" in backends and dim == dims[0]:
            _log(f"d={dim}: replay on cpu at the simulator's own event-time density")
            sparse_events = min(events, 50_000)
            sim_density = int(EVENTS_PER_SCALE / (3 * 86_400_000 / tick_ms))  # the simulator's default: scale 1 over 3 days
            sparse, sparse_days = make_traffic(dim, sparse_events, args.seed, sim_density, tick_ms)
            numbers, _ = replay_run(sparse, settings, backends["cpu"], fit_codebook(ordered_batch(sparse, dim), settings, backends["cpu"]))
            numbers.update(
                {
                    "dim": dim,
                    "backend": "cpu (simulator density)",
                    "threads": backends["cpu"].threads,
                    "traffic_days": sparse_days,
                    "events_per_tick": numbers["events"] / max(1.0, sparse_days * 86_400_000 / tick_ms),
                    "note": "per-tick scoring dominates at this density",
                    "blas_limit_events_per_second": limit,
                    "share_of_blas_limit": numbers["events_per_second"] / limit,
                    "alerts_match_reference": None,
                }
            )
            report["throughput"].append(numbers)
        if near_dup is None:
            _log(f"d={dim}: near-duplicate job, W={window}, {queries} queries")
            scan_backend = backends.get("cpu") or backends.get("cuda") or backends["numpy"]
            near_dup = near_duplicate_bench(batch, codebook, settings, scan_backend, window, queries)
        del table, batch
    report["near_duplicate"] = near_dup
    churn_backend = cpu_backend or _make_backend("numpy", settings)
    _log("account churn")
    report["churn"] = churn_bench(settings, churn_backend, quick, args.seed)
    report["memory"] = {
        "peak_rss_bytes": _peak_rss_bytes(),
        "state_bytes_per_account": state_bytes,
        "fixed_state_bytes": sum(fixed_state.values()),
        "fixed_state_parts": fixed_state,
        "cross_account_table_bytes": fixed_state.get("cross_account_tables"),
        "note": "peak RSS of the whole bench process (traffic, every backend, baselines); fixed state is per "
        "pipeline (per partition), whatever the number of accounts",
    }
    report["targets"] = _targets(report, dims)
    report["meta"]["seconds"] = time.perf_counter() - started
    report["meta"]["load_average_end"] = list(os.getloadavg())
    path = out / "bench.json"
    path.write_text(json.dumps(report, indent=2, default=_json_default))
    plot(report, out / "bench.png")
    render(report)
    print(f"wrote {path} and {out / 'bench.png'}")
    return 0


def _json_default(value: Any) -> Any:
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def _targets(report: dict[str, Any], dims: list[int]) -> dict[str, Any]:
    dim = 384 if 384 in dims else dims[0]
    cpu = [r for r in report["throughput"] if r["backend"] == "cpu" and r["dim"] == dim]
    nd = report["near_duplicate"] or {}
    by_name = {a["name"]: a for a in nd.get("approaches", [])}
    scan = next((a for n, a in by_name.items() if n.startswith("streamguard within")), None)
    binary = by_name.get("faiss IndexBinaryFlat (SimHash)")
    state = report["memory"]["state_bytes_per_account"].get(str(dim))
    return {
        "dim": dim,
        "cpu_events_per_second": cpu[0]["events_per_second"] if cpu else None,
        "cpu_events_per_second_ok": bool(cpu and cpu[0]["events_per_second"] >= TARGET_EVENTS_PER_SECOND),
        "near_duplicate_recall": scan.get("recall") if scan else None,
        "near_duplicate_recall_ok": bool(scan and (scan.get("recall") or 0) >= TARGET_RECALL),
        "scan_vs_binary_flat": (scan["queries_per_second"] / binary["queries_per_second"]) if scan and binary and "queries_per_second" in binary else None,
        "state_bytes_per_account": state,
        "state_ok": bool(state is not None and state <= TARGET_STATE_BYTES),
        "fixed_state_bytes_per_pipeline": report["memory"].get("fixed_state_bytes"),
        "mean_chain": nd.get("mean_chain"),
    }


# ------------------------------------------------------------------- output


def render(report: dict[str, Any]) -> None:
    """Rich tables on the terminal."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console(width=max(Console().width, 150))
    meta = report["meta"]
    console.print(
        f"[bold]streamguard bench[/bold] {meta['date']} on {meta['cpu']} ({meta['cores']} cores, "
        f"load {meta['load_average_start'][0]:.1f}); {meta['versions'].get('blas', '')}"
    )
    sg = report["sgemm"]
    console.print(
        "sgemm (detector shapes, best thread count): "
        + ", ".join(f"d={d}: {g:.0f} GFLOP/s" for d, g in sg["gflops_by_dim"].items())
    )
    table = Table(title="whole detector (replay_table, codebook given)")
    for col in ("D", "backend", "threads", "events/s", "vs numpy", "BLAS limit", "share", "p50 batch", "p99 batch", "alerts", "= ref"):
        table.add_column(col, justify="right")
    base = {r["dim"]: r["events_per_second"] for r in report["throughput"] if r["backend"] == "numpy"}
    for r in report["throughput"]:
        ref = base.get(r["dim"])
        table.add_row(
            str(r["dim"]),
            r["backend"],
            str(r["threads"] or ""),
            f"{r['events_per_second']:,.0f}",
            f"{r['events_per_second'] / ref:.1f}x" if ref else "",
            f"{r['blas_limit_events_per_second']:,.0f}",
            f"{r['share_of_blas_limit']:.0%}",
            f"{r['p50_batch_seconds'] * 1e3:.1f} ms" if r["p50_batch_seconds"] is not None else "",
            f"{r['p99_batch_seconds'] * 1e3:.1f} ms" if r["p99_batch_seconds"] is not None else "",
            str(r["alerts"]),
            {True: "yes", False: "NO", None: ""}[r["alerts_match_reference"]],
        )
    console.print(table)
    for r in report["throughput"]:
        if "share_of_own_blas_limit" in r:
            console.print(
                f"  d={r['dim']} {r['backend']}: {r['cells_without_second_gemm']:.1%} of cells without the second GEMM; "
                f"{r['share_of_own_blas_limit']:.0%} of the limit of its own GEMMs ({r['blas_limit_own_gemms_events_per_second']:,.0f} events/s)"
            )
    nd = report["near_duplicate"]
    if nd:
        table = Table(
            title=f"near-duplicate job: same account, last W={nd['window']:,}, cos >= {nd['dup_cosine']} "
            f"(d={nd['dim']}, {nd['queries']:,} queries, {nd['positives']:,} positives; radius {nd['radius']}/{nd['bits']})"
        )
        for col in ("approach", "threads", "queries/s", "scan speed-up", "recall", "precision"):
            table.add_column(col, justify="right")
        scan = next((a for a in nd["approaches"] if a["name"].startswith("streamguard within")), None)
        for a in nd["approaches"]:
            if "skipped" in a:
                table.add_row(a["name"], "", "skipped", "", "", "")
                continue
            table.add_row(
                a["name"],
                str(a.get("threads") or ""),
                f"{a['queries_per_second']:,.0f}",
                f"{scan['queries_per_second'] / a['queries_per_second']:,.0f}x" if scan else "",
                f"{a['recall']:.4f}" if a.get("recall") is not None else "",
                f"{a['precision']:.4f}" if a.get("precision") is not None else "",
            )
        console.print(table)
        chain = nd["chain_percentiles"]
        console.print(
            f"chain walked per query (the account's requests in the window): mean {nd['mean_chain']:,.0f}, "
            f"p50 {chain['50']:,.0f}, p99 {chain['99']:,.0f}, max {chain['100']:,.0f}"
        )
        console.print(
            f"smallest radius reaching recall {TARGET_RECALL} (configured {nd['radius']}): whole window "
            f"{nd['radius_for_target_recall']['window']}; history, a per-account ring of R: "
            + ", ".join(f"R={k}: {v}" for k, v in nd["radius_for_target_recall"].items() if k != "window")
            + " (recall cap of an exact check over the ring: "
            + ", ".join(f"R={k}: {v:.4f}" for k, v in nd["ring_cap"].items() if v is not None)
            + ")"
        )
    churn = report["churn"]
    mem = report["memory"]
    console.print(
        f"state per active account: {mem['state_bytes_per_account']} bytes, plus per pipeline "
        f"{mem['fixed_state_bytes'] / 2**20:.1f} MiB fixed ({', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in mem['fixed_state_parts'].items())}); "
        f"peak RSS {mem['peak_rss_bytes'] / 2**20:,.0f} MiB; "
        f"churn: {churn['accounts_seen']:,} accounts seen, max {churn['max_active_accounts']:,} active, "
        f"{churn['slot_capacity']:,} slots ({churn['state_bytes_at_capacity'] / 2**20:.1f} MiB)"
    )
    t = report["targets"]
    console.print(
        f"targets at d={t['dim']}: cpu {t['cpu_events_per_second'] or 0:,.0f} ev/s (>= {TARGET_EVENTS_PER_SECOND:,}: "
        f"{t['cpu_events_per_second_ok']}), recall {t['near_duplicate_recall']} (>= {TARGET_RECALL}: {t['near_duplicate_recall_ok']}), "
        f"scan vs IndexBinaryFlat {t['scan_vs_binary_flat'] or 0:,.0f}x, state {t['state_bytes_per_account']} B (<= 8 KiB: {t['state_ok']})"
    )


def plot(report: dict[str, Any], path: Path) -> None:
    """Four panels: throughput vs the BLAS limit, near-duplicate rates, recall per radius, churn."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0, 0]
    rows = report["throughput"]
    dims = sorted({r["dim"] for r in rows})
    labels = list(dict.fromkeys(r["backend"] for r in rows))
    width = 0.8 / max(1, len(labels))
    for k, label in enumerate(labels):
        values = [next((r["events_per_second"] for r in rows if r["dim"] == d and r["backend"] == label), 0.0) for d in dims]
        ax.bar(np.arange(len(dims)) + k * width, values, width, label=label)
    for i, d in enumerate(dims):
        limit = next(r["blas_limit_events_per_second"] for r in rows if r["dim"] == d)
        ax.hlines(limit, i - width / 2, i + 0.8 - width / 2, colors="k", linestyles="--")
    ax.set_xticks(np.arange(len(dims)) + 0.4 - width / 2, [f"D={d}" for d in dims])
    ax.set_ylabel("events/s")
    ax.set_title("whole detector (dashed: BLAS-bound limit)")
    ax.legend(fontsize=8)
    nd = report["near_duplicate"]
    ax = axes[0, 1]
    if nd:
        shown = [a for a in nd["approaches"] if "queries_per_second" in a]
        ax.barh([a["name"] for a in shown], [a["queries_per_second"] for a in shown], color="tab:blue")
        ax.set_xscale("log")
        for y, a in enumerate(shown):
            ax.text(a["queries_per_second"], y, f" recall {a.get('recall', 0):.3f}", va="center", fontsize=8)
        ax.set_xlabel("queries/s (log)")
        ax.set_title(f"near-duplicate job, W={nd['window']:,}, d={nd['dim']}")
        ax = axes[1, 0]
        sweep = nd["radius_sweep"]
        radii = [s["radius"] for s in sweep]
        ax.plot(radii, [s["recall_window"] for s in sweep], "s-", ms=3, label="whole window (streamguard, IndexBinaryFlat)")
        for size in nd["ring_sizes"]:
            ax.plot(radii, [s[f"recall_ring_{size}"] for s in sweep], "o:", ms=3, alpha=0.6, label=f"history: per-account ring of {size}")
        ax.plot(radii, [s["false_positive_rate_window"] for s in sweep], "^--", ms=3, label="false positives, whole window")
        ax.axhline(TARGET_RECALL, color="k", linestyle=":")
        ax.axvline(nd["radius"], color="tab:red", linestyle="--", label=f"configured radius {nd['radius']}")
        ax.set_xlabel(f"Hamming radius (of {nd['bits']} bits)")
        ax.set_ylabel("share of exact-cosine positives found")
        ax.set_title(f"recall vs radius (cos >= {nd['dup_cosine']})")
        ax.legend(fontsize=8)
    ax = axes[1, 1]
    churn = report["churn"]
    series = churn["series"]
    hours = [s["hour"] for s in series]
    ax.plot(hours, [s["seen"] for s in series], label="accounts seen")
    ax.plot(hours, [s["active"] for s in series], label="active accounts")
    ax.plot(hours, [s["capacity"] for s in series], label="slots allocated")
    ax.set_xlabel("event time (hours)")
    ax.set_title(f"account churn (idle eviction after {churn['idle_evict_hours']} h)")
    ax.legend(fontsize=8)
    fig.suptitle(f"streamguard bench {report['meta']['date']} - {report['meta']['cpu']}, {report['meta']['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """``python -m streamguard.bench [flags]``: the same as ``streamguard bench``."""
    parser = argparse.ArgumentParser(prog="streamguard")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
