"""Per-account features: what the detectors tell scoring, metrics and alerts about accounts.

Each detector returns its part for a set of slots (``CoverageDetector.features``,
``NearDuplicateDetector.features``, ``CampaignDetector.partnered_of``); the pipeline composes them
into one :class:`AccountFeatures`. Readers use the named arrays, never a detector's attributes, so
a renamed field fails at import or attribute access instead of silently in a string key.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np


@dataclass(frozen=True)
class CoverageFeatures:
    """Coverage statistics of ``m`` accounts against the current population (host arrays, (m,)).

    Attributes
    ----------
    rarity : float64, mean surprisal of the account's topics minus the population's entropy (nats)
    rarity_effect : float64, ``rarity`` in population standard deviations
    rarity_z : float64, ``rarity`` over its standard error
    sweep_z : float64, ``rarity_effect * sqrt(k)``: about standard normal for an ordinary account
    effective_topics : float64, the inverse Simpson number of the account's topics
    spread : float64, ``effective_topics`` over the population's
    topics_covered : topics with any mass (a count; the backend's dtype)
    rarity_cond, rarity_cond_effect, rarity_cond_z : float64, rarity within the account's domains
    n_eff : float64, Kish effective sample size of the decayed requests
    drift_z, drift_effect, drift_topics : float64, the account against its own history (see
        ``CoverageDetector.drift``); None where not computed
    """

    rarity_cond: np.ndarray
    rarity_cond_effect: np.ndarray
    rarity_cond_z: np.ndarray
    n_eff: np.ndarray
    rarity: np.ndarray
    rarity_effect: np.ndarray
    rarity_z: np.ndarray
    sweep_z: np.ndarray
    effective_topics: np.ndarray
    spread: np.ndarray
    topics_covered: np.ndarray
    drift_z: np.ndarray | None = None
    drift_effect: np.ndarray | None = None
    drift_topics: np.ndarray | None = None


@dataclass(frozen=True)
class DuplicateFeatures:
    """Near-duplicate counts of ``m`` accounts (host arrays, (m,)).

    Attributes
    ----------
    seen : int64, requests seen
    dup_rate : float64, share of requests that repeat one of the account's own
    cross_rate : float64, share of requests that repeat another account's (this partition or others)
    """

    seen: np.ndarray
    dup_rate: np.ndarray
    cross_rate: np.ndarray


@dataclass(frozen=True)
class AccountFeatures(CoverageFeatures, DuplicateFeatures):
    """Every per-account feature scoring reads, for ``m`` accounts (host arrays, (m,)).

    The fields of :class:`CoverageFeatures` and :class:`DuplicateFeatures`, and ``partnered``:
    (m,) bool, the account shares prompts with particular accounts beyond what their topics
    explain (``CampaignDetector``'s last link pass), or None where no campaign detector runs.
    """

    partnered: np.ndarray | None = None

    @classmethod
    def compose(
        cls, coverage: CoverageFeatures, duplicates: DuplicateFeatures, partnered: np.ndarray | None = None
    ) -> "AccountFeatures":
        """One account's features from the detectors' parts (same slots, same order)."""
        parts: dict[str, Any] = _fields_of(coverage)
        parts.update(_fields_of(duplicates))
        return cls(**parts, partnered=partnered)

    def __len__(self) -> int:
        return int(self.sweep_z.shape[0])

    def take(self, rows: Any) -> "AccountFeatures":
        """The features of the rows ``rows`` (an index or a boolean mask)."""
        return AccountFeatures(**{k: (None if v is None else v[rows]) for k, v in _fields_of(self).items()})

    def to_dict(self) -> dict[str, np.ndarray]:
        """``{name: array}`` of every feature present (``partnered`` left out when None)."""
        return {k: v for k, v in _fields_of(self).items() if v is not None}


def _fields_of(obj: Any) -> dict[str, Any]:
    return {f.name: getattr(obj, f.name) for f in fields(obj)}
