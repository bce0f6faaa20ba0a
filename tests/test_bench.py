"""``streamguard bench --quick`` runs end to end and reports every section (numbers are not judged)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from streamguard import bench


def _args(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="streamguard")
    bench.add_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["bench", *argv])


def test_parser_defaults() -> None:
    args = _args()
    assert args.out == "bench-out" and args.dims == "384,1024" and not args.quick


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_quick_run_writes_every_section(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench"
    assert bench.run(_args("--quick", "--dims", "96", "--out", str(out))) == 0
    report = json.loads((out / "bench.json").read_text())
    assert set(bench.SECTIONS) <= set(report)
    assert (out / "bench.png").stat().st_size > 10_000

    assert report["sgemm"]["gflops"] > 0
    assert report["flops"]["96"]["gemm"] == 96 * 128 * 2 + 2 * 96 * 1024 * 2
    rows = {r["backend"]: r for r in report["throughput"] if r["dim"] == 96}
    assert "numpy" in rows
    for row in rows.values():
        assert row["events"] > 0 and row["events_per_second"] > 0
        assert row["p50_batch_seconds"] <= row["p99_batch_seconds"]
        assert 0 < row["share_of_blas_limit"]
        assert row["alerts_match_reference"] is not False

    nd = report["near_duplicate"]
    names = [a["name"] for a in nd["approaches"]]
    assert any(n.startswith("numpy brute force") for n in names)
    assert any(n.startswith("streamguard within-account") for n in names)
    for approach in nd["approaches"]:
        if "skipped" not in approach:
            assert approach["queries_per_second"] > 0
            if nd["positives"]:
                assert 0.0 <= approach["recall"] <= 1.0
    assert nd["radius_sweep"] and "window" in nd["radius_for_target_recall"]
    assert nd["mean_chain"] > 0 and nd["chain_percentiles"]["100"] >= nd["mean_chain"]
    scan = next(a for a in nd["approaches"] if a["name"].startswith("streamguard within"))
    window_recall = next(r["recall_window"] for r in nd["radius_sweep"] if r["radius"] == nd["radius"])
    if nd["positives"]:
        assert scan["recall"] == pytest.approx(window_recall)  # the scan sees the whole window

    assert report["memory"]["peak_rss_bytes"] > 0
    assert report["memory"]["state_bytes_per_account"]["96"] > 0
    assert report["memory"]["fixed_state_parts"]["window"] > 0
    churn = report["churn"]
    assert churn["max_active_accounts"] < churn["accounts_seen"]  # idle accounts were evicted
    assert churn["evicted"] > 0
    assert set(report["targets"]) >= {"cpu_events_per_second", "near_duplicate_recall", "state_bytes_per_account"}
