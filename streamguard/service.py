"""``streamguard run``: Kafka in, alerts out, state checkpointed per partition.

One loop on one thread owns everything that changes state::

    poll -> rebalance marks -> decode -> micro-batch (size | deadline) -> Pipeline.process
         -> every checkpoint_interval_s: export alerts + dead letters, wait for acks,
            write each partition's checkpoint (state + offset), commit offsets

- Checkpoints are snapshotted on the loop and written (pickle, fsync, rename)
  by one background thread while the loop goes on; offsets are committed once
  the write is durable. A write whose partition was revoked meanwhile is
  dropped (:class:`~streamguard.stream.kafka.Ownership`).
- One :class:`~streamguard.stream.pipeline.Pipeline` per assigned partition,
  as ``replay --partitions N`` shards accounts.
- Rebalance callbacks (kafka-python's network thread) only mark partitions.
  A revoked partition's in-memory state is set aside, never exported: alerts
  leave the process only in a checkpoint round, right before that round's
  checkpoint, so the next owner restoring the last checkpoint regenerates
  exactly what was not yet exported. If the partition comes straight back and
  nobody checkpointed it meanwhile, the set-aside state is reused.
- Alerts are numbered per input partition; after a restore the alerts
  topic is read back and numbers already there are not sent again (see
  ``docs/kafka.md`` for the guarantee).
- Backpressure: a partition whose queue of decoded rows is full is paused.
- SIGTERM/SIGINT: the batch in hand finishes, a last checkpoint round runs,
  offsets are committed and the consumer leaves the group.
- Broker unreachable: polls return nothing, checkpoint rounds fail and are
  retried with backoff, ``/readyz`` answers 503; nothing crashes.
- Offsets that move backwards, a topic that changes shape: each is logged at
  WARNING and counted in ``streamguard_source_resets_total{reason}``; the
  policy (:meth:`Service._rewind`, docs/kafka.md) is that a partition whose
  log is no longer the one its offset counts in (the high watermark fell below
  the next offset to read: ``log_truncated``; the client's position moved back:
  ``offset_moved_back``; the topic's id changed: ``topic_recreated``) is read
  again from its start and every record there is processed as new, with the
  detector state kept: nothing is dropped as "already seen". Another partition
  count (``partitions_changed``) is logged and counted, and each partition
  keeps its state; a missing topic (``topic_missing``) is waited for, never
  created; records deleted before they were read (``offset_gap``) are skipped.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import signal
import sys
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from streamguard.schema import AlertRecord, RequestBatch
from streamguard.stream.batcher import MicroBatcher
from streamguard.stream.checkpoint import Checkpoint, CheckpointError, CheckpointStore
from streamguard.stream.decode import DeadRecord, Record, RecordDecoder, event_time_dead_record
from streamguard.stream.kafka import KafkaConfig, Source
from streamguard.stream.warmup import SharedWarmup, WarmupBuffer

log = logging.getLogger("streamguard.service")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


class ServiceError(RuntimeError):
    """A condition the service cannot resolve by waiting (corrupt state, mismatched codebook...)."""


# ------------------------------------------------------------------ options


@dataclass
class RunOptions:
    """Everything ``run`` needs besides settings, backend and clients."""

    topic: str
    group_id: str = "streamguard"
    state_dir: Path = Path("streamguard-state")
    alerts_topic: str | None = None
    alerts_file: Path | None = None
    dead_letter_topic: str | None = None
    stop_after_idle: float | None = None
    dim: int | None = None
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    alert_hash: Callable[[str], str] | None = None
    """Keyed hash put into each alert's ``evidence["account_hash"]`` (the label of the
    top-N gauge): ``--alert-account-hash``, which needs ``STREAMGUARD_HMAC_KEY``."""
    shutdown_grace_s: float = 40.0
    """SIGTERM to exit: the last round and leaving the group (Kubernetes grants 60 s, after a 5 s preStop)."""


# ------------------------------------------------------------- alert file


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


# --------------------------------------------------------- partition state


@dataclass
class Chunk:
    """Decoded records of one poll of one partition."""

    batch: RequestBatch
    dead: list[DeadRecord]
    end_offset: int


def _weight(chunk: Chunk) -> int:
    """Rows a chunk counts for in the batcher: at least 1, so a chunk of dead letters only is still pending."""
    return max(len(chunk.batch), 1)


@dataclass
class PendingAlert:
    seq: int
    alert: AlertRecord
    kafka: str = "unsent"
    """unsent -> sent -> acked ("acked" also when the read-back found it already in the topic)."""
    counted: bool = False


@dataclass
class PartitionState:
    partition: int
    pipeline: Any
    batcher: MicroBatcher
    offset: int | None
    """Next offset to process; None before the first record when no checkpoint exists."""
    alerts_emitted: int = 0
    checkpoint_id: str | None = None
    scan_from: dict[int, int] = field(default_factory=dict)
    alerts: list[PendingAlert] = field(default_factory=list)
    dead: list[DeadRecord] = field(default_factory=list)
    present: set[int] = field(default_factory=set)
    needs_scan: bool = False
    dirty: bool = False
    paused: bool = False
    expected: int | None = None
    """Next offset the loop expects from the source; a record before it means the position moved back."""
    gap_seen: bool = False
    log_id: str | None = None
    """Id of the topic that ``offset`` counts in; None until known (metadata newer than ``rewound_at``)."""
    rewound_at: float = 0.0
    """``time.monotonic()`` of the last rewind (:meth:`Service._rewind`)."""
    chain: tuple[int, int, int] = (0, 0, 0)
    """The checkpoint chain on disk: (full snapshot bytes, change records since, their bytes)."""
    evicted: dict[str, int] = field(default_factory=dict)
    """The pipeline's evictions by reason already exported as metrics."""


def _turned_away(pipeline: Any) -> list[DeadRecord]:
    """Requests the pipeline's last call turned away by event time: dead letters like decode's."""
    rejected = pipeline.rejected
    return [event_time_dead_record(rejected.rows, i, reason) for i, reason in enumerate(rejected.reasons)]


class Outputs(Protocol):
    """What the loop needs from the Kafka outputs (see ``streamguard.sinks.kafka.KafkaOutputs``)."""

    alerts_topic: str | None
    alert_ends: dict[int, int]

    def send_alert(self, alert: AlertRecord, partition: int, seq: int) -> None: ...

    def send_dead_letter(self, dead: DeadRecord, partition: int) -> None: ...

    def flush(self, timeout_s: float) -> Any: ...

    def scan_alerts(self, partitions: set[int], scan_from: dict[int, int], timeout_s: float) -> dict[int, set[int]] | None: ...

    def close(self) -> None: ...


# ----------------------------------------------------------------- service


class Service:
    """The run loop. Built by :func:`run`; tests build it with an in-memory source and outputs.

    Parameters
    ----------
    options : RunOptions
    settings : streamguard.config.Settings
    make_pipeline : () -> Pipeline, a fresh pipeline (fixed codebook or None)
    source : the consumer group (Source protocol)
    outputs : the Kafka outputs (Outputs protocol)
    metrics : StreamguardMetrics or None
    codebook : the fixed codebook, to check restored state against it
    clock : monotonic seconds (injected for tests)
    kernel_timer : a :class:`streamguard.metrics.KernelTimer` (cuda backend), drained after each batch
    signatures : a :class:`streamguard.stream.signatures.SignatureExchange`, or None: shared-prompt
        evidence then stays inside each partition
    """

    def __init__(
        self,
        options: RunOptions,
        settings: Any,
        make_pipeline: Callable[[], Any],
        source: Source,
        outputs: Outputs,
        metrics: Any = None,
        codebook: Any = None,
        clock: Callable[[], float] = time.monotonic,
        kernel_timer: Any = None,
        signatures: Any = None,
    ) -> None:
        self.options = options
        self.signatures = signatures
        self.kernel_timer = kernel_timer
        self.settings = settings
        self.make_pipeline = make_pipeline
        self.source = source
        self.outputs = outputs
        self.metrics = metrics
        self.codebook = codebook
        self.clock = clock
        self.store = CheckpointStore(options.state_dir, options.topic)
        self.decoder = RecordDecoder(options.dim or (codebook.dim if codebook is not None else None))
        self.active: dict[int, PartitionState] = {}
        self.held: dict[int, PartitionState] = {}
        kc = options.kafka
        self.queue_max_rows = kc.queue_max_rows or 4 * settings.batch.max_size
        self.alert_file: AlertFile | None = None
        if options.alerts_file is not None:
            self.alert_file = AlertFile(options.alerts_file, self._file_dedup_from(Path(options.alerts_file).resolve()))
        self._stop = False
        self._stop_reason = ""
        started = clock()
        self.started = started
        self.last_loop = started
        self.unassigned_since = started
        self.idle_s = 0.0
        """Seconds spent polling without receiving a record, since the last record (or assignment)."""
        self.last_checkpoint = started
        self.next_round_at = started
        self._backoff = 1.0
        self.stats: Counter[str] = Counter()
        self.seconds: Counter[str] = Counter()
        """Wall time spent per loop activity (poll, decode, process, export, checkpoint)."""
        self.first_record_at: float | None = None
        self.last_processed_at: float | None = None
        # Snapshots are taken on the loop; pickling, writing and fsyncing them runs on this
        # thread while the loop goes on. One round in flight at most.
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="streamguard-checkpoint")
        self._job: Future | None = None
        # The request topic's shape: partition count believed (checkpoints, then metadata), whether it
        # is missing, and when the metadata is next refreshed and compared (see _check_source).
        self.partitions: int | None = None
        self._topic_missing = 0
        """Consecutive metadata checks that did not find the topic (2: warned)."""
        self._partition_changes: set[tuple[int, int]] = set()
        self._next_topic_check = started
        # Without a codebook file the partitions pool one warm-up (stream/warmup.py); built at the first assignment.
        self.warmup: SharedWarmup | None = None
        self.warmup_text = ""
        """What the warm-up waits for, for ``/readyz`` (set on the loop, read by the HTTP thread)."""
        self._remote_ids: dict[int, str | None] = {}
        self._remote_read_at = -float("inf")

    # ------------------------------------------------------------ control

    def request_stop(self, reason: str = "signal") -> None:
        """Ask the loop to checkpoint and leave (signal-handler safe: only sets a flag)."""
        self._stop = True
        self._stop_reason = reason

    def live(self) -> bool:
        return self.clock() - self.last_loop <= self.options.kafka.liveness_timeout_s

    def ready(self) -> bool:
        return bool(self.active) and self.source.connected()

    # ---------------------------------------------------------------- loop

    def run(self) -> int:
        """Consume until stopped (signal) or idle (``stop_after_idle``); returns the exit status."""
        idle_exit = False
        while not self._stop:
            now = self.clock()
            self.last_loop = now
            events = self.source.take_rebalance()
            self._rebalance(events)
            polled_at = self.clock()
            t0 = time.perf_counter()
            polled = self.source.poll(self._poll_timeout())
            self.seconds["poll"] += time.perf_counter() - t0
            if any(polled.values()):
                self.idle_s = 0.0
            elif self.active or self.clock() - self.unassigned_since > 2 * self.options.kafka.session_timeout_ms / 1000:
                # Idle time is time spent listening without a record: processing and checkpoints do not
                # count, nor does waiting for a (re)join, unless no partition comes for two session timeouts.
                self.idle_s += self.clock() - polled_at
            events = self.source.take_rebalance()
            moved = self._rebalance(events)
            self._enqueue({p: r for p, r in polled.items() if p not in moved})
            self._check_source(self.clock())
            self._process_due()
            self._catch_up()
            self._exchange_signatures()
            now = self.clock()
            if not self.source.connected():
                self.idle_s = 0.0  # an outage is not idleness
            if now >= self.next_round_at and (now - self.last_checkpoint >= self.options.kafka.checkpoint_interval_s):
                self._round(now)
            if self._job is not None and self._job.done():
                self._finish_job()
            self._gauges()
            if (
                self.options.stop_after_idle is not None
                and self.idle_s >= self.options.stop_after_idle
                and all(s.batcher.pending_rows == 0 for s in self.active.values())
            ):
                idle_exit = True
                break
        status = EXIT_OK
        if idle_exit:
            log.warning("no record for %.0f s: finishing %d partition(s)", self.options.stop_after_idle, len(self.active))
            for state in self.active.values():
                self._add_alerts(state, state.pipeline.finish())
                rejected = _turned_away(state.pipeline)
                state.dead.extend(rejected)
                self.stats["dead_letters"] += len(rejected)
                if self.metrics is not None:
                    for dead in rejected:
                        self.metrics.bad_records(dead.reason)
                state.dirty = True
            self._catch_up(final=True)
            if not self._final_round(deadline=None):
                status = EXIT_FAILED
        else:
            log.warning("stopping (%s): last checkpoint, commit, leave the group", self._stop_reason)
            # Rows polled but not processed are dropped: they are after the checkpointed offset.
            if not self._final_round(deadline=self.clock() + self.options.shutdown_grace_s):
                status = EXIT_FAILED
        self._wait_job()
        self._writer.shutdown(wait=True)
        self.source.close()
        self.outputs.close()
        if self.signatures is not None:
            self.signatures.close()
        if self.alert_file is not None:
            self.alert_file.close()
        if self.metrics is not None:
            self.metrics.ready(False)
        return status

    def _final_round(self, deadline: float | None) -> bool:
        delay = 0.5
        while True:
            timeout = self.options.kafka.export_timeout_s
            if deadline is not None:
                timeout = max(min(timeout, (deadline - self.clock()) / 2), 0.1)
            if self._round(self.clock(), timeout_s=timeout):
                self._wait_job()
                return True
            if deadline is not None and self.clock() + delay > deadline:
                log.error("last checkpoint did not complete within the grace period; the previous one stands")
                return False
            if deadline is None and self._stop:
                return False
            time.sleep(delay)
            delay = min(delay * 2, 10.0)

    def _poll_timeout(self) -> float:
        timeout = self.options.kafka.poll_timeout_ms / 1000
        for state in self.active.values():
            if state.batcher.pending_rows:
                if state.batcher.due():
                    return 0.0
                timeout = min(timeout, state.batcher.max_delay_s / 4)
        return timeout

    # ----------------------------------------------------------- rebalance

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

    # -------------------------------------------------------------- intake

    def _enqueue(self, polled: Mapping[int, list[Record]]) -> None:
        for p, records in polled.items():
            state = self.active.get(p)
            if state is None or not records:
                continue
            if state.expected is not None and records[0].offset < state.expected:
                # Only the loop seeks, and never back past what it read: the client moved the position
                # back itself (the broker said it was out of range: the log lost records or was recreated).
                self._rewind(
                    state,
                    "offset_moved_back",
                    f"records arrive from offset {records[0].offset}, before offset {state.expected} already read "
                    "(the client reset its position: log truncated or topic recreated)",
                    restart_at=records[0].offset,
                )
            elif state.expected is not None and records[0].offset > state.expected:
                if not state.gap_seen:
                    # Not expected from a request topic (no compaction, no transactions): go back once
                    # for the missing records; a second gap (records deleted by retention) is accepted.
                    log.warning("partition %d: records resume at offset %d, expected %d; seeking back", p, records[0].offset, state.expected)
                    state.gap_seen = True
                    self.source.seek(p, state.expected)
                    continue
                log.warning(
                    "partition %d: offsets %d..%d are not in the log (deleted before they were read); going on from %d",
                    p, state.expected, records[0].offset - 1, records[0].offset,
                )
                self._count_reset("offset_gap")
                state.gap_seen = False
            started = time.perf_counter()
            decoded = self.decoder.decode_records(records, source=f"kafka:{self.options.topic}/{p}")
            self.seconds["decode"] += time.perf_counter() - started
            if self.metrics is not None:
                self.metrics.stage("decode", time.perf_counter() - started)
            state.expected = records[-1].offset + 1
            if self.first_record_at is None:
                self.first_record_at = self.clock()
            chunk = Chunk(decoded.batch, decoded.dead, records[-1].offset + 1)
            state.batcher.add(chunk, _weight(chunk))
            if state.batcher.pending_rows >= self.queue_max_rows and not state.paused:
                self.source.pause({p})
                state.paused = True
                self.stats["pauses"] += 1

    def _process_due(self) -> bool:
        """Process one batch of every partition whose batch is due; True when anything was processed."""
        worked = False
        for state in list(self.active.values()):
            if not state.batcher.pending_rows or not state.batcher.due():
                continue
            chunks = list(state.batcher.take())
            # One batch of about max_size rows per partition per turn; the rest waits its turn.
            rows, cut = 0, 0
            while cut < len(chunks) and (cut == 0 or rows < self.settings.batch.max_size):
                rows += len(chunks[cut].batch)
                cut += 1
            for rest in chunks[cut:]:
                state.batcher.add(rest, _weight(rest))
            self._process(state, chunks[:cut])
            worked = True
            if state.paused and state.batcher.pending_rows < self.queue_max_rows // 2:
                self.source.resume({state.partition})
                state.paused = False
        return worked

    def _process(self, state: PartitionState, chunks: list[Chunk]) -> None:
        dim = self.decoder.dim or 0
        batch = RequestBatch.concat([c.batch for c in chunks if len(c.batch)], dim)
        pipeline = state.pipeline
        before = dict(pipeline.stats.stage_seconds)
        held = pipeline.scorer.held_back
        started = time.perf_counter()
        alerts = pipeline.process(batch) if len(batch) else []
        rejected = _turned_away(pipeline) if len(batch) else []
        seconds = time.perf_counter() - started
        self.seconds["process"] += seconds
        if self.signatures is not None:
            t0 = time.perf_counter()
            self.signatures.publish(pipeline.drain_signatures())
            self.seconds["signatures"] += time.perf_counter() - t0
        for chunk in chunks:
            state.dead.extend(chunk.dead)
        state.dead.extend(rejected)
        state.offset = chunks[-1].end_offset
        state.dirty = True
        self.last_processed_at = self.clock()
        self._add_alerts(state, alerts)
        log.debug("partition %d: processed %d requests up to offset %d, %d alert(s)", state.partition, len(batch), state.offset, len(alerts))
        self.stats["requests"] += len(batch)
        self.stats["dead_letters"] += sum(len(c.dead) for c in chunks) + len(rejected)
        if self.metrics is not None:
            m = self.metrics
            m.held_back(pipeline.scorer.held_back - held)
            for reason, total in getattr(pipeline.stats, "evicted_by", {}).items():
                m.evicted(reason, total - state.evicted.get(reason, 0))
                state.evicted[reason] = total
            if len(batch):
                m.requests(len(batch), state.partition)
                m.batch(seconds, len(batch))
                for name, total in pipeline.stats.stage_seconds.items():
                    delta = total - before.get(name, 0.0)
                    if delta > 0:
                        m.stage(name, delta)
            for dead in [d for c in chunks for d in c.dead] + rejected:
                m.bad_records(dead.reason)
            if len(batch):
                m.observe_scores(pipeline, batch.account_ids)
            if self.kernel_timer is not None:
                self.kernel_timer.drain()
            m.last_progress(time.time())

    def _exchange_signatures(self) -> None:
        """Hand the signatures other partitions published to every partition held here."""
        if self.signatures is None:
            return
        t0 = time.perf_counter()
        for batch in self.signatures.poll(0.0):
            for state in self.active.values():
                self.stats["remote_duplicates"] += state.pipeline.ingest_signatures(batch)
        self.seconds["signatures"] += time.perf_counter() - t0

    def _add_alerts(self, state: PartitionState, alerts: list[AlertRecord]) -> None:
        if self.options.alert_hash is not None:
            from streamguard.metrics import with_account_hash  # noqa: PLC0415 - light, and only with a key

            alerts = [with_account_hash(alert, self.options.alert_hash) for alert in alerts]
        for alert in alerts:
            seq = state.alerts_emitted
            state.alerts_emitted += 1
            state.alerts.append(PendingAlert(seq, alert, "acked" if seq in state.present else "unsent"))

    # ------------------------------------------------ offsets and topic shape

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
        """A restored partition whose checkpoint counts in another topic (same name, new id) is rewound."""
        shape = self._shape()
        if shape is None:
            return
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

    # ---------------------------------------------------------- checkpoint

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
            for state in targets:
                for pending in state.alerts:
                    if not pending.counted:
                        self.alert_file.write(pending.alert)
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

    # ------------------------------------------------------------- gauges

    def _gauges(self) -> None:
        if self.warmup is not None:
            status = self.warmup.status()
            self.warmup_text = status.describe()
            if self.metrics is not None:
                self.metrics.warmup(status.remaining, not status.done)
        m = self.metrics
        if m is None:
            return
        m.ready(self.ready())
        m.last_progress(time.time())
        for p, state in self.active.items():
            # The high watermark of the last fetch response, not ListOffsets (see stream/kafka.py).
            high = self.source.highwater(p)
            if high is not None:
                m.consumer_lag(p, high - (state.offset or 0))
        m.observe_accounts(state.pipeline for state in self.active.values())

    def _file_dedup_from(self, path: Path) -> int | None:
        """Oldest position any checkpoint recorded for this alert file (0 when a partition has none)."""
        try:
            manifests = self.store.manifests()
        except CheckpointError as exc:
            raise ServiceError(str(exc)) from None
        positions = [int(m.get("alerts_file_pos", 0)) for m in manifests.values() if m.get("alerts_file") == str(path)]
        count = None
        try:
            count = self.source.partition_count()
        except Exception:  # metadata unavailable: be conservative
            count = None
        if not positions or count is None or len(positions) < count:
            return 0
        return min(positions)


# ------------------------------------------------------------------- CLI


def _env(name: str, default: str | None = None) -> str | None:
    return os.environ.get(f"STREAMGUARD_{name}", default)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``run`` on the ``streamguard`` command's subparsers."""
    run_p = subparsers.add_parser("run", help="the service: Kafka in, alerts out, /metrics /healthz /readyz")
    add_arguments(run_p)
    return run_p


def add_arguments(p: argparse.ArgumentParser) -> None:
    def num(name: str, kind: type) -> Any:
        raw = _env(name)
        return kind(raw) if raw not in (None, "") else None

    p.add_argument("--bootstrap-servers", default=_env("BOOTSTRAP_SERVERS"), help="HOST:PORT[,HOST:PORT] (env STREAMGUARD_BOOTSTRAP_SERVERS)")
    p.add_argument("--topic", default=_env("TOPIC"), help="request topic (env STREAMGUARD_TOPIC)")
    p.add_argument("--group-id", default=_env("GROUP_ID", "streamguard"), help="consumer group (env STREAMGUARD_GROUP_ID)")
    p.add_argument("--alerts-topic", default=_env("ALERTS_TOPIC"), help="alerts topic (env STREAMGUARD_ALERTS_TOPIC)")
    p.add_argument("--alerts-file", default=_env("ALERTS_FILE"), help="also append alerts to this JSON Lines file (env STREAMGUARD_ALERTS_FILE)")
    p.add_argument("--dead-letter-topic", default=_env("DEAD_LETTER_TOPIC"), help="dead-letter topic (env STREAMGUARD_DEAD_LETTER_TOPIC)")
    p.add_argument(
        "--signatures-topic",
        default=_env("SIGNATURES_TOPIC"),
        help="internal topic through which replicas share request signatures, so that accounts sharing prompts "
        "are linked across partitions and replicas (env STREAMGUARD_SIGNATURES_TOPIC; default: off)",
    )
    p.add_argument(
        "--state-dir",
        default=_env("CHECKPOINT_DIR", "streamguard-state"),
        help="checkpoint directory, shared by the replicas of a group (env STREAMGUARD_CHECKPOINT_DIR)",
    )
    p.add_argument("--metrics-port", type=int, default=num("METRICS_PORT", int), help="serve /metrics /healthz /readyz (env STREAMGUARD_METRICS_PORT)")
    p.add_argument(
        "--metrics-addr",
        default=_env("METRICS_ADDR", "127.0.0.1"),
        help="bind address of the metrics port (env STREAMGUARD_METRICS_ADDR; default 127.0.0.1, this host only: "
        "in a Kubernetes pod set 0.0.0.0, or the pod IP, so that probes and Prometheus reach it)",
    )
    p.add_argument(
        "--alert-account-hash",
        action="store_true",
        default=_env("ALERT_ACCOUNT_HASH", "").strip().lower() in {"1", "true", "yes", "on"},
        help="put the account's keyed hash (the account_hash label of the metrics) into each alert's "
        "evidence.account_hash; needs STREAMGUARD_HMAC_KEY (env STREAMGUARD_ALERT_ACCOUNT_HASH)",
    )
    p.add_argument("--stop-after-idle", type=float, default=num("STOP_AFTER_IDLE", float), metavar="SECONDS", help="exit 0 once no record arrived for this long")
    p.add_argument("--config", default=_env("CONFIG"), help="TOML settings file (env STREAMGUARD_CONFIG)")
    p.add_argument("--backend", default=_env("BACKEND", "auto"), choices=["auto", "cuda", "cpu", "numpy"], help="array backend (env STREAMGUARD_BACKEND)")
    p.add_argument(
        "--codebook",
        default=_env("CODEBOOK"),
        help="fixed codebook (.npz from replay --save-codebook); else the partitions fit one on the warm-up they pool",
    )
    p.add_argument("--dim", type=int, default=num("DIM", int), help="embedding dimension of the stream (default: the codebook's, else the first record's)")
    p.add_argument(
        "--partitions-hint",
        type=int,
        default=num("PARTITIONS", int),
        help="expected partitions of --topic (env STREAMGUARD_PARTITIONS): output topics are created with it, a different count is logged",
    )
    p.add_argument("--checkpoint-interval", type=float, default=None, help="seconds between checkpoints (default: [kafka] checkpoint_interval_s)")
    security = p.add_argument_group("Kafka security (passed through to the client; env STREAMGUARD_KAFKA_<NAME>)")
    for flag in ("security-protocol", "sasl-mechanism", "sasl-username", "sasl-password", "ssl-cafile", "ssl-certfile", "ssl-keyfile"):
        security.add_argument(f"--{flag}", default=None, help=f"env STREAMGUARD_KAFKA_{flag.upper().replace('-', '_')}")


def _kafka_config(settings: Any, args: argparse.Namespace) -> KafkaConfig:
    from dataclasses import replace

    # settings.kafka already holds the [kafka] table of --config and the STREAMGUARD_KAFKA_* variables.
    base = getattr(settings, "kafka", None)
    config = base if isinstance(base, KafkaConfig) else KafkaConfig.from_env()
    flags = {
        name: getattr(args, name)
        for name in ("security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile")
        if getattr(args, name, None)
    }
    if getattr(args, "checkpoint_interval", None) is not None:
        flags["checkpoint_interval_s"] = float(args.checkpoint_interval)
    return replace(config, **flags).validate()


class _Retry(Exception):
    pass


def _connect(build: Callable[[], Any], what: str, service_stop: Callable[[], bool]) -> Any:
    """Build a client, retrying with backoff while the broker is unreachable."""
    from kafka.errors import KafkaError

    delay = 1.0
    while True:
        try:
            return build()
        except KafkaError as exc:
            if service_stop():
                raise _Retry() from None
            log.warning("%s: broker unreachable (%s); retrying in %.0f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def run(args: argparse.Namespace) -> int:
    """``streamguard run``: returns the exit status (2: usage error, 1: failure, 0: clean stop)."""
    quiet_kafka_logs()
    try:
        return _run(args)
    except (ValueError, ServiceError, CheckpointError) as exc:
        print(f"streamguard run: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    from streamguard.backends import BackendUnavailable, create_backend
    from streamguard.config import load_settings
    from streamguard.detectors.codebook import Codebook
    from streamguard.metrics import StreamguardMetrics, backend_device, hmac_key_from_env, instrument_kernels, serve
    from streamguard.sinks.kafka import KafkaOutputs
    from streamguard.stream.kafka import KafkaSource, ensure_topic
    from streamguard.stream.pipeline import Pipeline

    if not args.bootstrap_servers:
        raise ValueError("--bootstrap-servers is required (or STREAMGUARD_BOOTSTRAP_SERVERS)")
    if not args.topic:
        raise ValueError("--topic is required (or STREAMGUARD_TOPIC)")
    settings = load_settings(args.config)
    kafka_config = _kafka_config(settings, args)
    codebook = Codebook.load(args.codebook) if args.codebook else None
    if codebook is not None and args.dim is not None and codebook.dim != args.dim:
        raise ValueError(f"--dim {args.dim} but the codebook has dimension {codebook.dim}")
    try:
        backend = create_backend(args.backend, settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    except BackendUnavailable as exc:
        raise ValueError(str(exc)) from None
    log.warning("backend: %s", backend.name)

    options = RunOptions(
        topic=args.topic,
        group_id=args.group_id,
        state_dir=Path(args.state_dir),
        alerts_topic=args.alerts_topic or None,
        alerts_file=Path(args.alerts_file) if args.alerts_file else None,
        dead_letter_topic=args.dead_letter_topic or None,
        stop_after_idle=args.stop_after_idle,
        dim=args.dim,
        kafka=kafka_config,
    )
    options.state_dir.mkdir(parents=True, exist_ok=True)

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    key, stable_key = hmac_key_from_env()
    if args.alert_account_hash and not stable_key:
        raise ValueError("--alert-account-hash needs STREAMGUARD_HMAC_KEY (a stable key, from a Secret)")
    if not stable_key:
        log.warning("STREAMGUARD_HMAC_KEY is not set: account hashes in metrics change at every restart")
    metrics = StreamguardMetrics(registry, key)
    metrics.backend_info(backend.name, backend_device(backend))
    metrics.ready(False)
    options.alert_hash = metrics.account_hash if args.alert_account_hash else None
    kernel_timer = instrument_kernels(metrics, backend)

    holder: dict[str, Any] = {}
    stopping = {"flag": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["flag"] = True
        if "service" in holder:
            holder["service"].request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    started = time.monotonic()

    def live() -> bool:
        service = holder.get("service")
        return service.live() if service is not None else time.monotonic() - started < kafka_config.liveness_timeout_s * 10

    def ready() -> bool:
        service = holder.get("service")
        return bool(service is not None and service.ready())

    def ready_detail() -> str:
        # Ready while consuming, warm-up or not; the body says what alerts still wait for.
        service = holder.get("service")
        return service.warmup_text if service is not None else ""

    server = None
    if args.metrics_port is not None:
        server, _ = serve(
            registry, args.metrics_port, args.metrics_addr, liveness=live, readiness=ready, readiness_detail=ready_detail
        )
        log.warning("serving /metrics /healthz /readyz on %s:%d", args.metrics_addr, server.server_port)

    def make_pipeline() -> Any:
        return Pipeline(settings, backend, codebook)

    try:
        source = _connect(
            lambda: KafkaSource(args.bootstrap_servers, args.topic, args.group_id, kafka_config, client_id=f"streamguard-{os.getpid()}"),
            "consumer",
            lambda: stopping["flag"],
        )
        count = source.partition_count()
        if count is not None and args.partitions_hint and count != args.partitions_hint:
            log.warning("%s has %d partitions, --partitions-hint says %d", args.topic, count, args.partitions_hint)
        for out_topic in (options.alerts_topic, options.dead_letter_topic):
            if out_topic:
                try:
                    ensure_topic(args.bootstrap_servers, out_topic, args.partitions_hint or count or 1, kafka_config)
                except Exception as exc:  # no permission to create topics, or the broker is away: the producer will tell
                    log.warning("could not ensure topic %s exists: %s", out_topic, exc)
        signatures = None
        if args.signatures_topic:
            from streamguard.stream.signatures import SignatureExchange  # noqa: PLC0415 - only when sharing

            try:
                ensure_topic(args.bootstrap_servers, args.signatures_topic, args.partitions_hint or count or 1, kafka_config)
            except Exception as exc:  # no permission to create topics: it may exist already
                log.warning("could not ensure topic %s exists: %s", args.signatures_topic, exc)
            signatures = _connect(
                lambda: SignatureExchange(args.bootstrap_servers, args.signatures_topic, kafka_config, f"streamguard-{os.getpid()}"),
                "signature exchange",
                lambda: stopping["flag"],
            )
        outputs = _connect(
            lambda: KafkaOutputs(
                args.bootstrap_servers, kafka_config, args.topic, args.group_id, options.alerts_topic, options.dead_letter_topic
            ),
            "producer",
            lambda: stopping["flag"],
        )
    except _Retry:
        return EXIT_OK
    service = Service(
        options, settings, make_pipeline, source, outputs, metrics, codebook, kernel_timer=kernel_timer, signatures=signatures
    )
    holder["service"] = service
    if stopping["flag"]:
        service.request_stop("signal")
    try:
        status = service.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    busy = (service.last_processed_at or 0.0) - (service.first_record_at or 0.0)
    log.warning(
        "run finished: %d requests, %d dead letters, %d alerts, %d checkpoints; %.0f events/s from the first record to the last processed",
        service.stats["requests"],
        service.stats["dead_letters"],
        service.stats["alerts"],
        service.stats["checkpoints"],
        service.stats["requests"] / busy if busy > 0 else 0.0,
    )
    if signatures is not None:
        log.warning(
            "signatures: published %d, received %d (%d bad messages), %d matched a request of this replica's partitions",
            signatures.published, signatures.received, signatures.bad, service.stats["remote_duplicates"],
        )
    log.info("time spent: %s", ", ".join(f"{k} {v:.2f} s" for k, v in sorted(service.seconds.items())))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamguard.service run ...`` (the same as ``streamguard run ...``)."""
    parser = argparse.ArgumentParser(prog="streamguard")
    parser.add_argument("--log-level", default=_env("LOG_LEVEL", "WARNING"))
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    logging.basicConfig(level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


class _MissingTopicLines(logging.Filter):
    """kafka-python logs a missing topic at ERROR on every metadata retry (ten times a second); once a minute
    is enough (the service says it at WARNING and counts it, ``topic_missing``)."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if "not found in cluster metadata" not in str(record.msg):
            return True
        key, now = record.getMessage(), time.monotonic()
        if now - self._last.get(key, -float("inf")) < self.interval_s:
            return False
        self._last[key] = now
        return True


def quiet_kafka_logs() -> None:
    """kafka-python logs every connection at INFO; keep its warnings only, a missing topic once a minute."""
    kafka_logger = logging.getLogger("kafka")
    if kafka_logger.getEffectiveLevel() < logging.WARNING:
        kafka_logger.setLevel(logging.WARNING)
    cluster_logger = logging.getLogger("kafka.cluster")
    if not any(isinstance(f, _MissingTopicLines) for f in cluster_logger.filters):
        cluster_logger.addFilter(_MissingTopicLines())


if __name__ == "__main__":
    sys.exit(main())
