"""Every default of streamguard, in frozen dataclasses.

Settings come from three places, later ones winning: these defaults, a TOML
file (``--config``), ``STREAMGUARD_<SECTION>_<FIELD>`` environment variables,
then command-line flags. Thresholds are expressed in units that do not depend
on the embedding model (bits of a signature are derived from a cosine, rates
and log-ratios are judged against the live population), so the defaults
transfer between streams.

Package layout (each re-exported here, so ``from streamguard.config import X`` is the one import):
``detection.py`` and ``service.py`` hold the sections, ``settings.py`` the whole, ``values.py`` the
typing of raw values, ``validation.py`` the domains, ``loading.py`` the layers (defaults < TOML < env <
flags), ``listing.py`` the docs read from the sections' source (flag help, ``streamguard settings``).
"""

from __future__ import annotations

from streamguard.config.detection import (
    HOUR_MS,
    CampaignConfig,
    CoverageConfig,
    NearDuplicateConfig,
    ScoringConfig,
    SignatureConfig,
)
from streamguard.config.listing import field_docs, flag_help, settings_reference, unknown_env_names
from streamguard.config.loading import (
    FLAGS,
    LEGACY_ENV,
    PROCESS_ENV,
    flag_overrides,
    initial_log_level,
    load_settings,
    settings_as_dict,
    settle_flags,
)
from streamguard.config.service import (
    KAFKA_SECURITY_PROTOCOLS,
    MIB,
    BatchConfig,
    EventTimeConfig,
    KafkaConfig,
    MetricsConfig,
    ReplayConfig,
    RuntimeConfig,
    ServiceConfig,
    StateConfig,
)
from streamguard.config.settings import Settings
from streamguard.config.validation import BACKENDS, LOG_LEVELS
from streamguard.config.values import env_name

__all__ = [
    "BACKENDS",
    "BatchConfig",
    "CampaignConfig",
    "CoverageConfig",
    "EventTimeConfig",
    "FLAGS",
    "HOUR_MS",
    "KAFKA_SECURITY_PROTOCOLS",
    "KafkaConfig",
    "LEGACY_ENV",
    "LOG_LEVELS",
    "MIB",
    "MetricsConfig",
    "NearDuplicateConfig",
    "PROCESS_ENV",
    "ReplayConfig",
    "RuntimeConfig",
    "ScoringConfig",
    "ServiceConfig",
    "Settings",
    "SignatureConfig",
    "StateConfig",
    "env_name",
    "field_docs",
    "flag_help",
    "flag_overrides",
    "initial_log_level",
    "load_settings",
    "settings_as_dict",
    "settings_reference",
    "settle_flags",
    "unknown_env_names",
]
