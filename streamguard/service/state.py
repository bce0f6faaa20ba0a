"""What the run loop keeps: its options, and per partition its pipeline, queue, alerts and offsets."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol

from streamguard.dead_letter import DeadLetter
from streamguard.schema import AlertRecord, RequestBatch
from streamguard.stream.batcher import MicroBatcher
from streamguard.stream.kafka import KafkaConfig


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



# --------------------------------------------------------- partition state


@dataclass
class Chunk:
    """Decoded records of one poll of one partition."""

    batch: RequestBatch
    dead: list[DeadLetter]
    end_offset: int



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
    dead: list[DeadLetter] = field(default_factory=list)
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


class Outputs(Protocol):
    """What the loop needs from the Kafka outputs (see ``streamguard.sinks.kafka.KafkaOutputs``)."""

    alerts_topic: str | None
    alert_ends: dict[int, int]

    def send_alert(self, alert: AlertRecord, partition: int, seq: int) -> None: ...

    def send_dead_letter(self, dead: DeadLetter, partition: int) -> None: ...

    def flush(self, timeout_s: float) -> Any: ...

    def scan_alerts(self, partitions: set[int], scan_from: dict[int, int], timeout_s: float) -> dict[int, set[int]] | None: ...

    def close(self) -> None: ...
