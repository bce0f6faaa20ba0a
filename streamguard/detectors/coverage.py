"""Coverage-sweep detection: who enumerates the capability space.

Every request falls in a fine cell of the codebook, and every cell belongs to
a topic. The cell is taken after removing the account's *style*, the part of
its earlier requests that no topic explains (a product's system prompt, a
template): otherwise a product account with one long system prompt lands all
its requests in a corner of the space that belongs to it alone, and looks
like a sweeper of rare topics. Each account keeps a time-decayed histogram over topics, and so does
the whole stream (the *population*). An ordinary user concentrates on a few
topics; a product account, however big, mirrors the population's skewed mix;
a sweeper spreads evenly, rare topics included. Two statistics, both judged
against the live population and neither in cosine units, tell them apart:

``rarity``
    The account's mean surprisal ``-log p(topic)`` minus the population's
    entropy: how much rarer than the population's the account's topics are.
    About 0 for an account mirroring the population, whatever its size;
    positive for a sweeper, which visits rare topics as often as common ones.
    Divided by the population's standard deviation of surprisal it is an
    effect size (``rarity_effect``); divided by its standard error
    ``sd / sqrt(n_eff)`` a z-score (``rarity_z``) that only volume can raise.
    That standard error treats every request as an independent pick of a
    topic, which no account is: a power user picks a few favourite topics and
    asks about them thousands of times, so one rare favourite makes its
    ``rarity_z`` enormous. The decisive statistic, ``sweep_z``, counts the
    picks instead: ``rarity_effect * sqrt(k)`` with ``k`` the account's
    effective number of topics (at most its effective sample size). An
    account whose ``k`` topics are drawn from the population mix has
    ``sweep_z`` about standard normal whatever the world, the embedding model
    or the codebook; a sweeper, rare topics as often as common ones over many
    topics, sits far out in its tail. Rarity is counted from where the
    stream's light accounts stand against the mix (``rarity_offset``, see
    :meth:`CoverageDetector.centre_on_light`), not from 0, where heavy
    narrow accounts have pulled the mix off what the many users ask.
    The same is measured *within domains* (``rarity_cond``: surprisal of the
    topic given its domain, against the population's conditional entropy in
    the account's own domain mix). It is reported in the evidence only: on
    simulated traffic it did not separate sweepers of a few popular domains
    from product accounts well enough to decide on.
``spread``
    The account's effective number of topics (inverse Simpson index, estimated
    without bias from decayed counts) over the population's. A niche user can
    have rare topics, but few of them: spread separates thorough from narrow.
``drift``
    The account against its own history (``detectors/drift.py``): a product
    that starts a sweep in a tenth of its traffic changed, though as a whole
    it still mirrors the population.

Decay: a request at time ``t`` adds ``exp(rate * (t - t0))`` to its topic, so
an account's histogram is decayed lazily with no per-account clock; ``t0`` is
moved forward (and every weight rescaled) long before the weights overflow.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import sparse

from streamguard.backends.base import Backend
from streamguard.detectors.codebook import damp
from streamguard.detectors.drift import DRIFT_FEATURES, OwnHistory
from streamguard.detectors.features import CoverageFeatures
from streamguard.detectors.near_duplicate import DetectorBatch
from streamguard.detectors.state import Stateful, grown_rows

_REBASE_EXPONENT = 10.0
_POPULATION_FLOOR = 0.01
_HOUR_MS = 3_600_000


@dataclass
class CoverageResult:
    """cells, topics : (n,) int32, the fine cell and the topic of every request;
    weights : (n,) float64 their decay weights (host arrays)."""

    cells: np.ndarray
    topics: np.ndarray
    weights: np.ndarray


SPARSE_ROWS_DENSITY = 0.2
"""Below this share of nonzero topic counts, the mix refresh keeps its sampled rows sparse (both
ways give the same mix up to the order of float additions; where the cut lies only sets the speed)."""


@dataclass(frozen=True)
class PopulationMix:
    """The population's topic distribution and the moments scoring needs.

    p : (T,) float64 probabilities, floored so no topic is impossible
    surprisal : (T,) ``-log p``; entropy : ``E[surprisal]``; surprisal_sd : its sd
    effective_topics : ``1 / sum(p**2)``
    surprisal_cond : (T,) ``-log p(topic | domain)``
    entropy_cond, sd_cond : (G,) conditional entropy and its sd within each domain
    """

    p: np.ndarray
    surprisal: np.ndarray
    entropy: float
    surprisal_sd: float
    effective_topics: float
    surprisal_cond: np.ndarray
    entropy_cond: np.ndarray
    sd_cond: np.ndarray

    @classmethod
    def from_counts(cls, counts: np.ndarray, domain_of_topic: np.ndarray) -> "PopulationMix":
        topics = counts.shape[0]
        total = counts.sum()
        p = counts / total if total > 0 else np.full(topics, 1.0 / topics)
        p = (1.0 - _POPULATION_FLOOR) * p + _POPULATION_FLOOR / topics
        surprisal = -np.log(p)
        entropy = float(p @ surprisal)
        sd = float(np.sqrt(p @ (surprisal - entropy) ** 2))
        domains = int(domain_of_topic.max()) + 1
        p_domain = np.bincount(domain_of_topic, weights=p, minlength=domains)
        p_cond = p / p_domain[domain_of_topic]
        surprisal_cond = -np.log(p_cond)
        entropy_cond = np.bincount(domain_of_topic, weights=p_cond * surprisal_cond, minlength=domains)
        var_cond = np.bincount(
            domain_of_topic, weights=p_cond * (surprisal_cond - entropy_cond[domain_of_topic]) ** 2, minlength=domains
        )
        return cls(
            p, surprisal, entropy, max(sd, 1e-9), float(1.0 / (p @ p)), surprisal_cond, entropy_cond, np.sqrt(var_cond)
        )


class CoverageDetector(Stateful):
    """Per-account and population decayed topic histograms, and their statistics.

    Parameters
    ----------
    backend : the array backend
    mean : (d,) float32 stream mean; centroids : (K, d) float32 (see Codebook)
    topic_of_cell : (K,) int32
    domain_of_topic : (T,) int32
    prior_counts : (T,) float64, the population's mix before any request is seen
    half_life_hours : decay half-life of every histogram
    population_account_cap : damping of heavy accounts in the population mix
    capacity : initial number of account slots
    light_requests : accounts under this many requests are the light ones ``sweep_z`` is centred
        on (0: no centring); see :meth:`centre_on_light`
    light_min_accounts : fewer light accounts kept by the mix than this: no centring
    drift_baseline_requests : an account's history is frozen when it reaches this many requests
        (0: no drift statistics); see ``drift`` above
    """

    _state_fields = (
        "capacity", "hist", "w_sum", "w2_sum", "requests", "style_sum", "style_weight",
        "residual_sq_sum", "residual_count", "population", "t0", "mix_counts", "mix_member", "prior_scale", "mix_groups",
        "rarity_offset",
    )
    _device_fields = ("hist", "style_sum", "style_weight")

    def __init__(
        self,
        backend: Backend,
        mean: np.ndarray,
        centroids: np.ndarray,
        topic_of_cell: np.ndarray,
        domain_of_topic: np.ndarray,
        prior_counts: np.ndarray,
        half_life_hours: float = 72.0,
        population_account_cap: int = 50,
        capacity: int = 4096,
        mix_trim_mad_k: float = 3.0,
        light_requests: int = 0,
        light_min_accounts: int = 30,
        drift_baseline_requests: int = 1000,
        dominant: np.ndarray | None = None,
        dominant_shrink: np.ndarray | None = None,
    ) -> None:
        self.backend = backend
        self.population_account_cap = int(population_account_cap)
        self.mix_trim_mad_k = float(mix_trim_mad_k)
        self.light_requests = int(light_requests)
        self.light_min_accounts = int(light_min_accounts)
        self.mean = backend.asarray(mean)
        self.centroids = backend.asarray(centroids)
        self.dim = int(centroids.shape[1])
        # The codebook's damped directions (see codebook.dominant_directions): its cells were cut
        # in the damped space, so requests are assigned there too.
        self._damping: tuple[Any, Any, Any] | None = None
        if dominant is not None and dominant_shrink is not None and len(dominant) > 0:
            directions = np.asarray(dominant, np.float32)
            self._damping = (
                backend.asarray(directions),
                backend.asarray(np.asarray(dominant_shrink, np.float32)),
                backend.asarray((np.asarray(mean, np.float32) @ directions.T).astype(np.float32)),
            )
        self.topic_of_cell = np.asarray(topic_of_cell, dtype=np.int32)
        self.domain_of_topic = np.asarray(domain_of_topic, dtype=np.int32)
        self.domains = int(self.domain_of_topic.max()) + 1
        self.prior_counts = np.asarray(prior_counts, dtype=np.float64)
        self.half_life_hours = float(half_life_hours)
        self.capacity = int(capacity)
        self.topics = int(self.topic_of_cell.max()) + 1
        self.rate = math.log(2.0) / (self.half_life_hours * _HOUR_MS)
        xp = backend.xp
        self._topic_of_cell_dev = backend.asarray(self.topic_of_cell)
        self.hist = xp.zeros((capacity, self.topics), dtype=xp.float32)
        self.w_sum = np.zeros(capacity, dtype=np.float64)
        self.w2_sum = np.zeros(capacity, dtype=np.float64)
        self.requests = np.zeros(capacity, dtype=np.int64)
        self.style_sum = xp.zeros((capacity, self.dim), dtype=xp.float32)
        self.style_weight = xp.zeros(capacity, dtype=xp.float64)
        self.residual_sq_sum = 0.0
        self.residual_count = 0
        # The warm-up sample's mix seeds the population, so accounts judged in the
        # first hours of a stream are compared with hours of traffic, not minutes.
        self.population = self.prior_counts.copy()
        self.t0: int | None = None
        # The robust mix (see refresh_mix): None until the first refresh, then the mass of the
        # accounts it kept, and which accounts those were (for leaving a group out of it).
        self.mix_counts: np.ndarray | None = None
        self.prior_scale = 1.0  # the prior's decay so far, as the population's
        self.mix_member = np.zeros(capacity, dtype=bool)
        # Linked groups (the campaign detector's last link pass): a campaign whose members each
        # look like a power user flattens the mix as a whole and is left out as a whole.
        self.mix_groups: list[np.ndarray] = []
        # Where the light accounts' rarity stands against the mix (centre_on_light): sweep_z counts from here.
        self.rarity_offset = 0.0
        self.history = OwnHistory(self.topics, drift_baseline_requests)

    # ------------------------------------------------------------ state layout

    def resize(self, capacity: int) -> None:
        xp = self.backend.xp
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.hist = grown_rows(xp, self.hist, capacity)
        self.w_sum = np.concatenate([self.w_sum, np.zeros(extra)])
        self.w2_sum = np.concatenate([self.w2_sum, np.zeros(extra)])
        self.requests = np.concatenate([self.requests, np.zeros(extra, np.int64)])
        self.style_sum = grown_rows(xp, self.style_sum, capacity)
        self.style_weight = xp.concatenate([self.style_weight, xp.zeros(extra, dtype=xp.float64)])
        self.mix_member = np.concatenate([self.mix_member, np.zeros(extra, dtype=bool)])
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        device_slots = self.backend.asarray(slots)
        self.hist[device_slots] = 0
        self.style_sum[device_slots] = 0
        self.style_weight[device_slots] = 0
        self.w_sum[slots] = 0
        self.w2_sum[slots] = 0
        self.requests[slots] = 0
        self.mix_member[slots] = False
        self.history.forget(slots)

    def load_state_dict(self, state: dict) -> None:
        # A snapshot from before the robust mix has none: the next refresh makes it.
        defaults = {
            "mix_counts": None, "mix_groups": [], "prior_scale": 1.0, "rarity_offset": 0.0,
            "mix_member": np.zeros(int(state.get("capacity", self.capacity)), dtype=bool),
        }
        super().load_state_dict({**defaults, **state})
        # A snapshot from before own histories has none: accounts freeze theirs from now on.
        self.history = OwnHistory(self.topics, self.history.baseline_requests)
        if "history" in state:
            self.history.load_state_dict(state["history"])

    def state_dict(self, exclude: tuple[str, ...] = ()) -> dict:
        return {**super().state_dict(exclude), "history": self.history.state_dict()}

    def state_bytes_per_account(self) -> int:
        # An own history (detectors/drift.py: topics * 4 + 24 bytes) is kept by heavy accounts only.
        return self.topics * 4 + self.dim * 4 + 3 * 8 + 1

    def decay_epoch(self) -> int | None:
        """Event time (epoch ms) the decay weights count from, None before the first request. It moves,
        by whole hours, only when every histogram and style sum is rescaled at once (see ``_weights``)."""
        return self.t0

    # ------------------------------------------------------------------ update

    def _weights(self, ts: np.ndarray) -> np.ndarray:
        """Decay weights of events at ``ts`` relative to ``t0``, rebasing ``t0`` when needed.

        ``t0`` only ever moves to a whole hour, so the same events give the
        same weights however they are cut into batches (up to rounding).
        """
        if self.t0 is None:
            self.t0 = int(ts.min()) // _HOUR_MS * _HOUR_MS
        if self.rate * (float(ts.max()) - self.t0) > _REBASE_EXPONENT:
            new_t0 = int(ts.max()) // _HOUR_MS * _HOUR_MS
            factor = math.exp(-self.rate * (new_t0 - self.t0))
            self.hist *= np.float32(factor)
            self.w_sum *= factor
            self.w2_sum *= factor * factor
            self.style_sum *= np.float32(factor)
            self.style_weight *= factor
            self.population *= factor
            self.prior_scale *= factor
            self.history.rescale(factor)
            self.t0 = new_t0
        return np.exp(self.rate * (ts.astype(np.float64) - self.t0))

    def update(self, batch: DetectorBatch) -> CoverageResult:
        """Assign cells and topics, then add every request to its account's and the population's histogram."""
        backend = self.backend
        if len(batch) == 0:
            return CoverageResult(np.empty(0, np.int32), np.empty(0, np.int32), np.empty(0))
        weights = self._weights(batch.ts)
        slots_dev, weights_dev = backend.asarray(batch.slots), backend.asarray(weights)
        embeddings = batch.embeddings
        if self._damping is not None:
            embeddings = damp(embeddings, *self._damping)
        cells_dev, residual_sq = backend.destyled_cells(
            embeddings, self.mean, self.centroids, slots_dev, weights_dev, self.style_sum, self.style_weight
        )
        topics_dev = self._topic_of_cell_dev[cells_dev]
        backend.histogram_add(self.hist, slots_dev, topics_dev, weights_dev)
        self.residual_sq_sum += float(backend.to_host(residual_sq).astype(np.float64).sum())
        self.residual_count += len(batch)
        topics = backend.to_host(topics_dev).astype(np.int32)
        np.add.at(self.w_sum, batch.slots, weights)
        np.add.at(self.w2_sum, batch.slots, weights * weights)
        k = self._request_numbers(batch.slots)
        np.add.at(self.population, topics, weights * np.minimum(1.0, self.population_account_cap / k))
        self.history.freeze(batch.slots, k, topics, weights, self._live)
        return CoverageResult(backend.to_host(cells_dev).astype(np.int32), topics, weights)

    def _request_numbers(self, slots: np.ndarray) -> np.ndarray:
        """(n,) int64 ``k`` for each request, the k-th of its account (batch order is causal), counted in."""
        order = np.argsort(slots, kind="stable")
        s_slots = slots[order]
        starts = np.r_[True, s_slots[1:] != s_slots[:-1]]
        rank = np.arange(slots.size) - np.flatnonzero(starts)[np.cumsum(starts) - 1]
        k = np.empty(slots.size, dtype=np.int64)
        k[order] = self.requests[s_slots] + rank + 1
        np.add.at(self.requests, slots, 1)
        return k

    def _live(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Host float64 copies of the accounts' histograms and weight sums (for their own histories)."""
        rows = self.backend.to_host(self.hist[self.backend.asarray(slots)]).astype(np.float64)
        return rows, self.w_sum[slots].copy(), self.w2_sum[slots].copy()

    # -------------------------------------------------------------- statistics

    def population_mix(self) -> PopulationMix:
        """The mix accounts are judged against: the robust mix once there is one (refresh_mix)."""
        counts = self._mix_counts()
        return PopulationMix.from_counts(counts, self.domain_of_topic)

    def _mix_counts(self) -> np.ndarray:
        if self.mix_counts is not None and self.mix_counts.sum() > 0:
            return self.mix_counts
        return self.population if self.population.sum() > 0 else self.prior_counts

    def _damped_share(self, slots: np.ndarray) -> np.ndarray:
        """(m,) the share of each account's histogram that the damped population counted."""
        # min(1, cap / k) for the k-th request sums to k up to the cap, then grows as cap * log.
        k = np.maximum(self.requests[slots].astype(np.float64), 1.0)
        cap = float(self.population_account_cap)
        damped = np.where(k <= cap, k, cap * (1.0 + np.log(k / cap)))
        return damped / k

    def refresh_mix(self, sample: np.ndarray, rounds: int = 10) -> None:
        """Re-estimate the mix from the accounts that look ordinary, leaving out those that stand out.

        The mix of all traffic is what sweeps are judged against, and distillers are part of
        that traffic: a stream where one account in seven is a distiller (a campaign's members,
        round-robin crawlers, sweepers) has a mix flattened by their even spread, and against
        it no sweep looks rare (on the independent world a 38-member campaign that covers the
        topics evenly lifts the mix's rare topics enough to hide every one of its members).
        Trimming only what already crosses a line never starts: everyone is masked. So the
        estimate starts from the more ordinary half of ``sample`` (by ``sweep_z`` against the
        whole mix) and alternates two steps until the kept set settles: fit the mix to the kept
        accounts; keep every account whose ``sweep_z`` against it is within ``mix_trim_mad_k``
        robust deviations of the kept accounts' median (a concentration step, as in robust
        covariance estimation). The cut is relative to the kept accounts' own spread, so a mix
        that grows too narrow raises everyone's ``sweep_z`` and the cut with it: ordinary
        accounts are not trimmed away one tail at a time.
        """
        sample = np.asarray(sample, dtype=np.int64)
        if self.mix_trim_mad_k <= 0 or sample.size < 2:
            self.mix_counts, self.mix_member[:] = None, False
            return
        rows = self.backend.to_host(self.hist[self.backend.asarray(sample)]).astype(np.float64)
        sum_sq = np.einsum("ij,ij->i", rows, rows)
        if np.count_nonzero(rows) < SPARSE_ROWS_DENSITY * rows.size:
            # A stream of many small accounts (a million one-off accounts: 1-2 of 512 topics each)
            # is mostly zeros: its rounds cost a tenth as sparse products. Built from the flat
            # nonzeros (half the time of scipy's own conversion, which finds them in two dimensions).
            flat = np.flatnonzero(rows)
            starts = np.searchsorted(flat, np.arange(rows.shape[0] + 1) * rows.shape[1])
            rows = sparse.csr_array((rows.reshape(-1)[flat], flat % rows.shape[1], starts), shape=rows.shape)
        damping = self._damped_share(sample)

        def mass(of: np.ndarray) -> np.ndarray:
            """(T,) the damped topic mass of the accounts where ``of``: one pass over the rows, no copy
            (a fancy-indexed copy of 20,000 x 512 rows per round was most of a refresh's cost)."""
            return (of * damping) @ rows

        w, w2 = self.w_sum[sample], self.w2_sum[sample]
        # The warm-up's mix stays in, as in the population: an account judged in a stream's first
        # hours, when a few product accounts are most of what has been seen, is compared with the
        # warm-up's thousands of accounts, not with the handful of small ones kept so far.
        prior = self.prior_counts * self.prior_scale

        def sweep_z(counts: np.ndarray) -> np.ndarray:
            mix = PopulationMix.from_counts(counts + prior, self.domain_of_topic)
            return self._sweep_z(sum_sq, rows @ mix.surprisal, w, w2, mix)

        groups = [np.isin(sample, members) for members in self.mix_groups]
        groups = [g for g in groups if g.sum() >= 2]

        def group_z(g: np.ndarray, counts: np.ndarray) -> float:
            """The group's sweep_z against the mix without its members, picks counted by Shannon."""
            combined = g.astype(np.float64) @ rows
            rest = np.maximum(counts - mass(g & kept), 0.0)
            mix = PopulationMix.from_counts(rest + prior, self.domain_of_topic)
            total, total2 = float(w[g].sum()), float(w2[g].sum())
            if total <= 0 or total2 <= 0:
                return 0.0
            q = combined / combined.sum()
            shannon = math.exp(-float((q[q > 0] * np.log(q[q > 0])).sum()))
            effect = (float(combined @ mix.surprisal) / total - mix.entropy) / mix.surprisal_sd
            return effect * math.sqrt(max(min(total * total / total2, shannon), 1.0))

        z = sweep_z(mass(np.ones(sample.size, dtype=bool)))
        kept = z <= np.median(z)
        for _ in range(rounds):
            counts = mass(kept)
            z = sweep_z(counts)
            centre = float(np.median(z[kept]))
            spread = 1.4826 * float(np.median(np.abs(z[kept] - centre)))
            cut = centre + self.mix_trim_mad_k * max(spread, 1e-9)
            updated = z <= cut
            for g in groups:
                if group_z(g, counts) > cut:
                    updated &= ~g
            if np.array_equal(updated, kept) or updated.sum() < 2:
                break
            kept = updated
        self.mix_counts = mass(kept) + prior
        self.mix_member[:] = False
        self.mix_member[sample[kept]] = True

    def centre_on_light(self, sample: np.ndarray) -> float:
        """Set ``rarity_offset``, where ``sweep_z`` counts rarity from, off the light accounts of ``sample``.

        The light accounts (under ``light_requests``: too small to be judged, most of any stream's
        users) say where an ordinary account's rarity stands against the mix: their mean
        ``rarity_effect``, when above 0, is the offset. The mix weighs accounts by damped volume;
        heavy narrow accounts (batch jobs) can pull it onto their topics, and then everyone who
        asks what the many ask looks rare against it, a product account of thousands of end users
        most of all. A mean over accounts (each counts once, whatever its volume) of the light
        accounts the mix kept (:meth:`refresh_mix`): sweeps of small accounts are trimmed first.

        Deliberately conservative. The trim also drops casual users with a rare favourite, so the
        offset falls short of what a stream's ordinary users are (`sampled-s13`, no light
        distiller: 0.11 against 0.39 over all its light accounts; its two products stay over the
        line). Keeping every light account the account rule would not call a sweep reaches 0.35
        there, but in the first hours of an evasion stream most light accounts are distillers
        (`sampled-s19e`: 142 of the first 161) and none of them sweeps alone yet: that offset cost
        the hydra 83 -> 9 of 112 and let four casual users, linked by style with a power user,
        through as a campaign (`sim-s21-traps`), both measured over the full matrix. Run after
        :meth:`refresh_mix`; fewer than ``light_min_accounts`` kept light accounts, or centring
        off: 0.
        """
        self.rarity_offset = 0.0
        sample = np.asarray(sample, dtype=np.int64)
        if self.light_requests <= 0 or self.mix_counts is None:
            return 0.0
        light = sample[(self.requests[sample] < self.light_requests) & (self.w2_sum[sample] > 0) & self.mix_member[sample]]
        if light.size < max(self.light_min_accounts, 1):
            return 0.0
        # Against the mix itself, from the reduction alone: no host copy of the rows.
        mix = self.population_mix()
        red = self.backend.coverage_reduce(
            self.hist, self.backend.asarray(light), self.backend.asarray(mix.surprisal.astype(np.float32))
        )
        rarity_effect = (np.asarray(red["surprisal"], np.float64) / self.w_sum[light] - mix.entropy) / mix.surprisal_sd
        self.rarity_offset = max(0.0, float(rarity_effect.mean()))
        return self.rarity_offset

    def account_stats(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """Coverage statistics of the given accounts against the current population.

        Returns host float64 arrays (m,): ``n_eff`` (Kish effective sample
        size), ``rarity`` (nats), ``rarity_effect`` (population sds),
        ``rarity_z``, ``sweep_z``, ``effective_topics``, ``spread``, ``topics_covered``.
        """
        slots = np.asarray(slots, dtype=np.int64)
        mix = self.population_mix()
        red = self.backend.coverage_reduce(
            self.hist, self.backend.asarray(slots), self.backend.asarray(mix.surprisal.astype(np.float32))
        )
        rows = self.backend.to_host(self.hist[self.backend.asarray(slots)]).astype(np.float64)
        return self._stats(
            red["sum_sq"], red["surprisal"], red["distinct"], self.w_sum[slots], self.w2_sum[slots], mix, rows
        )

    def leave_out_of_mix(self, groups: list[np.ndarray]) -> None:
        """Linked groups (slots) that the next :meth:`refresh_mix` may leave out of the mix as a whole."""
        self.mix_groups = [np.array(members, dtype=np.int64, copy=True) for members in groups]

    def population_at(self, ts: int) -> np.ndarray:
        """(T,) float64: the damped topic mass of the population as of event time ``ts``."""
        if self.t0 is None:
            raise ValueError("the population has no mass before the first update")
        return self.population * math.exp(-self.rate * (int(ts) - self.t0))

    def features(self, slots: np.ndarray) -> CoverageFeatures:
        """:meth:`account_stats` and :meth:`drift` as named arrays: what scoring and alerts read."""
        return CoverageFeatures(**self.account_stats(slots), **self.drift(slots))

    def drift(self, slots: np.ndarray) -> dict[str, np.ndarray]:
        """The accounts against their own history (``detectors/drift.py``): host float64 (m,) arrays."""
        slots = np.asarray(slots, dtype=np.int64)
        if len(self.history) == 0:
            return {name: np.zeros(slots.size) for name in DRIFT_FEATURES}
        mix = self.population_mix()
        return self.history.drift(slots, self._live, mix.surprisal, mix.surprisal_sd)

    def topic_overlap(self, a: np.ndarray, b: np.ndarray, population: np.ndarray) -> np.ndarray:
        """(m,) float64: ``sum_t h_a(t) h_b(t) / M(t)`` for the pairs ``(a[i], b[i])``.

        ``h`` are the accounts' decayed topic histograms and ``M`` the topic's mass over the
        ``population`` slots (undamped, unlike the population mix): how many of ``a``'s requests
        would have ``b`` as their partner if partners were drawn among everyone asking about
        the same topic, per unit of ``a``'s partner rate.
        """
        if a.size == 0:
            return np.zeros(a.size)
        mass = self._summed_rows(np.asarray(population, dtype=np.int64))
        ha = self.backend.to_host(self.hist[self.backend.asarray(a)]).astype(np.float64)
        hb = self.backend.to_host(self.hist[self.backend.asarray(b)]).astype(np.float64)
        return (ha * hb / np.maximum(mass, 1e-300)).sum(axis=1)

    def _summed_rows(self, slots: np.ndarray, chunk: int = 16_384) -> np.ndarray:
        """(T,) float64: the sum of the slots' histograms, gathered a bounded piece at a time.

        Every live account at once was a float64 copy of 0.8 GB at the default memory bound (the
        peak of a run over a million accounts). Each piece is added on after the running total,
        row by row, so the sum is the one a single gather gives, to the bit.
        """
        total = np.zeros(self.topics)
        for start in range(0, slots.size, chunk):
            piece = self.backend.to_host(self.hist[self.backend.asarray(slots[start : start + chunk])]).astype(np.float64)
            total = piece.sum(axis=0) if start == 0 else np.add.reduce(np.concatenate([total[None], piece]), axis=0)
        return total

    def group_stats(self, slots: np.ndarray, balanced: bool = False) -> dict[str, float]:
        """The statistics of :meth:`account_stats` for several accounts taken as one actor.

        The group is judged against the population *without* it: a campaign of a few dozen
        accounts is a visible share of a small stream's mix, and against a mix that contains
        it, its own topics look common.

        ``balanced``: no member weighs more than the median member. For a group that nothing but
        a shared value brought together (attributes): a few heavy sweepers behind a crowd's
        network prefix would otherwise make the crowd a campaign, while a campaign that divides
        its work among many similar accounts is unchanged.
        """
        slots = np.asarray(slots, dtype=np.int64)
        rows = self.backend.to_host(self.hist[self.backend.asarray(slots)]).astype(np.float64)
        w_sum, w2_sum = self.w_sum[slots].astype(np.float64), self.w2_sum[slots].astype(np.float64)
        if balanced and slots.size:
            mass = rows.sum(axis=1)
            scale = np.minimum(1.0, float(np.median(mass)) / np.maximum(mass, 1e-300))
            rows, w_sum, w2_sum = rows * scale[:, None], w_sum * scale, w2_sum * scale * scale
        combined = rows.sum(axis=0)
        # Members the mix kept are taken out of it.
        kept = self.mix_member[slots] if self.mix_counts is not None else np.ones(slots.size, dtype=bool)
        own = (rows[kept] * self._damped_share(slots[kept])[:, None]).sum(axis=0)
        counts = self._mix_counts()
        rest = np.maximum(counts - own, 0.0)
        mix = PopulationMix.from_counts(rest if rest.sum() > 0 else counts, self.domain_of_topic)
        stats = self._stats(
            np.array([combined @ combined]),
            np.array([combined @ mix.surprisal]),
            np.array([float((combined > 0).sum())]),
            np.array([w_sum.sum()]),
            np.array([w2_sum.sum()]),
            mix,
            combined[None, :],
        )
        out = {name: float(values[0]) for name, values in stats.items()}
        # A group divides the work but shares its templates: a template that pulls every member's
        # requests into a cell of its own puts a third of the group's mass on one topic, and the
        # inverse Simpson number (which the heaviest topics decide) sees a handful of topics where
        # the members covered hundreds. The group's picks are counted by the Shannon number instead.
        q = combined / max(combined.sum(), 1e-300)
        shannon = float(np.exp(-(q[q > 0] * np.log(q[q > 0])).sum())) if combined.sum() > 0 else 0.0
        out["effective_topics_shannon"] = shannon
        out["sweep_z"] = (out["rarity_effect"] - self.rarity_offset) * math.sqrt(max(min(out["n_eff"], shannon), 1.0))
        return out

    def _sweep_z(
        self,
        sum_sq: np.ndarray,
        surprisal: np.ndarray,
        w: np.ndarray,
        w2: np.ndarray,
        mix: PopulationMix,
        offset: float = 0.0,
    ) -> np.ndarray:
        """``sweep_z`` alone (see :meth:`_stats`), for the many evaluations of :meth:`refresh_mix`
        (which trims against the mix itself: ``offset`` 0)."""
        has = w2 > 0
        n_eff = np.where(has, w * w / np.where(has, w2, 1.0), 0.0)
        effective_topics = self._effective_topics(sum_sq, w, w2)
        rarity = np.where(has, surprisal / np.where(has, w, 1.0) - mix.entropy, 0.0)
        # An account picks a handful of topics and then asks about them many times: the
        # picks, not the requests, are its sample of the population mix.
        return (rarity / mix.surprisal_sd - offset) * np.sqrt(np.maximum(np.minimum(n_eff, effective_topics), 1.0))

    def _effective_topics(self, sum_sq: np.ndarray, w: np.ndarray, w2: np.ndarray) -> np.ndarray:
        """Inverse Simpson number of each account's topics, from the unbiased collision probability
        of two distinct requests of the account (decay weights: ``w``, ``w2`` their sums)."""
        pairs = w * w - w2
        collision = np.where(pairs > 0, (sum_sq - w2) / np.where(pairs > 0, pairs, 1.0), 1.0)
        return 1.0 / np.clip(collision, 1.0 / self.topics, 1.0)

    def _stats(
        self,
        sum_sq: np.ndarray,
        surprisal: np.ndarray,
        distinct: np.ndarray,
        w: np.ndarray,
        w2: np.ndarray,
        mix: PopulationMix,
        rows: np.ndarray,
    ) -> dict[str, np.ndarray]:
        has = w2 > 0
        safe_w = np.where(has, w, 1.0)
        n_eff = np.where(has, w * w / np.where(has, w2, 1.0), 0.0)
        effective_topics = self._effective_topics(sum_sq, w, w2)
        rarity = np.where(has, surprisal / safe_w - mix.entropy, 0.0)
        standard_error = mix.surprisal_sd / np.sqrt(np.maximum(n_eff, 1.0))
        # Within domains: the account's own domain mix, the population's mix inside each domain.
        one_hot = np.zeros((self.topics, self.domains))
        one_hot[np.arange(self.topics), self.domain_of_topic] = 1.0
        domain_mix = (rows @ one_hot) / safe_w[:, None]
        rarity_cond = np.where(has, rows @ mix.surprisal_cond / safe_w - domain_mix @ mix.entropy_cond, 0.0)
        sd_cond = np.sqrt(np.maximum(domain_mix @ (mix.sd_cond**2), 1e-18))
        cond_effect = rarity_cond / sd_cond
        cond_z = rarity_cond / (sd_cond / np.sqrt(np.maximum(n_eff, 1.0)))
        return {
            "rarity_cond": rarity_cond,
            "rarity_cond_effect": np.where(has, cond_effect, 0.0),
            "rarity_cond_z": np.where(has, cond_z, 0.0),
            "n_eff": n_eff,
            "rarity": rarity,
            "rarity_effect": rarity / mix.surprisal_sd,
            "rarity_z": rarity / standard_error,
            "sweep_z": self._sweep_z(sum_sq, surprisal, w, w2, mix, self.rarity_offset),
            "effective_topics": effective_topics,
            "spread": effective_topics / mix.effective_topics,
            "topics_covered": distinct,
        }
