"""A real Prometheus server scrapes StreamguardMetrics and evaluates deploy/prometheus/rules.yml.

Everything runs on 127.0.0.1 and stops by itself: the simulated pipeline runs
for SIMULATE_S seconds, every wait is bounded, and the server is terminated
(then killed) at the end. rules.yml is loaded unchanged; the server's global
evaluation interval is 1 s, and StreamguardDistillationAlertRaised has no
``for:``, so it fires within seconds of the first counted alert.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from streamguard.metrics import StreamguardMetrics, serve

pytestmark = pytest.mark.slow

RULES = Path(__file__).resolve().parents[2] / "deploy" / "prometheus" / "rules.yml"
SIMULATE_S = 40.0  # upper bound; the test stops the simulation as soon as it has its answers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def api(base: str, path: str, **params: str) -> dict:
    url = f"{base}{path}"
    if params:
        url += "?" + urllib.parse.urlencode(params)
    with urllib.request.urlopen(url, timeout=3) as response:
        body = json.loads(response.read())
    assert body["status"] == "success", body
    return body["data"]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except (OSError, ValueError, KeyError, AssertionError) as exc:  # server still starting
            last_error = exc
            value = None
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last error: {last_error})")


def instant(base: str, query: str) -> list[dict]:
    return api(base, "/api/v1/query", query=query)["result"]


def simulate_pipeline(metrics: StreamguardMetrics, stop: threading.Event, raise_alert: threading.Event) -> None:
    """At most SIMULATE_S seconds of a pipeline: batches on 3 partitions, one alert once asked."""
    start = time.monotonic()
    alerted = False
    batch = 0
    while not stop.is_set() and time.monotonic() - start < SIMULATE_S:
        partition = batch % 3
        metrics.requests(64, partition=partition)
        metrics.batch(0.02 + 0.001 * (batch % 7), 64)
        for stage in ("decode", "accounts", "near_duplicate", "coverage", "scoring", "checkpoint", "sink"):
            metrics.stage(stage, 0.002)
        metrics.consumer_lag(partition, 500 - batch % 100)
        metrics.accounts(1000 + batch, (1000 + batch) * 4096)
        metrics.scores("near_duplicate", [0.05, 0.1, 0.6])
        metrics.last_progress(time.time())
        if not alerted and raise_alert.is_set():
            metrics.alerts(["coverage_sweep"])
            metrics.alert_delay(2.5)
            metrics.suspicious([("acct-sweeper", 0.97)])
            alerted = True
        batch += 1
        stop.wait(0.2)


def test_prometheus_scrapes_and_fires_the_distillation_alert(tmp_path: Path) -> None:
    prometheus = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if prometheus is None:
        pytest.skip("prometheus is not installed: run scripts/install-ops-tools.sh .venv (Debian package 'prometheus')")

    registry = CollectorRegistry()
    metrics = StreamguardMetrics(registry, b"live-test-key")
    metrics.backend_info("numpy", "cpu")
    metrics.ready(True)
    server, server_thread = serve(registry, 0, "127.0.0.1")
    target = f"127.0.0.1:{server.server_port}"

    shutil.copy(RULES, tmp_path / "rules.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n"
        "  scrape_interval: 1s\n"
        "  evaluation_interval: 1s\n"
        "rule_files:\n"
        "  - rules.yml\n"
        "scrape_configs:\n"
        "  - job_name: streamguard\n"
        "    scrape_interval: 1s\n"
        "    scrape_timeout: 1s\n"
        "    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = (tmp_path / "prometheus.log").open("w")
    process = subprocess.Popen(
        [
            prometheus,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
            "--log.level=warn",
        ],
        stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
    )
    stop = threading.Event()
    raise_alert = threading.Event()
    simulator = threading.Thread(target=simulate_pipeline, args=(metrics, stop, raise_alert), daemon=True)
    try:
        wait_for(lambda: process.poll() is None and api(base, "/api/v1/status/buildinfo"), 30, "Prometheus to start")
        simulator.start()

        up = wait_for(lambda: instant(base, 'up{job="streamguard"} == 1'), 20, "the target to be up")
        assert up[0]["metric"]["instance"] == target

        def total() -> float:
            result = instant(base, "sum(streamguard_requests_total)")
            return float(result[0]["value"][1]) if result else 0.0

        first = wait_for(total, 15, "streamguard_requests_total to be scraped")
        wait_for(lambda: total() > first, 10, "streamguard_requests_total to increase")
        partitions = {r["metric"]["partition"] for r in instant(base, "streamguard_requests_total")}
        assert partitions == {"0", "1", "2"}

        # The alert counters are exported at 0 before any alert: Prometheus must hold
        # that 0 for increase() to see the first alert. (An alert counted before a
        # new pod's first scrape is invisible to increase(); discovery alone delays
        # the first scrape here by ~5 s, hence the explicit wait.)
        zero = instant(base, 'streamguard_alerts_total{kind="coverage_sweep"}')
        assert zero and float(zero[0]["value"][1]) == 0.0
        assert not [a for a in api(base, "/api/v1/alerts")["alerts"] if a["labels"]["alertname"].startswith("StreamguardDistillation")]
        raise_alert.set()

        def distillation_alert() -> list[dict]:
            alerts = api(base, "/api/v1/alerts")["alerts"]
            return [a for a in alerts if a["labels"]["alertname"] == "StreamguardDistillationAlertRaised"]

        fired = wait_for(distillation_alert, 25, "StreamguardDistillationAlertRaised to go pending/firing")
        assert fired[0]["state"] in ("pending", "firing")
        assert fired[0]["labels"]["kind"] == "coverage_sweep"
        assert fired[0]["labels"]["severity"] == "warning"
        assert "coverage_sweep" in fired[0]["annotations"]["summary"]

        groups = api(base, "/api/v1/rules")["groups"]
        loaded = {rule["name"]: rule for group in groups for rule in group["rules"]}
        assert len(loaded) == 6
        for name, rule in loaded.items():
            assert rule["health"] == "ok", f"{name}: {rule.get('lastError')}"
        active = {a["labels"]["alertname"] for a in api(base, "/api/v1/alerts")["alerts"]}
        assert "StreamguardCampaignDetected" not in active
        assert "StreamguardScrapeDown" not in active

        top = instant(base, "streamguard_suspicious_account_score")
        assert [r["metric"]["account_hash"] for r in top] == [metrics.account_hash("acct-sweeper")]
        assert float(instant(base, "streamguard_ready")[0]["value"][1]) == 1.0
    finally:
        stop.set()
        if simulator.is_alive():
            simulator.join(timeout=5)
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)
        log.close()
        server.shutdown()
        server.server_close()
        server_thread.join(timeout=5)
    assert process.returncode is not None
