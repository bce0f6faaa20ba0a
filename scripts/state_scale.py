"""State at scale: many distinct small accounts through one partition's pipeline and its checkpoints.

Drives the path ``streamguard run`` takes for one partition: ``Pipeline.process`` on micro-batches,
and every ``--checkpoint-interval`` seconds (wall time) the service's checkpoint round: the state
record taken on the loop (``Pipeline.checkpoint_state``, full every ``state.compact_every``
checkpoints or when the changes outweigh the last full one) and written by a background thread
through ``CheckpointStore.save`` (pickle, fsync, rename, manifest). No broker: decoding and Kafka are
left out (measured elsewhere: ``scripts/kafka_throughput.py``).

Traffic: ``--accounts`` distinct accounts of 1 or 2 requests each (half of them send a second request
a few thousand requests later), embeddings of dimension ``--dim`` around 300 topics, event time over
``--hours``. Reports peak RSS, events/s, checkpoint time (on the loop and on the writer thread) as a
share of the run, checkpoint sizes, accounts held and evicted, and bytes per account.

    .venv/bin/python scripts/state_scale.py --accounts 1000000 --dim 64
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from streamguard.backends import create_backend
from streamguard.config import load_settings
from streamguard.schema import RequestBatch
from streamguard.stream.checkpoint import Checkpoint, CheckpointStore
from streamguard.stream.pipeline import Pipeline


def rss_mb() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def traffic(accounts: int, dim: int, hours: float, batch: int, seed: int = 0):
    """Micro-batches of (account index, request) in event-time order; generated as they are needed."""
    rng = np.random.default_rng(seed)
    topics = rng.standard_normal((300, dim)).astype(np.float32)
    second = rng.random(accounts) < 0.5
    # Request k of the stream: new accounts in order, each second request 2,000-20,000 requests later.
    first_pos = np.arange(accounts, dtype=np.float64) * (1 + second.mean())
    later = first_pos[second] + rng.uniform(2_000, 20_000, int(second.sum()))
    order_acct = np.concatenate([np.arange(accounts), np.flatnonzero(second)])
    pos = np.concatenate([first_pos, later])
    order = np.argsort(pos, kind="stable")
    acct = order_acct[order]
    n = acct.size
    t0 = 1_767_225_600_000
    ts = t0 + (np.arange(n) * (hours * 3_600_000 / n)).astype(np.int64)
    topic_of = rng.integers(0, topics.shape[0], accounts)
    for start in range(0, n, batch):
        a = acct[start : start + batch]
        emb = topics[topic_of[a]] + 0.6 * rng.standard_normal((a.size, dim)).astype(np.float32)
        emb /= np.linalg.norm(emb, axis=1, keepdims=True)
        yield RequestBatch(
            request_ids=np.array([f"req-{start + i:010d}" for i in range(a.size)], dtype=object),
            ts=ts[start : start + a.size],
            account_ids=np.array([f"acct-{x:08d}" for x in a.tolist()], dtype=object),
            org_ids=np.full(a.size, None, dtype=object),
            embeddings=emb.astype(np.float32),
        )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--accounts", type=int, default=1_000_000)
    ap.add_argument("--dim", type=int, default=64)
    ap.add_argument("--hours", type=float, default=72.0)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--checkpoint-interval", type=float, default=10.0)
    ap.add_argument("--state-dir", default=None, help="default: a temporary directory, removed at the end")
    ap.add_argument("--max-accounts", type=int, default=None, help="state.max_accounts (default: from state.memory_mb)")
    ap.add_argument("--json", default=None, help="write the report here too")
    args = ap.parse_args()

    overrides = {} if args.max_accounts is None else {"state": {"max_accounts": args.max_accounts}}
    settings = load_settings(environ={}, overrides=overrides)
    backend = create_backend(args.backend, settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    pipeline = Pipeline(settings, backend)
    root = Path(args.state_dir) if args.state_dir else Path(tempfile.mkdtemp(prefix="state-scale-"))
    store = CheckpointStore(root, "requests")
    writer = ThreadPoolExecutor(max_workers=1)
    job = None
    chain = (0, 0, 0)
    last_id: str | None = None
    loop_ckpt = write_s = 0.0
    fulls = deltas = 0
    sizes: list[int] = []
    events = 0
    peak = 0.0
    started = time.perf_counter()
    next_ckpt = started + args.checkpoint_interval

    def write(cp: Checkpoint) -> tuple[Checkpoint | None, float]:
        t = time.perf_counter()
        saved = store.save(cp)
        return saved, time.perf_counter() - t

    def finish_job() -> None:
        nonlocal job, chain, last_id, write_s
        saved, seconds = job.result()
        job = None
        write_s += seconds
        assert saved is not None
        chain, last_id = (saved.base_bytes, saved.log_entries, saved.log_bytes), saved.checkpoint_id
        sizes.append(saved.log_bytes if saved.log_entries else saved.base_bytes)

    def checkpoint() -> None:
        nonlocal job, loop_ckpt, fulls, deltas
        t = time.perf_counter()
        if job is not None:
            finish_job()  # one round in flight at most, as in the service
        base, entries, log_bytes = chain
        full = last_id is None or entries >= settings.state.compact_every or log_bytes > base
        record = pipeline.checkpoint_state(full=full)
        fulls += record["full"]
        deltas += not record["full"]
        cp = Checkpoint("requests", 0, offset=events, snapshot=record, dim=args.dim, delta_of=None if record["full"] else last_id)
        job = writer.submit(write, cp)
        loop_ckpt += time.perf_counter() - t

    for batch in traffic(args.accounts, args.dim, args.hours, settings.batch.max_size):
        pipeline.process(batch)
        events += len(batch)
        now = time.perf_counter()
        if now >= next_ckpt:
            checkpoint()
            next_ckpt = time.perf_counter() + args.checkpoint_interval
            peak = max(peak, rss_mb())
    pipeline.finish()
    checkpoint()
    t = time.perf_counter()
    finish_job()
    loop_ckpt += time.perf_counter() - t
    total = time.perf_counter() - started
    peak = max(peak, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    t = time.perf_counter()
    loaded = store.load(0)
    load_s = time.perf_counter() - t
    assert loaded is not None and loaded.offset == events
    report = {
        "accounts": args.accounts,
        "events": events,
        "dim": args.dim,
        "backend": backend.name if hasattr(backend, "name") else type(backend).__name__,
        "seconds": round(total, 1),
        "events_per_s": round(events / total),
        "peak_rss_mb": round(peak),
        "checkpoint_loop_s": round(loop_ckpt, 2),
        "checkpoint_loop_share": round(loop_ckpt / total, 4),
        "checkpoint_writer_s": round(write_s, 2),
        "checkpoint_writer_share": round(write_s / total, 4),
        "checkpoints_full": fulls,
        "checkpoints_changes": deltas,
        "checkpoint_mb_median": round(float(np.median(sizes)) / 2**20, 1) if sizes else 0,
        "checkpoint_mb_max": round(max(sizes) / 2**20, 1) if sizes else 0,
        "restore_load_s": round(load_s, 2),
        "max_accounts": pipeline.accounts.max_accounts,
        "accounts_held": len(pipeline.accounts),
        "evicted": dict(pipeline.stats.evicted_by),
        "state_bytes_per_account": pipeline.state_bytes_per_account(),
        "memory_bytes_per_account": pipeline.memory_bytes_per_account(),
        "topics": pipeline.coverage.topics if pipeline.coverage is not None else None,
        "stage_seconds": {k: round(v, 1) for k, v in pipeline.stats.stage_seconds.items()},
    }
    writer.shutdown()
    if not args.state_dir:
        shutil.rmtree(root, ignore_errors=True)
    print(json.dumps(report, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
