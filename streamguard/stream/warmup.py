"""One codebook for every partition of a topic, fitted on a warm-up drawn from all of them.

A partition that fitted its own codebook needed ``coverage.warmup`` requests of
its own before it judged anything: a topic whose partitions each see fewer
(30,000 requests over 3 partitions, at the default of 20,000) never alerted,
and nothing said why. Here the partitions pool their warm-up instead, and
every one of them uses the codebook it gives, as replicas share one
``--codebook`` file.

The rule, chosen so that ``run`` on a topic of N partitions and ``replay
--partitions N`` fit the same codebook however the partitions interleave:

- each partition's event-time guard admits its requests in arrival order, each
  with the partition's watermark after it (non-decreasing); a partition
  buffers what it admits until a codebook exists;
- order every partition's buffered requests by (watermark, partition, arrival);
  the codebook is fitted on the first ``coverage.warmup`` of that order;
- it is fitted once that set can no longer change: every other partition's
  watermark is past the last request of the set, so nothing it admits later
  can sort before it. Which process checks, and when, does not matter;
- at the end of the input (``finish``) a partition adds nothing more: a topic
  shorter than the warm-up is fitted on all of it.

With one partition this is exactly the first ``coverage.warmup`` admitted
requests: what a pipeline fitting its own codebook takes. A partition that
receives nothing at all holds every partition back (its watermark never
moves); the log, ``/readyz`` and ``streamguard_warmup_*`` name it. Partitions a
process does not hold are seen through their checkpoints in the shared state
directory (:meth:`SharedWarmup.observe`). A codebook found in any partition's
state (a restart, another replica) is the codebook.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Callable, Protocol

import numpy as np

from streamguard.detectors.codebook import Codebook
from streamguard.schema import RequestBatch

log = logging.getLogger(__name__)


@dataclass
class WarmupBuffer:
    """What one partition holds for the warm-up: its admitted requests not processed yet.

    batches : the requests, in the order they were admitted
    watermarks : (n,) int64, the partition's watermark after each of them (non-decreasing)
    watermark : the partition's watermark now (None before its first confirmed time): requests it
        admits later get a watermark at least this
    final : no request will come (end of input)
    codebook : the codebook the partition already runs on, if any
    """

    batches: list[RequestBatch]
    watermarks: np.ndarray
    watermark: int | None
    final: bool = False
    codebook: Codebook | None = None

    @property
    def rows(self) -> int:
        return int(self.watermarks.shape[0])

    @classmethod
    def from_snapshot(cls, snapshot: dict[str, Any]) -> "WarmupBuffer":
        """A partition's buffer as a checkpoint recorded it (``Pipeline.snapshot``)."""
        book = snapshot.get("codebook")
        if book is not None:
            return cls([], np.empty(0, np.int64), None, codebook=Codebook(**book))
        event_time = snapshot.get("event_time") or {}
        rows = int(snapshot.get("warm_rows", 0))
        marks = np.asarray(snapshot.get("row_watermarks", np.empty(0, np.int64)), dtype=np.int64)[:rows]
        if marks.shape[0] != rows:  # a snapshot from before the event-time guard: no watermarks to order by
            return cls([], np.empty(0, np.int64), None)
        return cls(list(snapshot.get("warm", [])), marks, event_time.get("watermark"))


class WarmupMember(Protocol):
    """What the pool needs from a pipeline (``streamguard.stream.pipeline.Pipeline``)."""

    def warmup_buffer(self) -> WarmupBuffer: ...

    def fit_codebook(self, batch: RequestBatch) -> Codebook: ...


@dataclass(frozen=True)
class WarmupStatus:
    """Where the shared warm-up stands (for the log, ``/readyz`` and metrics).

    needed : ``coverage.warmup``
    buffered : partition -> requests it buffered; None where not known here (a partition held
        by another replica and not checkpointed yet)
    waiting_for : partitions whose event time (or requests) the fit still waits for
    cut_ms : the watermark every partition in ``waiting_for`` must pass, once enough requests are buffered
    done : a codebook exists
    """

    needed: int
    buffered: dict[int, int | None]
    waiting_for: tuple[int, ...] = ()
    cut_ms: int | None = None
    done: bool = False

    @property
    def remaining(self) -> int:
        """Requests still missing from the warm-up (0 once done, or once only event time is awaited)."""
        if self.done:
            return 0
        return max(self.needed - sum(n or 0 for n in self.buffered.values()), 0)

    def describe(self) -> str:
        if self.done:
            return "warm-up: done, the shared codebook is fitted"
        total = sum(n or 0 for n in self.buffered.values())
        parts = ", ".join(f"{p}: {'?' if n is None else f'{n:,}'}" for p, n in sorted(self.buffered.items()))
        text = (
            f"warm-up: waiting, {total:,} requests buffered across {len(self.buffered)} partition(s) ({parts}) "
            f"of the {self.needed:,} the shared codebook is fitted on; no alerts until then"
        )
        if self.remaining == 0 and self.waiting_for:
            text += f"; waiting for the event time of partition(s) {list(self.waiting_for)} to pass {_iso(self.cut_ms)}"
        return text


def _iso(ms: int | None) -> str:
    return "?" if ms is None else datetime.fromtimestamp(ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")


@dataclass
class _Cut:
    order: np.ndarray
    """Indices, into the partitions' buffers concatenated in partition order, of the warm-up sample."""
    waiting_for: tuple[int, ...]
    cut_ms: int | None


class SharedWarmup:
    """The warm-up pool of one topic's partitions (see the module docstring).

    Parameters
    ----------
    warmup : requests the codebook is fitted on (``coverage.warmup``)
    partitions : the topic's partition count
    log_level : level of the lines that say what the partitions wait for
    """

    def __init__(self, warmup: int, partitions: int, log_level: int = logging.INFO) -> None:
        if warmup < 1:
            raise ValueError(f"coverage.warmup must be >= 1, got {warmup}")
        if partitions < 1:
            raise ValueError(f"the topic must have >= 1 partition, got {partitions}")
        self.warmup = warmup
        self.partitions = partitions
        self.log_level = log_level
        self.codebook: Codebook | None = None
        self._local: dict[int, WarmupMember] = {}
        self._remote: dict[int, WarmupBuffer] = {}
        self._announced: set[int] = set()
        self._waiting_for: tuple[int, ...] = ()
        self._cut_ms: int | None = None
        self._said_blocked: tuple[int, ...] = ()

    # -------------------------------------------------------------- members

    def attach(self, partition: int, member: WarmupMember) -> None:
        """A pipeline of this process now holds ``partition``."""
        self._check(partition)
        self._local[partition] = member
        self._remote.pop(partition, None)
        self.adopt(member.warmup_buffer().codebook)

    def detach(self, partition: int) -> None:
        """This process no longer holds ``partition`` (revoked)."""
        self._local.pop(partition, None)

    def observe(self, partition: int, buffer: WarmupBuffer) -> None:
        """The state of a partition held elsewhere (its last checkpoint)."""
        self._check(partition)
        if partition not in self._local:
            self._remote[partition] = buffer
            self.adopt(buffer.codebook)

    def adopt(self, codebook: Codebook | None) -> None:
        """A codebook found in some partition's state is the topic's codebook."""
        if codebook is not None and self.codebook is None:
            self.codebook = codebook
            log.info("shared codebook taken from a partition's state: %d cells, %d topics", codebook.cells, codebook.topics)

    def _check(self, partition: int) -> None:
        if not 0 <= partition < self.partitions:
            raise ValueError(f"partition {partition} is outside the topic's {self.partitions} partitions")

    # ------------------------------------------------------------------ fit

    def try_fit(self, fit: Callable[[RequestBatch], Codebook] | None = None) -> Codebook | None:
        """The shared codebook, fitted now if the warm-up sample is settled; None while it is not.

        ``fit`` fits a codebook on a sample (``Pipeline.fit_codebook``); default: a held pipeline's.
        """
        if self.codebook is not None:
            return self.codebook
        buffers = self._buffers()
        for buffer in buffers.values():
            if buffer is not None:
                self.adopt(buffer.codebook)
        if self.codebook is not None:
            return self.codebook
        cut = self._cut(buffers)
        self._waiting_for, self._cut_ms = cut.waiting_for, cut.cut_ms
        if cut.waiting_for:
            self._say_blocked(buffers)
            return None
        if cut.order.size == 0:
            return None  # every partition ended with nothing admitted: nothing to fit
        if fit is None:
            if not self._local:
                return None
            fit = next(iter(self._local.values())).fit_codebook
        known = [buffers[p] for p in range(self.partitions)]
        dim = next(b.batches[0].dim for b in known if b is not None and b.batches)
        rows = RequestBatch.concat([batch for b in known if b is not None for batch in b.batches], dim)
        sample = rows.take(cut.order)
        self.codebook = fit(sample)
        per_partition = np.bincount(self._partition_of(buffers)[cut.order], minlength=self.partitions)
        log.info(
            "shared codebook fitted on %d warm-up requests (per partition %s): %d cells, %d topics",
            len(sample), dict(enumerate(per_partition.tolist())), self.codebook.cells, self.codebook.topics,
        )
        return self.codebook

    def _buffers(self) -> dict[int, WarmupBuffer | None]:
        out: dict[int, WarmupBuffer | None] = {}
        for p in range(self.partitions):
            member = self._local.get(p)
            out[p] = member.warmup_buffer() if member is not None else self._remote.get(p)
        return out

    def _partition_of(self, buffers: dict[int, WarmupBuffer | None]) -> np.ndarray:
        return np.concatenate(
            [np.full(b.rows if b is not None else 0, p, dtype=np.int64) for p, b in sorted(buffers.items())] + [np.empty(0, np.int64)]
        )

    def _cut(self, buffers: dict[int, WarmupBuffer | None]) -> _Cut:
        known = [(p, b) for p, b in sorted(buffers.items()) if b is not None]
        marks = np.concatenate([b.watermarks for _, b in known] + [np.empty(0, np.int64)]).astype(np.int64)
        part = self._partition_of(buffers)
        arrival = np.concatenate([np.arange(b.rows, dtype=np.int64) for _, b in known] + [np.empty(0, np.int64)])
        if marks.size < self.warmup:
            # Not enough yet: every partition that may still send requests is awaited.
            waiting = tuple(p for p, b in sorted(buffers.items()) if b is None or not b.final)
            order = np.lexsort((arrival, part, marks)) if not waiting else np.empty(0, np.int64)
            return _Cut(order, waiting, None)
        order = np.lexsort((arrival, part, marks))[: self.warmup]
        last = int(order[-1])
        cut_ms, cut_p = int(marks[last]), int(part[last])
        waiting = tuple(
            p for p, b in sorted(buffers.items()) if p != cut_p and not self._past(b, p, cut_ms, cut_p)
        )
        return _Cut(order, waiting, cut_ms)

    @staticmethod
    def _past(buffer: WarmupBuffer | None, partition: int, cut_ms: int, cut_partition: int) -> bool:
        """Whether every request ``partition`` admits from now on sorts after the cut."""
        if buffer is None:
            return False
        if buffer.final:
            return True
        if buffer.watermark is None:
            return False
        return buffer.watermark > cut_ms or (buffer.watermark == cut_ms and partition > cut_partition)

    # --------------------------------------------------------------- status

    def announce(self, partition: int) -> None:
        """Say once, for ``partition``, that it buffers for the shared warm-up and what it waits for."""
        if partition in self._announced or self.codebook is not None:
            return
        self._announced.add(partition)
        status = self.status()
        log.log(
            self.log_level,
            "partition %d: no codebook yet, buffering its requests (%d so far) for the warm-up its topic's %d "
            "partition(s) share: %d of the %d requests it needs are buffered; the partition alerts once the "
            "shared codebook is fitted",
            partition, status.buffered.get(partition) or 0, self.partitions,
            status.needed - status.remaining, status.needed,
        )

    def _say_blocked(self, buffers: dict[int, WarmupBuffer | None]) -> None:
        """Once per set of partitions: the requests are there, their event time is not."""
        if self._cut_ms is None or self._waiting_for == self._said_blocked:
            return
        self._said_blocked = self._waiting_for
        unknown = [p for p in self._waiting_for if buffers.get(p) is None]
        log.log(
            self.log_level,
            "shared warm-up: its %d requests are buffered; waiting for the event time of partition(s) %s to pass %s%s",
            self.warmup, list(self._waiting_for), _iso(self._cut_ms),
            f"; partition(s) {unknown} not held here and not checkpointed yet" if unknown else "",
        )

    def status(self) -> WarmupStatus:
        """Where the warm-up stands, from what was last seen (no fit is attempted)."""
        if self.codebook is not None:
            return WarmupStatus(self.warmup, {}, done=True)
        buffered = {p: (b.rows if b is not None else None) for p, b in self._buffers().items()}
        return WarmupStatus(self.warmup, buffered, self._waiting_for, self._cut_ms)
