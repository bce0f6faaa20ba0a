"""Tests of the traffic simulator: contract, determinism, labels, geometry, behaviours."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from streamguard.sim import (
    BENIGN_KINDS,
    DISTILLER_KINDS,
    KINDS,
    SimConfig,
    SimulatedTraffic,
    simulate,
    write_traffic,
)
from streamguard.sim.behaviours import plan_population

DIM = 96
HOUR_MS = 3_600_000


@pytest.fixture(scope="module")
def traffic() -> SimulatedTraffic:
    return simulate(SimConfig(seed=0, scale=0.1, dim=DIM))


@pytest.fixture(scope="module")
def emb(traffic: SimulatedTraffic) -> np.ndarray:
    col = traffic.table.column("embedding").combine_chunks()
    return col.values.to_numpy().reshape(-1, DIM)


def _rows_of(traffic: SimulatedTraffic, kind: str) -> list[np.ndarray]:
    """Row indices of each account of ``kind``."""
    lat = traffic.latent
    return [np.flatnonzero(lat.account == i) for i, a in enumerate(lat.accounts) if a.kind == kind]


def _cos(emb: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.einsum("ij,ij->i", emb[a], emb[b])


def _random_pairs(rng: np.random.Generator, idx: np.ndarray, k: int = 60_000) -> tuple[np.ndarray, np.ndarray]:
    return rng.choice(idx, k), rng.choice(idx, k)


# ---------------------------------------------------------------------------
# contract


def test_schema_is_exactly_the_contract(traffic: SimulatedTraffic) -> None:
    t = traffic.table
    assert t.schema.names == ["request_id", "ts", "account_id", "org_id", "embedding"]
    assert t.schema.field("request_id").type == pa.string()
    assert t.schema.field("ts").type == pa.timestamp("ms")
    assert t.schema.field("account_id").type == pa.string()
    assert t.schema.field("org_id").type == pa.string()
    assert t.schema.field("embedding").type == pa.list_(pa.float32(), DIM)
    assert t.num_rows > 0
    for name in ("request_id", "ts", "account_id", "embedding"):
        assert t.column(name).null_count == 0
    # org_id: set for some accounts, null for most casual users.
    assert 0 < t.column("org_id").null_count < t.num_rows
    assert pc.count_distinct(t.column("request_id")).as_py() == t.num_rows


def test_embeddings_are_unit_norm_and_finite(emb: np.ndarray) -> None:
    assert emb.dtype == np.float32
    assert np.isfinite(emb).all()
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)


def test_timestamps_in_period_and_mostly_ordered(traffic: SimulatedTraffic) -> None:
    lab = traffic.labels
    ts = traffic.table.column("ts").cast(pa.int64()).to_numpy()
    assert ts.min() >= lab["start_ms"] and ts.max() < lab["end_ms"]
    assert lab["end_ms"] - lab["start_ms"] == 3 * 24 * HOUR_MS
    back = np.diff(ts) < 0
    # Mostly, not strictly, ordered: a little arrival jitter, never more than ~30 s.
    assert 0 < back.mean() < 0.3
    assert (np.maximum.accumulate(ts) - ts).max() <= 31_000


def test_ids_are_opaque(traffic: SimulatedTraffic) -> None:
    ids = list(traffic.labels["accounts"])
    assert all(i.startswith("acct-") and len(i) == 17 for i in ids)
    assert not any(k in i for i in ids for k in KINDS)


# ---------------------------------------------------------------------------
# determinism


def test_same_seed_same_traffic() -> None:
    cfg = SimConfig(seed=7, scale=0.1, dim=16)
    a, b = simulate(cfg), simulate(cfg)
    assert a.table.equals(b.table)
    assert a.labels == b.labels


def test_different_seed_different_world() -> None:
    a = simulate(SimConfig(seed=1, scale=0.1, dim=16))
    b = simulate(SimConfig(seed=2, scale=0.1, dim=16))
    wa, wb = a.latent.world, b.latent.world
    assert (wa.n_domains, wa.n_subtopics, wa.zipf_domain) != (wb.n_domains, wb.n_subtopics, wb.zipf_domain)
    assert a.table.num_rows != b.table.num_rows or not a.table.equals(b.table)
    sizes = set()
    for seed in range(8):
        w = simulate(SimConfig(seed=seed, scale=0.02, dim=8)).latent.world
        assert 12 <= w.n_domains <= 20
        assert 6 <= np.bincount(w.subtopic_domain).min() and np.bincount(w.subtopic_domain).max() <= 20
        sizes.add(w.n_subtopics)
    assert len(sizes) >= 4


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="evasion"):
        SimConfig(evasion=("not-a-strategy",))
    with pytest.raises(ValueError, match="scale"):
        SimConfig(scale=0)
    with pytest.raises(ValueError, match="dim"):
        SimConfig(dim=2)


# ---------------------------------------------------------------------------
# labels


def test_every_kind_present_at_small_scale(traffic: SimulatedTraffic) -> None:
    kinds = Counter(a["kind"] for a in traffic.labels["accounts"].values())
    assert set(kinds) == set(KINDS)
    for a in traffic.labels["accounts"].values():
        assert a["label"] == ("distiller" if a["kind"] in DISTILLER_KINDS else "benign")
        assert (a["campaign"] is not None) == (a["kind"] == "campaign_member")


def test_label_counts_match_table(traffic: SimulatedTraffic) -> None:
    lab = traffic.labels
    assert lab["version"] == 1 and lab["seed"] == 0 and lab["scale"] == 0.1 and lab["dim"] == DIM
    counts = Counter(traffic.table.column("account_id").to_pylist())
    assert counts == {k: v["n_requests"] for k, v in lab["accounts"].items()}


def test_scale_one_population_plan() -> None:
    for seed in range(5):
        plan = plan_population(np.random.default_rng(seed), 1.0)
        c = plan.counts
        total = sum(c.values())
        assert 1_400 <= total <= 2_500
        assert 3 <= c["product"] <= 8
        assert 0.03 <= c["power_user"] / total <= 0.05
        sweepers = sum(c[k] for k in DISTILLER_KINDS if k != "campaign_member")
        assert 0.02 <= sweepers / total <= 0.04
        assert len(plan.campaign_sizes) == 2
        assert all(20 <= s <= 40 for s in plan.campaign_sizes)


# ---------------------------------------------------------------------------
# geometry


def test_cosine_geometry(traffic: SimulatedTraffic, emb: np.ndarray) -> None:
    lat = traffic.latent
    rng = np.random.default_rng(0)
    plain = np.flatnonzero((lat.style < 0) & (lat.context < 0))

    a, b = _random_pairs(rng, plain)
    unrelated = _cos(emb, a, b)[(lat.domain[a] != lat.domain[b]) & (lat.content[a] != lat.content[b])]
    assert 0.08 <= unrelated.mean() <= 0.22

    same_sub = (lat.subtopic[a] == lat.subtopic[b]) & (lat.content[a] != lat.content[b])
    order = plain[np.argsort(lat.subtopic[plain], kind="stable")]
    nxt = (lat.subtopic[order[1:]] == lat.subtopic[order[:-1]]) & (
        lat.content[order[1:]] != lat.content[order[:-1]]
    )
    same_subtopic = np.concatenate([_cos(emb, a, b)[same_sub], _cos(emb, order[:-1][nxt], order[1:][nxt])])
    assert same_subtopic.size > 100
    assert 0.38 <= same_subtopic.mean() <= 0.62

    # Same template, different domains: moderately above unrelated.
    tpl = np.flatnonzero((lat.style >= 0) & (lat.context < 0))
    order = tpl[np.argsort(lat.style[tpl], kind="stable")]
    a, b = order[:-1], order[1:]
    same = (lat.style[a] == lat.style[b]) & (lat.domain[a] != lat.domain[b])
    templated = _cos(emb, a[same], b[same])
    assert templated.size > 100
    assert 0.07 <= templated.mean() - unrelated.mean() <= 0.35

    # Exact repeats (retries, famous prompts, benchmark suites) with the same style.
    order = np.argsort(lat.text, kind="stable")
    a, b = order[:-1], order[1:]
    rep = (lat.text[a] == lat.text[b]) & (lat.style[a] == lat.style[b]) & (lat.context[a] == lat.context[b])
    repeats = _cos(emb, a[rep], b[rep])
    assert repeats.size > 50
    assert repeats.min() >= 0.97

    # Paraphrases: same question, new words.
    order = np.argsort(lat.content, kind="stable")
    a, b = order[:-1], order[1:]
    para = (lat.content[a] == lat.content[b]) & (lat.text[a] != lat.text[b]) & (lat.style[a] == lat.style[b])
    paraphrases = _cos(emb, a[para], b[para])
    assert paraphrases.size > 20
    assert 0.83 <= paraphrases.mean() <= 0.96

    # A batch job's prompts on one subtopic: high, but not copies.
    batch = np.flatnonzero(lat.context >= 0)
    a, b = _random_pairs(rng, batch)
    same = (lat.context[a] == lat.context[b]) & (lat.subtopic[a] == lat.subtopic[b]) & (lat.text[a] != lat.text[b])
    batch_cos = _cos(emb, a[same], b[same])
    assert 0.65 <= batch_cos.mean() <= 0.85
    assert np.percentile(batch_cos, 99) < 0.95


# ---------------------------------------------------------------------------
# behaviours


def _hist(lat, rows: np.ndarray, cells: int) -> np.ndarray:
    return np.bincount(lat.subtopic[rows], minlength=cells) / rows.shape[0]


def _tv(p: np.ndarray, q: np.ndarray) -> float:
    return 0.5 * float(np.abs(p - q).sum())


def test_topic_mix_product_follows_population_sweepers_uniform(traffic: SimulatedTraffic) -> None:
    lat = traffic.latent
    world = lat.world
    s = world.n_subtopics
    pop = world.subtopic_pop
    uniform = np.full(s, 1.0 / s)
    pop_to_uniform = _tv(pop, uniform)
    assert pop_to_uniform > 0.25  # the population mix is skewed

    for rows in _rows_of(traffic, "product"):
        h = _hist(lat, rows, s)
        assert _tv(h, pop) < 0.15
        assert _tv(h, uniform) > _tv(h, pop) + 0.15

    top = np.argsort(pop)[::-1][: max(1, s // 10)]
    for kind in ("template_sweeper", "paraphrase_sweeper", "slow_sweeper"):
        for rows in _rows_of(traffic, kind):
            h = _hist(lat, rows, s)
            assert _tv(h, uniform) < pop_to_uniform
            # The most popular tenth of subtopics gets about a tenth of a sweep.
            assert h[top].sum() < 0.5 * pop[top].sum()
    for rows in _rows_of(traffic, "targeted_sweeper"):
        doms = np.unique(lat.domain[rows])
        assert 2 <= doms.shape[0] <= 3
        cells = world.subtopics_of(doms)
        counts = np.bincount(lat.subtopic[rows], minlength=s)[cells]
        assert (counts > 0).all()
        assert counts.max() <= 3 * counts.mean() + 3


def test_campaigns(traffic: SimulatedTraffic) -> None:
    lat = traffic.latent
    by_campaign: dict[str, list[int]] = {}
    for i, a in enumerate(lat.accounts):
        if a.campaign is not None:
            by_campaign.setdefault(a.campaign, []).append(i)
    assert "campaign-0" in by_campaign
    for cid, members in by_campaign.items():
        assert len(members) >= 6
        covered = np.unique(lat.subtopic[np.isin(lat.account, members)])
        assert covered.shape[0] == lat.world.n_subtopics
        styles = [set(np.unique(lat.style[lat.account == i])) - {-1} for i in members]
        assert set.intersection(*styles)  # shared templates
        for i in members:
            n = int((lat.account == i).sum())
            assert n < 1200
            # Each member covers a slice, not the whole space.
            assert np.unique(lat.subtopic[lat.account == i]).shape[0] < 0.5 * lat.world.n_subtopics
        orgs = {lat.accounts[i].org_id for i in members}
        assert len(orgs) == 1
    assert traffic.labels["campaigns"]["campaign-0"]["org_id"] is not None


def test_benchmarks_burst_and_share_suites(traffic: SimulatedTraffic) -> None:
    lat = traffic.latent
    ts = traffic.table.column("ts").cast(pa.int64()).to_numpy()
    suites = []
    for rows in _rows_of(traffic, "benchmark"):
        assert ts[rows].max() - ts[rows].min() < 2 * HOUR_MS
        assert np.unique(lat.domain[rows]).shape[0] == lat.world.n_domains
        assert np.unique(lat.style[rows]).shape[0] == 1
        suites.append(frozenset(lat.text[rows].tolist()))
    assert len(suites) >= 2
    assert len(set(suites)) < len(suites)  # several accounts ran the same suite


def test_time_scales_of_kinds(traffic: SimulatedTraffic) -> None:
    ts = traffic.table.column("ts").cast(pa.int64()).to_numpy()
    period = traffic.labels["end_ms"] - traffic.labels["start_ms"]
    for rows in _rows_of(traffic, "batch_job"):
        assert 500 <= rows.shape[0] <= 5000
    for rows in _rows_of(traffic, "slow_sweeper"):
        assert ts[rows].max() - ts[rows].min() > 0.9 * period
    for rows in _rows_of(traffic, "product"):
        assert 5000 <= rows.shape[0] <= 25000
        assert ts[rows].max() - ts[rows].min() > 0.9 * period
        assert np.unique(traffic.latent.style[rows]).shape[0] == 1
    for rows in _rows_of(traffic, "casual"):
        assert 3 <= rows.shape[0] <= 100
    for rows in _rows_of(traffic, "power_user"):
        assert 200 <= rows.shape[0] <= 3000
    for kind in ("template_sweeper", "paraphrase_sweeper"):
        for rows in _rows_of(traffic, kind):
            assert 1500 <= rows.shape[0] <= 6000


# ---------------------------------------------------------------------------
# files


def test_write_traffic_round_trips(traffic: SimulatedTraffic, tmp_path) -> None:
    out, lab = tmp_path / "a" / "traffic.parquet", tmp_path / "labels.json"
    write_traffic(traffic, out, lab)
    back = pq.read_table(out)
    assert back.schema.equals(traffic.table.schema)
    assert back.equals(traffic.table)
    assert pq.ParquetFile(out).metadata.row_group(0).column(0).compression == "ZSTD"
    assert json.loads(lab.read_text()) == traffic.labels


def test_kind_lists_are_consistent() -> None:
    assert set(BENIGN_KINDS).isdisjoint(DISTILLER_KINDS)
    assert set(KINDS) == set(BENIGN_KINDS) | set(DISTILLER_KINDS)
