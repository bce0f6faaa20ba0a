"""Request attributes become keyed tokens at validation: the same from Arrow and JSON, never the value."""

import json

import numpy as np
import pyarrow as pa

from streamguard.attributes import KEY_NAMES, PER_REQUEST, key_of, token, tokens_from_column
from streamguard.schema import validate_table
from streamguard.stream.decode import decode_json, json_rows_table

D = 8
MAP = pa.map_(pa.string(), pa.string())


def table(attributes, kind=MAP):
    n = len(attributes)
    rng = np.random.default_rng(0)
    return pa.table(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "ts": pa.array([1_767_225_600_000 + i for i in range(n)], pa.int64()),
            "account_id": [f"a{i}" for i in range(n)],
            "embedding": pa.array(rng.standard_normal((n, D)).tolist(), pa.list_(pa.float32())),
            "attributes": pa.array(attributes, kind),
        }
    )


def test_map_and_struct_give_the_same_tokens_and_no_value_survives():
    pairs = [[("net", "10.1.0.0/16"), ("pay", "card-7")], None, [], [("net", "10.1.0.0/16")]]
    from_map = tokens_from_column(pa.array(pairs, MAP))
    assert from_map[0, 1] == token("pay", "card-7")
    assert from_map.shape == (4, PER_REQUEST) and from_map.dtype == np.uint64
    assert from_map[0, 0] == from_map[3, 0] == token("net", "10.1.0.0/16") != 0  # shared value, shared token
    assert (from_map[1:3] == 0).all()  # no attributes: no token
    assert [KEY_NAMES[c] for c in key_of(from_map[0, :2])] == ["net", "pay"]
    struct = pa.array([{"net": "10.1.0.0/16", "pay": None}], pa.struct([("net", pa.string()), ("pay", pa.string())]))
    assert tokens_from_column(struct)[0, 0] == token("net", "10.1.0.0/16")
    assert token("net", "a") != token("pay", "a")  # the key is part of the token


def test_a_sliced_column_keeps_its_own_rows():
    pairs = pa.array([[("net", "x")], [("net", "y")], [("pay", "z")]], MAP)
    assert np.array_equal(tokens_from_column(pairs.slice(1)), tokens_from_column(pa.array([[("net", "y")], [("pay", "z")]], MAP)))


def test_a_hostile_record_costs_no_more_than_an_ordinary_one():
    many = [[(f"k{i}", "v") for i in range(5000)]]
    tokens = tokens_from_column(pa.array(many, MAP))
    assert tokens.shape == (1, PER_REQUEST) and (tokens != 0).all()


def test_validated_rows_carry_their_tokens_and_other_shapes_are_ignored():
    batch, dead = validate_table(table([[("net", "p1")], None, [("net", "p1"), ("pay", "c")]]), D)
    assert not dead and batch.attributes is not None
    assert batch.attributes[0, 0] == batch.attributes[2, 0] == token("net", "p1")
    assert (batch.take(np.array([1])).attributes == 0).all()
    # A column of another type is not the contract's: every row stays, without attributes.
    batch, dead = validate_table(table(["not a map"] * 3, pa.string()), D)
    assert not dead and len(batch) == 3 and not batch.attributes.any()
    # A file without the column is as valid as before.
    batch, dead = validate_table(table([None] * 2).drop_columns(["attributes"]), D)
    assert not dead and batch.attributes is None


def test_json_requests_carry_attributes_through_to_the_batch():
    record = {"request_id": "r1", "ts": 1_767_225_600_000, "account_id": "a", "embedding": [1.0] * D,
              "attributes": {"net": "p1", "bad": 3}}
    row = decode_json(json.dumps(record).encode())
    assert row.attributes == {"net": "p1"}  # a non-string value is not the contract's
    batch, dead = validate_table(json_rows_table([row]), D)
    assert not dead and batch.attributes[0, 0] == token("net", "p1")
    odd = decode_json(json.dumps({**record, "attributes": ["net", "p1"]}).encode())
    assert odd.attributes is None
