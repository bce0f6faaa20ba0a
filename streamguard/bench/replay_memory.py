"""``bench --replay-rows``: the peak RSS of ``streamguard replay`` against the size of the file."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from streamguard.bench.common import EVENTS_PER_SCALE, _backend_names, _cpu_model, _json_default, _log, _max_threads
from streamguard.bench.end_to_end import _REPLAYED, replay_argv, run_measured


_WHOLE_REPLAY = """
import sys
from streamguard.backends import create_backend
from streamguard.config import load_settings
from streamguard.schema import read_request_file
from streamguard.sinks.alert_file import AlertFile
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.replay import replay_table
settings = load_settings()
backend = create_backend(sys.argv[3], settings.near_duplicate.bands, settings.near_duplicate.table_bits)
sink = AlertFile(sys.argv[2], fresh=True)
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


