"""Seeded generator of labelled LLM-API traffic, with planted distillers.

``simulate(SimConfig(seed=..., scale=...))`` returns the request records as a
``pyarrow.Table`` with exactly the contract columns (``request_id``, ``ts``,
``account_id``, ``org_id``, ``embedding``, and ``attributes`` when asked for:
see ``attributes.py``) and a labels dict giving every
account's ground truth. The latent truth behind each row (subtopic, template,
content and text ids) is kept in ``SimulatedTraffic.latent`` for tests and
evaluation; it is never written to the traffic file.

See ``world.py`` for the embedding geometry, ``behaviours.py`` (and
``accounts.py``, ``draw.py``) for the account kinds and ``sampled.py`` for the sampled-world mode
(``SimConfig(sample_world=True)``), in which the seed also draws the world's
family: geometry, mix and volumes of kinds, template strength, span and
population size. ``traps.py`` adds benign look-alikes of campaigns
(``SimConfig(traps=True)``).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from streamguard.sim.accounts import (
    BENIGN_KINDS,
    DISTILLER_KINDS,
    KINDS,
    Account,
    Habits,
    TrafficBuilder,
)
from streamguard.sim.behaviours import generate_population, plan_population
from streamguard.sim.attributes import ATTRIBUTES_TYPE, attribute_column
from streamguard.sim.evasion import ATTRIBUTE_SCENARIOS, EVASION_KINDS, SCENARIOS, plant_evasions
from streamguard.sim.sampled import describe, draw_world, plan_sampled_population
from streamguard.sim.traps import TRAP_KINDS, plant_traps
from streamguard.sim.world import Catalog, World, build_world, embed_requests

__all__ = [
    "BENIGN_KINDS",
    "DISTILLER_KINDS",
    "EVASION_KINDS",
    "KINDS",
    "KNOWN_EVASIONS",
    "Latent",
    "SimConfig",
    "SimulatedTraffic",
    "TRAP_KINDS",
    "simulate",
    "traffic_schema",
    "write_traffic",
]

LABELS_VERSION = 1
DEFAULT_DAYS = 3.0

# Evasion scenarios (see evasion.py); an unknown name is rejected, never ignored.
KNOWN_EVASIONS: frozenset[str] = frozenset(SCENARIOS)


@dataclass(frozen=True)
class SimConfig:
    """Parameters of one simulation.

    Attributes
    ----------
    seed : int
        Seeds the world (topic structure, geometry) and all sampling.
    scale : float
        Multiplies account counts; per-account volumes stay fixed. At 1.0:
        ~1,500-2,200 accounts and ~120k-250k requests (a sampled world
        multiplies the accounts again, by 0.15-12, and the volumes by its own
        factors).
    dim : int
        Embedding dimension D.
    days : float or None
        Length of the simulated period; None: 3 days, or, with
        ``sample_world``, a span the seed draws (4 hours to 5 days).
    start_ms : int
        Start of the period, epoch ms (default 2026-01-01T00:00Z).
    evasion : tuple of str
        Evasion scenarios to plant on top of the ordinary population (names
        from ``KNOWN_EVASIONS``; see ``evasion.py``).
    sample_world : bool
        Draw the world's family from the seed as well (``sampled.py``); its
        parameters go into the labels under ``"world"``. False keeps the
        default mode's narrow family, bit for bit.
    traps : bool
        Add the benign traps of ``traps.py`` (enterprise orgs, joint
        benchmarks, time-zone cohorts, resellers); implies ``attributes``.
    attributes : bool
        Write the optional ``attributes`` column (``net``, ``pay``,
        ``client`` on every request; ``attributes.py``). Implied by
        ``traps`` and by the scenarios in ``ATTRIBUTE_SCENARIOS``; without
        any of them the table has no such column, as before.
    """

    seed: int = 0
    scale: float = 1.0
    dim: int = 384
    days: float | None = None
    start_ms: int = 1_767_225_600_000
    evasion: tuple[str, ...] = ()
    sample_world: bool = False
    traps: bool = False
    attributes: bool = False

    @property
    def writes_attributes(self) -> bool:
        """Whether the table gets the ``attributes`` column."""
        return self.attributes or self.traps or bool(ATTRIBUTE_SCENARIOS & set(self.evasion))

    def __post_init__(self) -> None:
        check_scale_and_days(self.scale, self.days)
        if self.dim < 8:
            raise ValueError(f"dim must be >= 8, got {self.dim!r}")
        unknown = sorted(set(self.evasion) - KNOWN_EVASIONS)
        if unknown:
            known = ", ".join(sorted(KNOWN_EVASIONS))
            raise ValueError(f"unknown evasion strategies {unknown}; known: {known}")


@dataclass
class Latent:
    """Ground truth behind each row of the table (row-aligned, table order).

    Attributes
    ----------
    account : (n,) int32
        Index into ``accounts``.
    subtopic, domain : (n,) int32
        Latent topic cell and its domain.
    style : (n,) int32
        Template / system-prompt id, -1 for none.
    context : (n,) int32
        Batch-corpus id, -1 for none.
    content, text : (n,) int64
        Question id and wording id: equal ``text`` means a verbatim repeat,
        equal ``content`` with different ``text`` a paraphrase.
    accounts : list of Account
    world : World
    catalog : Catalog
    """

    account: np.ndarray
    subtopic: np.ndarray
    domain: np.ndarray
    style: np.ndarray
    context: np.ndarray
    content: np.ndarray
    text: np.ndarray
    accounts: list[Account]
    world: World
    catalog: Catalog

    def kind_of_rows(self) -> np.ndarray:
        """(n,) object array: the kind of each row's account."""
        kinds = np.array([a.kind for a in self.accounts], dtype=object)
        return kinds[self.account]


@dataclass
class SimulatedTraffic:
    """Simulated requests and their labels.

    Attributes
    ----------
    table : pyarrow.Table
        Columns of ``traffic_schema(dim)``; rows in arrival order (sorted by
        event time up to sub-second, occasionally tens of seconds, of jitter).
    labels : dict
        ``{"version", "seed", "scale", "dim", "start_ms", "end_ms",
        "accounts": {account_id: {"label", "kind", "campaign", "n_requests"}},
        "campaigns": {campaign_id: {"members", "org_id"}}}``, plus
        ``"world"`` (the drawn parameters, ``sampled.describe``) for a
        sampled world.
    latent : Latent or None
        Per-row ground truth (not part of the data contract).
    """

    table: pa.Table
    labels: dict
    latent: Latent | None = field(default=None, repr=False)


def traffic_schema(dim: int, attributes: bool = False) -> pa.Schema:
    """The request-record Arrow schema for embedding dimension ``dim``, with ``attributes`` if asked."""
    fields = [
        pa.field("request_id", pa.string(), nullable=False),
        pa.field("ts", pa.timestamp("ms"), nullable=False),
        pa.field("account_id", pa.string(), nullable=False),
        pa.field("org_id", pa.string(), nullable=True),
        pa.field("embedding", pa.list_(pa.float32(), dim), nullable=False),
    ]
    if attributes:
        fields.append(pa.field("attributes", ATTRIBUTES_TYPE, nullable=True))
    return pa.schema(fields)


def check_scale_and_days(scale: float, days: float | None) -> None:
    """A simulator config's checks: ``scale > 0``, and ``days`` (unless None) covers at least one hour."""
    if not scale > 0:
        raise ValueError(f"scale must be > 0, got {scale!r}")
    if days is not None and not days * 86_400_000 >= 3_600_000:
        raise ValueError(f"days must cover at least one hour, got {days!r}")


def arrival_order(rng: np.random.Generator, ts: np.ndarray) -> np.ndarray:
    """Arrival order of requests at event times ``ts``: event time plus gateway/producer delay
    (mostly < 1 s, a few stragglers up to 30 s), so the stream is mostly, not strictly, ordered."""
    n = ts.shape[0]
    delay = rng.exponential(400.0, size=n)
    late = rng.random(n) < 0.003
    delay[late] += rng.uniform(1_000, 30_000, size=int(late.sum()))
    return np.argsort(ts + delay, kind="stable")


def request_columns(
    rng: np.random.Generator, accounts: list[Account], account: np.ndarray, ts: np.ndarray, emb: np.ndarray, dim: int
) -> list[pa.Array]:
    """Name ``accounts`` (``acct-`` + 12 hex digits, drawn from ``rng``), then the request-record columns of
    :func:`traffic_schema`: request ids (drawn from ``rng``), ``ts``, the row's account and org, ``emb``."""
    acct_ids = _hex_ids(rng, len(accounts), 6, "acct-")
    for a, aid in zip(accounts, acct_ids):
        a.account_id = aid
    acct_arr = np.array(acct_ids, dtype=object)
    org_arr = np.array([a.org_id for a in accounts], dtype=object)
    return [
        pa.array(_hex_ids(rng, ts.shape[0], 16), pa.string()),
        pa.array(ts, pa.int64()).cast(pa.timestamp("ms")),
        pa.array(acct_arr[account], pa.string()),
        pa.array(org_arr[account], pa.string()),
        pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim),
    ]


def traffic_labels(
    rng: np.random.Generator,
    accounts: list[Account],
    account: np.ndarray,
    head: dict,
    seed: int,
    scale: float,
    dim: int,
    span: tuple[int, int],
) -> dict:
    """The labels JSON: ``version``, then ``head``'s entries, the config, the period ``span`` (start, end ms),
    every account's label, kind, campaign and request count (``account`` is each row's index into
    ``accounts``), listed in a random order drawn from ``rng`` so position says nothing of kind, and the
    campaigns' members and org."""
    counts = np.bincount(account, minlength=len(accounts))
    label_order = rng.permutation(len(accounts))
    campaigns: dict[str, dict] = {}
    for a in accounts:
        if a.campaign is not None:
            entry = campaigns.setdefault(a.campaign, {"members": [], "org_id": a.org_id})
            entry["members"].append(a.account_id)
    return {
        "version": LABELS_VERSION,
        **head,
        "seed": seed,
        "scale": scale,
        "dim": dim,
        "start_ms": span[0],
        "end_ms": span[1],
        "accounts": {
            accounts[i].account_id: {
                "label": accounts[i].label,
                "kind": accounts[i].kind,
                "campaign": accounts[i].campaign,
                "n_requests": int(counts[i]),
            }
            for i in label_order
        },
        "campaigns": campaigns,
    }


def _hex_ids(rng: np.random.Generator, n: int, nbytes: int, prefix: str = "") -> list[str]:
    """``n`` distinct random hex strings of ``2 * nbytes`` characters."""
    while True:
        h = rng.bytes(n * nbytes).hex()
        step = 2 * nbytes
        ids = [prefix + h[i : i + step] for i in range(0, len(h), step)]
        if len(set(ids)) == n:
            return ids


def simulate(config: SimConfig) -> SimulatedTraffic:
    """Generate labelled traffic.

    Parameters
    ----------
    config : SimConfig

    Returns
    -------
    SimulatedTraffic
        Same config, same output, bit for bit.
    """
    seq = np.random.SeedSequence(config.seed)
    rng_world, rng_acct, rng_embed, rng_ids = (np.random.default_rng(s) for s in seq.spawn(4))
    # A fifth stream draws a sampled world's family; the first four, and so
    # the default mode, are unchanged by it.
    draw = draw_world(np.random.default_rng(seq.spawn(1)[0]), config.days) if config.sample_world else None
    days = draw.days if draw is not None else (DEFAULT_DAYS if config.days is None else config.days)
    t0 = int(config.start_ms)
    t1 = t0 + int(round(days * 86_400_000))

    catalog = Catalog()
    world = build_world(rng_world, config.dim, catalog, draw.geometry if draw is not None else None)
    habits = draw.habits if draw is not None else Habits()
    builder = TrafficBuilder(world=world, catalog=catalog, rng=rng_acct, t0=t0, t1=t1, habits=habits, scale=config.scale)
    if draw is not None:
        plan = plan_sampled_population(rng_acct, config.scale, draw)
    else:
        plan = plan_population(rng_acct, config.scale)
    generate_population(builder, plan)
    if config.traps:
        plant_traps(builder, config.seed)
    plant_evasions(builder, tuple(config.evasion), config.seed)
    rows = builder.rows()
    n = rows["ts"].shape[0]

    order = arrival_order(rng_ids, rows["ts"])
    rows = {k: v[order] for k, v in rows.items()}

    emb = embed_requests(
        world,
        catalog,
        rng_embed,
        rows["subtopic"],
        rows["style"],
        rows["context"],
        rows["content"],
        rows["text"],
    )

    accounts = builder.accounts
    columns = request_columns(rng_ids, accounts, rows["account"], rows["ts"], emb, config.dim)
    if config.writes_attributes:
        # A stream of its own: the other columns are the same with or without it.
        columns.append(attribute_column(np.random.default_rng([config.seed, *b"attributes"]), accounts, rows["account"]))
    table = pa.table(columns, schema=traffic_schema(config.dim, config.writes_attributes))
    labels = traffic_labels(rng_ids, accounts, rows["account"], {}, config.seed, config.scale, config.dim, (t0, t1))
    if draw is not None:
        labels["world"] = describe(draw, world, plan)
    latent = Latent(
        account=rows["account"],
        subtopic=rows["subtopic"],
        domain=world.subtopic_domain[rows["subtopic"]],
        style=rows["style"],
        context=rows["context"],
        content=rows["content"],
        text=rows["text"],
        accounts=accounts,
        world=world,
        catalog=catalog,
    )
    return SimulatedTraffic(table=table, labels=labels, latent=latent)


def write_traffic(
    traffic: SimulatedTraffic, out_path: str | os.PathLike[str], labels_path: str | os.PathLike[str]
) -> None:
    """Write the table as Parquet (zstd) and the labels as JSON.

    Parameters
    ----------
    traffic : SimulatedTraffic
    out_path : path
        Parquet file to write; parent directories are created.
    labels_path : path
        JSON file to write; parent directories are created.
    """
    out_path, labels_path = Path(out_path), Path(labels_path)
    for p in (out_path, labels_path):
        p.parent.mkdir(parents=True, exist_ok=True)
    # Embedding values are near-random floats: dictionary encoding only costs.
    dictionary = ["account_id", "org_id"]
    if "attributes" in traffic.table.schema.names:
        dictionary += ["attributes.key_value.key", "attributes.key_value.value"]
    pq.write_table(
        traffic.table,
        out_path,
        compression="zstd",
        use_dictionary=dictionary,
        row_group_size=65_536,
    )
    labels_path.write_text(json.dumps(traffic.labels, indent=1, sort_keys=False) + "\n")
