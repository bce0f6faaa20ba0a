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
as ``streamguard.sim.simulate``. The words are in ``realtext_catalogue``,
the wording (catalogue parsing, ``Writer``, templates) in
``realtext_writer.py``, and what each account kind writes in
``realtext_accounts.py``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamguard.sim import (
    SimulatedTraffic,
    arrival_order,
    check_scale_and_days,
    request_columns,
    traffic_labels,
    traffic_schema,
)
from streamguard.sim.accounts import BENIGN_KINDS, DISTILLER_KINDS, Account
from streamguard.sim.realtext_accounts import (
    _Builder,
    batch_job,
    benchmark,
    benchmark_suite,
    campaign,
    casual,
    paraphrase_sweeper,
    power_user,
    product,
    slow_sweeper,
    targeted_sweeper,
    template_sweeper,
)
from streamguard.sim.realtext_traps import plant_realtext_traps
from streamguard.sim.realtext_writer import Catalogue, Template, Writer, catalogue
from streamguard.sim.text_embedding import EMBED_DIM, MODEL_NAME

__all__ = [
    "Prompts",
    "RealTextConfig",
    "RealTextTraffic",
    "simulate_realtext",
    "write_prompt_texts",
    "write_prompts",
]

KINDS: tuple[str, ...] = BENIGN_KINDS + DISTILLER_KINDS


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
    traps : bool
        Add the benign traps of ``realtext_traps.py`` (enterprise orgs, joint benchmarks,
        time-zone cohorts, resellers, agent-framework users) after the ordinary accounts,
        which stay as they are.
    """

    seed: int = 0
    scale: float = 1.0
    days: float = 3.0
    start_ms: int = 1_767_225_600_000
    traps: bool = False

    def __post_init__(self) -> None:
        check_scale_and_days(self.scale, self.days)


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
    for kind, make in (("casual", casual), ("power_user", power_user), ("product", product), ("batch_job", batch_job)):
        for _ in range(counts[kind]):
            make(b)
    n_bench = counts["benchmark"]
    suites = [benchmark_suite(b) for _ in range(max(1, n_bench // 2))]
    for i in range(n_bench):
        benchmark(b, suites[i] if i < len(suites) else suites[int(rng_acct.integers(len(suites)))])
    for kind, make in (
        ("template_sweeper", template_sweeper),
        ("paraphrase_sweeper", paraphrase_sweeper),
        ("targeted_sweeper", targeted_sweeper),
        ("slow_sweeper", slow_sweeper),
    ):
        for _ in range(counts[kind]):
            make(b)
    for i, size in enumerate(sizes):
        campaign(b, f"campaign-{i}", size, shared_org=(i % 2 == 0))
    if config.traps:
        plant_realtext_traps(b, config.seed, config.scale)

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
    prompts = prompts.take(arrival_order(rng, prompts.ts))

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
    table = pa.table(
        request_columns(rng, accounts, prompts.account, prompts.ts, emb, EMBED_DIM), schema=traffic_schema(EMBED_DIM)
    )
    t0 = int(config.start_ms)
    labels = traffic_labels(
        rng,
        accounts,
        prompts.account,
        {"generator": "realtext", "embedding_model": MODEL_NAME},
        config.seed,
        config.scale,
        EMBED_DIM,
        (t0, t0 + int(round(config.days * 86_400_000))),
    )
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
