"""The run loop over an in-memory source and outputs: crashes, rebalances, backpressure, failures.

No broker. The oracle is ``replay_table(..., partitions=3, codebook=...)`` over
the same rows; every scenario must give exactly its alerts, each exported
once (unique ``(partition, seq)`` in the alerts "topic", no line twice in the
alert file).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from streamguard.backends import create_backend
from streamguard.config import load_settings
from streamguard.dead_letter import arrow_stream_bytes
from streamguard.detectors.codebook import Codebook
from streamguard.service.loop import Service
from streamguard.service.state import RunOptions
from streamguard.sinks.alert_file import AlertFile
from streamguard.sinks.alerts import MemoryAlertSink
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.checkpoint import Checkpoint, CheckpointError, CheckpointStore
from streamguard.stream.decode import Record
from streamguard.stream.kafka import KafkaConfig
from streamguard.stream.partitioner import partition_for
from streamguard.stream.pipeline import Pipeline
from streamguard.stream.replay import replay_table

ROWS = 12_000
RECORD_ROWS = 64


@pytest.fixture(scope="module")
def world(traffic: Any) -> Any:
    """Settings, codebook, per-partition record logs of the first ROWS rows, and replay's alerts over them."""
    from types import SimpleNamespace

    settings = load_settings(traffic.config)
    backend = create_backend("numpy", settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    codebook = Codebook.load(traffic.codebook)
    table = traffic.table.slice(0, ROWS)
    parts = np.array([partition_for(a, 3) for a in table.column("account_id").to_pylist()])
    logs: dict[int, list[Record]] = {}
    for p in range(3):
        rows = table.take(pa.array(np.flatnonzero(parts == p)))
        logs[p] = [Record(i, arrow_stream_bytes(rows.slice(s, RECORD_ROWS))) for i, s in enumerate(range(0, rows.num_rows, RECORD_ROWS))]
    sink = MemoryAlertSink()
    replay_table(table, settings, backend, sink, DeadLetterSink(), partitions=3, codebook=codebook)
    assert len(sink.alerts) >= 3
    return SimpleNamespace(settings=settings, backend=backend, codebook=codebook, logs=logs, oracle=sorted(a.to_json() for a in sink.alerts))


def build(world: Any, fakes: Any, tmp: Path, source: Any = None, outputs: Any = None, clock: Any = None, **kafka: Any) -> Service:
    clock = clock or fakes.Clock()
    source = source or fakes.Source(world.logs, clock)
    outputs = outputs or fakes.Outputs()
    config = KafkaConfig(**{"checkpoint_interval_s": 1.0, **kafka})
    options = RunOptions(topic=source.topic, state_dir=tmp / "state", alerts_file=tmp / "alerts.jsonl", stop_after_idle=3.0, kafka=config)
    return Service(options, world.settings, lambda: Pipeline(world.settings, world.backend, world.codebook), source, outputs,
                   codebook=world.codebook, clock=clock)


def exported(outputs: Any) -> list[str]:
    ids = [(p, seq) for p, seq, _ in outputs.topic]
    assert len(ids) == len(set(ids)), "an alert reached the topic twice"
    return sorted(alert.to_json() for _, _, alert in outputs.topic)


def file_alerts(tmp: Path) -> list[str]:
    return sorted(json.dumps(json.loads(line)) for line in (tmp / "alerts.jsonl").read_text().splitlines() if line.strip())


def test_uninterrupted_run_equals_replay_and_checkpoints_every_record(world: Any, fakes: Any, tmp_path: Path) -> None:
    svc = build(world, fakes, tmp_path)
    svc.source.assign({0, 1, 2})
    assert svc.run() == 0
    assert exported(svc.outputs) == world.oracle
    assert file_alerts(tmp_path) == world.oracle
    store = CheckpointStore(tmp_path / "state", svc.source.topic)
    assert {p: m["offset"] for p, m in store.manifests().items()} == {p: len(log) for p, log in world.logs.items()}
    assert svc.source.committed == {p: len(log) for p, log in world.logs.items()}
    assert svc.source.closed and svc.stats["checkpoints"] > 3


@pytest.mark.parametrize("crash_poll", [15, 35, 60])
def test_crash_then_restart_gives_each_alert_once(world: Any, fakes: Any, tmp_path: Path, crash_poll: int) -> None:
    clock = fakes.Clock()
    outputs = fakes.Outputs()
    first = build(world, fakes, tmp_path, outputs=outputs, clock=clock)
    first.source.assign({0, 1, 2})
    first.source.crash_at_poll = crash_poll
    with pytest.raises(fakes.Crash):
        first.run()
    second = build(world, fakes, tmp_path, outputs=outputs, clock=clock)
    second.source.committed = dict(first.source.committed)
    second.source.assign({0, 1, 2})
    assert second.run() == 0
    assert exported(outputs) == world.oracle
    assert file_alerts(tmp_path) == world.oracle


def test_crash_between_export_and_checkpoint_is_deduplicated_on_restore(world: Any, fakes: Any, tmp_path: Path) -> None:
    """The worst spot: alerts left the process, the checkpoint that covers them never landed."""
    clock = fakes.Clock()
    outputs = fakes.Outputs()
    first = build(world, fakes, tmp_path, outputs=outputs, clock=clock)
    first.source.assign({0, 1, 2})
    saves = {"n": 0}
    real_save = first.store.save

    def save(checkpoint: Checkpoint, guard: Any = None) -> Checkpoint | None:
        # Crash once alerts have been exported and the round is writing its checkpoints.
        if outputs.topic and saves["n"] >= 4:
            raise fakes.Crash()
        saves["n"] += 1
        return real_save(checkpoint, guard)

    first.store.save = save  # type: ignore[method-assign]
    with pytest.raises(fakes.Crash):
        first.run()
    before = len(outputs.topic)
    assert before > 0
    second = build(world, fakes, tmp_path, outputs=outputs, clock=clock)
    second.source.assign({0, 1, 2})
    assert second.run() == 0
    assert outputs.scans >= 1
    assert exported(outputs) == world.oracle
    assert file_alerts(tmp_path) == world.oracle


def test_revoked_partition_moves_to_another_replica_through_the_state_dir(world: Any, fakes: Any, tmp_path: Path) -> None:
    clock = fakes.Clock()
    outputs = fakes.Outputs()
    a = build(world, fakes, tmp_path, outputs=outputs, clock=clock)
    a.source.assign({0, 1, 2})
    a.source.crash_at_poll = 60  # stop the loop from outside, as a rebalance would interrupt it
    with pytest.raises(fakes.Crash):
        a.run()
    # The group moves partition 0 to replica b: a set its state aside, b restores the checkpoint.
    a.source.crash_at_poll = None
    a.source.revoke({0})
    b = build(world, fakes, tmp_path / "b", outputs=outputs, clock=clock)
    b.store = a.store  # one shared state directory
    b.source.committed = dict(a.source.committed)
    b.source.assign({0})
    assert b.run() == 0
    assert a.run() == 0
    assert 0 not in a.active
    assert exported(outputs) == world.oracle


def test_revoke_and_reassign_keeps_state_in_memory(world: Any, fakes: Any, tmp_path: Path) -> None:
    svc = build(world, fakes, tmp_path)
    svc.source.assign({0, 1, 2})
    svc.source.crash_at_poll = 40
    with pytest.raises(fakes.Crash):
        svc.run()
    svc.source.crash_at_poll = None
    kept = svc.active[0]
    loads = {"n": 0}
    real_load = svc.store.load

    def load(p: int) -> Any:
        loads["n"] += 1
        return real_load(p)

    svc.store.load = load  # type: ignore[method-assign]
    svc.source.revoke({0, 1, 2})
    svc.source.assign({0, 1, 2})
    assert svc.run() == 0
    assert loads["n"] == 0 and svc.active[0] is kept
    assert exported(svc.outputs) == world.oracle


def test_a_full_queue_pauses_its_partition(world: Any, fakes: Any, tmp_path: Path) -> None:
    svc = build(world, fakes, tmp_path, queue_max_rows=512)
    svc.source.per_poll = 20  # 1,280 rows a poll: more than the queue holds
    svc.source.assign({0, 1, 2})
    assert svc.run() == 0
    assert svc.source.pause_calls > 0 and svc.stats["pauses"] > 0
    assert exported(svc.outputs) == world.oracle


def test_failed_acknowledgement_holds_the_checkpoint_and_does_not_resend(world: Any, fakes: Any, tmp_path: Path) -> None:
    outputs = fakes.Outputs()
    outputs.fail_flushes = 2
    svc = build(world, fakes, tmp_path, outputs=outputs)
    svc.source.assign({0, 1, 2})
    assert svc.run() == 0
    assert svc.stats["failed_rounds"] >= 1 and outputs.scans >= 2
    assert exported(outputs) == world.oracle


def test_an_export_outage_bounds_the_unexported_backlog(world: Any, fakes: Any, tmp_path: Path) -> None:
    """Issue 13: while exports fail the loop must not keep piling dead letters (and alerts) up in memory."""

    class Outage(fakes.Outputs):
        def __init__(self) -> None:
            super().__init__()
            self.down, self.most = 8, 0

        def flush(self, timeout_s: float) -> Any:
            from streamguard.sinks.kafka import FlushResult

            self.most = max(self.most, max((len(s.dead) + len(s.alerts) for s in svc.active.values()), default=0))
            if self.down:
                self.down -= 1
                return FlushResult(False, set())
            return super().flush(timeout_s)

    clock, outputs = fakes.Clock(), Outage()
    logs = {0: [Record(i, b"not a record") for i in range(2000)]}
    svc = build(world, fakes, tmp_path, source=fakes.Source(logs, clock), outputs=outputs, clock=clock, queue_max_rows=50)
    svc.source.assign({0})
    assert svc.run() == 0
    assert outputs.most <= 50 + 2 * 50  # the cap, plus the queue a last batch takes (2 records a chunk)
    assert svc.stats["failed_rounds"] >= 5 and svc.stats["pauses"] > 0
    assert sorted(d.offset for _, d in outputs.dead) == list(range(2000))  # each exported once, nothing lost


def test_sigterm_runs_a_last_round_and_leaves(world: Any, fakes: Any, tmp_path: Path) -> None:
    svc = build(world, fakes, tmp_path, checkpoint_interval_s=1e9)
    svc.source.assign({0, 1, 2})
    real_poll = svc.source.poll

    def poll(timeout: float) -> Any:
        if svc.source.polls == 50:
            svc.request_stop("SIGTERM")
        return real_poll(timeout)

    svc.source.poll = poll  # type: ignore[method-assign]
    assert svc.run() == 0
    store = CheckpointStore(tmp_path / "state", svc.source.topic)
    manifests = store.manifests()
    assert manifests and svc.source.closed
    assert svc.source.committed == {p: m["offset"] for p, m in manifests.items()}


# ------------------------------------------------------------ checkpoints


def test_checkpoint_store_is_atomic_and_checks_itself(tmp_path: Path) -> None:
    store = CheckpointStore(tmp_path, "t")
    assert store.load(0) is None
    first = store.save(Checkpoint("t", 0, offset=10, snapshot={"x": np.arange(3)}, alerts_emitted=2, dim=8))
    second = store.save(Checkpoint("t", 0, offset=20, snapshot={"x": np.arange(4)}, alerts_emitted=5, dim=8))
    directory = store.partition_dir(0)
    assert sorted(p.name for p in directory.iterdir() if p.suffix == ".pkl") == [f"snapshot-000000000020-{second.checkpoint_id[:12]}.pkl"]
    loaded = store.load(0)
    assert loaded is not None and loaded.offset == 20 and loaded.alerts_emitted == 5 and loaded.checkpoint_id != first.checkpoint_id
    np.testing.assert_array_equal(loaded.snapshot["x"], np.arange(4))
    snapshot = directory / json.loads((directory / "MANIFEST.json").read_text())["snapshot"]
    snapshot.write_bytes(snapshot.read_bytes()[:-1] + b"\x00")
    with pytest.raises(CheckpointError, match="checksum"):
        store.load(0)


def test_alert_file_cuts_a_partial_line_and_skips_lines_already_written(tmp_path: Path) -> None:
    from streamguard.schema import AlertRecord

    alerts = [AlertRecord(f"a{i}", i, 0.5, "near_duplicate", None, {}, 200 + i) for i in range(3)]
    path = tmp_path / "alerts.jsonl"
    path.write_text(alerts[0].to_json() + "\n" + alerts[1].to_json() + "\n" + alerts[2].to_json()[:10])
    sink = AlertFile(path, dedup_from=0)
    sink.write(alerts)
    sink.sync()
    assert [json.loads(line)["account_id"] for line in path.read_text().splitlines()] == ["a0", "a1", "a2"]


def test_a_fresh_alert_file_replaces_what_was_there_and_shows_alerts_before_it_is_closed(tmp_path: Path) -> None:
    """``replay --alerts``: the file is rewritten, and alerts written so far can be read while the replay goes on."""
    from streamguard.schema import AlertRecord

    alerts = [AlertRecord(f"a{i}", i, 0.5, "near_duplicate", None, {}, 200 + i) for i in range(3)]
    path = tmp_path / "alerts.jsonl"
    path.write_text("an older replay's output\n")
    sink = AlertFile(path, fresh=True)
    sink.write(alerts[:2])
    sink.flush()
    assert path.read_text() == "".join(alert.to_json() + "\n" for alert in alerts[:2])
    sink.write(alerts[2:])
    sink.close()
    assert path.read_text() == "".join(alert.to_json() + "\n" for alert in alerts)


def test_a_checkpoint_of_a_partition_revoked_meanwhile_is_dropped(tmp_path: Path) -> None:
    from streamguard.stream.kafka import Ownership

    store = CheckpointStore(tmp_path, "t")
    ownership = Ownership()
    kept = store.save(Checkpoint("t", 0, offset=10, snapshot={}), lambda: ownership.holding(0, ownership.epoch(0)))
    assert kept is not None
    epoch = ownership.epoch(0)
    ownership.revoke({0})  # the rebalance listener, between snapshot and commit
    assert store.save(Checkpoint("t", 0, offset=20, snapshot={}), lambda: ownership.holding(0, epoch)) is None
    assert store.manifest(0)["checkpoint_id"] == kept.checkpoint_id
    assert [p.name for p in store.partition_dir(0).glob("*.pkl")] == [store.manifest(0)["snapshot"]]


def poisoned_logs(world: Any) -> tuple[dict[int, list[Record]], int]:
    """Partition 1's log with, in its middle, a JSON request stamped 2**62 from a fresh account, an Arrow
    record with its account_id column twice, and a JSON request stamped 0."""
    rng = np.random.default_rng(0)
    emb = rng.standard_normal(world.codebook.dim).tolist()
    future = json.dumps({"request_id": "poison-future", "ts": 2**62, "account_id": "fresh", "embedding": emb}).encode()
    zero = json.dumps({"request_id": "poison-zero", "ts": 0, "account_id": "fresh", "embedding": emb}).encode()
    table = pa.ipc.open_stream(world.logs[1][0].value).read_all()
    doubled = pa.Table.from_arrays(table.columns + [table.column("account_id")], names=table.schema.names + ["account_id"])
    values = [r.value for r in world.logs[1]]
    mid = len(values) // 2
    values[mid:mid] = [future, arrow_stream_bytes(doubled), zero]
    return {**world.logs, 1: [Record(i, v) for i, v in enumerate(values)]}, mid


def test_poisoned_records_are_dead_lettered_and_change_no_alert_across_a_crash(world: Any, fakes: Any, tmp_path: Path) -> None:
    """Issue 15: one record must never blind or stop the detector, on the first run or after a restart."""
    logs, mid = poisoned_logs(world)
    clock, outputs = fakes.Clock(), fakes.Outputs()
    first = build(world, fakes, tmp_path, source=fakes.Source(logs, clock), outputs=outputs, clock=clock)
    first.source.assign({0, 1, 2})
    first.source.crash_at_poll = 40  # a kill -9 midway: the restart resumes from the last checkpoint
    with pytest.raises(fakes.Crash):
        first.run()
    second = build(world, fakes, tmp_path, source=fakes.Source(logs, clock), outputs=outputs, clock=clock)
    second.source.committed = dict(first.source.committed)
    second.source.assign({0, 1, 2})
    assert second.run() == 0
    assert exported(outputs) == world.oracle
    assert file_alerts(tmp_path) == world.oracle
    dead = {(p, d.offset, d.reason.split(":")[0], d.fmt) for p, d in outputs.dead}
    assert dead == {
        (1, mid, "event time outside the sane range", "json"),
        (1, mid + 1, "undecodable", "arrow"),
        (1, mid + 2, "event time outside the sane range", "json"),
    }
    letter = next(d for p, d in outputs.dead if d.offset == mid)
    assert json.loads(letter.original_bytes()) | {"embedding": None} == {
        "request_id": "poison-future", "ts": 2**62, "account_id": "fresh", "org_id": None, "embedding": None
    }


# ------------------------------------------------------- shared warm-up

COLD_WARMUP = 6_000
"""More requests than any partition of the cold world holds: alone, none would ever warm up."""


@pytest.fixture(scope="module")
def cold(traffic: Any) -> Any:
    """No codebook file: 12,000 requests over 3 partitions, a warm-up none reaches alone, and
    ``replay_table(..., partitions=3)`` fitting the shared codebook (the oracle)."""
    import dataclasses
    from types import SimpleNamespace

    from streamguard.sim import SimConfig, simulate
    from streamguard.stream.replay import event_time_order

    base = load_settings(traffic.config)
    settings = dataclasses.replace(base, coverage=dataclasses.replace(base.coverage, warmup=COLD_WARMUP))
    backend = create_backend("numpy", settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    table = event_time_order(simulate(SimConfig(seed=11, scale=0.15, dim=32)).table).slice(0, ROWS)
    parts = np.array([partition_for(a, 3) for a in table.column("account_id").to_pylist()])
    assert np.bincount(parts).max() < COLD_WARMUP
    logs: dict[int, list[Record]] = {}
    for p in range(3):
        rows = table.take(pa.array(np.flatnonzero(parts == p)))
        logs[p] = [Record(i, arrow_stream_bytes(rows.slice(s, RECORD_ROWS))) for i, s in enumerate(range(0, rows.num_rows, RECORD_ROWS))]
    sink = MemoryAlertSink()
    replay_table(table, settings, backend, sink, DeadLetterSink(), partitions=3)
    assert sink.alerts
    return SimpleNamespace(settings=settings, backend=backend, codebook=None, logs=logs, oracle=sorted(a.to_json() for a in sink.alerts))


def build_cold(cold: Any, fakes: Any, tmp: Path, outputs: Any, clock: Any, metrics: Any = None) -> Service:
    source = fakes.Source(cold.logs, clock)
    options = RunOptions(topic=source.topic, state_dir=tmp / "state", alerts_file=tmp / "alerts.jsonl", stop_after_idle=3.0,
                         kafka=KafkaConfig(checkpoint_interval_s=1.0))
    return Service(options, cold.settings, lambda: Pipeline(cold.settings, cold.backend), source, outputs, metrics, clock=clock)


def warm_checkpoints(tmp: Path) -> set[int]:
    """Partitions whose last checkpoint still waits for the shared codebook."""
    store = CheckpointStore(tmp / "state", "requests")
    return {p for p in store.manifests() if store.load(p).snapshot["codebook"] is None}


def only_warm_checkpoints(tmp: Path) -> bool:
    """Some partition is checkpointed, and none on a codebook (the background writer may not have written them all)."""
    return bool(CheckpointStore(tmp / "state", "requests").manifests()) and warm_checkpoints(tmp) == set(
        CheckpointStore(tmp / "state", "requests").manifests()
    )


@pytest.mark.parametrize("crash_poll", [None, 14, 30, 40])
def test_cold_start_without_a_codebook_equals_replay_across_a_crash(cold: Any, fakes: Any, tmp_path: Path, crash_poll: int | None) -> None:
    """Issue 15: partitions too small for a codebook of their own pool their warm-up; kill -9 anywhere stays exact."""
    clock, outputs = fakes.Clock(), fakes.Outputs()
    first = build_cold(cold, fakes, tmp_path, outputs, clock)
    first.source.assign({0, 1, 2})
    if crash_poll is None:
        assert first.run() == 0
    else:
        first.source.crash_at_poll = crash_poll
        with pytest.raises(fakes.Crash):
            first.run()
        if crash_poll in (14, 30):
            # 14: mid warm-up; 30: the codebook was fitted in memory, never checkpointed: fitted again.
            first._writer.shutdown(wait=True)  # the write in flight lands: a kill just after it
            assert only_warm_checkpoints(tmp_path), "the last checkpoints should be of the warm-up"
            assert (first.warmup.codebook is not None) == (crash_poll == 30)
        second = build_cold(cold, fakes, tmp_path, outputs, clock)
        second.source.committed = dict(first.source.committed)
        second.source.assign({0, 1, 2})
        assert second.run() == 0
    assert exported(outputs) == cold.oracle
    assert file_alerts(tmp_path) == cold.oracle
    assert warm_checkpoints(tmp_path) == set()


def test_readiness_and_metrics_say_what_the_warmup_waits_for(cold: Any, fakes: Any, tmp_path: Path) -> None:
    from prometheus_client import CollectorRegistry

    from streamguard.metrics import StreamguardMetrics

    registry = CollectorRegistry()
    clock, outputs = fakes.Clock(), fakes.Outputs()
    svc = build_cold(cold, fakes, tmp_path, outputs, clock, metrics=StreamguardMetrics(registry, b"test-key"))
    svc.source.assign({0, 1, 2})
    svc.source.crash_at_poll = 8  # stops the loop mid warm-up, to look at it
    with pytest.raises(fakes.Crash):
        svc.run()
    assert svc.ready(), "consuming during the warm-up is ready"
    assert svc.warmup_text.startswith("warm-up: waiting, ") and f"of the {COLD_WARMUP:,}" in svc.warmup_text
    assert registry.get_sample_value("streamguard_warmup_waiting") == 1
    assert 0 < registry.get_sample_value("streamguard_warmup_remaining_requests") < COLD_WARMUP
    svc.source.crash_at_poll = None
    assert svc.run() == 0
    assert svc.warmup_text.startswith("warm-up: done")
    assert registry.get_sample_value("streamguard_warmup_waiting") == 0
    assert registry.get_sample_value("streamguard_warmup_remaining_requests") == 0
    assert exported(outputs) == cold.oracle


def test_a_partition_handed_over_mid_warmup_finds_the_codebook_in_the_state_dir(cold: Any, fakes: Any, tmp_path: Path) -> None:
    """Replicas see each other's partitions through their checkpoints; the codebook is the same wherever it is fitted."""
    clock, outputs = fakes.Clock(), fakes.Outputs()
    a = build_cold(cold, fakes, tmp_path, outputs, clock)
    a.source.assign({0, 1, 2})
    a.source.crash_at_poll = 14
    with pytest.raises(fakes.Crash):
        a.run()
    a._wait_job()
    assert only_warm_checkpoints(tmp_path)
    a.source.crash_at_poll = None
    a.source.revoke({0})
    # b holds partition 0 alone and ends its input; a goes on with 1 and 2; c takes partition 0 over last.
    b = build_cold(cold, fakes, tmp_path / "b", outputs, clock)
    b.store = a.store
    b.source.assign({0})
    assert b.run() == 0
    assert a.run() == 0
    c = build_cold(cold, fakes, tmp_path / "c", outputs, clock)
    c.store = a.store
    c.source.assign({0})
    assert c.run() == 0
    assert warm_checkpoints(tmp_path) == set()
    assert exported(outputs) == cold.oracle
