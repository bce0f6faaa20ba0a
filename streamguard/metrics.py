"""Every Prometheus metric streamguard exports, on an injected registry.

The pipeline and the service call the explicit methods of
:class:`StreamguardMetrics`; nothing else in the package defines a metric.
Conventions (DESIGN.md, Metrics):

- names are ``streamguard_*``; counters end in ``_total``; durations are
  ``_seconds`` classic histograms with explicit buckets (prometheus-client
  cannot emit native histograms);
- no label carries a raw account id, request id or prompt text: the only
  per-account series are the bounded top-N of suspicious accounts, labelled
  by :meth:`StreamguardMetrics.account_hash` (keyed HMAC, not reversible
  without the key: :mod:`streamguard.pseudonyms`);
- every label set is bounded: partitions (by the topic), fixed stage, kind
  and reason names, kernel names from the code, ranks ``1..top_n``.

:func:`streamguard.endpoint.serve` exposes ``/metrics`` together with
``/healthz`` and ``/readyz`` on one port, as the Kubernetes probes in
``deploy/k8s`` expect; :mod:`streamguard.backends.kernel_timer` feeds
``streamguard_gpu_kernel_seconds``.
"""

from __future__ import annotations

import heapq
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from streamguard.pseudonyms import account_hash

log = logging.getLogger(__name__)

NAMESPACE = "streamguard"

SCORE_SAMPLED_PIPELINES = 64
"""Pipelines whose last score sample is remembered before stale ones are dropped (see observe_scores)."""

#: Alert kinds counted by ``streamguard_alerts_total{kind}``; a combined alert
#: (``"near_duplicate+campaign"``) counts once for each of its kinds.
ALERT_KINDS = ("near_duplicate", "coverage_sweep", "campaign")
#: Per-account score kinds of ``streamguard_score{kind}``.
SCORE_KINDS = ("near_duplicate", "coverage_sweep")
#: Pipeline stages of ``streamguard_stage_duration_seconds{stage}``.
STAGES = ("decode", "accounts", "near_duplicate", "coverage", "scoring", "checkpoint", "sink")
#: Dead-letter reason stems (the text before ``":"`` in a DeadLetter reason, as
#: ``streamguard.schema`` writes them); any other stem is counted as ``"other"``.
BAD_RECORD_REASONS = (
    "undecodable",
    "missing request_id",
    "missing account_id",
    "missing ts",
    "missing embedding",
    "wrong dimension",
    "embedding has NaN or Inf",
    "zero vector",
    "event time outside the sane range",
    "event time too far behind",
    "event time too far ahead",
    "other",
)
#: Reasons of ``streamguard_source_resets_total{reason}``: the request topic's offsets moved
#: backwards or its shape changed (see the policy in ``streamguard.service.source_policy`` and docs/kafka.md).
SOURCE_RESET_REASONS = (
    "log_truncated",
    "offset_moved_back",
    "topic_recreated",
    "partitions_changed",
    "topic_missing",
    "offset_gap",
)

# Buckets. Latencies span a tiny CPU batch (~1 ms) to a stalled GPU batch (tens of s).
BATCH_SECONDS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
STAGE_SECONDS_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
KERNEL_SECONDS_BUCKETS = (1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
BATCH_SIZE_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)
# Event time -> alert: seconds when live, hours when evidence must accumulate.
ALERT_DELAY_BUCKETS = (0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 21600, 86400, 259200)
SCORE_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75, 0.8, 0.85, 0.9, 0.95, 0.99, 1.0)

_KERNEL_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}\Z")
_METRIC_NAME = re.compile(r"streamguard_[a-zA-Z0-9_]+\Z")


class _ScoreHistograms(Collector):
    """``streamguard_score{kind}``, filled a whole array at a time.

    ``Histogram.observe`` costs about a microsecond per value in Python; a
    batch scores every touched account, so the buckets are counted with NumPy
    and exported at scrape time instead.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._edges = np.asarray(SCORE_BUCKETS, dtype=np.float64)
        self._counts = {kind: np.zeros(len(SCORE_BUCKETS), dtype=np.int64) for kind in SCORE_KINDS}
        self._sums = dict.fromkeys(SCORE_KINDS, 0.0)

    def observe(self, kind: str, values: np.ndarray) -> None:
        # Non-cumulative count per bucket: index of the first upper edge >= value.
        slots = np.searchsorted(self._edges, values, side="left")
        per_bucket = np.bincount(slots, minlength=len(self._edges))[: len(self._edges)]
        with self._lock:
            self._counts[kind] += per_bucket
            self._sums[kind] += float(values.sum())

    def collect(self) -> Iterable[HistogramMetricFamily]:
        family = HistogramMetricFamily(
            f"{NAMESPACE}_score",
            "Per-account detector scores in [0, 1] (each scored account of each batch is one observation).",
            labels=["kind"],
        )
        with self._lock:
            snapshot = {kind: (self._counts[kind].copy(), self._sums[kind]) for kind in SCORE_KINDS}
        for kind, (counts, total) in snapshot.items():
            cumulative = np.cumsum(counts)
            buckets = [(floatToGoString(edge), float(c)) for edge, c in zip(SCORE_BUCKETS, cumulative)]
            buckets.append(("+Inf", float(cumulative[-1])))
            family.add_metric([kind], buckets, total)
        yield family


class _TopSuspicious(Collector):
    """``streamguard_suspicious_account_score{rank, account_hash}``: only the current top-N.

    The whole table is swapped at once, so a scrape never sees a half-updated
    ranking or a stale account left behind by the previous one.
    """

    def __init__(self) -> None:
        self._rows: tuple[tuple[str, str, float], ...] = ()

    def replace(self, rows: tuple[tuple[str, str, float], ...]) -> None:
        self._rows = rows

    def collect(self) -> Iterable[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            f"{NAMESPACE}_suspicious_account_score",
            "Score of the current top-N suspicious accounts; account_hash is a keyed HMAC of the account id.",
            labels=["rank", "account_hash"],
        )
        for rank, account_hash, score in self._rows:
            family.add_metric([rank, account_hash], score)
        yield family


class _CallbackGauges(Collector):
    """Gauges whose values a callable returns at scrape time (queue depth, GPU memory...)."""

    def __init__(self, source: Callable[[], Mapping[str, float]]) -> None:
        self._source = source

    def collect(self) -> Iterable[GaugeMetricFamily]:
        try:
            values = dict(self._source())
        except Exception:  # a failing probe must not turn the whole scrape into an HTTP 500
            log.exception("metrics collector %r failed; its gauges are left out of this scrape", self._source)
            return
        for name, value in sorted(values.items()):
            if not isinstance(name, str) or not _METRIC_NAME.match(name) or name.endswith("_total"):
                log.warning("metrics collector returned an invalid gauge name %r; skipped", name)
                continue
            yield GaugeMetricFamily(name, f"{name} (read at scrape time)", value=float(value))


class StreamguardMetrics:
    """All streamguard metrics, defined on ``registry``.

    Parameters
    ----------
    registry : prometheus_client.CollectorRegistry
        Where every metric is registered; tests pass a fresh one, the service
        passes ``prometheus_client.REGISTRY`` (which also carries the process
        and platform collectors).
    hmac_key : bytes
        Key of :meth:`account_hash`; keep it secret and stable across
        restarts (``STREAMGUARD_HMAC_KEY``), or the hashes of one account
        change between dashboards and alerts.
    top_n : int
        How many suspicious accounts :meth:`suspicious` exports.
    """

    def __init__(self, registry: CollectorRegistry, hmac_key: bytes, top_n: int = 10) -> None:
        if not isinstance(hmac_key, (bytes, bytearray)):
            raise TypeError(f"hmac_key must be bytes, got {type(hmac_key).__name__}")
        if len(hmac_key) == 0:
            raise ValueError("hmac_key is empty: set STREAMGUARD_HMAC_KEY to a secret of at least 16 bytes")
        if not isinstance(top_n, int) or isinstance(top_n, bool) or not 1 <= top_n <= 1000:
            raise ValueError(f"top_n must be an int in 1..1000, got {top_n!r}")
        self.registry = registry
        self.hmac_key = bytes(hmac_key)
        self.top_n = top_n

        ns = NAMESPACE
        self._requests = Counter(
            f"{ns}_requests", "Valid requests fed to the detectors, by Kafka partition ('none' outside Kafka).",
            ["partition"], registry=registry,
        )
        self._bad_records = Counter(
            f"{ns}_bad_records", "Records sent to the dead-letter sink, by reason stem.",
            ["reason"], registry=registry,
        )
        self._alerts = Counter(
            f"{ns}_alerts", "Alerts emitted; a combined alert counts once per kind.",
            ["kind"], registry=registry,
        )
        self._held_back = Counter(
            f"{ns}_alerts_held_back",
            "Alerts held back by scoring.alert_budget (still pending; sent when the day's budget frees).",
            registry=registry,
        )
        self._evicted = Counter(
            f"{ns}_accounts_evicted",
            "Accounts whose state was evicted, by reason: idle (state.idle_evict_hours) or memory "
            "(least recently active, over state.max_accounts / state.memory_mb).",
            ["reason"], registry=registry,
        )
        self._source_resets = Counter(
            f"{ns}_source_resets",
            "The request topic's offsets moved backwards or its shape changed (log truncated, topic recreated or "
            "missing, another partition count, records skipped), by reason; see docs/kafka.md.",
            ["reason"], registry=registry,
        )
        self._batch_seconds = Histogram(
            f"{ns}_batch_duration_seconds", "Wall time to process one micro-batch, decode to checkpoint.",
            registry=registry, buckets=BATCH_SECONDS_BUCKETS,
        )
        self._batch_size = Histogram(
            f"{ns}_batch_size", "Requests per micro-batch.",
            registry=registry, buckets=BATCH_SIZE_BUCKETS,
        )
        self._stage_seconds = Histogram(
            f"{ns}_stage_duration_seconds", "Wall time of one pipeline stage for one micro-batch.",
            ["stage"], registry=registry, buckets=STAGE_SECONDS_BUCKETS,
        )
        self._alert_delay = Histogram(
            f"{ns}_alert_delay_seconds",
            "Event time of the request that triggered an alert to the wall time the alert was emitted.",
            registry=registry, buckets=ALERT_DELAY_BUCKETS,
        )
        self._consumer_lag = Gauge(
            f"{ns}_consumer_lag_records", "Records behind the fetch high watermark, per assigned partition.",
            ["partition"], registry=registry,
        )
        self._active_accounts = Gauge(
            f"{ns}_active_accounts", "Accounts holding detector state (not yet evicted).", registry=registry,
        )
        self._state_bytes = Gauge(
            f"{ns}_state_bytes", "Bytes of per-account detector state (host or device).", registry=registry,
        )
        self._backend_info = Gauge(
            f"{ns}_backend_info", "Array backend chosen at start-up (value is always 1).",
            ["backend", "device"], registry=registry,
        )
        self._gpu_kernel = Histogram(
            f"{ns}_gpu_kernel_seconds", "Device time of one launch of a custom kernel.",
            ["kernel"], registry=registry, buckets=KERNEL_SECONDS_BUCKETS,
        )
        self._ready = Gauge(
            f"{ns}_ready", "1 when partitions are assigned, state restored and the pipeline is consuming.",
            registry=registry,
        )
        self._last_progress = Gauge(
            f"{ns}_last_progress_timestamp_seconds", "Unix time of the last processed batch or idle poll.",
            registry=registry,
        )
        self._warmup_remaining = Gauge(
            f"{ns}_warmup_remaining_requests",
            "Requests the shared warm-up still needs before its codebook is fitted (0 once fitted, or with --codebook).",
            registry=registry,
        )
        self._warmup_waiting = Gauge(
            f"{ns}_warmup_waiting",
            "1 while partitions buffer their requests for the shared codebook (no alerts yet), else 0.",
            registry=registry,
        )
        self._scores = _ScoreHistograms()
        registry.register(self._scores)
        self._top = _TopSuspicious()
        registry.register(self._top)
        self._backend_lock = threading.Lock()
        self._alerted: dict[str, float] = {}
        self._score_sampled_at: dict[int, float] = {}

        # Export every bounded label set at 0 from the start: increase() and
        # rate() in the alert rules need a sample *before* the first event.
        for kind in ALERT_KINDS:
            self._alerts.labels(kind=kind)
        for reason in BAD_RECORD_REASONS:
            self._bad_records.labels(reason=reason)
        for stage in STAGES:
            self._stage_seconds.labels(stage=stage)
        for reason in SOURCE_RESET_REASONS:
            self._source_resets.labels(reason=reason)

    # -- hashing ---------------------------------------------------------

    def account_hash(self, account_id: str) -> str:
        """Keyed hash of an account id: HMAC-SHA256, hex, first 16 characters.

        The same value goes into alert records, so an operator can join a
        dashboard row to an alert without the metrics holding the raw id.
        """
        return account_hash(self.hmac_key, account_id)

    # -- counters --------------------------------------------------------

    def requests(self, n: int, partition: int | None = None) -> None:
        """Count ``n`` valid requests from ``partition`` (None: file, simulator)."""
        if n < 0:
            raise ValueError(f"request count must be >= 0, got {n}")
        self._requests.labels(partition=_partition_label(partition)).inc(n)

    def bad_records(self, reason: str, n: int = 1) -> None:
        """Count ``n`` dead letters; ``reason`` may be a stem or a full DeadLetter reason."""
        if n < 0:
            raise ValueError(f"bad record count must be >= 0, got {n}")
        stem = str(reason).split(":", 1)[0].strip()
        self._bad_records.labels(reason=stem if stem in BAD_RECORD_REASONS else "other").inc(n)

    def source_reset(self, reason: str, n: int = 1) -> None:
        """Count ``n`` detected changes of the request topic (a reason of :data:`SOURCE_RESET_REASONS`)."""
        if reason not in SOURCE_RESET_REASONS:
            raise ValueError(f"unknown source reset reason {reason!r}; known: {', '.join(SOURCE_RESET_REASONS)}")
        if n < 0:
            raise ValueError(f"source reset count must be >= 0, got {n}")
        self._source_resets.labels(reason=reason).inc(n)

    def alerts(self, kinds: list[str]) -> None:
        """Count one alert of each distinct kind in ``kinds`` (``"a+b"`` entries are split)."""
        seen: set[str] = set()
        for entry in kinds:
            for kind in re.split(r"[+,|]", str(entry)):
                kind = kind.strip()
                if not kind:
                    continue
                if kind not in ALERT_KINDS:
                    raise ValueError(f"unknown alert kind {kind!r}; known: {', '.join(ALERT_KINDS)}")
                seen.add(kind)
        for kind in sorted(seen):
            self._alerts.labels(kind=kind).inc()

    # -- latencies -------------------------------------------------------

    def evicted(self, reason: str, n: int) -> None:
        """Count ``n`` accounts evicted for ``reason`` (``idle`` or ``memory``)."""
        if n > 0:
            self._evicted.labels(reason=reason).inc(n)

    def held_back(self, n: int) -> None:
        """Count ``n`` alerts the alert budget held back."""
        if n > 0:
            self._held_back.inc(n)

    def batch(self, seconds: float, size: int) -> None:
        """Observe one processed micro-batch: its wall time and its number of requests."""
        self._batch_seconds.observe(_non_negative(seconds))
        self._batch_size.observe(max(int(size), 0))

    def stage(self, name: str, seconds: float) -> None:
        """Observe the wall time of one stage (one of :data:`STAGES`) for one batch."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; known: {', '.join(STAGES)}")
        self._stage_seconds.labels(stage=name).observe(_non_negative(seconds))

    def alert_delay(self, seconds: float) -> None:
        """Observe event time -> emission delay of one alert.

        Producer clocks run ahead of ours at times: a negative delay is clamped
        to 0 rather than subtracted from the histogram's sum.
        """
        self._alert_delay.observe(_non_negative(seconds))

    def gpu_kernel(self, kernel: str, seconds: float) -> None:
        """Observe the device time of one launch of ``kernel`` (its entry-point name)."""
        if not isinstance(kernel, str) or not _KERNEL_NAME.match(kernel):
            raise ValueError(f"kernel name must be an identifier of at most 64 characters, got {kernel!r}")
        self._gpu_kernel.labels(kernel=kernel).observe(_non_negative(seconds))

    # -- gauges ----------------------------------------------------------

    def consumer_lag(self, partition: int, lag: int) -> None:
        """Set the lag of ``partition``: fetch high watermark minus next offset to consume."""
        self._consumer_lag.labels(partition=_partition_label(partition)).set(max(int(lag), 0))

    def forget_partitions(self, partitions: Iterable[int]) -> None:
        """Drop the lag series of revoked partitions, so a stale lag cannot keep an alert firing."""
        for partition in partitions:
            try:
                self._consumer_lag.remove(_partition_label(partition))
            except KeyError:
                pass

    def accounts(self, active: int, state_bytes: int) -> None:
        """Set the number of accounts holding state and the bytes that state takes."""
        self._active_accounts.set(int(active))
        self._state_bytes.set(int(state_bytes))

    def scores(self, kind: str, values: Any) -> None:
        """Observe per-account scores of one kind.

        Parameters
        ----------
        kind : one of :data:`SCORE_KINDS`
        values : (n,) array-like of float
            Scores in [0, 1]; values outside are clipped, non-finite ones dropped.
        """
        if kind not in SCORE_KINDS:
            raise ValueError(f"unknown score kind {kind!r}; known: {', '.join(SCORE_KINDS)}")
        arr = np.asarray(values, dtype=np.float64).reshape(-1)
        arr = np.clip(arr[np.isfinite(arr)], 0.0, 1.0)
        if arr.size:
            self._scores.observe(kind, arr)

    def suspicious(self, top: list[tuple[str, float]]) -> None:
        """Replace the exported top-N with the highest-scoring accounts of ``top``.

        Parameters
        ----------
        top : (account_id, score) pairs, any order, any length; only the
            ``top_n`` best distinct accounts are exported, ranked ``"1"`` (highest)
            to ``str(top_n)``, labelled by :meth:`account_hash`. Accounts that left
            the top-N disappear from the exposition.
        """
        best: dict[str, float] = {}
        for account_id, score in top:
            score = float(score)
            if not math.isfinite(score):
                continue
            if score > best.get(account_id, -math.inf):
                best[account_id] = score
        ranked = heapq.nlargest(self.top_n, best.items(), key=lambda item: (item[1], item[0]))
        self._top.replace(
            tuple((str(rank), self.account_hash(account_id), score) for rank, (account_id, score) in enumerate(ranked, 1))
        )

    def backend_info(self, name: str, device: str) -> None:
        """Export the chosen backend and its device (e.g. ``"cuda"``, ``"NVIDIA H100 80GB HBM3"``)."""
        with self._backend_lock:
            self._backend_info.clear()
            self._backend_info.labels(backend=str(name), device=str(device)).set(1)

    def ready(self, flag: bool) -> None:
        """Set readiness; :func:`serve` answers ``/readyz`` from it."""
        self._ready.set(1 if flag else 0)

    def last_progress(self, ts: float) -> None:
        """Record the Unix time of the last progress (a processed batch or an idle poll)."""
        self._last_progress.set(float(ts))

    def warmup(self, remaining: int, waiting: bool) -> None:
        """Where the shared warm-up stands (``streamguard.stream.warmup.WarmupStatus``)."""
        self._warmup_remaining.set(max(int(remaining), 0))
        self._warmup_waiting.set(1 if waiting else 0)

    # -- what a pipeline and its alerts tell -----------------------------

    def observe_alerts(
        self, alerts: Iterable[Any], now_ms: float, arrival_ms: Callable[[int], float] | None = None
    ) -> None:
        """Count emitted alerts by kind, observe their delay and refresh the top-N.

        Parameters
        ----------
        alerts : AlertRecord-like objects (``account_id``, ``ts``, ``score``, ``kind``)
        now_ms : wall clock at emission, epoch ms
        arrival_ms : wall time (epoch ms) at which the request of event time
            ``ts`` entered the process. None (``run``): the event time itself,
            so the delay is event time -> alert, producer and broker included.
            ``replay`` and ``demo`` read a file much faster (or, with
            ``--pace``, slower) than its event times passed: they give the
            time the row was read, so the delay is what the detector added.

        The top-N holds the best alert score of each alerted account (at most
        1,000 are remembered, the best 100 kept when that fills up).
        """
        changed = False
        for alert in alerts:
            try:
                self.alerts([alert.kind])
            except ValueError as exc:  # a kind the metrics do not know must not stop the pipeline
                log.warning("alert not counted in metrics: %s", exc)
            start = float(alert.ts) if arrival_ms is None else float(arrival_ms(int(alert.ts)))
            self.alert_delay((float(now_ms) - start) / 1000.0)
            score = float(alert.score)
            if math.isfinite(score) and score > self._alerted.get(alert.account_id, -math.inf):
                self._alerted[alert.account_id] = score
                changed = True
        if changed:
            if len(self._alerted) > 1000:
                self._alerted = dict(heapq.nlargest(100, self._alerted.items(), key=lambda kv: (kv[1], kv[0])))
            self.suspicious(list(self._alerted.items()))

    def observe_scores(self, pipeline: Any, account_ids: Any, min_interval_s: float = 1.0, max_accounts: int = 4096) -> int:
        """Observe the current per-account scores of the accounts of one batch.

        ``streamguard_score{kind}`` gets, for each account of ``account_ids``
        that has reached ``scoring.min_requests``, the score an alert of that
        kind would carry now: :meth:`Scorer.score_of` the coverage-sweep
        margin and the cross-account near-duplicate margin of
        :class:`streamguard.detectors.scoring.Scorer` (>= 0.5: past the line).
        Only ``Pipeline.established_features`` and the scorer's public
        methods are read; nothing is changed.

        Sampled, to stay off the hot path: at most once per ``min_interval_s``
        of wall time per pipeline, at most ``max_accounts`` accounts.
        Returns the number of accounts observed.
        """
        if not getattr(pipeline, "ready", False):
            return 0
        now = time.monotonic()
        key = id(pipeline)
        if now - self._score_sampled_at.get(key, -math.inf) < min_interval_s:
            return 0
        if len(self._score_sampled_at) >= SCORE_SAMPLED_PIPELINES:
            # Keyed by id(pipeline), and every restore makes a new pipeline: drop entries that no longer
            # throttle anything (older than the interval), so revoked partitions' pipelines do not pile up.
            self._score_sampled_at = {k: t for k, t in self._score_sampled_at.items() if now - t < min_interval_s}
        self._score_sampled_at[key] = now
        accounts = np.unique(np.asarray(account_ids, dtype=object))[:max_accounts]
        slots_arr, features = pipeline.established_features(accounts)
        if features is None:
            return 0
        scorer = pipeline.scorer
        sweep = np.asarray(scorer.sweep_margin(features.sweep_z, features.effective_topics), dtype=np.float64)
        cross = np.asarray(scorer.cross_margin(features.cross_rate), dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            self.scores("coverage_sweep", scorer.score_of(np.clip(sweep, 0.0, 64.0)))
            self.scores("near_duplicate", scorer.score_of(np.clip(cross, 0.0, 64.0)))
        return int(slots_arr.size)

    def observe_accounts(self, pipelines: Iterable[Any]) -> None:
        """Set active accounts and state bytes from the pipelines of this process."""
        active = 0
        state_bytes = 0
        for pipeline in pipelines:
            n = pipeline.active_accounts()
            active += n
            state_bytes += n * pipeline.state_bytes_per_account()
            fixed = getattr(pipeline, "fixed_state_bytes", None)
            state_bytes += fixed() if fixed is not None else 0
        self.accounts(active, state_bytes)

    def register_collector(self, source: Callable[[], Mapping[str, float]]) -> Collector:
        """Export gauges read at scrape time.

        ``source`` returns ``{"streamguard_<name>": value}``; it is called on
        every scrape. A failing call or an invalid name is logged and left out
        of that scrape rather than failing it. Returns the collector, which
        ``registry.unregister`` removes.
        """
        collector = _CallbackGauges(source)
        self.registry.register(collector)
        return collector


def _partition_label(partition: int | None) -> str:
    if partition is None:
        return "none"
    if isinstance(partition, bool) or not isinstance(partition, (int, np.integer)) or partition < 0:
        raise ValueError(f"partition must be a non-negative int or None, got {partition!r}")
    return str(int(partition))


def _non_negative(seconds: float) -> float:
    value = float(seconds)
    if math.isnan(value):
        raise ValueError("duration is NaN")
    return max(value, 0.0)
