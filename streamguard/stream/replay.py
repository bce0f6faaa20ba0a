"""Replay: the whole detector over a table of requests, in event-time order.

Rows are sorted by event time, cut into source batches, validated (bad rows to
the dead-letter sink), sharded over partitions exactly as Kafka's default
partitioner shards account keys, and fed to one :class:`Pipeline` per
partition; rows a partition turns away by event time go to the dead-letter
sink too. With one partition this is the plain detector; with N it reproduces
``run`` on a topic of N partitions, where each replica only knows its own
partitions' accounts.
"""

from __future__ import annotations

import bisect
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamguard.backends.base import Backend
from streamguard.config import Settings
from streamguard.detectors.codebook import Codebook
from streamguard.schema import AlertRecord, RequestBatch, infer_dim, validate_table
from streamguard.sinks.alerts import AlertSink
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.partitioner import partition_for
from streamguard.stream.pipeline import Pipeline
from streamguard.stream.warmup import SharedWarmup


@dataclass
class ReplayResult:
    requests: int = 0
    valid: int = 0
    dead_letters: int = 0
    alerts: int = 0
    seconds: float = 0.0
    pipelines: list[Pipeline] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.valid / self.seconds if self.seconds > 0 else float("nan")


def event_time_order(table: pa.Table) -> pa.Table:
    """Rows sorted by event time (stable; rows without a time last, for the dead-letter sink)."""
    ts = table.column("ts")
    if pa.types.is_timestamp(ts.type):
        ts = pc.cast(ts, pa.int64())
    keys = ts.to_numpy(zero_copy_only=False)
    if keys.dtype.kind in "iu" and ts.null_count == 0 and (keys.size < 2 or bool(np.all(keys[1:] >= keys[:-1]))):
        return table  # already in event-time order: no copy
    keys = np.where(np.isnan(keys.astype(float)), np.inf, keys.astype(float)) if keys.dtype.kind == "O" or keys.dtype.kind == "f" else keys
    order = np.argsort(keys, kind="stable")
    return table.take(pa.array(order))


class PartitionRouter:
    """Account -> partition, cached (the hash is Python and accounts repeat)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[str, int] = {}

    def __call__(self, account_ids: np.ndarray) -> np.ndarray:
        if self.partitions == 1:
            return np.zeros(len(account_ids), dtype=np.int64)
        cache = self._cache
        out = np.empty(len(account_ids), dtype=np.int64)
        for i, account in enumerate(account_ids):
            p = cache.get(account)
            if p is None:
                p = cache[account] = partition_for(account, self.partitions)
            out[i] = p
        return out


def replay_table(
    table: pa.Table,
    settings: Settings,
    backend: Backend,
    alert_sink: AlertSink,
    dead_letters: DeadLetterSink,
    partitions: int = 1,
    codebook: Codebook | None = None,
    progress: Callable[[ReplayResult, list[AlertRecord]], None] | None = None,
    metrics: Any = None,
    pace: float | None = None,
    alert_hash: Callable[[str], str] | None = None,
    kernel_timer: Any = None,
) -> ReplayResult:
    """Run the detector over ``table`` (request records); alerts go to ``alert_sink``.

    The codebook, unless given, is fitted once on the warm-up the partitions
    pool (:class:`~streamguard.stream.warmup.SharedWarmup`, the rule ``run``
    follows on a topic of ``partitions`` partitions) and shared by every
    partition, as a deployment shares one codebook artifact between replicas.

    Operations hooks (all optional; none changes which alerts are raised):

    metrics : a :class:`streamguard.metrics.StreamguardMetrics`, fed the same
        series as ``run`` feeds it (partition label ``none`` with one
        partition); the alert delay runs from the wall time the triggering
        row was read, since a replay does not run at the pace of its event times
    pace : read at most this many rows per second of wall time (a live-looking
        stream for dashboards and demos); None reads as fast as possible
    alert_hash : keyed hash put into each alert's ``evidence["account_hash"]``
    kernel_timer : a :class:`streamguard.metrics.KernelTimer`, drained after each batch
    """
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    if pace is not None and not pace > 0:
        raise ValueError("pace must be > 0 rows per second")
    started = time.perf_counter()
    result = ReplayResult()
    dim = infer_dim(table)
    table = event_time_order(table)
    route = PartitionRouter(partitions)
    rows = settings.batch.max_size
    pipelines = [Pipeline(settings, backend, codebook) for _ in range(partitions)]
    shared = SharedWarmup(settings.coverage.warmup, partitions) if codebook is None else None
    if shared is not None:
        for p, pipeline in enumerate(pipelines):
            pipeline.join_warmup(shared, p)

    # Wall time (epoch ms) at which each source chunk was read, by the chunk's latest event time.
    arrival_ts: list[int] = []
    arrival_wall: list[float] = []

    def arrival_ms(ts: int) -> float:
        i = min(bisect.bisect_left(arrival_ts, ts), len(arrival_ts) - 1)
        return arrival_wall[i] if i >= 0 else time.time() * 1000.0

    def emit(alerts: list[AlertRecord]) -> None:
        if alerts:
            alerts.sort(key=lambda a: a.ts)
            if alert_hash is not None:
                from streamguard.metrics import with_account_hash  # noqa: PLC0415

                alerts = [with_account_hash(a, alert_hash) for a in alerts]
            t0 = time.perf_counter()
            alert_sink.write(alerts)
            result.alerts += len(alerts)
            if metrics is not None:
                metrics.stage("sink", time.perf_counter() - t0)
                metrics.observe_alerts(alerts, now_ms=time.time() * 1000.0, arrival_ms=arrival_ms)
        if progress is not None:
            progress(result, alerts)

    def turned_away(pipeline: Pipeline) -> None:
        """Dead-letter the rows the pipeline's last call rejected by event time."""
        letters = pipeline.rejected.dead_letters("row")
        if letters:
            dead_letters.write(letters)
            result.dead_letters += len(letters)
            result.valid -= len(letters)
            if metrics is not None:
                for letter in letters:
                    metrics.bad_records(letter.reason)

    def process(pipeline: Pipeline, batch: RequestBatch, partition: int | None) -> list[AlertRecord]:
        if metrics is None:
            alerts = pipeline.process(batch)
            turned_away(pipeline)
            return alerts
        before = dict(pipeline.stats.stage_seconds)
        held = pipeline.scorer.held_back
        t0 = time.perf_counter()
        alerts = pipeline.process(batch)
        turned_away(pipeline)
        metrics.batch(time.perf_counter() - t0, len(batch))
        metrics.held_back(pipeline.scorer.held_back - held)
        metrics.requests(len(batch), partition)
        for name, total in pipeline.stats.stage_seconds.items():
            if total > before.get(name, 0.0):
                metrics.stage(name, total - before.get(name, 0.0))
        metrics.observe_scores(pipeline, batch.account_ids)
        return alerts

    def catch_up() -> list[AlertRecord]:
        """Partitions still waiting start once the shared codebook exists (another one completed the warm-up)."""
        if shared is None or shared.codebook is None:
            return []
        return [alert for pipeline in pipelines if not pipeline.ready for alert in pipeline.catch_up()]

    def feed(batch: RequestBatch) -> None:
        alerts: list[AlertRecord] = []
        if len(pipelines) == 1:
            alerts = process(pipelines[0], batch, None)
        else:
            parts = route(batch.account_ids)
            for p, pipeline in enumerate(pipelines):
                index = np.flatnonzero(parts == p)
                if index.size:
                    alerts.extend(process(pipeline, batch.take(index), p))
        alerts.extend(catch_up())
        if metrics is not None:
            if kernel_timer is not None:
                kernel_timer.drain()
            metrics.observe_accounts(pipelines)
            metrics.last_progress(time.time())
        emit(alerts)

    for start in range(0, table.num_rows, rows):
        if pace is not None:
            ahead = started + start / pace - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        chunk = table.slice(start, rows)
        t0 = time.perf_counter()
        batch, dead = validate_table(chunk, dim, source="row", row_offset=start)
        if metrics is not None:
            metrics.stage("decode", time.perf_counter() - t0)
            for record in dead:
                metrics.bad_records(record.reason)
            if len(batch):
                latest = int(batch.ts.max())
                if not arrival_ts or latest > arrival_ts[-1]:
                    arrival_ts.append(latest)
                    arrival_wall.append(time.time() * 1000.0)
        result.requests += chunk.num_rows
        result.valid += len(batch)
        if dead:
            dead_letters.write(dead)
            result.dead_letters += len(dead)
        feed(batch)

    for pipeline in pipelines:
        alerts = pipeline.finish()
        turned_away(pipeline)
        emit(alerts)
    # A warm-up the end of input completed (every partition final) starts the partitions that finished first.
    emit(catch_up())
    alert_sink.flush()
    dead_letters.flush()
    result.pipelines = pipelines
    result.seconds = time.perf_counter() - started
    return result
