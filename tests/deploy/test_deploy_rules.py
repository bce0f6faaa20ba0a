"""deploy/prometheus: rules are valid, unit-tested, documented and use real metric names."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
RULES = DEPLOY / "prometheus" / "rules.yml"

EXPECTED = {
    "StreamguardDistillationAlertRaised": "warning",
    "StreamguardCampaignDetected": "critical",
    "StreamguardConsumerLagHigh": "warning",
    "StreamguardNoInput": "critical",
    "StreamguardBadRecordRateHigh": "warning",
    "StreamguardScrapeDown": "critical",
}


def all_rules(rules: dict) -> list[dict]:
    return [rule for group in rules["groups"] for rule in group["rules"]]


def test_promtool_check_rules(which) -> None:
    result = subprocess.run([which("promtool"), "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(EXPECTED)} rules found" in result.stdout


def test_promtool_unit_tests_pass(which) -> None:
    result = subprocess.run(
        [which("promtool"), "test", "rules", "rules_test.yml"],
        cwd=DEPLOY / "prometheus", capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_unit_tests_cover_every_rule_firing_and_quiet(rules: dict) -> None:
    import yaml

    tests = yaml.safe_load((DEPLOY / "prometheus" / "rules_test.yml").read_text())["tests"]
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in tests:
        for check in case.get("alert_rule_test", []):
            (firing if check["exp_alerts"] else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in all_rules(rules)}
    assert names == firing, f"rules never shown firing: {names - firing}"
    assert names == quiet, f"rules never shown quiet: {names - quiet}"


def test_every_alert_has_severity_summary_and_a_documented_runbook(rules: dict) -> None:
    readme = (DEPLOY / "README.md").read_text()
    anchors = {_github_anchor(h) for h in re.findall(r"^#+ (.+)$", readme, flags=re.MULTILINE)}
    seen = {}
    for rule in all_rules(rules):
        name = rule["alert"]
        seen[name] = rule["labels"]["severity"]
        assert rule["annotations"]["summary"].strip(), name
        runbook = rule["annotations"]["runbook"]
        path, _, anchor = runbook.partition("#")
        assert path == "deploy/README.md", runbook
        assert anchor in anchors, f"{name}: no section #{anchor} in deploy/README.md"
    assert seen == EXPECTED


def test_rule_expressions_use_only_exported_metrics(
    rules: dict, exported_names: frozenset[str], metric_names_in, server_series: frozenset[str]
) -> None:
    for rule in all_rules(rules):
        names = metric_names_in(rule["expr"])
        unknown = names - exported_names - server_series
        assert not unknown, f"{rule['alert']} selects metrics streamguard does not export: {unknown}"
        assert names & (exported_names | {"up"}), rule["alert"]


def test_distillation_rule_selects_the_two_per_account_kinds(rules: dict) -> None:
    by_name = {rule["alert"]: rule for rule in all_rules(rules)}
    assert 'kind=~"coverage_sweep|near_duplicate"' in by_name["StreamguardDistillationAlertRaised"]["expr"]
    assert 'kind="campaign"' in by_name["StreamguardCampaignDetected"]["expr"]
    assert by_name["StreamguardConsumerLagHigh"]["for"] == "10m"
    assert by_name["StreamguardNoInput"]["for"] == "15m"
    assert by_name["StreamguardBadRecordRateHigh"]["for"] == "10m"
    assert by_name["StreamguardScrapeDown"]["for"] == "5m"
    assert 'up{job="streamguard"} == 0' in by_name["StreamguardScrapeDown"]["expr"]


def _github_anchor(heading: str) -> str:
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")
