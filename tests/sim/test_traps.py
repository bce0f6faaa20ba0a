"""Request attributes, benign traps and the attribute-era evasion scenarios (issue 12, items 4-5)."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamguard.schema import read_request_file, validate_table
from streamguard.sim import TRAP_KINDS, SimConfig, simulate, traffic_schema, write_traffic
from streamguard.sim.attributes import ATTRIBUTES_TYPE
from streamguard.sim.evasion import ATTRIBUTE_SCENARIOS, SCENARIOS

NEW_SCENARIOS = ("hydra", "paraphrase_synchronized", "attribute_only", "last_day_burst", "reseller_sweep")
SCALE = 0.1


@pytest.fixture(scope="module")
def plain():
    return simulate(SimConfig(seed=5, scale=SCALE, dim=16))


@pytest.fixture(scope="module")
def trapped():
    return simulate(SimConfig(seed=5, scale=SCALE, dim=16, traps=True, evasion=NEW_SCENARIOS))


def attribute_values(traffic) -> dict[str, np.ndarray]:
    """Per key, (n,) object array of each row's value."""
    col = traffic.table.column("attributes").combine_chunks()
    keys = np.asarray(col.keys.to_pylist(), dtype=object).reshape(traffic.table.num_rows, -1)
    items = np.asarray(col.items.to_pylist(), dtype=object).reshape(traffic.table.num_rows, -1)
    return {k: items[:, j] for j, k in enumerate(keys[0])}


def accounts_per_value(traffic, key: str, which: set[int] | None = None) -> dict[str, set[int]]:
    """Value -> the accounts (latent indices) sending at least one request with it."""
    vals = attribute_values(traffic)[key]
    out: dict[str, set[int]] = defaultdict(set)
    for acct, v in set(zip(traffic.latent.account.tolist(), vals.tolist())):
        if which is None or acct in which:
            out[v].add(acct)
    return out


def of_kind(traffic, kind: str) -> list[int]:
    return [i for i, a in enumerate(traffic.latent.accounts) if a.kind == kind]


def benign(traffic) -> set[int]:
    return {i for i, a in enumerate(traffic.latent.accounts) if a.label == "benign"}


# ---------------------------------------------------------------------------
# the default output does not change


def test_default_has_no_attributes_column_and_attributes_add_only_a_column(plain):
    assert plain.table.schema.equals(traffic_schema(16))
    assert "attributes" not in plain.table.schema.names
    with_attrs = simulate(SimConfig(seed=5, scale=SCALE, dim=16, attributes=True))
    assert with_attrs.table.schema.field("attributes").type == ATTRIBUTES_TYPE
    assert with_attrs.table.drop_columns(["attributes"]).equals(plain.table)
    assert with_attrs.labels == plain.labels


def test_default_path_is_pinned():
    # Digest of the RNG-driven columns and labels of a small default world, as
    # generated before attributes, traps and the new scenarios existed
    # (embeddings left out: their last bits may differ between BLAS builds).
    t = simulate(SimConfig(seed=0, scale=0.05, dim=16))
    h = hashlib.sha256()
    for name in ("request_id", "account_id", "org_id"):
        h.update("\0".join(str(v) for v in t.table.column(name).to_pylist()).encode())
    h.update(t.table.column("ts").cast(pa.int64()).to_numpy().tobytes())
    h.update(json.dumps(t.labels, sort_keys=True).encode())
    assert h.hexdigest()[:16] == "589c7ed0b102fa2f"


def test_new_scenarios_are_registered_and_old_ones_unchanged(plain):
    assert set(NEW_SCENARIOS) <= set(SCENARIOS)
    assert ATTRIBUTE_SCENARIOS <= set(NEW_SCENARIOS)
    assert SimConfig(evasion=("hydra",)).writes_attributes
    assert not SimConfig(evasion=("last_day_burst", "round_robin")).writes_attributes
    # Traps and new scenarios come from streams of their own: the ordinary accounts are as before.
    ordinary = lambda t: sorted(  # noqa: E731
        (a.kind, int((t.latent.account == i).sum()))
        for i, a in enumerate(t.latent.accounts)
        if not a.kind.startswith("evade_") and a.kind not in TRAP_KINDS
    )
    with_new = simulate(SimConfig(seed=5, scale=SCALE, dim=16, evasion=("last_day_burst",)))
    assert ordinary(with_new) == ordinary(plain)
    assert "attributes" not in with_new.table.schema.names


# ---------------------------------------------------------------------------
# traps


def test_traps_are_present_and_benign(trapped):
    kinds = Counter(info["kind"] for info in trapped.labels["accounts"].values())
    assert set(TRAP_KINDS) <= set(kinds)
    for info in trapped.labels["accounts"].values():
        if info["kind"] in TRAP_KINDS:
            assert info["label"] == "benign" and info["campaign"] is None
    assert kinds["joint_benchmark"] >= 3


def test_enterprise_orgs_share_org_net_pay_and_system_prompt(trapped):
    lat = trapped.latent
    vals = attribute_values(trapped)
    orgs: dict[str, list[int]] = defaultdict(list)
    for i in of_kind(trapped, "enterprise_employee"):
        orgs[lat.accounts[i].org_id].append(i)
    assert len(orgs) >= 2
    for org, members in orgs.items():
        assert 5 <= len(members) <= 40
        rows = np.isin(lat.account, members)
        net, n = Counter(vals["net"][rows]).most_common(1)[0]
        # Every employee sends from the office prefix, and nobody outside the org does.
        assert all((vals["net"][lat.account == i] == net).mean() > 0.5 for i in members)
        assert set(np.unique(lat.account[vals["net"] == net])) <= set(members)
        assert np.unique(vals["pay"][rows]).size == 1
        styles = [set(lat.style[lat.account == i].tolist()) - {-1} for i in members]
        assert len(set.intersection(*styles)) == 1  # one shared system prompt
        assert len(set.union(*[set(lat.subtopic[lat.account == i].tolist()) for i in members])) < lat.world.n_subtopics


def test_joint_benchmarks_run_one_suite_in_one_burst(trapped):
    lat = trapped.latent
    groups: dict[str, list[int]] = defaultdict(list)
    for i in of_kind(trapped, "joint_benchmark"):
        groups[lat.accounts[i].org_id].append(i)
    for members in groups.values():
        assert len(members) >= 2
        rows = np.isin(lat.account, members)
        assert np.unique(lat.style[rows]).size == 1
        ts = trapped.table.column("ts").cast(pa.int64()).to_numpy()[rows]
        assert ts.max() - ts.min() <= 2 * 3_600_000


def test_net_sharing_is_realistic(trapped):
    nets = accounts_per_value(trapped, "net", benign(trapped))
    n_benign = len(benign(trapped))
    # A carrier NAT holds a large share of the population (>= 100 accounts at scale 1).
    assert max(len(a) for a in nets.values()) >= 100 * SCALE
    assert max(len(a) for a in nets.values()) >= 0.05 * n_benign
    # ... and many accounts have a prefix of their own.
    assert sum(1 for a in nets.values() if len(a) == 1) >= 0.1 * n_benign
    clients = accounts_per_value(trapped, "client")
    sizes = sorted((len(a) for a in clients.values()), reverse=True)
    assert sum(sizes[:6]) >= 0.6 * len(trapped.latent.accounts)  # a handful of common SDKs
    assert sum(1 for s in sizes if s <= 3) >= 5  # and rarer ones
    pays = accounts_per_value(trapped, "pay")
    assert len(pays) >= 0.5 * len(trapped.latent.accounts)


def test_every_row_has_every_attribute(trapped):
    col = trapped.table.column("attributes").combine_chunks()
    assert col.null_count == 0
    assert set(np.diff(col.offsets.to_numpy())) == {3}
    vals = attribute_values(trapped)
    assert set(vals) == {"net", "pay", "client"}
    assert all(isinstance(v, str) and len(v) == 12 and int(v, 16) >= 0 for v in vals["net"][:100])


def test_resellers_follow_the_population_at_product_volume(trapped):
    lat = trapped.latent
    for i in of_kind(trapped, "reseller"):
        rows = lat.account == i
        assert 5000 <= rows.sum() <= 26000
        mix = np.bincount(lat.subtopic[rows], minlength=lat.world.n_subtopics) / rows.sum()
        pop = lat.world.subtopic_pop
        # Far closer to the population's skewed mix than an even sweep is.
        assert 0.5 * np.abs(mix - pop).sum() < 0.6 * 0.5 * np.abs(1.0 / pop.size - pop).sum()


def test_agent_framework_users_share_its_prompt_and_client_and_run_chains(trapped):
    lat = trapped.latent
    users = of_kind(trapped, "agent_framework")
    assert len(users) >= 5
    # Developers of different orgs, each on a few topics of their own.
    assert len({lat.accounts[i].org_id for i in users}) == len(users)
    rows = np.isin(lat.account, users)
    assert np.unique(lat.style[rows]).size == 1  # the framework's system prompt on every call
    clients = accounts_per_value(trapped, "client", set(users))
    assert max(len(a) for a in clients.values()) == len(users)  # and its client fingerprint
    ts_all = trapped.table.column("ts").cast(pa.int64()).to_numpy()
    for i in users:
        mine = lat.account == i
        assert np.unique(lat.subtopic[mine]).size <= 4
        # Chains: calls of one task carry its transcript and follow each other within seconds.
        contexts, sizes = np.unique(lat.context[mine], return_counts=True)
        assert (contexts >= 0).all() and 4 <= sizes.min() and sizes.max() <= 30
        for c in contexts[:3]:
            gaps = np.diff(np.sort(ts_all[mine & (lat.context == c)]))
            assert gaps.max() <= 8_000


# ---------------------------------------------------------------------------
# evasion scenarios


def test_new_scenarios_plant_labelled_campaigns(trapped):
    labels = trapped.labels
    kinds = Counter(info["kind"] for info in labels["accounts"].values())
    for name in NEW_SCENARIOS:
        assert kinds[f"evade_{name}"] > 0
    for info in labels["accounts"].values():
        if info["kind"].startswith("evade_"):
            assert info["label"] == "distiller"
    camps = labels["campaigns"]
    assert len(camps["evade-hydra-0"]["members"]) == kinds["evade_hydra"] >= 30
    for cid in ("evade-paraphrase-synchronized-0", "evade-attribute-only-0", "evade-last-day-burst-0"):
        assert len(camps[cid]["members"]) == 30
    assert kinds["evade_reseller_sweep"] == 3
    sizes = {info["n_requests"] for info in labels["accounts"].values() if info["kind"] == "evade_hydra"}
    assert min(sizes) >= 30 and max(sizes) <= 400


def test_hydra_size_scales():
    from streamguard.sim.evasion import hydra  # noqa: PLC0415

    assert hydra.__doc__ and "100-300" in hydra.__doc__
    big = simulate(SimConfig(seed=2, scale=0.5, dim=8, days=1.0, evasion=("hydra",)))
    n = sum(1 for a in big.latent.accounts if a.kind == "evade_hydra")
    assert 50 <= n <= 150


def test_hydra_shares_a_proxy_no_benign_account_uses_and_interleaves(trapped):
    lat = trapped.latent
    members = of_kind(trapped, "evade_hydra")
    nets = accounts_per_value(trapped, "net")
    proxy = [v for v, accts in nets.items() if set(members) <= accts]
    assert len(proxy) == 1
    assert not nets[proxy[0]] & benign(trapped)
    ts = trapped.table.column("ts").cast(pa.int64()).to_numpy()
    rows = np.isin(lat.account, members)
    union = np.sort(ts[rows])
    gaps = np.diff(union)
    # Machine-paced as a union (regular gaps) ...
    assert np.std(gaps) < 0.5 * np.mean(gaps)
    # ... each member an irregular thinning of it.
    one = np.diff(np.sort(ts[lat.account == members[0]]))
    assert np.std(one) > 0.6 * np.mean(one)


def test_paraphrase_synchronized_members_switch_on_together(trapped):
    lat = trapped.latent
    members = of_kind(trapped, "evade_paraphrase_synchronized")
    rows = np.isin(lat.account, members)
    assert (lat.style[rows] == -1).all()
    assert np.unique(lat.text[rows]).size == rows.sum()
    ts = trapped.table.column("ts").cast(pa.int64()).to_numpy()
    firsts = np.array([ts[lat.account == i].min() for i in members])
    lasts = np.array([ts[lat.account == i].max() for i in members])
    assert np.ptp(firsts) <= 5 * 60_000 and np.ptp(lasts) <= 5 * 60_000


def test_attribute_only_members_share_pay_and_a_rare_client_only(trapped):
    lat = trapped.latent
    members = set(of_kind(trapped, "evade_attribute_only"))
    rows = np.isin(lat.account, list(members))
    assert (lat.style[rows] == -1).all()
    for key in ("pay", "client"):
        values = accounts_per_value(trapped, key)
        shared = [v for v, accts in values.items() if accts == members]
        assert len(shared) == 1, key
    nets = accounts_per_value(trapped, "net", members)
    assert all(len(a) == 1 for a in nets.values())


def test_last_day_burst_starts_on_the_last_day(trapped):
    lat = trapped.latent
    ts = trapped.table.column("ts").cast(pa.int64()).to_numpy()
    end = trapped.labels["end_ms"]
    members = of_kind(trapped, "evade_last_day_burst")
    firsts = np.array([ts[lat.account == i].min() for i in members])
    assert (firsts >= end - 86_400_000).all()
    assert np.ptp(firsts) <= 30 * 60_000


def test_reseller_sweep_starts_part_way(trapped):
    lat = trapped.latent
    ts = trapped.table.column("ts").cast(pa.int64()).to_numpy()
    start, end = trapped.labels["start_ms"], trapped.labels["end_ms"]
    for i in of_kind(trapped, "evade_reseller_sweep"):
        rows = lat.account == i
        first_half = rows & (ts < start + 0.3 * (end - start))
        late = rows & (ts >= start + 0.7 * (end - start))
        n = lat.world.n_subtopics
        # Early traffic follows the population; late traffic has the sweep's even coverage added.
        early_cover = np.unique(lat.subtopic[first_half]).size / n
        late_cover = np.unique(lat.subtopic[late]).size / n
        assert late_cover >= early_cover
        assert late_cover > 0.9


# ---------------------------------------------------------------------------
# files


def test_file_with_attributes_reads_and_validates(tmp_path):
    t = simulate(SimConfig(seed=9, scale=0.03, dim=16, evasion=("attribute_only",)))
    write_traffic(t, tmp_path / "t.parquet", tmp_path / "l.json")
    back = read_request_file(tmp_path / "t.parquet")
    assert back.schema.field("attributes").type == ATTRIBUTES_TYPE
    assert pq.read_table(tmp_path / "t.parquet").equals(t.table)
    batch, dead = validate_table(back, 16)
    assert not dead and len(batch) == t.table.num_rows
    labels = json.loads((tmp_path / "l.json").read_text())
    assert {"evade_attribute_only"} <= {i["kind"] for i in labels["accounts"].values()}


def test_cli_traps_flag(tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "streamguard", "simulate", "--out", str(tmp_path / "t.parquet"), "--labels",
         str(tmp_path / "l.json"), "--seed", "1", "--scale", "0.02", "--dim", "8", "--days", "1", "--traps"],
        capture_output=True, text=True, check=True,
    )
    assert "wrote" in out.stdout
    assert "attributes" in pq.read_schema(tmp_path / "t.parquet").names
    kinds = {i["kind"] for i in json.loads((tmp_path / "l.json").read_text())["accounts"].values()}
    assert set(TRAP_KINDS) <= kinds
