"""Coverage-sweep detection: who enumerates the capability space.

Every request falls in one of K capability cells (the codebook). Each account
keeps a time-decayed histogram over the cells, and so does the whole stream
(the *population*). An ordinary user concentrates on a few cells; a product
account, however big, mirrors the population's skewed mix; a sweeper spreads
evenly, rare cells included. The statistics below measure exactly that, and
each is a ratio or a difference of log-probabilities, so none depends on the
embedding model's cosine scale:

``evenness``
    ``log(C_null / C_account)``: how much less often two of the account's
    requests fall in the same cell than they would if the account drew its
    requests from the population *within the domains it uses*
    (``C = sum_c q_c**2``, estimated without bias from decayed counts). About 0
    for a product account, negative for a narrow user, positive for a sweeper,
    including one that sweeps only a few domains.
``rarity``
    mean surprisal ``-log p(cell | domain)`` of the account's requests minus
    the population's own conditional entropy: positive when the account visits
    the rare corners of the domains it uses more than the population does.
``breadth``
    distinct cells visited over the number a population-mirroring account with
    the same volume would be expected to visit.

Decay: a request at time ``t`` adds ``exp(rate * (t - t0))`` to its cell, so
an account's histogram is decayed lazily with no per-account clock; ``t0`` is
moved forward (and every weight rescaled) long before the weights overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from streamguard.backends.base import Backend
from streamguard.detectors.near_duplicate import DetectorBatch

_REBASE_EXPONENT = 10.0
_POPULATION_FLOOR = 0.01


@dataclass
class CoverageResult:
    """cells : (n,) int32, the capability cell of every request (host array)."""

    cells: np.ndarray

    @property
    def scores(self) -> np.ndarray:
        return self.cells.astype(np.float64)


class CoverageDetector:
    """Per-account and population decayed cell histograms, and their statistics.

    Parameters
    ----------
    backend : the array backend
    centroids : (K, d) float32; centroid_offsets : (K,) float32 (see Codebook)
    domain_of_cell : (K,) int32
    prior_counts : (K,) float64, the population's mix before any request is seen
    half_life_hours : decay half-life of every histogram
    capacity : initial number of account slots
    """

    def __init__(
        self,
        backend: Backend,
        centroids: np.ndarray,
        centroid_offsets: np.ndarray,
        domain_of_cell: np.ndarray,
        prior_counts: np.ndarray,
        half_life_hours: float = 72.0,
        capacity: int = 4096,
    ) -> None:
        self.backend = backend
        self.centroids = backend.asarray(centroids)
        self.centroid_offsets = backend.asarray(centroid_offsets)
        self.domain_of_cell = np.asarray(domain_of_cell, dtype=np.int32)
        self.prior_counts = np.asarray(prior_counts, dtype=np.float64)
        self.half_life_hours = float(half_life_hours)
        self.capacity = int(capacity)
        self.cells = int(centroids.shape[0])
        self.domains = int(self.domain_of_cell.max()) + 1
        self.rate = math.log(2.0) / (self.half_life_hours * 3_600_000.0)
        xp = backend.xp
        self.hist = xp.zeros((capacity, self.cells), dtype=xp.float32)
        self._domain_of_cell_dev = backend.asarray(self.domain_of_cell)
        self.w_sum = np.zeros(capacity, dtype=np.float64)
        self.w2_sum = np.zeros(capacity, dtype=np.float64)
        self.first_ts = np.full(capacity, -1, dtype=np.int64)
        self.population = np.zeros(self.cells, dtype=np.float64)
        self.t0: int | None = None

    # ------------------------------------------------------------ state layout

    def resize(self, capacity: int) -> None:
        xp = self.backend.xp
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.hist = xp.concatenate([self.hist, xp.zeros((extra, self.cells), dtype=xp.float32)])
        self.w_sum = np.concatenate([self.w_sum, np.zeros(extra)])
        self.w2_sum = np.concatenate([self.w2_sum, np.zeros(extra)])
        self.first_ts = np.concatenate([self.first_ts, np.full(extra, -1, np.int64)])
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        self.hist[self.backend.asarray(slots)] = 0
        self.w_sum[slots] = 0
        self.w2_sum[slots] = 0
        self.first_ts[slots] = -1

    def state_bytes_per_account(self) -> int:
        return self.cells * 4 + 3 * 8

    # ------------------------------------------------------------------ update

    def _weights(self, ts: np.ndarray) -> np.ndarray:
        """Decay weights of events at ``ts`` relative to ``t0``, rebasing ``t0`` if needed."""
        if self.t0 is None:
            self.t0 = int(ts.min()) // 3_600_000 * 3_600_000
        exponent = self.rate * (float(ts.max()) - self.t0)
        if exponent > _REBASE_EXPONENT:
            new_t0 = int(ts.max()) // 3_600_000 * 3_600_000
            factor = math.exp(-self.rate * (new_t0 - self.t0))
            self.hist *= np.float32(factor)
            self.w_sum *= factor
            self.w2_sum *= factor * factor
            self.population *= factor
            self.t0 = new_t0
        return np.exp(self.rate * (ts.astype(np.float64) - self.t0))

    def update(self, batch: DetectorBatch) -> CoverageResult:
        """Assign cells, then add every request to its account's and the population's histogram."""
        backend = self.backend
        if len(batch) == 0:
            return CoverageResult(np.empty(0, np.int32))
        cells_dev = backend.nearest_cells(batch.embeddings, self.centroids, self.centroid_offsets)
        cells = backend.to_host(cells_dev).astype(np.int32)
        weights = self._weights(batch.ts)
        backend.histogram_add(self.hist, backend.asarray(batch.slots), cells_dev, backend.asarray(weights))
        np.add.at(self.w_sum, batch.slots, weights)
        np.add.at(self.w2_sum, batch.slots, weights * weights)
        np.add.at(self.population, cells, weights)
        unset = self.first_ts[batch.slots] < 0
        if unset.any():
            new_slots, new_ts = batch.slots[unset], batch.ts[unset]
            self.first_ts[new_slots] = np.iinfo(np.int64).max
            np.minimum.at(self.first_ts, new_slots, new_ts)
        return CoverageResult(cells)

    # -------------------------------------------------------------- statistics

    def population_mix(self) -> np.ndarray:
        """(K,) float64: the population's cell probabilities, floored so no cell is impossible."""
        counts = self.population if self.population.sum() > 0 else self.prior_counts
        total = counts.sum()
        p = counts / total if total > 0 else np.full(self.cells, 1.0 / self.cells)
        return (1.0 - _POPULATION_FLOOR) * p + _POPULATION_FLOOR / self.cells

    def account_stats(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Coverage statistics of the given accounts against the current population.

        Returns host float64 arrays (m,): ``n_eff`` (Kish effective sample size),
        ``evenness``, ``rarity``, ``breadth``, ``distinct``, ``entropy``,
        ``collision``, ``domains_used`` (effective number of domains).
        """
        slots = np.asarray(slots, dtype=np.int64)
        p = self.population_mix()
        dom = self.domain_of_cell
        p_dom = np.bincount(dom, weights=p, minlength=self.domains)
        p_cond = p / p_dom[dom]
        cond_collision = np.bincount(dom, weights=p_cond * p_cond, minlength=self.domains)  # (G,)
        cond_entropy = np.bincount(dom, weights=-p_cond * np.log(p_cond), minlength=self.domains)
        red = self.backend.coverage_reduce(
            self.hist,
            self.backend.asarray(slots),
            self.backend.asarray((-np.log(p)).astype(np.float32)),
            self.backend.asarray((-np.log(p_cond)).astype(np.float32)),
            self._domain_of_cell_dev,
            self.domains,
        )
        w = self.w_sum[slots]
        w2 = self.w2_sum[slots]
        with np.errstate(divide="ignore", invalid="ignore"):
            n_eff = np.where(w2 > 0, w * w / np.where(w2 > 0, w2, 1.0), 0.0)
            pairs = w * w - w2
            collision = np.where(pairs > 0, (red["sum_sq"] - w2) / np.where(pairs > 0, pairs, 1.0), np.nan)
            r = red["domain_mass"] / np.where(w > 0, w, 1.0)[:, None]
            # Unbiased square of the domain mix (same correction as the collision estimate).
            inv = np.where(n_eff > 1, 1.0 / n_eff, 1.0)
            r2 = np.maximum((r * r - r * inv[:, None]) / np.maximum(1.0 - inv, 1e-12)[:, None], 0.0)
            null_collision = r2 @ cond_collision
            evenness = np.log(np.maximum(null_collision, 1e-9) / np.maximum(collision, 1e-9))
            rarity = red["surprisal_cond"] / np.where(w > 0, w, 1.0) - r @ cond_entropy
            entropy = np.log(np.where(w > 0, w, 1.0)) - red["h_log_h"] / np.where(w > 0, w, 1.0)
            expected_distinct = (1.0 - np.power(1.0 - p[None, :], np.maximum(n_eff, 0.0)[:, None])).sum(axis=1)
            breadth = red["distinct"] / np.maximum(expected_distinct, 1.0)
            domains_used = 1.0 / np.maximum((r * r).sum(axis=1), 1e-12)
        valid = n_eff > 1
        return {
            "n_eff": n_eff,
            "evenness": np.where(valid, evenness, 0.0),
            "rarity": np.where(valid, rarity, 0.0),
            "breadth": np.where(valid, breadth, 0.0),
            "distinct": red["distinct"],
            "entropy": np.where(w > 0, entropy, 0.0),
            "collision": np.where(valid, collision, 1.0),
            "domains_used": np.where(w > 0, domains_used, 0.0),
        }
