"""The emulated device's streams, events and pinned host memory (CUDA's bookkeeping, executed synchronously).

``Stream`` and ``Event`` keep track of the current stream and of what an
event covers; pinned buffers are write-protected while an asynchronous copy
out of them is in flight, until a synchronisation covers it. Part of the
emulated device of :mod:`streamguard.backends.emulated_cupy`.
"""

from __future__ import annotations

import itertools
import threading
import weakref
from typing import Any

import numpy as np



class Event:
    """A point in one stream's work (``cupy.cuda.Event``)."""

    def __init__(self, block: bool = False, disable_timing: bool = False, interprocess: bool = False) -> None:
        self._stream: Stream | None = None
        self._seq = 0

    def record(self, stream: Stream | None = None) -> None:
        stream = stream if stream is not None else _DEVICE_STREAMS.current()
        self._stream, self._seq = stream, stream._seq

    def synchronize(self) -> None:
        if self._stream is not None:
            self._stream._complete(self._seq)

    @property
    def done(self) -> bool:
        return True


class Stream:
    """A CUDA stream (``cupy.cuda.Stream``): ``with stream:`` makes it the current one."""

    _ptrs = itertools.count(0x5000)

    def __init__(self, null: bool = False, non_blocking: bool = False, ptr: int = 0) -> None:
        self.ptr = 0 if null else next(Stream._ptrs)
        self.non_blocking = non_blocking
        self._seq = 0  # work enqueued so far
        self._waits: list[tuple[int, Stream, int]] = []  # (own seq, other stream, its seq): waits for it there

    def _enqueue(self) -> int:
        self._seq += 1
        return self._seq

    def record(self, event: Event | None = None) -> Event:
        event = event if event is not None else Event()
        event.record(self)
        return event

    def wait_event(self, event: Event) -> None:
        if event._stream is not None and event._stream is not self:
            self._waits.append((self._enqueue(), event._stream, event._seq))

    def synchronize(self) -> None:
        self._complete(self._seq)

    def _complete(self, seq: int, seen: set[int] | None = None) -> None:
        """The host has waited for this stream up to ``seq``, and so for what it waited on."""
        seen = set() if seen is None else seen
        if id(self) in seen:
            return
        seen.add(id(self))
        _PINNED.completed(self, seq)
        for at, other, other_seq in self._waits:
            if at <= seq:
                other._complete(other_seq, seen)

    def __enter__(self) -> Stream:
        _DEVICE_STREAMS.push(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        _DEVICE_STREAMS.pop(self)

    def __repr__(self) -> str:
        return f"<emulated Stream {self.ptr:#x}>"


class _CurrentStreams(threading.local):
    """The current stream of each host thread (the null stream unless a ``with stream:`` is open)."""

    null = Stream(null=True)

    def __init__(self) -> None:
        self.stack: list[Stream] = []

    def current(self) -> Stream:
        return self.stack[-1] if self.stack else self.null

    def push(self, stream: Stream) -> None:
        self.stack.append(stream)

    def pop(self, stream: Stream) -> None:
        if not self.stack or self.stack[-1] is not stream:
            raise RuntimeError("streams must be exited in the reverse order they were entered")
        self.stack.pop()


_DEVICE_STREAMS = _CurrentStreams()


class _PinnedMemory:
    """Pinned host buffers and the asynchronous copies out of them still in flight.

    A buffer is read-only while a copy out of it is in flight, and writable
    again once the host has synchronised with an event or stream that covers
    that copy: writing into it earlier raises ``ValueError: assignment
    destination is read-only`` where a GPU would silently upload the new bytes.
    """

    def __init__(self) -> None:
        self._buffers: weakref.WeakValueDictionary[int, np.ndarray] = weakref.WeakValueDictionary()
        self._in_flight: dict[int, list[tuple[Stream, int]]] = {}

    def allocate(self, shape: Any, dtype: Any) -> np.ndarray:
        buffer = np.empty(shape, dtype=dtype)
        self._in_flight.pop(id(buffer), None)  # a freed buffer's id, reused
        self._buffers[id(buffer)] = buffer
        return buffer

    def _owner(self, array: np.ndarray) -> np.ndarray | None:
        while array is not None:
            if self._buffers.get(id(array)) is array:
                return array
            array = array.base  # type: ignore[assignment]
        return None

    def copy_started(self, source: np.ndarray, stream: Stream) -> None:
        owner = self._owner(source)
        if owner is None:
            return  # pageable memory: CUDA stages it before the call returns
        self._in_flight.setdefault(id(owner), []).append((stream, stream._enqueue()))
        owner.flags.writeable = False

    def completed(self, stream: Stream, seq: int) -> None:
        for key in list(self._in_flight):
            left = [(s, q) for s, q in self._in_flight[key] if not (s is stream and q <= seq)]
            if left:
                self._in_flight[key] = left
                continue
            del self._in_flight[key]
            owner = self._buffers.get(key)
            if owner is not None:
                owner.flags.writeable = True


_PINNED = _PinnedMemory()
