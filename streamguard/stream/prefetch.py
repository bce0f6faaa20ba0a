"""Run an iterator one step ahead on a thread of its own, so reading overlaps detection.

``replay`` spends about a quarter of its time reading and validating the file (cProfile of the
issue-14 file: reading 0.9 s and ``schema.validate_table`` 1.1 s of 8.1 s), work that releases the
GIL for much of its length, while the detector works on the batch before. ``prefetched`` moves the
producing side to a thread and hands its items over through a bounded queue: the items, their
order and the exceptions are those of the iterator itself, only earlier; at most ``depth`` items
wait, so memory stays bounded as the reading's own settings bound it.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["prefetched"]

T = TypeVar("T")

_DONE = object()
_POLL_S = 0.1
"""How often a producer blocked on a full queue looks whether the consumer has gone."""


class _Raised:
    """An exception of the producer, carried to the consumer to be raised there."""

    def __init__(self, error: BaseException) -> None:
        self.error = error


def prefetched(items: Iterable[T], depth: int) -> Iterator[T]:
    """Yield ``items`` in order, producing up to ``depth`` of them ahead on a background thread.

    ``depth`` 0 yields straight from ``items`` on the caller's thread. An exception raised while
    producing is raised to the consumer at the point where its item would have come. When the
    consumer stops early (an error of its own, or it closes the generator), the producer stops at
    its next handover and the source iterator is closed on the producer's thread.
    """
    if depth <= 0:
        yield from items
        return
    handover: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def hand(item: object) -> bool:
        while not stop.is_set():
            try:
                handover.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        source = iter(items)
        try:
            for item in source:
                if not hand(item):
                    return
            hand(_DONE)
        except BaseException as error:  # noqa: BLE001 - every error goes to the consumer, which raises it
            hand(_Raised(error))
        finally:
            close = getattr(source, "close", None)
            if close is not None:
                close()

    worker = threading.Thread(target=produce, name="streamguard-prefetch", daemon=True)
    worker.start()
    try:
        while True:
            item = handover.get()
            if item is _DONE:
                return
            if isinstance(item, _Raised):
                raise item.error
            yield item
    finally:
        stop.set()
        worker.join()
