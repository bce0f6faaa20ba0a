"""Evasion scenarios: distillers that adapt to what per-account detectors look for.

Each scenario adds labelled distiller accounts of its own kind
(``evade_<scenario>``) on top of the ordinary population, drawn from a
random stream of their own, so the ordinary accounts and their behaviour do
not change with the scenarios chosen. A scenario is a *family* of attacks
sharing one idea; where the idea applies both to single accounts and to
campaigns, both are planted.

- ``paraphrased``: every prompt freshly worded, no template, nothing repeated,
  so no near-duplicate evidence at all; a campaign of 30 accounts splits the
  space, and single sweepers work alone.
- ``resampled``: a campaign that drops its templates (so no style links
  its accounts) but, to harvest several answers per prompt, sends a third of
  each account's prompts again from another member: the accounts share
  prompts, each at a rate under the per-account line.
- ``mixed_into_product``: a legitimate product account (one system prompt,
  the population's topic mix, thousands of requests a day) whose owner
  slips a sweep into 10-25% of its traffic.
- ``round_robin``: one campaign rotating over 60 accounts, each under 100
  requests, far below any per-account minimum.
- ``slow_10x``: sweepers and a campaign sending a tenth of the usual rate,
  spread over the whole period.
- ``population_mix``: sweepers (and a campaign) whose topics follow the
  population's own mix instead of an even sweep: what they harvest is the
  distribution real users ask about, so coverage rarity has nothing to see.
- ``hydra``: one campaign of 100-300 accounts (at scale 1; at least 30),
  30-400 requests each, load-balanced by one orchestrator behind one rare
  proxy prefix (``net``): the union is machine-paced, each member a random
  thinning of it (irregular), and each member touches the whole space.
- ``paraphrase_synchronized``: a campaign with no template and nothing
  repeated, whose members switch on and off together in a few shared
  windows.
- ``attribute_only``: a campaign linked only by a payment instrument
  (``pay``) and a rare client fingerprint (``client``): no template, no
  shared prompt, independent clocks, each member on its own slice.
- ``last_day_burst``: a templated campaign that starts at full speed on the
  last day (a new model's release) and runs to the end of the stream.
- ``reseller_sweep``: reseller accounts whose end users follow the
  population (see ``traps.reseller``) and which, part-way through, start a
  sweep in 10-25% of their traffic.

``hydra`` and ``attribute_only`` plant request attributes, so choosing
either writes the ``attributes`` column (``ATTRIBUTE_SCENARIOS``).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from streamguard.sim.accounts import Account, TrafficBuilder
from streamguard.sim.behaviours import _bot_times, _sweep_styles
from streamguard.sim.draw import (
    MS_PER_DAY,
    _fresh,
    _human_clock,
    _log_skewed,
    _member_slices,
    _none,
    _sweep,
    _window,
    _with_retries,
    diurnal_times,
)
from streamguard.sim.traps import reseller_rows, reseller_style

SCENARIOS: tuple[str, ...] = (
    "paraphrased",
    "resampled",
    "mixed_into_product",
    "round_robin",
    "slow_10x",
    "population_mix",
    "hydra",
    "paraphrase_synchronized",
    "attribute_only",
    "last_day_burst",
    "reseller_sweep",
)
ATTRIBUTE_SCENARIOS: frozenset[str] = frozenset({"hydra", "attribute_only"})
"""Scenarios whose accounts share request attributes: they imply the ``attributes`` column."""
EVASION_KINDS: tuple[str, ...] = tuple(f"evade_{name}" for name in SCENARIOS)


def _campaign(
    b: TrafficBuilder,
    kind: str,
    campaign_id: str,
    n_members: int,
    volume: Callable[[np.random.Generator], int],
    templated: bool,
    whole_period: bool = False,
    follow_population: bool = False,
) -> None:
    """A campaign whose members split the subtopics (like ``behaviours.campaign``).

    ``volume`` draws each member's request count; ``templated`` gives the
    campaign 1-3 shared templates; ``whole_period`` spreads members over the
    whole simulated period (a slow campaign); ``follow_population`` samples
    each member's slice by the population's popularity instead of evenly.
    """
    rng, w = b.rng, b.world
    k = int(rng.integers(1, 4))
    tpl = b.new_styles(rng.uniform(0.12, 0.35, size=k), "campaign_template") if templated else None
    tpl_p = rng.dirichlet(np.ones(k))
    if whole_period:
        ca, cz = b.t0, b.t1
    else:
        ca, cz = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    peak, amp = float(rng.uniform(0, 24)), float(rng.uniform(0.1, 0.5))
    slices = _member_slices(rng, w.n_subtopics, n_members)
    for i in range(n_members):
        nxt = slices[(i + 1) % n_members]
        cells = np.concatenate([slices[i], nxt[: max(1, nxt.shape[0] // 4)]])
        n = volume(rng)
        a, z = (ca, cz) if whole_period else _window(rng, ca, cz, (cz - ca) * rng.uniform(0.3, 0.8))
        ts = diurnal_times(rng, n, a, z, peak, amp)
        if follow_population:
            p = w.subtopic_pop[cells]
            sub = rng.choice(cells, size=n, p=p / p.sum()).astype(np.int32)
        else:
            sub = _sweep(rng, cells, n)
        if tpl is not None:
            style = np.where(rng.random(n) < rng.uniform(0.85, 1.0), tpl[rng.choice(k, size=n, p=tpl_p)], -1)
        else:
            style = _none(n)
        sub, content, text = _fresh(b, sub)
        b.emit(Account(kind, campaign=campaign_id), ts, sub, style, _none(n), content, text)


def _sweeper(b: TrafficBuilder, kind: str, n: int, a: int, z: int, templated: bool, follow_population: bool) -> None:
    rng, w = b.rng, b.world
    ts = _bot_times(b, n, a, z)
    if follow_population:
        sub = rng.choice(w.n_subtopics, size=n, p=w.subtopic_pop).astype(np.int32)
    else:
        sub = _sweep(rng, np.arange(w.n_subtopics, dtype=np.int32), n)
    style = _sweep_styles(b, n, int(rng.integers(1, 4)), "sweep_template") if templated else _none(n)
    sub, content, text = _fresh(b, sub)
    b.emit(Account(kind), ts, sub, style, _none(n), content, text)


def paraphrased(b: TrafficBuilder) -> None:
    kind = "evade_paraphrased"
    _campaign(b, kind, "evade-paraphrased-0", 30, lambda r: _log_skewed(r, 200, 1150, 1.5), templated=False)
    for _ in range(6):
        n = _log_skewed(b.rng, 1500, 6000, 3.0)
        a, z = _window(b.rng, b.t0, b.t1, b.rng.uniform(1, 3) * MS_PER_DAY)
        _sweeper(b, kind, n, a, z, templated=False, follow_population=False)


def resampled(b: TrafficBuilder) -> None:
    """30 members without templates; each resends a third of the previous member's prompts, hours later."""
    rng, w = b.rng, b.world
    n_members = 30
    ca, cz = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    peak, amp = float(rng.uniform(0, 24)), float(rng.uniform(0.1, 0.5))
    slices = _member_slices(rng, w.n_subtopics, n_members)
    own = []
    for i in range(n_members):
        n = _log_skewed(rng, 150, 850, 1.5)
        a, z = _window(rng, ca, cz, (cz - ca) * rng.uniform(0.3, 0.8))
        ts = diurnal_times(rng, n, a, z, peak, amp)
        sub, content, text = _fresh(b, _sweep(rng, slices[i], n))
        own.append((ts, sub, content, text))
    for i in range(n_members):
        ts, sub, content, text = own[i]
        pts, psub, pcontent, ptext = own[i - 1]
        pick = rng.random(pts.shape[0]) < 0.33
        # The same prompt, verbatim, from another account of the campaign 1-6 hours later.
        again = np.minimum(pts[pick] + (rng.uniform(1, 6, size=int(pick.sum())) * 3_600_000).astype(np.int64), b.t1 - 1)
        cat = np.concatenate
        ts, sub, content, text = cat([ts, again]), cat([sub, psub[pick]]), cat([content, pcontent[pick]]), cat([text, ptext[pick]])
        order = np.argsort(ts, kind="stable")
        n = ts.shape[0]
        b.emit(
            Account("evade_resampled", campaign="evade-resampled-0"),
            ts[order], sub[order], _none(n), _none(n), content[order], text[order],
        )


def mixed_into_product(b: TrafficBuilder) -> None:
    """Product accounts (see ``behaviours.product``) with a sweep hidden in their traffic."""
    rng, w = b.rng, b.world
    for _ in range(4):
        n = _log_skewed(rng, 5000, 25000, 2.5)
        share = float(rng.uniform(0.10, 0.25))
        n_sweep = int(round(n * share))
        n_retry = int(rng.binomial(n - n_sweep, 0.02))
        n_real = n - n_sweep - n_retry
        sysp = b.new_styles(rng.uniform(0.2, 0.4), "system_prompt")[0]
        peak, _ = _human_clock(rng)
        ts_real = diurnal_times(rng, n_real, b.t0, b.t1, peak, float(rng.uniform(0.3, 0.7)))
        sub_real = rng.choice(w.n_subtopics, size=n_real, p=w.subtopic_pop)
        sub_real, c_real, t_real = _fresh(b, sub_real, p_famous=0.03, p_para=0.03)
        # The sweep runs from the same servers, through the same system prompt, in 1-3 days.
        a, z = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
        ts_sweep = _bot_times(b, n_sweep, a, z)
        sub_sweep, c_sweep, t_sweep = _fresh(b, _sweep(rng, np.arange(w.n_subtopics, dtype=np.int32), n_sweep))
        cat = np.concatenate
        ts, sub, content, text = (
            cat([ts_real, ts_sweep]),
            cat([sub_real, sub_sweep]),
            cat([c_real, c_sweep]),
            cat([t_real, t_sweep]),
        )
        style = np.full(ts.shape[0], sysp, np.int32)
        rows = _with_retries(b, n_retry, ts, sub, style, _none(ts.shape[0]), content, text)
        b.emit(Account("evade_mixed_into_product", org_id=b.new_org()), *rows)


def round_robin(b: TrafficBuilder) -> None:
    _campaign(b, "evade_round_robin", "evade-round-robin-0", 60, lambda r: int(r.integers(50, 100)), templated=True)


def slow_10x(b: TrafficBuilder) -> None:
    """A tenth of the usual rates (template sweepers, campaign members), over the whole period."""
    kind = "evade_slow_10x"
    days = (b.t1 - b.t0) / MS_PER_DAY
    for _ in range(6):
        # A template sweeper sends 1,500-6,000 requests in 1-3 days: a tenth of that rate.
        rate_per_day = _log_skewed(b.rng, 1500, 6000, 3.0) / b.rng.uniform(1, 3) / 10.0
        n = max(20, int(round(rate_per_day * days)))
        _sweeper(b, kind, n, b.t0, b.t1, templated=bool(b.rng.random() < 0.5), follow_population=False)
    _campaign(
        b, kind, "evade-slow-10x-0", 30, lambda r: max(20, _log_skewed(r, 200, 1150, 1.5) // 10),
        templated=True, whole_period=True,
    )


def population_mix(b: TrafficBuilder) -> None:
    kind = "evade_population_mix"
    for _ in range(6):
        n = _log_skewed(b.rng, 1500, 6000, 3.0)
        a, z = _window(b.rng, b.t0, b.t1, b.rng.uniform(1, 3) * MS_PER_DAY)
        _sweeper(b, kind, n, a, z, templated=True, follow_population=True)
    _campaign(
        b, kind, "evade-population-mix-0", 30, lambda r: _log_skewed(r, 200, 1150, 1.5),
        templated=True, follow_population=True,
    )


def _campaign_styles(b: TrafficBuilder, n: int, tpl: np.ndarray, tpl_p: np.ndarray, use: float) -> np.ndarray:
    """A share ``use`` of ``n`` requests in one of the campaign's templates ``tpl``, the rest plain."""
    rng = b.rng
    return np.where(rng.random(n) < use, tpl[rng.choice(tpl.shape[0], size=n, p=tpl_p)], -1).astype(np.int32)


def _slice_cells(slices: list[np.ndarray], i: int) -> np.ndarray:
    """Member ``i``'s slice plus a quarter of the next one (as ``behaviours.campaign``)."""
    nxt = slices[(i + 1) % len(slices)]
    return np.concatenate([slices[i], nxt[: max(1, nxt.shape[0] // 4)]])


def hydra(b: TrafficBuilder) -> None:
    """One orchestrator load-balancing a sweep over 100-300 accounts (x scale, >= 30) behind one proxy."""
    rng, w = b.rng, b.world
    cid = "evade-hydra-0"
    n_members = max(30, int(round(rng.uniform(100, 300) * b.scale)))
    counts = np.array([_log_skewed(rng, 30, 400, 1.5) for _ in range(n_members)])
    total = int(counts.sum())
    a, z = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    # The orchestrator's queue: one request every `step` ms, a little jitter.
    step = (z - a) / total
    union_ts = (a + (np.arange(total) + rng.uniform(0.2, 0.8, size=total)) * step).astype(np.int64)
    union_sub = _sweep(rng, np.arange(w.n_subtopics, dtype=np.int32), total)
    k = int(rng.integers(1, 4))
    tpl = b.new_styles(rng.uniform(0.12, 0.35, size=k), "campaign_template")
    union_style = _campaign_styles(b, total, tpl, rng.dirichlet(np.ones(k)), float(rng.uniform(0.4, 0.9)))
    # Each request goes to whichever member the balancer picks: members interleave.
    member = rng.permutation(np.repeat(np.arange(n_members), counts))
    attrs = {"net": f"{cid}/proxy"}
    for i in range(n_members):
        rows = np.flatnonzero(member == i)
        n = rows.shape[0]
        sub, content, text = _fresh(b, union_sub[rows])
        b.emit(Account("evade_hydra", campaign=cid, attrs=dict(attrs)), union_ts[rows], sub, union_style[rows], _none(n), content, text)


def paraphrase_synchronized(b: TrafficBuilder) -> None:
    """30 members, no template, nothing repeated; all switch on and off in the same 4-8 windows."""
    rng, w = b.rng, b.world
    n_members = 30
    n_win = int(rng.integers(4, 9))
    seg = (b.t1 - b.t0) / n_win
    wins = []
    for j in range(n_win):
        dur = min(rng.uniform(1, 4) * 3_600_000, 0.8 * seg)
        a = int(b.t0 + j * seg + rng.uniform(0, seg - dur))
        wins.append((a, int(a + dur)))
    lengths = np.array([z - a for a, z in wins], np.float64)
    slices = _member_slices(rng, w.n_subtopics, n_members)
    for i in range(n_members):
        n = _log_skewed(rng, 200, 1150, 1.5)
        per = rng.multinomial(n, lengths / lengths.sum())
        parts = []
        for (a, z), c in zip(wins, per):
            if c == 0:
                continue
            t = np.sort(rng.integers(a, z, size=c))
            # The orchestrator starts and stops every member together (within a minute).
            t[0] = a + int(rng.uniform(0, 60_000))
            if c > 1:
                t[-1] = z - int(rng.uniform(0, 60_000))
            parts.append(np.sort(t))
        ts = np.concatenate(parts).astype(np.int64)
        sub, content, text = _fresh(b, _sweep(rng, _slice_cells(slices, i), n))
        b.emit(
            Account("evade_paraphrase_synchronized", campaign="evade-paraphrase-synchronized-0"),
            ts, sub, _none(n), _none(n), content, text,
        )


def attribute_only(b: TrafficBuilder) -> None:
    """30 members sharing one payment instrument and one rare client, and nothing else."""
    rng, w = b.rng, b.world
    cid = "evade-attribute-only-0"
    n_members = 30
    slices = _member_slices(rng, w.n_subtopics, n_members)
    for i in range(n_members):
        n = _log_skewed(rng, 200, 1150, 1.5)
        # Each member on its own clock and its own days, from its own network.
        a, z = _window(rng, b.t0, b.t1, rng.uniform(0.5, 2.0) * MS_PER_DAY)
        peak, amp = _human_clock(rng)
        ts = diurnal_times(rng, n, a, z, peak, amp)
        sub, content, text = _fresh(b, _sweep(rng, _slice_cells(slices, i), n))
        attrs = {"pay": f"{cid}/pay", "client": f"{cid}/client", "net": f"{cid}/net-{i}"}
        b.emit(Account("evade_attribute_only", campaign=cid, attrs=attrs), ts, sub, _none(n), _none(n), content, text)


def last_day_burst(b: TrafficBuilder) -> None:
    """A 30-member templated campaign starting together, at full speed, on the last day."""
    rng, w = b.rng, b.world
    n_members = 30
    last = min(MS_PER_DAY, 0.4 * (b.t1 - b.t0))
    release = int(b.t1 - last + rng.uniform(0, 0.1) * last)
    k = int(rng.integers(1, 4))
    tpl = b.new_styles(rng.uniform(0.12, 0.35, size=k), "campaign_template")
    tpl_p = rng.dirichlet(np.ones(k))
    slices = _member_slices(rng, w.n_subtopics, n_members)
    for i in range(n_members):
        n = _log_skewed(rng, 200, 1150, 1.5)
        start = release + int(rng.uniform(0, 10) * 60_000)
        ts = np.sort(rng.integers(start, b.t1, size=n)).astype(np.int64)
        style = _campaign_styles(b, n, tpl, tpl_p, float(rng.uniform(0.85, 1.0)))
        sub, content, text = _fresh(b, _sweep(rng, _slice_cells(slices, i), n))
        b.emit(
            Account("evade_last_day_burst", campaign="evade-last-day-burst-0"),
            ts, sub, style, _none(n), content, text,
        )


def reseller_sweep(b: TrafficBuilder) -> None:
    """3 resellers (end users following the population) that start a sweep part-way through."""
    rng, w = b.rng, b.world
    for _ in range(3):
        n = _log_skewed(rng, 5000, 25000, 2.5)
        n_sweep = int(round(n * rng.uniform(0.10, 0.25)))
        style = reseller_style(b)
        rows = reseller_rows(b, n - n_sweep, style)
        start = int(b.t0 + rng.uniform(0.3, 0.7) * (b.t1 - b.t0))
        ts = _bot_times(b, n_sweep, start, b.t1)
        sub, content, text = _fresh(b, _sweep(rng, np.arange(w.n_subtopics, dtype=np.int32), n_sweep))
        sweep = (ts, sub, np.full(n_sweep, style, np.int32), _none(n_sweep), content, text)
        b.emit(Account("evade_reseller_sweep", org_id=b.new_org()), *(np.concatenate([r, s]) for r, s in zip(rows, sweep)))


GENERATORS: dict[str, Callable[[TrafficBuilder], None]] = {
    "paraphrased": paraphrased,
    "resampled": resampled,
    "mixed_into_product": mixed_into_product,
    "round_robin": round_robin,
    "slow_10x": slow_10x,
    "population_mix": population_mix,
    "hydra": hydra,
    "paraphrase_synchronized": paraphrase_synchronized,
    "attribute_only": attribute_only,
    "last_day_burst": last_day_burst,
    "reseller_sweep": reseller_sweep,
}


def plant_evasions(b: TrafficBuilder, scenarios: tuple[str, ...], seed: int) -> None:
    """Add the accounts of every scenario to ``b``, each from its own random stream."""
    ordinary_rng = b.rng
    try:
        for name in scenarios:
            # Seeded by name, so a scenario's accounts do not depend on which others run with it.
            b.rng = np.random.default_rng([seed, *name.encode()])
            GENERATORS[name](b)
    finally:
        b.rng = ordinary_rng
