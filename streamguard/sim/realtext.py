"""Real-text traffic: prompts written as text, embedded by a real sentence model.

The main simulator (``world.py``) draws embeddings from a latent geometry of
its own making. This mode writes each prompt as English text, from a
catalogue of subjects (26 domains, 160 subtopics, ~950 concepts), intents
(explain, summarise, write code, translate, compare, give examples, ...) and
templates (distillers' instruction wrappers, products' system prompts, batch
jobs' document tasks, benchmark formats), then embeds the texts with
all-MiniLM-L6-v2 (``text_embedding.py``), so detectors meet the geometry of a
real model: unrelated prompts at cosine ~0-0.2, a shared template lifting
different questions only part of the way, a batch job's prompts close
together without being copies.

The account kinds are those of ``behaviours.py``, at smaller volumes (the
sentence model embeds ~60 of these prompts a second on one CPU core): ~21-24k
requests from ~450-510 accounts at scale 1. Every request gets its own
wording (slots, phrasing, voice, added clauses); identical texts from
unrelated accounts happen only where they would in real traffic: retries,
batch re-runs, a benchmark suite run by several accounts, and a handful of
famous prompts.

``write_prompts`` is the pure text generator (no model, fast, deterministic);
``simulate_realtext`` adds embeddings and returns the same table and labels
as ``streamguard.sim.simulate``.
"""

from __future__ import annotations

import random
import re
import time
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamguard.sim import LABELS_VERSION, SimulatedTraffic, _hex_ids, traffic_schema
from streamguard.sim.behaviours import (
    BENIGN_KINDS,
    DISTILLER_KINDS,
    MS_PER_DAY,
    MS_PER_H,
    MS_PER_MIN,
    MS_PER_S,
    Account,
    _human_clock,
    _log_skewed,
    _sessions,
    _sweep,
    _window,
    diurnal_times,
)
from streamguard.sim.realtext_catalogue import (
    AUDIENCES,
    CLAUSES,
    DOC_FRAMES,
    DOC_TASKS,
    DOMAINS,
    FAMOUS,
    INTENTS,
    INTENTS_BY_KIND,
    SLOTS,
    TEMPLATE_PARTS,
)
from streamguard.sim.text_embedding import EMBED_DIM, MODEL_NAME

__all__ = [
    "Catalogue",
    "Prompts",
    "RealTextConfig",
    "RealTextTraffic",
    "Subject",
    "catalogue",
    "simulate_realtext",
    "write_prompt_texts",
    "write_prompts",
]

KINDS: tuple[str, ...] = BENIGN_KINDS + DISTILLER_KINDS
VOICES: tuple[str, ...] = ("plain", "casual", "terse", "formal")
# Domains a targeted sweeper goes after: the capabilities worth distilling.
VALUABLE_KINDS = ("stem", "code", "professional")

# Programming language of a code subject (by subtopic name, else by domain).
_SUBJECT_LANG: dict[str, tuple[str, ...]] = {
    "python programming": ("Python",),
    "javascript programming": ("JavaScript", "TypeScript"),
    "typescript": ("TypeScript",),
    "rust": ("Rust",),
    "c and c plus plus": ("C", "C++"),
    "go": ("Go",),
    "java": ("Java",),
    "sql": ("SQL",),
    "shell and devops": ("Bash", "YAML"),
}

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
_CASUAL_PREFIX = ("hey ", "ok so ", "quick q: ", "hi, ", "pls help: ", "hmm ", "question: ", "yo ")
_CASUAL_SUFFIX = (" thx", " pls", " ty", " lol", " asap", " :)", " thanks")
_FORMAL_PREFIX = ("Good morning. ", "Hello, ", "Dear assistant, ", "I would be grateful for your help. ")
_FORMAL_SUFFIX = (" Thank you in advance.", " Many thanks.", " I appreciate your help.", " Kind regards.")

_SLOT_RE = re.compile(r"\{(\w+)\}")


# ---------------------------------------------------------------------------
# catalogue


@dataclass(frozen=True)
class Subject:
    """One subtopic: the cell a coverage sweep enumerates."""

    index: int
    domain: str
    kind: str
    name: str
    concepts: tuple[str, ...]


@dataclass(frozen=True)
class Catalogue:
    """Every subject, in a fixed order.

    Attributes
    ----------
    subjects : tuple of Subject
    domains : tuple of str
    subject_domain : (n_subjects,) int32
        Index into ``domains``.
    """

    subjects: tuple[Subject, ...]
    domains: tuple[str, ...]
    subject_domain: np.ndarray

    @property
    def n_subjects(self) -> int:
        return len(self.subjects)

    def subjects_of(self, domains: Sequence[int] | np.ndarray) -> np.ndarray:
        """(m,) int32: the subjects of the given domain indices."""
        return np.flatnonzero(np.isin(self.subject_domain, np.asarray(domains))).astype(np.int32)

    def find(self, domain: str, name: str) -> int:
        """Index of the subject ``name`` of ``domain``."""
        for s in self.subjects:
            if s.domain == domain and s.name == name:
                return s.index
        raise KeyError(f"no subject {name!r} in domain {domain!r}")


@lru_cache(maxsize=1)
def catalogue() -> Catalogue:
    """The catalogue parsed from ``realtext_catalogue.DOMAINS`` (built once)."""
    subjects: list[Subject] = []
    domains = tuple(DOMAINS)
    dom_idx: list[int] = []
    for d, (domain, (kind, lines)) in enumerate(DOMAINS.items()):
        if kind not in INTENTS_BY_KIND:
            raise ValueError(f"domain {domain!r} has unknown kind {kind!r}")
        for line in lines.strip().splitlines():
            name, _, rest = line.partition(":")
            concepts = tuple(c.strip() for c in rest.split(";") if c.strip())
            if len(concepts) < 3:
                raise ValueError(f"subject {name!r} of {domain!r} needs at least 3 concepts")
            subjects.append(Subject(len(subjects), domain, kind, name.strip(), concepts))
            dom_idx.append(d)
    return Catalogue(tuple(subjects), domains, np.array(dom_idx, np.int32))


# ---------------------------------------------------------------------------
# text writing


def fill(pattern: str, values: Callable[[str, int], str]) -> str:
    """Replace each ``{name}`` of ``pattern`` by ``values(name, occurrence)``."""
    seen: dict[str, int] = {}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1)
        k = seen.get(name, 0)
        seen[name] = k + 1
        return values(name, k)

    return _SLOT_RE.sub(sub, pattern)


def _slot_value(r: random.Random, name: str) -> str:
    """A fresh value of a slot that is not a concept."""
    key = name.lower()
    if key == "small":
        return str(r.randint(2, 9))
    if key == "num":
        return str(r.randint(10, 99))
    if key == "big":
        return str(r.randint(100, 9999))
    if key == "year":
        return str(r.randint(1500, 2020))
    if key == "k":
        return str(r.randint(3, 10))
    if key == "aud":
        return r.choice(AUDIENCES)
    if key in SLOTS:
        return r.choice(SLOTS[key])
    raise KeyError(f"unknown slot {{{name}}}")


def _case(name: str, value: str) -> str:
    """``{C}`` capitalises the value's first letter, ``{CITY}`` upper-cases it."""
    if len(name) > 1 and name.isupper():
        return value.upper()
    if name[:1].isupper():
        return value[:1].upper() + value[1:]
    return value


@dataclass(frozen=True)
class Question:
    """What a prompt asks, apart from its wording: equal questions are paraphrases.

    ``seed`` fixes the slot values (numbers, places, names), so a paraphrase
    asks about the same numbers in other words.
    """

    subject: int
    concept: int
    concept2: int
    intent: str
    seed: int
    content: int


class Writer:
    """Writes prompt texts; remembers every text so none repeats by accident.

    Parameters
    ----------
    rng : numpy.random.Generator
    cat : Catalogue
    """

    def __init__(self, rng: np.random.Generator, cat: Catalogue) -> None:
        self.rng = rng
        self.cat = cat
        self.seen: set[str] = set()
        self.n_content = 0
        self.collisions = 0

    # -- choices ------------------------------------------------------------

    def pick(self, seq: Sequence[str]) -> str:
        return seq[int(self.rng.integers(len(seq)))]

    def intent_for(self, subject: int, weights: dict[str, float] | None = None) -> str:
        """An intent that fits the subject's kind (optionally reweighted)."""
        table = INTENTS_BY_KIND[self.cat.subjects[subject].kind]
        names = list(table)
        w = np.array([table[n] * (weights.get(n, 1.0) if weights else 1.0) for n in names])
        if not w.sum() > 0:
            w = np.array([table[n] for n in names], float)
        return names[int(self.rng.choice(len(names), p=w / w.sum()))]

    def question(self, subject: int, intent: str | None = None, weights: dict[str, float] | None = None) -> Question:
        """A new question (new content id) on ``subject``."""
        s = self.cat.subjects[subject]
        m = len(s.concepts)
        c = int(self.rng.integers(m))
        c2 = (c + 1 + int(self.rng.integers(m - 1))) % m
        self.n_content += 1
        return Question(
            subject, c, c2, intent or self.intent_for(subject, weights), int(self.rng.integers(2**62)), self.n_content
        )

    # -- rendering ----------------------------------------------------------

    def values(self, q: Question) -> Callable[[str, int], str]:
        """Slot values of one question: fixed by ``q.seed``, one per (name, occurrence)."""
        s = self.cat.subjects[q.subject]
        cache: dict[tuple[str, int], str] = {}

        def values(name: str, k: int) -> str:
            key = (name.lower(), k)
            if key not in cache:
                if key[0] in ("c", "c2"):
                    idx = q.concept if key[0] == "c" else q.concept2
                    v = fill(s.concepts[idx], self.values(Question(q.subject, idx, idx, "", q.seed + 7 * (idx + 1), 0)))
                elif key[0] == "s":
                    v = s.name
                elif key[0] == "lang":
                    langs = _SUBJECT_LANG.get(s.name) or _SUBJECT_LANG.get(s.domain) or SLOTS["plang"]
                    v = random.Random(f"{q.seed}:lang").choice(langs)
                else:
                    v = _slot_value(random.Random(f"{q.seed}:{key[0]}:{k}"), key[0])
                cache[key] = v
            return _case(name, cache[key])

        return values

    def render(self, q: Question, voice: str = "plain", p_clause: float = 0.35) -> str:
        """One wording of ``q`` in ``voice`` (``VOICES``), with 0-2 added clauses."""
        rng = self.rng
        key = f"{q.intent}/terse" if voice == "terse" else q.intent
        values = self.values(q)
        text = fill(self.pick(INTENTS[key]), values)
        if voice != "terse" and rng.random() < p_clause:
            clauses = [fill(self.pick(CLAUSES), values)]
            if rng.random() < 0.3:
                clauses.append(fill(self.pick(CLAUSES), values))
            text = " ".join(clauses + [text]) if rng.random() < 0.2 else " ".join([text] + clauses)
        return self._voice(text, voice)

    def _voice(self, text: str, voice: str) -> str:
        rng = self.rng
        if voice in ("casual", "terse"):
            if voice == "terse" or rng.random() < 0.8:
                text = text.lower()
            if rng.random() < 0.6:
                text = text.rstrip(".")
            if voice == "casual":
                if rng.random() < 0.3:
                    text = self.pick(_CASUAL_PREFIX) + text
                if rng.random() < 0.2:
                    text = text + self.pick(_CASUAL_SUFFIX)
            if rng.random() < 0.25:
                text = self._typo(text)
        elif voice == "formal":
            if rng.random() < 0.5:
                text = self.pick(_FORMAL_PREFIX) + text
            if rng.random() < 0.5:
                text = text + self.pick(_FORMAL_SUFFIX)
        return text

    def _typo(self, text: str) -> str:
        """Swap two adjacent letters inside one longer word."""
        words = text.split(" ")
        long = [i for i, w in enumerate(words) if len(w) > 4 and w.isalpha()]
        if not long:
            return text
        i = long[int(self.rng.integers(len(long)))]
        w = words[i]
        j = 1 + int(self.rng.integers(len(w) - 3))
        words[i] = w[:j] + w[j + 1] + w[j] + w[j + 2 :]
        return " ".join(words)

    def clause(self) -> str:
        """One added clause with fresh slot values."""
        r = random.Random(int(self.rng.integers(2**62)))
        return fill(self.pick(CLAUSES), lambda n, k: "this topic" if n == "s" else _case(n, _slot_value(r, n)))

    def unique(self, make: Callable[[], str]) -> str:
        """A text from ``make`` that no earlier request has used.

        Retries a few times, then adds a clause; the few that still collide
        get a marker (counted in ``collisions``).
        """
        for attempt in range(12):
            text = make()
            if attempt >= 6:
                text = f"{text} {self.clause()}"
            if text not in self.seen:
                self.seen.add(text)
                return text
        self.collisions += 1
        text = f"{make()} (#{self.collisions})"
        self.seen.add(text)
        return text


# ---------------------------------------------------------------------------
# templates


@dataclass(frozen=True)
class Template:
    """A fixed wrapper; ``text`` holds ``{q}`` (or ``{doc}``) where the request goes."""

    kind: str
    text: str


def _distill_template(w: Writer) -> str:
    parts = TEMPLATE_PARTS
    return (
        w.pick(parts["distill_layout"])
        .replace("{role}", w.pick(parts["distill_role"]))
        .replace("{reasoning}", w.pick(parts["distill_reasoning"]))
        .replace("{format}", w.pick(parts["distill_format"]))
        .replace(".:", ":")
    )


def _fixed(pattern: str, r: random.Random, keep: tuple[str, ...] = ("q", "doc")) -> str:
    """Fill every slot of ``pattern`` except ``keep`` once, with values from ``r``."""
    return fill(pattern, lambda n, k: "{" + n + "}" if n in keep else _case(n, _slot_value(r, n)))


def _personal_template(w: Writer) -> str:
    r = random.Random(int(w.rng.integers(2**62)))
    prefix = w.pick(TEMPLATE_PARTS["personal_prefix"]) if w.rng.random() < 0.7 else ""
    suffix = w.pick(TEMPLATE_PARTS["personal_suffix"])
    return _fixed(" ".join(p for p in (prefix, "{q}", suffix) if p), r)


def _system_template(w: Writer) -> str:
    r = random.Random(int(w.rng.integers(2**62)))
    bot = w.pick(TEMPLATE_PARTS["bot"])
    return _fixed(w.pick(TEMPLATE_PARTS["system_prompt"]).replace("{bot}", bot), r)


# ---------------------------------------------------------------------------
# traffic


@dataclass(frozen=True)
class RealTextConfig:
    """Parameters of one real-text simulation.

    Attributes
    ----------
    seed : int
        Seeds the subjects' popularity and all sampling.
    scale : float
        Multiplies account counts; per-account volumes stay fixed. At 1.0:
        ~450-510 accounts and ~21k-24k requests.
    days : float
        Length of the simulated period.
    start_ms : int
        Start of the period, epoch ms (default 2026-01-01T00:00Z).
    """

    seed: int = 0
    scale: float = 1.0
    days: float = 3.0
    start_ms: int = 1_767_225_600_000

    def __post_init__(self) -> None:
        if not self.scale > 0:
            raise ValueError(f"scale must be > 0, got {self.scale!r}")
        if not self.days * 86_400_000 >= 3_600_000:
            raise ValueError(f"days must cover at least one hour, got {self.days!r}")


@dataclass
class Prompts:
    """Written requests and their ground truth, row-aligned.

    Attributes
    ----------
    account : (n,) int32
        Index into ``accounts``.
    ts : (n,) int64
        Event time, epoch ms.
    subject, domain : (n,) int32
        Subtopic (index into ``catalogue.subjects``) and its domain.
    intent : (n,) object
        Intent name, or ``"benchmark"``, ``"document"``, ``"famous"``.
    template : (n,) int32
        Index into ``templates``, -1 for none.
    content : (n,) int64
        Question id: equal ``content`` with different text is a paraphrase.
    text : list of str
    accounts : list of Account
    templates : list of Template
    catalogue : Catalogue
    subject_pop : (n_subjects,) float64
        The population's popularity of each subject.
    """

    account: np.ndarray
    ts: np.ndarray
    subject: np.ndarray
    intent: np.ndarray
    template: np.ndarray
    content: np.ndarray
    text: list[str]
    accounts: list[Account]
    templates: list[Template]
    catalogue: Catalogue
    subject_pop: np.ndarray

    @property
    def domain(self) -> np.ndarray:
        return self.catalogue.subject_domain[self.subject]

    def __len__(self) -> int:
        return len(self.text)

    def take(self, order: np.ndarray) -> Prompts:
        """The rows in ``order``."""
        return Prompts(
            self.account[order], self.ts[order], self.subject[order], self.intent[order], self.template[order],
            self.content[order], [self.text[i] for i in order], self.accounts, self.templates, self.catalogue,
            self.subject_pop,
        )

    def kind_of_rows(self) -> np.ndarray:
        """(n,) object: the kind of each row's account."""
        return np.array([a.kind for a in self.accounts], dtype=object)[self.account]


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


# ---------------------------------------------------------------------------
# population


def plan_population(rng: np.random.Generator, scale: float) -> tuple[dict[str, int], tuple[int, ...]]:
    """Account counts per kind and campaign sizes for ``scale``.

    At scale 1: ~450-510 accounts (~7% distillers, counting campaign
    members). Every kind has at least one account (benchmarks two, so a suite
    can run twice); campaigns keep at least 6 members.
    """
    c: dict[str, int] = {}
    c["casual"] = max(1, int(round(rng.integers(380, 461) * scale)))
    c["power_user"] = max(1, int(round(14 * scale)))
    c["product"] = max(1, int(round(2 * scale)))
    c["batch_job"] = max(1, int(round(5 * scale)))
    c["benchmark"] = max(2, int(round(4 * scale)))
    c["template_sweeper"] = max(1, int(round(3 * scale)))
    c["paraphrase_sweeper"] = max(1, int(round(2 * scale)))
    c["targeted_sweeper"] = max(1, int(round(3 * scale)))
    c["slow_sweeper"] = max(1, int(round(3 * scale)))
    n_camp = max(1, int(round(2 * scale)))
    shrink = min(1.0, max(0.4, scale))
    sizes = tuple(max(6, int(round(rng.integers(12, 21) * shrink))) for _ in range(n_camp))
    c["campaign_member"] = int(sum(sizes))
    return {k: c[k] for k in KINDS}, sizes


def _subject_popularity(rng: np.random.Generator, n: int) -> np.ndarray:
    """Zipf-like popularity (exponent 1) over subjects in a random order."""
    ranks = rng.permutation(n) + 1
    p = 1.0 / ranks.astype(float)
    return p / p.sum()


def write_prompts(config: RealTextConfig) -> Prompts:
    """Write the labelled requests as text (no embedding).

    Parameters
    ----------
    config : RealTextConfig

    Returns
    -------
    Prompts
        Rows in generation order (by account); same config, same output.
    """
    seq = np.random.SeedSequence([config.seed, 0x7E47])
    rng_pop, rng_acct = (np.random.default_rng(s) for s in seq.spawn(2))
    cat = catalogue()
    t0 = int(config.start_ms)
    t1 = t0 + int(round(config.days * 86_400_000))
    b = _Builder(rng_acct, Writer(rng_acct, cat), cat, _subject_popularity(rng_pop, cat.n_subjects), t0, t1)
    counts, sizes = plan_population(rng_acct, config.scale)
    b.company_orgs = [b.new_org() for _ in range(max(2, sum(counts.values()) // 30))]
    for _ in range(counts["casual"]):
        casual(b)
    for _ in range(counts["power_user"]):
        power_user(b)
    for _ in range(counts["product"]):
        product(b)
    for _ in range(counts["batch_job"]):
        batch_job(b)
    n_bench = counts["benchmark"]
    suites = [benchmark_suite(b) for _ in range(max(1, n_bench // 2))]
    for i in range(n_bench):
        benchmark(b, suites[i] if i < len(suites) else suites[int(rng_acct.integers(len(suites)))])
    for _ in range(counts["template_sweeper"]):
        template_sweeper(b)
    for _ in range(counts["paraphrase_sweeper"]):
        paraphrase_sweeper(b)
    for _ in range(counts["targeted_sweeper"]):
        targeted_sweeper(b)
    for _ in range(counts["slow_sweeper"]):
        slow_sweeper(b)
    for i, size in enumerate(sizes):
        campaign(b, f"campaign-{i}", size, shared_org=(i % 2 == 0))

    cols = list(zip(*b.rows))
    return Prompts(
        account=np.asarray(cols[0], np.int32),
        ts=np.asarray(cols[1], np.int64),
        subject=np.asarray(cols[2], np.int32),
        intent=np.asarray(cols[3], dtype=object),
        template=np.asarray(cols[4], np.int32),
        content=np.asarray(cols[5], np.int64),
        text=list(cols[6]),
        accounts=b.accounts,
        templates=b.templates,
        catalogue=cat,
        subject_pop=b.pop,
    )


@dataclass
class RealTextTraffic(SimulatedTraffic):
    """Simulated traffic whose embeddings come from written prompts.

    ``table`` and ``labels`` are those of :class:`SimulatedTraffic`;
    ``prompts`` holds each row's text and ground truth, in table order
    (``latent`` is None: there is no latent geometry here).
    """

    prompts: Prompts | None = field(default=None, repr=False)
    embed_seconds: float = 0.0
    embedded: int = 0
    cached: int = 0


def simulate_realtext(config: RealTextConfig, embedder: Callable[[Sequence[str]], np.ndarray] | None = None) -> RealTextTraffic:
    """Generate labelled real-text traffic.

    Parameters
    ----------
    config : RealTextConfig
    embedder : callable or None
        ``texts -> (n, 384) float32`` unit rows; default a
        :class:`~streamguard.sim.text_embedding.CachedEmbedder` over the
        packaged all-MiniLM-L6-v2 and the default cache folder. An object
        with ``computed``/``hits``/``compute_seconds`` counters (as a
        ``CachedEmbedder`` has) reports them in the result.

    Returns
    -------
    RealTextTraffic
        Same config and same embedder, same output.
    """
    if embedder is None:
        from streamguard.sim.text_embedding import CachedEmbedder

        embedder = CachedEmbedder()
    prompts = write_prompts(config)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, 0x1D5]))
    n = len(prompts)
    # Arrival order: event time plus gateway delay (mostly < 1 s, a few stragglers).
    delay = rng.exponential(400.0, size=n)
    late = rng.random(n) < 0.003
    delay[late] += rng.uniform(1_000, 30_000, size=int(late.sum()))
    prompts = prompts.take(np.argsort(prompts.ts + delay, kind="stable"))

    counters = hasattr(embedder, "computed") and hasattr(embedder, "compute_seconds")
    before = (getattr(embedder, "computed", 0), getattr(embedder, "hits", 0), getattr(embedder, "compute_seconds", 0.0))
    t = time.perf_counter()
    emb = np.asarray(embedder(prompts.text), np.float32)
    wall = time.perf_counter() - t
    if emb.shape != (n, EMBED_DIM):
        raise ValueError(f"embedder returned shape {emb.shape}, expected ({n}, {EMBED_DIM})")
    if counters:
        embedded = int(embedder.computed - before[0])  # type: ignore[attr-defined]
        cached = int(getattr(embedder, "hits", 0) - before[1])
        seconds = float(embedder.compute_seconds - before[2])  # type: ignore[attr-defined]
    else:
        embedded, cached, seconds = n, 0, wall

    accounts = prompts.accounts
    acct_ids = _hex_ids(rng, len(accounts), 6, "acct-")
    for acct, aid in zip(accounts, acct_ids):
        acct.account_id = aid
    acct_arr = np.array(acct_ids, dtype=object)
    org_arr = np.array([acct.org_id for acct in accounts], dtype=object)
    table = pa.table(
        [
            pa.array(_hex_ids(rng, n, 16), pa.string()),
            pa.array(prompts.ts, pa.int64()).cast(pa.timestamp("ms")),
            pa.array(acct_arr[prompts.account], pa.string()),
            pa.array(org_arr[prompts.account], pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), EMBED_DIM),
        ],
        schema=traffic_schema(EMBED_DIM),
    )
    counts = np.bincount(prompts.account, minlength=len(accounts))
    campaigns: dict[str, dict] = {}
    for acct in accounts:
        if acct.campaign is not None:
            campaigns.setdefault(acct.campaign, {"members": [], "org_id": acct.org_id})["members"].append(acct.account_id)
    t0 = int(config.start_ms)
    labels = {
        "version": LABELS_VERSION,
        "generator": "realtext",
        "embedding_model": MODEL_NAME,
        "seed": config.seed,
        "scale": config.scale,
        "dim": EMBED_DIM,
        "start_ms": t0,
        "end_ms": t0 + int(round(config.days * 86_400_000)),
        "accounts": {
            accounts[i].account_id: {
                "label": accounts[i].label,
                "kind": accounts[i].kind,
                "campaign": accounts[i].campaign,
                "n_requests": int(counts[i]),
            }
            for i in rng.permutation(len(accounts))
        },
        "campaigns": campaigns,
    }
    return RealTextTraffic(
        table=table,
        labels=labels,
        latent=None,
        prompts=prompts,
        embed_seconds=seconds,
        embedded=embedded,
        cached=cached,
    )


def write_prompt_texts(traffic: RealTextTraffic, path: str) -> None:
    """Write each request's prompt and ground truth beside the traffic (not part of the contract).

    Columns: ``request_id``, ``account_id``, ``text``, ``domain``,
    ``subject``, ``intent``, ``template`` (index, -1 none),
    ``template_kind``, ``content``; rows in the traffic file's order.
    """
    if traffic.prompts is None:
        raise ValueError("this traffic carries no prompt texts")
    p = traffic.prompts
    cat = p.catalogue
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    kinds = np.array([t.kind for t in p.templates] + [""], dtype=object)
    table = pa.table(
        {
            "request_id": traffic.table.column("request_id"),
            "account_id": traffic.table.column("account_id"),
            "text": pa.array(p.text, pa.string()),
            "domain": pa.array(np.array(cat.domains, dtype=object)[cat.subject_domain[p.subject]], pa.string()),
            "subject": pa.array(np.array([s.name for s in cat.subjects], dtype=object)[p.subject], pa.string()),
            "intent": pa.array(p.intent, pa.string()),
            "template": pa.array(p.template, pa.int32()),
            "template_kind": pa.array(kinds[p.template], pa.string()),
            "content": pa.array(p.content, pa.int64()),
        }
    )
    pq.write_table(table, out, compression="zstd")
