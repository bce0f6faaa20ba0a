"""deploy/grafana: a valid dashboard model whose queries parse and select exported metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"

REQUIRED_PANELS = {
    "throughput": ("streamguard_requests_total", "rate("),
    "consumer lag": ("streamguard_consumer_lag_records",),
    "batch latency": ("histogram_quantile(0.5", "histogram_quantile(0.99", "streamguard_batch_duration_seconds_bucket"),
    "stage durations": ("streamguard_stage_duration_seconds_bucket",),
    "alert rate by kind": ("streamguard_alerts_total", "by (kind)"),
    "top suspicious accounts": ("streamguard_suspicious_account_score",),
    "score distribution": ("streamguard_score_bucket",),
    "active accounts and state bytes": ("streamguard_active_accounts", "streamguard_state_bytes"),
    "backend": ("streamguard_backend_info",),
    "gpu kernel time": ("streamguard_gpu_kernel_seconds_bucket",),
}

# Grafana's variables, replaced by what they would expand to before parsing.
VARIABLES = {
    "$__rate_interval": "1m",
    "$__interval": "30s",
    "$__range": "6h",
    "$namespace": ".*",
    "${namespace}": ".*",
}


@pytest.fixture(scope="module")
def dashboard() -> dict:
    return json.loads((GRAFANA / "dashboard.json").read_text())


def panels(dashboard: dict) -> list[dict]:
    out = []
    for panel in dashboard["panels"]:
        out.append(panel)
        out.extend(panel.get("panels", []))  # collapsed rows nest their panels
    return out


def exprs(dashboard: dict) -> list[str]:
    found = [t["expr"] for p in panels(dashboard) for t in p.get("targets", []) if t.get("expr")]
    found += [a["expr"] for a in dashboard.get("annotations", {}).get("list", []) if a.get("expr")]
    return found


def expand(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, f"unknown Grafana variable left in {expr!r}"
    return expr


def test_dashboard_model_is_valid(dashboard: dict) -> None:
    assert dashboard["uid"] == "streamguard"
    assert dashboard["title"] == "streamguard"
    assert isinstance(dashboard["schemaVersion"], int) and dashboard["schemaVersion"] >= 36
    assert "id" not in dashboard or dashboard["id"] is None  # provisioned: Grafana assigns the id
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels(dashboard):
        grid = panel["gridPos"]
        assert {"x", "y", "w", "h"} <= grid.keys(), panel["title"]
        assert 0 <= grid["x"] and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_panels_do_not_overlap(dashboard: dict) -> None:
    cells: dict[tuple[int, int], str] = {}
    for panel in panels(dashboard):
        g = panel["gridPos"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']!r} overlaps {cells[(x, y)]!r}"
                cells[(x, y)] = panel["title"]


def test_required_panels_are_present(dashboard: dict) -> None:
    by_title = {p["title"].lower(): " ".join(t.get("expr", "") for t in p.get("targets", [])) for p in panels(dashboard)}
    for needle, fragments in REQUIRED_PANELS.items():
        matching = [title for title in by_title if needle in title]
        assert matching, f"no panel titled like {needle!r}"
        text = " ".join(by_title[t] for t in matching)
        for fragment in fragments:
            assert fragment in text, f"panel {needle!r} lacks {fragment!r}"
    table = next(p for p in panels(dashboard) if "top suspicious" in p["title"].lower())
    assert table["type"] == "table"
    assert any(p["type"] == "heatmap" for p in panels(dashboard))


def test_every_expr_parses_and_selects_exported_metrics(
    dashboard: dict, exported_names: frozenset[str], metric_names_in, server_series: frozenset[str]
) -> None:
    all_exprs = exprs(dashboard)
    assert len(all_exprs) >= 15
    selected: set[str] = set()
    for expr in all_exprs:
        names = metric_names_in(expand(expr))  # raises on a parse error
        unknown = names - exported_names - server_series
        assert not unknown, f"{expr!r} selects metrics streamguard does not export: {unknown}"
        selected |= names
    assert len(selected & exported_names) >= 12


def test_rate_windows_use_grafana_rate_interval(dashboard: dict) -> None:
    for expr in exprs(dashboard):
        for window in re.findall(r"\[([^\]]+)\]", expr):
            assert window == "$__rate_interval", f"fixed range [{window}] in {expr!r}"


def test_provisioning_points_at_the_dashboard_folder() -> None:
    yaml = pytest.importorskip("yaml")
    provisioning = yaml.safe_load((GRAFANA / "provisioning" / "dashboards.yml").read_text())
    assert provisioning["apiVersion"] == 1
    (provider,) = provisioning["providers"]
    assert provider["type"] == "file"
    assert provider["options"]["path"].startswith("/var/lib/grafana/dashboards")


def test_the_exported_metrics_check_catches_a_name_that_is_not_exported(
    dashboard: dict, exported_names: frozenset[str], metric_names_in, server_series: frozenset[str]
) -> None:
    """The check above is not vacuous: a typo, a dropped suffix or a metric that was never defined is caught."""
    for bad in (
        "sum(rate(streamguard_request_total[$__rate_interval]))",  # typo
        "histogram_quantile(0.99, sum by (le) (rate(streamguard_batch_duration_seconds[$__rate_interval])))",  # no _bucket
        'max(streamguard_queue_depth{namespace=~"$namespace"})',  # never exported
        "sum(rate({__name__=\"streamguard_alert_total\"}[$__rate_interval]))",  # name as a matcher
    ):
        unknown = metric_names_in(expand(bad)) - exported_names - server_series
        assert unknown, f"{bad!r} was not flagged"
    sample = next(e for e in exprs(dashboard) if "streamguard_requests_total" in e)
    assert not metric_names_in(expand(sample)) - exported_names - server_series
