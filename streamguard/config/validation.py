"""Domains of the numeric settings and the checks that name the setting (and its variable) in their errors."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from streamguard.config.values import env_name

if TYPE_CHECKING:
    from streamguard.config.settings import Settings

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
        "mix_trim_mad_k": _NON_NEGATIVE, "drift_baseline_requests": _NON_NEGATIVE,
    },
    "scoring": {
        "min_requests": _NON_NEGATIVE, "rate_min_requests": _NON_NEGATIVE, "min_span_ms": _NON_NEGATIVE, "confirm_ms": _NON_NEGATIVE,
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
        "value_member_breadth": _NON_NEGATIVE,
        "timing_false_links": _NON_NEGATIVE, "session_gap_minutes": _POSITIVE, "timing_bucket_seconds": _POSITIVE,
        "timing_baseline_minutes": _POSITIVE, "session_boundaries": _AT_LEAST_ONE, "timing_min_shared": _AT_LEAST_ONE,
        "max_timing_pairs": _NON_NEGATIVE,
    },
    "batch": {"max_delay_s": _NON_NEGATIVE},
    "replay": {"prefetch_batches": _NON_NEGATIVE},
    "state": {"idle_evict_hours": _POSITIVE},
    "kafka": {"max_poll_records": _AT_LEAST_ONE, "reconnect_backoff_max_ms": _NON_NEGATIVE},
    "service": {"partitions_hint": _NON_NEGATIVE, "stop_after_idle": _NON_NEGATIVE, "dim": _AT_LEAST_ONE},
}
"""The obvious domain of each numeric setting that the checks of :meth:`Settings.validate` (settings.py) do not cover."""


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
