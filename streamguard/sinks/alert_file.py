"""The ``--alerts-file`` sink of ``streamguard run``: JSON Lines, idempotent across restarts."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Sequence

from streamguard.schema import AlertRecord

# The logger these lines have always had (the sink lived in streamguard/service.py).
log = logging.getLogger("streamguard.service")


def _digest(line: str) -> bytes:
    return hashlib.blake2b(line.encode(), digest_size=16).digest()


class AlertFile:
    """The ``--alerts-file`` JSON Lines sink, made idempotent across restarts.

    On open, a partial last line (a crash mid-write) is cut, and the lines
    after ``dedup_from`` (the oldest position a checkpoint recorded for this
    file) are remembered by digest: alerts regenerated after a restore that
    are already in the file are not written again.
    """

    def __init__(self, path: Path, dedup_from: int | None) -> None:
        self.path = Path(path).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a+b")
        self._fh.seek(0, os.SEEK_END)
        size = self._fh.tell()
        if size:
            self._fh.seek(max(size - 1, 0))
            if self._fh.read(1) != b"\n":
                self._fh.seek(0)
                data = self._fh.read()
                keep = data.rfind(b"\n") + 1
                log.warning("%s: cutting a partial last line (%d bytes) left by a crash", self.path, size - keep)
                self._fh.truncate(keep)
                size = keep
        self.size = size
        self.tail: Counter[bytes] = Counter()
        if dedup_from is not None and dedup_from < size:
            self._fh.seek(dedup_from)
            for line in self._fh.read(size - dedup_from).splitlines():
                if line.strip():
                    self.tail[_digest(line.decode())] += 1
        self._fh.seek(0, os.SEEK_END)
        self._buffer: list[str] = []

    def forget(self, alerts: Sequence[AlertRecord]) -> None:
        """These alerts are in the file but not covered by a checkpoint: skip them when they come again."""
        for alert in alerts:
            self.tail[_digest(alert.to_json())] += 1

    def write(self, alert: AlertRecord) -> None:
        line = alert.to_json()
        key = _digest(line)
        if self.tail.get(key):
            self.tail[key] -= 1
            return
        self._buffer.append(line + "\n")

    def sync(self) -> None:
        if self._buffer:
            self._fh.write("".join(self._buffer).encode())
            self._buffer = []
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.size = self._fh.tell()

    def close(self) -> None:
        self._fh.close()
