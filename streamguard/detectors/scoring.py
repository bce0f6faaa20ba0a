"""Scoring: each account judged against the live population of accounts.

The detectors produce per-account evidence (near-duplicate rates, coverage
statistics). Scoring turns it into alerts with three rules, none of them a
constant fitted to one data set:

1. **Against the population, at a set false-alert rate.** The sweep
   statistic ``sweep_z`` (see ``coverage.py``) is a z-score under the null
   that an account picks its topics from the live population's mix (counted
   from where the stream's light accounts stand against that mix:
   ``CoverageDetector.centre_on_light``), so the
   line is the normal quantile of the false-alert rate asked for
   (``false_alerts_per_10k``), not a constant fitted to one world. A sweep
   must also be at least as broad as the median established account (a
   niche user can have rare topics, but few of them). Rates
   (cross-account duplicates) count as unusual only above
   ``median + k * MAD`` over the *established* accounts of the stream (those
   with at least ``min_requests`` requests), refreshed every few batches, and
   above a floor that keeps the rule sane on tiny or homogeneous populations.
2. **Persistence.** The account must have been active for ``min_span_ms``,
   and the line must still be crossed ``confirm_ms`` after it was first
   crossed, after the account's volume grew by ``min_growth``. A benchmark
   run that sweeps every subject once in one burst never confirms; a sweeper
   that keeps going does. This costs delay: a fast sweeper sends two hours of
   its traffic before it is alerted (``min_span_ms`` is the knob: set it to the
   longest benchmark burst the provider's customers run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from statistics import NormalDist
from typing import Any

import math

import numpy as np

from streamguard.config import ScoringConfig
from streamguard.detectors.features import AccountFeatures, CoverageFeatures
from streamguard.detectors.state import Stateful

FEATURES = ("rarity_effect", "rarity_z", "sweep_z", "spread", "effective_topics", "dup_rate", "cross_rate", "sweep_margin")
DAY_MS = 86_400_000
ORDINARY_BREADTH = "ordinary_effective_topics"
"""The baseline's breadth line: the median established account's, at most the 90th percentile of
the established accounts the robust mix kept (refresh_baseline)."""


@dataclass
class PopulationBaseline:
    """Robust location and scale of each feature over established accounts, and its quantiles.

    ``sorted`` keeps each feature's values over the (sampled, at most 20,000)
    established accounts of the last refresh, so an alert can say where the
    account stands in the live population (its percentile).
    """

    median: dict[str, float] = field(default_factory=dict)
    mad: dict[str, float] = field(default_factory=dict)
    accounts: int = 0
    sorted: dict[str, np.ndarray] = field(default_factory=dict)

    def threshold(self, feature: str, k: float, floor: float, min_accounts: int) -> float:
        if self.accounts < min_accounts or feature not in self.median:
            return floor
        return max(floor, self.median[feature] + k * self.mad[feature])

    def percentile(self, feature: str, value: float) -> float | None:
        """Share (0-100) of established accounts whose ``feature`` is at most ``value``."""
        values = self.sorted.get(feature)
        if values is None or values.size == 0:
            return None
        # At the stored (float32) precision: an account's own value then ties with its own entry,
        # instead of landing on either side of it by the rounding direction of its last bits
        # (which a backend's summation order decides).
        return 100.0 * float(np.searchsorted(values, values.dtype.type(value), side="right")) / values.size

    def quantile(self, feature: str, q: float) -> float | None:
        values = self.sorted.get(feature)
        if values is None or values.size == 0:
            return None
        return float(np.quantile(values, q))


def sweep_line(false_alerts_per_10k: float) -> float:
    """``Phi^-1(1 - rate / 10,000)``: the z-score an ordinary account exceeds at that rate."""
    return NormalDist().inv_cdf(1.0 - false_alerts_per_10k / 10_000.0)


def score_of(margin: Any) -> Any:
    """An alert's score from its margin past the line (float or array): ``1 - 0.5**margin``, 0.5 on the line."""
    return 1.0 - 0.5**margin


def members_at_work(
    spans: np.ndarray, min_span_ms: int, value_group: CoverageFeatures | None = None, min_topics: float = 0.0
) -> np.ndarray:
    """(m,) bool: the members of a group that crosses its line that do the group's kind of work themselves.

    Sustained, as a single account must be (``spans``: each member's time active, at least
    ``min_span_ms``; a benchmark burst on a campaign's cloud range is not). In a group that only shares
    an attribute value (``value_group``: its members' coverage features), also with topics rarer than
    the population's (a product on that range mirrors it) over at least ``min_topics`` effective
    topics (a batch job or a casual user on that range asks about a topic or two). The others stay
    linked and are alerted once they qualify.
    """
    alertable = np.asarray(spans) >= min_span_ms
    if value_group is not None:
        alertable &= (value_group.rarity_effect > 0) & (value_group.effective_topics >= min_topics)
    return alertable


def read_allowlist(path: str) -> frozenset[str]:
    """Account ids and org ids from ``path``, one per line; blank lines and ``#`` comments skipped."""
    if not path:
        return frozenset()
    try:
        with open(path, encoding="utf-8") as handle:
            lines = handle.read().splitlines()
    except OSError as exc:
        raise ValueError(f"scoring.allowlist: cannot read {path}: {exc.strerror or exc}") from None
    return frozenset(line.split("#", 1)[0].strip() for line in lines) - {""}


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
        base.sorted[name] = np.sort(values).astype(np.float32)
        base.accounts = max(base.accounts, int(values.size))
    return base


@dataclass
class CampaignVerdict:
    """Members of a campaign that crosses the line now, to be alerted."""

    campaign_id: str
    members: np.ndarray
    score: float
    evidence: dict[str, Any]
    kinds: list[str] = field(default_factory=lambda: ["campaign"])


@dataclass
class _CampaignTrack:
    crossed_ts: int
    crossed_n: float
    confirmed: bool = False
    alerted: set[int] = field(default_factory=set)


class Scorer(Stateful):
    """Keeps per-account alert state and decides who crosses the line.

    Parameters
    ----------
    config : ScoringConfig
    capacity : initial number of account slots
    """

    _state_fields = ("capacity", "baseline", "crossed_ts", "crossed_n", "alerted_n", "campaigns", "recent_alerts", "held_back")

    def __init__(self, config: ScoringConfig, capacity: int = 4096) -> None:
        self.config = config
        self.capacity = int(capacity)
        self.baseline = PopulationBaseline()
        self.crossed_ts = np.full(capacity, -1, dtype=np.int64)
        self.crossed_n = np.zeros(capacity, dtype=np.int64)
        self.alerted_n = np.zeros(capacity, dtype=np.int64)
        self.campaigns: dict[str, _CampaignTrack] = {}
        # Event times of the alerts of the last day (the alert budget), and alerts held back by it.
        self.recent_alerts: list[int] = []
        self.held_back = 0

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

    score_of = staticmethod(score_of)

    def refresh_baseline(self, features: AccountFeatures, ordinary: np.ndarray | None = None) -> None:
        """Median, MAD and quantiles of :data:`FEATURES` over established accounts ``features``.

        ``ordinary`` : (m,) bool, the accounts the robust mix kept (``CoverageDetector.mix_member``):
        the breadth line (:meth:`median_breadth`) is at most their 90th percentile, when there are
        ``population_min_accounts`` of them. Where distillers are most of the established accounts
        the median of all of them is a sweeper's breadth (`sampled-s43`: 136 of 204 established
        accounts distillers, median 214 effective topics, over every campaign of that stream as a
        group, 178-190), and no campaign nor targeted sweeper is ever broad enough. Their median
        alone was measured and not kept: the trim drops the broader ordinary accounts too, and a
        line that low let 14 enterprise employees and 3 power users through (`sim-s21-traps`,
        `realtext-s4-traps`); capped at the 90th percentile, the line of every world of the full
        matrix is what it was.
        """
        values = {name: getattr(features, name) for name in FEATURES if name != "sweep_margin"}
        breadth: dict[str, float] = {}
        if ordinary is not None and int(np.count_nonzero(ordinary)) >= self.config.population_min_accounts:
            topics = np.asarray(features.effective_topics)
            breadth[ORDINARY_BREADTH] = min(float(np.median(topics)), float(np.quantile(topics[ordinary], 0.9)))
        # The sweep margin reads the baseline's median breadth: the baseline without it comes first.
        self.baseline = robust_baseline(values)
        self.baseline.median.update(breadth)
        self.baseline = robust_baseline(dict(values, sweep_margin=self.sweep_margin(features.sweep_z, features.effective_topics)))
        self.baseline.median.update(breadth)

    def budget_left(self, now_ts: int) -> float:
        """Alerts still allowed in the day ending at ``now_ts`` (inf without a budget)."""
        budget = self.config.alert_budget
        if budget <= 0:
            return float("inf")
        self.recent_alerts = [t for t in self.recent_alerts if t > now_ts - DAY_MS]
        allowed = math.floor(budget * max(self.baseline.accounts, self.config.population_min_accounts) / 10_000.0)
        return max(allowed, 1) - len(self.recent_alerts)

    def spend_budget(self, now_ts: int, alerts: int) -> None:
        if self.config.alert_budget > 0:
            self.recent_alerts.extend([int(now_ts)] * alerts)

    def thresholds(self) -> dict[str, float]:
        cfg, base = self.config, self.baseline
        k, m = cfg.population_mad_k, cfg.population_min_accounts
        return {
            "cross_rate": base.threshold("cross_rate", k, cfg.cross_dup_floor, m),
            "dup_rate": base.threshold("dup_rate", k, 0.0, m),
        }

    def _confirmed(self, now: int, first_seen: int, crossed_ts: int, seen: float, crossed_n: float) -> bool:
        cfg = self.config
        grown = seen / max(crossed_n, 1.0)
        if cfg.burst_growth > 0 and grown >= cfg.burst_growth:
            return True
        return (
            now - first_seen >= cfg.min_span_ms and now - crossed_ts >= cfg.confirm_ms and grown >= 1.0 + cfg.min_growth
        )

    def judge(
        self,
        slots: np.ndarray,
        seen: np.ndarray,
        now_ts: np.ndarray,
        features: AccountFeatures,
        first_ts: np.ndarray | None = None,
        exempt: np.ndarray | None = None,
    ) -> list[Verdict]:
        """Decide, for each touched account, whether it crosses the line now.

        Parameters
        ----------
        slots : (m,) int64 touched accounts
        seen : (m,) int64 requests seen per account
        now_ts : (m,) int64 event time of each account's latest request
        features : the accounts' features (coverage statistics, rates, partners), (m,) each
        first_ts : (m,) int64 event time of each account's first request
        exempt : (m,) bool, accounts never alerted (the allowlist)
        """
        if first_ts is None:
            first_ts = np.full(slots.shape[0], np.iinfo(np.int64).min // 2, dtype=np.int64)
        cfg = self.config
        thr = self.thresholds()
        sweep_margin = self.sweep_margin(features.sweep_z, features.effective_topics)
        if features.drift_z is not None and features.drift_topics is not None:
            # A heavy account against its own history, on the same line and breadth (see coverage.py):
            # what it added since is a sweep even where the rest of its traffic dilutes it.
            sweep_margin = np.maximum(sweep_margin, self.sweep_margin(features.drift_z, features.drift_topics))
        cross_margin = self.cross_margin(features.cross_rate)
        if features.partnered is not None:
            # Near-duplicates of everyone asking about one popular topic are its popularity, not a
            # template: cross-account evidence counts once the account shares prompts with
            # particular accounts beyond what their topics explain (campaigns.py, link pass).
            cross_margin = np.where(features.partnered, cross_margin, 0.0)
        # A duplicate rate is a share with a line from the population, blind to how few requests
        # it is a share of (the sweep statistic is not): it waits for more of them.
        cross_margin = np.where(seen >= cfg.rate_min_requests, cross_margin, 0.0)
        sweep = sweep_margin >= 1.0
        cross = cross_margin >= 1.0
        dup = features.dup_rate >= max(thr["dup_rate"], 1e-9)
        crossing = (sweep | cross) & (seen >= cfg.min_requests)
        pending = self.crossed_ts[slots] >= 0
        holding = np.maximum(sweep_margin, cross_margin) >= cfg.hysteresis

        verdicts: list[Verdict] = []
        # Accounts that clearly stopped crossing lose their pending confirmation.
        self.crossed_ts[slots[pending & ~holding]] = -1
        crossing |= pending & holding & (seen >= cfg.min_requests)
        if exempt is not None:
            crossing &= ~exempt
        granted_n: list[int] = []
        for i in np.flatnonzero(crossing):
            slot = int(slots[i])
            if self.crossed_ts[slot] < 0:
                self.crossed_ts[slot] = now_ts[i]
                self.crossed_n[slot] = seen[i]
                continue
            if not self._confirmed(int(now_ts[i]), int(first_ts[i]), int(self.crossed_ts[slot]), seen[i], self.crossed_n[slot]):
                continue
            if self.alerted_n[slot] and seen[i] < self.alerted_n[slot] * (1.0 + cfg.realert_growth):
                continue
            # Confirmation happens while the line is held (hysteresis), so name what is held.
            swept = sweep_margin[i] >= cfg.hysteresis
            kinds = []
            if cross_margin[i] >= cfg.hysteresis or (swept and dup[i]):
                kinds.append("near_duplicate")
            if swept:
                kinds.append("coverage_sweep")
            margin = max(float(sweep_margin[i]), float(cross_margin[i]))
            evidence = {
                "rarity_nats": round(float(features.rarity[i]), 4),
                "rarity_effect": round(float(features.rarity_effect[i]), 3),
                "rarity_z": round(float(features.rarity_z[i]), 2),
                "sweep_z": round(float(features.sweep_z[i]), 2),
                "sweep_line": round(self.sweep_line(), 2),
                "rarity_within_domains_effect": round(float(features.rarity_cond_effect[i]), 3),
                "effective_topics": round(float(features.effective_topics[i]), 2),
                "spread_vs_population": round(float(features.spread[i]), 3),
                "topics_covered": int(features.topics_covered[i]),
                **self._drift_evidence(features, i),
                "duplicate_rate": round(float(features.dup_rate[i]), 4),
                "cross_account_duplicate_rate": round(float(features.cross_rate[i]), 4),
                "cross_account_threshold": round(thr["cross_rate"], 4),
                "population_accounts": self.baseline.accounts,
                "population_percentile": self._percentiles(features, sweep_margin, i),
                "first_crossed_ts": int(self.crossed_ts[slot]),
                "events_at_first_crossing": int(self.crossed_n[slot]),
            }
            verdicts.append(Verdict(slot, float(self.score_of(margin)), kinds, evidence))
            granted_n.append(int(seen[i]))
        if not verdicts:
            return verdicts
        # The alert budget: the strongest first; the others stay pending and are judged again next tick.
        now = int(now_ts.max())
        room = self.budget_left(now)
        order = sorted(range(len(verdicts)), key=lambda k: (-verdicts[k].score, verdicts[k].slot))
        keep = sorted(order[: int(min(room, len(order)))] if room < len(order) else order)
        self.held_back += len(verdicts) - len(keep)
        self.spend_budget(now, len(keep))
        for k in keep:
            self.alerted_n[verdicts[k].slot] = granted_n[k]
        return [verdicts[k] for k in keep]

    @staticmethod
    def _drift_evidence(features: AccountFeatures, i: int) -> dict[str, float]:
        """The account against its own history, where it has one (see ``CoverageDetector.drift``)."""
        if features.drift_z is None or features.drift_effect is None or features.drift_topics is None:
            return {}
        if features.drift_z[i] == 0.0 and features.drift_topics[i] == 0.0:
            return {}
        return {
            "drift_z": round(float(features.drift_z[i]), 2),
            "drift_rarity_effect": round(float(features.drift_effect[i]), 3),
            "drift_effective_topics": round(float(features.drift_topics[i]), 2),
        }

    def _percentiles(self, features: AccountFeatures, sweep_margin: np.ndarray, i: int) -> dict[str, float]:
        """Where account ``i`` stands among the established accounts of the live population (0-100)."""
        values = {name: float(getattr(features, name)[i]) for name in ("rarity_effect", "spread", "dup_rate", "cross_rate")}
        values["sweep_margin"] = float(sweep_margin[i])
        out = {}
        for name, value in values.items():
            pct = self.baseline.percentile(name, value)
            if pct is not None:
                out[name] = round(pct, 2)
        return out

    def sweep_line(self) -> float:
        """The sweep statistic's line: the z-score ordinary accounts exceed at the set false-alert rate."""
        return sweep_line(self.config.false_alerts_per_10k)

    def sweep_margin(self, sweep_z: Any, effective_topics: Any, line: float | None = None) -> Any:
        """How far coverage statistics are past the sweep line (>= 1: crossed).

        ``sweep_z`` over its line (float or (m,) array); an account narrower
        (``effective_topics``) than the median established account (below
        ``population_min_accounts``: any account) stays below the line whatever its rarity.
        """
        margin = np.asarray(sweep_z, dtype=np.float64) / (self.sweep_line() if line is None else line)
        breadth = self.median_breadth()
        if breadth is not None:
            narrow = np.asarray(effective_topics) < breadth
            margin = np.where(narrow, np.minimum(margin, 0.0), margin)
        return margin

    def median_breadth(self) -> float | None:
        """The median established account's effective number of topics, at most the 90th percentile
        of those the robust mix kept (:meth:`refresh_baseline`); None while fewer than
        ``population_min_accounts`` are established: no account is then called narrow or broad."""
        if self.baseline.accounts < self.config.population_min_accounts:
            return None
        return self.baseline.median.get(ORDINARY_BREADTH, self.baseline.median.get("effective_topics"))

    def cross_margin(self, cross_rate: Any) -> Any:
        """How far cross-account near-duplicate rates are past their line (>= 1: crossed; partners not asked)."""
        return cross_rate / max(self.thresholds()["cross_rate"], 1e-9)

    def judge_campaign(
        self,
        campaign_id: str,
        members: np.ndarray,
        stats: dict[str, float],
        volume: float,
        now_ts: int,
        first_ts: int | None = None,
        line: float | None = None,
        member_span_ms: int | None = None,
        alertable: np.ndarray | None = None,
    ) -> CampaignVerdict | None:
        """Apply the sweep and duplicate lines and the persistence rule to a linked group as one actor.

        Parameters
        ----------
        members : (m,) int64 slots; stats : the group's coverage statistics (and
        ``cross_rate``, its members' cross-account near-duplicate rate, when known)
        volume : requests the members have sent together; now_ts : event time now
        line : the group's sweep line (default: an account's)
        member_span_ms : how long the median member has been active: persistence is asked of
            the members too, or a few benchmark runs of one template (each a burst) that cover
            different subjects would pass for a campaign dividing its work
        alertable : (m,) bool, the members that may be alerted now when the group crosses on its
            sweep (all when None; all when it crosses on shared prompts, which every member sends):
            the others stay linked and are alerted once they qualify
        """
        cfg = self.config
        sweep = float(self.sweep_margin(stats["sweep_z"], stats["effective_topics"], line))
        # A group that shares prompts among itself at the rate an account would be alerted for.
        dup = float(stats.get("cross_rate", 0.0)) / max(self.thresholds()["cross_rate"], 1e-9)
        margin = max(sweep, dup)
        track = self.campaigns.get(campaign_id)
        if margin < (cfg.hysteresis if track is not None else 1.0):
            if track is not None and not track.confirmed:
                del self.campaigns[campaign_id]
            return None
        if track is None:
            self.campaigns[campaign_id] = _CampaignTrack(now_ts, volume)
            return None
        if not track.confirmed:
            first = track.crossed_ts - cfg.min_span_ms if first_ts is None else first_ts
            sustained = member_span_ms is None or member_span_ms >= cfg.min_span_ms
            track.confirmed = sustained and self._confirmed(now_ts, first, track.crossed_ts, volume, track.crossed_n)
        if not track.confirmed:
            return None
        if alertable is not None and dup < 1.0:
            members = members[alertable]
        new = np.array([m for m in members.tolist() if m not in track.alerted], dtype=np.int64)
        room = self.budget_left(now_ts)
        if new.size > room:
            self.held_back += int(new.size - max(room, 0))
            new = new[: int(max(room, 0))]
        if new.size == 0:
            return None
        self.spend_budget(now_ts, int(new.size))
        track.alerted.update(new.tolist())
        # A group's sweep is what "campaign" means; sharing prompts across the group is named too.
        kinds = ["campaign"] + (["near_duplicate"] if dup >= 1.0 else [])
        links = {k[len("links_"):]: int(v) for k, v in stats.items() if k.startswith("links_") and v}
        evidence = {
            "campaign_members": int(stats["members"]),
            "campaign_rarity_effect": round(stats["rarity_effect"], 3),
            "campaign_rarity_z": round(stats["rarity_z"], 2),
            "campaign_sweep_z": round(stats["sweep_z"], 2),
            "campaign_effective_topics": round(stats["effective_topics"], 2),
            "campaign_spread_vs_population": round(stats["spread"], 3),
            "campaign_complementarity": round(stats["complementarity"], 2),
            "campaign_requests": int(volume),
            "campaign_cross_account_duplicate_rate": round(float(stats.get("cross_rate", 0.0)), 4),
            "campaign_links": links,
            # Each link's strength against chance: the share of live accounts holding the shared
            # attribute value, the log10 chance of the shared session boundaries.
            **{f"campaign_{k}": round(float(stats[k]), 4) for k in ("attribute_share", "timing_log10_chance") if k in stats},
            "first_crossed_ts": int(track.crossed_ts),
        }
        return CampaignVerdict(campaign_id, new, float(self.score_of(margin)), evidence, kinds)
