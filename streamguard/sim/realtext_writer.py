"""The real-text simulator's writing: the catalogue parsed, and a ``Writer`` that words questions.

``catalogue()`` parses ``realtext_catalogue`` (domains, subtopics, concepts)
once; a ``Writer`` picks intents for a subject, fills their slots, and
renders a question in a voice (plain, casual, terse, formal) with optional
clauses and typos; the templates (distillers' wrappers, personal and system
prompts) are assembled from ``TEMPLATE_PARTS``. Used by
``realtext_accounts.py``; no model, no embedding.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from streamguard.sim.realtext_catalogue import (
    AUDIENCES,
    CLAUSES,
    DOMAINS,
    INTENTS,
    INTENTS_BY_KIND,
    SLOTS,
    TEMPLATE_PARTS,
)

__all__ = [
    "VOICES",
    "Catalogue",
    "Question",
    "Subject",
    "Template",
    "Writer",
    "catalogue",
    "fill",
]

VOICES: tuple[str, ...] = ("plain", "casual", "terse", "formal")

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

