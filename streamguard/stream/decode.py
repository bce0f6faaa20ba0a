"""Kafka record values -> validated request rows, or the reason they are not.

A request topic carries two value formats (DESIGN.md, Data contracts), told
apart per record, never per topic:

- an **Arrow IPC stream** (starts with the IPC continuation marker
  ``FF FF FF FF``) holding one or more record batches of many requests, with
  the contract's column names;
- a **JSON object**, one request, with ``embedding`` as a list of numbers or
  ``embedding_b64`` as base64 of little-endian float32.

Whatever the bytes, :func:`decode_records` never raises on a value: every
record either yields rows or a dead letter with a reason (any
exception while decoding or validating a record is that record's dead letter,
never the service's end), and rows go through the same
:func:`streamguard.schema.validate_table` as ``replay`` (wrong dimension,
NaN/Inf, zero vector...), so a request is judged the same way from a file and
from Kafka. Dead records keep the ORIGINAL bytes: the whole value for a record
that does not decode, the row itself (a one-row Arrow IPC stream in the
record's schema) for one bad row of an Arrow batch.

Valid rows carry their source in ``RequestBatch.origin``: ``(offset, row)``
per row, row -1 for a JSON record. A row the partition later turns away by
its event time (stream/event_time.py) is dead-lettered from that:
:func:`turned_away_dead_letter` (the validated row, its embedding unit-norm;
the original bytes stay at that offset of the source topic).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.ipc as ipc

from streamguard.dead_letter import DeadLetter
from streamguard.schema import RecordFileError, RequestBatch, check_columns, infer_dim, validate_table

ARROW_MARKER = b"\xff\xff\xff\xff"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
_UNDECODABLE = "undecodable"


class DecodeError(ValueError):
    """A record value that is not a request record at all; the message is the dead-letter reason."""


@dataclass
class Record:
    """One Kafka record as the service sees it (the source strips the client's own type)."""

    offset: int
    value: bytes | None
    key: bytes | None = None


def kafka_source(source: str, offset: int, row: int | None = None) -> str:
    """A dead letter's source: ``SOURCE@OFFSET`` (``SOURCE`` is ``kafka:TOPIC/PARTITION``), `` row:R`` added
    for one row of an Arrow record."""
    return f"{source}@{offset}" if row is None else f"{source}@{offset} row:{row}"


def turned_away_dead_letter(rows: RequestBatch, i: int, reason: str, source: str, record: dict[str, Any]) -> DeadLetter:
    """Dead letter of row ``i`` of decoded rows (``origin`` ``(offset, row)``) turned away after decoding.

    ``record`` is the row's contract fields (embedding unit-norm). What the dead-letter topic gets is the
    validated row in its record's format: a JSON request as the JSON object ``record``, a row of an Arrow
    record as a one-row Arrow IPC stream.
    """
    offset, row = (int(v) for v in rows.origin[i])
    account = rows.account_ids[i]
    key = account.encode("utf-8", "replace") if isinstance(account, str) else None
    if row < 0:
        where, value = kafka_source(source, offset), json.dumps(record).encode()
        return DeadLetter(reason, where, record, offset=offset, value=value, key=key, fmt="json")
    table = pa.table(
        {
            "request_id": pa.array([rows.request_ids[i]], pa.string()),
            "ts": pa.array([int(rows.ts[i])], pa.timestamp("ms")),
            "account_id": pa.array([account], pa.string()),
            "org_id": pa.array([rows.org_ids[i]], pa.string()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(rows.embeddings[i], pa.float32()), rows.dim),
        }
    )
    where = kafka_source(source, offset, row)
    return DeadLetter(reason, where, record, offset=offset, key=key, row=row, row_table=table, fmt="arrow")


@dataclass
class Decoded:
    """What a run of records of one partition decodes to.

    batch : valid requests in record order (embeddings float32, unit rows)
    dead : rejected records and rows, in record order
    rows : rows seen (valid + rejected rows; an undecodable record counts once)
    """

    batch: RequestBatch
    dead: list[DeadLetter] = field(default_factory=list)
    rows: int = 0


def sniff(value: bytes | None) -> str:
    """``"arrow"``, ``"json"`` or ``"unknown"`` from the first bytes of a value."""
    if not value:
        return "unknown"
    if value[:4] == ARROW_MARKER:
        return "arrow"
    head = value[:64].lstrip()
    if head[:1] == b"{" or head[:3] == b"\xef\xbb\xbf":
        return "json"
    return "unknown"


# ------------------------------------------------------------------- Arrow


def decode_arrow(value: bytes) -> pa.Table:
    """An Arrow IPC stream value -> a table with the contract's columns (extra columns kept).

    Raises
    ------
    DecodeError
        Truncated or corrupt stream, no rows, or columns that are not request records.
    """
    try:
        reader = ipc.open_stream(pa.py_buffer(value))
        table = reader.read_all()
        # Full validation: a corrupt buffer must fail here, not crash a compute kernel later.
        table.validate(full=True)
    except Exception as exc:  # pyarrow raises ArrowInvalid, ArrowIOError, OSError, ... on bad input
        raise DecodeError(f"{_UNDECODABLE}: truncated or corrupt Arrow IPC stream ({_short(exc)})") from None
    if table.num_rows == 0:
        raise DecodeError(f"{_UNDECODABLE}: Arrow IPC stream holds no rows")
    try:
        check_columns(table.schema, "Arrow record")
    except RecordFileError as exc:
        raise DecodeError(f"{_UNDECODABLE}: {exc}") from None
    return table


# -------------------------------------------------------------------- JSON


@dataclass
class JsonRow:
    request_id: str | None
    ts: int | None
    account_id: str | None
    org_id: str | None
    embedding: np.ndarray | None
    attributes: dict[str, str] | None = None


def _number(value: Any) -> bool:
    return type(value) is float or type(value) is int  # bool is an int subclass: excluded on purpose


def decode_json(value: bytes) -> JsonRow:
    """One JSON request -> its fields, typed; contract violations raise :class:`DecodeError`.

    Missing or null ``request_id``/``account_id``/``ts``/``embedding`` are left
    as None: :func:`validate_table` names them the way it does for files.
    """
    try:
        obj = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise DecodeError(f"{_UNDECODABLE}: not JSON ({_short(exc)})") from None
    if not isinstance(obj, dict):
        raise DecodeError(f"{_UNDECODABLE}: JSON value is a {type(obj).__name__}, expected an object")

    def text(name: str) -> str | None:
        v = obj.get(name)
        if v is None or isinstance(v, str):
            return v
        raise DecodeError(f"{_UNDECODABLE}: JSON field {name} must be a string, found {type(v).__name__}")

    request_id, account_id, org_id = text("request_id"), text("account_id"), text("org_id")
    ts_raw = obj.get("ts")
    ts: int | None
    if ts_raw is None:
        ts = None
    elif type(ts_raw) is int:
        ts = ts_raw
    elif type(ts_raw) is float and math.isfinite(ts_raw) and ts_raw == int(ts_raw):
        ts = int(ts_raw)
    else:
        raise DecodeError(f"{_UNDECODABLE}: JSON field ts must be integer epoch milliseconds, found {_short(ts_raw)}")
    if ts is not None and not INT64_MIN <= ts <= INT64_MAX:
        raise DecodeError(f"{_UNDECODABLE}: JSON field ts is out of the int64 range")

    has_list, has_b64 = obj.get("embedding") is not None, obj.get("embedding_b64") is not None
    if has_list and has_b64:
        raise DecodeError(f"{_UNDECODABLE}: both embedding and embedding_b64 are set")
    embedding: np.ndarray | None = None
    if has_list:
        values = obj["embedding"]
        if not isinstance(values, list) or not all(_number(v) for v in values):
            raise DecodeError(f"{_UNDECODABLE}: JSON field embedding must be a list of numbers")
        try:
            with np.errstate(over="ignore", invalid="ignore"):
                embedding = np.asarray(values, dtype=np.float64).astype(np.float32)
        except (OverflowError, ValueError):
            raise DecodeError(f"{_UNDECODABLE}: JSON field embedding holds a number out of range") from None
    elif has_b64:
        raw = obj["embedding_b64"]
        if not isinstance(raw, str):
            raise DecodeError(f"{_UNDECODABLE}: JSON field embedding_b64 must be a base64 string")
        try:
            blob = base64.b64decode(raw, validate=True)
        except (binascii.Error, ValueError):
            raise DecodeError(f"{_UNDECODABLE}: JSON field embedding_b64 is not valid base64") from None
        if len(blob) % 4:
            raise DecodeError(
                f"{_UNDECODABLE}: embedding_b64 holds {len(blob)} bytes, not a whole number of float32 values"
            )
        embedding = np.frombuffer(blob, dtype="<f4").astype(np.float32)
    # Optional metadata (DESIGN.md): a JSON object of strings; anything else in it is not the
    # contract's and is left out, like an unknown field (the request itself is still judged).
    raw_attributes = obj.get("attributes")
    attributes = None
    if isinstance(raw_attributes, dict):
        attributes = {k: v for k, v in raw_attributes.items() if isinstance(k, str) and isinstance(v, str)} or None
    return JsonRow(request_id, ts, account_id, org_id, embedding, attributes)


def json_rows_table(rows: Sequence[JsonRow]) -> pa.Table:
    """JSON requests as a table of the contract's columns (embedding as list<float32>)."""
    lengths = np.array([0 if r.embedding is None else r.embedding.shape[0] for r in rows], dtype=np.int64)
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    parts = [r.embedding for r in rows if r.embedding is not None and r.embedding.size]
    flat = np.concatenate(parts) if parts else np.empty(0, np.float32)
    mask = pa.array([r.embedding is None for r in rows], pa.bool_())
    embedding = pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(flat, pa.float32()), mask=mask)
    columns = {
        "request_id": pa.array([r.request_id for r in rows], pa.string()),
        "ts": pa.array([r.ts for r in rows], pa.int64()),
        "account_id": pa.array([r.account_id for r in rows], pa.string()),
        "org_id": pa.array([r.org_id for r in rows], pa.string()),
        "embedding": embedding,
    }
    if any(r.attributes for r in rows):
        columns["attributes"] = pa.array(
            [list(r.attributes.items()) if r.attributes else None for r in rows], pa.map_(pa.string(), pa.string())
        )
    return pa.table(columns)


# ---------------------------------------------------------------- decoder


class RecordDecoder:
    """Decodes the records of one stream with a fixed embedding dimension.

    Parameters
    ----------
    dim : the stream's dimension D; None to take it from the first record
        that has embeddings (log it, and prefer setting it: a poison record
        first in the stream would fix a wrong D)
    """

    def __init__(self, dim: int | None = None) -> None:
        self.dim = dim

    def decode_records(self, records: Iterable[Record], source: str = "kafka") -> Decoded:
        """Decode records of one partition in order. Never raises on a record's content.

        Parameters
        ----------
        records : in offset order
        source : prefix of dead-letter sources (``kafka:TOPIC/PARTITION``)
        """
        batches: list[RequestBatch] = []
        dead: list[DeadLetter] = []
        rows = 0
        pending: list[tuple[Record, JsonRow]] = []

        def whole_record(rec: Record, reason: str, fmt: str) -> None:
            """The record is dead-lettered as it came: its original bytes."""
            where = kafka_source(source, rec.offset)
            dead.append(DeadLetter(reason, where, offset=rec.offset, value=rec.value, key=rec.key, fmt=fmt))

        def one_row(rec: Record, reason: str, table: pa.Table, row: int) -> None:
            """One row of an Arrow record is dead-lettered, in the record's schema."""
            where, row_table = kafka_source(source, rec.offset, row), table.slice(row, 1)
            dead.append(DeadLetter(reason, where, offset=rec.offset, key=rec.key, row=row, row_table=row_table, fmt="arrow"))

        def flush_json() -> None:
            if not pending:
                return
            groups = [pending[:]]
            batch, bad = self._validate_json([row for _, row in pending], f"{source}@json")
            if batch is None and len(pending) > 1:
                # The group failed as a whole: judge record by record, so one record cannot sink the others.
                groups = [[item] for item in pending]
            for group in groups:
                if len(groups) > 1:
                    batch, bad = self._validate_json([row for _, row in group], f"{source}@json")
                if batch is None:  # the dimension cannot be told yet and no row has one, or the record is unusable
                    for rec, _ in group:
                        whole_record(rec, bad, "json")
                    continue
                offsets = np.array([rec.offset for rec, _ in group], dtype=np.int64)
                batch.origin = np.stack([offsets[batch.origin], np.full(len(batch), -1, np.int64)], axis=1)
                batches.append(batch)
                for index, reason in bad:
                    rec = group[index][0]
                    whole_record(rec, reason, "json")
            pending.clear()

        arrows: list[tuple[Record, pa.Table]] = []

        def flush_arrow() -> None:
            # Consecutive Arrow records of one schema are validated in one call (it has a fixed cost).
            if not arrows:
                return
            if len(arrows) > 1:
                try:
                    combined = pa.concat_tables([t for _, t in arrows])
                except Exception:  # noqa: BLE001 - judged record by record below
                    combined = None
                batch, bad = (None, None) if combined is None else self._validate(combined, f"{source}@{arrows[0][0].offset}")
                if batch is not None:
                    starts = np.cumsum([0] + [t.num_rows for _, t in arrows])
                    record = np.searchsorted(starts, batch.origin, side="right") - 1
                    offsets = np.array([rec.offset for rec, _ in arrows], dtype=np.int64)
                    batch.origin = np.stack([offsets[record], batch.origin - starts[record]], axis=1)
                    batches.append(batch)
                    for index, reason in bad:
                        k = int(np.searchsorted(starts, index, side="right")) - 1
                        rec, table = arrows[k]
                        row = index - int(starts[k])
                        one_row(rec, reason, table, row)
                    arrows.clear()
                    return
            for rec, table in arrows:  # one record, or a group that failed as a whole: record by record
                batch, bad = self._validate(table, f"{source}@{rec.offset}")
                if batch is None:
                    whole_record(rec, bad, "arrow")
                    continue
                batch.origin = np.stack([np.full(len(batch), rec.offset, np.int64), batch.origin], axis=1)
                batches.append(batch)
                for index, reason in bad:
                    one_row(rec, reason, table, index)
            arrows.clear()

        for rec in records:
            kind = sniff(rec.value)
            if kind != "arrow":
                flush_arrow()
            if kind == "json":
                rows += 1
                try:
                    pending.append((rec, decode_json(rec.value or b"")))
                except Exception as exc:  # DecodeError, or anything else: the record's dead letter either way
                    flush_json()
                    whole_record(rec, _reason(exc), "json")
                continue
            flush_json()
            if kind == "unknown":
                rows += 1
                reason = f"{_UNDECODABLE}: empty value" if not rec.value else f"{_UNDECODABLE}: neither a JSON object nor an Arrow IPC stream"
                whole_record(rec, reason, "unknown")
                continue
            try:
                table = decode_arrow(rec.value or b"")
            except Exception as exc:
                rows += 1
                flush_arrow()
                whole_record(rec, _reason(exc), "arrow")
                continue
            rows += table.num_rows
            if arrows and not table.schema.equals(arrows[0][1].schema):
                flush_arrow()
            arrows.append((rec, table))
        flush_arrow()
        flush_json()
        dim = self.dim if self.dim is not None else 0
        return Decoded(RequestBatch.concat(batches, dim), dead, rows)

    def _validate_json(self, rows: Sequence[JsonRow], source: str) -> tuple[RequestBatch | None, Any]:
        """:meth:`_validate` of JSON requests (a string no Arrow column can hold fails like any other)."""
        try:
            table = json_rows_table(rows)
        except Exception as exc:  # noqa: BLE001 - e.g. a lone UTF-16 surrogate in a string field
            return None, _reason(exc)
        return self._validate(table, source)

    def _validate(self, table: pa.Table, source: str) -> tuple[RequestBatch | None, Any]:
        """validate_table, with the dimension fixed on first use; (None, reason) when a table is unusable."""
        if self.dim is None:
            try:
                self.dim = infer_dim(table)
            except Exception as exc:  # noqa: BLE001 - whatever a record does, it is that record's dead letter
                return None, _reason(exc)
        try:
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                batch, dead = validate_table(table, self.dim, source=source)
        except Exception as exc:  # noqa: BLE001 - idem
            return None, _reason(exc)
        bad = [(int(d.source.rsplit(":", 1)[1]), d.reason) for d in dead]
        # Defence in depth: a row validation could not bring to unit norm never reaches a
        # detector (validate_table normalises in float64, so finite rows do reach norm 1).
        norms = np.linalg.norm(batch.embeddings.astype(np.float64), axis=1)
        broken = ~(np.abs(norms - 1.0) < 1e-3)
        if broken.any():
            dead_rows = {row for row, _ in bad}
            kept = np.array([i for i in range(table.num_rows) if i not in dead_rows], dtype=np.int64)
            bad.extend((int(kept[i]), "embedding has NaN or Inf: its norm overflows float32") for i in np.flatnonzero(broken))
            bad.sort()
            batch = batch.take(np.flatnonzero(~broken))
        return batch, bad


def _reason(exc: BaseException) -> str:
    """Dead-letter reason of an exception raised by one record: ours carry their reason, others are named."""
    if isinstance(exc, DecodeError):
        return str(exc)
    if isinstance(exc, (RecordFileError, pa.ArrowException, ValueError, TypeError, OverflowError)):
        return f"{_UNDECODABLE}: {_short(exc)}"
    return f"{_UNDECODABLE}: {type(exc).__name__}: {_short(exc)}"


def _short(value: Any, limit: int = 160) -> str:
    text = str(value).replace("\n", " ")
    return text if len(text) <= limit else text[: limit - 3] + "..."
