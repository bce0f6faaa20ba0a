"""Dead-letter sinks: every rejected record, with its reason, nothing lost."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Iterable

import pyarrow as pa
import pyarrow.ipc as ipc

from streamguard.schema import DeadLetter


class DeadLetterSink:
    """Counts dead letters by reason and, given a path, writes them as JSON Lines."""

    def __init__(self, path: str | Path | None = None, keep_in_memory: int = 10_000) -> None:
        self.keep_in_memory = keep_in_memory
        self.path = Path(path) if path is not None else None
        self._fh: IO[str] | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = self.path.open("w", encoding="utf-8")
        self.by_reason: Counter[str] = Counter()
        self.kept: list[DeadLetter] = []

    @property
    def count(self) -> int:
        return sum(self.by_reason.values())

    def write(self, letters: Iterable[DeadLetter]) -> None:
        for letter in letters:
            # Group reasons like "wrong dimension: 12 (...)" under their stem for counting.
            self.by_reason[letter.reason.split(":")[0]] += 1
            if self._fh is not None:
                self._fh.write(letter.to_json() + "\n")
            elif len(self.kept) < self.keep_in_memory:
                self.kept.append(letter)

    def flush(self) -> None:
        if self._fh is not None:
            self._fh.flush()

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def arrow_stream_bytes(table: pa.Table) -> bytes:
    """One Arrow IPC stream holding ``table``."""
    sink = pa.BufferOutputStream()
    with ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


@dataclass
class DeadRecord:
    """A record (or one row of an Arrow record) that is not fed to any detector.

    Attributes
    ----------
    offset : the Kafka offset of the record
    reason : why, e.g. ``"wrong dimension: 12 (stream dimension is 384)"``
    value : the original bytes (whole record), or None when ``row_table`` holds the row
    row : row index inside an Arrow record, None for a whole record
    row_table : the offending row (one-row table in the record's schema)
    fmt : ``"json"``, ``"arrow"`` or ``"unknown"``
    """

    offset: int
    reason: str
    value: bytes | None
    key: bytes | None = None
    row: int | None = None
    row_table: pa.Table | None = None
    fmt: str = "unknown"

    def original_bytes(self) -> bytes:
        """The bytes to dead-letter: the record's value, or the row as a one-row Arrow IPC stream."""
        if self.row_table is None:
            return self.value if self.value is not None else b""
        return arrow_stream_bytes(self.row_table)
