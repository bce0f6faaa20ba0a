"""Scoring: each account judged against the live population of accounts.

The detectors produce per-account evidence (near-duplicate rates, coverage
statistics). Scoring turns it into alerts with three rules, none of them a
constant fitted to one data set:

1. **Against the population.** A feature counts as unusual only above
   ``median + k * MAD`` of the same feature over the *established* accounts of
   the stream (those with at least ``min_requests`` requests), refreshed every
   few batches, and above a floor that keeps the rule sane on tiny or
   homogeneous populations. The floors are in dimensionless units (nats,
   rates), not cosines.
2. **Significance grows with volume.** The sweep effect must also be
   ``sweep_z`` standard errors away from zero, where the standard error shrinks
   like ``1/sqrt(n_eff)``: a short burst cannot be significant.
3. **Persistence.** The line must still be crossed ``min_span_ms`` after it
   was first crossed *and* after the account's volume grew by ``min_growth``
   (or, for a fast sweeper, by ``burst_growth`` times). A benchmark run that
   sweeps every subject once and stops never confirms; a sweeper that keeps
   going does.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from streamguard.config import ScoringConfig

FEATURES = ("evenness", "rarity", "breadth", "dup_rate", "cross_rate")


@dataclass
class PopulationBaseline:
    """Robust location and scale of each feature over established accounts."""

    median: dict[str, float] = field(default_factory=dict)
    mad: dict[str, float] = field(default_factory=dict)
    accounts: int = 0

    def threshold(self, feature: str, k: float, floor: float, min_accounts: int) -> float:
        if self.accounts < min_accounts or feature not in self.median:
            return floor
        return max(floor, self.median[feature] + k * self.mad[feature])


@dataclass
class Verdict:
    """The scorer's decision for one account at one moment (host values)."""

    slot: int
    score: float
    kinds: list[str]
    evidence: dict[str, Any]


def robust_baseline(features: dict[str, np.ndarray]) -> PopulationBaseline:
    """Median and MAD (scaled to a normal sigma) of every feature."""
    base = PopulationBaseline()
    for name, values in features.items():
        values = values[np.isfinite(values)]
        if values.size == 0:
            continue
        med = float(np.median(values))
        mad = float(np.median(np.abs(values - med))) * 1.4826
        base.median[name] = med
        base.mad[name] = max(mad, 1e-6)
        base.accounts = max(base.accounts, int(values.size))
    return base


def sweep_standard_error(n_eff: np.ndarray) -> np.ndarray:
    """Standard error of the evenness log-ratio for an account of ``n_eff`` requests.

    The collision estimate is a U-statistic; its relative standard error is of
    order ``sqrt(2 / n)`` for an account spread over many cells (delta method),
    which is what a sweeper's evenness must beat.
    """
    return np.sqrt(2.0 / np.maximum(n_eff, 1.0)) + 1.0 / np.maximum(n_eff, 1.0)


class Scorer:
    """Keeps per-account alert state and decides who crosses the line.

    Parameters
    ----------
    config : ScoringConfig
    capacity : initial number of account slots
    """

    def __init__(self, config: ScoringConfig, capacity: int = 4096) -> None:
        self.config = config
        self.capacity = int(capacity)
        self.baseline = PopulationBaseline()
        self.crossed_ts = np.full(capacity, -1, dtype=np.int64)
        self.crossed_n = np.zeros(capacity, dtype=np.int64)
        self.alerted_n = np.zeros(capacity, dtype=np.int64)

    def resize(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.crossed_ts = np.concatenate([self.crossed_ts, np.full(extra, -1, np.int64)])
        self.crossed_n = np.concatenate([self.crossed_n, np.zeros(extra, np.int64)])
        self.alerted_n = np.concatenate([self.alerted_n, np.zeros(extra, np.int64)])
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        self.crossed_ts[slots] = -1
        self.crossed_n[slots] = 0
        self.alerted_n[slots] = 0

    def refresh_baseline(self, features: dict[str, np.ndarray]) -> None:
        self.baseline = robust_baseline({k: v for k, v in features.items() if k in FEATURES})

    def thresholds(self) -> dict[str, float]:
        cfg, base = self.config, self.baseline
        k, m = cfg.population_mad_k, cfg.population_min_accounts
        return {
            "evenness": base.threshold("evenness", k, cfg.sweep_floor, m),
            "cross_rate": base.threshold("cross_rate", k, cfg.cross_dup_floor, m),
            "dup_rate": base.threshold("dup_rate", k, 0.0, m),
        }

    def judge(self, slots: np.ndarray, seen: np.ndarray, now_ts: np.ndarray, features: dict[str, np.ndarray]) -> list[Verdict]:
        """Decide, for each touched account, whether it crosses the line now.

        Parameters
        ----------
        slots : (m,) int64 touched accounts
        seen : (m,) int64 requests seen per account
        now_ts : (m,) int64 event time of each account's latest request
        features : (m,) float64 arrays named as in ``FEATURES`` plus ``n_eff``
        """
        cfg = self.config
        thr = self.thresholds()
        evenness = features["evenness"]
        z = evenness / sweep_standard_error(features["n_eff"])
        sweep = (evenness >= thr["evenness"]) & (z >= cfg.sweep_z)
        cross = features["cross_rate"] >= thr["cross_rate"]
        dup = features["dup_rate"] >= max(thr["dup_rate"], 1e-9)
        crossing = (sweep | cross) & (seen >= cfg.min_requests)

        verdicts: list[Verdict] = []
        # Accounts that stopped crossing lose their pending confirmation.
        self.crossed_ts[slots[~crossing]] = -1
        for i in np.flatnonzero(crossing):
            slot = int(slots[i])
            if self.crossed_ts[slot] < 0:
                self.crossed_ts[slot] = now_ts[i]
                self.crossed_n[slot] = seen[i]
                continue
            grown = seen[i] / max(self.crossed_n[slot], 1)
            persisted = (now_ts[i] - self.crossed_ts[slot] >= cfg.min_span_ms and grown >= 1.0 + cfg.min_growth) or (
                grown >= cfg.burst_growth
            )
            if not persisted:
                continue
            if self.alerted_n[slot] and seen[i] < self.alerted_n[slot] * (1.0 + cfg.realert_growth):
                continue
            kinds = []
            if dup[i] or cross[i]:
                kinds.append("near_duplicate")
            if sweep[i]:
                kinds.append("coverage_sweep")
            margin = max(evenness[i] / max(thr["evenness"], 1e-9), features["cross_rate"][i] / max(thr["cross_rate"], 1e-9))
            score = float(1.0 - np.exp(-margin * (1.0 + 0.5 * dup[i])))
            evidence = {
                "evenness": round(float(evenness[i]), 4),
                "evenness_z": round(float(z[i]), 2),
                "evenness_threshold": round(thr["evenness"], 4),
                "rarity": round(float(features["rarity"][i]), 4),
                "breadth": round(float(features["breadth"][i]), 4),
                "cells_covered": int(features["distinct"][i]),
                "duplicate_rate": round(float(features["dup_rate"][i]), 4),
                "cross_account_duplicate_rate": round(float(features["cross_rate"][i]), 4),
                "cross_account_threshold": round(thr["cross_rate"], 4),
                "population_accounts": self.baseline.accounts,
                "first_crossed_ts": int(self.crossed_ts[slot]),
            }
            self.alerted_n[slot] = seen[i]
            verdicts.append(Verdict(slot, min(max(score, 0.0), 1.0), kinds, evidence))
        return verdicts
