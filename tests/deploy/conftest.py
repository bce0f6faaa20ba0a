"""Shared fixtures of the offline deployment tests.

Helpers are handed out as fixtures, never imported from here: another
``conftest`` module elsewhere in tests/ would shadow ``import conftest``.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD = DEPLOY / "grafana" / "dashboard.json"
# Grafana's variables, replaced by what they would expand to before parsing.
GRAFANA_VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "6h",
    "$namespace": ".*",
    "${namespace}": ".*",
}
INSTALL_HINT = "run scripts/install-ops-tools.sh .venv"


def tool(name: str) -> str:
    """Path of an executable, looked up on PATH and beside this interpreter (venv bin/)."""
    found = shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))
    if found is None:
        pytest.skip(f"{name} is not installed: {INSTALL_HINT}")
    return found


def exercise(metrics) -> None:
    """Call every public method of StreamguardMetrics once."""
    metrics.requests(10, partition=0)
    metrics.requests(5)
    metrics.bad_records("zero vector")
    metrics.alerts(["near_duplicate+coverage_sweep+campaign"])
    metrics.batch(0.05, 128)
    for stage in ("decode", "accounts", "near_duplicate", "coverage", "scoring", "checkpoint", "sink"):
        metrics.stage(stage, 0.001)
    metrics.alert_delay(30.0)
    metrics.consumer_lag(0, 100)
    metrics.accounts(10, 4096)
    metrics.scores("near_duplicate", [0.2])
    metrics.scores("coverage_sweep", [0.7])
    metrics.suspicious([("acct-1", 0.9)])
    metrics.backend_info("numpy", "cpu")
    metrics.gpu_kernel("hamming_scan", 1e-4)
    metrics.ready(True)
    metrics.last_progress(1.79e9)


@pytest.fixture(scope="session")
def exported_names() -> frozenset[str]:
    """Every sample name a StreamguardMetrics exposes (with _bucket/_sum/_count/_total)."""
    from prometheus_client import CollectorRegistry

    from streamguard.metrics import StreamguardMetrics

    registry = CollectorRegistry()
    exercise(StreamguardMetrics(registry, b"deploy-tests-key"))
    return frozenset(s.name for family in registry.collect() for s in family.samples)


@pytest.fixture(scope="session")
def rules() -> dict:
    yaml = pytest.importorskip("yaml", reason=f"PyYAML missing: {INSTALL_HINT}")
    return yaml.safe_load(RULES.read_text())


def referenced_metrics(expr: str) -> set[str]:
    """Metric names selected anywhere in a PromQL expression (parsed, not grepped)."""
    promql_parser = pytest.importorskip("promql_parser", reason=f"promql-parser missing: {INSTALL_HINT}")
    names: set[str] = set()

    def visit(node) -> None:
        if isinstance(node, promql_parser.VectorSelector):
            if node.name:
                names.add(node.name)
            for matcher in node.matchers.matchers:
                if matcher.name == "__name__":
                    names.add(matcher.value)

    promql_parser.walk(promql_parser.parse(expr), visit)
    return names


@pytest.fixture(scope="session")
def which():
    """``which(name)``: path of a tool, or skip the test saying how to install it."""
    return tool


@pytest.fixture(scope="session")
def metric_names_in():
    """``metric_names_in(expr)``: metric names a PromQL expression selects (skips without promql-parser)."""
    return referenced_metrics


@pytest.fixture(scope="session")
def server_series() -> frozenset[str]:
    """Series a Prometheus server makes itself, allowed in expressions besides streamguard's own."""
    return frozenset({"up", "ALERTS", "ALERTS_FOR_STATE"})


def expand_grafana(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced (an unknown one fails)."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


def dashboard_exprs(dashboard: dict) -> list[str]:
    """Every PromQL expression of a dashboard model (panels, collapsed rows' panels, annotations)."""
    panels = []
    for panel in dashboard["panels"]:
        panels.append(panel)
        panels.extend(panel.get("panels", []))
    found = [t["expr"] for p in panels for t in p.get("targets", []) if t.get("expr")]
    found += [a["expr"] for a in dashboard.get("annotations", {}).get("list", []) if a.get("expr")]
    return found


@pytest.fixture(scope="session")
def selected_metrics(rules: dict) -> frozenset[str]:
    """Every metric name the dashboard and the alert rules select (parsed with promql-parser)."""
    import json

    names: set[str] = set()
    for expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        names |= referenced_metrics(expand_grafana(expr))
    for group in rules["groups"]:
        for rule in group["rules"]:
            names |= referenced_metrics(rule["expr"])
    return frozenset(names)
