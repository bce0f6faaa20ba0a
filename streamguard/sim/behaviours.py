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
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamguard.sim.world import Catalog, World

__all__ = [
    "BENIGN_KINDS",
    "DISTILLER_KINDS",
    "KINDS",
    "Account",
    "Habits",
    "PopulationPlan",
    "TrafficBuilder",
    "generate_population",
    "plan_population",
]

BENIGN_KINDS: tuple[str, ...] = ("casual", "power_user", "product", "batch_job", "benchmark")
DISTILLER_KINDS: tuple[str, ...] = (
    "template_sweeper",
    "paraphrase_sweeper",
    "targeted_sweeper",
    "slow_sweeper",
    "campaign_member",
)
KINDS: tuple[str, ...] = BENIGN_KINDS + DISTILLER_KINDS
EVASION_PREFIX = "evade_"
"""Kinds of the evasion scenarios (``sim/evasion.py``) start with this; they are distillers."""

MS_PER_S = 1_000
MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
_DIURNAL_BIN_MS = 10 * MS_PER_MIN

# Time zones of human users: (low, high) UTC offset in hours, and weight.
_REGIONS = ((-8.0, -5.0, 0.4), (0.0, 2.0, 0.3), (5.5, 9.0, 0.3))


@dataclass
class Account:
    """One account's ground truth."""

    kind: str
    campaign: str | None = None
    org_id: str | None = None
    account_id: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    """Request metadata the account shares on purpose: attribute key -> symbolic
    group name (``attributes.py`` maps each name to one pseudonymised value);
    keys not given follow the account's kind."""

    @property
    def label(self) -> str:
        """``"distiller"`` or ``"benign"``."""
        distiller = self.kind in DISTILLER_KINDS or self.kind.startswith(EVASION_PREFIX)
        return "distiller" if distiller else "benign"


@dataclass(frozen=True)
class Habits:
    """How the accounts of one world behave, beyond what their kind fixes.

    The defaults are the default mode's habits: they change no volume and no
    template strength, and draw nothing from the accounts' stream.

    Attributes
    ----------
    volume : dict of str to float
        Multiplier of the request count of each kind (missing: 1).
    template_odds : float
        Multiplies the odds ``s / (1 - s)`` of the squared share ``s`` every
        template and system prompt takes of a prompt's embedding: < 1 light
        templates, > 1 dominant ones.
    template_spread : float
        Standard deviation of an extra per-account (per-campaign) factor
        ``exp(N(0, spread))`` on those odds.
    """

    volume: dict[str, float] = field(default_factory=dict)
    template_odds: float = 1.0
    template_spread: float = 0.0


# Largest squared share a template may take after the world's odds: the
# prompt's own topic always keeps a part.
_MAX_TEMPLATE_SHARE = 0.85


@dataclass
class TrafficBuilder:
    """Collects the latent rows of every account.

    Attributes
    ----------
    world, catalog : World, Catalog
    rng : numpy.random.Generator
        The accounts' stream.
    t0, t1 : int
        Simulated period ``[t0, t1)`` in epoch ms.
    habits : Habits
        The world's volume and template-strength habits.
    scale : float
        The simulation's scale, for scenarios whose size grows with it (the
        default population is sized by ``plan_population`` instead).
    """

    world: World
    catalog: Catalog
    rng: np.random.Generator
    t0: int
    t1: int
    habits: Habits = field(default_factory=Habits)
    scale: float = 1.0
    accounts: list[Account] = field(default_factory=list)
    company_orgs: list[str] = field(default_factory=list)
    _parts: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    _org_ids: set[str] = field(default_factory=set)

    def new_org(self) -> str:
        """A fresh opaque org id."""
        while True:
            org = "org-" + self.rng.bytes(5).hex()
            if org not in self._org_ids:
                self._org_ids.add(org)
                return org

    def company_org(self) -> str:
        """An org from the shared pool of companies (Zipf-like sizes)."""
        k = len(self.company_orgs)
        p = 1.0 / np.arange(1, k + 1)
        return self.company_orgs[int(self.rng.choice(k, p=p / p.sum()))]

    def volume(self, kind: str, n: int, floor: int) -> int:
        """Request count ``n`` of an account of ``kind`` under the world's habits, at least ``floor``."""
        v = self.habits.volume.get(kind, 1.0)
        return n if v == 1.0 else max(floor, int(round(n * v)))

    def new_styles(self, shares: float | np.ndarray, kind: str) -> np.ndarray:
        """Register templates (one account's, or one campaign's); returns (k,) int32 ids.

        ``shares`` are the default mode's squared shares; the world's habits
        move them towards light or dominant, with one extra factor per call.
        """
        h = self.habits
        if h.template_odds != 1.0 or h.template_spread != 0.0:
            s = np.atleast_1d(np.asarray(shares, np.float64))
            odds = s / (1.0 - s) * h.template_odds * np.exp(h.template_spread * self.rng.standard_normal())
            shares = np.minimum(odds / (1.0 + odds), _MAX_TEMPLATE_SHARE)
        return self.catalog.new_styles(shares, kind)

    def emit(
        self,
        account: Account,
        ts: np.ndarray,
        subtopic: np.ndarray,
        style: np.ndarray,
        context: np.ndarray,
        content: np.ndarray,
        text: np.ndarray,
    ) -> None:
        """Record one account and its requests (arrays of equal length n)."""
        idx = len(self.accounts)
        self.accounts.append(account)
        n = ts.shape[0]
        self._parts.append(
            (
                np.full(n, idx, np.int32),
                np.clip(ts, self.t0, self.t1 - 1).astype(np.int64),
                subtopic.astype(np.int32),
                style.astype(np.int32),
                context.astype(np.int32),
                content.astype(np.int64),
                text.astype(np.int64),
            )
        )

    def rows(self) -> dict[str, np.ndarray]:
        """All latent rows, concatenated in emission order.

        Returns
        -------
        dict
            ``account`` (n,) int32 index into ``accounts``; ``ts`` (n,) int64
            epoch ms; ``subtopic``, ``style``, ``context`` (n,) int32;
            ``content``, ``text`` (n,) int64.
        """
        names = ("account", "ts", "subtopic", "style", "context", "content", "text")
        return {name: np.concatenate([p[i] for p in self._parts]) for i, name in enumerate(names)}


# ---------------------------------------------------------------------------
# time helpers


def _human_clock(rng: np.random.Generator) -> tuple[float, float]:
    """Peak activity hour (UTC) and diurnal amplitude of a human account."""
    region = rng.choice(len(_REGIONS), p=[r[2] for r in _REGIONS])
    tz = rng.uniform(_REGIONS[region][0], _REGIONS[region][1])
    peak_local = rng.uniform(11.0, 17.0)
    return float((peak_local - tz) % 24.0), float(rng.uniform(0.5, 0.9))


def diurnal_times(
    rng: np.random.Generator, n: int, t0: int, t1: int, peak_hour: float, amplitude: float
) -> np.ndarray:
    """Sorted times from a rate ``1 + amplitude * cos(2 pi (hour - peak) / 24)``.

    Parameters
    ----------
    n : int
        Number of times.
    t0, t1 : int
        Window ``[t0, t1)`` in epoch ms.
    peak_hour : float
        UTC hour of the highest rate.
    amplitude : float
        0 for a flat rate, up to <1 for strongly diurnal humans.

    Returns
    -------
    (n,) int64
    """
    if t1 - t0 <= _DIURNAL_BIN_MS:
        return np.sort(rng.integers(t0, max(t0 + 1, t1), size=n)).astype(np.int64)
    edges = np.arange(t0, t1, _DIURNAL_BIN_MS, dtype=np.int64)
    widths = np.minimum(_DIURNAL_BIN_MS, t1 - edges)
    hours = ((edges + widths / 2) / MS_PER_H) % 24.0
    rate = (1.0 + amplitude * np.cos(2 * np.pi * (hours - peak_hour) / 24.0)) * widths
    cdf = np.cumsum(rate)
    b = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    b = np.minimum(b, edges.shape[0] - 1)
    return np.sort(edges[b] + (rng.random(n) * widths[b]).astype(np.int64))


def _sessions(
    rng: np.random.Generator, n: int, starts: np.ndarray, mean_gap_ms: float, t1: int
) -> np.ndarray:
    """Times of ``n`` requests spread over sessions beginning at ``starts``.

    Requests are assigned to sessions at random; inside a session they follow
    one another with exponential gaps. A session that would run past ``t1``
    is moved earlier rather than piled up at the end. Returns (n,) int64.
    """
    starts = np.sort(starts)
    which = np.sort(rng.integers(0, starts.shape[0], size=n))
    gaps = rng.exponential(mean_gap_ms, size=n)
    first = np.ones(n, dtype=bool)
    first[1:] = which[1:] != which[:-1]
    gaps[first] = 0.0
    cs = np.cumsum(gaps)
    head = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    offset = (cs - cs[head]).astype(np.int64)
    length = np.zeros(starts.shape[0], dtype=np.int64)
    np.maximum.at(length, which, offset)
    overflow = np.maximum(0, starts + length - (t1 - 1))
    return np.sort(starts[which] + offset - overflow[which])


def _window(rng: np.random.Generator, t0: int, t1: int, duration_ms: float) -> tuple[int, int]:
    """A window of ``duration_ms`` (clamped to the period) placed at random."""
    dur = int(min(duration_ms, t1 - t0))
    a = int(rng.integers(t0, t1 - dur + 1))
    return a, a + dur


# ---------------------------------------------------------------------------
# content helpers


def _fresh(
    b: TrafficBuilder, sub: np.ndarray, p_famous: float = 0.0, p_para: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Content and text ids for a sequence of prompts on ``sub``.

    A share ``p_famous`` of prompts is replaced by globally famous prompts
    (verbatim, shared with other accounts); a share ``p_para`` re-asks the
    previous question in new words (same content id and subtopic, new text).

    Returns
    -------
    sub : (n,) int32, content : (n,) int64, text : (n,) int64
    """
    rng, w = b.rng, b.world
    n = sub.shape[0]
    sub = sub.astype(np.int32).copy()
    content = b.catalog.new_content(n)
    text = b.catalog.new_text(n)
    f = np.zeros(n, dtype=bool)
    if p_famous > 0 and n:
        f = rng.random(n) < p_famous
        idx = rng.choice(w.famous_pop.shape[0], size=int(f.sum()), p=w.famous_pop)
        sub[f] = w.famous_subtopic[idx]
        content[f] = w.famous_content[idx]
        text[f] = w.famous_text[idx]
    if p_para > 0 and n > 1:
        # A famous prompt keeps its verbatim text, so it cannot be a paraphrase.
        para = (rng.random(n) < p_para) & ~f
        para[0] = False
        src = np.maximum.accumulate(np.where(para, 0, np.arange(n)))
        content = content[src]
        sub = sub[src]
    return sub, content, text


def _with_retries(
    b: TrafficBuilder,
    n_retry: int,
    ts: np.ndarray,
    sub: np.ndarray,
    style: np.ndarray,
    context: np.ndarray,
    content: np.ndarray,
    text: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Append ``n_retry`` verbatim resends of random earlier rows, 1-45 s later."""
    if n_retry <= 0 or ts.shape[0] == 0:
        return ts, sub, style, context, content, text
    src = b.rng.integers(0, ts.shape[0], size=n_retry)
    delay = b.rng.integers(1 * MS_PER_S, 45 * MS_PER_S, size=n_retry)
    cat = np.concatenate
    return (
        cat([ts, ts[src] + delay]),
        cat([sub, sub[src]]),
        cat([style, style[src]]),
        cat([context, context[src]]),
        cat([content, content[src]]),
        cat([text, text[src]]),
    )


def _none(n: int) -> np.ndarray:
    return np.full(n, -1, np.int32)


def _popular_subset(b: TrafficBuilder, k: int, concentration: float) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct subtopics chosen by population popularity, with personal weights."""
    k = min(k, b.world.n_subtopics)
    subs = b.rng.choice(b.world.n_subtopics, size=k, replace=False, p=b.world.subtopic_pop)
    return subs.astype(np.int32), b.rng.dirichlet(np.full(k, concentration))


def _sweep(rng: np.random.Generator, cells: np.ndarray, n: int) -> np.ndarray:
    """Subtopics of a sweep: even over ``cells``, rare ones included.

    Most sweepers enumerate (concatenated random permutations: every cell
    once before any twice); the others sample uniformly at random.
    """
    if rng.random() < 0.6:
        reps = -(-n // cells.shape[0])
        return np.concatenate([rng.permutation(cells) for _ in range(reps)])[:n].astype(np.int32)
    return rng.choice(cells, size=n).astype(np.int32)


def _member_slices(rng: np.random.Generator, n_subtopics: int, n_members: int) -> list[np.ndarray]:
    """A random partition of the subtopics into one slice per campaign member.

    With more members than subtopics, members take one subtopic each in
    turn, so several members share a subtopic and no slice is empty.
    """
    perm = rng.permutation(n_subtopics).astype(np.int32)
    if n_members <= n_subtopics:
        return np.array_split(perm, n_members)
    return [perm[i % n_subtopics : i % n_subtopics + 1] for i in range(n_members)]


def _log_skewed(rng: np.random.Generator, lo: float, hi: float, power: float) -> int:
    """An integer in [lo, hi], log-uniform bent towards ``lo`` by ``power`` > 1."""
    return int(round(lo * (hi / lo) ** (rng.random() ** power)))


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
    for _ in range(plan.counts["casual"]):
        casual(b)
    for _ in range(plan.counts["power_user"]):
        power_user(b)
    for _ in range(plan.counts["product"]):
        product(b)
    for _ in range(plan.counts["batch_job"]):
        batch_job(b)
    # Fewer suites than benchmark accounts: popular suites get run by several.
    n_bench = plan.counts["benchmark"]
    suites = [benchmark_suite(b) for _ in range(max(1, n_bench // 3))]
    for i in range(n_bench):
        benchmark(b, suites[i] if i < len(suites) else suites[int(rng.integers(len(suites)))])
    for _ in range(plan.counts["template_sweeper"]):
        template_sweeper(b)
    for _ in range(plan.counts["paraphrase_sweeper"]):
        paraphrase_sweeper(b)
    for _ in range(plan.counts["targeted_sweeper"]):
        targeted_sweeper(b)
    for _ in range(plan.counts["slow_sweeper"]):
        slow_sweeper(b)
    for i, size in enumerate(plan.campaign_sizes):
        # Alternate: even campaigns share one billing org, odd ones have none.
        campaign(b, f"campaign-{i}", size, shared_org=(i % 2 == 0))
