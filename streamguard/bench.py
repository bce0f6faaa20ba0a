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
- ``end_to_end``: the ``streamguard replay`` command itself, in a process of
  its own, over a file (reading, validation, event-time order, codebook fit,
  detection, linking, alert output, interpreter start-up): events/s beside the
  detector-only figure of ``throughput`` on the same requests, its peak RSS,
  and the top costs of a cProfile run of the same command. On the simulator's
  traffic, and on every ``--traffic FILE`` (e.g. an independent world of
  ``../shared/worlds/independent_traffic.py``).
- ``memory``: peak RSS, state bytes per active account and the fixed state
  of a pipeline (the window, the cross-account tables); ``churn``: accounts
  that keep arriving and going idle, and how many stay active.

Output: a table on the terminal, ``bench.json`` and ``bench.png`` in ``--out``.

``--replay-rows N[,N...]`` runs a different job instead: it writes simulator
files of N requests in pieces (never all in memory) and measures the peak RSS
of ``streamguard replay`` on each, which must not grow with N
(``replay_memory.json``; ``--replay-whole`` also replays each file from
memory and checks that the alerts are identical).
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import datetime
import io
import json
import math
import os
import platform
import pstats
import re
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_OUT = "bench-out"
SECTIONS = ("meta", "sgemm", "flops", "throughput", "end_to_end", "near_duplicate", "memory", "churn", "targets")
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
    parser.add_argument(
        "--traffic",
        action="append",
        default=[],
        metavar="FILE",
        help="also time `streamguard replay` end to end (and the detector alone) on this request file (repeatable), "
        "e.g. python ../shared/worlds/independent_traffic.py w.parquet w.labels.json --seed 7001 --scale 0.1 --dim 384",
    )
    parser.add_argument(
        "--replay-rows",
        default=None,
        metavar="N[,N...]",
        help="instead of the other sections: write simulator files of N requests in pieces (at the first of --dims) "
        "and measure the peak RSS of `streamguard replay` on each (replay_memory.json in --out)",
    )
    parser.add_argument(
        "--replay-whole", action="store_true",
        help="with --replay-rows: also replay each file from memory (replay_table) and compare the alerts",
    )
    parser.add_argument(
        "--replay-dir", default=None, metavar="DIR",
        help="with --replay-rows: where the files are written (default: a temporary folder; each file is deleted after)",
    )
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


# ---------------------------------------------------------------- end to end

PROFILE_TOP = 10
_REPLAYED = re.compile(r"replayed (\d+) requests \((\d+) dead letters.*?in ([\d.]+) s, ([\d,]+|nan) events/s")


def _child_env() -> dict[str, str]:
    """This environment without STREAMGUARD_* settings, so that the command runs the defaults the bench measures."""
    return {k: v for k, v in os.environ.items() if not k.startswith("STREAMGUARD_") or k == "STREAMGUARD_EMBED_CACHE"}


def _vm_hwm_bytes(pid: int) -> int:
    """The peak resident set of a running process's own address space (Linux VmHWM; 0 if unknown)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def run_measured(argv: list[str], timeout: float | None = None) -> dict[str, Any]:
    """Run a command; its wall time, exit status, output and peak RSS.

    The peak is the child's VmHWM, read while it runs (every 20 ms, a high-water
    mark, so the last reading holds all but the last moments): wait4's ru_maxrss
    would also count this process's own resident set, which a child started by
    fork/vfork carries until its exec.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        begin = time.perf_counter()
        process = subprocess.Popen(argv, stdout=out, stderr=err, env=_child_env())
        deadline = None if timeout is None else begin + timeout
        peak = 0
        while process.poll() is None:
            peak = max(peak, _vm_hwm_bytes(process.pid))
            if deadline is not None and time.perf_counter() > deadline:
                process.kill()
                process.wait()
                break
            time.sleep(0.02)
        seconds = time.perf_counter() - begin
        out.seek(0)
        err.seek(0)
        return {
            "argv": argv,
            "seconds": seconds,
            "returncode": process.returncode,
            "peak_rss_bytes": peak,
            "stdout": out.read().decode(errors="replace"),
            "stderr": err.read().decode(errors="replace")[-4000:],
        }


def replay_argv(path: Path, alerts: Path, backend: str) -> list[str]:
    return [sys.executable, "-m", "streamguard", "replay", str(path), "--alerts", str(alerts), "--backend", backend]


def profile_replay(path: Path, alerts: Path, backend: str, top: int = PROFILE_TOP) -> dict[str, Any]:
    """cProfile of ``streamguard replay`` (in this process; imports and numba compilation already done).

    The functions are listed by cumulative time, leaving out those that enclose
    almost the whole run (the command, the replay loop: they would fill the top
    with one line each of "everything").
    """
    from streamguard.cli import main as cli_main  # noqa: PLC0415

    profiler = cProfile.Profile()
    with contextlib.redirect_stdout(io.StringIO()):
        begin = time.perf_counter()
        profiler.enable()
        status = cli_main(["replay", str(path), "--alerts", str(alerts), "--backend", backend])
        profiler.disable()
        seconds = time.perf_counter() - begin
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    # A caller that spends (nearly) all its time in one callee is a pass-through: listing both
    # would fill the top with one chain (feed -> process -> Pipeline.process -> ...). Keep the callee.
    wrappers = set()
    for key, (_, _, _, cumtime, callers) in entries.items():
        for caller in callers:
            if caller in entries and entries[caller][3] <= cumtime * 1.03:
                wrappers.add(caller)
    rows = []
    for key, (_, calls, tottime, cumtime, _) in entries.items():
        filename, line, name = key
        if "importlib" in filename or name in ("<built-in method builtins.exec>", "<built-in method builtins.__import__>"):
            continue  # modules the command imports on its first run in this process: start-up, timed apart
        rows.append(
            {
                "function": f"{_short_path(filename)}:{line}({name})" if line else name,
                "calls": int(calls),
                "tottime": float(tottime),
                "cumtime": float(cumtime),
                "wrapper": key in wrappers,
            }
        )
    rows.sort(key=lambda r: r["cumtime"], reverse=True)
    # The replay proper: the longest call that is not the command itself.
    run = next((r["cumtime"] for r in rows if r["function"].endswith("(replay_file)")), seconds)
    for r in rows:
        r["share"] = r["cumtime"] / max(run, 1e-9)
    return {
        "status": status,
        "seconds": seconds,
        "replay_seconds": run,
        "top": [r for r in rows if r["share"] < 0.95 and not r["wrapper"]][:top],
        "enclosing": [r["function"] for r in rows if r["share"] >= 0.95][:8],
        "note": f"top {top} functions by cumulative time of a profiled `replay` run (in the bench's process, so "
        "imports are not in it); 'share' is of replay_file's time; the functions holding >= 95% of it (the command, "
        "the replay loop) are listed under 'enclosing' instead, and a caller that spends >= 97% of its time in one "
        "callee is left out for that callee",
    }


def _short_path(filename: str) -> str:
    marker = f"{os.sep}streamguard{os.sep}"
    if marker in filename:
        return "streamguard/" + filename.rsplit(marker, 1)[1]
    parts = Path(filename).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else filename


def end_to_end(
    path: Path, label: str, backend: str, detector: dict[str, Any] | None, work: Path, profile: bool
) -> dict[str, Any]:
    """``streamguard replay`` over ``path`` in its own process, beside ``detector`` (a ``throughput`` row)."""
    alerts = work / f"e2e-{label}.alerts.jsonl"
    run = run_measured(replay_argv(path, alerts, backend))
    if run["returncode"] != 0:
        raise RuntimeError(f"streamguard replay {path} failed ({run['returncode']}): {run['stderr'][-800:]}")
    found = _REPLAYED.search(run["stdout"])
    requests, dead, seconds_inside = (int(found.group(1)), int(found.group(2)), float(found.group(3))) if found else (0, 0, float("nan"))
    events = requests - dead
    row: dict[str, Any] = {
        "traffic": label,
        "file": str(path),
        "file_bytes": path.stat().st_size,
        "backend": backend,
        "events": events,
        "wall_seconds": run["seconds"],
        "events_per_second": events / run["seconds"],
        "command_seconds": seconds_inside,
        "command_events_per_second": events / seconds_inside if seconds_inside > 0 else None,
        "startup_seconds": run["seconds"] - seconds_inside,
        "peak_rss_bytes": run["peak_rss_bytes"],
        "alerts": sum(1 for line in alerts.read_text().splitlines() if line.strip()),
        "detector_events_per_second": detector["events_per_second"] if detector else None,
        "detector_alerts": detector["alerts"] if detector else None,
        "note": "events/s: valid requests / wall time of the whole command (interpreter start, imports, reading, "
        "validation, event-time order, codebook fit, detection, linking, alert output); command_*: the span the "
        "command reports itself (from opening the file to the last alert); detector: replay_table over the same "
        "requests in memory with the codebook given",
    }
    if detector:
        row["share_of_detector"] = row["events_per_second"] / detector["events_per_second"]
    if profile:
        row["profile"] = profile_replay(path, work / f"e2e-{label}.profiled.jsonl", backend)
    return row


def write_request_file(table: Any, path: Path) -> Path:
    """Parquet as ``streamguard simulate`` writes it (zstd, dictionary-coded ids, row groups of 65,536)."""
    import pyarrow.parquet as pq  # noqa: PLC0415

    names = [n for n in ("account_id", "org_id") if n in table.schema.names]
    pq.write_table(table, path, compression="zstd", use_dictionary=names, row_group_size=65_536)
    return path


def traffic_file_rows(path: Path, settings: Any, backend: Any) -> tuple[dict[str, Any], int]:
    """The detector alone over a request file, in memory, codebook given; its numbers and dimension."""
    from streamguard.schema import infer_dim, read_request_file  # noqa: PLC0415

    table = read_request_file(path)
    dim = infer_dim(table)
    codebook = fit_codebook(ordered_batch(table, dim), settings, backend)
    numbers, _ = replay_run(table, settings, backend, codebook)
    return numbers, dim


# ------------------------------------------------------------ replay memory

_WHOLE_REPLAY = """
import sys
from streamguard.backends import create_backend
from streamguard.config import load_settings
from streamguard.schema import read_request_file
from streamguard.sinks.alerts import JsonLinesAlertSink
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.replay import replay_table
settings = load_settings()
backend = create_backend(sys.argv[3], settings.near_duplicate.bands, settings.near_duplicate.table_bits)
sink = JsonLinesAlertSink(sys.argv[2])
r = replay_table(read_request_file(sys.argv[1]), settings, backend, sink, DeadLetterSink())
sink.close()
print(f"replayed {r.requests} requests ({r.dead_letters} dead letters) in {r.seconds:.1f} s, {r.events_per_second:,.0f} events/s")
"""
"""The replay before issue 14, the whole file in memory: read_request_file + replay_table."""


def write_simulated_in_pieces(
    path: Path, rows: int, dim: int, seed: int, events_per_tick: int, tick_ms: int, piece_rows: int = 200_000
) -> dict[str, Any]:
    """A simulator file of ``rows`` requests written a piece at a time (one piece in memory).

    Each piece is one simulated world (seed ``seed + i``) over the period after the
    previous piece's, in its arrival order (mostly, not strictly, ordered), its ids
    prefixed ``p<i>-`` so that pieces share no account or request id.
    """
    import pyarrow.compute as pc  # noqa: PLC0415
    import pyarrow.parquet as pq  # noqa: PLC0415

    from streamguard.sim import SimConfig, simulate  # noqa: PLC0415

    begin = time.perf_counter()
    start_ms = SimConfig().start_ms
    written = piece = 0
    writer = None
    try:
        while written < rows:
            want = min(piece_rows, rows - written)
            days = max(want / events_per_tick * tick_ms / 86_400_000, 1.0 / 24)
            traffic = simulate(SimConfig(seed=seed + piece, scale=max(1.1 * want / EVENTS_PER_SCALE, 0.05), dim=dim, days=days, start_ms=start_ms))
            table = traffic.table.slice(0, want)
            for name in ("request_id", "account_id", "org_id"):
                index = table.schema.get_field_index(name)
                table = table.set_column(index, name, pc.binary_join_element_wise(f"p{piece}-", table.column(name), ""))
            if writer is None:
                writer = pq.ParquetWriter(path, table.schema, compression="zstd", use_dictionary=["account_id", "org_id"])
            writer.write_table(table, row_group_size=65_536)
            written += table.num_rows
            start_ms += int(round(days * 86_400_000))
            piece += 1
            _log(f"  {written:,} of {rows:,} requests written")
    finally:
        if writer is not None:
            writer.close()
    return {
        "rows": written,
        "pieces": piece,
        "file_bytes": path.stat().st_size,
        "embedding_bytes": written * dim * 4,
        "seconds": time.perf_counter() - begin,
    }


def replay_memory(args: argparse.Namespace, dim: int) -> int:
    """``bench --replay-rows N[,N...]``: the peak RSS of ``streamguard replay`` against the size of the file."""
    from streamguard.config import Settings  # noqa: PLC0415

    sizes = [int(n.replace("_", "")) for n in str(args.replay_rows).split(",") if n.strip()]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    tick_ms = int(getattr(settings.scoring, "tick_ms", 300_000))
    names, _ = _backend_names(args.backends)
    backend = next((n for n in ("cpu", "cuda", "numpy") if n in names), "numpy")
    report: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": _max_threads(),
        "load_average_start": list(os.getloadavg()),
        "dim": dim,
        "backend": backend,
        "settings": {"batch.max_size": settings.batch.max_size, **{f"replay.{k}": v for k, v in vars(settings.replay).items()}},
        "runs": [],
        "note": "peak_rss_bytes: the replay process's own peak resident set (VmHWM), interpreter and libraries "
        "included; whole: read_request_file + replay_table (the replay before streaming), same settings and backend",
    }
    work = Path(args.replay_dir) if args.replay_dir else Path(tempfile.mkdtemp(prefix="streamguard-replay-"))
    work.mkdir(parents=True, exist_ok=True)
    for rows in sizes:
        path = work / f"replay-{rows}-d{dim}.parquet"
        _log(f"writing {rows:,} simulated requests at d={dim} to {path}")
        row: dict[str, Any] = {"requested_rows": rows, **write_simulated_in_pieces(path, rows, dim, args.seed, args.events_per_tick, tick_ms)}
        _log(f"streamguard replay {path.name} on {backend}")
        streamed = run_measured(replay_argv(path, work / "streamed.jsonl", backend))
        row["streamed"] = _replay_numbers(streamed, row["rows"])
        if args.replay_whole:
            _log(f"the same file replayed whole from memory on {backend}")
            whole = run_measured([sys.executable, "-c", _WHOLE_REPLAY, str(path), str(work / "whole.jsonl"), backend])
            row["whole"] = _replay_numbers(whole, row["rows"])
            if streamed["returncode"] == 0 and whole["returncode"] == 0:
                a, b = (work / "streamed.jsonl").read_bytes(), (work / "whole.jsonl").read_bytes()
                row["alerts_identical"] = a == b
        report["runs"].append(row)
        if not args.replay_dir:
            path.unlink()
        _log(f"  {row}")
    report["load_average_end"] = list(os.getloadavg())
    target = out / "replay_memory.json"
    target.write_text(json.dumps(report, indent=2, default=_json_default))
    _render_replay_memory(report)
    print(f"wrote {target}")
    return 0 if all(r["streamed"]["returncode"] == 0 for r in report["runs"]) else 1


def _replay_numbers(run: dict[str, Any], rows: int) -> dict[str, Any]:
    found = _REPLAYED.search(run["stdout"])
    return {
        "returncode": run["returncode"],
        "peak_rss_bytes": run["peak_rss_bytes"],
        "wall_seconds": run["seconds"],
        "events_per_second": rows / run["seconds"],
        "output": found.group(0) if found else (run["stdout"] + run["stderr"])[-600:],
    }


def _render_replay_memory(report: dict[str, Any]) -> None:
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    table = Table(title=f"streamguard replay: peak RSS against file size (d={report['dim']}, {report['backend']}, "
                  f"reorder_rows {report['settings']['replay.reorder_rows']:,}, read_rows {report['settings']['replay.read_rows']:,})")
    for col in ("requests", "file", "embeddings", "streamed RSS", "streamed ev/s", "whole RSS", "whole ev/s", "alerts identical"):
        table.add_column(col, justify="right")
    for r in report["runs"]:
        whole = r.get("whole")
        table.add_row(
            f"{r['rows']:,}",
            f"{r['file_bytes'] / 2**30:.2f} GiB",
            f"{r['embedding_bytes'] / 2**30:.2f} GiB",
            f"{r['streamed']['peak_rss_bytes'] / 2**30:.2f} GiB",
            f"{r['streamed']['events_per_second']:,.0f}",
            f"{whole['peak_rss_bytes'] / 2**30:.2f} GiB" if whole else "",
            f"{whole['events_per_second']:,.0f}" if whole else "",
            {True: "yes", False: "NO", None: ""}[r.get("alerts_identical")],
        )
    Console(width=150).print(table)


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
    if getattr(args, "replay_rows", None):
        return replay_memory(args, dims[0])
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
    report["end_to_end"] = []
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
        if dim == dims[0]:
            chosen = next((n for n in ("cpu", "cuda", "numpy") if n in backends), None)
            if chosen is not None:
                path = write_request_file(table, out / f"traffic-d{dim}.parquet")
                detector = next(r for r in report["throughput"] if r["dim"] == dim and r["backend"] == chosen)
                _log(f"d={dim}: `streamguard replay` end to end on {chosen} ({path})")
                report["end_to_end"].append(end_to_end(path, f"simulator d={dim}", chosen, detector, out, profile=True))
        if near_dup is None:
            _log(f"d={dim}: near-duplicate job, W={window}, {queries} queries")
            scan_backend = backends.get("cpu") or backends.get("cuda") or backends["numpy"]
            near_dup = near_duplicate_bench(batch, codebook, settings, scan_backend, window, queries)
        del table, batch
    for traffic in getattr(args, "traffic", None) or []:
        path = Path(traffic)
        chosen = next((n for n in ("cpu", "cuda", "numpy") if n in names), "numpy")
        backend = _make_backend(chosen, settings)
        _log(f"{path.name}: the detector alone on {chosen}")
        detector, dim = traffic_file_rows(path, settings, backend)
        detector.update({"dim": dim, "backend": chosen, "traffic": str(path)})
        _log(f"{path.name}: `streamguard replay` end to end on {chosen}")
        report["end_to_end"].append(end_to_end(path, path.stem, chosen, detector, out, profile=True))
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
    flops = report["flops"]
    console.print(
        "  BLAS limit: this machine's sgemm rate at the detector's shapes (above) / the reference's GEMM work per "
        "event (" + ", ".join(f"d={d}: {f['gemm'] / 1e6:.2f} MFLOP" for d, f in flops.items()) + ": the signature "
        "projection and two cell GEMMs), the events/s of a detector that did nothing but those GEMMs at full speed. "
        "share = events/s / BLAS limit: how close the whole detector comes to that bound. Over 100% means less GEMM "
        "work than the reference's count (the cpu backend replaces the second cell GEMM; its share of the limit of "
        "its own GEMMs is below), or an sgemm sample slowed by other load."
    )
    for r in report["throughput"]:
        if "share_of_own_blas_limit" in r:
            console.print(
                f"  d={r['dim']} {r['backend']}: {r['cells_without_second_gemm']:.1%} of cells without the second GEMM; "
                f"{r['share_of_own_blas_limit']:.0%} of the limit of its own GEMMs ({r['blas_limit_own_gemms_events_per_second']:,.0f} events/s)"
            )
    _render_end_to_end(console, report.get("end_to_end") or [])
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
    met = {True: "met", False: "NOT met"}
    recall = t["near_duplicate_recall"]
    console.print(
        f"targets (the project's acceptance bars, at d={t['dim']}"
        + ("; --quick: small samples, indicative only" if meta.get("quick") else "")
        + "):\n"
        f"  throughput: the whole detector on the cpu backend (codebook given, 4,096 events per scoring tick) should "
        f"replay >= {TARGET_EVENTS_PER_SECOND:,} events/s; measured {t['cpu_events_per_second'] or 0:,.0f}: "
        f"{met[t['cpu_events_per_second_ok']]}"
        + (f" ({t['cpu_events_per_second'] / TARGET_EVENTS_PER_SECOND:.0%} of the target)" if t["cpu_events_per_second"] else " (no cpu run)")
        + "\n"
        f"  near-duplicate recall: the within-account scan should find >= {TARGET_RECALL} of the exact-cosine "
        f"near-duplicates of the job above; measured {'-' if recall is None else f'{recall:.4f}'}: "
        f"{met[t['near_duplicate_recall_ok']]} (scan {t['scan_vs_binary_flat'] or 0:,.0f}x the queries/s of faiss IndexBinaryFlat)\n"
        f"  state: one active account should cost <= {TARGET_STATE_BYTES // 1024} KiB; measured "
        f"{t['state_bytes_per_account']} B: {met[t['state_ok']]}"
    )


def _render_end_to_end(console: Any, rows: list[dict[str, Any]]) -> None:
    """The `replay` command end to end beside the detector alone, and its profile's top costs."""
    from rich.table import Table  # noqa: PLC0415

    if not rows:
        return
    table = Table(title="`streamguard replay` end to end (own process: start-up, read, validate, order, codebook fit, detect, link, write)")
    for col in ("traffic", "backend", "events", "file", "wall", "start-up", "end-to-end ev/s", "detector ev/s", "share", "peak RSS", "alerts"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["traffic"],
            r["backend"],
            f"{r['events']:,}",
            f"{r['file_bytes'] / 2**20:,.0f} MiB",
            f"{r['wall_seconds']:.1f} s",
            f"{r['startup_seconds']:.1f} s",
            f"{r['events_per_second']:,.0f}",
            f"{r['detector_events_per_second']:,.0f}" if r.get("detector_events_per_second") else "",
            f"{r['share_of_detector']:.0%}" if r.get("share_of_detector") else "",
            f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB",
            str(r["alerts"]),
        )
    console.print(table)
    console.print(
        "  end-to-end ev/s = valid requests / wall time of the whole command; detector ev/s = the detector alone over "
        "the same requests in memory, codebook given (the throughput table); share = end-to-end / detector."
    )
    for r in rows:
        profile = r.get("profile")
        if not profile:
            continue
        console.print(
            f"  top costs of `replay` on {r['traffic']} (cProfile, cumulative, of {profile['replay_seconds']:.1f} s in replay_file; "
            f"enclosing: {', '.join(profile['enclosing'][:3])}):"
        )
        for p in profile["top"]:
            console.print(f"    {p['cumtime']:7.2f} s {p['share']:5.0%}  {p['calls']:>8,} calls  {p['function']}")


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
