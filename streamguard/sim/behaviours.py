"""Account behaviours: who sends what, when.

Each behaviour draws, for one account, the latent description of its requests:
event time (epoch ms), subtopic, style (template / system prompt), context
(batch corpus), content id and text id. ``world.embed_requests`` turns those
into embeddings later, so everything here is cheap integer bookkeeping.

Per-account volumes are fixed; ``scale`` multiplies account counts only (see
``plan_population``). A sampled world (``sim/sampled.py``) also sets the
builder's ``Habits``: per-kind volume multipliers and how strongly templates
and system prompts shape a prompt's embedding; the default ``Habits`` change
nothing and draw nothing.

The kinds, ``Account``, ``Habits`` and ``TrafficBuilder`` are in
``accounts.py``; the time and content draws the behaviours share with
``evasion.py`` and ``traps.py`` in ``draw.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from streamguard.sim.accounts import KINDS, Account, TrafficBuilder
from streamguard.sim.draw import (
    MS_PER_DAY,
    MS_PER_H,
    MS_PER_MIN,
    MS_PER_S,
    _fresh,
    _human_clock,
    _log_skewed,
    _member_slices,
    _none,
    _popular_subset,
    _sessions,
    _sweep,
    _window,
    _with_retries,
    diurnal_times,
)

__all__ = [
    "PopulationPlan",
    "generate_population",
    "plan_population",
]


# ---------------------------------------------------------------------------
# benign behaviours


def casual(b: TrafficBuilder) -> None:
    """3-100 requests on 1-3 popular subtopics, in a few sessions."""
    rng = b.rng
    v = b.habits.volume.get("casual", 1.0)
    n = int(np.clip(round(v * rng.lognormal(np.log(11.0), 0.9)), 3, max(3, round(100 * v))))
    n_retry = int(rng.binomial(n - 1, 0.05))
    n0 = n - n_retry
    subs, pw = _popular_subset(b, int(rng.integers(1, 4)), 1.0)
    sub = subs[rng.choice(subs.shape[0], size=n0, p=pw)]
    peak, amp = _human_clock(rng)
    n_sess = min(n0, 1 + int(rng.poisson(n0 / 10.0)))
    starts = diurnal_times(rng, n_sess, b.t0, b.t1, peak, amp)
    ts = _sessions(rng, n0, starts, rng.uniform(20, 180) * MS_PER_S, b.t1)
    sub, content, text = _fresh(b, sub, p_famous=float(rng.beta(1.0, 15.0)), p_para=0.06)
    rows = _with_retries(b, n_retry, ts, sub, _none(n0), _none(n0), content, text)
    org = b.company_org() if rng.random() < 0.1 else None
    b.emit(Account("casual", org_id=org), *rows)


def power_user(b: TrafficBuilder) -> None:
    """200-3,000 requests, 1-3 personal templates, 3-12 subtopics, daily sessions."""
    rng = b.rng
    n = b.volume("power_user", _log_skewed(rng, 200, 3000, 3.0), 20)
    n_retry = int(rng.binomial(n, 0.03))
    n0 = n - n_retry
    subs, pw = _popular_subset(b, int(rng.integers(3, 13)), 0.7)
    sub = subs[rng.choice(subs.shape[0], size=n0, p=pw)]
    k = int(rng.integers(1, 4))
    tpl = b.new_styles(rng.uniform(0.10, 0.35, size=k), "personal_template")
    use = rng.random(n0) < rng.uniform(0.3, 0.9)
    style = np.where(use, tpl[rng.choice(k, size=n0, p=rng.dirichlet(np.ones(k)))], -1)

    # One working session on most days, starting a couple of hours before the
    # user's peak, at a time that wanders by ~45 min from day to day.
    peak, _ = _human_clock(rng)
    day0 = (b.t0 // MS_PER_DAY) * MS_PER_DAY
    days = np.arange(day0, b.t1, MS_PER_DAY, dtype=np.int64)
    wander = rng.normal(0, 45 * MS_PER_MIN, size=days.shape[0]).astype(np.int64)
    starts = days + int((peak - 2.0) * MS_PER_H) + wander
    starts = starts[(starts >= b.t0) & (starts < b.t1)]
    if starts.shape[0] == 0:
        starts = np.array([b.t0], np.int64)
    active = rng.random(starts.shape[0]) < rng.uniform(0.6, 1.0)
    active[rng.integers(starts.shape[0])] = True
    ts = _sessions(rng, n0, starts[active], rng.uniform(10, 60) * MS_PER_S, b.t1)

    sub, content, text = _fresh(b, sub, p_famous=0.01, p_para=0.05)
    rows = _with_retries(b, n_retry, ts, sub, style, _none(n0), content, text)
    org = b.company_org() if rng.random() < 0.4 else None
    b.emit(Account("power_user", org_id=org), *rows)


def product(b: TrafficBuilder) -> None:
    """5,000-25,000 requests: one system prompt, the population's topic mix, steady diurnal rate."""
    rng = b.rng
    n = b.volume("product", _log_skewed(rng, 5000, 25000, 2.5), 100)
    n_retry = int(rng.binomial(n, 0.02))
    n0 = n - n_retry
    sysp = b.new_styles(rng.uniform(0.2, 0.4), "system_prompt")[0]
    peak, _ = _human_clock(rng)
    ts = diurnal_times(rng, n0, b.t0, b.t1, peak, float(rng.uniform(0.3, 0.7)))
    sub = rng.choice(b.world.n_subtopics, size=n0, p=b.world.subtopic_pop)
    sub, content, text = _fresh(b, sub, p_famous=0.03, p_para=0.03)
    style = np.full(n0, sysp, np.int32)
    rows = _with_retries(b, n_retry, ts, sub, style, _none(n0), content, text)
    b.emit(Account("product", org_id=b.new_org()), *rows)


def batch_job(b: TrafficBuilder) -> None:
    """500-5,000 requests in 1-6 h: one template and one corpus over 1-4 subtopics.

    A quarter of the jobs are partly re-run later (same documents, verbatim):
    benign within-account duplicates.
    """
    rng = b.rng
    n = b.volume("batch_job", _log_skewed(rng, 500, 5000, 2.0), 50)
    rerun = rng.random() < 0.25
    n_orig = int(np.ceil(n / (1.0 + rng.uniform(0.2, 1.0)))) if rerun else n
    n_retry = int(rng.binomial(n_orig, 0.01))
    n0 = n_orig - n_retry
    subs, pw = _popular_subset(b, int(rng.integers(1, 5)), 1.5)
    sub = subs[rng.choice(subs.shape[0], size=n0, p=pw)]
    tpl = b.new_styles(rng.uniform(0.25, 0.40), "batch_template")[0]
    # The corpus keeps to what the template leaves (a no-op at default strengths).
    ctx_share = min(float(rng.uniform(0.15, 0.30)), 0.95 - b.catalog.style_strength[tpl])
    ctx = b.catalog.new_contexts(ctx_share)[0]
    a, z = _window(rng, b.t0, b.t1, rng.uniform(1, 6) * MS_PER_H)
    ts = np.sort(rng.integers(a, z + 1, size=n0))
    sub, content, text = _fresh(b, sub)
    rows = _with_retries(b, n_retry, ts, sub, np.full(n0, tpl), np.full(n0, ctx), content, text)
    if rerun:
        k = n - n_orig
        rts, rsub, rst, rcx, rco, rtx = (r[:k] for r in rows)
        span = int(rts.max() - rts.min()) if k else 0
        at = min(int(z + rng.uniform(1, 12) * MS_PER_H), b.t1 - 1 - span)
        rts = at + (rts - rts.min())
        rows = tuple(np.concatenate([r, s]) for r, s in zip(rows, (rts, rsub, rst, rcx, rco, rtx)))
    org = b.company_org() if rng.random() < 0.7 else None
    b.emit(Account("batch_job", org_id=org), *rows)


@dataclass(frozen=True)
class BenchmarkSuite:
    """One evaluation suite: fixed prompts, one template, broad coverage.

    Attributes
    ----------
    subtopic : (m,) int32
    content, text : (m,) int64
        Shared by every account running the suite.
    style : int
        The suite's prompt template.
    """

    subtopic: np.ndarray
    content: np.ndarray
    text: np.ndarray
    style: int


def benchmark_suite(b: TrafficBuilder) -> BenchmarkSuite:
    """Every subtopic of the world, or a broad subset touching every domain, 1-3 items each."""
    rng, w = b.rng, b.world
    if rng.random() < 0.5:
        cells = np.arange(w.n_subtopics, dtype=np.int32)
    else:
        keep = rng.random(w.n_subtopics) < rng.uniform(0.6, 0.9)
        for d in range(w.n_domains):
            own = np.flatnonzero(w.subtopic_domain == d)
            if not keep[own].any():
                keep[rng.choice(own)] = True
        cells = np.flatnonzero(keep).astype(np.int32)
    reps = rng.integers(1, int(rng.integers(1, 4)) + 1, size=cells.shape[0])
    sub = rng.permutation(np.repeat(cells, reps)).astype(np.int32)
    m = sub.shape[0]
    style = int(b.new_styles(rng.uniform(0.10, 0.30), "benchmark_template")[0])
    return BenchmarkSuite(sub, b.catalog.new_content(m), b.catalog.new_text(m), style)


def benchmark(b: TrafficBuilder, suite: BenchmarkSuite) -> None:
    """Run ``suite`` once, in order, in one burst of 15-110 minutes."""
    rng = b.rng
    m = suite.subtopic.shape[0]
    a, z = _window(rng, b.t0, b.t1, rng.uniform(15, 110) * MS_PER_MIN)
    step = (z - a) / m
    ts = (a + np.arange(m) * step + rng.random(m) * step).astype(np.int64)
    org = b.company_org() if rng.random() < 0.6 else None
    b.emit(
        Account("benchmark", org_id=org),
        ts,
        suite.subtopic,
        np.full(m, suite.style, np.int32),
        _none(m),
        suite.content,
        suite.text,
    )


# ---------------------------------------------------------------------------
# distillers


def _bot_times(b: TrafficBuilder, n: int, a: int, z: int) -> np.ndarray:
    """Times of an automated client: near-flat rate over ``[a, z)``."""
    return diurnal_times(b.rng, n, a, z, float(b.rng.uniform(0, 24)), float(b.rng.uniform(0.0, 0.4)))


def _sweep_styles(b: TrafficBuilder, n: int, k: int, kind: str) -> np.ndarray:
    """``k`` fresh templates of moderate strength, one per request at random."""
    tpl = b.new_styles(b.rng.uniform(0.12, 0.35, size=k), kind)
    return tpl[b.rng.choice(k, size=n, p=b.rng.dirichlet(np.ones(k)))]


def _distiller_org(b: TrafficBuilder) -> str | None:
    return b.new_org() if b.rng.random() < 0.2 else None


def template_sweeper(b: TrafficBuilder) -> None:
    """1,500-6,000 templated requests over 1-3 days, even over all subtopics."""
    rng = b.rng
    n = b.volume("template_sweeper", _log_skewed(rng, 1500, 6000, 3.0), 50)
    a, z = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    ts = _bot_times(b, n, a, z)
    sub = _sweep(rng, np.arange(b.world.n_subtopics, dtype=np.int32), n)
    style = _sweep_styles(b, n, int(rng.integers(1, 4)), "sweep_template")
    sub, content, text = _fresh(b, sub)
    b.emit(Account("template_sweeper", org_id=_distiller_org(b)), ts, sub, style, _none(n), content, text)


def paraphrase_sweeper(b: TrafficBuilder) -> None:
    """Like the template sweeper, but every prompt freshly worded: no template, no repeats."""
    rng = b.rng
    n = b.volume("paraphrase_sweeper", _log_skewed(rng, 1500, 6000, 3.0), 50)
    a, z = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    ts = _bot_times(b, n, a, z)
    sub = _sweep(rng, np.arange(b.world.n_subtopics, dtype=np.int32), n)
    sub, content, text = _fresh(b, sub)
    acct = Account("paraphrase_sweeper", org_id=_distiller_org(b))
    b.emit(acct, ts, sub, _none(n), _none(n), content, text)


def targeted_sweeper(b: TrafficBuilder) -> None:
    """1,000-4,000 requests even over every subtopic of 2-3 domains; half templated."""
    rng, w = b.rng, b.world
    n = b.volume("targeted_sweeper", _log_skewed(rng, 1000, 4000, 3.0), 50)
    domains = rng.choice(w.n_domains, size=int(rng.integers(2, 4)), replace=False)
    a, z = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    ts = _bot_times(b, n, a, z)
    sub = _sweep(rng, w.subtopics_of(domains), n)
    style = _sweep_styles(b, n, int(rng.integers(1, 3)), "sweep_template") if rng.random() < 0.5 else _none(n)
    sub, content, text = _fresh(b, sub)
    b.emit(Account("targeted_sweeper", org_id=_distiller_org(b)), ts, sub, style, _none(n), content, text)


def slow_sweeper(b: TrafficBuilder) -> None:
    """300-1,000 requests spread evenly over the whole period, all subtopics; half templated."""
    rng = b.rng
    n = b.volume("slow_sweeper", int(rng.integers(300, 1001)), 20)
    # Stratified: one request per equal slice of the period, at a random point in it.
    ts = (b.t0 + (np.arange(n) + rng.random(n)) * ((b.t1 - b.t0) / n)).astype(np.int64)
    sub = _sweep(rng, np.arange(b.world.n_subtopics, dtype=np.int32), n)
    style = _sweep_styles(b, n, 1, "sweep_template") if rng.random() < 0.5 else _none(n)
    sub, content, text = _fresh(b, sub)
    b.emit(Account("slow_sweeper", org_id=_distiller_org(b)), ts, sub, style, _none(n), content, text)


def campaign(b: TrafficBuilder, campaign_id: str, n_members: int, shared_org: bool) -> None:
    """A coordinated campaign: members split the subtopics, share templates and timing.

    Each member covers one slice of a random partition of all subtopics plus
    a quarter of the next slice (so slices overlap and together cover
    everything), sends 200-1,150 requests, mostly with the campaign's 1-3
    templates, within a sub-window of the campaign's 1-3 day window.
    """
    rng, w = b.rng, b.world
    k = int(rng.integers(1, 4))
    tpl = b.new_styles(rng.uniform(0.12, 0.35, size=k), "campaign_template")
    tpl_p = rng.dirichlet(np.ones(k))
    org = b.new_org() if shared_org else None
    ca, cz = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    peak = float(rng.uniform(0, 24))  # one operator, one clock
    amp = float(rng.uniform(0.1, 0.5))
    slices = _member_slices(rng, w.n_subtopics, n_members)
    for i in range(n_members):
        nxt = slices[(i + 1) % n_members]
        cells = np.concatenate([slices[i], nxt[: max(1, nxt.shape[0] // 4)]])
        n = b.volume("campaign_member", _log_skewed(rng, 200, 1150, 1.5), 20)
        a, z = _window(rng, ca, cz, (cz - ca) * rng.uniform(0.3, 0.8))
        ts = diurnal_times(rng, n, a, z, peak, amp)
        sub = _sweep(rng, cells, n)
        style = np.where(rng.random(n) < rng.uniform(0.85, 1.0), tpl[rng.choice(k, size=n, p=tpl_p)], -1)
        sub, content, text = _fresh(b, sub)
        b.emit(
            Account("campaign_member", campaign=campaign_id, org_id=org),
            ts,
            sub,
            style,
            _none(n),
            content,
            text,
        )


# ---------------------------------------------------------------------------
# population


@dataclass(frozen=True)
class PopulationPlan:
    """How many accounts of each kind, and the campaigns' sizes."""

    counts: dict[str, int]
    campaign_sizes: tuple[int, ...]


def plan_population(rng: np.random.Generator, scale: float) -> PopulationPlan:
    """Account counts for ``scale``.

    At scale 1 there are ~1,400-1,900 ordinary accounts plus two campaigns of
    20-40 members. Every kind has at least one account at any scale > 0
    (benchmarks at least two, so that a suite can be run twice); campaign
    sizes shrink with scale below 1 (but keep >= 6 members).
    """
    n_base = max(20, int(round(rng.integers(1400, 1901) * scale)))
    c: dict[str, int] = {}
    c["product"] = max(1, int(round(rng.integers(3, 6) * scale)))
    c["power_user"] = max(1, int(round(0.04 * n_base)))
    c["batch_job"] = max(1, int(round(0.01 * n_base)))
    c["benchmark"] = max(2, int(round(0.005 * n_base)))
    n_dist = max(4, int(round(rng.uniform(0.02, 0.026) * n_base)))
    c["template_sweeper"] = max(1, int(round(0.25 * n_dist)))
    c["paraphrase_sweeper"] = max(1, int(round(0.2 * n_dist)))
    c["targeted_sweeper"] = max(1, int(round(0.25 * n_dist)))
    fast = c["template_sweeper"] + c["paraphrase_sweeper"] + c["targeted_sweeper"]
    c["slow_sweeper"] = max(1, n_dist - fast)
    c["casual"] = max(1, n_base - sum(c.values()))
    n_camp = max(1, int(round(2 * scale)))
    shrink = min(1.0, max(0.3, scale))
    sizes = tuple(max(6, int(round(rng.integers(20, 41) * shrink))) for _ in range(n_camp))
    c["campaign_member"] = int(sum(sizes))
    return PopulationPlan(counts={k: c[k] for k in KINDS}, campaign_sizes=sizes)


def generate_population(b: TrafficBuilder, plan: PopulationPlan) -> None:
    """Generate every account of ``plan`` into ``b``."""
    rng = b.rng
    b.company_orgs = [b.new_org() for _ in range(max(2, sum(plan.counts.values()) // 30))]
    for kind, make in (("casual", casual), ("power_user", power_user), ("product", product), ("batch_job", batch_job)):
        for _ in range(plan.counts[kind]):
            make(b)
    # Fewer suites than benchmark accounts: popular suites get run by several.
    n_bench = plan.counts["benchmark"]
    suites = [benchmark_suite(b) for _ in range(max(1, n_bench // 3))]
    for i in range(n_bench):
        benchmark(b, suites[i] if i < len(suites) else suites[int(rng.integers(len(suites)))])
    for kind, make in (
        ("template_sweeper", template_sweeper),
        ("paraphrase_sweeper", paraphrase_sweeper),
        ("targeted_sweeper", targeted_sweeper),
        ("slow_sweeper", slow_sweeper),
    ):
        for _ in range(plan.counts[kind]):
            make(b)
    for i, size in enumerate(plan.campaign_sizes):
        # Alternate: even campaigns share one billing org, odd ones have none.
        campaign(b, f"campaign-{i}", size, shared_org=(i % 2 == 0))
