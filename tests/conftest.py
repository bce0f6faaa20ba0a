"""Shared fixtures: small simulated traffic and settings that keep tests fast."""

from __future__ import annotations

import numpy as np
import pytest

from streamguard.config import Settings, load_settings

SMALL_STREAM_RATE = 2000.0
"""False alerts per 10k for tests on streams of a few thousand requests (see small_settings)."""


@pytest.fixture(scope="session")
def small_settings() -> Settings:
    """Defaults, except a warm-up small enough for traffic of a few thousand requests.

    A stream this small supports only a few dozen topics, too few for a sweep to be
    significant at the default false-alert rate; tests of the plumbing need alerts, so
    the line is set at a lenient rate (SMALL_STREAM_RATE)."""
    return load_settings(
        environ={},
        overrides={
            "coverage": {"warmup": 1500, "cells": 256},
            "scoring": {"false_alerts_per_10k": SMALL_STREAM_RATE},
            "campaign": {"group_false_alerts_per_10k": SMALL_STREAM_RATE},
        },
    )


@pytest.fixture(scope="session")
def small_traffic():
    from streamguard.sim import SimConfig, simulate

    return simulate(SimConfig(seed=11, scale=0.1, dim=48))

