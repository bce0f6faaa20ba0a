"""The JSON Lines alert file: ``replay --alerts`` and ``run --alerts-file``, one alert record a line."""

from __future__ import annotations

import hashlib
import logging
import os
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from streamguard.schema import AlertRecord

# The logger these lines have always had (the sink lived in streamguard/service.py).
log = logging.getLogger("streamguard.service")


def _digest(line: str) -> bytes:
    return hashlib.blake2b(line.encode(), digest_size=16).digest()


class AlertFile:
    """The JSON Lines alert file (an :class:`~streamguard.sinks.alerts.AlertSink`).

    ``fresh`` (``replay``): the file starts empty, as each replay rewrites its
    output. Otherwise (``run``) it is appended to and made idempotent across
    restarts: on open, a partial last line (a crash mid-write) is cut, and the
    lines after ``dedup_from`` (the oldest position a checkpoint recorded for
    this file) are remembered by digest: alerts regenerated after a restore
    that are already in the file are not written again.

    Lines go to the file as they are written, through the file's buffer:
    :meth:`flush` hands them to the operating system, :meth:`sync` makes them
    durable and moves :attr:`size`, the position a checkpoint records.
    """

    def __init__(self, path: str | Path, dedup_from: int | None = None, fresh: bool = False) -> None:
        self.path = Path(path).resolve()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w+b" if fresh else "a+b")
        self.size = self._cut_partial_line()
        self.tail: Counter[bytes] = Counter()
        if dedup_from is not None and dedup_from < self.size:
            self._fh.seek(dedup_from)
            for line in self._fh.read(self.size - dedup_from).splitlines():
                if line.strip():
                    self.tail[_digest(line.decode())] += 1
        self._fh.seek(0, os.SEEK_END)

    def _cut_partial_line(self) -> int:
        """Cut what follows the last newline (a crash mid-write); the file's size after it."""
        size = self._fh.seek(0, os.SEEK_END)
        if size:
            self._fh.seek(size - 1)
            if self._fh.read(1) != b"\n":
                self._fh.seek(0)
                keep = self._fh.read().rfind(b"\n") + 1
                log.warning("%s: cutting a partial last line (%d bytes) left by a crash", self.path, size - keep)
                self._fh.truncate(keep)
                size = keep
        return size

    def forget(self, alerts: Sequence[AlertRecord]) -> None:
        """These alerts are in the file but not covered by a checkpoint: skip them when they come again."""
        for alert in alerts:
            self.tail[_digest(alert.to_json())] += 1

    def write(self, alerts: Iterable[AlertRecord]) -> None:
        for alert in alerts:
            line = alert.to_json()
            key = _digest(line)
            if self.tail.get(key):
                self.tail[key] -= 1
                continue
            self._fh.write((line + "\n").encode())

    def flush(self) -> None:
        self._fh.flush()

    def sync(self) -> None:
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self.size = self._fh.tell()

    def close(self) -> None:
        self._fh.close()
