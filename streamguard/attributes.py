"""Request attributes: pseudonymised metadata, kept only as keyed tokens.

The request record may carry ``attributes``, a map of string keys to string
values that the gateway has already pseudonymised (``net``: a network prefix,
``pay``: a payment instrument, ``client``: a client fingerprint; keys are open
ended, see DESIGN.md). streamguard never keeps a value: each (key, value) pair
becomes a 64-bit token at validation, so values cannot reach a metric, a log
line, an alert or a checkpoint.

A token's top byte is a code of its key (a hash of the key's name, so it is
the same in every replica and after every restart) and its low 56 bits a hash
of the key and the value. Two accounts that share a token shared a value of
that key. At most :data:`PER_REQUEST` pairs of a request are kept (a hostile
record with thousands of keys costs no more than an ordinary one).
"""

from __future__ import annotations

import hashlib

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PER_REQUEST = 4
"""Attribute pairs kept per request (the contract's examples are three: net, pay, client)."""

_VALUE_MASK = (1 << 56) - 1

KEY_NAMES: dict[int, str] = {}
"""Key code -> the first key name seen with it (keys are not secret, values are); at most 256."""




def key_code(key: str) -> int:
    """The key's code, 1..255 (0 marks an empty token slot)."""
    return 1 + hashlib.blake2b(key.encode("utf-8", "replace"), digest_size=1).digest()[0] % 255


def token(key: str, value: str) -> int:
    """The (key, value) pair as a 64-bit token: key code on top, a hash of both below."""
    code = key_code(key)
    if len(KEY_NAMES) < 256:
        KEY_NAMES.setdefault(code, key)
    digest = hashlib.blake2b(
        key.encode("utf-8", "replace") + b"\x00" + value.encode("utf-8", "replace"), digest_size=8
    ).digest()
    return (code << 56) | (int.from_bytes(digest, "little") & _VALUE_MASK)


def key_of(tokens: np.ndarray) -> np.ndarray:
    """Key codes of tokens (uint64 array in, int64 array out)."""
    return (np.asarray(tokens, dtype=np.uint64) >> np.uint64(56)).astype(np.int64)


def is_attribute_type(kind: pa.DataType) -> bool:
    """A column type the contract's ``attributes`` may arrive as: a map (or a struct) of strings."""
    if pa.types.is_map(kind):
        return _stringish(kind.key_type) and _stringish(kind.item_type)
    if pa.types.is_struct(kind):
        return all(_stringish(kind.field(i).type) for i in range(kind.num_fields))
    return pa.types.is_null(kind)


def _stringish(kind: pa.DataType) -> bool:
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_null(kind)


def tokens_from_column(column: pa.ChunkedArray | pa.Array) -> np.ndarray:
    """(n, PER_REQUEST) uint64 tokens of an ``attributes`` column; 0 where a request has fewer pairs.

    A column of another type yields no tokens (the rows stay valid: attributes are optional).
    """
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(col)
    out = np.zeros((n, PER_REQUEST), dtype=np.uint64)
    if n == 0 or not is_attribute_type(col.type) or pa.types.is_null(col.type):
        return out
    if pa.types.is_struct(col.type):
        pairs = [(col.type.field(i).name, col.field(i)) for i in range(col.type.num_fields)]
        rank = np.zeros(n, dtype=np.int64)
        valid = col.is_valid().to_numpy(zero_copy_only=False)
        for key, values in pairs[:PER_REQUEST]:
            vals = values.cast(pa.string()).to_pylist()
            for i, value in enumerate(vals):
                if valid[i] and value:
                    out[i, rank[i]] = token(key, value)
                    rank[i] += 1
        return out
    # A map: flatten to (row, key, value) and hash each distinct pair once.
    as_list = pa.ListArray.from_arrays(col.offsets, col.values)  # list<struct<key, value>>: the compute kernels take it
    entries = pc.list_flatten(as_list)
    if len(entries) == 0:
        return out
    rows = pc.list_parent_indices(as_list).to_numpy(zero_copy_only=False).astype(np.int64)
    keys = entries.field(0).cast(pa.string())
    items = entries.field(1).cast(pa.string())
    encoded = pc.binary_join_element_wise(keys, items, "\x00", null_handling="emit_null").dictionary_encode()
    dictionary = encoded.dictionary.to_pylist()
    hashed = np.zeros(len(dictionary) + 1, dtype=np.uint64)  # the last: a null pair
    for d, text in enumerate(dictionary):
        key, _, value = text.partition("\x00")
        if value:
            hashed[d] = token(key, value)
    codes = pc.fill_null(encoded.indices, len(dictionary)).to_numpy(zero_copy_only=False).astype(np.int64)
    tokens = hashed[codes]
    keep = (tokens != 0) & col.is_valid().to_numpy(zero_copy_only=False)[rows]  # a null map's slot may hold entries
    rows, tokens = rows[keep], tokens[keep]
    if rows.size == 0:
        return out
    # The first PER_REQUEST pairs of each row (entries are in row order).
    first = np.r_[0, np.flatnonzero(np.diff(rows)) + 1]
    rank = np.arange(rows.size) - np.repeat(first, np.diff(np.r_[first, rows.size]))
    fits = rank < PER_REQUEST
    out[rows[fits], rank[fits]] = tokens[fits]
    return out
