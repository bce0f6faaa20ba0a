"""Offsets that move backwards and a topic that changes shape: detected, logged, counted, handled.

The policy is :meth:`SourcePolicy._rewind`'s (and docs/kafka.md's): a partition
whose log is no longer the one its offset counts in is read again from its
start, every record as new, the detector state kept.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from streamguard.service.state import PartitionState

# One logger for the whole service, as when it was one module: operators filter on its name.
log = logging.getLogger("streamguard.service")


class SourcePolicy:
    """Mixed into :class:`~streamguard.service.loop.Service`: reads and changes the state its
    ``__init__`` sets (options, source, metrics, active, partitions...) and calls the loop's other parts."""

    def _count_reset(self, reason: str) -> None:
        self.stats[f"source_{reason}"] += 1
        if self.metrics is not None:
            self.metrics.source_reset(reason)

    def _rewind(
        self, state: PartitionState, reason: str, why: str, restart_at: int | None = None, log_id: str | None = None
    ) -> None:
        """The policy for a partition whose log is no longer the one its offset counts in.

        The records of the old log already received are processed; then the
        partition is read again from ``restart_at`` (None: seek to the log's
        start) and every record from there on is processed as new, with the
        detector state kept (accounts keep their history, alerts their
        numbering). Nothing is dropped as "already seen": after data loss or a
        recreated topic, the records below the old offset are not those the
        state has seen. A checkpoint written from now on holds the new offset
        (0, the start, until a record of the new log is processed).
        """
        p = state.partition
        pending = list(state.batcher.take())
        if pending:
            self._process(state, pending)  # read from the old log before the change: theirs, not lost
        log.warning(
            "partition %d of %s: %s; reading it again from %s, every record as new (detector state kept)",
            p, self.options.topic, why, "its start" if restart_at is None else f"offset {restart_at}",
        )
        self._count_reset(reason)
        state.offset = 0 if restart_at is None else restart_at
        state.expected = None
        state.gap_seen = False
        state.log_id = log_id
        state.rewound_at = time.monotonic()
        state.dirty = True
        if state.paused:
            self.source.resume({p})
            state.paused = False
        if restart_at is None:
            self.source.seek(p, None)
        self._shape(refresh=True)  # learn the topic's new id soon

    def _shape(self, refresh: bool = False) -> Any:
        """The request topic's :class:`~streamguard.stream.kafka.TopicShape`, None if the source cannot tell."""
        shape_of = getattr(self.source, "topic_shape", None)
        if shape_of is None:
            return None
        try:
            return shape_of(refresh=refresh)
        except Exception as exc:  # metadata unavailable: look again at the next check
            log.debug("topic metadata unavailable: %s", exc)
            return None

    def _note_partitions(self, count: int | None, recorded: int | None, where: str) -> None:
        """Log and count once a partition count other than the one recorded; the policy is to go on."""
        if count is None:
            return
        if recorded is not None and recorded != count and (recorded, count) not in self._partition_changes:
            self._partition_changes.add((recorded, count))
            log.warning(
                "request topic %s has %d partitions, %d %s: accounts are now keyed to other partitions; each partition "
                "keeps its state, an account that moved starts a new history where it lands (its old one ages out)%s",
                self.options.topic, count, recorded, where,
                "; the state of partitions >= %d stays in --state-dir, unread" % count if count < recorded else "",
            )
            self._count_reset("partitions_changed")
        self.partitions = count

    def _check_restored(self, state: PartitionState, recorded_partitions: int | None) -> None:
        """A restored partition whose checkpoint counts in another topic (same name, new id) is rewound.

        ``recorded_partitions``: the count its checkpoint recorded; None for a state kept in memory,
        compared with the count this process saw last (the topic may have been recreated meanwhile)."""
        shape = self._shape()
        if shape is None:
            return
        if recorded_partitions is None:
            self._note_partitions(shape.partitions, self.partitions, "before")
        else:
            self._note_partitions(shape.partitions, recorded_partitions, "when its checkpoints were written")
        if shape.topic_id is None:
            return
        if state.log_id is None:
            if shape.as_of > state.rewound_at:  # not metadata from before a rewind of this (held) state
                state.log_id = shape.topic_id
        elif state.log_id != shape.topic_id:
            self._rewind(
                state,
                "topic_recreated",
                f"the topic was deleted and created again since offset {state.offset} was read "
                f"(id {state.log_id} -> {shape.topic_id})",
                log_id=shape.topic_id,
            )

    def _check_source(self, now: float) -> None:
        """Detect a log that shrank below what was read (every turn) and a topic that changed (every
        ``metadata_check_interval_s``); see :meth:`_rewind` and :meth:`_note_partitions` for the policy."""
        for state in list(self.active.values()):
            if state.expected is None:
                continue
            high = self.source.highwater(state.partition)
            if high is not None and high < state.expected:
                self._rewind(
                    state,
                    "log_truncated",
                    f"the log ends at offset {high}, before offset {state.expected} already read "
                    "(the broker lost records, or the topic was deleted or recreated)",
                )
        if now < self._next_topic_check:
            return
        self._next_topic_check = now + self.options.kafka.metadata_check_interval_s
        shape = self._shape(refresh=True)  # what the previous refresh answered; this one is read next time
        if shape is None or not self.source.connected():
            return
        if shape.partitions is None:
            # Twice in a row, so that metadata from before the subscription does not count.
            self._topic_missing += 1
            if self._topic_missing == 2:
                log.warning(
                    "request topic %s does not exist (or this client may not read it); streamguard does not create it: "
                    "waiting for it", self.options.topic,
                )
                self._count_reset("topic_missing")
            return
        if self._topic_missing >= 2:
            log.warning("request topic %s exists (%d partitions)", self.options.topic, shape.partitions)
        self._topic_missing = 0
        self._note_partitions(shape.partitions, self.partitions, "before")
        if shape.topic_id is None:
            return
        for state in list(self.active.values()):
            if state.log_id is None:
                if shape.as_of > state.rewound_at:  # metadata from after the last rewind: the id read since
                    state.log_id = shape.topic_id
            elif state.log_id != shape.topic_id:
                self._rewind(
                    state,
                    "topic_recreated",
                    f"the topic was deleted and created again (id {state.log_id} -> {shape.topic_id})",
                    log_id=shape.topic_id,
                )
