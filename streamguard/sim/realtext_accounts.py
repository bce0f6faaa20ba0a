"""The real-text simulator's accounts: what each kind writes, and when.

The kinds and volumes follow ``behaviours.py`` (the latent simulator's), at
the smaller volumes a sentence model can embed. Each behaviour appends its
account's rows (time, subject, intent, template, content, text) to a
``_Builder``; ``realtext.write_prompts`` runs them and collects the rows.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

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
    _sweep,
    _window,
    diurnal_times,
)
from streamguard.sim.realtext_catalogue import DOC_FRAMES, DOC_TASKS, DOMAINS, FAMOUS
from streamguard.sim.realtext_writer import (
    VOICES,
    Catalogue,
    Question,
    Template,
    Writer,
    _distill_template,
    _fixed,
    _personal_template,
    _system_template,
    fill,
)

# Domains a targeted sweeper goes after: the capabilities worth distilling.
VALUABLE_KINDS = ("stem", "code", "professional")

_BENCH_FORMATS: tuple[str, ...] = (
    "The following is a multiple choice question about {s}.\n\n{stem}\nA. {o0}\nB. {o1}\nC. {o2}\nD. {o3}\nAnswer:",
    "Question: {stem}\nChoices: (A) {o0} (B) {o1} (C) {o2} (D) {o3}\nRespond with the letter of the correct choice only.",
    'Answer the following {s} question. Think step by step, then finish with "The answer is (X)".\n\n'
    "{stem}\n(A) {o0}\n(B) {o1}\n(C) {o2}\n(D) {o3}",
    "### {S} | item {i}\n{stem}\n\nOptions:\n1) {o0}\n2) {o1}\n3) {o2}\n4) {o3}\n\nReply with a single number.",
)
_BENCH_STEMS: tuple[str, ...] = (
    "Which of the following is most closely associated with {c}?",
    "Which statement about {c} is correct?",
    "In {s}, which concept is most directly related to {c}?",
    "A student learning about {c} would most likely also need to understand which of the following?",
    "Which of the following best illustrates {c}?",
)
# How a paraphrase sweeper asks for reasoning, in ever-changing words.
_REASONING_ASKS: tuple[str, ...] = (
    "Please show your reasoning.", "Walk me through your thinking.", "Explain how you get there.",
    "Take it one step at a time.", "Justify every step.", "I want to see the full derivation.",
    "Don't skip steps.", "Lay out the logic carefully.", "Think it through before answering.",
    "Show all intermediate steps.", "Explain the why, not just the what.", "Reason it out in detail.",
)


@dataclass
class _Builder:
    rng: np.random.Generator
    writer: Writer
    cat: Catalogue
    pop: np.ndarray
    t0: int
    t1: int
    accounts: list[Account] = field(default_factory=list)
    templates: list[Template] = field(default_factory=list)
    company_orgs: list[str] = field(default_factory=list)
    rows: list[tuple[int, int, int, str, int, int, str]] = field(default_factory=list)
    _orgs: set[str] = field(default_factory=set)

    def new_org(self) -> str:
        while True:
            org = "org-" + self.rng.bytes(5).hex()
            if org not in self._orgs:
                self._orgs.add(org)
                return org

    def company_org(self) -> str:
        k = len(self.company_orgs)
        p = 1.0 / np.arange(1, k + 1)
        return self.company_orgs[int(self.rng.choice(k, p=p / p.sum()))]

    def template(self, kind: str, text: str) -> int:
        self.templates.append(Template(kind, text))
        return len(self.templates) - 1

    def account(self, acct: Account) -> int:
        self.accounts.append(acct)
        return len(self.accounts) - 1

    def emit(self, a: int, ts: int, subject: int, intent: str, template: int, content: int, text: str) -> None:
        self.rows.append((a, int(min(max(ts, self.t0), self.t1 - 1)), subject, intent, template, content, text))

    def popular(self, k: int, concentration: float) -> tuple[np.ndarray, np.ndarray]:
        """``k`` distinct subjects by popularity, and personal weights over them."""
        k = min(k, self.cat.n_subjects)
        subs = self.rng.choice(self.cat.n_subjects, size=k, replace=False, p=self.pop)
        return subs.astype(np.int32), self.rng.dirichlet(np.full(k, concentration))


def _wrap(template: str, question: str) -> str:
    return template.replace("{q}", question)


def _ask(w: Writer, q: Question, voice: str, p_clause: float, template: str | None = None, p_reasoning: float = 0.0) -> str:
    """A new wording of ``q``, never sent before; wrapped in ``template`` if given.

    ``p_reasoning``: chance of asking for the reasoning, in changing words.
    """

    def make() -> str:
        text = w.render(q, voice, p_clause)
        if p_reasoning and w.rng.random() < p_reasoning:
            text = f"{text} {w.pick(_REASONING_ASKS)}"
        return _wrap(template, text) if template is not None else text

    return w.unique(make)


def _human_requests(
    b: _Builder,
    a: int,
    ts: np.ndarray,
    subs: np.ndarray,
    voices: np.ndarray,
    p_famous: float,
    p_para: float,
    template_of: np.ndarray | None = None,
    p_clause: float = 0.35,
) -> None:
    """Write one request per time: fresh questions, some paraphrased re-asks, some famous prompts."""
    w, rng, cat = b.writer, b.rng, b.cat
    famous = [(cat.find(d, s), text) for d, s, text in FAMOUS]
    prev: Question | None = None
    for i in range(ts.shape[0]):
        tpl = int(template_of[i]) if template_of is not None else -1
        if rng.random() < p_famous:
            j = int(rng.integers(len(famous)))
            # Famous prompts are typed word for word by many people (content ids -1, -2, ...);
            # a product or a personal template still wraps them.
            text = _wrap(b.templates[tpl].text, famous[j][1]) if tpl >= 0 else famous[j][1]
            b.emit(a, int(ts[i]), famous[j][0], "famous", tpl, -(j + 1), text)
            continue
        if prev is not None and rng.random() < p_para:
            q = prev  # re-ask the previous question in other words
        else:
            q = w.question(int(subs[i]))
        body = _ask(w, q, str(voices[i]), p_clause, b.templates[tpl].text if tpl >= 0 else None)
        b.emit(a, int(ts[i]), q.subject, q.intent, tpl, q.content, body)
        prev = q


def _retries(b: _Builder, a: int, start: int, p: float) -> None:
    """Resend a share ``p`` of the account's requests verbatim, 1-45 s later."""
    mine = b.rows[start:]
    n = int(b.rng.binomial(len(mine), p)) if mine else 0
    for j in b.rng.integers(0, len(mine), size=n) if n else ():
        r = mine[int(j)]
        b.emit(a, r[1] + int(b.rng.integers(1 * MS_PER_S, 45 * MS_PER_S)), r[2], r[3], r[4], r[5], r[6])


def _voice_mix(rng: np.random.Generator, n: int, alpha: Sequence[float]) -> np.ndarray:
    p = rng.dirichlet(np.asarray(alpha, float))
    return np.asarray(VOICES, dtype=object)[rng.choice(len(VOICES), size=n, p=p)]


# -- benign ------------------------------------------------------------------


def casual(b: _Builder) -> None:
    """2-60 requests on 1-3 popular subjects, in a few sessions, in the user's own voice."""
    rng = b.rng
    n = int(np.clip(round(rng.lognormal(np.log(8.0), 0.9)), 2, 60))
    subs, pw = b.popular(int(rng.integers(1, 4)), 1.0)
    org = b.company_org() if rng.random() < 0.1 else None
    a = b.account(Account("casual", org_id=org))
    peak, amp = _human_clock(rng)
    starts = diurnal_times(rng, min(n, 1 + int(rng.poisson(n / 8.0))), b.t0, b.t1, peak, amp)
    ts = _sessions(rng, n, starts, rng.uniform(20, 180) * MS_PER_S, b.t1)
    start = len(b.rows)
    _human_requests(
        b, a, ts, subs[rng.choice(subs.shape[0], size=n, p=pw)], _voice_mix(rng, n, (3, 3, 1.5, 1)),
        p_famous=float(rng.beta(1.0, 15.0)), p_para=0.06,
    )
    _retries(b, a, start, 0.05)


def power_user(b: _Builder) -> None:
    """100-600 requests: 1-3 personal templates, 3-10 favourite subjects, daily sessions."""
    rng = b.rng
    n = _log_skewed(rng, 100, 600, 2.5)
    subs, pw = b.popular(int(rng.integers(3, 11)), 0.7)
    k = int(rng.integers(1, 4))
    tpl = [b.template("personal_template", _personal_template(b.writer)) for _ in range(k)]
    use = rng.random(n) < rng.uniform(0.3, 0.9)
    tpl_of = np.where(use, np.asarray(tpl)[rng.choice(k, size=n, p=rng.dirichlet(np.ones(k)))], -1)
    org = b.company_org() if rng.random() < 0.4 else None
    a = b.account(Account("power_user", org_id=org))
    peak, _ = _human_clock(rng)
    day0 = (b.t0 // MS_PER_DAY) * MS_PER_DAY
    days = np.arange(day0, b.t1, MS_PER_DAY, dtype=np.int64)
    starts = days + int((peak - 2.0) * MS_PER_H) + rng.normal(0, 45 * MS_PER_MIN, size=days.shape[0]).astype(np.int64)
    starts = starts[(starts >= b.t0) & (starts < b.t1)]
    if starts.shape[0] == 0:
        starts = np.array([b.t0], np.int64)
    active = np.asarray(rng.random(starts.shape[0]) < rng.uniform(0.6, 1.0))
    active[rng.integers(starts.shape[0])] = True
    ts = _sessions(rng, n, starts[active], rng.uniform(10, 60) * MS_PER_S, b.t1)
    start = len(b.rows)
    _human_requests(
        b, a, ts, subs[rng.choice(subs.shape[0], size=n, p=pw)], _voice_mix(rng, n, (4, 1, 0.5, 2)),
        p_famous=0.005, p_para=0.05, template_of=tpl_of, p_clause=0.2,
    )
    _retries(b, a, start, 0.03)


def product(b: _Builder) -> None:
    """1,200-3,500 requests: one system prompt around end users' questions, the population's mix."""
    rng = b.rng
    n = _log_skewed(rng, 1200, 3500, 2.0)
    tpl = b.template("system_prompt", _system_template(b.writer))
    a = b.account(Account("product", org_id=b.new_org()))
    peak, _ = _human_clock(rng)
    ts = diurnal_times(rng, n, b.t0, b.t1, peak, float(rng.uniform(0.3, 0.7)))
    subs = rng.choice(b.cat.n_subjects, size=n, p=b.pop).astype(np.int32)
    start = len(b.rows)
    # Many end users behind one key: each request in a voice of its own.
    voices = np.asarray(VOICES, dtype=object)[rng.choice(4, size=n, p=[0.4, 0.35, 0.1, 0.15])]
    _human_requests(b, a, ts, subs, voices, p_famous=0.03, p_para=0.03, template_of=np.full(n, tpl))
    _retries(b, a, start, 0.02)


def _document(b: _Builder, doctype: str, subs: np.ndarray, pw: np.ndarray) -> tuple[int, str]:
    """One document of ``doctype`` about a subject drawn from ``subs``; returns (subject, text)."""
    w, rng = b.writer, b.rng
    sub = int(subs[rng.choice(subs.shape[0], p=pw)])
    frames = DOC_FRAMES[doctype]
    k = int(rng.integers(2, 5))
    picked = rng.choice(len(frames), size=min(k, len(frames)), replace=False)
    q = w.question(sub, "explain")
    values = w.values(q)
    return sub, " ".join(fill(frames[int(i)], values) for i in picked)


def _batch_request(b: _Builder, task: str, doctype: str, subs: np.ndarray, pw: np.ndarray) -> tuple[int, str]:
    """A new document of ``doctype`` in the job's ``task``: (subject, text)."""
    drawn: list[int] = []

    def make() -> str:
        sub, doc = _document(b, doctype, subs, pw)
        drawn.append(sub)
        return task.replace("{doc}", doc)

    text = b.writer.unique(make)
    return drawn[-1], text


def batch_job(b: _Builder) -> None:
    """200-900 requests in 1-6 h: one task template over documents of one kind, 1-4 subjects.

    A quarter of the jobs are partly re-run later (the same documents,
    verbatim): benign within-account duplicates.
    """
    rng, w = b.rng, b.writer
    n = _log_skewed(rng, 200, 900, 2.0)
    rerun = rng.random() < 0.25
    n_orig = int(np.ceil(n / (1.0 + rng.uniform(0.2, 1.0)))) if rerun else n
    subs, pw = b.popular(int(rng.integers(1, 5)), 1.5)
    doctype = w.pick(tuple(DOC_FRAMES))
    task = _fixed(w.pick(DOC_TASKS).replace("{doctype}", doctype), random.Random(int(rng.integers(2**62))))
    tpl = b.template("batch_template", task)
    org = b.company_org() if rng.random() < 0.7 else None
    a = b.account(Account("batch_job", org_id=org))
    lo, hi = _window(rng, b.t0, b.t1, rng.uniform(1, 6) * MS_PER_H)
    ts = np.sort(rng.integers(lo, hi + 1, size=n_orig))
    start = len(b.rows)
    for t in ts:
        w.n_content += 1
        content = w.n_content
        sub, text = _batch_request(b, task, doctype, subs, pw)
        b.emit(a, int(t), sub, "document", tpl, content, text)
    _retries(b, a, start, 0.01)
    if rerun:
        first = b.rows[start : start + (n - n_orig)]
        if first:
            span = first[-1][1] - first[0][1]
            at = min(int(hi + rng.uniform(1, 12) * MS_PER_H), b.t1 - 1 - span)
            for r in first:
                b.emit(a, at + (r[1] - first[0][1]), r[2], r[3], r[4], r[5], r[6])


@dataclass(frozen=True)
class BenchmarkSuite:
    """Fixed items (subject, content, text) run verbatim by every account that runs the suite."""

    subject: np.ndarray
    content: np.ndarray
    text: tuple[str, ...]
    template: int


def benchmark_suite(b: _Builder) -> BenchmarkSuite:
    """Every subject (or a broad subset touching every domain) once or twice, in one format."""
    rng, w, cat = b.rng, b.writer, b.cat
    if rng.random() < 0.5:
        cells = np.arange(cat.n_subjects, dtype=np.int32)
    else:
        keep = rng.random(cat.n_subjects) < rng.uniform(0.6, 0.9)
        for d in range(len(cat.domains)):
            own = np.flatnonzero(cat.subject_domain == d)
            if not keep[own].any():
                keep[rng.choice(own)] = True
        cells = np.flatnonzero(keep).astype(np.int32)
    reps = rng.integers(1, int(rng.integers(1, 3)) + 1, size=cells.shape[0])
    subs = rng.permutation(np.repeat(cells, reps)).astype(np.int32)
    fmt = w.pick(_BENCH_FORMATS)
    tpl = b.template("benchmark_template", fmt)
    texts: list[str] = []
    contents: list[int] = []
    for i, sub in enumerate(subs):
        q = w.question(int(sub), "explain")
        texts.append(_bench_item(b, fmt, q, i + 1))
        contents.append(q.content)
    return BenchmarkSuite(subs, np.asarray(contents, np.int64), tuple(texts), tpl)


def _bench_item(b: _Builder, fmt: str, q: Question, number: int) -> str:
    """Item ``number`` of a suite in format ``fmt``: a stem on ``q`` and four options from its domain."""
    w, rng, cat = b.writer, b.rng, b.cat
    s = cat.subjects[q.subject]
    same_domain = cat.subjects_of([int(cat.subject_domain[q.subject])])
    others_pool = same_domain[same_domain != q.subject]
    values = w.values(q)

    def make() -> str:
        others = [int(x) for x in rng.choice(others_pool, size=3, replace=others_pool.size < 3)]
        opts = [fill(cat.subjects[o].concepts[int(rng.integers(len(cat.subjects[o].concepts)))], values) for o in others]
        opts.insert(int(rng.integers(4)), values("c2", 0))
        stem = fill(w.pick(_BENCH_STEMS), values)
        text = fmt.replace("{stem}", stem).replace("{s}", s.name).replace("{S}", s.name.upper()).replace("{i}", str(number))
        for j, o in enumerate(opts):
            text = text.replace(f"{{o{j}}}", o)
        return text

    return w.unique(make)


def benchmark(b: _Builder, suite: BenchmarkSuite) -> None:
    """Run ``suite`` once, in order, in one burst of 15-110 minutes."""
    rng = b.rng
    m = suite.subject.shape[0]
    lo, hi = _window(rng, b.t0, b.t1, rng.uniform(15, 110) * MS_PER_MIN)
    step = (hi - lo) / m
    ts = (lo + np.arange(m) * step + rng.random(m) * step).astype(np.int64)
    org = b.company_org() if rng.random() < 0.6 else None
    a = b.account(Account("benchmark", org_id=org))
    for i in range(m):
        b.emit(a, int(ts[i]), int(suite.subject[i]), "benchmark", suite.template, int(suite.content[i]), suite.text[i])


# -- distillers --------------------------------------------------------------

# Sweepers ask for what is worth learning: explanations, solutions, code.
_SWEEP_WEIGHTS = {"explain": 1.5, "solve": 1.5, "code": 1.5, "translate": 0.3, "write": 0.5, "quiz": 0.5}


def _bot_times(b: _Builder, n: int, lo: int, hi: int) -> np.ndarray:
    return diurnal_times(b.rng, n, lo, hi, float(b.rng.uniform(0, 24)), float(b.rng.uniform(0.0, 0.4)))


def _distiller_org(b: _Builder) -> str | None:
    return b.new_org() if b.rng.random() < 0.2 else None


def _sweep_requests(
    b: _Builder, a: int, ts: np.ndarray, subs: np.ndarray, tpl_of: np.ndarray, paraphrase: bool = False
) -> None:
    """Fresh questions over ``subs``; templated rows wrap a plain question in their template."""
    w, rng = b.writer, b.rng
    for i in range(ts.shape[0]):
        q = w.question(int(subs[i]), weights=_SWEEP_WEIGHTS)
        tpl = int(tpl_of[i])
        if tpl >= 0:
            text = _ask(w, q, "plain", 0.1, b.templates[tpl].text)
        elif paraphrase:
            # Varied wording, no template: a voice per request, reasoning asked for in changing words.
            voice = VOICES[int(rng.choice(4, p=[0.5, 0.15, 0.05, 0.3]))]
            text = _ask(w, q, voice, 0.4, p_reasoning=0.5)
        else:
            text = _ask(w, q, "plain", 0.2)
        b.emit(a, int(ts[i]), q.subject, q.intent, tpl, q.content, text)


def _sweep_templates(b: _Builder, n: int, k: int, kind: str) -> np.ndarray:
    tpl = np.array([b.template(kind, _distill_template(b.writer)) for _ in range(k)])
    return tpl[b.rng.choice(k, size=n, p=b.rng.dirichlet(np.ones(k)))]


def template_sweeper(b: _Builder) -> None:
    """500-1,500 requests in 1-3 days, each in one of 1-3 instruction templates, even over all subjects."""
    rng = b.rng
    n = _log_skewed(rng, 500, 1500, 2.5)
    lo, hi = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    tpl_of = _sweep_templates(b, n, int(rng.integers(1, 4)), "sweep_template")
    a = b.account(Account("template_sweeper", org_id=_distiller_org(b)))
    subs = _sweep(rng, np.arange(b.cat.n_subjects, dtype=np.int32), n)
    _sweep_requests(b, a, _bot_times(b, n, lo, hi), subs, tpl_of)


def paraphrase_sweeper(b: _Builder) -> None:
    """Like the template sweeper, but every prompt freshly worded: no template, no repeats."""
    rng = b.rng
    n = _log_skewed(rng, 500, 1500, 2.5)
    lo, hi = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    a = b.account(Account("paraphrase_sweeper", org_id=_distiller_org(b)))
    subs = _sweep(rng, np.arange(b.cat.n_subjects, dtype=np.int32), n)
    _sweep_requests(b, a, _bot_times(b, n, lo, hi), subs, np.full(n, -1), paraphrase=True)


def targeted_sweeper(b: _Builder) -> None:
    """300-900 requests even over every subject of 2-3 valuable domains; half templated."""
    rng, cat = b.rng, b.cat
    n = _log_skewed(rng, 300, 900, 2.5)
    valuable = [d for d, name in enumerate(cat.domains) if DOMAINS[name][0] in VALUABLE_KINDS]
    domains = rng.choice(valuable, size=int(rng.integers(2, 4)), replace=False)
    lo, hi = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    templated = rng.random() < 0.5
    tpl_of = _sweep_templates(b, n, int(rng.integers(1, 3)), "sweep_template") if templated else np.full(n, -1)
    a = b.account(Account("targeted_sweeper", org_id=_distiller_org(b)))
    _sweep_requests(b, a, _bot_times(b, n, lo, hi), _sweep(rng, cat.subjects_of(domains), n), tpl_of)


def slow_sweeper(b: _Builder) -> None:
    """120-300 requests spread evenly over the whole period, all subjects; half templated."""
    rng = b.rng
    n = int(rng.integers(120, 301))
    ts = (b.t0 + (np.arange(n) + rng.random(n)) * ((b.t1 - b.t0) / n)).astype(np.int64)
    templated = rng.random() < 0.5
    tpl_of = _sweep_templates(b, n, 1, "sweep_template") if templated else np.full(n, -1)
    a = b.account(Account("slow_sweeper", org_id=_distiller_org(b)))
    _sweep_requests(b, a, ts, _sweep(rng, np.arange(b.cat.n_subjects, dtype=np.int32), n), tpl_of)


def campaign(b: _Builder, campaign_id: str, n_members: int, shared_org: bool) -> None:
    """Members split the subjects, share 1-3 templates and one operator's clock.

    Each member covers one slice of a random partition of the subjects plus a
    quarter of the next slice, sends 60-200 requests, 85-100% of them in the
    campaign's templates, within a sub-window of the campaign's 1-3 days.
    """
    rng, cat = b.rng, b.cat
    k = int(rng.integers(1, 4))
    tpl = np.array([b.template("campaign_template", _distill_template(b.writer)) for _ in range(k)])
    tpl_p = rng.dirichlet(np.ones(k))
    org = b.new_org() if shared_org else None
    ca, cz = _window(rng, b.t0, b.t1, rng.uniform(1, 3) * MS_PER_DAY)
    peak, amp = float(rng.uniform(0, 24)), float(rng.uniform(0.1, 0.5))
    slices = np.array_split(rng.permutation(cat.n_subjects).astype(np.int32), n_members)
    for i in range(n_members):
        nxt = slices[(i + 1) % n_members]
        cells = np.concatenate([slices[i], nxt[: max(1, nxt.shape[0] // 4)]])
        n = _log_skewed(rng, 60, 200, 1.5)
        lo, hi = _window(rng, ca, cz, (cz - ca) * rng.uniform(0.3, 0.8))
        ts = diurnal_times(rng, n, lo, hi, peak, amp)
        tpl_of = np.where(rng.random(n) < rng.uniform(0.85, 1.0), tpl[rng.choice(k, size=n, p=tpl_p)], -1)
        a = b.account(Account("campaign_member", campaign=campaign_id, org_id=org))
        _sweep_requests(b, a, ts, _sweep(rng, cells, n), tpl_of)

