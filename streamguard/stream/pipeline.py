"""The detection pipeline: validated requests in, alerts out. One per partition.

The same object serves ``replay`` (file), ``demo`` (simulator) and ``run``
(Kafka): sources differ, the path from a validated batch to alerts does not.

Flow of one batch: account slots -> embeddings to the backend ->
near-duplicate scan -> cell assignment and histograms -> statistics of the
touched accounts -> scoring against the population -> alert records.

Until a codebook exists the pipeline buffers the first ``coverage.warmup``
requests, fits one on them, then processes the buffer: nothing is skipped.
Pipelines of several partitions that joined one :class:`SharedWarmup`
(stream/warmup.py; ``run`` and ``replay`` without a codebook file) buffer
everything instead until the warm-up they pool fits one codebook for all.

Judging at the end of a tick is in stream/pipeline_judging.py; checkpoints, memory per account
and eviction in stream/pipeline_state.py (mixins of :class:`Pipeline`).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from streamguard.backends.base import Backend
from streamguard.config import Settings
from streamguard.detectors.accounts import AccountTable
from streamguard.detectors.campaigns import CampaignDetector, make_style_projection
from streamguard.detectors.codebook import Codebook, fit_codebook
from streamguard.detectors.coverage import CoverageDetector
from streamguard.detectors.features import AccountFeatures
from streamguard.detectors.near_duplicate import DetectorBatch, NearDuplicateDetector
from streamguard.detectors.remote import AccountRecords, ForeignAccounts, RemoteIndex, SignatureBatch, account_keys
from streamguard.detectors.scoring import Scorer, read_allowlist, sweep_line
from streamguard.detectors.timing import NO_BOUNDARY, SessionTiming
from streamguard.schema import AlertRecord, RequestBatch
from streamguard.stream.event_time import Admission, EventTimeGuard, Rejected
from streamguard.stream.pipeline_judging import PipelineJudging
from streamguard.stream.pipeline_state import PipelineState
from streamguard.stream.state_log import SlotChanges
from streamguard.stream.warmup import SharedWarmup, WarmupBuffer

log = logging.getLogger(__name__)

STAGES = ("accounts", "near_duplicate", "coverage", "scoring")


BATCH_SECONDS_KEPT = 100_000


@dataclass
class PipelineStats:
    """Counters and timings a caller may export (metrics, demo table)."""

    requests: int = 0
    batches: int = 0
    alerts_by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    stage_seconds: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    batch_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=BATCH_SECONDS_KEPT))
    """The latest batches' processing times (the bench's percentiles); bounded: a service runs for months."""
    near_duplicates: int = 0
    cross_duplicates: int = 0
    remote_duplicates: int = 0
    evicted: int = 0
    evicted_by: dict[str, int] = field(default_factory=lambda: {"idle": 0, "memory": 0})
    """Evicted accounts by reason: ``idle`` (state.idle_evict_hours), ``memory`` (state.max_accounts)."""
    event_time_rejected: int = 0


class Pipeline(PipelineJudging, PipelineState):
    """Detectors, account table and scorer for one shard of the stream.

    Parameters
    ----------
    settings : Settings
    backend : the array backend (chosen by the caller, once)
    codebook : a fixed codebook, or None to fit one on the warm-up
    on_alerts : called with every non-empty list of new alerts
    """

    def __init__(
        self,
        settings: Settings,
        backend: Backend,
        codebook: Codebook | None = None,
        on_alerts: Callable[[list[AlertRecord]], None] | None = None,
    ) -> None:
        self.settings = settings
        self.backend = backend
        self.codebook = codebook
        self.on_alerts = on_alerts
        self.stats = PipelineStats()
        self.accounts = AccountTable(settings.state.initial_accounts, settings.state.max_accounts)
        self.near_duplicate: NearDuplicateDetector | None = None
        self.coverage: CoverageDetector | None = None
        self.campaigns: CampaignDetector | None = None
        self.timing: SessionTiming | None = None
        self.scorer = Scorer(settings.scoring, self.accounts.capacity)
        self.allowlist = read_allowlist(settings.scoring.allowlist)
        # Signature sharing between partitions (off unless enable_sharing is called).
        self.remote: RemoteIndex | None = None
        self.foreign: ForeignAccounts | None = None
        """Attribute tokens and session boundaries of other partitions' accounts (with sharing)."""
        # Per slot: requests of the account when its record was last published (0: never).
        self._sent_seen = np.zeros(self.accounts.capacity, dtype=np.int64)
        self.partition = 0
        self._outgoing: list[SignatureBatch] = []
        self._warm: list[RequestBatch] = []
        self._warm_rows = 0
        self.shared: SharedWarmup | None = None
        """The warm-up pool of the topic's partitions (:meth:`join_warmup`), or None: fit alone."""
        self._finished = False
        self._tick: int | None = None
        self._watermark: int | None = None
        # Event time is judged once per request, before the warm-up buffer; the watermark of each
        # admitted request waits here (FIFO, like the requests) until its chunk is processed.
        self.event_time = EventTimeGuard(settings.event_time)
        self._row_watermarks = np.empty(0, dtype=np.int64)
        self.rejected = Rejected.none()
        """Requests the last :meth:`process` or :meth:`finish` call turned away by event time,
        with reasons: the caller dead-letters them (each row keeps its ``origin``)."""
        self._touched: set[int] = set()
        self._last_request = np.full(self.accounts.capacity, None, dtype=object)
        self._last_dup_request = np.full(self.accounts.capacity, None, dtype=object)
        # Which account slots changed since the last checkpoint record (stream/state_log.py).
        self._changes = SlotChanges(self.accounts.capacity)
        self.accounts.on_grow(self._changes.grow)
        self.accounts.on_grow(self._grow_examples)
        self.accounts.on_reset(self._reset_examples)
        if codebook is not None:
            self._build(codebook)

    @property
    def ready(self) -> bool:
        return self.near_duplicate is not None

    # ----------------------------------------------------------------- set-up

    # ------------------------------------------------------- across partitions

    def enable_sharing(self, partition: int) -> None:
        """Exchange signatures with the pipelines of other partitions (see detectors/remote.py).

        The caller moves :meth:`drain_signatures` of every pipeline to
        :meth:`ingest_signatures` of the others (the service does it through
        Kafka). Shared-prompt links then reach across partitions, and so do attribute groups
        and timing links (``campaign.foreign_accounts``).
        """
        cfg = self.settings
        self.partition = int(partition)
        self.remote = RemoteIndex(
            cfg.signature.bits // 64, cfg.hamming_radius(), cfg.near_duplicate.cross_window_ms, bands=cfg.near_duplicate.bands
        )
        camp = cfg.campaign
        if camp.foreign_accounts > 0:
            self.foreign = ForeignAccounts(camp.foreign_accounts, camp.attributes_per_account, camp.session_boundaries)

    def join_warmup(self, shared: SharedWarmup, partition: int) -> None:
        """Take the codebook from the warm-up that the topic's partitions pool (stream/warmup.py).

        Until it exists every admitted request is buffered; then the buffer is processed
        (:meth:`catch_up` when another partition's request completed the warm-up).
        """
        self.partition = int(partition)
        self.shared = shared
        shared.attach(self.partition, self)

    def warmup_buffer(self) -> WarmupBuffer:
        """The admitted requests waiting for a codebook, with the watermark after each (the pool's view)."""
        if self.ready:
            return WarmupBuffer([], np.empty(0, np.int64), self.event_time.watermark, self._finished, self.codebook)
        # Until a codebook exists every admitted request waits in the buffer, with its watermark queued.
        marks = self._row_watermarks[: self._warm_rows]
        return WarmupBuffer(list(self._warm), marks, self.event_time.watermark, self._finished)

    def catch_up(self) -> list[AlertRecord]:
        """Start on the shared codebook once it exists: process the buffer (and, after :meth:`finish`,
        judge the last tick). Returns the alerts; nothing happens while the warm-up still waits."""
        if self.ready or self.shared is None:
            return []
        alerts = self._start_shared()
        if self._finished and self.ready and self._touched:
            alerts.extend(self._end_tick(self._tick + 1 if self._tick is not None else 0))
        return alerts

    def drain_signatures(self) -> list[SignatureBatch]:
        """Signatures of the requests processed since the last call (empty unless sharing)."""
        out, self._outgoing = self._outgoing, []
        return out

    def ingest_signatures(self, batch: SignatureBatch) -> int:
        """Signatures from another partition; returns how many matched a request of this one."""
        if self.remote is None or batch.source == self.partition:
            return 0
        if self.foreign is not None and batch.accounts is not None and len(batch.accounts):
            records = batch.accounts
            if self.timing is None or records.half_ms != self.timing.half_ms:
                # Boundary codes counted in another bucket (other timing settings): not comparable here.
                records = dataclasses.replace(records, bounds=records.bounds[:, :0])
            self.foreign.update(records)
        if len(batch) == 0:
            return 0
        match = self.remote.ingest(batch)
        if self.campaigns is not None and match.rows.size:
            self.campaigns.observe_foreign(match.local_slots, match.ts, match.foreign_keys)
        self.stats.remote_duplicates += int(match.rows.size)
        return int(match.rows.size)

    def _share(
        self, batch: RequestBatch, slots: np.ndarray, nd: Any, before: tuple[np.ndarray, np.ndarray, np.ndarray] | None
    ) -> None:
        """Match and publish this chunk's signatures; ``before``: (slots, tokens, boundaries) before it."""
        assert self.remote is not None and self.near_duplicate is not None and self.campaigns is not None
        sigs = np.ascontiguousarray(self.backend.to_host(nd.signatures), dtype=np.uint64)
        match = self.remote.match_local(sigs, slots, batch.ts)
        if match.rows.size:
            # A request already matched within this partition is counted once.
            fresh = match.rows[nd.cross_slot[match.rows] < 0]
            self.near_duplicate.count_remote(slots[fresh])
            self.campaigns.observe_foreign(match.local_slots, match.ts, match.foreign_keys)
            self.stats.remote_duplicates += int(match.rows.size)
        unique, first, inverse = np.unique(batch.account_ids, return_index=True, return_inverse=True)
        unique_keys = account_keys(unique)
        records = None
        if before is not None:
            records = self._account_records(slots[first], unique_keys, before)
        self._outgoing.append(SignatureBatch(sigs, unique_keys[inverse], batch.ts.copy(), self.partition, records))

    def _links_before(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """Attribute tokens and session boundaries of a chunk's accounts before it (with sharing)."""
        if self.foreign is None or self.campaigns is None or self.timing is None:
            return None
        unique = np.unique(slots)
        return unique, self.campaigns.attr_tokens[unique].copy(), self.timing.bounds[unique].copy()

    def _account_records(
        self, slots: np.ndarray, keys: np.ndarray, before: tuple[np.ndarray, np.ndarray, np.ndarray]
    ) -> AccountRecords | None:
        """Records of the chunk's accounts (``slots``, their ``keys``) whose tokens or boundaries
        changed, or whose requests doubled, since they were last published; None if none."""
        assert self.campaigns is not None and self.timing is not None and self.near_duplicate is not None
        old_slots, old_tokens, old_bounds = before
        where = np.searchsorted(old_slots, slots)
        tokens, bounds = self.campaigns.attr_tokens[slots], self.timing.bounds[slots]
        seen = self.near_duplicate.requests_seen(slots).astype(np.int64)
        # Compared as sets: a ring keeps its values oldest first, so a value seen again moves.
        changed = (np.sort(tokens, axis=1) != np.sort(old_tokens[where], axis=1)).any(axis=1)
        changed |= (np.sort(bounds, axis=1) != np.sort(old_bounds[where], axis=1)).any(axis=1)
        changed |= seen >= 2 * self._sent_seen[slots]
        # An account with neither tokens nor boundaries has nothing to link by yet.
        send = np.flatnonzero(changed & ((tokens != 0).any(axis=1) | (bounds != NO_BOUNDARY).any(axis=1)))
        if send.size == 0:
            return None
        self._sent_seen[slots[send]] = seen[send]
        return AccountRecords(
            keys[send], seen[send], self.accounts.last_ts[slots[send]].astype(np.int64), tokens[send], bounds[send], self.timing.half_ms
        )

    def _grow_examples(self, capacity: int) -> None:
        self._sent_seen = np.concatenate([self._sent_seen, np.zeros(capacity - self._sent_seen.shape[0], np.int64)])
        extra = capacity - self._last_request.shape[0]
        self._last_request = np.concatenate([self._last_request, np.full(extra, None, dtype=object)])
        self._last_dup_request = np.concatenate([self._last_dup_request, np.full(extra, None, dtype=object)])

    def _reset_examples(self, slots: np.ndarray) -> None:
        self._last_request[slots] = None
        self._last_dup_request[slots] = None
        self._sent_seen[slots] = 0
        self._changes.mark(slots)

    def _build(self, codebook: Codebook) -> None:
        cfg = self.settings
        if codebook.bits != cfg.signature.bits:
            raise ValueError(f"codebook has {codebook.bits}-bit signatures, settings ask for {cfg.signature.bits}")
        self.codebook = codebook
        capacity = self.accounts.capacity
        self.near_duplicate = NearDuplicateDetector(
            self.backend,
            codebook.planes,
            codebook.plane_offsets,
            radius=cfg.hamming_radius(),
            window=cfg.near_duplicate.window,
            bands=cfg.near_duplicate.bands,
            table_bits=cfg.near_duplicate.table_bits,
            cross_window_ms=cfg.near_duplicate.cross_window_ms,
            account_share=cfg.near_duplicate.account_share,
            capacity=capacity,
        )
        self.coverage = CoverageDetector(
            self.backend, codebook.mean, codebook.centroids, codebook.topic_of_cell, codebook.domain_of_topic,
            codebook.warmup_counts,
            half_life_hours=cfg.coverage.half_life_hours,
            population_account_cap=cfg.coverage.population_account_cap,
            mix_trim_mad_k=cfg.coverage.mix_trim_mad_k,
            light_requests=cfg.scoring.min_requests if cfg.coverage.centre_on_light_accounts else 0,
            light_min_accounts=cfg.scoring.population_min_accounts,
            drift_baseline_requests=cfg.coverage.drift_baseline_requests,
            capacity=capacity,
            dominant=codebook.dominant, dominant_shrink=codebook.dominant_shrink,
        )
        camp = cfg.campaign
        self.campaigns = CampaignDetector(
            self.backend,
            make_style_projection(codebook.dim, camp.style_dims, camp.seed),
            style_snr=camp.style_snr,
            link_z=camp.link_z,
            min_group=camp.min_group,
            complementarity=camp.complementarity,
            link_min_requests=camp.link_min_requests,
            max_link_accounts=camp.max_link_accounts,
            shared_prompt_links=camp.shared_prompt_links,
            shared_prompt_share=camp.shared_prompt_share,
            edge_half_life_hours=camp.edge_half_life_hours,
            link_orgs=camp.link_orgs,
            org_link_z=camp.org_link_z,
            min_links=camp.min_links,
            style_min_topics=camp.style_min_topics,
            attribute_max_share=camp.attribute_max_share,
            attributes_per_account=camp.attributes_per_account,
            max_attribute_groups=camp.max_attribute_groups,
            attribute_min_group=camp.attribute_min_group,
            group_line=sweep_line(camp.group_false_alerts_per_10k),
            capacity=capacity,
        )
        self.timing = SessionTiming(
            gap_ms=int(camp.session_gap_minutes * 60_000),
            bucket_ms=int(camp.timing_bucket_seconds * 1000),
            baseline_ms=int(camp.timing_baseline_minutes * 60_000),
            boundaries=camp.session_boundaries,
            false_links=camp.timing_false_links,
            max_pairs=camp.max_timing_pairs,
            min_shared=camp.timing_min_shared,
            capacity=capacity,
        )
        for part in (self.near_duplicate, self.coverage, self.campaigns, self.timing, self.scorer):
            self.accounts.on_grow(part.resize)
            self.accounts.on_reset(part.reset)
        if not cfg.state.max_accounts:
            self.accounts.max_accounts = self.accounts_in_budget()
        self.backend.warmup()

    def fit_codebook(self, batch: RequestBatch) -> Codebook:
        """Fit a codebook on the warm-up, with the population prior it implies.

        The prior is the population mix the coverage detector itself would
        build from the warm-up (style removed, heavy accounts damped), so the
        first hours of a stream are judged against hours of traffic measured
        the same way as the rest of the stream.
        """
        # The dry run below is the backend's first use: the cuda backend refuses to run before
        # its kernels are compiled (and must never compile on a batch).
        self.backend.warmup()
        cov = self.settings.coverage
        book = fit_codebook(
            batch.embeddings,
            batch.account_ids,
            cells=cov.cells,
            max_topics=cov.max_topics,
            bits=self.settings.signature.bits,
            plane_seed=self.settings.signature.seed,
            per_account=cov.warmup_per_account,
            iters=cov.kmeans_iters,
            seed=cov.seed,
            min_accounts=cov.min_accounts_per_cell,
            wrapper_mad_k=cov.wrapper_mad_k,
        )
        table = AccountTable(self.settings.state.initial_accounts)
        dry = CoverageDetector(
            self.backend,
            book.mean,
            book.centroids,
            book.topic_of_cell,
            book.domain_of_topic,
            np.zeros(book.topics),
            half_life_hours=cov.half_life_hours,
            population_account_cap=cov.population_account_cap,
            capacity=table.capacity,
            drift_baseline_requests=0,  # a dry run: no history is judged
            dominant=book.dominant, dominant_shrink=book.dominant_shrink,
        )
        table.on_grow(dry.resize)
        step = self.settings.batch.max_size
        for start in range(0, len(batch), step):
            part = batch.take(slice(start, min(start + step, len(batch))))
            slots = table.assign(part.account_ids, part.ts)
            dry.update(DetectorBatch(slots, part.ts, self.backend.asarray(part.embeddings)))
        # The warm-up's damped topic mass as of its last request: a prior worth as much as the warm-up.
        prior = dry.population_at(int(batch.ts.max()))
        return dataclasses.replace(book, warmup_counts=prior)

    # ------------------------------------------------------------------- flow

    def process(self, batch: RequestBatch) -> list[AlertRecord]:
        """Feed validated requests (in arrival order); returns the alerts they raised.

        Requests whose event time the partition cannot accept (stream/event_time.py) are
        not fed: they are in :attr:`rejected` until the next call.
        """
        return self._admit(self.event_time.admit(batch))

    def _admit(self, admission: Admission) -> list[AlertRecord]:
        self.rejected = admission.rejected
        self.stats.event_time_rejected += len(admission.rejected)
        self._row_watermarks = np.concatenate([self._row_watermarks, admission.watermarks])
        return self._feed(admission.batch)

    def _feed(self, batch: RequestBatch) -> list[AlertRecord]:
        """Admitted requests to the warm-up buffer or the detectors."""
        if len(batch) == 0:
            return []
        if not self.ready and self.shared is not None:
            self._warm.append(batch)
            self._warm_rows += len(batch)
            return self._start_shared()
        if not self.ready:
            # Exactly the first `warmup` requests fit the codebook, however they were batched.
            room = self.settings.coverage.warmup - self._warm_rows
            self._warm.append(batch.take(slice(0, min(room, len(batch)))))
            self._warm_rows += min(room, len(batch))
            if self._warm_rows < self.settings.coverage.warmup:
                return []
            alerts = self._start_from_warmup()
            if len(batch) > room:
                alerts.extend(self._feed(batch.take(slice(room, len(batch)))))
            return alerts
        alerts: list[AlertRecord] = []
        step = self.settings.batch.max_size
        for start in range(0, len(batch), step):
            alerts.extend(self._process_chunk(batch.take(slice(start, min(start + step, len(batch))))))
        return alerts

    def finish(self) -> list[AlertRecord]:
        """End of input: process a stream shorter than the warm-up, judge the last tick."""
        alerts = self._admit(self.event_time.release())  # requests still waiting for their time to be confirmed
        self._finished = True
        if not self.ready and self.shared is not None:
            alerts.extend(self._start_shared())  # the pool may still wait for other partitions: see catch_up
        elif not self.ready and self._warm_rows:
            alerts.extend(self._start_from_warmup())
        if self.ready and self._touched:
            alerts.extend(self._end_tick(self._tick + 1 if self._tick is not None else 0))
        return alerts

    def _start_from_warmup(self) -> list[AlertRecord]:
        warm = RequestBatch.concat(self._warm, self._warm[0].dim)
        self._warm, self._warm_rows = [], 0
        self._build(self.fit_codebook(warm))
        log.info(
            "codebook fitted on %d warm-up requests: %d cells, %d topics", len(warm), self.codebook.cells, self.codebook.topics
        )
        return self._feed(warm)

    def _start_shared(self) -> list[AlertRecord]:
        assert self.shared is not None
        book = self.shared.try_fit(self.fit_codebook)
        if book is None:
            if self._warm_rows:
                self.shared.announce(self.partition)
            return []
        self._build(book)
        if not self._warm:
            return []
        warm = RequestBatch.concat(self._warm, self._warm[0].dim)
        self._warm, self._warm_rows = [], 0
        return self._feed(warm)

    def _process_chunk(self, batch: RequestBatch) -> list[AlertRecord]:
        """Update the detectors, judging accounts each time event time crosses a tick.

        Judging at event-time ticks, never at batch ends, makes the alerts
        independent of how the stream was cut into batches: ``replay`` and
        ``run`` see different batches but the same ticks.
        """
        started = time.perf_counter()
        tick_ms = self.settings.scoring.tick_ms
        # The event-time guard's watermark after each request (a clean stream's running maximum).
        watermark, self._row_watermarks = self._row_watermarks[: len(batch)], self._row_watermarks[len(batch):]
        ticks = watermark // tick_ms
        previous = np.r_[self._tick if self._tick is not None else ticks[0], ticks[:-1]]
        alerts: list[AlertRecord] = []
        start = 0
        for cut in np.flatnonzero(ticks != previous).tolist() + [len(batch)]:
            if cut > start:
                self._update(batch.take(slice(start, cut)))
            if cut < len(batch):
                alerts.extend(self._end_tick(int(ticks[cut])))
            start = cut
        self._watermark = int(watermark[-1])
        if self._tick is None:
            self._tick = int(ticks[-1])
        self.stats.requests += len(batch)
        self.stats.batches += 1
        self.stats.batch_seconds.append(time.perf_counter() - started)
        if alerts and self.on_alerts is not None:
            self.on_alerts(alerts)
        return alerts

    def _update(self, batch: RequestBatch) -> None:
        assert self.near_duplicate and self.coverage  # built before the first chunk
        stage = self.stats.stage_seconds
        t = time.perf_counter()
        slots = self.accounts.assign(batch.account_ids, batch.ts)
        if self.accounts.emergency_evicted:
            self._count_evicted("memory", self.accounts.emergency_evicted)
            self.accounts.emergency_evicted = 0
        self._changes.mark(slots)
        self._last_request[slots] = batch.request_ids
        det_batch = DetectorBatch(slots, batch.ts, self.backend.asarray(batch.embeddings))
        now = time.perf_counter()
        stage["accounts"] += now - t
        t = now
        nd = self.near_duplicate.update(det_batch)
        dup_rows = np.flatnonzero(nd.is_dup | nd.is_cross_dup)
        self._last_dup_request[slots[dup_rows]] = batch.request_ids[dup_rows]
        now = time.perf_counter()
        stage["near_duplicate"] += now - t
        t = now
        self.coverage.update(det_batch)
        stage["coverage"] += time.perf_counter() - t
        assert self.campaigns is not None
        before = self._links_before(slots) if self.remote is not None else None
        self.campaigns.observe(slots, batch.ts, nd.cross_slot, batch.org_ids, batch.attributes)
        assert self.timing is not None
        self.timing.observe(slots, batch.ts)
        if self.remote is not None:
            self._share(batch, slots, nd, before)
        self._touched.update(np.unique(slots).tolist())
        self.stats.near_duplicates += int(nd.is_dup.sum())
        self.stats.cross_duplicates += int(nd.is_cross_dup.sum())

    def _end_tick(self, new_tick: int) -> list[AlertRecord]:
        """Judge every account touched during the tick that just ended, then maintain state."""
        t = time.perf_counter()
        cfg = self.settings.scoring
        ended = self._tick if self._tick is not None else new_tick
        self._tick = new_tick
        # Before the population has an established account there is nothing to refresh the baseline
        # with: waiting for one, not refreshing every tick, keeps a stream of 1-2-request accounts cheap.
        if ended % cfg.refresh_every_ticks == 0 or (self.scorer.baseline.accounts == 0 and self._any_established()):
            self._refresh_population()
        touched = np.array(sorted(self._touched), dtype=np.int64)
        self._touched.clear()
        alerts = self._score(touched)
        if ended % self.settings.campaign.link_every_ticks == 0:
            alerts.extend(self._score_campaigns())
        if ended % cfg.evict_every_ticks == 0:
            self._evict_idle()
        self._evict_over_bound()
        alerts.sort(key=lambda a: (a.ts, a.account_id))
        self.stats.stage_seconds["scoring"] += time.perf_counter() - t
        return alerts

    def account_features(self, slots: np.ndarray) -> AccountFeatures:
        """Every per-account feature scoring reads, for the given slots (host arrays, in their order)."""
        assert self.near_duplicate is not None and self.coverage is not None
        partnered = self.campaigns.partnered_of(slots) if self.campaigns is not None else None
        return AccountFeatures.compose(self.coverage.features(slots), self.near_duplicate.features(slots), partnered)

    def established_features(self, account_ids: Any) -> tuple[np.ndarray, AccountFeatures | None]:
        """Slots (ascending) and features of those of ``account_ids`` that hold a slot and have
        reached ``scoring.min_requests``; ``(empty, None)`` where none has (or before the codebook)."""
        none = np.empty(0, dtype=np.int64)
        if not self.ready:
            return none, None
        found = (self.accounts.slot(account) for account in account_ids)
        slots = np.sort(np.fromiter((s for s in found if s is not None), dtype=np.int64))
        if slots.size == 0:
            return none, None
        assert self.near_duplicate is not None
        slots = slots[self.near_duplicate.requests_seen(slots) >= self.settings.scoring.min_requests]
        if slots.size == 0:
            return none, None
        return slots, self.account_features(slots)

    def active_accounts(self) -> int:
        """Accounts that hold a slot now."""
        return len(self.accounts)

    def _any_established(self) -> bool:
        assert self.near_duplicate is not None
        active = self.accounts.active_slots()
        return bool((self.near_duplicate.requests_seen(active) >= self.settings.scoring.min_requests).any())

    def _refresh_population(self) -> None:
        assert self.near_duplicate is not None and self.coverage is not None
        active = self.accounts.active_slots()
        sample = active
        if sample.size > 20_000:
            sample = np.random.default_rng(sample.size).choice(sample, 20_000, replace=False)
        sample = np.sort(sample)
        self.coverage.refresh_mix(sample)
        self.coverage.centre_on_light(sample)
        established = active[self.near_duplicate.requests_seen(active) >= self.settings.scoring.min_requests]
        if established.size > 20_000:
            # A fixed-seed sample keeps the refresh O(1) in the number of accounts.
            established = np.random.default_rng(established.size).choice(established, 20_000, replace=False)
        if established.size:
            established = np.sort(established)
            self.scorer.refresh_baseline(self.account_features(established), self.coverage.mix_member[established])
