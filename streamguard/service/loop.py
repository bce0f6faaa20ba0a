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

The loop's parts live beside it: partitions assigned and revoked
(:mod:`~streamguard.service.assignment`), the source policy above
(:mod:`~streamguard.service.source_policy`), checkpoint rounds
(:mod:`~streamguard.service.rounds`); :class:`Service` mixes them in.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable, Mapping

from streamguard.schema import AlertRecord, RequestBatch
from streamguard.service.assignment import Assignment
from streamguard.service.rounds import CheckpointRounds
from streamguard.service.source_policy import SourcePolicy
from streamguard.service.state import Chunk, Outputs, PartitionState, PendingAlert, RunOptions, ServiceError
from streamguard.sinks.alert_file import AlertFile
from streamguard.stream.checkpoint import CheckpointError, CheckpointStore
from streamguard.stream.batch_run import BatchReport, record_batch, run_batch
from streamguard.stream.decode import Record, RecordDecoder
from streamguard.stream.kafka import Source
from streamguard.stream.warmup import SharedWarmup

# One logger for the whole service, as when it was one module: operators filter on its name.
log = logging.getLogger("streamguard.service")

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2


def _weight(chunk: Chunk) -> int:
    """Rows a chunk counts for in the batcher: at least 1, so a chunk of dead letters only is still pending."""
    return max(len(chunk.batch), 1)


# ----------------------------------------------------------------- service


class Service(Assignment, SourcePolicy, CheckpointRounds):
    """The run loop. Built by :func:`streamguard.service.command.run`; tests build it with an in-memory source and outputs.

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
    kernel_timer : a :class:`streamguard.backends.kernel_timer.KernelTimer` (cuda backend), drained after each batch
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
            if any(polled.values()) or any(s.paused for s in self.active.values()):
                self.idle_s = 0.0  # a paused partition has records waiting: not idle
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
                rejected = state.pipeline.rejected.dead_letters(self._source_name(state.partition))
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


    # -------------------------------------------------------------- intake

    def _source_name(self, partition: int) -> str:
        """Where a partition's dead letters come from, before their offset: ``kafka:TOPIC/PARTITION``."""
        return f"kafka:{self.options.topic}/{partition}"

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
            decoded = self.decoder.decode_records(records, source=self._source_name(p))
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
            if self._backoff > 1.0 and len(state.dead) + len(state.alerts) >= self.queue_max_rows:
                # The last round's exports failed: hold processing (the full queue pauses the partition) so
                # unexported dead letters and alerts stop at about queue_max_rows; a round that succeeds clears them.
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
        report = run_batch(pipeline, batch) if len(batch) else BatchReport.nothing()
        alerts = report.alerts
        rejected = report.rejected.dead_letters(self._source_name(state.partition))
        self.seconds["process"] += report.seconds
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
            for reason, total in getattr(pipeline.stats, "evicted_by", {}).items():
                m.evicted(reason, total - state.evicted.get(reason, 0))
                state.evicted[reason] = total
            dead_reasons = (dead.reason for dead in [d for c in chunks for d in c.dead] + rejected)
            record_batch(m, report, pipeline, batch, state.partition, dead_reasons)
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
            from streamguard.pseudonyms import with_account_hash  # noqa: PLC0415 - light, and only with a key

            alerts = [with_account_hash(alert, self.options.alert_hash) for alert in alerts]
        for alert in alerts:
            seq = state.alerts_emitted
            state.alerts_emitted += 1
            state.alerts.append(PendingAlert(seq, alert, "acked" if seq in state.present else "unsent"))


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
