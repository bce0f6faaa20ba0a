"""Shared fixtures: small simulated traffic and settings that keep tests fast."""

from __future__ import annotations

import numpy as np
import pytest

from streamguard.config import Settings, load_settings


@pytest.fixture(scope="session")
def small_settings() -> Settings:
    """Defaults, except a warm-up small enough for traffic of a few thousand requests."""
    return load_settings(environ={}, overrides={"coverage": {"warmup": 1500, "cells": 256}})


@pytest.fixture(scope="session")
def small_traffic():
    from streamguard.sim import SimConfig, simulate

    return simulate(SimConfig(seed=11, scale=0.1, dim=48))

