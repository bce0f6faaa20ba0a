import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc
import pyarrow.parquet as pq
import pytest

from streamguard.schema import (
    AlertRecord,
    RecordFileError,
    infer_dim,
    read_request_file,
    request_schema,
    validate_table,
)


def make_table(n=6, dim=8, float16=False, ts_type="timestamp", seed=0):
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float16 if float16 else np.float32)
    ts = np.arange(n, dtype=np.int64) * 1000 + 1_767_225_600_000
    ts_arr = pa.array(ts, type=pa.timestamp("ms")) if ts_type == "timestamp" else pa.array(ts, type=pa.int64())
    value = pa.float16() if float16 else pa.float32()
    return pa.table(
        {
            "request_id": pa.array([f"r{i}" for i in range(n)]),
            "ts": ts_arr,
            "account_id": pa.array([f"a{i % 2}" for i in range(n)]),
            "org_id": pa.array([None] * n, type=pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel(), type=value), dim),
        }
    )


def test_request_schema_has_contract_columns():
    assert request_schema(4).names == ["request_id", "ts", "account_id", "org_id", "embedding"]


@pytest.mark.parametrize("float16", [False, True])
@pytest.mark.parametrize("ts_type", ["timestamp", "int64"])
def test_valid_rows_are_normalised_and_kept(float16, ts_type):
    table = make_table(float16=float16, ts_type=ts_type)
    batch, dead = validate_table(table, 8)
    assert dead == []
    assert len(batch) == 6
    assert batch.embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(batch.embeddings, axis=1), 1.0, rtol=1e-5)
    assert batch.ts[0] == 1_767_225_600_000
    assert list(batch.account_ids[:2]) == ["a0", "a1"]


def test_bad_rows_go_to_dead_letters_with_reasons():
    emb = pa.array(
        [[1.0, 0.0, 0.0], [float("nan"), 1.0, 0.0], [0.0, 0.0, 0.0], [1.0, 2.0], None, [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        type=pa.list_(pa.float32()),
    )
    table = pa.table(
        {
            "request_id": ["ok", "nan", "zero", "dim", "noemb", "noacct", "nots"],
            "ts": pa.array([1, 2, 3, 4, 5, 6, None], type=pa.int64()),
            "account_id": ["a", "a", "a", "a", "a", None, "a"],
            "embedding": emb,
        }
    )
    batch, dead = validate_table(table, 3, source="row")
    assert list(batch.request_ids) == ["ok"]
    reasons = {d.record["request_id"]: d.reason for d in dead}
    assert reasons["nan"] == "embedding has NaN or Inf"
    assert reasons["zero"] == "zero vector"
    assert reasons["dim"].startswith("wrong dimension: 2")
    assert reasons["noemb"] == "missing embedding"
    assert reasons["noacct"] == "missing account_id"
    assert reasons["nots"] == "missing ts"
    assert all(d.source.startswith("row:") for d in dead)
    # Nothing is lost: every row is either kept or dead-lettered.
    assert len(batch) + len(dead) == table.num_rows


def test_reads_parquet_and_arrow_ipc_file_and_stream(tmp_path):
    table = make_table()
    pq.write_table(table, tmp_path / "r.parquet")
    with ipc.new_file(tmp_path / "r.arrow", table.schema) as w:
        w.write_table(table)
    with ipc.new_stream(tmp_path / "r.arrows", table.schema) as w:
        w.write_table(table)
    for name in ("r.parquet", "r.arrow", "r.arrows"):
        got = read_request_file(tmp_path / name)
        assert got.num_rows == 6
        assert infer_dim(got) == 8


def test_variable_length_lists_infer_the_common_dimension():
    emb = pa.array([[1.0, 0.0, 0.0]] * 5 + [[1.0, 0.0]], type=pa.list_(pa.float32()))
    table = pa.table({"request_id": list("abcdef"), "ts": list(range(6)), "account_id": ["x"] * 6, "embedding": emb})
    assert infer_dim(table) == 3


def test_wrong_files_get_one_clear_error(tmp_path):
    (tmp_path / "junk.parquet").write_bytes(b"this is not parquet at all")
    with pytest.raises(RecordFileError, match="not a Parquet or Arrow IPC file"):
        read_request_file(tmp_path / "junk.parquet")
    with pytest.raises(RecordFileError, match="no such file"):
        read_request_file(tmp_path / "missing.parquet")
    pq.write_table(pa.table({"request_id": ["a"], "ts": [1]}), tmp_path / "cols.parquet")
    with pytest.raises(RecordFileError, match="missing column.*account_id.*embedding"):
        read_request_file(tmp_path / "cols.parquet")


def test_alert_record_round_trip():
    alert = AlertRecord("acct", 5, 0.7, "coverage_sweep", None, {"x": 1}, 300)
    assert AlertRecord.from_dict(alert.to_dict()) == alert
    assert set(alert.to_dict()) == {"account_id", "ts", "score", "kind", "campaign_id", "evidence", "events_seen"}


# ------------------------------------------------------------ checked times


@pytest.mark.parametrize(
    "unit, stored, expected_ms",
    [
        ("s", 1_767_225_600, 1_767_225_600_000),
        ("ms", 1_767_225_600_123, 1_767_225_600_123),
        ("us", 1_767_225_600_123_999, 1_767_225_600_123),  # the millisecond the instant falls in
        ("ns", -1, -1),
        ("s", -(2**40), -(2**40) * 1000),
    ],
)
def test_timestamps_of_every_unit_become_epoch_ms(unit, stored, expected_ms):
    table = make_table(n=1).set_column(1, "ts", pa.array([stored], type=pa.int64()).cast(pa.timestamp(unit)))
    batch, dead = validate_table(table, 8)
    assert dead == [] and batch.ts.tolist() == [expected_ms]


@pytest.mark.parametrize(
    "column",
    [
        pa.array([2**62, 1_767_225_600], type=pa.int64()).cast(pa.timestamp("s")),  # x1000 wraps int64
        pa.array([-(2**63), 1_767_225_600], type=pa.int64()).cast(pa.timestamp("s")),
        pa.array([2**63 + 5, 1_767_225_600_000], type=pa.uint64()),  # beyond int64
    ],
)
def test_a_time_that_does_not_fit_epoch_ms_is_dead_lettered_not_wrapped(column):
    table = make_table(n=2).set_column(1, "ts", column)
    batch, dead = validate_table(table, 8, source="row")
    assert len(batch) == 1 and batch.request_ids.tolist() == ["r1"]
    assert [d.reason.split(":")[0] for d in dead] == ["event time outside the sane range"]
    assert dead[0].source == "row:0" and dead[0].record["request_id"] == "r0"


# ------------------------------------------------------- columns of any shape


@pytest.mark.parametrize("name", ["request_id", "ts", "account_id", "embedding", "org_id"])
def test_a_contract_column_twice_is_one_clear_error_not_a_crash(name):
    table = make_table(n=3)
    doubled = pa.Table.from_arrays(table.columns + [table.column(name)], names=table.schema.names + [name])
    with pytest.raises(RecordFileError, match=f"{name} appear more than once"):
        validate_table(doubled, 8)


@pytest.mark.parametrize(
    "name, column",
    [
        ("account_id", pa.array([[1], [2], [3]], type=pa.list_(pa.int64()))),
        ("request_id", pa.array([1.5, 2.5, 3.5])),
        ("org_id", pa.array([{"x": 1}] * 3)),
    ],
)
def test_a_contract_column_of_the_wrong_type_is_one_clear_error(name, column):
    table = make_table(n=3)
    table = table.set_column(table.schema.get_field_index(name), name, column)
    with pytest.raises(RecordFileError, match=f"column {name} must hold strings"):
        validate_table(table, 8)


def test_extra_columns_of_any_type_keep_the_good_rows_and_the_bad_rows_dead_letters():
    """Regression: an extra column made one bad row's dead letter fail ("could not convert string
    to float"), which sank every row of the record."""
    table = make_table(n=4)
    emb = np.array(table.column("embedding").combine_chunks().flatten().to_numpy(zero_copy_only=False)).reshape(4, 8)
    emb[2, 0] = np.nan
    table = table.set_column(4, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.ravel()), 8))
    extras = {
        "tags": pa.array([["a", "b"], [], None, ["zz"]], type=pa.list_(pa.string())),
        "meta": pa.array([{"k": "v", "n": 1}] * 4),
        "when": pa.array([2**62] * 4, type=pa.int64()).cast(pa.timestamp("s")),
        "blob": pa.array([b"\x00\xff"] * 4),
        "attributes": pa.array([[("net", "h1")]] * 4, type=pa.map_(pa.string(), pa.string())),
    }
    for name, column in extras.items():
        table = table.append_column(name, column)
    table = pa.Table.from_arrays(table.columns + [table.column("tags")], names=table.schema.names + ["tags"])
    batch, dead = validate_table(table, 8, source="row")
    assert batch.request_ids.tolist() == ["r0", "r1", "r3"]
    assert [(d.source, d.reason) for d in dead] == [("row:2", "embedding has NaN or Inf")]
    record = dead[0].record
    assert record["request_id"] == "r2" and record["tags"] is None and record["meta"] == {"k": "v", "n": 1}
    assert record["blob"] == "00ff" and isinstance(record["embedding"][0], str)  # "nan": still JSON
    import json

    json.dumps(record, allow_nan=False)
