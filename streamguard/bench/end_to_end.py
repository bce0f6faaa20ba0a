"""``streamguard replay`` in a process of its own: wall time, peak RSS, beside the detector alone."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from streamguard.bench.profiling import profile_replay
from streamguard.bench.throughput import fit_codebook, ordered_batch, replay_run


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
    row.update(faiss_job_row(path))
    if "faiss_job_events_per_second" in row:
        row["replay_over_faiss_job"] = row["events_per_second"] / row["faiss_job_events_per_second"]
    if profile:
        row["profile"] = profile_replay(path, work / f"e2e-{label}.profiled.jsonl", backend)
    return row


def faiss_job_row(path: Path) -> dict[str, Any]:
    """Issue 14's baseline, a plain faiss near-duplicate job over the same file (``bench/faiss_job.py``), in
    its own process right after ``replay``: its events/s by wall time and replay's multiple of it."""
    import importlib.util  # noqa: PLC0415

    if importlib.util.find_spec("faiss") is None:
        return {"faiss_job": "faiss is not installed (the bench extra)"}
    run = run_measured([sys.executable, "-m", "streamguard.bench.faiss_job", str(path)])
    if run["returncode"] != 0:
        return {"faiss_job": f"failed ({run['returncode']}): {run['stderr'][-400:]}"}
    job = json.loads(run["stdout"].strip().splitlines()[-1])
    rate = job["requests"] / run["seconds"]
    return {
        "faiss_job_events_per_second": rate,
        "faiss_job_near_duplicates": job["near_duplicates"],
        "faiss_job_peak_rss_bytes": run["peak_rss_bytes"],
    }


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

