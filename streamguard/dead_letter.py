"""Dead letters: the records that were not fed to any detector, one type for files and Kafka.

A dead letter names why and where, and keeps enough to replay the record: the
row as JSON-able fields (what ``replay`` writes to its dead-letter JSON Lines
file) and, for a Kafka record, what the dead-letter topic gets (the original
bytes, its key and offset; see ``streamguard/sinks/kafka.py``). This module
imports nothing of streamguard, so that validation (``schema.py``), the
drivers (``stream/``) and the sinks (``sinks/``) can all use it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
import pyarrow.ipc as ipc


@dataclass
class DeadLetter:
    """A record (or one row of an Arrow record) that was not fed to any detector.

    Attributes
    ----------
    reason : why, e.g. ``"wrong dimension: 12 (stream dimension is 384)"``
    source : where it came from, for people: ``file row:N`` (a file's row), ``row:N`` (its place in
        the file's event-time order), ``kafka:TOPIC/PARTITION@OFFSET`` (``... row:R`` for one row of
        an Arrow record)
    record : the row as JSON-able fields where the driver has them: a file's rows, rows turned away
        by event time (empty for a Kafka record rejected as it was decoded: its bytes stand for it)
    offset : the Kafka offset of the record (None for a file)
    value : the Kafka record's original bytes (whole record), or None when ``row_table`` holds the row
    key : the Kafka record's key
    row : row index inside an Arrow record, None for a whole record
    row_table : the offending row (one-row table in the record's schema)
    fmt : the Kafka record's format: ``"json"``, ``"arrow"`` or ``"unknown"``
    """

    reason: str
    source: str
    record: dict[str, Any] = field(default_factory=dict)
    offset: int | None = None
    value: bytes | None = None
    key: bytes | None = None
    row: int | None = None
    row_table: pa.Table | None = None
    fmt: str = "unknown"

    def to_json(self) -> str:
        """The dead-letter file's line: reason, source and record (the Kafka fields go to the topic instead)."""
        return json.dumps({"reason": self.reason, "source": self.source, "record": self.record}, default=jsonable)

    def original_bytes(self) -> bytes:
        """The bytes for the dead-letter topic: the record's value, or the row as a one-row Arrow IPC stream."""
        if self.row_table is None:
            return self.value if self.value is not None else b""
        return arrow_stream_bytes(self.row_table)


def arrow_stream_bytes(table: pa.Table) -> bytes:
    """One Arrow IPC stream holding ``table``."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def jsonable(value: Any) -> Any:
    """A value of any Arrow type as JSON-able Python: numbers, strings, lists and dicts."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.hex()
    if hasattr(value, "timestamp"):
        try:
            return int(value.timestamp() * 1000)
        except (OverflowError, ValueError, OSError):
            return str(value)
    return str(value)
