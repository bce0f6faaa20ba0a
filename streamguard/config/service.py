"""Settings sections of the stream and the service: batching, replay, state, event time, Kafka, service, metrics, runtime."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, fields, replace
from typing import Any, Mapping

from streamguard.config.detection import HOUR_MS
from streamguard.config.values import _coerce

MIB = 1 << 20
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")


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
    prefetch_batches: int = 2
    """Batches read, ordered and validated ahead of the detector, on a thread of their own
    (stream/prefetch.py): reading overlaps detection, the alerts are the same. 0: one thread."""


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
    account (Pipeline.memory_bytes_per_account: about 3.2 KB at D=64 on a simulated stream of 555
    topics, so ~170k; 4 B more per topic, ~5 KB at the most, 1,024 topics)."""
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
