"""Write deploy/k8s/base/prometheusrule.yaml from deploy/prometheus/rules.yml.

kustomize may not read files outside a kustomization's directory, so the
PrometheusRule object holds a copy of the rule groups. The copy is textual
(comments and block scalars kept), and tests/deploy/test_deploy_k8s.py fails when
the rendered PrometheusRule's rules differ from rules.yml.

    python deploy/prometheus/sync_prometheusrule.py          # rewrite the copy
    python deploy/prometheus/sync_prometheusrule.py --check  # exit 1 if stale
"""

from __future__ import annotations

import sys
from pathlib import Path

DEPLOY = Path(__file__).resolve().parents[1]
RULES = DEPLOY / "prometheus" / "rules.yml"
TARGET = DEPLOY / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/rules.yml by deploy/prometheus/sync_prometheusrule.py:
# edit rules.yml, then run the script. tests/deploy/test_deploy_k8s.py checks they match.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: streamguard
spec:
"""


def render(rules_text: str) -> str:
    """The PrometheusRule manifest whose spec is the rule file, indented under ``spec:``."""
    lines = rules_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("groups:"))
    body = "\n".join(("  " + line) if line.strip() else "" for line in lines[start:])
    return HEADER + body + "\n"


def main(argv: list[str]) -> int:
    expected = render(RULES.read_text())
    if "--check" in argv:
        if not TARGET.exists() or TARGET.read_text() != expected:
            print(f"{TARGET} is stale: run python {Path(__file__).relative_to(DEPLOY.parent)}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(expected)
    print(f"wrote {TARGET}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
