"""A real Prometheus server scrapes a running ``streamguard demo`` and evaluates deploy/prometheus/rules.yml.

Debian's ``prometheus`` binary is started on 127.0.0.1 (free port, 1 s scrape
and evaluation intervals, rules.yml unchanged), then ``streamguard demo`` runs
as a subprocess with ``--metrics-port`` on another free port, ``--pace`` (so
several scrapes see the series move) and ``--linger`` (so the final values are
scraped). Everything is asserted through Prometheus's HTTP API:

- the key series exist and increase (requests, batch latency histogram,
  alerts by kind, active accounts, scores), the backend is exported, the top-N
  gauge carries keyed hashes of planted distillers and nothing else, and no
  label of any series holds a raw account or request id of the demo's traffic;
- the alert counters were scraped at 0 before the first alert, and the planted
  distillers drive StreamguardDistillationAlertRaised and
  StreamguardCampaignDetected to firing in the live server;
- the alert-counter trajectory Prometheus recorded is replayed through
  ``promtool test rules``: quiet before the first alert, firing after;
- the exposition passes ``promtool check metrics``, and every metric the
  dashboard and the rules select is exported by the running process (except
  consumer lag, Kafka only, and GPU kernel time, cuda only).

Both processes are stopped by pid at the end (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "deploy" / "prometheus" / "rules.yml"
SEED, SCALE, DIM = 7, 0.3, 384
PACE = 8000  # requests/s: ~51k requests over ~6-7 s, several 1 s scrapes while they move
KEY = "live-test-hmac-key"
# Selected by the dashboard or rules but only exported by `run` on Kafka / the cuda backend.
NOT_IN_DEMO = {"streamguard_consumer_lag_records", "streamguard_gpu_kernel_seconds_bucket",
               "streamguard_gpu_kernel_seconds_count", "streamguard_gpu_kernel_seconds_sum"}


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, **params: str) -> dict | list:
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=5) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5, alive=None):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        try:
            value = predicate()
        except (OSError, ValueError, KeyError, IndexError, AssertionError) as exc:  # still starting
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


def instant(base: str, query: str) -> list[dict]:
    return api(base, "/api/v1/query", query=query)["result"]


def scalar(base: str, query: str) -> float:
    result = instant(base, query)
    assert len(result) == 1, (query, result)
    return float(result[0]["value"][1])


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


def render(template: str, value: float, labels: dict[str, str]) -> str:
    """The three template forms rules.yml uses, as Prometheus expands them."""
    out = template.replace('{{ $value | printf "%.0f" }}', f"{value:.0f}")
    return re.sub(r"\{\{ \$labels\.(\w+) \}\}", lambda m: labels.get(m.group(1), ""), out)


@pytest.fixture(scope="module")
def traffic():
    """The demo's traffic, rebuilt here (the simulator is deterministic): every account and request id."""
    from streamguard.sim import SimConfig, simulate

    sim = simulate(SimConfig(seed=SEED, scale=SCALE, dim=DIM))
    return sim.labels["accounts"], set(sim.table.column("request_id").to_pylist())


def test_prometheus_scrapes_a_running_demo_and_fires_the_rules(tmp_path: Path, traffic, which, selected_metrics) -> None:
    prometheus = which("prometheus")
    promtool = which("promtool")
    yaml = pytest.importorskip("yaml")
    accounts, request_ids = traffic
    hash_of = {hmac.new(KEY.encode(), a.encode(), hashlib.sha256).hexdigest()[:16]: a for a in accounts}

    demo_port, prom_port = free_port(), free_port()
    target = f"127.0.0.1:{demo_port}"
    base = f"http://127.0.0.1:{prom_port}"
    (tmp_path / "rules.yml").write_text(RULES.read_text())
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
        "rule_files:\n  - rules.yml\n"
        "scrape_configs:\n  - job_name: streamguard\n    scrape_interval: 1s\n    scrape_timeout: 1s\n"
        f"    static_configs:\n      - targets: ['{target}']\n        labels: {{namespace: streamguard}}\n"
    )
    prom_log = (tmp_path / "prometheus.log").open("w")
    server = subprocess.Popen(
        [prometheus, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{prom_port}", "--log.level=warn"],
        stdout=prom_log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMGUARD_")}
    env["STREAMGUARD_HMAC_KEY"] = KEY
    demo_out = (tmp_path / "demo.log").open("w")
    demo = None
    try:
        wait_for(lambda: server.poll() is None and api(base, "/api/v1/status/buildinfo"), 30, "Prometheus to start")
        # Start the demo once Prometheus has discovered the (still closed) target: its very first
        # scrapes then see the alert counters at 0, which increase() needs to count the first alert.
        wait_for(lambda: api(base, "/api/v1/targets")["activeTargets"], 20, "target discovery")
        started = time.time()
        demo = subprocess.Popen(
            [sys.executable, "-m", "streamguard", "demo", "--seed", str(SEED), "--scale", str(SCALE), "--dim", str(DIM),
             "--no-live", "--backend", "cpu", "--metrics-port", str(demo_port), "--pace", str(PACE), "--linger", "120"],
            stdout=demo_out, stderr=subprocess.STDOUT, env=env, cwd=tmp_path,
        )

        def demo_alive() -> None:
            assert demo.poll() is None, f"demo exited early:\n{(tmp_path / 'demo.log').read_text()}"

        wait_for(lambda: instant(base, 'up{job="streamguard"} == 1'), 30, "the demo to be scraped", alive=demo_alive)
        moving = wait_for(lambda: instant(base, "sum(rate(streamguard_requests_total[5s])) > 0"), 40,
                          "requests to flow (rate > 0)", alive=demo_alive)
        assert float(moving[0]["value"][1]) > 0
        wait_for(lambda: "still serving" in (tmp_path / "demo.log").read_text(), 60, "the demo's summary", alive=demo_alive)
        time.sleep(2.5)  # two more scrapes of the final values
        log_text = (tmp_path / "demo.log").read_text()
        total = int(re.search(r"simulated ([\d,]+) requests from ([\d,]+) accounts", log_text).group(1).replace(",", ""))

        # --- the key series exist and moved -------------------------------------------------------
        window = f"[{int(time.time() - started) + 5}s]"
        assert scalar(base, "sum(streamguard_requests_total)") == total
        assert scalar(base, f"changes(streamguard_requests_total{window})") >= 2, "requests seen by one scrape only"
        assert scalar(base, f"changes(streamguard_batch_duration_seconds_count{window})") >= 2
        assert scalar(base, "streamguard_batch_duration_seconds_count") >= 3
        p99 = scalar(base, f"histogram_quantile(0.99, sum by (le) (increase(streamguard_batch_duration_seconds_bucket{window})))")
        assert 0 < p99 <= 30
        stages = {r["metric"]["stage"] for r in instant(base, "streamguard_stage_duration_seconds_count > 0")}
        assert {"decode", "accounts", "near_duplicate", "coverage", "scoring", "sink"} <= stages
        assert scalar(base, "streamguard_active_accounts") == len(accounts)
        assert scalar(base, "streamguard_state_bytes") > 0
        assert scalar(base, f"max_over_time(streamguard_ready{window})") == 1
        assert scalar(base, 'streamguard_score_count{kind="coverage_sweep"}') > 0
        assert scalar(base, "streamguard_alert_delay_seconds_count") > 0
        backend = instant(base, "streamguard_backend_info")
        assert len(backend) == 1 and backend[0]["metric"]["backend"] == "cpu" and backend[0]["value"][1] == "1"

        alerts = {r["metric"]["kind"]: float(r["value"][1]) for r in instant(base, "streamguard_alerts_total")}
        assert set(alerts) == {"near_duplicate", "coverage_sweep", "campaign"}
        assert alerts["coverage_sweep"] > 0 and alerts["campaign"] > 0
        for kind in ("coverage_sweep", "campaign"):  # the 0 before the first alert was scraped
            assert scalar(base, f'min_over_time(streamguard_alerts_total{{kind="{kind}"}}{window})') == 0

        # --- the top-N carries keyed hashes of planted distillers, never an id ----------------------
        top = instant(base, "streamguard_suspicious_account_score")
        assert 1 <= len(top) <= 10
        assert sorted(int(r["metric"]["rank"]) for r in top) == list(range(1, len(top) + 1))
        for row in top:
            assert set(row["metric"]) == {"__name__", "job", "instance", "namespace", "rank", "account_hash"}
            assert row["metric"]["account_hash"] in hash_of, "not the HMAC of any account of the traffic"
        distillers = [accounts[hash_of[r["metric"]["account_hash"]]]["label"] == "distiller" for r in top]
        assert sum(distillers) >= 0.8 * len(top), distillers

        every = instant(base, '{__name__=~"streamguard_.+"}')
        assert len(every) < 2000
        label_values = {v for series in every for k, v in series["metric"].items() if k != "__name__"}
        assert not label_values & set(accounts), "a raw account id is a label value"
        assert not label_values & request_ids, "a raw request id is a label value"
        assert not any(a in v for v in label_values for a in accounts if len(a) >= 6)

        # --- the planted distillers fire the rules in the live server ------------------------------
        def firing(name: str) -> list[dict]:
            return [a for a in api(base, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"] == name and a["state"] == "firing"]

        distillation = wait_for(lambda: firing("StreamguardDistillationAlertRaised"), 15, "the distillation alert to fire")
        assert "coverage_sweep" in {a["labels"]["kind"] for a in distillation}
        assert all(a["labels"]["severity"] == "warning" and a["labels"]["namespace"] == "streamguard" for a in distillation)
        campaign = wait_for(lambda: firing("StreamguardCampaignDetected"), 15, "the campaign alert to fire")
        assert campaign[0]["labels"]["severity"] == "critical"
        groups = api(base, "/api/v1/rules")["groups"]
        loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert len(loaded) == 6
        assert all(rule["health"] == "ok" for rule in loaded.values()), {n: r.get("lastError") for n, r in loaded.items()}
        active = {a["labels"]["alertname"] for a in api(base, "/api/v1/alerts")["alerts"]}
        assert not active & {"StreamguardScrapeDown", "StreamguardBadRecordRateHigh", "StreamguardConsumerLagHigh"}

        # --- every metric the dashboard and the rules select is exported by the running demo --------
        names = set(api(base, "/api/v1/label/__name__/values"))
        missing = selected_metrics - names - NOT_IN_DEMO - {"up", "ALERTS", "ALERTS_FOR_STATE"}
        assert not missing, f"selected by the dashboard or rules but not exported by a running demo: {missing}"

        # --- the exposition itself passes promtool check metrics -------------------------------------
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=5) as response:
            exposition = response.read()
        check = subprocess.run([promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60)
        assert check.returncode == 0 and not (check.stdout + check.stderr).strip(), (check.stdout + check.stderr).decode()

        # --- the recorded alert counters, replayed through promtool test rules ----------------------
        end = time.time()
        series = api(base, "/api/v1/query_range", query="streamguard_alerts_total", start=f"{started:.3f}", end=f"{end:.3f}", step="1s")["result"]
        by_kind = {s["metric"]["kind"]: [float(v) for _, v in s["values"]] for s in series}
        unit_test = promtool_test_from(by_kind, yaml.safe_load(RULES.read_text()))
        (tmp_path / "recorded_test.yml").write_text(yaml.safe_dump(unit_test, sort_keys=False))
        result = subprocess.run([promtool, "test", "rules", "recorded_test.yml"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr + (tmp_path / "recorded_test.yml").read_text()

        # --- SIGTERM during --linger is a clean exit ------------------------------------------------
        demo.send_signal(signal.SIGTERM)
        assert demo.wait(timeout=15) == 0
    except AssertionError as exc:  # say what the two processes said
        demo_out.flush()
        logs = "\n".join(f"--- {name} (last lines) ---\n" + "\n".join((tmp_path / name).read_text().splitlines()[-25:])
                         for name in ("demo.log", "prometheus.log") if (tmp_path / name).exists())
        raise AssertionError(f"{exc}\n{logs}") from exc
    finally:
        if demo is not None:
            stop(demo)
        stop(server)
        prom_log.close()
        demo_out.close()
    assert server.returncode is not None


def promtool_test_from(by_kind: dict[str, list[float]], rules: dict) -> dict:
    """A promtool unit test whose input is the alert counters one scrape per 10 s (a 1 s scrape, slowed down).

    Samples 10 s apart keep the whole run inside the rules' 10m windows; the
    first sample is the 0 scraped before any alert, so increase() is exactly
    the last value (no extrapolation at either end) and the summaries are known.
    """
    by_name = {r["alert"]: r for g in rules["groups"] for r in g["rules"]}
    labels = {"job": "streamguard", "namespace": "streamguard", "instance": "127.0.0.1:9108"}
    input_series = []
    for kind, values in by_kind.items():
        assert values[0] == 0, f"{kind}: the first recorded sample is {values[0]}, not the 0 before the first alert"
        selector = ",".join(f'{k}="{v}"' for k, v in {**labels, "kind": kind}.items())
        input_series.append({"series": f"streamguard_alerts_total{{{selector}}}", "values": " ".join(f"{v:g}" for v in values)})
    n = len(next(iter(by_kind.values())))
    last = f"{10 * (n - 1)}s"
    cases = []
    for name, kinds in (("StreamguardDistillationAlertRaised", ("near_duplicate", "coverage_sweep")), ("StreamguardCampaignDetected", ("campaign",))):
        rule = by_name[name]
        expected = []
        for kind in kinds:
            value = by_kind[kind][-1]
            if value == 0:
                continue
            alert_labels = {"namespace": "streamguard", **({"kind": kind} if name.endswith("Raised") else {})}
            expected.append({
                "exp_labels": {**rule["labels"], **alert_labels},
                "exp_annotations": {k: render(v, value, alert_labels) for k, v in rule["annotations"].items()},
            })
        first = min(next(i for i, v in enumerate(by_kind[k]) if v > 0) for k in kinds if by_kind[k][-1] > 0)
        cases.append({"eval_time": f"{10 * (first - 1)}s", "alertname": name, "exp_alerts": []})
        cases.append({"eval_time": last, "alertname": name, "exp_alerts": expected})
    return {
        "rule_files": [str(RULES)],
        "evaluation_interval": "10s",
        "tests": [{"name": "alert counters recorded from a live demo with planted distillers", "interval": "10s",
                   "input_series": input_series, "alert_rule_test": cases}],
    }
