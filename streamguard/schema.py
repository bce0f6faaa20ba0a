"""Request and alert records: the data contracts of DESIGN.md, and their validation.

A request row that cannot be used (no account, no time, wrong dimension,
NaN/Inf, zero vector) never reaches a detector: :func:`validate_table` splits a
table into a clean :class:`RequestBatch` and a list of dead letters
(:class:`~streamguard.dead_letter.DeadLetter`). A file that is not a request
file at all raises :class:`RecordFileError` with one message a user can act on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamguard.attributes import PER_REQUEST, tokens_from_column
from streamguard.dead_letter import DeadLetter, jsonable

REQUIRED_COLUMNS = ("request_id", "ts", "account_id", "embedding")
OPTIONAL_COLUMNS = ("org_id", "attributes")
STRING_COLUMNS = ("request_id", "account_id", "org_id")

TS_RANGE_REASON = "event time outside the sane range"
"""Dead-letter reason of a ``ts`` no partition can accept (also used by stream/event_time.py)."""

_INT64_MAX = np.iinfo(np.int64).max
_MS_PER_UNIT = {"s": 1000, "ms": 1}
_UNITS_PER_MS = {"us": 1000, "ns": 1_000_000}

ALERT_KINDS = ("near_duplicate", "coverage_sweep", "campaign")


class RecordFileError(ValueError):
    """A request file that cannot be read as request records at all."""


def request_schema(dim: int, float16: bool = False) -> pa.Schema:
    """The Arrow schema of request records with a fixed embedding dimension."""
    value = pa.float16() if float16 else pa.float32()
    return pa.schema(
        [
            pa.field("request_id", pa.string(), nullable=False),
            pa.field("ts", pa.timestamp("ms"), nullable=False),
            pa.field("account_id", pa.string(), nullable=False),
            pa.field("org_id", pa.string(), nullable=True),
            pa.field("embedding", pa.list_(value, dim), nullable=False),
        ]
    )


@dataclass
class RequestBatch:
    """Validated requests, ready for the detectors.

    Attributes
    ----------
    request_ids, account_ids : (n,) object arrays of str
    org_ids : (n,) object array of str or None
    ts : (n,) int64, event time in epoch milliseconds
    embeddings : (n, d) float32, L2-normalised rows
    origin : (n,) or (n, k) int64, or None: where each row came from (a file row, a Kafka
        offset and row), carried through ``take`` and ``concat`` so that a row turned away
        later (by event time) can be dead-lettered with its source; detectors ignore it
    attributes : (n, attributes.PER_REQUEST) uint64 tokens of the request's attributes (0: none),
        or None when the source had none (see ``streamguard/attributes.py``: values are never kept)
    """

    request_ids: np.ndarray
    ts: np.ndarray
    account_ids: np.ndarray
    org_ids: np.ndarray
    embeddings: np.ndarray
    origin: np.ndarray | None = None
    attributes: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.ts.shape[0])

    @property
    def dim(self) -> int:
        return int(self.embeddings.shape[1])

    @classmethod
    def empty(cls, dim: int) -> "RequestBatch":
        obj = np.empty(0, dtype=object)
        return cls(obj, np.empty(0, np.int64), obj.copy(), obj.copy(), np.empty((0, dim), np.float32))

    def take(self, index: "np.ndarray | slice") -> "RequestBatch":
        """Rows by index array (a copy) or by slice (views, no copy)."""
        return RequestBatch(
            self.request_ids[index],
            self.ts[index],
            self.account_ids[index],
            self.org_ids[index],
            self.embeddings[index],
            None if self.origin is None else self.origin[index],
            None if self.attributes is None else self.attributes[index],
        )

    @classmethod
    def concat(cls, batches: Sequence["RequestBatch"], dim: int) -> "RequestBatch":
        batches = [b for b in batches if len(b)]  # an empty batch may not even have the dimension
        if not batches:
            return cls.empty(dim)
        origins = [b.origin for b in batches]
        traced = bool(origins) and all(o is not None for o in origins) and len({o.shape[1:] for o in origins}) == 1
        attributes = None
        if any(b.attributes is not None for b in batches):  # a batch without them has none: zero tokens
            attributes = np.concatenate(
                [b.attributes if b.attributes is not None else np.zeros((len(b), PER_REQUEST), np.uint64) for b in batches]
            )
        return cls(
            np.concatenate([b.request_ids for b in batches]),
            np.concatenate([b.ts for b in batches]),
            np.concatenate([b.account_ids for b in batches]),
            np.concatenate([b.org_ids for b in batches]),
            np.concatenate([b.embeddings for b in batches]),
            np.concatenate(origins) if traced else None,  # type: ignore[arg-type]
            attributes,
        )


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        f = float(value)
        return f if math.isfinite(f) else str(f)
    if isinstance(value, np.ndarray):
        return [_json_default(v) for v in value.tolist()]
    if isinstance(value, bytes):
        return value.hex()
    return str(value)


@dataclass
class AlertRecord:
    """One alert, exactly the fields of the contract (JSON Lines / the alerts topic)."""

    account_id: str
    ts: int
    score: float
    kind: str
    campaign_id: str | None
    evidence: dict[str, Any]
    events_seen: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "account_id": self.account_id,
            "ts": int(self.ts),
            "score": float(self.score),
            "kind": self.kind,
            "campaign_id": self.campaign_id,
            "evidence": self.evidence,
            "events_seen": int(self.events_seen),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), default=_json_default, sort_keys=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "AlertRecord":
        missing = {"account_id", "ts", "score", "kind", "evidence", "events_seen"} - set(data)
        if missing:
            raise ValueError(f"alert record lacks {sorted(missing)}")
        return cls(
            account_id=str(data["account_id"]),
            ts=int(data["ts"]),
            score=float(data["score"]),
            kind=str(data["kind"]),
            campaign_id=data.get("campaign_id"),
            evidence=dict(data["evidence"]),
            events_seen=int(data["events_seen"]),
        )


# ---------------------------------------------------------------- reading files


def read_request_file(path: str | Path) -> pa.Table:
    """Read a Parquet or Arrow IPC (file or stream) request file.

    Raises
    ------
    RecordFileError
        If the file is missing, is not Parquet/Arrow, or lacks contract columns.
    """
    path = Path(path)
    if not path.exists():
        raise RecordFileError(f"{path}: no such file")
    if path.is_dir():
        raise RecordFileError(f"{path}: is a directory, expected a Parquet or Arrow IPC file")
    with path.open("rb") as fh:
        head = fh.read(8)
    table: pa.Table | None = None
    errors = []
    if head[:4] == b"PAR1":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as exc:  # pyarrow raises several types for corrupt files
            raise RecordFileError(f"{path}: corrupt Parquet file ({exc})") from None
    else:
        import pyarrow.ipc as ipc

        for opener in (ipc.open_file, ipc.open_stream):
            try:
                with pa.memory_map(str(path)) as source:
                    table = opener(source).read_all()
                break
            except Exception as exc:
                errors.append(str(exc))
    if table is None:
        raise RecordFileError(
            f"{path}: not a Parquet or Arrow IPC file (expected request records with columns "
            f"{', '.join(REQUIRED_COLUMNS)})"
        )
    check_columns(table.schema, str(path))
    return table


class RequestFile:
    """A Parquet or Arrow IPC (file or stream) request file, read in record batches.

    Opening reads only the footer or the schema; :meth:`batches` then reads the
    rows a piece at a time (Parquet row groups, Arrow record batches), so memory
    depends on the pieces, not on the file. Every problem is a
    :class:`RecordFileError` with the path in its message.

    Attributes
    ----------
    path : the file
    format : ``"parquet"``, ``"arrow-file"`` or ``"arrow-stream"``
    schema : its Arrow schema (contract columns checked)
    num_rows : rows in a Parquet file (from its footer); None for Arrow IPC (known only once read)
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.exists():
            raise RecordFileError(f"{self.path}: no such file")
        if self.path.is_dir():
            raise RecordFileError(f"{self.path}: is a directory, expected a Parquet or Arrow IPC file")
        with self.path.open("rb") as fh:
            head = fh.read(8)
        self.num_rows: int | None = None
        if head[:4] == b"PAR1":
            import pyarrow.parquet as pq

            try:
                meta = pq.ParquetFile(self.path)
                self.schema = meta.schema_arrow
                self.num_rows = int(meta.metadata.num_rows)
            except Exception as exc:  # pyarrow raises several types for corrupt files
                raise RecordFileError(f"{self.path}: corrupt Parquet file ({exc})") from None
            self.format = "parquet"
        else:
            import pyarrow.ipc as ipc

            for name, opener in (("arrow-file", ipc.open_file), ("arrow-stream", ipc.open_stream)):
                try:
                    with pa.OSFile(str(self.path)) as source:
                        reader = opener(source)
                        self.schema = reader.schema
                    self.format = name
                    break
                except Exception:  # noqa: BLE001 - not this kind of Arrow file: try the next
                    continue
            else:
                raise RecordFileError(
                    f"{self.path}: not a Parquet or Arrow IPC file (expected request records with columns "
                    f"{', '.join(REQUIRED_COLUMNS)})"
                )
        check_columns(self.schema, str(self.path))

    def batches(self, rows: int, columns: Sequence[str] | None = None) -> Iterator[pa.RecordBatch]:
        """The file's rows in file order, as record batches of at most ``rows`` rows.

        ``columns`` reads only these columns (a Parquet file then reads nothing else).
        """
        if rows < 1:
            raise ValueError("rows must be >= 1")
        try:
            if self.format == "parquet":
                import pyarrow.parquet as pq

                # pre_buffer off: a row group's column chunks are read as they are decoded, not all at once.
                parquet = pq.ParquetFile(self.path, pre_buffer=False, buffer_size=1 << 20)
                yield from parquet.iter_batches(batch_size=rows, columns=list(columns) if columns else None)
                return
            import pyarrow.ipc as ipc

            # Whole rows through an OS file, not a memory map, whose pages would stay in the resident set;
            # a few columns through a map, which reads only their pages.
            with (pa.memory_map(str(self.path)) if columns else pa.OSFile(str(self.path))) as source:
                if self.format == "arrow-file":
                    reader = ipc.open_file(source)
                    pieces: Iterator[pa.RecordBatch] = (reader.get_batch(i) for i in range(reader.num_record_batches))
                else:
                    pieces = iter(ipc.open_stream(source))
                for piece in pieces:
                    if columns:
                        piece = piece.select(list(columns))
                    for start in range(0, piece.num_rows, rows):
                        yield piece.slice(start, rows)
        except RecordFileError:
            raise
        except (OSError, pa.ArrowException) as exc:
            raise RecordFileError(f"{self.path}: cannot read the file past its start ({exc})") from None

    def dim(self, rows: int = 65_536) -> int:
        """The stream's embedding dimension, as :func:`infer_dim` finds it in the whole table."""
        emb_type = self.schema.field("embedding").type
        if pa.types.is_fixed_size_list(emb_type):
            return int(emb_type.list_size)
        return _dim_of_lengths(
            pc.list_value_length(batch.column(0)).to_numpy(zero_copy_only=False)
            for batch in self.batches(rows, columns=["embedding"])
        )


def check_columns(schema: pa.Schema, where: str) -> None:
    """Raise :class:`RecordFileError` unless ``schema`` holds request records.

    Every contract column must appear once, with a type its values can be read
    as; other columns are allowed (and ignored).
    """
    # attributes is left out: optional metadata of another shape, or twice, is ignored (attributes.py).
    twice = sorted({c for c in schema.names if c in REQUIRED_COLUMNS + ("org_id",) and schema.names.count(c) > 1})
    if twice:
        raise RecordFileError(
            f"{where}: column(s) {', '.join(twice)} appear more than once; each request-record column must appear once"
        )
    missing = [c for c in REQUIRED_COLUMNS if c not in schema.names]
    if missing:
        raise RecordFileError(
            f"{where}: missing column(s) {', '.join(missing)}; request records need "
            f"{', '.join(REQUIRED_COLUMNS)} (and optionally org_id); found {', '.join(schema.names)}"
        )
    emb = schema.field("embedding").type
    if not (pa.types.is_list(emb) or pa.types.is_fixed_size_list(emb) or pa.types.is_large_list(emb)):
        raise RecordFileError(f"{where}: column embedding must be a list of floats, found {emb}")
    if not (pa.types.is_floating(emb.value_type)):
        raise RecordFileError(f"{where}: embedding values must be float32 or float16, found {emb.value_type}")
    ts = schema.field("ts").type
    if not (pa.types.is_timestamp(ts) or pa.types.is_integer(ts)):
        raise RecordFileError(f"{where}: column ts must be a timestamp or int64 epoch ms, found {ts}")
    for name in STRING_COLUMNS:
        if name in schema.names and not _string_like(schema.field(name).type):
            raise RecordFileError(f"{where}: column {name} must hold strings, found {schema.field(name).type}")


def _string_like(kind: pa.DataType) -> bool:
    """Types whose values read as strings (integer ids are cast; an all-null column is all missing)."""
    if pa.types.is_dictionary(kind):
        kind = kind.value_type
    return (
        pa.types.is_string(kind)
        or pa.types.is_large_string(kind)
        or pa.types.is_string_view(kind)
        or pa.types.is_integer(kind)
        or pa.types.is_null(kind)
    )


def infer_dim(table: pa.Table) -> int:
    """The stream's embedding dimension: fixed by the type, else the most common row length."""
    emb_type = table.schema.field("embedding").type
    if pa.types.is_fixed_size_list(emb_type):
        return int(emb_type.list_size)
    return _dim_of_lengths([pc.list_value_length(table.column("embedding")).to_numpy(zero_copy_only=False)])


_DIM_SAMPLE = 100_000
"""Rows with an embedding, in file order, whose most common length is the dimension of a variable-length column."""


def _dim_of_lengths(pieces: Iterable[np.ndarray]) -> int:
    """The most common length among the first ``_DIM_SAMPLE`` non-empty embeddings (pieces in file order)."""
    sample: list[np.ndarray] = []
    have = 0
    for lengths in pieces:
        lengths = lengths[~np.isnan(lengths.astype(float))] if lengths.dtype.kind == "f" else lengths
        lengths = lengths[lengths > 0]
        sample.append(lengths[: _DIM_SAMPLE - have].astype(np.int64))
        have += sample[-1].size
        if have >= _DIM_SAMPLE:
            break
    if have == 0:
        raise RecordFileError("no row has an embedding: cannot tell the stream's dimension")
    return int(np.bincount(np.concatenate(sample)).argmax())


def _ts_to_ms(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Epoch ms from a timestamp (any unit) or integer column, with no silent wrap-around.

    Returns
    -------
    values : (n,) int64 epoch ms (0 where missing or not representable)
    valid : (n,) bool, not null
    representable : (n,) bool, the time fits int64 epoch ms (a timestamp[s] of 2**62 does not)
    """
    col = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    unit = col.type.unit if pa.types.is_timestamp(col.type) else "ms"
    valid = col.is_valid().to_numpy(zero_copy_only=False).astype(bool)
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.int64())  # the stored count of `unit`s: exact
    raw = pc.fill_null(col, 0).to_numpy(zero_copy_only=False)
    if raw.dtype == np.uint64:
        representable = raw <= np.uint64(_INT64_MAX)
        raw = np.where(representable, raw, 0)
    else:
        representable = np.ones(raw.shape, dtype=bool)
    values = raw.astype(np.int64)
    if unit in _MS_PER_UNIT and _MS_PER_UNIT[unit] > 1:
        factor = _MS_PER_UNIT[unit]
        fits = np.abs(values) <= _INT64_MAX // factor  # abs(INT64_MIN) wraps negative: caught below
        fits &= values != np.iinfo(np.int64).min
        representable &= fits
        values = np.where(fits, values, 0) * factor
    elif unit in _UNITS_PER_MS:
        values = values // _UNITS_PER_MS[unit]  # floor: the millisecond the instant falls in
    representable &= valid
    values = np.where(representable, values, 0)
    return values, valid, representable


def _strings(column: pa.ChunkedArray) -> np.ndarray:
    col = column.combine_chunks()
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        col = col.cast(pa.string())
    return np.asarray(col.to_pylist(), dtype=object)


def validate_table(
    table: pa.Table | pa.RecordBatch,
    dim: int,
    source: str = "file",
    row_offset: int = 0,
) -> tuple[RequestBatch, list[DeadLetter]]:
    """Split rows into a clean batch and dead letters.

    Parameters
    ----------
    table : request records (contract columns; extra columns are ignored)
    dim : the stream's embedding dimension
    source : label used in dead letters, rows are reported as ``source:ROW``
    row_offset : added to row numbers in dead-letter sources

    Returns
    -------
    batch : RequestBatch with only valid rows, embeddings float32 unit-norm
    dead : one DeadLetter per rejected row, in row order
    """
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    check_columns(table.schema, source)
    n = table.num_rows
    reasons = np.full(n, None, dtype=object)

    request_ids = _strings(table.column("request_id"))
    account_ids = _strings(table.column("account_id"))
    org_ids = _strings(table.column("org_id")) if "org_id" in table.schema.names else np.full(n, None, dtype=object)
    ts, ts_valid, ts_representable = _ts_to_ms(table.column("ts"))
    # Optional metadata: a column of another type is not the contract's and is ignored, like any extra column.
    attributes = tokens_from_column(table.column("attributes")) if table.schema.names.count("attributes") == 1 else None

    emb_col = table.column("embedding").combine_chunks()
    emb_valid = emb_col.is_valid().to_numpy(zero_copy_only=False)
    lengths = pc.fill_null(pc.list_value_length(emb_col), 0).to_numpy(zero_copy_only=False).astype(np.int64)
    good_len = emb_valid & (lengths == dim)
    embeddings = np.zeros((n, dim), dtype=np.float32)
    if good_len.any():
        idx = np.flatnonzero(good_len)
        # Every row of the right length (the usual batch): no gather, no zero-filled copy.
        whole = idx.size == n
        picked = emb_col if whole else emb_col.take(pa.array(idx))
        flat = picked.flatten() if hasattr(picked, "flatten") else pc.list_flatten(picked)
        values = flat.to_numpy(zero_copy_only=False)
        if values.dtype.kind != "f" or values.size != idx.size * dim:
            # nulls inside a list come back as objects/NaN: treat as non-finite below
            values = np.asarray(flat.to_pylist(), dtype=np.float64)
            values = values.reshape(idx.size, dim) if values.size == idx.size * dim else None
        else:
            values = values.reshape(idx.size, dim)
        if values is None:
            good_len[:] = False
        elif whole:
            embeddings = values.astype(np.float32, copy=False)
        else:
            embeddings[idx] = values.astype(np.float32, copy=False)

    # First failing check wins, in the order a user would fix them.
    def mark(mask: np.ndarray, reason: str) -> None:
        hit = mask & (reasons == None)  # noqa: E711 - elementwise on object array
        reasons[hit] = reason

    # _strings gives str or None: missing is None or empty (elementwise on the object arrays).
    mark((request_ids == None) | (request_ids == ""), "missing request_id")  # noqa: E711
    mark((account_ids == None) | (account_ids == ""), "missing account_id")  # noqa: E711
    mark(~ts_valid, "missing ts")
    mark(~ts_representable, f"{TS_RANGE_REASON}: ts is not representable as int64 epoch milliseconds")
    mark(~emb_valid, "missing embedding")
    wrong_dim = emb_valid & (lengths != dim)
    for i in np.flatnonzero(wrong_dim & (reasons == None)):  # noqa: E711
        reasons[i] = f"wrong dimension: {lengths[i]} (stream dimension is {dim})"
    finite = np.isfinite(embeddings).all(axis=1)
    mark(good_len & ~finite, "embedding has NaN or Inf")
    # float64: a finite float32 row above ~1e19 would overflow a float32 norm to inf.
    finite64 = (embeddings if finite.all() else np.where(np.isfinite(embeddings), embeddings, 0.0)).astype(np.float64)
    norms = np.sqrt(np.add.reduce(finite64 * finite64, axis=1))  # np.linalg.norm's own expression
    mark(good_len & finite & (norms <= 1e-12), "zero vector")

    ok = reasons == None  # noqa: E711
    ok_idx = np.flatnonzero(ok)
    # The rows that pass are finite, so finite64 holds them exactly; one float64 copy serves both.
    if ok_idx.size == n:
        clean = (finite64 / norms[:, None]).astype(np.float32)
    else:
        clean = (finite64[ok_idx] / norms[ok_idx, None]).astype(np.float32)
    batch = RequestBatch(
        request_ids[ok_idx],
        ts[ok_idx],
        account_ids[ok_idx],
        org_ids[ok_idx],
        clean,
        (row_offset + ok_idx).astype(np.int64),
        None if attributes is None else attributes[ok_idx],
    )

    dead: list[DeadLetter] = []
    bad_idx = np.flatnonzero(~ok)
    if bad_idx.size:
        for i, row in zip(bad_idx, _rows_for_dead_letters(table, bad_idx, ts, ts_representable)):
            dead.append(DeadLetter(str(reasons[i]), f"{source}:{row_offset + int(i)}", row))
    return batch, dead


def _rows_for_dead_letters(
    table: pa.Table, index: np.ndarray, ts: np.ndarray, ts_representable: np.ndarray
) -> list[dict[str, Any]]:
    """The rejected rows as JSON-able dicts, every column kept; a column that cannot be read is named, not fatal.

    ``ts`` is given in epoch ms when it is representable, else as the stored integer.
    """
    try:
        picked = table.take(pa.array(index))
    except Exception:  # noqa: BLE001 - a column that cannot be taken: keep the contract's columns
        keep = [i for i, name in enumerate(table.schema.names) if name in REQUIRED_COLUMNS + OPTIONAL_COLUMNS]
        picked = table.select(keep).take(pa.array(index))
    rows: list[dict[str, Any]] = [{} for _ in range(index.size)]
    for position, name in enumerate(picked.schema.names):
        column = picked.column(position)
        try:
            if name == "ts" and pa.types.is_timestamp(column.type):
                column = column.cast(pa.int64())
            values = column.to_pylist()
        except Exception as exc:  # noqa: BLE001 - an exotic column must not lose the row's dead letter
            values = [f"<unreadable {picked.schema.field(position).type}: {type(exc).__name__}>"] * index.size
        if name == "ts":
            values = [int(ts[i]) if ts_representable[i] else v for i, v in zip(index, values)]
        for row, value in zip(rows, values):
            key = name if name not in row else f"{name}#{position}"
            row[key] = jsonable(value)
    return rows

