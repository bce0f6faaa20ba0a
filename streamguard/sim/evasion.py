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
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from streamguard.sim.behaviours import (
    MS_PER_DAY,
    Account,
    TrafficBuilder,
    _bot_times,
    _fresh,
    _human_clock,
    _log_skewed,
    _member_slices,
    _none,
    _sweep,
    _sweep_styles,
    _window,
    _with_retries,
    diurnal_times,
)

SCENARIOS: tuple[str, ...] = (
    "paraphrased",
    "resampled",
    "mixed_into_product",
    "round_robin",
    "slow_10x",
    "population_mix",
)
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


GENERATORS: dict[str, Callable[[TrafficBuilder], None]] = {
    "paraphrased": paraphrased,
    "resampled": resampled,
    "mixed_into_product": mixed_into_product,
    "round_robin": round_robin,
    "slow_10x": slow_10x,
    "population_mix": population_mix,
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
