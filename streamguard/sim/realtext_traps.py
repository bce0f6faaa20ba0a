"""Benign traps of the real-text simulator: ordinary customers that look like a campaign.

The real-text twins of ``traps.py`` (``RealTextConfig(traps=True)``, ``streamguard simulate
--real-text --traps``), written as prompts so that what links them meets a sentence model's
geometry: a shared system prompt lifts every employee's question part of the way towards the
others', a joint benchmark's items are copies across accounts, an agent framework's calls carry
a long shared preamble and their task's transcript. Planted from a random stream of their own,
after the ordinary accounts, so those (and their cached embeddings) do not change. None is a
campaign:

- ``enterprise_employee``: orgs of 5-25 employees sharing one org id, one internal assistant's
  system prompt on most requests, and office hours; each employee asks about a few subjects of
  the org's field.
- ``joint_benchmark``: several accounts of one org running one benchmark suite in one burst,
  split into shards or each running all of it.
- ``timezone_casual``: casual users online at the same hour every day.
- ``reseller``: an app reselling the API to many end users, each on a few popular subjects, so
  the account as a whole follows the population.
- ``agent_framework``: developers of unrelated orgs running one agent framework: its preamble on
  every call, machine-paced chains of calls that carry the task's transcript, each developer on
  a few subjects of their own.

The attributes column is not written in this mode (``traps.py`` shares networks, cards and client
fingerprints too): these traps test what the prompts and their timing alone link.
"""

from __future__ import annotations

import numpy as np

from streamguard.sim.accounts import Account
from streamguard.sim.draw import (
    MS_PER_DAY,
    MS_PER_H,
    MS_PER_MIN,
    MS_PER_S,
    _human_clock,
    _log_skewed,
    _sessions,
    _window,
    daily_starts,
    diurnal_times,
    worker_shards,
)
from streamguard.sim.realtext_accounts import (
    VOICES,
    _Builder,
    _human_requests,
    _retries,
    _voice_mix,
    _wrap,
    benchmark_suite,
)
from streamguard.sim.realtext_catalogue import AGENT_FRAMEWORKS, AGENT_STEPS
from streamguard.sim.realtext_writer import _system_template, fill

__all__ = ["REALTEXT_TRAP_KINDS", "plant_realtext_traps"]

REALTEXT_TRAP_KINDS: tuple[str, ...] = (
    "enterprise_employee",
    "joint_benchmark",
    "timezone_casual",
    "reseller",
    "agent_framework",
)


def _field_popularity(b: _Builder, domains: np.ndarray) -> np.ndarray:
    """Subject popularity with the org's field (its domains) weighing five times more."""
    boost = np.where(np.isin(b.cat.subject_domain, domains), 5.0, 1.0) * b.pop
    return boost / boost.sum()


def enterprise_org(b: _Builder, size: int) -> None:
    """One org of ``size`` employees: one org id, one internal assistant's prompt, office hours."""
    rng = b.rng
    org = b.new_org()
    tpl = b.template("enterprise_system_prompt", _system_template(b.writer))
    use = float(rng.uniform(0.7, 1.0))
    office_peak = float(rng.uniform(0, 24))
    field = rng.choice(len(b.cat.domains), size=int(rng.integers(1, 4)), replace=False)
    pop = _field_popularity(b, field)
    for _ in range(size):
        n = _log_skewed(rng, 20, 300, 2.0)
        k = int(rng.integers(1, 5))
        subs = rng.choice(b.cat.n_subjects, size=k, replace=False, p=pop).astype(np.int32)
        a = b.account(Account("enterprise_employee", org_id=org))
        starts = diurnal_times(rng, min(n, 1 + int(rng.poisson(n / 10.0))), b.t0, b.t1, office_peak, 0.9)
        ts = _sessions(rng, n, starts, rng.uniform(20, 120) * MS_PER_S, b.t1)
        tpl_of = np.where(rng.random(n) < use, tpl, -1)
        start = len(b.rows)
        _human_requests(
            b, a, ts, subs[rng.choice(k, size=n, p=rng.dirichlet(np.ones(k)))], _voice_mix(rng, n, (4, 1, 0.5, 2)),
            p_famous=0.01, p_para=0.05, template_of=tpl_of, p_clause=0.2,
        )
        _retries(b, a, start, 0.03)


def joint_benchmark(b: _Builder, size: int) -> None:
    """``size`` accounts of one org run one suite in the same 15-110 minute burst."""
    rng = b.rng
    org = b.new_org()
    suite = benchmark_suite(b)
    m = suite.subject.shape[0]
    lo, hi = _window(rng, b.t0, b.t1, rng.uniform(15, 110) * MS_PER_MIN)
    for idx, ts in worker_shards(rng, m, size, lo, hi):
        a = b.account(Account("joint_benchmark", org_id=org))
        for i, t in zip(idx.tolist(), ts.tolist()):
            b.emit(a, t, int(suite.subject[i]), "benchmark", suite.template, int(suite.content[i]), suite.text[i])


def timezone_group(b: _Builder, size: int) -> None:
    """``size`` casual users of one time zone, online at the same hour every day."""
    rng = b.rng
    hour = float(rng.uniform(0, 24))
    day0 = (b.t0 // MS_PER_DAY) * MS_PER_DAY
    days = np.arange(day0, b.t1, MS_PER_DAY, dtype=np.int64) + int(hour * MS_PER_H)
    for _ in range(size):
        n = int(np.clip(round(rng.lognormal(np.log(10.0), 0.7)), 3, 60))
        subs, pw = b.popular(int(rng.integers(1, 4)), 1.0)
        ts = _sessions(rng, n, daily_starts(rng, days, b.t0, b.t1), rng.uniform(20, 150) * MS_PER_S, b.t1)
        a = b.account(Account("timezone_casual"))
        _human_requests(
            b, a, ts, subs[rng.choice(subs.shape[0], size=n, p=pw)], _voice_mix(rng, n, (3, 3, 1.5, 1)),
            p_famous=float(rng.beta(1.0, 15.0)), p_para=0.06,
        )


def reseller(b: _Builder) -> None:
    """1,200-3,500 requests of many end users, each on 1-3 popular subjects; half wrapped in a prompt."""
    rng = b.rng
    n = _log_skewed(rng, 1200, 3500, 2.0)
    tpl = b.template("reseller_wrapper", _system_template(b.writer)) if rng.random() < 0.5 else -1
    users = max(50, n // 12)
    share = rng.lognormal(0.0, 0.6, size=users)
    user = rng.choice(users, size=n, p=share / share.sum())
    ts = np.empty(n, np.int64)
    subs = np.empty(n, np.int32)
    for u in np.unique(user).tolist():
        mine = np.flatnonzero(user == u)
        picks, pw = b.popular(int(rng.integers(1, 4)), 1.0)
        peak, amp = _human_clock(rng)
        ts[mine] = diurnal_times(rng, mine.shape[0], b.t0, b.t1, peak, amp)
        subs[mine] = picks[rng.choice(picks.shape[0], size=mine.shape[0], p=pw)]
    order = np.argsort(ts, kind="stable")
    a = b.account(Account("reseller", org_id=b.new_org()))
    start = len(b.rows)
    voices = np.asarray(VOICES, dtype=object)[rng.choice(4, size=n, p=[0.4, 0.35, 0.1, 0.15])]
    _human_requests(b, a, ts[order], subs[order], voices, p_famous=0.03, p_para=0.03, template_of=np.full(n, tpl))
    _retries(b, a, start, 0.02)


def agent_framework(b: _Builder, size: int) -> None:
    """``size`` developers of different orgs running one agent framework.

    Every call starts with the framework's preamble; a developer runs 3-12 tasks at their own
    hours, each a chain of 3-10 calls 1-8 s apart on one of their 1-4 subjects, every call
    carrying the task and its last steps (the transcript the chain shares) and a new step.
    """
    rng, w = b.rng, b.writer
    preamble = w.pick(AGENT_FRAMEWORKS)
    preamble_tpl = preamble + "\n\n{q}"
    tpl = b.template("agent_framework_prompt", preamble_tpl)
    for _ in range(size):
        subs, pw = b.popular(int(rng.integers(1, 5)), 1.0)
        peak, amp = _human_clock(rng)
        tasks = int(rng.integers(3, 13))
        starts = np.sort(diurnal_times(rng, tasks, b.t0, b.t1, peak, amp))
        a = b.account(Account("agent_framework", org_id=b.new_org()))
        for t in range(tasks):
            q = w.question(int(subs[rng.choice(subs.shape[0], p=pw)]))
            task = w.render(q, "plain", 0.2)
            values = w.values(q)
            at = int(starts[t])
            done: list[str] = []
            for _ in range(int(rng.integers(3, 11))):
                history = "".join(f"Step {i + 1}: {d}\n" for i, d in list(enumerate(done))[-2:])
                number = len(done) + 1
                body = w.unique(lambda: f"Task: {task}\n{history}Step {number}: {fill(w.pick(AGENT_STEPS), values)}")
                b.emit(a, min(at, b.t1 - 1), q.subject, q.intent, tpl, q.content, _wrap(preamble_tpl, body))
                done.append(body.rsplit("\n", 1)[-1].split(": ", 1)[-1])
                at += int(rng.uniform(1, 8) * MS_PER_S)


def plant_realtext_traps(b: _Builder, seed: int, scale: float) -> None:
    """Add every trap kind to ``b`` from a stream of its own; counts and group sizes follow ``scale``."""
    ordinary = b.rng
    b.rng = b.writer.rng = np.random.default_rng([seed, *b"realtext-traps"])
    try:
        rng = b.rng
        shrink = min(1.0, max(0.3, scale))
        for _ in range(max(1, int(round(rng.integers(3, 6) * scale)))):
            enterprise_org(b, max(5, int(round(rng.integers(5, 26) * shrink))))
        for _ in range(max(1, int(round(rng.integers(1, 3) * scale)))):
            joint_benchmark(b, int(rng.integers(3, 7)))
        for _ in range(max(1, int(round(rng.integers(1, 3) * scale)))):
            timezone_group(b, max(8, int(round(rng.integers(20, 41) * scale))))
        for _ in range(max(1, int(round(rng.integers(1, 3) * scale)))):
            reseller(b)
        agent_framework(b, max(5, int(round(rng.integers(8, 21) * shrink))))
    finally:
        b.rng = b.writer.rng = ordinary
