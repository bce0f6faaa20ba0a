"""``streamguard run`` over a topic holding a simulated world and a million one-off accounts, killed -9 mid-stream.

Issue 15's acceptance at the service level (``scripts/state_scale.py`` measures one partition's pipeline
without a broker):

1. traffic: ``streamguard simulate --seed S --scale X --dim D`` (its distillers give alerts to compare)
   merged in event time with ``--filler`` accounts of 1-2 requests each (the traffic of
   ``state_scale.traffic``, spread over the same span);
2. the reference: ``replay_table(..., partitions=P)`` over the whole table with one codebook;
3. a Tansu broker on loopback, the table published as Arrow IPC records to a topic of P partitions;
4. one uninterrupted ``streamguard run`` (events/s from its own log, the time it spent in checkpoints,
   peak RSS of the process from ``/proc``), its alerts compared with the reference;
5. a second run, on fresh state, killed with SIGKILL ``--kill-after`` (fractions of the first run's
   wall time, each counted from that restart) and restarted each time until the topic is consumed;
   its alerts (topic) compared with the reference: nothing lost, nothing twice.

    .venv/bin/python scripts/run_at_scale.py --filler 1000000

Prints one JSON report; exit status 1 when either run's alerts differ from the reference.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parent))
from kafka_throughput import REPO, alerts_of_topic, start_broker  # noqa: E402
from state_scale import traffic as filler_batches  # noqa: E402


def filler_table(schema: pa.Schema, accounts: int, dim: int, t0: int, t1: int) -> pa.Table:
    """``accounts`` one-off accounts (1-2 requests each) over [t0, t1), with the simulated table's schema."""
    parts = list(filler_batches(accounts, dim, (t1 - t0) / 3_600_000, 65_536, seed=15))
    ids = np.concatenate([b.request_ids for b in parts])
    ts = np.concatenate([b.ts for b in parts])
    ts = t0 + (ts - ts.min())
    accts = np.concatenate([b.account_ids for b in parts])
    emb = np.concatenate([b.embeddings for b in parts]).astype(np.float32)
    flat = pa.array(emb.reshape(-1), type=pa.float32())
    return pa.table(
        {
            "request_id": pa.array([f"filler-{x}" for x in ids.tolist()], pa.string()),
            "ts": pa.array(ts, pa.timestamp("ms")),
            "account_id": pa.array([f"filler-{x}" for x in accts.tolist()], pa.string()),
            "org_id": pa.nulls(ids.size, pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(flat, dim),
        }
    ).cast(schema)


class Service:
    """One ``streamguard run`` subprocess, its log, and the peak RSS seen in ``/proc``."""

    def __init__(self, command: list[str], env: dict[str, str], log: Path) -> None:
        self.log_path = log
        self.proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
        self.peak_mb = 0.0

    def sample(self) -> None:
        try:
            with open(f"/proc/{self.proc.pid}/status") as fh:
                for line in fh:
                    if line.startswith("VmHWM:"):
                        self.peak_mb = max(self.peak_mb, int(line.split()[1]) / 1024)
        except OSError:  # the process has just exited: its last sample stands
            return

    def wait(self, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.sample()
            time.sleep(0.2)
        return self.proc.wait(max(deadline - time.monotonic(), 1.0))

    def run_for(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while self.proc.poll() is None and time.monotonic() < deadline:
            self.sample()
            time.sleep(0.1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--filler", type=int, default=1_000_000, help="one-off accounts added to the simulated world")
    ap.add_argument("--seed", type=int, default=3)
    ap.add_argument("--scale", type=float, default=0.25)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--partitions", type=int, default=1, help="state.memory_mb bounds each partition's accounts")
    ap.add_argument("--batch-rows", type=int, default=4096)
    ap.add_argument("--backend", default="cpu")
    ap.add_argument("--kill-after", default="0.3,0.3", help="SIGKILL the second run this share of the first's wall time after each start")
    args = ap.parse_args()

    from streamguard.backends import create_backend
    from streamguard.config import load_settings
    from streamguard.schema import validate_table
    from streamguard.sim import SimConfig, simulate
    from streamguard.sinks.alerts import MemoryAlertSink
    from streamguard.sinks.dead_letter import DeadLetterSink
    from streamguard.stream.kafka import ensure_topic, publish_table
    from streamguard.stream.pipeline import Pipeline
    from streamguard.stream.replay import event_time_order, replay_table

    work = Path(tempfile.mkdtemp(prefix="sg-run-at-scale-"))
    settings = load_settings(None)
    backend = create_backend(args.backend, settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    world = event_time_order(simulate(SimConfig(seed=args.seed, scale=args.scale, dim=args.dim)).table)
    ts = world.column("ts").cast(pa.int64()).to_numpy()
    table = world
    if args.filler:
        table = event_time_order(pa.concat_tables([world, filler_table(world.schema, args.filler, args.dim, int(ts.min()), int(ts.max()))]))
    warm, _ = validate_table(world.slice(0, settings.coverage.warmup), args.dim)
    codebook = Pipeline(settings, backend).fit_codebook(warm.take(np.arange(min(len(warm), settings.coverage.warmup))))
    codebook_path = work / "codebook.npz"
    codebook.save(codebook_path)

    sink = MemoryAlertSink()
    started = time.monotonic()
    replay_table(table, settings, backend, sink, DeadLetterSink(), partitions=args.partitions, codebook=codebook)
    reference = sorted(json.dumps(a.to_dict(), sort_keys=True) for a in sink.alerts)
    report: dict = {"requests": table.num_rows, "accounts": len(set(table.column("account_id").to_pylist())),
                    "dim": args.dim, "partitions": args.partitions, "backend": backend.name,
                    "replay_seconds": round(time.monotonic() - started, 1), "reference_alerts": len(reference)}

    broker, bootstrap = start_broker(work / "broker.log")
    try:
        topic = "requests"
        ensure_topic(bootstrap, topic, args.partitions)
        publish_table(table, f"kafka://{bootstrap}/{topic}", fmt="arrow", batch_rows=args.batch_rows)
        env = {**os.environ, "STREAMGUARD_KAFKA_SESSION_TIMEOUT_MS": "6000", "STREAMGUARD_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
               "STREAMGUARD_HMAC_KEY": "run-at-scale"}

        def command(name: str) -> list[str]:
            return [sys.executable, "-m", "streamguard.service", "--log-level", "INFO", "run", "--bootstrap-servers", bootstrap,
                    "--topic", topic, "--group-id", f"g-{name}", "--alerts-topic", f"alerts-{name}",
                    "--state-dir", str(work / f"state-{name}"), "--codebook", str(codebook_path), "--backend", args.backend,
                    "--stop-after-idle", "5"]

        # 1. Uninterrupted.
        ensure_topic(bootstrap, "alerts-whole", args.partitions)
        started = time.monotonic()
        svc = Service(command("whole"), env, work / "whole.log")
        if svc.wait(3600) != 0:
            print(svc.log()[-4000:], file=sys.stderr)
            return 1
        report["run_wall_seconds"] = round(time.monotonic() - started, 1)
        duration = time.monotonic() - started
        log = svc.log()
        rate = re.search(r"run finished: (\d+) requests.*?([\d.]+) events/s", log)
        spent = re.search(r"time spent: (.*)", log)
        seconds = {k: float(v) for k, v in re.findall(r"(\w+) ([\d.]+) s", spent.group(1))} if spent else {}
        busy = sum(v for k, v in seconds.items() if k != "idle")
        whole = sorted(alerts_of_topic(bootstrap, "alerts-whole"))
        report.update({
            "run_events_per_s": float(rate.group(2)) if rate else None,
            "run_requests": int(rate.group(1)) if rate else None,
            "run_peak_rss_mb": round(svc.peak_mb),
            "run_seconds": {k: round(v, 2) for k, v in seconds.items()},
            "run_checkpoint_share": round(seconds.get("checkpoint", 0.0) / busy, 4) if busy else None,
            "run_alerts_identical_to_replay": whole == reference,
        })

        # 2. Killed -9 at the given fractions of the first run's wall time, restarted until done.
        ensure_topic(bootstrap, "alerts-killed", args.partitions)
        started = time.monotonic()
        kills = [float(x) for x in args.kill_after.split(",") if x]
        killed_at = []
        for i, fraction in enumerate(kills):
            svc = Service(command("killed"), env, work / f"killed-{i}.log")
            svc.run_for(fraction * duration)
            if svc.proc.poll() is not None:
                report["error"] = f"the run ended before kill {i + 1}"
                break
            svc.proc.kill()
            svc.proc.wait()
            killed_at.append(round(time.monotonic() - started, 1))
        svc = Service(command("killed"), env, work / "killed-final.log")
        if svc.wait(3600) != 0:
            print(svc.log()[-4000:], file=sys.stderr)
            return 1
        killed = sorted(alerts_of_topic(bootstrap, "alerts-killed"))
        report.update({"kills": len(killed_at), "killed_alerts": len(killed), "killed_alerts_identical_to_replay": killed == reference})
    finally:
        broker.kill()
        broker.wait()
        shutil.rmtree(work, ignore_errors=True)  # the broker's log and two partitions' checkpoints
    print(json.dumps(report, indent=1))
    return 0 if report.get("run_alerts_identical_to_replay") and report.get("killed_alerts_identical_to_replay") else 1


if __name__ == "__main__":
    sys.exit(main())
