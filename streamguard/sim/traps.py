"""Benign traps: ordinary customers that look like a coordinated campaign.

``SimConfig(traps=True)`` (``streamguard simulate --traps``) adds these benign
accounts on top of the ordinary population, from a random stream of their
own, so the ordinary accounts do not change. Each shares something a campaign
detector links accounts by, and none is a campaign:

- ``enterprise_employee``: orgs of 5-40 employees sharing one org id, the
  office's network prefix, the org's payment instrument, often an internal
  tool's client fingerprint, and one system prompt (a shared template in
  their embeddings) and office hours; each employee asks about a few topics
  of their own, near the org's field.
- ``joint_benchmark``: several accounts of one org running one benchmark
  suite together in one burst, either split into shards (one per account)
  or each running all of it.
- ``timezone_casual``: casual users of one time zone and one carrier who
  come online at the same hour every day.
- ``reseller``: an app reselling the API: thousands of requests a day from
  many end users, each on a few popular topics, so the account as a whole
  follows the population's mix.
- ``agent_framework``: developers of unrelated orgs running one open-source
  agent framework: its long system prompt on every request and its client
  fingerprint, machine-paced chains of calls (one task's transcript shared
  by its steps), each developer on a few topics of their own.
"""

from __future__ import annotations

import numpy as np

from streamguard.sim.accounts import Account, TrafficBuilder
from streamguard.sim.behaviours import benchmark_suite
from streamguard.sim.draw import (
    MS_PER_DAY,
    MS_PER_H,
    MS_PER_MIN,
    MS_PER_S,
    _REGIONS,
    _fresh,
    _human_clock,
    _log_skewed,
    _none,
    _popular_subset,
    _sessions,
    _window,
    _with_retries,
    daily_starts,
    diurnal_times,
    worker_shards,
)

__all__ = ["TRAP_KINDS", "plant_traps", "reseller_rows"]

TRAP_KINDS: tuple[str, ...] = ("enterprise_employee", "joint_benchmark", "timezone_casual", "reseller", "agent_framework")

N_CARRIERS = 10
"""Large carrier NAT prefixes (``attributes.py``): ``net`` symbols ``carrier:0`` ... ``carrier:9``."""


def _shrink(scale: float) -> float:
    """Group sizes shrink with scale below 1 (like campaigns), to at most a third."""
    return min(1.0, max(0.3, scale))


def _count(rng: np.random.Generator, lo: int, hi: int, scale: float, floor: int) -> int:
    return max(floor, int(round(rng.integers(lo, hi + 1) * scale)))


def enterprise_org(b: TrafficBuilder, size: int) -> None:
    """One org of ``size`` employees: shared org, net, pay, system prompt and office hours."""
    rng, w = b.rng, b.world
    org = b.new_org()
    sysp = int(b.new_styles(rng.uniform(0.15, 0.35), "enterprise_system_prompt")[0])
    use_sysp = float(rng.uniform(0.7, 1.0))
    region = rng.choice(len(_REGIONS), p=[r[2] for r in _REGIONS])
    tz = rng.uniform(_REGIONS[region][0], _REGIONS[region][1])
    office_peak = float((rng.uniform(10.5, 15.0) - tz) % 24.0)
    # The org's field: its domains weigh five times their popularity.
    field_domains = rng.choice(w.n_domains, size=int(rng.integers(1, 5)), replace=False, p=w.domain_pop)
    boost = np.where(np.isin(w.subtopic_domain, field_domains), 5.0, 1.0) * w.subtopic_pop
    boost /= boost.sum()
    attrs = {"client": f"{org}/internal-tool"} if rng.random() < 0.7 else {}
    for _ in range(size):
        n = _log_skewed(rng, 30, 800, 2.0)
        n_retry = int(rng.binomial(n - 1, 0.03))
        n0 = n - n_retry
        k = int(rng.integers(1, 5))
        subs = rng.choice(w.n_subtopics, size=k, replace=False, p=boost).astype(np.int32)
        sub = subs[rng.choice(k, size=n0, p=rng.dirichlet(np.ones(k)))]
        n_sess = min(n0, 1 + int(rng.poisson(n0 / 12.0)))
        starts = diurnal_times(rng, n_sess, b.t0, b.t1, office_peak, 0.9)
        ts = _sessions(rng, n0, starts, rng.uniform(20, 120) * MS_PER_S, b.t1)
        style = np.where(rng.random(n0) < use_sysp, sysp, -1).astype(np.int32)
        sub, content, text = _fresh(b, sub, p_famous=0.01, p_para=0.05)
        rows = _with_retries(b, n_retry, ts, sub, style, _none(n0), content, text)
        b.emit(Account("enterprise_employee", org_id=org, attrs=dict(attrs)), *rows)


def joint_benchmark(b: TrafficBuilder, size: int) -> None:
    """``size`` accounts of one org run one suite in the same 15-110 minute burst."""
    rng = b.rng
    org = b.new_org()
    suite = benchmark_suite(b)
    m = suite.subtopic.shape[0]
    a, z = _window(rng, b.t0, b.t1, rng.uniform(15, 110) * MS_PER_MIN)
    harness = {"client": f"{org}/eval-harness"} if rng.random() < 0.5 else {}
    for idx, ts in worker_shards(rng, m, size, a, z):
        k = idx.shape[0]
        b.emit(
            Account("joint_benchmark", org_id=org, attrs=dict(harness)),
            ts,
            suite.subtopic[idx],
            np.full(k, suite.style, np.int32),
            _none(k),
            suite.content[idx],
            suite.text[idx],
        )


def timezone_group(b: TrafficBuilder, size: int) -> None:
    """``size`` casual users of one time zone and carrier, online at the same hour each day."""
    rng = b.rng
    region = rng.choice(len(_REGIONS), p=[r[2] for r in _REGIONS])
    tz = rng.uniform(_REGIONS[region][0], _REGIONS[region][1])
    # Lunch break or evening, local time.
    hour = float((rng.choice([12.5, 20.5]) + rng.uniform(-0.5, 0.5) - tz) % 24.0)
    carrier = f"carrier:{int(rng.integers(0, 3))}"  # one of the country's big carriers
    day0 = (b.t0 // MS_PER_DAY) * MS_PER_DAY
    days = np.arange(day0, b.t1, MS_PER_DAY, dtype=np.int64) + int(hour * MS_PER_H)
    for _ in range(size):
        n = int(np.clip(round(rng.lognormal(np.log(12.0), 0.7)), 4, 80))
        subs, pw = _popular_subset(b, int(rng.integers(1, 4)), 1.0)
        sub = subs[rng.choice(subs.shape[0], size=n, p=pw)]
        ts = _sessions(rng, n, daily_starts(rng, days, b.t0, b.t1), rng.uniform(20, 150) * MS_PER_S, b.t1)
        sub, content, text = _fresh(b, sub, p_famous=float(rng.beta(1.0, 15.0)), p_para=0.06)
        b.emit(Account("timezone_casual", attrs={"net": carrier}), ts, sub, _none(n), _none(n), content, text)


def reseller_rows(b: TrafficBuilder, n: int, style: int) -> tuple[np.ndarray, ...]:
    """``n`` requests of a reseller's end users; returns (ts, sub, style, context, content, text).

    End users (about one per 12 requests) each ask about 1-3 popular
    subtopics on their own clock, so the union follows the population's mix;
    ``style`` (-1: none) is the reseller's wrapper prompt on every request.
    """
    rng = b.rng
    n_retry = int(rng.binomial(n, 0.02))
    n0 = n - n_retry
    m = max(50, n0 // 12)
    share = rng.lognormal(0.0, 0.6, size=m)
    user = np.sort(rng.choice(m, size=n0, p=share / share.sum()))
    counts = np.bincount(user, minlength=m)
    ts = np.empty(n0, np.int64)
    sub = np.empty(n0, np.int32)
    at = 0
    for u in range(m):
        c = int(counts[u])
        if c == 0:
            continue
        subs, pw = _popular_subset(b, int(rng.integers(1, 4)), 1.0)
        peak, amp = _human_clock(rng)
        ts[at : at + c] = diurnal_times(rng, c, b.t0, b.t1, peak, amp)
        sub[at : at + c] = subs[rng.choice(subs.shape[0], size=c, p=pw)]
        at += c
    order = np.argsort(ts, kind="stable")
    ts, sub = ts[order], sub[order]
    sub, content, text = _fresh(b, sub, p_famous=0.03, p_para=0.03)
    return _with_retries(b, n_retry, ts, sub, np.full(n0, style, np.int32), _none(n0), content, text)


def reseller_style(b: TrafficBuilder) -> int:
    """Half the resellers wrap every prompt in a light prompt of their own; -1 for none."""
    if b.rng.random() < 0.5:
        return int(b.new_styles(b.rng.uniform(0.05, 0.15), "reseller_wrapper")[0])
    return -1


def reseller(b: TrafficBuilder) -> None:
    """5,000-25,000 requests of many end users: product volume, the population's mix."""
    n = _log_skewed(b.rng, 5000, 25000, 2.5)
    rows = reseller_rows(b, n, reseller_style(b))
    b.emit(Account("reseller", org_id=b.new_org()), *rows)


def agent_framework(b: TrafficBuilder, size: int, name: str) -> None:
    """``size`` developers of different orgs running one agent framework.

    Every request carries the framework's system prompt (a shared template across accounts
    that share nothing else) and its client fingerprint. A developer starts 5-40 tasks over the
    stream at their own hours; a task is a chain of 4-30 calls 1-8 s apart on one of the
    developer's 1-4 topics, every call carrying the task's transcript so far (a context the
    chain shares) and a new step.
    """
    rng = b.rng
    framework = int(b.new_styles(rng.uniform(0.25, 0.45), "agent_framework_prompt")[0])
    for _ in range(size):
        subs, pw = _popular_subset(b, int(rng.integers(1, 5)), 1.0)
        peak, amp = _human_clock(rng)
        tasks = int(rng.integers(5, 41))
        starts = np.sort(diurnal_times(rng, tasks, b.t0, b.t1, peak, amp))
        steps = rng.integers(4, 31, size=tasks)
        transcripts = b.catalog.new_contexts(rng.uniform(0.15, 0.35, size=tasks))
        n = int(steps.sum())
        task = np.repeat(np.arange(tasks), steps)
        first = np.cumsum(steps) - steps  # each task's first call
        gaps = rng.uniform(1, 8, size=n) * MS_PER_S
        gaps[first] = 0.0
        elapsed = np.cumsum(gaps)
        offset = elapsed - np.repeat(elapsed[first], steps)  # time since the task's first call
        ts = np.minimum(starts[task] + offset.astype(np.int64), b.t1 - 1)
        sub = subs[rng.choice(subs.shape[0], size=tasks, p=pw)][task]
        order = np.argsort(ts, kind="stable")
        ts, sub, context = ts[order], sub[order], transcripts[task][order].astype(np.int32)
        sub, content, text = _fresh(b, sub, p_famous=0.0, p_para=0.2)
        style = np.full(n, framework, np.int32)
        b.emit(Account("agent_framework", org_id=b.new_org(), attrs={"client": f"agent-framework:{name}"}),
               ts, sub, style, context, content, text)


def plant_traps(b: TrafficBuilder, seed: int) -> None:
    """Add every trap kind to ``b`` from a stream of its own; sizes follow ``b.scale``."""
    ordinary_rng = b.rng
    b.rng = np.random.default_rng([seed, *b"traps"])
    try:
        rng, scale = b.rng, b.scale
        shrink = _shrink(scale)
        for _ in range(_count(rng, 4, 8, scale, 2)):
            enterprise_org(b, max(5, int(round(rng.integers(5, 41) * shrink))))
        for _ in range(_count(rng, 2, 4, scale, 1)):
            joint_benchmark(b, int(rng.integers(3, 9)))
        for _ in range(_count(rng, 2, 3, scale, 1)):
            timezone_group(b, max(10, int(round(rng.integers(60, 151) * scale))))
        for _ in range(_count(rng, 2, 3, scale, 1)):
            reseller(b)
        for i in range(_count(rng, 1, 2, scale, 1)):
            agent_framework(b, max(5, int(round(rng.integers(10, 41) * shrink))), str(i))
    finally:
        b.rng = ordinary_rng
