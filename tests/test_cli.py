"""The command line, end to end, as a user runs it."""

import json
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from streamguard.backends import cuda_unavailable_reason
from streamguard.cli import main


def streamguard(*args, env_extra=None):
    import os

    # A small stream: few topics, so a lenient false-alert rate for the plumbing under test to see alerts.
    env = dict(os.environ, STREAMGUARD_COVERAGE_WARMUP="1500", STREAMGUARD_COVERAGE_CELLS="256",
               STREAMGUARD_SCORING_FALSE_ALERTS_PER_10K="2000", STREAMGUARD_CAMPAIGN_GROUP_FALSE_ALERTS_PER_10K="2000")
    env.update(env_extra or {})
    return subprocess.run([sys.executable, "-m", "streamguard", *args], capture_output=True, text=True, env=env, timeout=600)


@pytest.fixture(scope="module")
def traffic_file(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    result = streamguard("simulate", "--out", str(d / "t.parquet"), "--labels", str(d / "l.json"), "--seed", "5", "--scale", "0.1", "--dim", "48")
    assert result.returncode == 0, result.stderr
    return d


def test_simulate_replay_eval(traffic_file):
    d = traffic_file
    replay = streamguard("replay", str(d / "t.parquet"), "--alerts", str(d / "a.jsonl"), "--backend", "numpy", "--save-codebook", str(d / "book.npz"))
    assert replay.returncode == 0, replay.stderr
    assert "events/s" in replay.stdout
    alerts = [json.loads(line) for line in (d / "a.jsonl").read_text().splitlines()]
    assert alerts and set(alerts[0]) == {"account_id", "ts", "score", "kind", "campaign_id", "evidence", "events_seen"}
    assert (d / "book.npz").exists()
    ev = streamguard("eval", "--labels", str(d / "l.json"), "--alerts", str(d / "a.jsonl"), "--traffic", str(d / "t.parquet"), "--json", str(d / "e.json"))
    assert ev.returncode == 0, ev.stderr
    assert "precision" in ev.stdout and "recall" in ev.stdout
    report = json.loads((d / "e.json").read_text())
    assert report["true_positives"] > 0 and report["distillers"] > 0


def test_a_loaded_codebook_gives_the_same_alerts(traffic_file):
    d = traffic_file
    again = streamguard("replay", str(d / "t.parquet"), "--alerts", str(d / "b.jsonl"), "--backend", "numpy", "--codebook", str(d / "book.npz"))
    assert again.returncode == 0, again.stderr
    assert (d / "b.jsonl").read_text() == (d / "a.jsonl").read_text()


def test_bad_rows_are_dead_lettered_and_the_run_goes_on(tmp_path):
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((40, 16)).astype(np.float32)
    emb[3] = np.nan
    emb[5] = 0.0
    rows = [list(map(float, e)) for e in emb]
    rows[7] = rows[7][:10]
    table = pa.table(
        {
            "request_id": [f"r{i}" for i in range(40)],
            # 2026: event times before 2000 are dead letters of their own (stream/event_time.py).
            "ts": pa.array(1_767_225_600_000 + np.arange(40, dtype=np.int64) * 1000),
            "account_id": [f"a{i % 4}" for i in range(40)],
            "embedding": pa.array(rows, type=pa.list_(pa.float32())),
        }
    )
    pq.write_table(table, tmp_path / "bad.parquet")
    result = streamguard("replay", str(tmp_path / "bad.parquet"), "--alerts", str(tmp_path / "a.jsonl"), "--backend", "numpy")
    assert result.returncode == 0, result.stderr
    dead = [json.loads(line) for line in (tmp_path / "a.dead.jsonl").read_text().splitlines()]
    assert sorted(d["record"]["request_id"] for d in dead) == ["r3", "r5", "r7"]
    assert "37 requests" not in result.stdout and "(3 dead letters" in result.stdout


def test_a_wrong_file_is_one_line_not_a_traceback(tmp_path, capsys):
    (tmp_path / "x.parquet").write_text("hello")
    assert main(["replay", str(tmp_path / "x.parquet"), "--alerts", str(tmp_path / "a.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "not a Parquet or Arrow IPC file" in err and "Traceback" not in err and err.count("\n") == 1


@pytest.mark.skipif(cuda_unavailable_reason() is None, reason="a CUDA device is present here")
def test_cuda_without_a_device_fails_at_start_up(traffic_file, capsys):
    d = traffic_file
    assert main(["replay", str(d / "t.parquet"), "--alerts", str(d / "c.jsonl"), "--backend", "cuda"]) == 2
    err = capsys.readouterr().err
    assert "--backend cuda" in err and "Use --backend cpu or numpy" in err


# -- demo and replay: metrics flags ---------------------------------------------------------


def test_metrics_flags_are_checked_before_any_work(traffic_file, capsys, monkeypatch):
    d = traffic_file
    monkeypatch.delenv("STREAMGUARD_HMAC_KEY", raising=False)
    assert main(["replay", str(d / "t.parquet"), "--alerts", str(d / "x.jsonl"), "--linger", "5"]) == 2
    assert "--linger needs --metrics-port" in capsys.readouterr().err
    assert main(["replay", str(d / "t.parquet"), "--alerts", str(d / "x.jsonl"), "--pace", "0"]) == 2
    assert "--pace must be > 0" in capsys.readouterr().err
    assert main(["demo", "--metrics-port", "70000"]) == 2
    assert "--metrics-port must be in 0..65535" in capsys.readouterr().err
    assert main(["replay", str(d / "t.parquet"), "--alerts", str(d / "x.jsonl"), "--alert-account-hash"]) == 2
    assert "--alert-account-hash needs STREAMGUARD_HMAC_KEY" in capsys.readouterr().err


def test_demo_and_replay_help_document_the_metrics_flags():
    for command in ("demo", "replay"):
        result = streamguard(command, "--help")
        assert result.returncode == 0
        text = " ".join(result.stdout.split())
        for flag in ("--metrics-port", "--metrics-addr", "--pace", "--linger"):
            assert flag in text, (command, flag)
        assert "/metrics, /healthz and /readyz" in text


def test_replay_serves_metrics_while_it_runs_and_lingers(traffic_file, tmp_path):
    """``replay --metrics-port 0 --pace --linger``: scraped while paced, final values kept, SIGTERM ends the linger."""
    import hashlib
    import hmac
    import os
    import re
    import signal
    import time
    import urllib.error
    import urllib.request

    d = traffic_file
    env = dict(os.environ, STREAMGUARD_COVERAGE_WARMUP="1500", STREAMGUARD_COVERAGE_CELLS="256", STREAMGUARD_HMAC_KEY="cli-key",
               STREAMGUARD_SCORING_FALSE_ALERTS_PER_10K="2000", STREAMGUARD_CAMPAIGN_GROUP_FALSE_ALERTS_PER_10K="2000")
    process = subprocess.Popen(
        [sys.executable, "-m", "streamguard", "replay", str(d / "t.parquet"), "--alerts", str(tmp_path / "a.jsonl"),
         "--backend", "cpu", "--metrics-port", "0", "--pace", "20000", "--linger", "60", "--alert-account-hash"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
    )
    try:
        first = process.stdout.readline()
        url = re.search(r"serving metrics on (http://\S+/metrics)", first).group(1)
        while True:
            line = process.stdout.readline()
            assert line, "replay ended before lingering"
            if line.startswith("replayed"):
                break
        assert "still serving" in process.stdout.readline()
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
        total = int(re.search(r"replayed (\d+) requests", line).group(1))
        seen = {m.group(1): float(m.group(2)) for m in re.finditer(r'^(streamguard_\w+(?:\{[^}]*\})?) (\S+)$', text, re.MULTILINE)}
        assert seen['streamguard_requests_total{partition="none"}'] == total
        assert [v for k, v in seen.items() if k.startswith('streamguard_backend_info{backend="cpu",device=')] == [1.0]
        assert seen["streamguard_ready"] == 0  # done: not consuming any more
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(url.replace("/metrics", "/readyz"), timeout=5)
        assert not_ready.value.code == 503
        with urllib.request.urlopen(url.replace("/metrics", "/healthz"), timeout=5) as response:
            assert response.status == 200
        alerts = [json.loads(a) for a in (tmp_path / "a.jsonl").read_text().splitlines()]
        assert alerts and seen['streamguard_alerts_total{kind="coverage_sweep"}'] + seen['streamguard_alerts_total{kind="campaign"}'] > 0
        for alert in alerts:  # a stable key: the alert records carry the gauge's label
            expected = hmac.new(b"cli-key", alert["account_id"].encode(), hashlib.sha256).hexdigest()[:16]
            assert alert["evidence"]["account_hash"] == expected
        labels = set(re.findall(r'account_hash="([0-9a-f]+)"', text))
        assert labels and labels <= {a["evidence"]["account_hash"] for a in alerts}
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
        assert time.monotonic() - started < 10
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=5)
        process.stdout.close()


# -- help and output for a newcomer (issue 13) ----------------------------------------------


def _subcommands():
    import argparse

    from streamguard.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return parser, sub.choices


def test_every_flag_of_every_subcommand_has_help():
    parser, commands = _subcommands()
    assert {"demo", "simulate", "replay", "eval", "bench", "run", "evasion", "evaluate"} <= set(commands)
    missing = [("streamguard", a.option_strings) for a in parser._actions if a.option_strings and not a.help]
    for name, command in commands.items():
        missing += [(name, a.option_strings or a.dest) for a in command._actions if not a.help]
        command.format_help()  # every %(default)s and the like expands
    assert not missing


def test_demo_help_describes_its_flags():
    result = streamguard("demo", "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    for described in ("--seed SEED random seed", "--scale SCALE size of the simulated population", "--dim DIM embedding dimension",
                      "--no-live no live table"):
        assert described in text, described


def test_demo_without_a_terminal_prints_progress_and_cuts_no_name(tmp_path):
    """``demo | cat``: progress lines on stderr, no live table, the latest alerts once, nothing cut or wrapped mid-name."""
    result = streamguard("demo", "--scale", "0.1", "--dim", "48", "--backend", "numpy", env_extra={"COLUMNS": ""})
    assert result.returncode == 0, result.stderr
    assert "simulating labelled traffic" in result.stderr and "detecting: " in result.stderr
    assert "latest alerts" in result.stdout and "streamguard eval" in result.stdout
    assert "…" not in result.stdout
    assert "campaign_member" in result.stdout and "distiller/" in result.stdout
    assert max(len(line) for line in result.stdout.splitlines()) <= 200


def test_eval_tables_on_a_pipe_are_wide_and_cut_no_kind(monkeypatch):
    import io

    from streamguard.console import PIPE_WIDTH, make_console
    from streamguard.evaluation import Evaluation, render

    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    console = make_console(file=out)
    assert not console.is_terminal and console.width == PIPE_WIDTH
    kind = "campaign_member_with_a_long_kind_name"
    row = {"accounts": 3, "flagged": 2, "recall": 2 / 3, "delay_median": 52.0, "per_10k": 0.0}
    result = Evaluation(
        distillers=3, benign=5, flagged=2, true_positives=2, false_positives=0, precision=1.0, recall=2 / 3,
        false_positives_per_10k_benign=0.0, by_benign_kind={"power_user": row}, by_distiller_kind={kind: row},
        unlabelled_flagged=0, delay_requests_median=52.0, delay_requests_p90=60.0, delay_hours_median=5.1,
    )
    render(result, console)
    text = out.getvalue()
    assert kind in text and "…" not in text
    assert "recall / FP per 10k" in text  # headers not wrapped mid-phrase either


def test_the_live_table_folds_long_names_in_a_narrow_terminal():
    import io

    from rich.console import Console

    from streamguard.demo import LiveView
    from streamguard.schema import AlertRecord

    labels = {"a1": {"label": "distiller", "kind": "campaign_member"}}
    view = LiveView(total=10, labels=labels)
    view.update(view.result, [AlertRecord("a1", 0, 0.9, "campaign+near_duplicate", "campaign-000123", {}, 300)])
    out = io.StringIO()
    Console(file=out, width=60).print(view)
    assert "…" not in out.getvalue()
    rows = [line.split("│")[1:-1] for line in out.getvalue().splitlines() if line.startswith("│ ") and line.count("│") == 6]
    column = lambda i: "".join(row[i].strip() for row in rows)  # noqa: E731 - a folded cell continues on the next line
    assert column(1) == "campaign+near_duplicate[000123]"
    assert column(4) == "distiller/campaign_member"
