"""Offsets that move backwards and a request topic that changes shape (issue 15, item 3), in memory.

The run loop over the in-memory source of ``conftest.py`` whose logs a test
rewrites mid-run, as a broker that lost its data or a recreated topic would.
The policy under test (``Service._rewind``, docs/kafka.md): every change is
logged at WARNING and counted in ``streamguard_source_resets_total{reason}``;
a partition whose log is no longer the one its offset counts in is read again
from its start, every record there processed as new, the detector state kept;
nothing is dropped as "already seen". The same against the real broker is in
``test_kafka_source_resets.py``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry

from streamguard.backends import create_backend
from streamguard.config import load_settings
from streamguard.dead_letter import arrow_stream_bytes
from streamguard.detectors.codebook import Codebook
from streamguard.metrics import SOURCE_RESET_REASONS, StreamguardMetrics
from streamguard.service.loop import Service
from streamguard.service.state import RunOptions
from streamguard.stream.checkpoint import CheckpointStore
from streamguard.stream.decode import Record
from streamguard.stream.kafka import KafkaConfig
from streamguard.stream.partitioner import partition_for
from streamguard.stream.pipeline import Pipeline

ROWS = 6_000
RECORD_ROWS = 64


def record_logs(table: pa.Table, partitions: int) -> dict[int, list[Record]]:
    parts = np.array([partition_for(a, partitions) for a in table.column("account_id").to_pylist()])
    logs: dict[int, list[Record]] = {}
    for p in range(partitions):
        rows = table.take(pa.array(np.flatnonzero(parts == p)))
        logs[p] = [Record(i, arrow_stream_bytes(rows.slice(s, RECORD_ROWS))) for i, s in enumerate(range(0, rows.num_rows, RECORD_ROWS))]
    return logs


def rows_in(logs: dict[int, list[Record]]) -> int:
    return sum(pa.ipc.open_stream(r.value).read_all().num_rows for log in logs.values() for r in log)


@pytest.fixture(scope="module")
def world(traffic: Any) -> Any:
    """Settings, codebook, the logs of the first ROWS rows (``old``) and of the ROWS after (``new``)."""
    from types import SimpleNamespace

    settings = load_settings(traffic.config)
    backend = create_backend("numpy", settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    codebook = Codebook.load(traffic.codebook)
    old = record_logs(traffic.table.slice(0, ROWS), 3)
    new = record_logs(traffic.table.slice(ROWS, ROWS), 3)
    return SimpleNamespace(settings=settings, backend=backend, codebook=codebook, old=old, new=new, table=traffic.table)


class Run:
    """A Service over a FakeSource whose ``hooks[n]`` run before its n-th poll; metrics on a fresh registry."""

    def __init__(self, world: Any, fakes: Any, tmp: Path, logs: dict[int, list[Record]], **kafka: Any) -> None:
        hooks: dict[int, Callable[[Any], None]] = {}
        self.hooks = hooks

        class Hooked(fakes.Source):  # type: ignore[misc, valid-type]
            def poll(self, timeout_s: float) -> dict[int, list[Any]]:
                hook = hooks.pop(self.polls + 1, None)
                if hook is not None:
                    hook(self)
                return super().poll(timeout_s)

        clock = fakes.Clock()
        self.source = Hooked({p: list(log) for p, log in logs.items()}, clock)
        self.registry = CollectorRegistry()
        config = KafkaConfig(**{"checkpoint_interval_s": 1.0, "metadata_check_interval_s": 1.0, **kafka})
        options = RunOptions(topic=self.source.topic, state_dir=tmp / "state", stop_after_idle=3.0, kafka=config)
        self.service = Service(
            options, world.settings, lambda: Pipeline(world.settings, world.backend, world.codebook), self.source,
            fakes.Outputs(), metrics=StreamguardMetrics(self.registry, b"test-key-0123456789abcdef"),
            codebook=world.codebook, clock=clock,
        )
        self.store = CheckpointStore(tmp / "state", self.source.topic)

    def run(self, partitions: set[int]) -> int:
        self.source.assign(partitions)
        assert self.service.run() == 0
        return self.service.stats["requests"] + self.service.stats["dead_letters"]

    def resets(self) -> dict[str, float]:
        counts = {r: self.registry.get_sample_value("streamguard_source_resets_total", {"reason": r}) for r in SOURCE_RESET_REASONS}
        return {r: n for r, n in counts.items() if n}


def warnings_of(caplog: Any) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name == "streamguard.service"]


def test_a_log_that_ends_before_the_offset_read_is_read_again_from_its_start(world: Any, fakes: Any, tmp_path: Path, caplog: Any) -> None:
    """The broker lost partition 0 (same topic) and it was refilled with fewer records: its high watermark falls
    below the offset already read, the position stays where it was (as Tansu's does). Every new record is processed;
    the other partitions are untouched."""
    caplog.set_level(logging.WARNING)
    run = Run(world, fakes, tmp_path, world.old)
    shorter = world.new[0][:10]

    def lose_the_log(source: Any) -> None:
        assert source.positions[0] == len(world.old[0]), "partition 0 should be read to its end by now"
        source.logs[0] = shorter

    run.hooks[40] = lose_the_log
    processed = run.run({0, 1, 2})
    assert processed == rows_in(world.old) + rows_in({0: shorter})
    assert run.resets() == {"log_truncated": 1.0}
    (warning,) = [w for w in warnings_of(caplog) if "again" in w]
    assert warning.startswith("partition 0 of requests: the log ends at offset 10, before offset")
    assert "reading it again from its start" in warning
    checkpoint = run.store.load(0)
    assert checkpoint is not None and checkpoint.offset == 10 and checkpoint.topic_id == "topic-id-1"
    assert run.store.load(1).offset == len(world.old[1]) and run.store.load(1).partitions == 3


def test_a_position_the_client_moved_back_is_not_dropped_as_stale(world: Any, fakes: Any, tmp_path: Path, caplog: Any) -> None:
    """Kafka answers OFFSET_OUT_OF_RANGE and the client resets to the earliest record of a recreated,
    longer log: records arrive below the offset read. They were dropped as stale re-deliveries before."""
    caplog.set_level(logging.WARNING)
    run = Run(world, fakes, tmp_path, world.old)
    longer = world.new[0] + [Record(len(world.new[0]) + i, r.value) for i, r in enumerate(world.new[1])]
    assert len(longer) > len(world.old[0])

    def recreate(source: Any) -> None:
        source.logs[0] = longer
        source.positions[0] = 0

    run.hooks[40] = recreate
    processed = run.run({0, 1, 2})
    assert processed == rows_in(world.old) + rows_in({0: longer})
    assert run.resets() == {"offset_moved_back": 1.0}
    assert any(w.startswith("partition 0 of requests: records arrive from offset 0, before offset") for w in warnings_of(caplog))
    assert run.store.load(0).offset == len(longer)


def test_a_checkpoint_of_a_deleted_topic_is_not_resumed_in_the_recreated_one(world: Any, fakes: Any, tmp_path: Path, caplog: Any) -> None:
    """A restart finds the topic recreated (another id) with more records than the checkpoints' offsets:
    seeking to them would skip the new records below; each partition is read from its start instead."""
    first = Run(world, fakes, tmp_path, world.old)
    first.run({0, 1, 2})
    assert {p: first.store.load(p).topic_id for p in range(3)} == {p: "topic-id-1" for p in range(3)}
    caplog.set_level(logging.WARNING)
    longer = {p: world.new[p] + [Record(len(world.new[p]) + i, r.value) for i, r in enumerate(world.old[p])] for p in range(3)}
    second = Run(world, fakes, tmp_path, longer)
    second.source.topic_id = "topic-id-2"
    processed = second.run({0, 1, 2})
    assert processed == rows_in(longer)
    assert second.resets() == {"topic_recreated": 3.0}
    assert sum("deleted and created again" in w for w in warnings_of(caplog)) == 3
    assert {p: (second.store.load(p).offset, second.store.load(p).topic_id) for p in range(3)} == {
        p: (len(longer[p]), "topic-id-2") for p in range(3)
    }


def test_another_partition_count_is_logged_and_counted_once(world: Any, fakes: Any, tmp_path: Path, caplog: Any) -> None:
    first = Run(world, fakes, tmp_path, world.old)
    first.run({0, 1, 2})
    caplog.set_level(logging.WARNING)
    grown = {**{p: [] for p in range(3)}, 3: world.new[0]}  # nothing new in 0..2; a fourth partition
    second = Run(world, fakes, tmp_path, {p: world.old[p] + grown[p] if p < 3 else grown[p] for p in range(4)})
    processed = second.run({0, 1, 2, 3})
    assert processed == rows_in({3: world.new[0]})
    assert second.resets() == {"partitions_changed": 1.0}
    (warning,) = [w for w in warnings_of(caplog) if "partitions" in w and "keyed" in w]
    assert warning.startswith("request topic requests has 4 partitions, 3 when its checkpoints were written")
    assert second.store.load(3).partitions == 4


def test_a_missing_topic_is_waited_for_then_read(world: Any, fakes: Any, tmp_path: Path, caplog: Any) -> None:
    caplog.set_level(logging.WARNING)
    run = Run(world, fakes, tmp_path, world.old, session_timeout_ms=6000, heartbeat_interval_ms=1000)
    run.source.missing = True

    def created(source: Any) -> None:
        source.missing = False
        source.assign({0, 1, 2})

    run.hooks[20] = created  # 6 s of the fake clock: metadata checked every second meanwhile
    processed = run.run(set())
    assert processed == rows_in(world.old)
    assert run.resets() == {"topic_missing": 1.0}
    missing = [w for w in warnings_of(caplog) if "does not exist" in w]
    assert missing == ["request topic requests does not exist (or this client may not read it); streamguard does not create it: waiting for it"]
    assert "request topic requests exists (3 partitions)" in warnings_of(caplog)
