"""The shared warm-up (stream/warmup.py): one codebook for every partition, whatever their interleaving.

Partitions smaller than ``coverage.warmup`` pool their requests; the codebook and
the alerts must depend only on each partition's requests and their order, never on
how a consumer interleaves partitions, on restarts, or on which process holds which
partition. The oracle is ``replay_table(..., partitions=3)`` with no codebook.
"""

from __future__ import annotations

import dataclasses
import logging
import pickle
from typing import Any

import numpy as np
import pytest

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.schema import AlertRecord, RequestBatch, infer_dim, validate_table
from streamguard.sinks.alerts import MemoryAlertSink
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.partitioner import partition_for
from streamguard.stream.pipeline import Pipeline
from streamguard.stream.replay import event_time_order, replay_table
from streamguard.stream.warmup import SharedWarmup, WarmupBuffer

PARTITIONS = 3
ROWS = 12_000
WARMUP = 6_000
"""Larger than every partition's share of ROWS: none could fit a codebook of its own before the end."""


@pytest.fixture(scope="module")
def settings(small_settings: Any) -> Any:
    # small_settings' lenient alert rates, and a warm-up no partition of the stream reaches alone.
    return dataclasses.replace(small_settings, coverage=dataclasses.replace(small_settings.coverage, warmup=WARMUP))


@pytest.fixture(scope="module")
def stream(settings: Any) -> Any:
    """The first ROWS requests, each partition's in order, and replay's alerts over them (the oracle)."""
    from types import SimpleNamespace

    from streamguard.sim import SimConfig, simulate

    # Accounts spread evenly enough over 3 partitions that none holds WARMUP requests.
    table = event_time_order(simulate(SimConfig(seed=11, scale=0.15, dim=32)).table).slice(0, ROWS)
    batch, dead = validate_table(table, infer_dim(table))
    assert dead == []
    parts = np.array([partition_for(a, PARTITIONS) for a in batch.account_ids])
    rows = {p: batch.take(np.flatnonzero(parts == p)) for p in range(PARTITIONS)}
    assert max(len(r) for r in rows.values()) < WARMUP, "a partition could warm up alone: the test would prove less"
    sink = MemoryAlertSink()
    result = replay_table(table, settings, NumpyBackend(), sink, DeadLetterSink(), partitions=PARTITIONS)
    assert sink.alerts, "the oracle raised no alert: the comparison would prove nothing"
    return SimpleNamespace(batch=batch, parts=parts, rows=rows, oracle=canonical(sink.alerts), codebook=result.pipelines[0].codebook)


def canonical(alerts: list[AlertRecord]) -> list[str]:
    return sorted(a.to_json() for a in alerts)


class Consumer:
    """Pipelines of the partitions one process holds, fed chunk by chunk as a consumer would."""

    def __init__(self, settings: Any, stream: Any, held: set[int] | None = None, pool: SharedWarmup | None = None) -> None:
        self.settings, self.stream = settings, stream
        self.pool = pool or SharedWarmup(settings.coverage.warmup, PARTITIONS)
        self.pipelines: dict[int, Pipeline] = {}
        self.position = {p: 0 for p in range(PARTITIONS)}
        self.alerts: dict[int, list[AlertRecord]] = {p: [] for p in range(PARTITIONS)}
        self.ready_before_end: set[int] = set()
        for p in sorted(held if held is not None else range(PARTITIONS)):
            self.pipelines[p] = Pipeline(settings, NumpyBackend())
            self.pipelines[p].join_warmup(self.pool, p)

    def feed(self, p: int, n: int) -> None:
        rows = self.stream.rows[p]
        start = self.position[p]
        end = min(start + n, len(rows))
        self.alerts[p] += self.pipelines[p].process(rows.take(np.arange(start, end)))
        self.position[p] = end
        self.catch_up()

    def catch_up(self) -> None:
        for q, pipeline in self.pipelines.items():
            self.alerts[q] += pipeline.catch_up()
            if pipeline.ready:
                self.ready_before_end.add(q)

    def finish(self) -> list[str]:
        for p, pipeline in self.pipelines.items():
            self.alerts[p] += pipeline.finish()
        self.catch_up()
        return canonical([a for alerts in self.alerts.values() for a in alerts])

    def snapshot(self, p: int) -> tuple[int, int, bytes]:
        """(position, alerts so far, state) of partition p, as a checkpoint would keep them."""
        return self.position[p], len(self.alerts[p]), pickle.dumps(self.pipelines[p].snapshot())

    def rest(self, p: int) -> int:
        return len(self.stream.rows[p]) - self.position[p]


def round_robin(consumer: Consumer, chunk: int) -> None:
    while any(consumer.rest(p) for p in consumer.pipelines):
        for p in consumer.pipelines:
            if consumer.rest(p):
                consumer.feed(p, chunk)


def test_the_codebook_and_alerts_do_not_depend_on_how_partitions_interleave(settings: Any, stream: Any) -> None:
    outcomes = []
    for schedule in ("round robin", "one partition after another", "the last partition first"):
        consumer = Consumer(settings, stream)
        if schedule == "round robin":
            round_robin(consumer, 97)
        else:
            order = range(PARTITIONS) if schedule == "one partition after another" else reversed(range(PARTITIONS))
            for p in order:
                consumer.feed(p, len(stream.rows[p]))
        outcomes.append((schedule, consumer.finish(), consumer.pool.codebook))
    for schedule, alerts, codebook in outcomes:
        assert codebook is not None
        np.testing.assert_array_equal(codebook.centroids, stream.codebook.centroids, err_msg=schedule)
        assert alerts == stream.oracle, schedule


def test_partitions_smaller_than_the_warmup_alert_before_the_input_ends(settings: Any, stream: Any) -> None:
    consumer = Consumer(settings, stream)
    round_robin(consumer, 64)
    assert consumer.ready_before_end == set(range(PARTITIONS)), "a partition still waited for its codebook at the end"
    live = [a for alerts in consumer.alerts.values() for a in alerts]
    assert live, "no alert before the end of the input"
    assert consumer.finish() == stream.oracle


def test_one_partition_fits_on_exactly_its_first_warmup_requests(settings: Any, stream: Any) -> None:
    alone, pooled = Pipeline(settings, NumpyBackend()), Pipeline(settings, NumpyBackend())
    pooled.join_warmup(SharedWarmup(settings.coverage.warmup, 1), 0)
    out = {"alone": [], "pooled": []}
    for start in range(0, len(stream.batch), 1000):
        part = stream.batch.take(np.arange(start, min(start + 1000, len(stream.batch))))
        out["alone"] += alone.process(part)
        out["pooled"] += pooled.process(part)
    out["alone"] += alone.finish()
    out["pooled"] += pooled.finish()
    np.testing.assert_array_equal(alone.codebook.centroids, pooled.codebook.centroids)
    assert canonical(out["alone"]) == canonical(out["pooled"]) != []


def test_restart_with_partitions_checkpointed_before_and_after_the_fit_continues_exactly(settings: Any, stream: Any) -> None:
    """kill -9 between two partitions' checkpoints: one restores on the codebook, the others mid warm-up."""
    first = Consumer(settings, stream)
    for _ in range(6):
        for p in range(PARTITIONS):
            first.feed(p, 97)
    assert first.pool.codebook is None
    early = {p: first.snapshot(p) for p in (1, 2)}
    while first.pool.codebook is None:
        for p in range(PARTITIONS):
            first.feed(p, 97)
    late = first.snapshot(0)
    assert pickle.loads(late[2])["codebook"] is not None
    second = Consumer(settings, stream, held=set())
    for p, (position, emitted, state) in {0: late, **early}.items():
        pipeline = Pipeline(settings, NumpyBackend())
        pipeline.restore(pickle.loads(state))
        pipeline.join_warmup(second.pool, p)
        second.pipelines[p] = pipeline
        second.position[p] = position
        second.alerts[p] = first.alerts[p][:emitted]
    assert second.pool.codebook is not None, "the codebook in partition 0's state is the topic's"
    second.catch_up()
    round_robin(second, 97)
    assert second.finish() == stream.oracle


def test_a_partition_held_elsewhere_is_seen_through_its_checkpoint(settings: Any, stream: Any) -> None:
    """Two processes: each fits the same codebook, reading the other's partitions from their checkpoints."""
    a = Consumer(settings, stream, held={0})
    b = Consumer(settings, stream, held={1, 2})
    for _ in range(200):
        if a.pool.codebook is not None and b.pool.codebook is not None:
            break
        for consumer in (a, b):
            for p in consumer.pipelines:
                consumer.feed(p, 97)
        # Each process reads the other's last checkpoints (the service does it once a checkpoint interval).
        for mine, other in ((a, b), (b, a)):
            for p in other.pipelines:
                mine.pool.observe(p, WarmupBuffer.from_snapshot(pickle.loads(other.snapshot(p)[2])))
            mine.pool.try_fit()
            mine.catch_up()
    np.testing.assert_array_equal(a.pool.codebook.centroids, b.pool.codebook.centroids)
    np.testing.assert_array_equal(a.pool.codebook.centroids, stream.codebook.centroids)
    round_robin(a, 97)
    round_robin(b, 97)
    assert sorted(a.finish() + b.finish()) == stream.oracle


def test_status_and_log_say_what_the_warmup_waits_for(settings: Any, stream: Any, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="streamguard.stream.warmup")
    consumer = Consumer(settings, stream)
    status = consumer.pool.status()
    assert not status.done and status.remaining == WARMUP
    consumer.feed(0, len(stream.rows[0]))
    consumer.feed(1, len(stream.rows[1]))
    status = consumer.pool.status()
    # The event-time guard holds a partition's last requests until a later one confirms their time.
    held = {p: len(stream.rows[p]) - consumer.pipelines[p].event_time.holding for p in (0, 1)}
    assert status.buffered == {**held, 2: 0}
    assert status.remaining == max(WARMUP - sum(held.values()), 0) and 2 in status.waiting_for
    text = status.describe()
    assert f"{sum(held.values()):,} requests buffered" in text and f"of the {WARMUP:,}" in text and "no alerts" in text
    assert "partition(s) [2]" in text
    assert consumer.pool.codebook is None, "a partition that sent nothing holds the warm-up back"
    lines = [r.getMessage() for r in caplog.records if "no codebook yet" in r.getMessage()]
    assert sorted(line.split(":")[0] for line in lines) == ["partition 0", "partition 1"], "one line per partition"
    assert f"of the {WARMUP} requests it needs" in lines[0]
    logged = " ".join(r.getMessage() for r in caplog.records)
    assert not any(account in logged for account in set(stream.batch.account_ids.tolist())), "a raw account id was logged"
    consumer.feed(2, len(stream.rows[2]))
    consumer.catch_up()
    assert consumer.pool.status().done and consumer.pool.status().remaining == 0
    assert "done" in consumer.pool.status().describe()
    assert consumer.finish() == stream.oracle


def test_an_empty_topic_fits_nothing_and_raises_nothing(settings: Any) -> None:
    pool = SharedWarmup(settings.coverage.warmup, 2)
    pipelines = [Pipeline(settings, NumpyBackend()) for _ in range(2)]
    for p, pipeline in enumerate(pipelines):
        pipeline.join_warmup(pool, p)
        pipeline.process(RequestBatch.empty(8))
    assert [pipeline.finish() for pipeline in pipelines] == [[], []]
    assert pool.codebook is None and [pipeline.catch_up() for pipeline in pipelines] == [[], []]
