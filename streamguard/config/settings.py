"""All sections together: :class:`Settings`, checked as a whole by :meth:`Settings.validate`."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

from streamguard.config.detection import (
    CampaignConfig,
    CoverageConfig,
    NearDuplicateConfig,
    ScoringConfig,
    SignatureConfig,
)
from streamguard.config.service import (
    BatchConfig,
    EventTimeConfig,
    KafkaConfig,
    MetricsConfig,
    ReplayConfig,
    RuntimeConfig,
    ServiceConfig,
    StateConfig,
)
from streamguard.config.validation import _check_domains


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
        if camp.foreign_accounts < 0:
            raise ValueError(f"campaign.foreign_accounts must be >= 0 (0: off), got {camp.foreign_accounts}")
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
