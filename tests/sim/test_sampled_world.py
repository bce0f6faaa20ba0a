"""Tests of the sampled-world mode: ``SimConfig(sample_world=True)``."""

from __future__ import annotations

import hashlib
import json
from collections import Counter

import numpy as np
import pyarrow as pa
import pytest

from streamguard import cli
from streamguard.schema import request_schema, validate_table
from streamguard.sim import EVASION_KINDS, KINDS, KNOWN_EVASIONS, SimConfig, SimulatedTraffic, simulate, write_traffic
from streamguard.sim import sampled
from streamguard.sim.draw import _member_slices
from streamguard.sim.sampled import draw_world
from streamguard.sim.world import Catalog, Geometry, build_world, embed_requests

DIM = 32
SEEDS = range(6)
HOUR_MS = 3_600_000
DAY_MS = 24 * HOUR_MS

# Digest of simulate(SimConfig(seed=3, scale=0.2, dim=32)).table, taken from
# the simulator before the sampled-world mode existed: the default mode must
# keep producing exactly this traffic.
DEFAULT_DIGEST = "29be0ea2e4236c2c1f3817538672f5caa8bc003b07a09b03f27b17b439b8d465"


def _digest(table: pa.Table) -> str:
    h = hashlib.sha256()
    for name in ("request_id", "account_id", "org_id"):
        h.update("\n".join(str(v) for v in table.column(name).to_pylist()).encode())
    h.update(table.column("ts").cast(pa.int64()).to_numpy().tobytes())
    h.update(table.column("embedding").combine_chunks().values.to_numpy().tobytes())
    return h.hexdigest()


def _emb(traffic: SimulatedTraffic) -> np.ndarray:
    dim = traffic.labels["dim"]
    return traffic.table.column("embedding").combine_chunks().values.to_numpy().reshape(-1, dim)


def _within(value: float, bounds: tuple[float, float]) -> bool:
    return bounds[0] - 1e-9 <= value <= bounds[1] + 1e-9


@pytest.fixture(scope="module")
def worlds() -> dict[int, SimulatedTraffic]:
    return {seed: simulate(SimConfig(seed=seed, scale=0.03, dim=DIM, sample_world=True)) for seed in SEEDS}


# ---------------------------------------------------------------------------
# the default mode


def test_default_mode_traffic_unchanged() -> None:
    traffic = simulate(SimConfig(seed=3, scale=0.2, dim=32))
    assert _digest(traffic.table) == DEFAULT_DIGEST
    assert "world" not in traffic.labels
    assert traffic.labels["end_ms"] - traffic.labels["start_ms"] == 3 * DAY_MS


def test_config_validation() -> None:
    with pytest.raises(ValueError, match="days"):
        SimConfig(days=0.01, sample_world=True)
    with pytest.raises(ValueError, match="below 1"):
        Geometry(domain=(0.3, 0.3), subtopic=(0.5, 0.5), surface=(0.2, 0.2))


# ---------------------------------------------------------------------------
# the drawn parameters


def test_drawn_parameters_stay_in_range_and_spread() -> None:
    draws = [draw_world(np.random.default_rng(seed)) for seed in range(300)]
    for d in draws:
        g = d.geometry
        assert _within(d.days, sampled.DAYS)
        assert _within(d.population, sampled.POPULATION)
        assert _within(g.n_domains[0], sampled.N_DOMAINS) and g.n_domains[0] == g.n_domains[1]
        lo, hi = g.subtopics_per_domain
        assert sampled.SUBTOPICS_PER_DOMAIN[0] <= lo <= hi <= sampled.SUBTOPICS_PER_DOMAIN[1]
        assert _within(g.common[0], sampled.COMMON)
        assert _within(g.zipf_domain[0], sampled.ZIPF_DOMAIN) and _within(g.zipf_subtopic[0], sampled.ZIPF_SUBTOPIC)
        assert 0.08 - 1e-9 <= g.subtopic[0] <= g.subtopic[1] <= 0.48 + 1e-9
        assert _within(g.noise[0], sampled.NOISE_LOW) and g.noise[0] < g.noise[1] <= 0.25
        assert 0 <= g.n_dominant <= sampled.N_DOMINANT[1]
        assert (g.n_dominant == 0) == (g.dominant_share == 0.0)
        assert _within(d.habits.template_odds, sampled.TEMPLATE_ODDS)
        assert _within(d.habits.template_spread, sampled.TEMPLATE_SPREAD)
        assert set(d.kind_share) == set(KINDS) - {"campaign_member"}
        assert all(v > 0 for v in d.kind_share.values())
        assert sum(d.kind_share.values()) == pytest.approx(1.0)
        distillers = sum(d.kind_share[k] for k in sampled.SWEEPER_SPLIT)
        assert _within(distillers, sampled.DISTILLER_SHARE)
        assert _within(d.campaign_size, sampled.CAMPAIGN_SIZE)
        assert all(v > 0 for v in d.habits.volume.values())

    def spread(values: list[float]) -> tuple[float, float]:
        return min(values), max(values)

    # Wide, not narrow: the draws reach both ends of each range.
    lo, hi = spread([d.days for d in draws])
    assert lo < 0.3 and hi > 3.5
    lo, hi = spread([d.population for d in draws])
    assert lo < 0.3 and hi > 8
    lo, hi = spread([d.geometry.common[0] for d in draws])
    assert lo < 0.08 and hi > 0.35
    lo, hi = spread([d.geometry.n_domains[0] for d in draws])
    assert lo <= 8 and hi >= 38
    lo, hi = spread([d.habits.template_odds for d in draws])
    assert lo < 0.4 and hi > 3.0
    lo, hi = spread([d.kind_share["casual"] for d in draws])
    assert lo < 0.82 and hi > 0.95
    assert 0.1 < np.mean([d.geometry.n_dominant == 0 for d in draws]) < 0.3


def test_worlds_differ_across_seeds(worlds: dict[int, SimulatedTraffic]) -> None:
    described = [t.labels["world"] for t in worlds.values()]
    for key in ("days", "population", "template_odds"):
        assert len({w[key] for w in described}) == len(described)
    for key in ("common", "zipf_domain", "surface", "n_subtopics"):
        assert len({w["geometry"][key] for w in described}) == len(described)
    assert len({t.table.num_rows for t in worlds.values()}) == len(worlds)


def test_labels_report_the_realised_world(worlds: dict[int, SimulatedTraffic], tmp_path) -> None:
    for traffic in worlds.values():
        w, g = traffic.labels["world"], traffic.labels["world"]["geometry"]
        world = traffic.latent.world
        assert w["sampled"] is True
        assert g["n_domains"] == world.n_domains and g["n_subtopics"] == world.n_subtopics
        assert _within(g["n_domains"], sampled.N_DOMAINS)
        assert sampled.SUBTOPICS_PER_DOMAIN[0] <= g["subtopics_per_domain"][0] <= g["subtopics_per_domain"][1] <= 25
        assert _within(g["common"], sampled.COMMON)
        assert w["days"] * DAY_MS == pytest.approx(traffic.labels["end_ms"] - traffic.labels["start_ms"], abs=1)
        kinds = Counter(a["kind"] for a in traffic.labels["accounts"].values())
        assert w["ordinary_accounts"] == sum(n for k, n in kinds.items() if k != "campaign_member")
        assert sum(w["campaign_sizes"]) == kinds["campaign_member"]
    traffic = worlds[0]
    write_traffic(traffic, tmp_path / "t.parquet", tmp_path / "l.json")
    assert json.loads((tmp_path / "l.json").read_text())["world"] == traffic.labels["world"]


def test_same_seed_same_world() -> None:
    cfg = SimConfig(seed=5, scale=0.02, dim=16, sample_world=True)
    a, b = simulate(cfg), simulate(cfg)
    assert a.table.equals(b.table)
    assert a.labels == b.labels


def test_explicit_days_fix_the_span_only() -> None:
    free = simulate(SimConfig(seed=2, scale=0.02, dim=16, sample_world=True))
    fixed = simulate(SimConfig(seed=2, scale=0.02, dim=16, days=0.5, sample_world=True))
    assert free.labels["end_ms"] - free.labels["start_ms"] != DAY_MS // 2
    assert fixed.labels["end_ms"] - fixed.labels["start_ms"] == DAY_MS // 2
    # The span is drawn first and apart: fixing it leaves the rest of the world as drawn.
    assert fixed.labels["world"]["geometry"] == free.labels["world"]["geometry"]
    assert fixed.labels["world"]["population"] == free.labels["world"]["population"]


# ---------------------------------------------------------------------------
# the traffic


def test_every_kind_and_every_benign_trap_present(worlds: dict[int, SimulatedTraffic]) -> None:
    for traffic in worlds.values():
        kinds = Counter(a["kind"] for a in traffic.labels["accounts"].values())
        assert set(kinds) == set(KINDS)
        assert kinds["benchmark"] >= 2
        assert traffic.labels["campaigns"] and all(len(c["members"]) >= 6 for c in traffic.labels["campaigns"].values())
        lat = traffic.latent
        style_kind = np.array(lat.catalog.style_kind + ["none"], dtype=object)[lat.style]
        row_kind = lat.kind_of_rows()
        assert (style_kind[row_kind == "power_user"] == "personal_template").any()
        assert (style_kind[row_kind == "product"] == "system_prompt").all()
        assert (style_kind[row_kind == "batch_job"] == "batch_template").all()
        assert (lat.context[row_kind == "batch_job"] >= 0).all()
        assert (style_kind[row_kind == "benchmark"] == "benchmark_template").all()


def test_span_and_population_vary(worlds: dict[int, SimulatedTraffic]) -> None:
    spans = [t.labels["end_ms"] - t.labels["start_ms"] for t in worlds.values()]
    assert all(4 * HOUR_MS - 1 <= s <= 5 * DAY_MS + 1 for s in spans)
    assert min(spans) < 12 * HOUR_MS and max(spans) > 36 * HOUR_MS
    accounts = [len(t.labels["accounts"]) for t in worlds.values()]
    assert max(accounts) > 4 * min(accounts)


def test_traffic_is_valid(worlds: dict[int, SimulatedTraffic]) -> None:
    for traffic in worlds.values():
        table, lab = traffic.table, traffic.labels
        assert table.schema.equals(request_schema(DIM))
        batch, dead = validate_table(table, DIM)
        assert dead == [] and batch.embeddings.shape == (table.num_rows, DIM)
        emb = _emb(traffic)
        assert np.isfinite(emb).all()
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
        ts = table.column("ts").cast(pa.int64()).to_numpy()
        assert ts.min() >= lab["start_ms"] and ts.max() < lab["end_ms"]
        counts = Counter(table.column("account_id").to_pylist())
        assert counts == {k: v["n_requests"] for k, v in lab["accounts"].items()}
        assert all(v["n_requests"] > 0 for v in lab["accounts"].values())


def test_embeddings_follow_the_drawn_geometry(worlds: dict[int, SimulatedTraffic]) -> None:
    rng = np.random.default_rng(0)
    for traffic in worlds.values():
        lat, g = traffic.latent, traffic.labels["world"]["geometry"]
        emb = _emb(traffic)
        plain = np.flatnonzero((lat.style < 0) & (lat.context < 0))
        a, b = rng.choice(plain, 30_000), rng.choice(plain, 30_000)
        keep = (lat.domain[a] != lat.domain[b]) & (lat.content[a] != lat.content[b])
        unrelated = np.einsum("ij,ij->i", emb[a[keep]], emb[b[keep]])
        assert abs(unrelated.mean() - g["common"]) < 0.05
        # Template shares stay shares: the prompt's own topic keeps a part.
        strength = np.asarray(lat.catalog.style_strength)
        assert strength.max() <= 0.85 + 1e-9
        ctx = np.asarray(lat.catalog.context_strength)
        batch_rows = lat.context >= 0
        assert (strength[lat.style[batch_rows]] + ctx[lat.context[batch_rows]] <= 0.95 + 1e-6).all()


def test_template_strength_follows_the_world(worlds: dict[int, SimulatedTraffic]) -> None:
    by_odds = sorted(worlds.values(), key=lambda t: t.labels["world"]["template_odds"])
    light, heavy = by_odds[0], by_odds[-1]
    assert heavy.labels["world"]["template_odds"] > 3 * light.labels["world"]["template_odds"]
    med = [float(np.median(t.latent.catalog.style_strength)) for t in (light, heavy)]
    assert med[1] > med[0] + 0.15


def test_dominant_directions_carry_their_share() -> None:
    dim, n = 64, 20_000
    rng = np.random.default_rng(1)
    for geometry, lo, hi in ((Geometry(), 0.0, 0.0), (Geometry(n_dominant=4, dominant_share=0.4), 0.25, 0.5)):
        catalog = Catalog()
        world = build_world(np.random.default_rng(3), dim, catalog, geometry)
        assert world.dominant.shape == (geometry.n_dominant, dim)
        if geometry.n_dominant == 0:
            continue
        np.testing.assert_allclose(world.dominant @ world.dominant.T, np.eye(4), atol=1e-5)
        assert np.abs(world.dominant @ world.common).max() < 1e-5
        sub = rng.choice(world.n_subtopics, size=n).astype(np.int32)
        none = np.full(n, -1, np.int32)
        ids = catalog.new_content(n)
        emb = embed_requests(world, catalog, rng, sub, none, none, ids, catalog.new_text(n))
        x = emb - emb.mean(axis=0)
        x -= np.outer(x @ world.common, world.common)
        share = float(((x @ world.dominant.T) ** 2).sum() / (x**2).sum())
        assert lo <= share <= hi


def test_member_slices_cover_and_never_leave_a_member_empty() -> None:
    few = _member_slices(np.random.default_rng(0), 40, 7)
    expect = np.array_split(np.random.default_rng(0).permutation(40).astype(np.int32), 7)
    assert all(np.array_equal(a, b) for a, b in zip(few, expect))
    many = _member_slices(np.random.default_rng(0), 10, 25)
    assert len(many) == 25 and all(s.shape[0] >= 1 for s in many)
    assert set(np.concatenate(many).tolist()) == set(range(10))


def test_evasions_in_a_small_world() -> None:
    # Seed 36 draws a world with fewer subtopics than the 60 accounts of round_robin.
    traffic = simulate(SimConfig(seed=36, scale=0.03, dim=16, sample_world=True, evasion=tuple(sorted(KNOWN_EVASIONS))))
    assert traffic.latent.world.n_subtopics < 60
    kinds = {a["kind"] for a in traffic.labels["accounts"].values()}
    assert set(EVASION_KINDS) <= kinds
    assert np.isfinite(_emb(traffic)).all()


# ---------------------------------------------------------------------------
# command line


def test_cli_sample_world(tmp_path) -> None:
    def run(*extra: str) -> dict:
        out, lab = tmp_path / "t.parquet", tmp_path / "l.json"
        base = ["simulate", "--out", str(out), "--labels", str(lab), "--seed", "1", "--scale", "0.02", "--dim", "16"]
        assert cli.main([*base, *extra]) == 0
        return json.loads(lab.read_text())

    default = run()
    assert "world" not in default and default["end_ms"] - default["start_ms"] == 3 * DAY_MS
    drawn = run("--sample-world")
    assert drawn["end_ms"] - drawn["start_ms"] == pytest.approx(drawn["world"]["days"] * DAY_MS, abs=1)
    assert drawn["end_ms"] - drawn["start_ms"] != 3 * DAY_MS
    fixed = run("--sample-world", "--days", "3")
    assert fixed["end_ms"] - fixed["start_ms"] == 3 * DAY_MS
    assert fixed["world"]["geometry"] == drawn["world"]["geometry"]
