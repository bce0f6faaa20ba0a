"""The evasion scenarios plant what their names promise, on top of an unchanged ordinary population."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from streamguard.sim import EVASION_KINDS, KNOWN_EVASIONS, SimConfig, simulate

MS_PER_DAY = 86_400_000


@pytest.fixture(scope="module")
def plain():
    return simulate(SimConfig(seed=5, scale=0.1, dim=32))


@pytest.fixture(scope="module")
def evasive():
    return simulate(SimConfig(seed=5, scale=0.1, dim=32, evasion=tuple(sorted(KNOWN_EVASIONS))))


def rows_by_account(traffic, kind):
    lat = traffic.latent
    ids = [i for i, a in enumerate(lat.accounts) if a.kind == kind]
    return {i: np.flatnonzero(lat.account == i) for i in ids}


def test_every_scenario_adds_labelled_distillers_and_leaves_the_others_alone(plain, evasive):
    kinds = {info["kind"] for info in evasive.labels["accounts"].values()}
    assert set(EVASION_KINDS) <= kinds
    for info in evasive.labels["accounts"].values():
        if info["kind"].startswith("evade_"):
            assert info["label"] == "distiller"
    ordinary = lambda t: sorted((a.kind, int((t.latent.account == i).sum())) for i, a in enumerate(t.latent.accounts) if not a.kind.startswith("evade_"))  # noqa: E731
    assert ordinary(plain) == ordinary(evasive)


def test_round_robin_rotates_over_60_accounts_each_under_100_requests(evasive):
    members = rows_by_account(evasive, "evade_round_robin")
    assert len(members) == 60
    assert all(rows.size < 100 for rows in members.values())
    assert len({evasive.latent.accounts[i].campaign for i in members}) == 1


def test_paraphrased_traffic_has_no_template_and_nothing_repeated(evasive):
    lat = evasive.latent
    rows = np.concatenate(list(rows_by_account(evasive, "evade_paraphrased").values()))
    assert (lat.style[rows] == -1).all()
    assert np.unique(lat.text[rows]).size == rows.size  # no verbatim repeat, within or across accounts
    assert np.unique(lat.content[rows]).size == rows.size  # nor a question asked twice in new words


def test_resampled_members_share_prompts_but_no_template(evasive):
    lat = evasive.latent
    members = rows_by_account(evasive, "evade_resampled")
    assert len(members) == 30
    owner: dict[int, set[int]] = {}
    for i, rows in members.items():
        assert (lat.style[rows] == -1).all() and rows.size < 1200
        for t in lat.text[rows].tolist():
            owner.setdefault(t, set()).add(i)
    for i, rows in members.items():
        shared = np.mean([len(owner[t]) > 1 for t in lat.text[rows].tolist()])
        assert 0.15 < shared < 0.7  # a share of its prompts also went out from another member


def test_slow_attackers_send_a_tenth_of_the_usual_rate_over_the_whole_period(evasive):
    lat = evasive.latent
    days = (evasive.labels["end_ms"] - evasive.labels["start_ms"]) / MS_PER_DAY
    for i, rows in rows_by_account(evasive, "evade_slow_10x").items():
        ts = np.sort(evasive.table.column("ts").cast("int64").to_numpy()[rows])
        assert rows.size / days <= 6000 / 1 / 10 + 1  # the fastest sweeper's daily rate, divided by ten
        if rows.size >= 50:
            assert ts[-1] - ts[0] > 0.5 * days * MS_PER_DAY
    assert sum(1 for i in rows_by_account(evasive, "evade_slow_10x") if lat.accounts[i].campaign) == 30


def test_mixed_product_accounts_hide_a_sweep_behind_one_system_prompt(evasive):
    lat = evasive.latent
    pop = lat.world.subtopic_pop
    accounts = rows_by_account(evasive, "evade_mixed_into_product")
    assert len(accounts) == 4
    for rows in accounts.values():
        assert rows.size >= 5000 and np.unique(lat.style[rows]).size == 1
        # More of it lands on unpopular subtopics than the population's mix would send there.
        rare = pop < np.quantile(pop, 0.5)
        assert np.isin(lat.subtopic[rows], np.flatnonzero(rare)).mean() > 1.2 * pop[rare].sum()


def test_population_mix_attackers_follow_the_population(evasive):
    lat = evasive.latent
    s = lat.world.n_subtopics
    pop = lat.world.subtopic_pop
    singles = [r for i, r in rows_by_account(evasive, "evade_population_mix").items() if not lat.accounts[i].campaign]
    rows = np.concatenate(singles)
    h = np.bincount(lat.subtopic[rows], minlength=s) / rows.size
    assert 0.5 * np.abs(h - pop).sum() < 0.5 * 0.5 * np.abs(np.full(s, 1 / s) - pop).sum()


def test_the_evasion_command_reports_every_scenario_with_the_baseline(tmp_path):
    out = tmp_path / "evasion.json"
    md = tmp_path / "evasion.md"
    run = subprocess.run(
        [sys.executable, "-m", "streamguard", "evasion", "--seed", "3", "--scale", "0.2", "--dim", "32",
         "--scenario", "round_robin", "--json", str(out), "--markdown", str(md)],
        capture_output=True, text=True, timeout=600,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert [r["scenario"] for r in report["rows"]] == ["baseline", "round_robin"]
    rr = report["rows"][1]
    assert rr["evasive_campaign_members"]["accounts"] == 60
    assert 0 <= rr["evasive_campaign_members"]["flagged"] <= 60
    assert report["rows"][0]["evasive"]["accounts"] == 0
    assert "| round_robin |" in md.read_text()
    bad = subprocess.run([sys.executable, "-m", "streamguard", "evasion", "--scenario", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown scenario" in bad.stderr
