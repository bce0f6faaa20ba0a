"""Sampled worlds: the seed draws the family of the world, not only the world.

In the default mode every seed draws its world from one narrow family (12-20
domains, unrelated prompts at cosine ~0.15, today's mix of account kinds, 3
days). A detector tuned on that family can pass its tests and fail on the
next world. ``SimConfig(sample_world=True)`` first draws, from the seed, a
``WorldDraw`` from wide but sensible ranges (the module constants below):

- geometry: the common direction's share (the cosine of unrelated prompts),
  an anisotropic spectrum (a few directions with a large share of the
  variance), numbers of domains and subtopics, topic tightness, popularity
  skews, per-request noise;
- population: the mix of account kinds, the share of distillers, the number
  and size of campaigns, a population multiplier on top of ``scale``;
- habits: per-kind volume multipliers, the strength of templates and system
  prompts (per world, and per account);
- the span of the stream, unless the caller fixes ``days``.

Every kind, and every benign trap (products, batch jobs, benchmarks, power
users with personal templates), is present in every world.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamguard.sim.accounts import (
    DISTILLER_KINDS,
    KINDS,
    Habits,
)
from streamguard.sim.behaviours import PopulationPlan
from streamguard.sim.world import Geometry, World

__all__ = [
    "WorldDraw",
    "describe",
    "draw_world",
    "plan_sampled_population",
]

# Ranges (inclusive for counts). Log-uniform where marked: the quantity
# spans an order of magnitude or more.
DAYS = (4.0 / 24.0, 5.0)  # log-uniform
POPULATION = (0.15, 12.0)  # log-uniform; x 1,400-1,900 ordinary accounts at scale 1
N_DOMAINS = (6, 40)
SUBTOPICS_PER_DOMAIN = (3, 25)  # a world draws its own (low, high) inside this
ZIPF_DOMAIN = (0.3, 1.6)
ZIPF_SUBTOPIC = (0.3, 1.5)
ZIPF_FAMOUS = (0.6, 1.4)
COMMON = (0.05, 0.40)  # cosine of unrelated prompts
DOMAIN = (0.05, 0.22)
SUBTOPIC_CENTER = (0.14, 0.42)  # topic tightness: a world's mean subtopic share ...
SUBTOPIC_HALF_WIDTH = (0.0, 0.06)  # ... and how much its subtopics differ
SURFACE = (0.06, 0.22)
NOISE_LOW = (0.02, 0.12)
NOISE_RATIO = (1.2, 2.0)  # high end of a world's noise range / its low end
N_FAMOUS = (50, 800)  # log-uniform
N_DOMINANT = (0, 8)  # capped at dim // 4 by build_world
P_ISOTROPIC = 0.2  # share of worlds with no dominant directions
DOMINANT_SHARE = (0.05, 0.4)
# Today's shares of the rarer benign kinds among ordinary accounts; a world
# multiplies each by exp(N(0, KIND_SIGMA)), clipped to KIND_FACTOR, and
# casual users take the rest. A Dirichlet with one concentration cannot do
# this: it would hold a 0.4% kind far looser than a 92% one.
BENIGN_SHARE = {"power_user": 0.04, "product": 0.0025, "batch_job": 0.01, "benchmark": 0.005}
KIND_SIGMA = 0.8
KIND_FACTOR = (0.2, 5.0)
DISTILLER_SHARE = (0.005, 0.06)  # log-uniform; single-account distillers among ordinary accounts
SWEEPER_SPLIT = {"template_sweeper": 0.25, "paraphrase_sweeper": 0.2, "targeted_sweeper": 0.25, "slow_sweeper": 0.3}
SWEEPER_CONCENTRATION = 8.0  # Dirichlet around SWEEPER_SPLIT
CAMPAIGN_RATE = (0.5, 4.0)  # log-uniform; campaigns per 1,650 ordinary accounts
CAMPAIGN_SIZE = (8.0, 120.0)  # log-uniform; a world's median campaign size
CAMPAIGN_SIGMA = 0.35  # log-spread of sizes around that median
CAMPAIGN_MAX_SHARE = 0.10  # of ordinary accounts, per campaign
CAMPAIGNS_MAX_SHARE = 0.15  # of ordinary accounts, all campaigns together
MIN_CAMPAIGN = 6
VOLUME_LEVEL = (0.4, 2.5)  # log-uniform; one factor on every kind's request counts
VOLUME_JITTER = (0.7, 1.4)  # log-uniform; per kind on top
TEMPLATE_ODDS = (0.3, 4.0)  # log-uniform; see Habits.template_odds
TEMPLATE_SPREAD = (0.1, 0.6)

# How a kind's volume follows the span. Default volumes are for 3 days.
# Always-on kinds send at a rate, so their volume follows the span; sweepers
# and campaigns work in 1-3 day windows, cut short by a shorter stream;
# casual users come back less often in a shorter stream; batch jobs and
# benchmarks are bursts of hours or minutes.
_ALWAYS_ON = ("product", "power_user", "slow_sweeper")
_WINDOWED = ("template_sweeper", "paraphrase_sweeper", "targeted_sweeper", "campaign_member")
_DEFAULT_DAYS = 3.0
_MEAN_WINDOW_DAYS = 2.0
_BASE_ACCOUNTS = 1650.0  # ordinary accounts at scale 1 in the default mode


@dataclass(frozen=True)
class WorldDraw:
    """The family one sampled world is drawn from.

    Attributes
    ----------
    geometry : Geometry
        Ranges ``build_world`` draws the topic world and embedding geometry from.
    habits : Habits
        Per-kind volume multipliers and template strength.
    days : float
        Span of the stream.
    population : float
        Multiplier of the number of accounts, on top of ``scale``.
    kind_share : dict of str to float
        Share of each kind among ordinary accounts (every kind but
        ``campaign_member``); sums to 1.
    campaign_rate : float
        Campaigns per 1,650 ordinary accounts.
    campaign_size : float
        Median campaign size (before shrinking at small scales).
    """

    geometry: Geometry
    habits: Habits
    days: float
    population: float
    kind_share: dict[str, float]
    campaign_rate: float
    campaign_size: float


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


def _point(x: float) -> tuple[float, float]:
    return (x, x)


def _geometry(rng: np.random.Generator) -> Geometry:
    n_domains = int(rng.integers(N_DOMAINS[0], N_DOMAINS[1] + 1))
    sub_lo = int(rng.integers(SUBTOPICS_PER_DOMAIN[0], 13))
    sub_hi = int(rng.integers(sub_lo, SUBTOPICS_PER_DOMAIN[1] + 1))
    center = float(rng.uniform(*SUBTOPIC_CENTER))
    half = float(rng.uniform(*SUBTOPIC_HALF_WIDTH))
    noise_lo = float(rng.uniform(*NOISE_LOW))
    n_famous = int(round(_log_uniform(rng, *N_FAMOUS)))
    isotropic = rng.random() < P_ISOTROPIC
    n_dominant = 0 if isotropic else int(rng.integers(1, N_DOMINANT[1] + 1))
    dominant_share = 0.0 if isotropic else float(rng.uniform(*DOMINANT_SHARE))
    return Geometry(
        n_domains=(n_domains, n_domains),
        subtopics_per_domain=(sub_lo, sub_hi),
        zipf_domain=_point(float(rng.uniform(*ZIPF_DOMAIN))),
        zipf_subtopic=_point(float(rng.uniform(*ZIPF_SUBTOPIC))),
        common=_point(float(rng.uniform(*COMMON))),
        domain=_point(float(rng.uniform(*DOMAIN))),
        subtopic=(center - half, center + half),
        surface=_point(float(rng.uniform(*SURFACE))),
        noise=(noise_lo, noise_lo * float(rng.uniform(*NOISE_RATIO))),
        n_famous=(n_famous, n_famous),
        zipf_famous=_point(float(rng.uniform(*ZIPF_FAMOUS))),
        n_dominant=n_dominant,
        dominant_share=dominant_share,
    )


def _kind_share(rng: np.random.Generator) -> dict[str, float]:
    share: dict[str, float] = {}
    lo, hi = np.log(KIND_FACTOR[0]), np.log(KIND_FACTOR[1])
    for kind, base in BENIGN_SHARE.items():
        share[kind] = base * float(np.exp(np.clip(KIND_SIGMA * rng.standard_normal(), lo, hi)))
    distillers = _log_uniform(rng, *DISTILLER_SHARE)
    split = rng.dirichlet(SWEEPER_CONCENTRATION * np.array(list(SWEEPER_SPLIT.values())))
    for kind, part in zip(SWEEPER_SPLIT, split):
        share[kind] = distillers * float(part)
    share["casual"] = 1.0 - sum(share.values())
    return {k: share[k] for k in KINDS if k != "campaign_member"}


def _habits(rng: np.random.Generator, days: float) -> Habits:
    level = _log_uniform(rng, *VOLUME_LEVEL)
    volume = {}
    for kind in KINDS:
        if kind == "benchmark":  # a benchmark runs its suite: the world sets its size
            continue
        v = level * _log_uniform(rng, *VOLUME_JITTER)
        if kind in _ALWAYS_ON:
            v *= days / _DEFAULT_DAYS
        elif kind in _WINDOWED:
            v *= min(1.0, days / _MEAN_WINDOW_DAYS)
        elif kind == "casual":
            v *= min(1.0, np.sqrt(days / _DEFAULT_DAYS))
        volume[kind] = float(v)
    return Habits(
        volume=volume,
        template_odds=_log_uniform(rng, *TEMPLATE_ODDS),
        template_spread=float(rng.uniform(*TEMPLATE_SPREAD)),
    )


def draw_world(rng: np.random.Generator, days: float | None = None) -> WorldDraw:
    """Draw the family of one world.

    Parameters
    ----------
    rng : numpy.random.Generator
        A stream of its own, so the draw depends on the seed alone.
    days : float, optional
        The span, if the caller fixed it; drawn otherwise.

    Returns
    -------
    WorldDraw
    """
    span = _log_uniform(rng, *DAYS)
    if days is not None:
        span = float(days)
    geometry = _geometry(rng)
    return WorldDraw(
        geometry=geometry,
        habits=_habits(rng, span),
        days=span,
        population=_log_uniform(rng, *POPULATION),
        kind_share=_kind_share(rng),
        campaign_rate=_log_uniform(rng, *CAMPAIGN_RATE),
        campaign_size=_log_uniform(rng, *CAMPAIGN_SIZE),
    )


def plan_sampled_population(rng: np.random.Generator, scale: float, draw: WorldDraw) -> PopulationPlan:
    """Account counts of a sampled world.

    ``scale * draw.population`` multiplies the ordinary accounts (at least
    20); every kind has at least one account (benchmarks two, so that a
    suite can be run twice) and at least one campaign of at least 6 members.
    Campaigns shrink at small effective scales, as in ``plan_population``,
    and together stay within a share of the ordinary accounts.
    """
    effective = scale * draw.population
    n_base = max(20, int(round(rng.integers(1400, 1901) * effective)))
    c: dict[str, int] = {}
    for kind, share in draw.kind_share.items():
        if kind != "casual":
            c[kind] = max(2 if kind == "benchmark" else 1, int(round(share * n_base)))
    c["casual"] = max(1, n_base - sum(c.values()))

    n_camp = max(1, int(round(draw.campaign_rate * n_base / _BASE_ACCOUNTS)))
    shrink = min(1.0, max(0.3, effective))
    largest = max(MIN_CAMPAIGN, int(round(CAMPAIGN_MAX_SHARE * n_base)))
    sizes = [
        min(largest, max(MIN_CAMPAIGN, int(round(draw.campaign_size * shrink * np.exp(CAMPAIGN_SIGMA * z)))))
        for z in rng.standard_normal(n_camp)
    ]
    while len(sizes) > 1 and sum(sizes) > max(MIN_CAMPAIGN, CAMPAIGNS_MAX_SHARE * n_base):
        sizes.pop()
    c["campaign_member"] = int(sum(sizes))
    return PopulationPlan(counts={k: c[k] for k in KINDS}, campaign_sizes=tuple(sizes))


def describe(draw: WorldDraw, world: World, plan: PopulationPlan) -> dict:
    """The drawn world's parameters as plain JSON values, for the labels' ``"world"`` key.

    Geometry is reported as realised in ``world`` (e.g. the subtopics per
    domain it got, the effective number of dominant directions).
    """
    w = world.weights
    per_domain = np.bincount(world.subtopic_domain, minlength=world.n_domains)
    g = draw.geometry
    n_ordinary = sum(n for k, n in plan.counts.items() if k != "campaign_member")
    return {
        "sampled": True,
        "days": draw.days,
        "population": draw.population,
        "geometry": {
            "n_domains": world.n_domains,
            "n_subtopics": world.n_subtopics,
            "subtopics_per_domain": [int(per_domain.min()), int(per_domain.max())],
            "zipf_domain": world.zipf_domain,
            "zipf_subtopic": world.zipf_subtopic,
            "zipf_famous": g.zipf_famous[0],
            "common": w.common,
            "domain": w.domain,
            "subtopic": [float(w.subtopic.min()), float(w.subtopic.max())],
            "surface": w.surface,
            "noise": [w.noise_lo, w.noise_hi],
            "n_famous": int(world.famous_pop.shape[0]),
            "dominant_directions": int(world.dominant.shape[0]),
            "dominant_share": g.dominant_share if world.dominant.shape[0] else 0.0,
        },
        "kind_share": dict(draw.kind_share),
        "distiller_share": float(sum(draw.kind_share[k] for k in DISTILLER_KINDS if k in draw.kind_share)),
        "ordinary_accounts": int(n_ordinary),
        "campaign_sizes": list(plan.campaign_sizes),
        "volume": dict(draw.habits.volume),
        "template_odds": draw.habits.template_odds,
        "template_spread": draw.habits.template_spread,
    }
