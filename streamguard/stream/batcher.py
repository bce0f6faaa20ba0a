"""Micro-batching by size and deadline. Pure: no Kafka client, an injected clock.

Records arrive one source batch at a time; the batcher releases a batch as soon
as it holds ``max_size`` rows, or when the oldest waiting row has waited
``max_delay_s``. Large inputs are split so no released batch exceeds
``max_size``.
"""

from __future__ import annotations

import time
from typing import Callable, Generic, Sequence, TypeVar

T = TypeVar("T")


class MicroBatcher(Generic[T]):
    """Collects items (each with a row count) into batches.

    Parameters
    ----------
    max_size : rows per released batch
    max_delay_s : longest time a row waits before its batch is released
    clock : seconds, monotonic; injected so tests control time
    """

    def __init__(self, max_size: int, max_delay_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        if max_size < 1:
            raise ValueError("max_size must be >= 1")
        self.max_size = max_size
        self.max_delay_s = max_delay_s
        self.clock = clock
        self._items: list[T] = []
        self._rows = 0
        self._since: float | None = None

    @property
    def pending_rows(self) -> int:
        return self._rows

    def add(self, item: T, rows: int) -> None:
        if self._since is None:
            self._since = self.clock()
        self._items.append(item)
        self._rows += rows

    def due(self) -> bool:
        """True when a batch should be released now."""
        if self._rows >= self.max_size:
            return True
        return self._since is not None and self.clock() - self._since >= self.max_delay_s

    def take(self) -> Sequence[T]:
        """Everything waiting, in arrival order; the caller splits by ``max_size`` if needed."""
        items, self._items, self._rows, self._since = self._items, [], 0, None
        return items
