"""A checkpoint round: export alerts and dead letters, write each partition's checkpoint, commit offsets.

In that order, and the commit only once the checkpoint is durable. Snapshots
are taken on the loop; one background thread writes them (pickle, fsync,
rename) while the loop goes on, one round in flight at most.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from streamguard.schema import AlertRecord
from streamguard.service.state import PartitionState
from streamguard.stream.checkpoint import Checkpoint

# One logger for the whole service, as when it was one module: operators filter on its name.
log = logging.getLogger("streamguard.service")


class CheckpointRounds:
    """Mixed into :class:`~streamguard.service.loop.Service`: reads and changes the state its
    ``__init__`` sets (options, source, outputs, store, active, held, the writer thread...) and calls the loop's other parts."""

    def _round(self, now: float, timeout_s: float | None = None) -> bool:
        """Export, then checkpoint (written in the background), then commit once it is durable.

        False (and a later retry) when the broker did not acknowledge the exports.
        """
        self._wait_job()
        targets = [s for s in self.active.values() if s.offset is not None and (s.dirty or s.alerts or s.dead)]
        if not targets:
            self.last_checkpoint = now
            return True
        t0 = time.perf_counter()
        ok = self._export(targets, self.options.kafka.export_timeout_s if timeout_s is None else timeout_s)
        self.seconds["export"] += time.perf_counter() - t0
        if not ok:
            self.next_round_at = self.clock() + self._backoff
            self._backoff = min(self._backoff * 2, 30.0)
            self.stats["failed_rounds"] += 1
            return False
        self._backoff = 1.0
        started = time.perf_counter()
        ownership = getattr(self.source, "ownership", None)
        jobs: list[tuple[Checkpoint, int]] = []
        for state in targets:
            scan_from = dict(state.scan_from)
            for ap, end in self.outputs.alert_ends.items():
                scan_from[ap] = max(scan_from.get(ap, 0), end)
            snapshot, delta_of = self._state_record(state)
            checkpoint = Checkpoint(
                topic=self.options.topic,
                partition=state.partition,
                offset=int(state.offset),
                snapshot=snapshot,  # a copy: the loop may go on while it is written
                delta_of=delta_of,
                alerts_emitted=state.alerts_emitted,
                dim=self.decoder.dim,
                alert_scan_from=scan_from,
                alerts_file=str(self.alert_file.path) if self.alert_file is not None else None,
                alerts_file_pos=self.alert_file.size if self.alert_file is not None else 0,
                topic_id=state.log_id,
                partitions=self.partitions,
            )
            # Revocations are only marked inside poll(), so the epoch cannot move during this round.
            jobs.append((checkpoint, ownership.epoch(state.partition) if ownership is not None else 0))
            state.scan_from = scan_from
            state.alerts = []
            state.present = {s for s in state.present if s >= state.alerts_emitted}
            state.dirty = False
        self.seconds["snapshot"] += time.perf_counter() - started
        self._job = self._writer.submit(self._write, jobs, ownership)
        self.last_checkpoint = self.clock()
        return True

    def _state_record(self, state: PartitionState) -> tuple[Any, str | None]:
        """The partition's state for its checkpoint: what changed since its last checkpoint (with
        that checkpoint's id), or, to start or compact a chain, all of it (with None)."""
        pipeline = state.pipeline
        if not hasattr(pipeline, "checkpoint_state"):
            return pipeline.snapshot(), None
        base_bytes, entries, log_bytes = state.chain
        full = state.checkpoint_id is None or entries >= self.settings.state.compact_every or log_bytes > base_bytes
        record = pipeline.checkpoint_state(full=full)
        return record, (None if record["full"] else state.checkpoint_id)

    def _write(self, jobs: list[tuple[Checkpoint, int]], ownership: Any) -> tuple[list[tuple[int, str | None, int, tuple[int, int, int]]], float]:
        """Checkpoint writer thread: each partition's checkpoint, unless it was revoked since its snapshot."""
        started = time.perf_counter()
        written = []
        for checkpoint, epoch in jobs:
            p = checkpoint.partition
            guard = (lambda p=p, epoch=epoch: ownership.holding(p, epoch)) if ownership is not None else None
            saved = self.store.save(checkpoint, guard)
            chain = (saved.base_bytes, saved.log_entries, saved.log_bytes) if saved is not None else (0, 0, 0)
            written.append((p, saved.checkpoint_id if saved is not None else None, checkpoint.offset, chain))
        return written, time.perf_counter() - started

    def _wait_job(self) -> None:
        if self._job is not None:
            self._job.result()
            self._finish_job()

    def _finish_job(self) -> None:
        """A background checkpoint is durable: record its ids, then commit its offsets (after, never before)."""
        job, self._job = self._job, None
        assert job is not None
        written, seconds = job.result()  # a write error (disk full...) stops the service here
        commit: dict[int, int] = {}
        for p, checkpoint_id, offset, chain in written:
            state = self.active.get(p) or self.held.get(p)
            if checkpoint_id is None:
                log.info("partition %d was revoked while its checkpoint was written; that checkpoint was dropped", p)
                if state is not None and hasattr(state.pipeline, "forget_changes"):
                    state.pipeline.forget_changes()  # its changes are in no file: the next checkpoint is full
                continue
            if state is not None:
                state.checkpoint_id = checkpoint_id
                state.chain = chain
            if p in self.active:
                commit[p] = offset
        self.seconds["checkpoint"] += seconds
        if self.metrics is not None:
            self.metrics.stage("checkpoint", seconds)
        if commit:
            self.source.commit(commit)
        self.stats["checkpoints"] += 1

    def _export(self, targets: list[PartitionState], timeout: float) -> bool:
        started = time.perf_counter()
        outputs = self.outputs
        # Sends still in flight from an aborted round must complete before anything is re-sent.
        result = outputs.flush(timeout)
        if not result.done:
            return False
        self._mark_failed(result.failed_alerts)
        if any(s.needs_scan for s in targets) and not self._scan({s.partition for s in targets if s.needs_scan}):
            return False
        for state in targets:
            for pending in state.alerts:
                if pending.kafka == "unsent" and outputs.alerts_topic is not None:
                    outputs.send_alert(pending.alert, state.partition, pending.seq)
                    pending.kafka = "sent"
            for dead in state.dead:
                outputs.send_dead_letter(dead, state.partition)
            state.dead = []
        result = outputs.flush(timeout)
        if not result.done or result.failed_alerts:
            self._mark_failed(result.failed_alerts)
            return False
        for state in targets:
            for pending in state.alerts:
                if pending.kafka == "sent":
                    pending.kafka = "acked"
        if self.alert_file is not None:
            self.alert_file.write(pending.alert for state in targets for pending in state.alerts if not pending.counted)
            self.alert_file.sync()
        exported: list[AlertRecord] = []
        for state in targets:
            for pending in state.alerts:
                if not pending.counted:
                    pending.counted = True
                    self.stats["alerts"] += 1
                    exported.append(pending.alert)
        if self.metrics is not None:
            # Delay: event time of the evidence -> the alert left the process (wall clock).
            self.metrics.observe_alerts(exported, now_ms=time.time() * 1000.0)
            self.metrics.stage("sink", time.perf_counter() - started)
        return True

    def _mark_failed(self, partitions: set[int]) -> None:
        for p in partitions:
            state = self.active.get(p)
            if state is None:
                continue
            state.needs_scan = True
            for pending in state.alerts:
                if pending.kafka == "sent":
                    pending.kafka = "unsent"
