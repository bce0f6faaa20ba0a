"""Record decoding: both contract formats, every poison kind, and a fuzz over arbitrary values.

No broker: ``decode_records`` is pure. The fuzz test checks the invariant the
service relies on: whatever the bytes, no exception, and every record either
yields valid rows or lands in the dead letters with a reason (an Arrow record
may do both, row by row).
"""

from __future__ import annotations

import base64
import json

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamguard.dead_letter import arrow_stream_bytes
from streamguard.schema import request_schema, validate_table
from streamguard.stream.decode import Record, RecordDecoder, sniff
from streamguard.stream.event_time import Rejected

D = 8


def arrow_value(n: int = 4, dim: int = D, seed: int = 0, nan_row: int | None = None) -> bytes:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    if nan_row is not None:
        emb[nan_row, 0] = np.nan
    table = pa.table(
        {
            "request_id": [f"r{seed}-{i}" for i in range(n)],
            "ts": pa.array(1_700_000_000_000 + np.arange(n), pa.int64()).cast(pa.timestamp("ms")),
            "account_id": [f"acct-{i % 2}" for i in range(n)],
            "org_id": [None] * n,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim),
        },
        schema=request_schema(dim),
    )
    return arrow_stream_bytes(table)


def json_value(i: int = 0, dim: int = D, b64: bool = False, **over) -> bytes:
    vec = (np.arange(dim, dtype=np.float32) + 1.0) / dim
    obj = {"request_id": f"j{i}", "ts": 1_700_000_000_000 + i, "account_id": "acct-j", "org_id": None}
    if b64:
        obj["embedding_b64"] = base64.b64encode(vec.astype("<f4").tobytes()).decode()
    else:
        obj["embedding"] = vec.tolist()
    obj.update(over)
    return json.dumps(obj).encode()


def decode(*values: bytes | None, dim: int | None = D):
    return RecordDecoder(dim).decode_records([Record(i, v) for i, v in enumerate(values)], source="kafka:t/0")


def test_both_formats_decode_to_the_rows_validate_table_gives() -> None:
    value = arrow_value(5)
    out = decode(value, json_value(1), json_value(2, b64=True))
    assert len(out.batch) == 7 and not out.dead
    table = pa.ipc.open_stream(value).read_all()
    expected, _ = validate_table(table, D)
    np.testing.assert_array_equal(out.batch.embeddings[:5], expected.embeddings)
    # list and base64 carry the same float32 values
    np.testing.assert_array_equal(out.batch.embeddings[5], out.batch.embeddings[6])
    assert out.batch.request_ids.tolist()[5:] == ["j1", "j2"]
    assert sniff(value) == "arrow" and sniff(json_value()) == "json" and sniff(b"\x00garbage") == "unknown"


def test_a_huge_but_finite_embedding_is_a_direction_like_any_other() -> None:
    out = decode(json_value(embedding=[0.0] * (D - 1) + [1.8446744073709552e19]))
    assert len(out.batch) == 1 and not out.dead
    np.testing.assert_allclose(np.linalg.norm(out.batch.embeddings, axis=1), 1.0, rtol=1e-6)


@pytest.mark.parametrize(
    "value, reason",
    [
        (b"\x00\x01garbage", "undecodable: neither"),
        (b"", "undecodable: empty value"),
        (None, "undecodable: empty value"),
        (b"{not json", "undecodable: not JSON"),
        (b"[1, 2]", "undecodable"),
        (json_value(dim=D + 3), "wrong dimension: 11"),
        (json_value(embedding=[float("nan")] * D), "embedding has NaN or Inf"),
        (json_value(embedding=[0.0] * D), "zero vector"),
        (json_value(account_id=None), "missing account_id"),
        (json_value(ts=None), "missing ts"),
        (json_value(ts="yesterday"), "undecodable: JSON field ts"),
        (json_value(embedding=["a"] * D), "undecodable: JSON field embedding"),
        (json_value(embedding_b64="!!!"), "undecodable: both"),
        (json.dumps({"request_id": "x", "ts": 1, "account_id": "a", "embedding_b64": "AAAAAAA="}).encode(), "undecodable: embedding_b64 holds 5 bytes"),
        (arrow_value()[:-40], "undecodable: truncated or corrupt Arrow"),
        (arrow_value()[:7], "undecodable: truncated or corrupt Arrow"),
    ],
)
def test_poison_values_are_dead_lettered_with_a_reason(value: bytes | None, reason: str) -> None:
    out = decode(json_value(0), value, json_value(2))
    assert len(out.batch) == 2, "good records around a poison one still flow"
    assert [d.offset for d in out.dead] == [1]
    assert out.dead[0].reason.startswith(reason), out.dead[0].reason
    assert out.dead[0].original_bytes() == (value or b"")


def test_one_bad_row_of_an_arrow_record_is_dead_lettered_as_that_row() -> None:
    out = decode(arrow_value(6, nan_row=3))
    assert len(out.batch) == 5
    (dead,) = out.dead
    assert dead.row == 3 and dead.reason == "embedding has NaN or Inf"
    row = pa.ipc.open_stream(dead.original_bytes()).read_all()
    assert row.num_rows == 1 and row.column("request_id")[0].as_py() == "r0-3"


def test_wrong_dimension_arrow_record_is_dead_lettered_row_by_row() -> None:
    out = decode(arrow_value(3, dim=D + 1))
    assert len(out.batch) == 0 and len(out.dead) == 3
    assert all(d.reason.startswith("wrong dimension: 9") for d in out.dead)


def test_a_row_turned_away_after_decoding_is_dead_lettered_in_its_record_format() -> None:
    out = decode(json_value(0), arrow_value(3))
    turned_away = Rejected(out.batch.take(np.array([0, 2])), ["event time too far ahead", "event time too far behind"])
    json_letter, arrow_letter = turned_away.dead_letters("kafka:t/0")
    assert (json_letter.source, json_letter.offset, json_letter.row, json_letter.fmt) == ("kafka:t/0@0", 0, None, "json")
    assert json.loads(json_letter.original_bytes()) == json_letter.record
    assert json_letter.record["request_id"] == "j0" and json_letter.key == b"acct-j"
    assert (arrow_letter.source, arrow_letter.offset, arrow_letter.row, arrow_letter.fmt) == ("kafka:t/0@1 row:1", 1, 1, "arrow")
    row = pa.ipc.open_stream(arrow_letter.original_bytes()).read_all()
    assert row.column("request_id").to_pylist() == ["r0-1"] == [arrow_letter.record["request_id"]]


def test_dimension_comes_from_the_first_usable_record_when_not_given() -> None:
    decoder = RecordDecoder(None)
    out = decoder.decode_records([Record(0, b"junk"), Record(1, arrow_value(2, dim=12))])
    assert decoder.dim == 12 and len(out.batch) == 2 and len(out.dead) == 1


# -------------------------------------------------------------------- fuzz

FUZZ = settings(max_examples=700, deadline=None, suppress_health_check=list(HealthCheck), database=None)
GOOD_ARROW = arrow_value(4, seed=1)
GOOD_JSON = json_value(0)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70), st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=8)
)
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=6)


def check_invariant(values: list[bytes | None]) -> None:
    out = decode(*values)
    assert out.batch.embeddings.shape == (len(out.batch), D)
    assert np.isfinite(out.batch.embeddings).all()
    if len(out.batch):
        np.testing.assert_allclose(np.linalg.norm(out.batch.embeddings, axis=1), 1.0, rtol=1e-5)
    dead_offsets = {d.offset for d in out.dead}
    assert all(d.reason for d in out.dead)
    assert all(isinstance(d.original_bytes(), bytes) for d in out.dead)
    # Each record decodes to rows or is dead-lettered; rows are conserved.
    assert out.rows == len(out.batch) + sum(1 for d in out.dead)
    assert dead_offsets <= set(range(len(values)))


@FUZZ
@given(st.lists(st.binary(max_size=300), min_size=1, max_size=4))
def test_fuzz_arbitrary_bytes(values: list[bytes]) -> None:
    check_invariant(values)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(GOOD_ARROW) - 1), st.integers(0, 255), st.integers(1, len(GOOD_ARROW))), max_size=4))
def test_fuzz_mutated_arrow(mutations: list[tuple[int, int, int]]) -> None:
    values = []
    for position, byte, cut in mutations or [(0, 0xFF, len(GOOD_ARROW))]:
        data = bytearray(GOOD_ARROW)
        data[position] = byte
        values.append(bytes(data[:cut]))
    check_invariant(values)


@FUZZ
@given(st.dictionaries(st.sampled_from(["request_id", "ts", "account_id", "org_id", "embedding", "embedding_b64", "x"]), json_values, max_size=6))
def test_fuzz_json_objects(obj: dict) -> None:
    try:
        value = json.dumps(obj, allow_nan=True).encode()
    except (ValueError, OverflowError):
        return
    check_invariant([value, GOOD_JSON])


@FUZZ
@given(
    st.lists(st.one_of(st.floats(width=32), st.integers(-5, 5)), min_size=0, max_size=2 * D),
    st.one_of(st.integers(-(2**64), 2**64), st.floats(), st.text(max_size=4), st.none()),
    st.booleans(),
)
def test_fuzz_json_requests(embedding: list, ts: object, b64: bool) -> None:
    obj: dict = {"request_id": "r", "ts": ts, "account_id": "a"}
    if b64:
        obj["embedding_b64"] = base64.b64encode(np.asarray(embedding, dtype="<f4").tobytes()).decode()
    else:
        obj["embedding"] = embedding
    check_invariant([json.dumps(obj).encode(), GOOD_ARROW])


def test_consecutive_arrow_records_map_bad_rows_back_to_their_record() -> None:
    out = decode(arrow_value(4, seed=1), arrow_value(6, seed=2, nan_row=3), json_value(9), arrow_value(2, seed=3, nan_row=0))
    assert len(out.batch) == 4 + 5 + 1 + 1
    assert [(d.offset, d.row) for d in out.dead] == [(1, 3), (3, 0)]
    row = pa.ipc.open_stream(out.dead[0].original_bytes()).read_all()
    assert row.column("request_id")[0].as_py() == "r2-3"
    assert out.batch.request_ids.tolist()[:5] == ["r1-0", "r1-1", "r1-2", "r1-3", "r2-0"]


# ------------------------------------------------- records of any schema

GOOD_TS = 1_767_225_600_000


def contract_arrays(n: int, seed: int = 0) -> dict[str, pa.Array]:
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, D)).astype(np.float32)
    return {
        "request_id": pa.array([f"s{seed}-{i}" for i in range(n)]),
        "ts": pa.array(GOOD_TS + np.arange(n), pa.int64()).cast(pa.timestamp("ms")),
        "account_id": pa.array([f"acct-{i % 3}" for i in range(n)]),
        "org_id": pa.array([None] * n, pa.string()),
        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), D),
    }


@pytest.mark.parametrize("name", ["account_id", "embedding", "ts", "request_id"])
def test_a_record_with_a_duplicated_column_is_its_own_dead_letter(name: str) -> None:
    """Regression: KeyError 'Field "account_id" exists 2 times in schema' killed the service on every restart."""
    cols = contract_arrays(3, seed=7)
    names = list(cols) + [name]
    bad = arrow_stream_bytes(pa.Table.from_arrays(list(cols.values()) + [cols[name]], names=names))
    out = decode(GOOD_ARROW, bad, arrow_value(4, seed=2), json_value(5))
    assert [(d.offset, d.reason.split(":")[0]) for d in out.dead] == [(1, "undecodable")]
    assert "appear more than once" in out.dead[0].reason and out.dead[0].original_bytes() == bad
    assert len(out.batch) == 4 + 4 + 1


def test_an_arrow_record_with_extra_columns_keeps_its_good_rows() -> None:
    """Regression: an extra column with one bad row dead-lettered every row of the record."""
    cols = contract_arrays(5, seed=3)
    emb = np.random.default_rng(3).standard_normal((5, D)).astype(np.float32)
    emb[1, 2] = np.inf
    cols["embedding"] = pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), D)
    cols["note"] = pa.array(["x", "y", "z", "w", "v"])
    cols["tags"] = pa.array([["a"], ["b", "c"], [], None, ["d"]], pa.list_(pa.string()))
    out = decode(arrow_stream_bytes(pa.table(cols)))
    assert out.batch.request_ids.tolist() == ["s3-0", "s3-2", "s3-3", "s3-4"]
    assert [(d.offset, d.row, d.reason) for d in out.dead] == [(0, 1, "embedding has NaN or Inf")]
    row = pa.ipc.open_stream(out.dead[0].original_bytes()).read_all()
    assert row.column("note")[0].as_py() == "y"  # the row as it came, extra columns included


def test_a_json_record_no_arrow_string_can_hold_is_its_own_dead_letter() -> None:
    """A lone UTF-16 surrogate is valid JSON but no UTF-8 string: it once crashed the decoder."""
    bad = json_value(1).replace(b'"j1"', b'"\\ud800"')
    out = decode(json_value(0), bad, json_value(2))
    assert out.batch.request_ids.tolist() == ["j0", "j2"]
    assert [(d.offset, d.reason.split(":")[0]) for d in out.dead] == [(1, "undecodable")]


def test_valid_rows_carry_their_offset_and_row() -> None:
    out = decode(arrow_value(3, seed=1), json_value(9), arrow_value(2, seed=3, nan_row=0), arrow_value(2, seed=4))
    assert out.batch.origin.tolist() == [[0, 0], [0, 1], [0, 2], [1, -1], [2, 1], [3, 0], [3, 1]]


# Column kinds a producer might send: right for the contract, wrong, nested, or all null.
def _kind_array(kind: str, name: str, n: int, draw) -> pa.Array:
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    if kind == "null":
        return pa.nulls(n)
    if kind == "strings":
        return pa.array([draw(st.one_of(st.none(), st.text(max_size=3))) for _ in range(n)], pa.string())
    if kind == "ints":
        return pa.array(rng.integers(-5, 5, n), pa.int64())
    if kind == "floats":
        return pa.array(rng.standard_normal(n))
    if kind == "struct":
        return pa.array([{"a": int(v)} for v in rng.integers(0, 9, n)])
    if kind == "map":
        return pa.array([[("k", "v")]] * n, pa.map_(pa.string(), pa.string()))
    if kind == "list_of_strings":
        return pa.array([["x"] * int(v) for v in rng.integers(0, 3, n)], pa.list_(pa.string()))
    if kind == "nested_floats":
        return pa.array([[[1.0] * D]] * n, pa.list_(pa.list_(pa.float32())))
    if kind == "times":
        unit = draw(st.sampled_from(["s", "ms", "us", "ns"]))
        values = [draw(st.sampled_from([None, 0, -1, 2**62, -(2**63), 2**63 - 1, 1_767_225_600, GOOD_TS])) for _ in range(n)]
        return pa.array(values, pa.int64()).cast(pa.timestamp(unit))
    if kind == "uint_times":
        return pa.array([draw(st.sampled_from([0, GOOD_TS, 2**63 + 1, 2**64 - 1])) for _ in range(n)], pa.uint64())
    if kind == "embeddings":
        value_type = draw(st.sampled_from([pa.float32(), pa.float16(), pa.float64()]))
        rows = []
        for _ in range(n):
            size = draw(st.sampled_from([D, D, D, D - 1, 0]))
            row = rng.standard_normal(size) * draw(st.sampled_from([1.0, 0.0, 1e30]))
            if size and draw(st.booleans()):
                row[0] = draw(st.sampled_from([np.nan, np.inf]))
            rows.append(None if draw(st.integers(0, 9)) == 0 else row.tolist())
        fixed = draw(st.booleans()) and all(r is not None and len(r) == D for r in rows)
        if fixed:
            return pa.FixedSizeListArray.from_arrays(pa.array(np.ravel(rows), value_type), D)
        return pa.array(rows, pa.large_list(value_type) if draw(st.booleans()) else pa.list_(value_type))
    raise AssertionError(kind)


RIGHT = {"request_id": ["strings", "ints"], "account_id": ["strings", "ints"], "org_id": ["strings", "null"],
         "ts": ["times", "uint_times", "ints"], "embedding": ["embeddings"]}
WRONG = ["floats", "struct", "map", "list_of_strings", "nested_floats", "null"]


@st.composite
def arrow_records(draw) -> tuple[pa.Table, bool]:
    """A table of request-like columns: each contract column 0-2 times, of a right or wrong kind, plus
    extra columns of any kind, in any order. Also says whether the schema is a valid request schema."""
    n = draw(st.integers(1, 5))
    columns: list[tuple[str, pa.Array]] = []
    valid = True
    for name, right in RIGHT.items():
        copies = draw(st.sampled_from([1, 1, 1, 1, 0, 2]))
        for _ in range(copies):
            kind = draw(st.sampled_from(right + WRONG)) if draw(st.integers(0, 4)) == 0 else draw(st.sampled_from(right))
            valid &= kind in right and not (name != "org_id" and kind == "null")
            columns.append((name, _kind_array(kind, name, n, draw)))
        valid &= copies == 1 or (name == "org_id" and copies == 0)
    for _ in range(draw(st.integers(0, 3))):
        name = draw(st.sampled_from(["note", "attributes", "x", "note"]))
        columns.append((name, _kind_array(draw(st.sampled_from(WRONG + ["strings", "times", "embeddings"])), name, n, draw)))
    order = draw(st.permutations(range(len(columns))))
    columns = [columns[i] for i in order]
    return pa.Table.from_arrays([c for _, c in columns], names=[name for name, _ in columns]), valid


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(st.lists(arrow_records(), min_size=1, max_size=3))
def test_fuzz_arrow_schemas(records: list[tuple[pa.Table, bool]]) -> None:
    """Duplicated, missing, extra, wrongly typed and nested columns, odd values: no exception; a record
    whose schema is a request schema keeps every row validate_table keeps on its contract columns alone."""
    values = [arrow_stream_bytes(table) for table, _ in records]
    check_invariant(values + [GOOD_ARROW])
    out = decode(*values, GOOD_ARROW)
    assert out.batch.origin is not None and out.batch.origin.shape == (len(out.batch), 2)
    for offset, (table, valid) in enumerate(records):
        mine = out.batch.origin[:, 0] == offset
        whole = [d for d in out.dead if d.offset == offset and d.row is None]
        if not valid:
            continue
        assert not whole, whole[0].reason  # never the whole record for a request schema
        contract = table.select([c for c in ("request_id", "ts", "account_id", "org_id", "embedding") if c in table.schema.names])
        expected, _ = validate_table(contract, D)
        assert out.batch.request_ids[mine].tolist() == expected.request_ids.tolist()
        assert out.batch.origin[mine, 1].tolist() == expected.origin.tolist()
    assert GOOD_ARROW and out.batch.request_ids[out.batch.origin[:, 0] == len(records)].size == 4
