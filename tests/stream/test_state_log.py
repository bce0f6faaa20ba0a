"""Incremental checkpoints and the account bound: a full record plus the changes equals the snapshot."""

from __future__ import annotations

import dataclasses
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.detectors.accounts import AccountTable
from streamguard.schema import infer_dim, validate_table
from streamguard.stream.checkpoint import Checkpoint, CheckpointStore
from streamguard.stream.pipeline import Pipeline
from streamguard.stream.replay import event_time_order
from streamguard.stream.state_log import materialize


@pytest.fixture(scope="module")
def batch(small_traffic: Any) -> Any:
    table = event_time_order(small_traffic.table)
    valid, dead = validate_table(table, infer_dim(table))
    assert dead == []
    return valid.take(np.arange(9000))


def bounded(settings: Any, max_accounts: int, initial_accounts: int = 64) -> Any:
    """Settings whose table holds few accounts and evicts idle ones often: every kind of slot change."""
    return dataclasses.replace(
        settings,
        state=dataclasses.replace(
            settings.state, initial_accounts=initial_accounts, max_accounts=max_accounts, idle_evict_hours=1.0
        ),
        scoring=dataclasses.replace(settings.scoring, evict_every_ticks=1),
    )


def assert_same(a: Any, b: Any, where: str = "") -> None:
    if isinstance(a, dict):
        assert isinstance(b, dict) and set(a) == set(b), (where, set(a) ^ set(b))
        for key in a:
            assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, np.ndarray):
        assert isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape, where
        if a.dtype == object:
            assert a.tolist() == b.tolist(), where
        else:  # bit for bit (NaN, -0.0)
            assert a.tobytes() == b.tobytes(), where
    else:
        assert pickle.dumps(a) == pickle.dumps(b), where


def test_a_full_record_and_its_changes_equal_the_snapshot_after_each_checkpoint(small_settings: Any, batch: Any) -> None:
    settings = bounded(small_settings, 40)
    pipeline = Pipeline(settings, NumpyBackend())
    records = []
    cuts = [700, 1600, 2500, 3300, 4200, 5000, 6500, len(batch)]
    start = 0
    for i, cut in enumerate(cuts):
        pipeline.process(batch.take(np.arange(start, cut)))
        start = cut
        # Round trip through pickle, as the checkpoint store does; a full record after the fourth (compaction).
        records.append(pickle.loads(pickle.dumps(pipeline.checkpoint_state(full=i == 4))))
        chain = records[max(i for i in range(len(records)) if records[i]["full"]):]
        assert_same(materialize(chain), pipeline.snapshot())
    assert [r["full"] for r in records] == [True, True, False, False, True, False, False, False]
    assert pipeline.stats.evicted_by["memory"] > 0 and pipeline.stats.evicted_by["idle"] > 0
    changed = [r["rows"].size for r in records[5:]]
    assert max(changed) < pipeline.accounts.capacity  # a change record holds the changed slots only


@pytest.mark.parametrize("initial_accounts", [64, 8])
def test_a_pipeline_restored_from_a_record_chain_continues_exactly(
    small_settings: Any, batch: Any, initial_accounts: int
) -> None:
    """With 8 initial slots the table has grown past them before the kill: the restored pipeline's
    per-slot arrays must follow the restored table, or the first eviction after it fails."""
    settings = bounded(small_settings, 40, initial_accounts)
    cuts = (1600, 3000, 4500, 6000, len(batch))
    key = lambda a: (a.account_id, a.kind, a.ts, a.events_seen, a.score, a.campaign_id)  # noqa: E731

    def run(restart: bool) -> tuple[list, Any]:
        pipeline, alerts, records, start = Pipeline(settings, NumpyBackend()), [], [], 0
        for cut in cuts:
            alerts += pipeline.process(batch.take(np.arange(start, cut)))
            start = cut
            records.append(pickle.loads(pickle.dumps(pipeline.checkpoint_state())))
            if restart and cut in (3000, 4500):  # a kill -9 after the checkpoint; the second continues the chain
                pipeline = Pipeline(settings, NumpyBackend())
                pipeline.restore(materialize(records))
        assert [r["full"] for r in records] == [True] + [False] * (len(cuts) - 1)
        return sorted(map(key, alerts + pipeline.finish())), pipeline

    reference, whole = run(False)
    assert reference and whole.stats.evicted_by["memory"] > 0
    assert run(True)[0] == reference


def test_the_store_writes_changes_and_compacts(small_settings: Any, batch: Any, tmp_path: Path) -> None:
    pipeline = Pipeline(bounded(small_settings, 40), NumpyBackend())
    store = CheckpointStore(tmp_path, "t")
    last = None
    for i, cut in enumerate((1600, 2500, 3500, 4500)):
        pipeline.process(batch.take(np.arange(0 if i == 0 else (1600, 2500, 3500)[i - 1], cut)))
        record = pipeline.checkpoint_state(full=i == 3)
        saved = store.save(Checkpoint("t", 0, offset=cut, snapshot=record, delta_of=None if record["full"] else last))
        assert saved is not None
        last = saved.checkpoint_id
        manifest = store.manifest(0)
        assert len(manifest.get("log", [])) == (0 if record["full"] else i)
        loaded = store.load(0)
        assert loaded is not None and loaded.offset == cut
        assert_same(loaded.snapshot, pipeline.snapshot())
    files = sorted(p.name for p in store.partition_dir(0).iterdir())
    assert len(files) == 2  # the manifest and the last full record: compaction removed the changes
    # A change record whose parent is no longer the partition's checkpoint is refused.
    stale = Checkpoint("t", 0, offset=9999, snapshot=pipeline.checkpoint_state(), delta_of="not-the-last-one")
    assert store.save(stale) is None and store.manifest(0)["checkpoint_id"] == last


def test_lru_eviction_frees_the_least_recently_active_and_reuses_the_lowest_slot() -> None:
    table = AccountTable(4, max_accounts=8)
    table.assign(np.array([f"a{i}" for i in range(8)], dtype=object), np.array([5, 1, 7, 1, 9, 3, 8, 6]))
    assert table.capacity == 8
    freed = table.evict_lru(5)
    assert freed.tolist() == [1, 3, 5]  # ts 1, 1, 3: the oldest, ties to the lowest slot
    assert table.slot("a1") is None and len(table) == 5
    assert table.assign(np.array(["new"], dtype=object), np.array([10])).tolist() == [1]
    # Full: a new account evicts the least recent one that is not in its own batch, never grows the table.
    table.assign(np.array(["x", "y"], dtype=object), np.array([11, 11]))
    slots = table.assign(np.array(["a0", "z"], dtype=object), np.array([12, 12]))
    assert table.capacity == 8 and len(table) <= 8 and table.emergency_evicted >= 1
    assert table.slot("a0") == slots[0] and table.slot("z") == slots[1]
    restored = AccountTable(4, max_accounts=8)
    restored.load_state_dict(pickle.loads(pickle.dumps(table.state_dict())))
    ids = np.array(["p", "q", "r"], dtype=object)
    table.evict_lru(3)
    restored.evict_lru(3)
    assert table.assign(ids, np.array([20, 20, 20])).tolist() == restored.assign(ids, np.array([20, 20, 20])).tolist()
