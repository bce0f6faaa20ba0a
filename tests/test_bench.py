"""``streamguard bench --quick`` runs end to end and reports every section (numbers are not judged)."""

from __future__ import annotations

import argparse
import json
import sys
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
def test_quick_run_writes_every_section(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "bench"
    assert bench.run(_args("--quick", "--dims", "96", "--out", str(out))) == 0
    printed = " ".join(capsys.readouterr().out.split())
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

    # The replay command end to end, beside the detector alone on the same requests.
    (e2e,) = report["end_to_end"]
    assert e2e["events"] == rows[e2e["backend"]]["events"]
    assert e2e["detector_events_per_second"] == rows[e2e["backend"]]["events_per_second"]
    assert 0 < e2e["events_per_second"] and e2e["wall_seconds"] >= e2e["command_seconds"] > 0
    assert e2e["peak_rss_bytes"] > 0
    # Issue 14's baseline over the same file, in its own process: a plain faiss near-duplicate job.
    assert e2e["faiss_job_events_per_second"] > 0 and 0 < e2e["faiss_job_near_duplicates"] < e2e["events"]
    assert e2e["replay_over_faiss_job"] == pytest.approx(e2e["events_per_second"] / e2e["faiss_job_events_per_second"])
    top = e2e["profile"]["top"]
    assert 0 < len(top) <= bench.PROFILE_TOP
    assert any(p["function"].startswith("streamguard/") for p in top)
    assert all(p["share"] < 0.95 for p in top) and [p["cumtime"] for p in top] == sorted((p["cumtime"] for p in top), reverse=True)

    # Every figure says what it is measured against.
    assert "share = events/s / BLAS limit" in printed and "share = end-to-end / detector" in printed
    assert f"should replay >= {bench.TARGET_EVENTS_PER_SECOND:,} events/s" in printed
    assert ": False)" not in printed and ": True)" not in printed
    assert "top costs of `replay`" in printed


def test_simulated_file_is_written_in_pieces_and_rss_is_measured_per_process(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    path = tmp_path / "big.parquet"
    info = bench.write_simulated_in_pieces(path, rows=3_000, dim=16, seed=3, events_per_tick=4096, tick_ms=300_000, piece_rows=2_000)
    assert info["rows"] == 3_000 and info["pieces"] == 2 and info["embedding_bytes"] == 3_000 * 16 * 4
    table = pq.read_table(path)
    assert table.num_rows == 3_000
    ids = table.column("request_id").to_pylist()
    assert len(set(ids)) == len(ids) and ids[0].startswith("p0-") and ids[-1].startswith("p1-")
    ts = table.column("ts").cast("int64").to_numpy()
    assert ts[2_000:].min() >= ts[:2_000].max() - 60_000  # the second piece follows the first in event time

    small = bench.run_measured([sys.executable, "-c", "pass"])
    big = bench.run_measured([sys.executable, "-c", "b = b'x' * (300 * 2**20)"])
    assert small["returncode"] == big["returncode"] == 0
    assert big["peak_rss_bytes"] - small["peak_rss_bytes"] > 250 * 2**20
