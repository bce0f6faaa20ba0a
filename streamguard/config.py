"""Every default of streamguard, in frozen dataclasses.

Settings come from three places, later ones winning: these defaults, a TOML
file (``--config``), ``STREAMGUARD_<SECTION>_<FIELD>`` environment variables,
then command-line flags. Thresholds are expressed in units that do not depend
on the embedding model (bits of a signature are derived from a cosine, rates
and log-ratios are judged against the live population), so the defaults
transfer between streams.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import inspect
import logging
import math
import os
import tomllib
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Iterator, Mapping

log = logging.getLogger("streamguard.config")

HOUR_MS = 3_600_000
MIB = 1 << 20
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


@dataclass(frozen=True)
class SignatureConfig:
    """SimHash signatures used by the near-duplicate detector."""

    bits: int = 128
    """Signature length; a multiple of 64 (stored as uint64 words)."""
    seed: int = 0x5EED
    """Seed of the random hyperplanes: part of the model, keep it fixed."""
    dup_cosine: float = 0.90
    """Cosine (in the stream-centred space) at which two requests are near-duplicates.

    Converted to a Hamming radius with the SimHash collision law
    ``P(bit differs) = angle / pi``; the radius keeps ~all pairs at or above
    this cosine, so the signature is a candidate filter tuned for recall."""


@dataclass(frozen=True)
class NearDuplicateConfig:
    window: int = 65_536
    """The within-account search covers the account's requests among the last `window`
    requests this pipeline has seen. The pipeline keeps 2 * window signatures (16 B each
    at 128 bits, plus 8 B of chain link: 3 MiB at the default) whatever the number of
    accounts; a request's scan costs its account's requests in that window."""
    bands: int = 8
    """Cross-account lookup: the signature is split into this many bands."""
    table_bits: int = 16
    """Each band indexes a table of 2**table_bits buckets."""
    cross_window_ms: int = 24 * HOUR_MS
    """A cross-account match must be at most this old."""
    account_share: float = 0.25
    """No account holds more than this share of the window (``window * account_share``
    entries). A request of an account that already holds its share is compared with
    those entries and is not stored: it takes no place in the window, so one account
    sending most of a partition's traffic can neither push everyone else's requests out
    of the window nor make a request cost more than ``window * account_share``
    comparisons. It is a bound on cost, stated as a share of the partition's own recent
    traffic, not a property of any world: an ordinary account (a product, a batch job)
    is a visible share of a partition's traffic but not a quarter of it for as long as a
    window lasts; one that is keeps being compared with a quarter of the window of its
    own requests, a sample that a template or a repeated prompt still hits."""


@dataclass(frozen=True)
class CoverageConfig:
    cells: int = 1024
    """Fine cells of the codebook (K): spherical k-means centroids of the warm-up."""
    max_topics: int = 512
    """Fine cells are merged into at most this many topics (see detectors/codebook.py)."""
    warmup: int = 20_000
    """Valid requests buffered to fit the codebook when none is loaded, pooled over the topic's
    partitions (see stream/warmup.py): a partition needs no such number of its own."""
    warmup_per_account: int = 8
    """Cap per account in the warm-up sample, so heavy or templated accounts do not own cells."""
    min_accounts_per_cell: int = 2
    """A cell must be used by this many warm-up accounts: one account's system prompt is no capability."""
    wrapper_mad_k: float = 6.0
    """A cell whose requests, once its centroid is removed, still point at other cells (a template
    shared by many accounts wrapped around the topics they ask about) more than the stream's cells
    typically do, by this many robust deviations (the population's own spread, as
    scoring.population_mad_k), is dropped (0: keep every cell); see detectors/codebook.py."""
    kmeans_iters: int = 10
    half_life_hours: float = 72.0
    """Decay of per-account and population topic histograms."""
    population_account_cap: int = 50
    """In the population's mix, an account's k-th request counts min(1, cap / k): the mix
    is what accounts ask about, not what the few heaviest accounts send."""
    mix_trim_mad_k: float = 3.0
    """The mix accounts are judged against is fitted to the accounts whose sweep_z lies within
    this many robust deviations of the kept accounts' median (0: all traffic): distillers in the
    mix flatten it until no sweep looks rare. A robust-statistics cut on a statistic that is
    ~N(0, 1) for ordinary accounts on any world; see CoverageDetector.refresh_mix."""
    seed: int = 0


@dataclass(frozen=True)
class ScoringConfig:
    min_requests: int = 200
    """No alert before an account has sent this many requests."""
    false_alerts_per_10k: float = 5.0
    """The false-alert rate the sweep line is set for: ordinary accounts alerted per 10,000.

    The line is the normal quantile ``z = Phi^-1(1 - rate / 10,000)`` of the sweep statistic
    (``coverage.py``: how much rarer than the population's an account's topics are, in standard
    errors of an account that picks as many topics from the population mix). Under that null
    the statistic is a z-score whatever the world, the embedding model or the codebook, so the
    setting means the same on every stream (5 per 10k: z = 3.29)."""
    min_span_ms: int = 2 * HOUR_MS
    """A sweep must be sustained: the account active for at least this long (a benchmark
    run is one short burst) ..."""
    confirm_ms: int = HOUR_MS // 2
    """... and the line still crossed this long after it was first crossed ..."""
    min_growth: float = 0.1
    """... while the account's volume grew by this fraction (a sweeper keeps going)."""
    burst_growth: float = 0.0
    """Alternatively, volume growing this many times over the first crossing confirms (0: off).
    Off by default: a benchmark run of 2,000 requests crosses at a few hundred and grows
    fourfold inside its own burst, so growth alone cannot tell it from a sweeper."""
    population_min_accounts: int = 30
    """Below this many established accounts, only the absolute floors apply."""
    population_mad_k: float = 6.0
    """A rate is unusual when it is more than k robust deviations above the population median."""
    cross_dup_floor: float = 0.5
    """Floor on the cross-account near-duplicate rate for a near_duplicate alert."""
    hysteresis: float = 0.8
    """Once crossed, an account stays pending until its margin falls below this (not 1.0),
    so evidence hovering at the line is not reset by every wobble."""
    alert_budget: float = 0.0
    """At most this many alerts per 10,000 established accounts per event-time day (0: no cap).
    Over budget, the strongest alerts go out and the rest stay pending, judged again each tick
    and counted as held back; see README, "Calibration"."""
    allowlist: str = ""
    """File of account ids and org ids (one per line, # comments) never alerted nor linked into
    a campaign; their traffic still counts in the population."""
    realert_growth: float = 1.0
    """Alert an account again once its volume has grown by this fraction since the last alert."""
    tick_ms: int = 300_000
    """Accounts are judged each time event time crosses a tick, never at batch ends, so
    alerts do not depend on how the stream was cut into batches."""
    refresh_every_ticks: int = 3
    """Recompute population statistics every this many ticks."""
    evict_every_ticks: int = 12
    """Look for idle accounts to evict every this many ticks."""


@dataclass(frozen=True)
class CampaignConfig:
    style_dims: int = 128
    """Dimensions of the per-account style vector (a random projection of topic residuals)."""
    seed: int = 0x57E1
    style_snr: float = 4.0
    """A style must carry this many times the energy of pure noise to be linked."""
    link_z: float = 6.0
    """Link when the style cosine exceeds link_z / sqrt(style_dims): far beyond chance."""
    min_group: int = 3
    complementarity: float = 2.0
    """A group's effective topics must exceed its median member's this many times."""
    group_false_alerts_per_10k: float = 5.0
    """The sweep line of a linked group, as a false-alert rate (scoring.false_alerts_per_10k's
    meaning; 5 per 10k: z = 3.29, an account's line). Not lower: a group is chosen by its links,
    and ordinary users linked because they ask about the same topics, judged against the rest
    of the stream, sit above the null (up to z = 2.9 on the independent world, seed 7001)."""
    link_min_requests: int = 50
    """Accounts with fewer requests are not linked. Lower catches more of a slow campaign's small
    accounts (20 caught 19-29 of 30 slow_10x members on seeds 10-14, against 8-13 at 50), but
    then casual accounts of 20-50 requests, whose few topics look like a style, can be pulled
    into a group (2 on seed 11 with the mixed_into_product scenario): see README, evasion."""
    max_link_accounts: int = 5000
    link_every_ticks: int = 3
    """Link accounts every this many scoring ticks."""
    shared_prompt_links: float = 3.0
    """Link two accounts once they sent near-duplicates of each other's prompts this many
    times (decayed): one popular prompt sent by both is not a link."""
    shared_prompt_share: float = 0.05
    """... and this share of the smaller account's requests (heavy accounts meet by chance)."""
    edge_half_life_hours: float = 24.0
    """Shared-prompt evidence between two accounts halves after this long."""
    link_orgs: bool = True
    """Accounts billing to the same org_id link on weaker evidence (an org alone is no link:
    companies have many employees): styles at org_link_z, or one shared prompt."""
    org_link_z: float = 3.0
    min_links: int = 2
    """A member must be linked to this many others of its group (one link may be chance)."""
    style_min_topics: float = 2.0
    """A style links only accounts spread over this many effective topics (over about one topic a
    "style" is where that topic sits, not a template)."""
    attribute_max_share: float = 0.25
    """Accounts sharing a request attribute value (a network prefix, a payment instrument) are
    judged together as one group, unless more than this share of the live accounts hold the value:
    then it is infrastructure (a carrier's NAT, a popular SDK) that says nothing about who acts
    together. A share of the population, the same in a stream of 500 accounts or of millions; the
    group must still sweep to be alerted, so the cap only bounds the work. 0 turns it off."""
    attributes_per_account: int = 4
    """Attribute tokens remembered per account (the latest distinct (key, value) pairs), 8 B each."""
    max_attribute_groups: int = 256
    """Attribute groups judged per linking pass, the largest first (bounds the work)."""
    attribute_min_group: int = 6
    """A shared value is judged as a group once this many live accounts hold it. A few accounts
    behind one address are as often a household, a small office or three servers of one cloud
    range as one actor, and a handful of unrelated server accounts (a benchmark run beside two
    sweepers) sweeps together by chance; an actor hiding in many accounts has many."""
    timing_false_links: float = 0.01
    """Timing links (detectors/timing.py): accounts whose sessions start and end in the same
    minutes, window after window, beyond what the stream's own rate of session boundaries at those
    times gives by chance. This is the expected number of chance links per linking pass over all
    pairs of linkable accounts together (a Bonferroni line on the Poisson tail), a probability, not
    a fitted constant; 0 turns timing links off."""
    session_gap_minutes: float = 30.0
    """Silence that ends a session: a time scale of people and schedulers (a meeting, a lunch, a
    scheduler's off window), not of a world."""
    timing_bucket_seconds: float = 120.0
    """Width of the buckets session boundaries are matched in (two grids offset by half a bucket:
    boundaries within a minute always meet). A scheduler starts its workers within seconds."""
    timing_baseline_minutes: float = 30.0
    """Either side of a bucket, the stretch of the stream whose boundaries give its chance rate:
    long enough to count, short enough to follow the daily rhythm of a time zone."""
    session_boundaries: int = 16
    """Session starts and ends remembered per account (8 B each)."""
    timing_min_shared: int = 3
    """Boundaries two accounts must share at least, whatever the chance: one or two coincidences in
    a quiet hour are too few to estimate that hour's rate from."""
    max_timing_pairs: int = 2_000_000
    """Candidate pairs compared per linking pass at most (the buckets most above their neighbourhood
    first): bounds the work of a stream of millions of accounts."""


@dataclass(frozen=True)
class BatchConfig:
    max_size: int = 4096
    max_delay_s: float = 0.5


@dataclass(frozen=True)
class ReplayConfig:
    """How ``streamguard replay`` reads a file (stream/replay.py): in record batches, in bounded memory.

    What the reading holds is about ``reorder_rows + 4 x read_rows`` rows of
    ``4 D + ~100`` bytes (the held rows, and the copies one read makes on its way
    through), plus a Parquet row group's compressed pages, whatever the file's
    size: ~250 MB at the defaults and D = 384 (README, "Replaying large files").
    """

    read_rows: int = 16_384
    """Rows read from the file at a time. Parquet decoding holds ~4 x this many rows
    at once (65,536 rows at D = 384: ~370 MB; 16,384: ~100 MB)."""
    reorder_rows: int = 100_000
    """Rows held back to restore event-time order: the stream is mostly, not strictly, ordered.
    A row may arrive after this many later-stamped rows (30 s stragglers at 3,000 requests/s;
    more when they fall within one read); a file more out of order than the buffer can repair
    stops the replay with an error naming this setting (raise it, or sort the file by ts
    first), never a silent reordering or drop. 0: only disorder within one read is repaired."""


@dataclass(frozen=True)
class StateConfig:
    """Per-account state of one partition's pipeline: how much, how long, how it is checkpointed."""

    initial_accounts: int = 4096
    """Slots preallocated; the slot table grows by doubling, up to max_accounts."""
    idle_evict_hours: float = 14 * 24.0
    """Accounts silent for this long (event time) lose their state."""
    max_accounts: int = 0
    """Accounts of one partition that hold state at once; 0 = as many as fit in memory_mb. Past
    90% of it, every tick end evicts the least recently active accounts (event time) down to 90%;
    a tick that brings more new accounts than the free slots evicts them as it goes."""
    memory_mb: float = 512.0
    """Per partition, when max_accounts is 0: the accounts that fit at the measured bytes per
    account (Pipeline.memory_bytes_per_account: about 2.8 KB at 512 topics and D=64, so ~190k)."""
    compact_every: int = 30
    """A checkpoint writes what changed since the one before; every this many checkpoints (or when
    the changes written since outweigh the last full one) it writes the whole state instead."""


@dataclass(frozen=True)
class EventTimeConfig:
    """Which event times a partition accepts, and how its watermark moves (stream/event_time.py).

    None of these depends on the data: each bounds what one record (or one account) can do
    to a partition's clock, in units of time, whatever the traffic.
    """

    ahead_ms: int = 24 * HOUR_MS
    """A request stamped further ahead of the partition's watermark, that no other account
    confirms, is dead-lettered (a gateway clock a day fast is broken, not skewed)."""
    behind_ms: int = 7 * 24 * HOUR_MS
    """A request stamped further behind the watermark is dead-lettered: a week late is a replayed
    or forged record, and detector state about it (histogram decay, idle eviction) is gone."""
    floor_ms: int = 946_684_800_000
    """Event times before this (2000-01-01) are dead-lettered whatever the watermark: no LLM API
    served requests then; catches 0, -1 and other integer sentinels."""
    ceiling_ms: int = 4_102_444_800_000
    """Event times after this (2100-01-01) are dead-lettered whatever the watermark."""
    step_ms: int = 15 * 60_000
    """The watermark moves to a request's time once the next request of another account
    confirms it, that is, is no more than this much earlier. Ordinary traffic is far more
    ordered than this, so a clean stream's watermark is its running maximum, while one account
    alone cannot move it at all, nor a run of back-to-back accounts more than this per account."""
    jump_confirmations: int = 3
    """A move of the watermark by more than step_ms (traffic resuming after a quiet spell or an
    outage) waits until requests of this many other accounts agree with it, none disagreeing in
    between: a handful of records stamped in the future, even from a few accounts, is no jump."""


@dataclass(frozen=True)
class KafkaConfig:
    """Client and service settings of ``streamguard run`` (TOML ``[kafka]``, env ``STREAMGUARD_KAFKA_<FIELD>``).

    Security settings are passed through to kafka-python unchanged; in
    Kubernetes they come from Secrets (``STREAMGUARD_KAFKA_SASL_PASSWORD``...).
    ``streamguard run``'s ``--security-protocol`` ... ``--ssl-keyfile`` and
    ``--checkpoint-interval`` flags override these.
    """

    security_protocol: str = "PLAINTEXT"
    """PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL."""
    sasl_mechanism: str = ""
    """PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 (or OAUTHBEARER, GSSAPI as kafka-python supports them)."""
    sasl_username: str = ""
    sasl_password: str = field(default="", repr=False)
    """Prefer the environment (a Kubernetes Secret) to a flag or a file."""
    ssl_cafile: str = ""
    ssl_certfile: str = ""
    ssl_keyfile: str = ""
    ssl_check_hostname: bool = True
    session_timeout_ms: int = 45_000
    heartbeat_interval_ms: int = 3_000
    max_poll_interval_ms: int = 300_000
    max_poll_records: int = 64
    """Records per poll: one Arrow record can hold hundreds of requests."""
    fetch_max_bytes: int = 64 * MIB
    """Raised from the client default: one Arrow record holds hundreds of requests."""
    max_partition_fetch_bytes: int = 16 * MIB
    request_timeout_ms: int = 30_000
    reconnect_backoff_max_ms: int = 5_000
    checkpoint_interval_s: float = 10.0
    """Alerts are exported and state checkpointed this often (and on revoke, shutdown, idle)."""
    queue_max_rows: int = 0
    """Decoded rows waiting per partition before it is paused; 0 = 4 x batch.max_size."""
    poll_timeout_ms: int = 200
    liveness_timeout_s: float = 120.0
    """/healthz fails when the loop has not turned for this long."""
    export_timeout_s: float = 30.0
    """Wait this long for the broker to acknowledge alerts before retrying the checkpoint later."""
    metadata_check_interval_s: float = 30.0
    """The request topic's metadata (id, partition count) is refreshed and compared this often:
    a recreated, repartitioned or missing topic is noticed within it (see docs/kafka.md)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> "KafkaConfig":
        """Defaults overridden by ``STREAMGUARD_KAFKA_<FIELD>`` variables (only this section)."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = env.get(f"STREAMGUARD_KAFKA_{f.name.upper()}")
            if raw is not None:
                values[f.name] = _coerce(raw, f.default)
        return replace(cls(), **values)

    def validate(self) -> "KafkaConfig":
        if self.security_protocol not in KAFKA_SECURITY_PROTOCOLS:
            raise ValueError(
                f"kafka.security_protocol must be one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}, got {self.security_protocol!r}"
            )
        if self.security_protocol.startswith("SASL_") and not self.sasl_mechanism:
            raise ValueError(f"kafka.security_protocol={self.security_protocol} needs kafka.sasl_mechanism")
        for name in ("session_timeout_ms", "heartbeat_interval_ms", "max_poll_interval_ms", "max_poll_records",
                     "fetch_max_bytes", "max_partition_fetch_bytes", "request_timeout_ms", "poll_timeout_ms"):
            if getattr(self, name) <= 0:
                raise ValueError(f"kafka.{name} must be > 0, got {getattr(self, name)}")
        if self.heartbeat_interval_ms >= self.session_timeout_ms:
            raise ValueError("kafka.heartbeat_interval_ms must be below kafka.session_timeout_ms")
        for name in ("checkpoint_interval_s", "liveness_timeout_s", "export_timeout_s", "metadata_check_interval_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"kafka.{name} must be > 0, got {getattr(self, name)}")
        if self.queue_max_rows < 0:
            raise ValueError("kafka.queue_max_rows must be >= 0 (0 = 4 x batch.max_size)")
        return self

    def client_options(self) -> dict[str, Any]:
        """Security and network options common to consumers, producers and admin clients."""
        options: dict[str, Any] = {
            "security_protocol": self.security_protocol,
            "request_timeout_ms": self.request_timeout_ms,
            "reconnect_backoff_max_ms": self.reconnect_backoff_max_ms,
        }
        if self.sasl_mechanism:
            options["sasl_mechanism"] = self.sasl_mechanism
        if self.sasl_username:
            options["sasl_plain_username"] = self.sasl_username
        if self.sasl_password:
            options["sasl_plain_password"] = self.sasl_password
        if self.security_protocol in ("SSL", "SASL_SSL"):
            options["ssl_check_hostname"] = self.ssl_check_hostname
            for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
                if getattr(self, name):
                    options[name] = getattr(self, name)
        return options


@dataclass(frozen=True)
class ServiceConfig:
    """Where ``streamguard run`` reads and writes (TOML ``[service]``, env ``STREAMGUARD_SERVICE_<FIELD>``).

    Each field is also a flag of ``streamguard run`` (``--bootstrap-servers`` ...), which wins.
    """

    bootstrap_servers: str = ""
    """Kafka brokers, HOST:PORT[,HOST:PORT]; required by ``run``."""
    topic: str = ""
    """Request topic; required by ``run``."""
    group_id: str = "streamguard"
    """Consumer group: the replicas of one deployment share it."""
    alerts_topic: str = ""
    """Alerts topic ("": none)."""
    alerts_file: str = ""
    """Also append alerts to this JSON Lines file ("": none)."""
    dead_letter_topic: str = ""
    """Dead-letter topic ("": none)."""
    signatures_topic: str = ""
    """Internal topic through which replicas share request signatures, to link accounts across them ("": off).

    Accounts sharing prompts are then linked across partitions and replicas."""
    state_dir: str = "streamguard-state"
    """Checkpoint directory, shared by the replicas of a group."""
    partitions_hint: int = 0
    """Expected partitions of the topic (0: unknown): output topics are created with it, a different count is logged."""
    stop_after_idle: float | None = None
    """Exit 0 once no record arrived for this many seconds (unset: never)."""
    dim: int | None = None
    """Embedding dimension of the stream (unset: the codebook's, else the first record's)."""


@dataclass(frozen=True)
class MetricsConfig:
    """The ``/metrics``, ``/healthz``, ``/readyz`` endpoint of ``run``, ``demo`` and ``replay`` (env ``STREAMGUARD_METRICS_<FIELD>``)."""

    port: int | None = None
    """Serve /metrics, /healthz and /readyz on this port (unset: no endpoint; 0: any free port)."""
    addr: str = "127.0.0.1"
    """Bind address of the port: 127.0.0.1 is this host only; a Kubernetes pod needs 0.0.0.0 (or ::)."""


@dataclass(frozen=True)
class RuntimeConfig:
    """What every command shares: backend, codebook, logging, alert hashes (env ``STREAMGUARD_RUNTIME_<FIELD>``)."""

    backend: str = "auto"
    """Array backend: auto (cuda if a device is usable, else cpu), cuda, cpu or numpy."""
    codebook: str = ""
    """Load a fitted codebook (.npz) instead of fitting one ("": fit one)."""
    log_level: str = "WARNING"
    """Logging level: DEBUG, INFO, WARNING or ERROR."""
    alert_account_hash: bool = False
    """Put the account's keyed hash into each alert's evidence.account_hash (needs STREAMGUARD_HMAC_KEY)."""


@dataclass(frozen=True)
class Settings:
    signature: SignatureConfig = field(default_factory=SignatureConfig)
    near_duplicate: NearDuplicateConfig = field(default_factory=NearDuplicateConfig)
    coverage: CoverageConfig = field(default_factory=CoverageConfig)
    scoring: ScoringConfig = field(default_factory=ScoringConfig)
    campaign: CampaignConfig = field(default_factory=CampaignConfig)
    batch: BatchConfig = field(default_factory=BatchConfig)
    state: StateConfig = field(default_factory=StateConfig)
    event_time: EventTimeConfig = field(default_factory=EventTimeConfig)
    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    replay: ReplayConfig = field(default_factory=ReplayConfig)
    service: ServiceConfig = field(default_factory=ServiceConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    runtime: RuntimeConfig = field(default_factory=RuntimeConfig)

    def validate(self) -> "Settings":
        """Raise ValueError with an actionable message on inconsistent settings."""
        sig, nd, cov = self.signature, self.near_duplicate, self.coverage
        if sig.bits <= 0 or sig.bits % 64:
            raise ValueError(f"signature.bits must be a positive multiple of 64, got {sig.bits}")
        if not 0.0 < sig.dup_cosine < 1.0:
            raise ValueError(f"signature.dup_cosine must be in (0, 1), got {sig.dup_cosine}")
        if sig.bits % nd.bands or not 1 <= sig.bits // nd.bands <= 32:
            raise ValueError(
                f"near_duplicate.bands={nd.bands} must split {sig.bits} bits into bands of 1..32 bits"
            )
        if not 8 <= nd.table_bits <= 24:
            raise ValueError(f"near_duplicate.table_bits must be in 8..24, got {nd.table_bits}")
        if nd.window < 1:
            raise ValueError("near_duplicate.window must be >= 1")
        if not 0.0 < nd.account_share <= 1.0:
            raise ValueError(f"near_duplicate.account_share must be in (0, 1], got {nd.account_share}")
        if cov.cells < 2 or cov.max_topics < 2:
            raise ValueError("coverage.cells and coverage.max_topics must be >= 2")
        if cov.half_life_hours <= 0:
            raise ValueError("coverage.half_life_hours must be > 0")
        if self.batch.max_size < 1:
            raise ValueError("batch.max_size must be >= 1")
        if not 0.0 < self.scoring.false_alerts_per_10k < 10_000.0:
            raise ValueError(
                f"scoring.false_alerts_per_10k must be in (0, 10000), got {self.scoring.false_alerts_per_10k}"
            )
        if self.scoring.alert_budget < 0:
            raise ValueError(f"scoring.alert_budget must be >= 0 (0: no cap), got {self.scoring.alert_budget}")
        if self.scoring.allowlist and not Path(self.scoring.allowlist).is_file():
            raise ValueError(f"scoring.allowlist: {self.scoring.allowlist} is not a readable file")
        camp = self.campaign
        if not 0.0 <= camp.attribute_max_share <= 1.0:
            raise ValueError(f"campaign.attribute_max_share must be in [0, 1] (0: off), got {camp.attribute_max_share}")
        if not 1 <= camp.attributes_per_account <= 255:
            raise ValueError(f"campaign.attributes_per_account must be in 1..255, got {camp.attributes_per_account}")
        et = self.event_time
        if not (
            0 <= et.step_ms <= et.ahead_ms and et.behind_ms >= 0 and 0 <= et.floor_ms < et.ceiling_ms <= 2**62
            and et.jump_confirmations >= 1
        ):
            raise ValueError(
                "event_time needs 0 <= step_ms <= ahead_ms, behind_ms >= 0, 0 <= floor_ms < ceiling_ms <= 2**62 "
                f"and jump_confirmations >= 1, got {et}"
            )
        st = self.state
        if st.max_accounts < 0 or not st.memory_mb > 0 or st.compact_every < 1 or st.initial_accounts < 1:
            raise ValueError(
                "state needs initial_accounts >= 1, max_accounts >= 0 (0: from memory_mb), memory_mb > 0 and "
                f"compact_every >= 1, got {st}"
            )
        if self.replay.read_rows < 1 or self.replay.reorder_rows < 0:
            raise ValueError(
                f"replay.read_rows must be >= 1 and replay.reorder_rows >= 0, got {self.replay.read_rows}, "
                f"{self.replay.reorder_rows}"
            )
        self.kafka.validate()
        _check_domains(self)
        return self

    def hamming_radius(self) -> int:
        """Hamming radius equivalent to ``signature.dup_cosine``.

        Expected differing bits at the threshold angle plus 1.5 standard
        deviations: pairs at the threshold pass with ~93% probability, pairs
        above it almost always, pairs well below it rarely.
        """
        bits = self.signature.bits
        p = math.acos(self.signature.dup_cosine) / math.pi
        return int(math.ceil(bits * p + 1.5 * math.sqrt(bits * p * (1.0 - p))))


def _coerce(value: Any, target: Any) -> Any:
    if isinstance(target, bool):
        if isinstance(value, str):
            return value.strip().lower() in {"1", "true", "yes", "on"}
        return bool(value)
    if isinstance(target, int):
        return int(value)
    if isinstance(target, float):
        return float(value)
    return value


_KINDS: dict[str, Any] = {"bool": False, "int": 0, "float": 0.0, "str": ""}


def _field_kind(section_cls: type, name: str) -> tuple[Any, bool]:
    """(an example value of the field's type, whether it may be None) from its annotation."""
    (f,) = [f for f in fields(section_cls) if f.name == name]
    parts = [p.strip() for p in str(f.type).split("|")]
    base = next((p for p in parts if p != "None"), "str")
    return _KINDS.get(base, ""), "None" in parts


def _coerce_field(section: Any, section_name: str, name: str, value: Any, where: str) -> Any:
    example, optional = _field_kind(type(section), name)
    if optional and (value is None or (isinstance(value, str) and value.strip().lower() in {"", "none"})):
        return None
    try:
        return _coerce(value, example)
    except (TypeError, ValueError):
        secret = not next(f for f in fields(section) if f.name == name).repr
        shown = "(hidden)" if secret else repr(value)
        raise ValueError(
            f"{section_name}.{name} ({env_name(section_name, name)}) must be {type(example).__name__}, "
            f"got {shown} in {where}"
        ) from None


def _apply(section: Any, values: Mapping[str, Any], where: str, section_name: str = "") -> Any:
    known = {f.name for f in fields(section)}
    unknown = set(values) - known
    if unknown:
        raise ValueError(f"unknown setting(s) {sorted(unknown)} in {where}; known: {sorted(known)}")
    return replace(section, **{k: _coerce_field(section, section_name, k, v, where) for k, v in values.items()})


def env_name(section: str, name: str) -> str:
    """The environment variable of ``settings.<section>.<name>``: ``STREAMGUARD_<SECTION>_<FIELD>``."""
    return f"STREAMGUARD_{section.upper()}_{name.upper()}"


LEGACY_ENV: dict[str, tuple[str, str]] = {
    "STREAMGUARD_BOOTSTRAP_SERVERS": ("service", "bootstrap_servers"),
    "STREAMGUARD_TOPIC": ("service", "topic"),
    "STREAMGUARD_GROUP_ID": ("service", "group_id"),
    "STREAMGUARD_ALERTS_TOPIC": ("service", "alerts_topic"),
    "STREAMGUARD_ALERTS_FILE": ("service", "alerts_file"),
    "STREAMGUARD_DEAD_LETTER_TOPIC": ("service", "dead_letter_topic"),
    "STREAMGUARD_SIGNATURES_TOPIC": ("service", "signatures_topic"),
    "STREAMGUARD_CHECKPOINT_DIR": ("service", "state_dir"),
    "STREAMGUARD_PARTITIONS": ("service", "partitions_hint"),
    "STREAMGUARD_STOP_AFTER_IDLE": ("service", "stop_after_idle"),
    "STREAMGUARD_DIM": ("service", "dim"),
    "STREAMGUARD_BACKEND": ("runtime", "backend"),
    "STREAMGUARD_CODEBOOK": ("runtime", "codebook"),
    "STREAMGUARD_LOG_LEVEL": ("runtime", "log_level"),
    "STREAMGUARD_ALERT_ACCOUNT_HASH": ("runtime", "alert_account_hash"),
}
"""Environment names of before the one scheme: still read, with a deprecation warning naming the new one.
(``STREAMGUARD_METRICS_PORT`` and ``STREAMGUARD_METRICS_ADDR`` already are ``[metrics]`` settings.)"""

PROCESS_ENV: dict[str, str] = {
    "STREAMGUARD_CONFIG": "the TOML settings file (--config) itself",
    "STREAMGUARD_HMAC_KEY": "key of the account hashes (a Secret; streamguard/pseudonyms.py)",
    "STREAMGUARD_KERNEL_DIR": "CUDA kernel sources to use instead of the packaged ones",
    "STREAMGUARD_KERNEL_CACHE": "directory of precompiled kernel binaries",
    "STREAMGUARD_CUDA_EMULATE": "run the cuda backend on the CPU stand-in for CuPy (tests)",
    "STREAMGUARD_EMULATE_CACHE": "cache of the emulated kernels",
    "STREAMGUARD_EMBED_CACHE": "simulate --real-text: embedding cache folder",
    "STREAMGUARD_EMBED_THREADS": "simulate --real-text: torch threads",
}
"""``STREAMGUARD_*`` variables that are not settings: they locate files or keys before settings exist."""

FLAGS: dict[str, tuple[str, str]] = {
    **{f: ("service", f) for f in (
        "bootstrap_servers", "topic", "group_id", "alerts_topic", "alerts_file", "dead_letter_topic",
        "signatures_topic", "state_dir", "partitions_hint", "stop_after_idle", "dim",
    )},
    "metrics_port": ("metrics", "port"),
    "metrics_addr": ("metrics", "addr"),
    "backend": ("runtime", "backend"),
    "codebook": ("runtime", "codebook"),
    "log_level": ("runtime", "log_level"),
    "alert_account_hash": ("runtime", "alert_account_hash"),
    **{f: ("kafka", f) for f in (
        "security_protocol", "sasl_mechanism", "sasl_username", "sasl_password", "ssl_cafile", "ssl_certfile", "ssl_keyfile",
    )},
    "checkpoint_interval": ("kafka", "checkpoint_interval_s"),
}
"""argparse ``dest`` -> (section, field) of the flags that override a setting (``--metrics-port`` -> metrics.port)."""


def flag_overrides(args: Any) -> dict[str, dict[str, Any]]:
    """The settings a command's flags give (a flag left out is None and gives nothing): ``load_settings(overrides=)``."""
    out: dict[str, dict[str, Any]] = {}
    for dest, (section, name) in FLAGS.items():
        value = getattr(args, dest, None)
        if value is not None:
            out.setdefault(section, {})[name] = value
    return out


def settle_flags(args: Any, settings: "Settings") -> None:
    """Write the resolved settings back onto the command's flags (``args.topic`` = ``settings.service.topic``)."""
    for dest, (section, name) in FLAGS.items():
        if hasattr(args, dest):
            setattr(args, dest, getattr(getattr(settings, section), name))


def flag_help(section: str, name: str, extra: str = "") -> str:
    """Help text of a flag that sets ``settings.<section>.<name>``: the field's doc, its env name, its default."""
    doc = field_docs(type(getattr(Settings(), section))).get(name, "")
    default = getattr(getattr(Settings(), section), name)
    first = doc.splitlines()[0].replace("``", "").rstrip(".") if doc else name.replace("_", " ")
    text = f"{first}{extra} (env {env_name(section, name)}"
    text += f"; default {default!r})" if default not in (None, "") else ")"
    return text.replace("%", "%%")


@functools.lru_cache(maxsize=None)
def field_docs(section_cls: type) -> dict[str, str]:
    """Each field's docstring (the string literal under it in the class body), by field name."""
    try:
        tree = ast.parse(inspect.getsource(section_cls).lstrip())
    except (OSError, TypeError, SyntaxError):
        return {}
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
    docs: dict[str, str] = {}
    for node, after in zip(body, body[1:]):
        if (
            isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
            and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)
        ):
            docs[node.target.id] = inspect.cleandoc(after.value.value)
    return docs


def settings_reference() -> Iterator[dict[str, Any]]:
    """One row per setting: section, field, env name, flag, legacy env names, default, first line of its docstring."""
    defaults = Settings()
    legacy: dict[tuple[str, str], list[str]] = {}
    for old, key in LEGACY_ENV.items():
        legacy.setdefault(key, []).append(old)
    flags = {key: "--" + dest.replace("_", "-") for dest, key in FLAGS.items()}
    for section in fields(Settings):
        cls = type(getattr(defaults, section.name))
        docs = field_docs(cls)
        for f in fields(cls):
            doc = docs.get(f.name, "")
            yield {
                "setting": f"{section.name}.{f.name}",
                "env": env_name(section.name, f.name),
                "flag": flags.get((section.name, f.name), ""),
                "deprecated_env": legacy.get((section.name, f.name), []),
                "default": getattr(getattr(defaults, section.name), f.name),
                "doc": doc.splitlines()[0] if doc else "",
            }


def unknown_env_names(environ: Mapping[str, str]) -> list[str]:
    """``STREAMGUARD_*`` names that are neither a setting, an old name of one, nor a process variable (typos)."""
    known = {row["env"] for row in settings_reference()} | set(LEGACY_ENV) | set(PROCESS_ENV)
    return sorted(k for k in environ if k.startswith("STREAMGUARD_") and k not in known)


def load_settings(
    config_file: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Build settings from defaults, a TOML file, the environment and overrides.

    Environment variables are ``STREAMGUARD_<SECTION>_<FIELD>``, for example
    ``STREAMGUARD_SCORING_MIN_REQUESTS=200``; the old names of :data:`LEGACY_ENV`
    are still read, with one deprecation warning each, unless the new name is set.
    """
    settings = Settings()
    layers: list[tuple[str, Mapping[str, Mapping[str, Any]]]] = []
    if config_file is not None:
        path = Path(config_file)
        try:
            layers.append((str(path), tomllib.loads(path.read_text())))
        except FileNotFoundError:
            raise ValueError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ValueError(f"config file {path} is not valid TOML: {exc}") from None
    env = os.environ if environ is None else environ
    from_env: dict[str, dict[str, str]] = {}
    for old, (section_name, name) in LEGACY_ENV.items():
        if old not in env:
            continue
        new = env_name(section_name, name)
        if new in env:
            log.warning("%s is deprecated and ignored: %s is set too", old, new)
        else:
            log.warning("%s is deprecated: use %s", old, new)
            from_env.setdefault(section_name, {})[name] = env[old]
    for section in fields(Settings):
        prefix = f"STREAMGUARD_{section.name.upper()}_"
        for key, value in env.items():
            if key.startswith(prefix):
                from_env.setdefault(section.name, {})[key[len(prefix):].lower()] = value
    layers.append(("the environment", from_env))
    if overrides:
        layers.append(("overrides", overrides))
    for where, layer in layers:
        for name, values in layer.items():
            if name not in {f.name for f in fields(Settings)}:
                raise ValueError(f"unknown settings section [{name}] in {where}")
            if not isinstance(values, Mapping):
                raise ValueError(f"[{name}] in {where} must be a table of settings")
            settings = replace(settings, **{name: _apply(getattr(settings, name), values, where, name)})
    return settings.validate()


def settings_as_dict(settings: Settings) -> dict[str, Any]:
    return dataclasses.asdict(settings)


BACKENDS = ("auto", "cuda", "cpu", "numpy")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

_POSITIVE, _NON_NEGATIVE, _AT_LEAST_ONE, _SHARE = "> 0", ">= 0", ">= 1", "in [0, 1]"
_TESTS: dict[str, Any] = {
    _POSITIVE: lambda v: v > 0,
    _NON_NEGATIVE: lambda v: v >= 0,
    _AT_LEAST_ONE: lambda v: v >= 1,
    _SHARE: lambda v: 0 <= v <= 1,
}
_DOMAINS: dict[str, dict[str, str]] = {
    "near_duplicate": {"cross_window_ms": _NON_NEGATIVE},
    "coverage": {
        "warmup": _AT_LEAST_ONE, "warmup_per_account": _AT_LEAST_ONE, "min_accounts_per_cell": _AT_LEAST_ONE,
        "wrapper_mad_k": _NON_NEGATIVE, "kmeans_iters": _AT_LEAST_ONE, "population_account_cap": _POSITIVE,
        "mix_trim_mad_k": _NON_NEGATIVE,
    },
    "scoring": {
        "min_requests": _NON_NEGATIVE, "min_span_ms": _NON_NEGATIVE, "confirm_ms": _NON_NEGATIVE,
        "min_growth": _NON_NEGATIVE, "burst_growth": _NON_NEGATIVE, "population_min_accounts": _NON_NEGATIVE,
        "population_mad_k": _NON_NEGATIVE, "cross_dup_floor": _SHARE, "hysteresis": _SHARE,
        "realert_growth": _NON_NEGATIVE, "tick_ms": _AT_LEAST_ONE, "refresh_every_ticks": _AT_LEAST_ONE,
        "evict_every_ticks": _AT_LEAST_ONE,
    },
    "campaign": {
        "style_dims": _AT_LEAST_ONE, "style_snr": _NON_NEGATIVE, "link_z": _NON_NEGATIVE, "min_group": _AT_LEAST_ONE,
        "complementarity": _NON_NEGATIVE, "link_min_requests": _NON_NEGATIVE, "max_link_accounts": _NON_NEGATIVE,
        "link_every_ticks": _AT_LEAST_ONE, "shared_prompt_links": _NON_NEGATIVE, "shared_prompt_share": _SHARE,
        "edge_half_life_hours": _POSITIVE, "org_link_z": _NON_NEGATIVE, "min_links": _NON_NEGATIVE,
        "style_min_topics": _NON_NEGATIVE, "max_attribute_groups": _NON_NEGATIVE, "attribute_min_group": _AT_LEAST_ONE,
        "timing_false_links": _NON_NEGATIVE, "session_gap_minutes": _POSITIVE, "timing_bucket_seconds": _POSITIVE,
        "timing_baseline_minutes": _POSITIVE, "session_boundaries": _AT_LEAST_ONE, "timing_min_shared": _AT_LEAST_ONE,
        "max_timing_pairs": _NON_NEGATIVE,
    },
    "batch": {"max_delay_s": _NON_NEGATIVE},
    "state": {"idle_evict_hours": _POSITIVE},
    "kafka": {"max_poll_records": _AT_LEAST_ONE, "reconnect_backoff_max_ms": _NON_NEGATIVE},
    "service": {"partitions_hint": _NON_NEGATIVE, "stop_after_idle": _NON_NEGATIVE, "dim": _AT_LEAST_ONE},
}
"""The obvious domain of each numeric setting that the checks of :meth:`Settings.validate` above do not cover."""


def _check_domains(settings: Settings) -> None:
    """Raise ValueError naming the setting (and its variable) whose value lies outside its domain."""
    for section_name, checks in _DOMAINS.items():
        section = getattr(settings, section_name)
        for name, domain in checks.items():
            value = getattr(section, name)
            if value is None:
                continue
            if isinstance(value, float) and not math.isfinite(value) or not _TESTS[domain](value):
                raise ValueError(
                    f"{section_name}.{name} ({env_name(section_name, name)}) must be {domain}, got {value!r}"
                )
    svc, met, rt = settings.service, settings.metrics, settings.runtime
    if not svc.group_id:
        raise ValueError("service.group_id (STREAMGUARD_SERVICE_GROUP_ID) must not be empty")
    if not svc.state_dir:
        raise ValueError("service.state_dir (STREAMGUARD_SERVICE_STATE_DIR) must not be empty")
    if met.port is not None and not 0 <= met.port <= 65535:
        raise ValueError(f"--metrics-port must be in 0..65535, got {met.port} (setting metrics.port, STREAMGUARD_METRICS_PORT)")
    if not met.addr:
        raise ValueError("metrics.addr (STREAMGUARD_METRICS_ADDR) must not be empty")
    if rt.backend not in BACKENDS:
        raise ValueError(f"runtime.backend (STREAMGUARD_RUNTIME_BACKEND) must be one of {', '.join(BACKENDS)}, got {rt.backend!r}")
    if str(rt.log_level).upper() not in LOG_LEVELS:
        raise ValueError(
            f"runtime.log_level (STREAMGUARD_RUNTIME_LOG_LEVEL) must be one of {', '.join(LOG_LEVELS)}, got {rt.log_level!r}"
        )


def initial_log_level(flag: str | None, environ: Mapping[str, str] | None = None) -> str:
    """The logging level before settings are loaded: the flag, else the variable (new name, then old), else WARNING.

    The settings' ``runtime.log_level`` (which a TOML file can set too) is applied once they are loaded."""
    env = os.environ if environ is None else environ
    level = flag or env.get(env_name("runtime", "log_level")) or env.get("STREAMGUARD_LOG_LEVEL") or "WARNING"
    return level.upper() if level.upper() in LOG_LEVELS else "WARNING"
