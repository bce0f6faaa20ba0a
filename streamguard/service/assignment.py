"""Partitions assigned and revoked: restore or keep their state, the shared warm-up, alerts already sent.

Rebalance callbacks only mark partitions; the loop applies the marks here, in
order. A revoked partition's state is set aside, never exported; one that comes
straight back, with nobody having checkpointed it meanwhile, is reused.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from streamguard.service.state import PartitionState, ServiceError
from streamguard.stream.batcher import MicroBatcher
from streamguard.stream.checkpoint import Checkpoint, CheckpointError
from streamguard.stream.warmup import SharedWarmup, WarmupBuffer

# One logger for the whole service, as when it was one module: operators filter on its name.
log = logging.getLogger("streamguard.service")


class Assignment:
    """Mixed into :class:`~streamguard.service.loop.Service`: reads and changes the state its
    ``__init__`` sets (options, source, outputs, store, active, held, warmup...) and calls the loop's other parts."""

    def _rebalance(self, events: list[tuple[str, set[int]]]) -> set[int]:
        """Apply rebalance marks in order; returns the partitions they touched."""
        touched: set[int] = set()
        if events:
            self._wait_job()  # so set-aside states know their last checkpoint id
        for kind, partitions in events:
            touched |= partitions
            if kind == "revoked":
                for p in sorted(partitions):
                    state = self.active.pop(p, None)
                    if self.warmup is not None:
                        self.warmup.detach(p)
                    if state is not None:
                        state.batcher.take()  # polled, unprocessed: the next owner refetches them
                        state.paused = False
                        self.held[p] = state
                if not self.active:
                    self.unassigned_since = self.clock()
                if self.metrics is not None:
                    self.metrics.forget_partitions(partitions)
                log.info("partitions revoked: %s", sorted(partitions))
            else:
                restored = []
                for p in sorted(partitions):
                    if p in self.active:
                        continue
                    self.active[p] = self._restore(p)
                    restored.append(p)
                for state in self.held.values():
                    # Exported to the file in an aborted round but never checkpointed: the next
                    # owner regenerates them; if that owner is this process, do not write them twice.
                    if self.alert_file is not None:
                        self.alert_file.forget([a.alert for a in state.alerts if a.counted])
                self.held.clear()
                self.idle_s = 0.0
                self._scan(set(restored))
                log.info("partitions assigned: %s (active %s)", sorted(partitions), sorted(self.active))
        return touched

    def _restore(self, p: int) -> PartitionState:
        held = self.held.pop(p, None)
        manifest = self.store.manifest(p)
        if held is not None and (manifest.get("checkpoint_id") if manifest else None) == held.checkpoint_id:
            held.expected = held.offset
            self._join_warmup(p, held.pipeline)
            self.source.seek(p, held.offset)
            log.info("partition %d: kept in memory (offset %s)", p, held.offset)
            self._check_restored(held, None)
            return held
        checkpoint = self.store.load(p)
        pipeline = self.make_pipeline()
        if self.signatures is not None:
            pipeline.enable_sharing(p)
        state = PartitionState(
            partition=p,
            pipeline=pipeline,
            batcher=MicroBatcher(self.settings.batch.max_size, self.settings.batch.max_delay_s, self.clock),
            offset=None,
            needs_scan=self.outputs.alerts_topic is not None,
        )
        if checkpoint is not None:
            self._check_compatible(checkpoint)
            pipeline.restore(checkpoint.snapshot)
            state.offset = checkpoint.offset
            state.alerts_emitted = checkpoint.alerts_emitted
            state.checkpoint_id = checkpoint.checkpoint_id
            state.scan_from = dict(checkpoint.alert_scan_from)
            state.chain = (checkpoint.base_bytes, checkpoint.log_entries, checkpoint.log_bytes)
            log.info("partition %d: restored checkpoint at offset %d (%d alerts so far)", p, checkpoint.offset, checkpoint.alerts_emitted)
        else:
            log.info("partition %d: no checkpoint, starting from the earliest record", p)
        self._join_warmup(p, pipeline)
        state.expected = state.offset
        self.source.seek(p, state.offset)
        if checkpoint is not None:
            state.log_id = checkpoint.topic_id
            self._check_restored(state, checkpoint.partitions)
        return state

    def _join_warmup(self, p: int, pipeline: Any) -> None:
        """Without a codebook file, the partition takes its codebook from the warm-up all partitions pool."""
        if self.codebook is not None or not hasattr(pipeline, "join_warmup"):
            return
        if self.warmup is None:
            count = getattr(self, "partitions", None)  # the topic's shape as last seen, if known yet
            if count is None:
                try:
                    count = self.source.partition_count()
                except Exception:  # metadata unavailable: the assignment is all we know
                    count = None
            if count is None:
                count = max([p, *self.active, *self.held]) + 1
                log.warning("partition count of %s unknown: the shared warm-up assumes %d partition(s)", self.options.topic, count)
            self.warmup = SharedWarmup(self.settings.coverage.warmup, max(count, p + 1), log_level=logging.WARNING)
        elif p >= self.warmup.partitions:
            log.warning("partition %d is beyond the %d partition(s) the shared warm-up started with", p, self.warmup.partitions)
            self.warmup.partitions = p + 1
        if pipeline.shared is self.warmup:
            self.warmup.attach(p, pipeline)
        else:
            pipeline.join_warmup(self.warmup, p)

    def _catch_up(self, final: bool = False) -> None:
        """Partitions waiting for the shared codebook start once it exists, whichever partition completed it.

        ``final``: after every held partition finished (end of input).
        """
        pool = self.warmup
        if pool is None or all(s.pipeline.ready for s in self.active.values()):
            return
        if pool.codebook is None and self._observe_remote(force=final):
            pool.try_fit()
        if pool.codebook is None:
            if final:
                log.warning(
                    "finishing without a codebook: %s; the buffered requests stay in the checkpoints", pool.status().describe()
                )
            return
        for state in self.active.values():
            if state.pipeline.ready:
                continue
            started = time.perf_counter()
            alerts = state.pipeline.catch_up()
            self.seconds["process"] += time.perf_counter() - started
            self._add_alerts(state, alerts)
            state.dirty = True

    def _observe_remote(self, force: bool = False) -> bool:
        """Read the checkpoints of partitions held elsewhere into the warm-up pool (at most once a
        checkpoint interval); True when something new was read."""
        pool = self.warmup
        assert pool is not None
        others = [p for p in range(pool.partitions) if p not in self.active]
        now = self.clock()
        if not others or (not force and now - self._remote_read_at < self.options.kafka.checkpoint_interval_s):
            return False
        self._remote_read_at = now
        changed = False
        for p in others:
            try:
                manifest = self.store.manifest(p)
                checkpoint_id = manifest.get("checkpoint_id") if manifest else None
                if checkpoint_id is None or self._remote_ids.get(p) == checkpoint_id:
                    continue
                checkpoint = self.store.load(p)
            except CheckpointError as exc:  # its owner will have to deal with it; the warm-up waits
                log.debug("partition %d: checkpoint unreadable for the warm-up: %s", p, exc)
                continue
            if checkpoint is None:
                continue
            self._remote_ids[p] = checkpoint_id
            pool.observe(p, WarmupBuffer.from_snapshot(checkpoint.snapshot))
            changed = True
        return changed

    def _check_compatible(self, checkpoint: Checkpoint) -> None:
        if checkpoint.dim is not None:
            if self.decoder.dim is None:
                self.decoder.dim = checkpoint.dim
            elif self.decoder.dim != checkpoint.dim:
                raise ServiceError(
                    f"partition {checkpoint.partition}: state has dimension {checkpoint.dim}, this stream has {self.decoder.dim}"
                )
        book = checkpoint.snapshot.get("codebook")
        if self.codebook is not None and book is not None:
            same = np.array_equal(book["mean"], self.codebook.mean) and np.array_equal(book["centroids"], self.codebook.centroids)
            if not same:
                raise ServiceError(
                    f"partition {checkpoint.partition}: checkpointed state was built with another codebook than --codebook; "
                    "use the same codebook or a fresh --state-dir"
                )

    def _scan(self, partitions: set[int]) -> bool:
        """Read back which alert numbers of these partitions already reached the alerts topic."""
        todo = {p for p in partitions if p in self.active and self.active[p].needs_scan}
        if not todo:
            return True
        scan_from: dict[int, int] = {}
        for p in todo:
            for ap, offset in self.active[p].scan_from.items():
                scan_from[ap] = min(scan_from.get(ap, offset), offset)
        for p in todo:
            for ap in scan_from:
                if ap not in self.active[p].scan_from:
                    scan_from[ap] = 0
        found = self.outputs.scan_alerts(todo, scan_from, timeout_s=self.options.kafka.export_timeout_s)
        if found is None:
            return False
        for p in todo:
            state = self.active[p]
            state.present |= {s for s in found.get(p, set()) if s >= state.alerts_emitted - len(state.alerts)}
            for pending in state.alerts:
                if pending.seq in state.present:
                    pending.kafka = "acked"
            state.needs_scan = False
            if found.get(p):
                log.warning("partition %d: %d alert(s) already in %s are not sent again", p, len(found[p]), self.outputs.alerts_topic)
        return True
