"""``replay_file`` reads a file in record batches and feeds the pipelines exactly what ``replay_table`` feeds them.

The oracle is the whole table in memory: :func:`event_time_order`, sliced into
``batch.max_size`` rows. Streamed, the same chunks must come out of any file
format and read size whatever the (bounded) disorder; a file more out of order
than ``replay.reorder_rows`` is an error before any alert, never a reordering.
"""

from __future__ import annotations

import dataclasses

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.config import load_settings
from streamguard.schema import RecordFileError, RequestFile, infer_dim, validate_table
from streamguard.sinks.alerts import MemoryAlertSink
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.replay import (
    EventTimeOrderError,
    EventTimeReorder,
    event_time_chunks,
    event_time_order,
    replay_file,
    replay_table,
)

BASE_MS = 1_767_225_600_000


def _write(table: pa.Table, path: Path, fmt: str, rows: int) -> Path:
    if fmt == "parquet":
        pq.write_table(table, path, row_group_size=rows)
    else:
        writer_of = ipc.new_file if fmt == "arrow-file" else ipc.new_stream
        with pa.OSFile(str(path), "wb") as sink, writer_of(sink, table.schema) as writer:
            for batch in table.to_batches(max_chunksize=rows):
                writer.write_batch(batch)
    return path


def _mostly_ordered(n: int, displacement: int, seed: int) -> np.ndarray:
    """Event times in arrival order: each request late by up to ``displacement`` positions, with ties."""
    rng = np.random.default_rng(seed)
    ts = np.sort(rng.integers(0, n // 3, n)) * 1000 + BASE_MS  # about three requests per second: many ties
    arrival = np.arange(n) + rng.integers(0, displacement + 1, n) * (rng.random(n) < 0.2)
    return ts[np.argsort(arrival, kind="stable")]


def _table(n: int, dim: int, displacement: int, seed: int = 0, late: tuple[int, int] | None = None) -> pa.Table:
    """Requests with bounded disorder, 2% without a time, five zero vectors; ``late=(i, j)``
    stamps row i with row j's time."""
    rng = np.random.default_rng(seed + 1)
    ts = _mostly_ordered(n, displacement, seed)
    mask = np.zeros(n, dtype=bool)
    mask[rng.choice(n, n // 50, replace=False)] = True  # rows without a time: dead letters
    if late is not None:
        ts[late[0]], mask[late[0]] = ts[late[1]], False
    ts = pa.array(ts, mask=mask)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb[rng.choice(n, 5, replace=False)] = 0.0  # zero vectors: dead letters with a time
    return pa.table(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "ts": ts,
            "account_id": [f"a{i % 37}" for i in range(n)],
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim),
        }
    )


def _whole_chunks(table: pa.Table, rows: int) -> list:
    """What replay_table feeds, chunk by chunk: the validated batch and the dead letters that have a time."""
    ordered = event_time_order(table)
    dim = infer_dim(table)
    out = []
    for start in range(0, ordered.num_rows, rows):
        batch, dead = validate_table(ordered.slice(start, rows), dim, source="row", row_offset=start)
        if len(batch) or any(d.reason != "missing ts" for d in dead):
            out.append((batch, [d for d in dead if d.reason != "missing ts"]))
    return out


def _streamed_chunks(path: Path, rows: int, reorder: int, read: int) -> tuple[list, list]:
    source = RequestFile(path)
    dim = source.dim(read)
    out, untimed, starts = [], [], []
    for item in event_time_chunks(source, dim, rows, reorder, read):
        if isinstance(item, list):
            untimed.extend(item)
            continue
        chunk, start = item
        starts.append((start, chunk.num_rows))
        out.append(validate_table(chunk, dim, source="row", row_offset=start))
    assert [s for s, _ in starts] == [i * rows for i in range(len(starts))]
    assert all(n == rows for _, n in starts[:-1])
    return out, untimed


def _same_batches(a: list, b: list) -> None:
    assert len(a) == len(b)
    for (batch_a, dead_a), (batch_b, dead_b) in zip(a, b):
        np.testing.assert_array_equal(batch_a.request_ids, batch_b.request_ids)
        np.testing.assert_array_equal(batch_a.ts, batch_b.ts)
        np.testing.assert_array_equal(batch_a.embeddings, batch_b.embeddings)
        np.testing.assert_array_equal(batch_a.origin, batch_b.origin)
        assert [d.to_json() for d in dead_a] == [d.to_json() for d in dead_b]


@pytest.mark.parametrize("fmt", ["parquet", "arrow-file", "arrow-stream"])
@pytest.mark.parametrize("read, batch_rows", [(97, 64), (1000, 256), (5000, 4096)])
def test_streamed_chunks_equal_the_whole_file_sliced(tmp_path, fmt, read, batch_rows):
    table = _table(3000, 8, displacement=40)
    path = _write(table, tmp_path / "t", fmt, rows=333)
    streamed, untimed = _streamed_chunks(path, batch_rows, reorder=60, read=read)
    _same_batches(_whole_chunks(table, batch_rows), streamed)
    missing = np.flatnonzero(table.column("ts").is_null().to_numpy(zero_copy_only=False))
    assert [d.source for d in untimed] == [f"file row:{i}" for i in missing]
    assert {d.reason for d in untimed} == {"missing ts"} and untimed[0].record["request_id"] == f"r{missing[0]}"


@pytest.mark.parametrize("displacement", [0, 5, 200])
def test_reorder_buffer_gives_the_stable_sort_and_holds_at_most_its_capacity(displacement):
    keys = _mostly_ordered(20_000, displacement, seed=displacement)
    capacity = max(displacement, 1) * 2
    buffer = EventTimeReorder(capacity)
    rows = pa.table({"i": np.arange(keys.size)})
    out_keys, out_rows = [], []
    for start in range(0, keys.size, 777):
        k, r = buffer.push(keys[start : start + 777], rows.slice(start, 777), np.arange(start, min(start + 777, keys.size)))
        out_keys.append(k)
        out_rows.append(r)
        assert buffer.held <= capacity
        assert sum(buffer._base) <= 2 * (capacity + 777) + 777  # the read buffers kept alive stay bounded too
    k, r = buffer.finish()
    out_keys.append(k)
    out_rows.append(r)
    order = np.argsort(keys, kind="stable")
    np.testing.assert_array_equal(np.concatenate(out_keys), keys[order])
    np.testing.assert_array_equal(pa.concat_tables([r for r in out_rows if r is not None]).column("i").to_numpy(), order)


def test_a_file_more_out_of_order_than_the_buffer_is_an_error_before_any_alert(tmp_path, small_settings):
    late = 2000
    table = _table(3000, 8, displacement=0, late=(late, 200))  # a row 1,800 rows late, in a file otherwise in order
    path = _write(table, tmp_path / "late.parquet", "parquet", rows=500)
    settings = load_settings(environ={}, overrides={"coverage": {"warmup": 500}, "replay": {"reorder_rows": 1000, "read_rows": 256}})
    sink = MemoryAlertSink()
    with pytest.raises(EventTimeOrderError) as error:
        replay_file(path, settings, NumpyBackend(), sink, DeadLetterSink())
    message = str(error.value)
    assert f"row {late} " in message and "replay.reorder_rows=1,000" in message and "STREAMGUARD_REPLAY_REORDER_ROWS" in message
    assert sink.alerts == []
    with pytest.raises(EventTimeOrderError):  # the streamed pass checks on its own, too
        list(event_time_chunks(RequestFile(path), 8, 64, 1000, 256))
    # A buffer large enough repairs it.
    big = load_settings(environ={}, overrides={"coverage": {"warmup": 500}, "replay": {"reorder_rows": 1900}})
    assert replay_file(path, big, NumpyBackend(), MemoryAlertSink(), DeadLetterSink()).valid > 0


def test_replayed_file_raises_the_alerts_of_the_whole_table(tmp_path, small_settings, small_traffic):
    """Simulator traffic in its arrival order (mostly ordered), two partitions, tiny reads and buffer;
    the whole table on one thread, the file read ahead on another (replay.prefetch_batches)."""
    table = small_traffic.table.slice(0, 6_000)
    path = _write(table, tmp_path / "sim.arrow", "arrow-file", rows=2048)
    whole, whole_dead = MemoryAlertSink(), DeadLetterSink()
    one_thread = dataclasses.replace(small_settings, replay=dataclasses.replace(small_settings.replay, prefetch_batches=0))
    expected = replay_table(table, one_thread, NumpyBackend(), whole, whole_dead, partitions=2)
    assert expected.alerts > 0, "no alert: the comparison would prove nothing"
    settings = load_settings(
        environ={},
        overrides={
            "coverage": {"warmup": small_settings.coverage.warmup, "cells": small_settings.coverage.cells},
            "scoring": {"false_alerts_per_10k": small_settings.scoring.false_alerts_per_10k},
            "campaign": {"group_false_alerts_per_10k": small_settings.campaign.group_false_alerts_per_10k},
            "replay": {"read_rows": 999, "reorder_rows": 200, "prefetch_batches": 1},
        },
    )
    streamed, streamed_dead = MemoryAlertSink(), DeadLetterSink()
    got = replay_file(path, settings, NumpyBackend(), streamed, streamed_dead, partitions=2)
    assert [a.to_json() for a in streamed.alerts] == [a.to_json() for a in whole.alerts]
    assert (got.requests, got.valid, got.dead_letters) == (expected.requests, expected.valid, expected.dead_letters)
    assert [json.loads(d.to_json()) for d in streamed_dead.kept] == [json.loads(d.to_json()) for d in whole_dead.kept]


def test_request_file_reads_what_read_request_file_reads(tmp_path):
    table = _table(500, 8, displacement=3)
    for fmt in ("parquet", "arrow-file", "arrow-stream"):
        path = _write(table, tmp_path / fmt, fmt, rows=128)
        source = RequestFile(path)
        assert source.format == fmt and source.dim() == 8
        assert pa.Table.from_batches(list(source.batches(50))).equals(table)
    (tmp_path / "junk").write_bytes(b"not a table at all")
    with pytest.raises(RecordFileError, match="not a Parquet or Arrow IPC file"):
        RequestFile(tmp_path / "junk")
    with pytest.raises(RecordFileError, match="no such file"):
        RequestFile(tmp_path / "missing.parquet")


def test_an_independent_world_replays_the_same_read_in_pieces(tmp_path, small_stream_config):
    """A world written apart from the simulator (../shared/worlds), thinned as the Kafka world tests thin it."""
    import importlib.util

    generator = Path(__file__).resolve().parents[3] / "shared" / "worlds" / "independent_traffic.py"
    if not generator.is_file():
        pytest.skip(f"no independent world generator at {generator}")
    spec = importlib.util.spec_from_file_location("independent_traffic", generator)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    full = tmp_path / "full.parquet"
    module.write(*module.build(7001, 64, 0.01), str(full), str(tmp_path / "labels.json"), 64)
    table = pq.read_table(full)
    table = table.filter(pa.array(np.random.default_rng(7001).random(table.num_rows) < 0.2))
    path = _write(table, tmp_path / "world.parquet", "parquet", rows=1000)
    config = tmp_path / "config.toml"
    config.write_text(small_stream_config + "\n[replay]\nread_rows = 313\nreorder_rows = 50\n")
    settings = load_settings(config, environ={})
    whole, streamed = MemoryAlertSink(), MemoryAlertSink()
    replay_table(table, settings, NumpyBackend(), whole, DeadLetterSink())
    replay_file(path, settings, NumpyBackend(), streamed, DeadLetterSink())
    assert whole.alerts, "no alert: the comparison would prove nothing"
    assert [a.to_json() for a in streamed.alerts] == [a.to_json() for a in whole.alerts]


def test_the_command_says_which_setting_to_raise_in_one_line(tmp_path, capsys, monkeypatch):
    from streamguard.cli import main

    path = _write(_table(3000, 8, displacement=0, late=(2500, 10)), tmp_path / "late.parquet", "parquet", rows=500)
    monkeypatch.setenv("STREAMGUARD_REPLAY_REORDER_ROWS", "100")
    monkeypatch.setenv("STREAMGUARD_REPLAY_READ_ROWS", "100")  # one read of the whole file would sort it all
    assert main(["replay", str(path), "--alerts", str(tmp_path / "a.jsonl"), "--backend", "numpy"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "replay.reorder_rows=100" in err and "sort the file by ts" in err
    monkeypatch.setenv("STREAMGUARD_REPLAY_REORDER_ROWS", "2500")
    assert main(["replay", str(path), "--alerts", str(tmp_path / "a.jsonl"), "--backend", "numpy"]) == 0


def test_partition_router_cache_stays_bounded_and_routes_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 13: the account -> partition cache must not hold every distinct account of a long file."""
    from streamguard.stream import replay
    from streamguard.stream.partitioner import partition_for

    monkeypatch.setattr(replay, "ROUTER_CACHE_ACCOUNTS", 100)
    route = replay.PartitionRouter(4)
    accounts = np.array([f"acct-{i}" for i in range(1000)], dtype=object)
    parts = np.concatenate([route(accounts[i : i + 50]) for i in range(0, 1000, 50)])
    assert len(route._cache) <= 100
    assert parts.tolist() == [partition_for(a, 4) for a in accounts]
