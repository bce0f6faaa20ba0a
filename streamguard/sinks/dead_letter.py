"""Dead-letter sinks: every rejected record, with its reason, nothing lost."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import IO, Iterable

from streamguard.dead_letter import DeadLetter


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
