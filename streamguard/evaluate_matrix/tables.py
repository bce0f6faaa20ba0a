"""The matrix's report as tables: rich on the terminal, Markdown for a README or a CI summary."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _summary_cells(row: dict[str, Any]) -> list[str]:
    members = row["campaign_members"]
    return [
        f"{row['requests']:,}",
        f"{row['benign']:,} / {row['distillers']:,}",
        _num(row["precision"], 3),
        _num(row["recall"], 3),
        _num(row["recall_ordinary"], 3),
        _num(row["recall_evasion"], 3),
        _num(row["fp_per_10k_benign"], 1),
        f"{row['campaign_members_as_campaign']}/{members}" if members else "-",
        _num(row["delay_requests_median"], 0),
        _num(row["seconds"]["total"], 1),
    ]


def _worst_cells(worst: dict[str, Any]) -> list[str]:
    return [
        "",
        "",
        _num(worst["precision"]["value"], 3),
        _num(worst["recall"]["value"], 3),
        _num(worst["recall_ordinary"]["value"], 3),
        _num(worst["recall_evasion"]["value"], 3),
        _num(worst["fp_per_10k_benign"]["value"], 1),
        _num(worst["campaign_as_campaign_share"]["value"], 2),
        _num(worst["delay_requests_median"]["value"], 0),
        "",
    ]


SUMMARY_COLUMNS = (
    "world", "requests", "benign / distillers", "precision", "recall", "recall ordinary", "recall evasion",
    "FP / 10k benign", "campaign members caught as campaign", "median delay (requests)", "seconds",
)
KIND_COLUMNS = ("world", "recall by distiller kind", "false alerts by benign kind: flagged/accounts (per 10k)",
                "campaign members caught as campaign / members (flagged at all)")


def _kind_cells(row: dict[str, Any]) -> list[list[str]]:
    recall = [f"{k} {v['flagged']}/{v['accounts']}" for k, v in row["recall_by_kind"].items()]
    fps = [f"{k} {v['flagged']}/{v['accounts']} ({v['per_10k']:.1f})" for k, v in row["fp_by_kind"].items()]
    camps = [f"{c} {v['as_campaign']}/{v['members']} ({v['flagged']})" for c, v in row["campaigns"].items()]
    return [recall, fps, camps or ["-"]]


def _worst_kind_cells(worst: dict[str, Any]) -> list[list[str]]:
    recall = [f"{k} {_num(v['value'], 2)}" for k, v in worst["recall_by_kind"].items()]
    fps = [f"{k} {_num(v['value'], 1)}" for k, v in worst["fp_by_kind"].items()]
    return [recall, fps, [f"lowest share {_num(worst['campaign_as_campaign_share']['value'], 2)}"]]


def render(report: dict[str, Any], console: Any) -> None:
    """The matrix as two rich tables, the worst case first in each."""
    from rich.table import Table  # noqa: PLC0415

    title = f"streamguard evaluate --matrix {report['matrix']} (backend {report['backend']}, {report['settings']})"
    summary = Table(title=title)
    for col in SUMMARY_COLUMNS:
        summary.add_column(col, no_wrap=col == "world", overflow="fold")
    summary.add_row("worst case", *_worst_cells(report["worst"]), style="bold")
    for row in report["worlds"]:
        summary.add_row(row["world"], *_summary_cells(row))
    console.print(summary)
    kinds = Table(title="by kind (worst case: lowest recall, most false alerts per 10k, of any world)", show_lines=True)
    for col in KIND_COLUMNS:
        kinds.add_column(col, no_wrap=col == "world", overflow="fold")
    kinds.add_row("worst case", *("\n".join(cell) for cell in _worst_kind_cells(report["worst"])), style="bold")
    for row in report["worlds"]:
        kinds.add_row(row["world"], *("\n".join(cell) for cell in _kind_cells(row)))
    console.print(kinds)
    for entry in report["skipped"] + report["failed"]:
        console.print(f"not run: {entry['world']}: {entry['reason']}", highlight=False)


def markdown(report: dict[str, Any]) -> str:
    """The matrix as Markdown (both tables), for a README or a CI summary."""
    lines = [
        f"`streamguard evaluate --matrix {report['matrix']}` ({report['date']}, backend {report['backend']}, "
        f"{report['settings']}; {report['seconds']:.0f} s)",
        "",
        "| " + " | ".join(SUMMARY_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_COLUMNS),
        "| **worst case** | " + " | ".join(_worst_cells(report["worst"])) + " |",
    ]
    for row in report["worlds"]:
        lines.append(f"| {row['world']} | " + " | ".join(_summary_cells(row)) + " |")
    lines += ["", "| " + " | ".join(KIND_COLUMNS) + " |", "|" + "---|" * len(KIND_COLUMNS)]
    lines.append("| **worst case** | " + " | ".join("<br>".join(c) for c in _worst_kind_cells(report["worst"])) + " |")
    for row in report["worlds"]:
        lines.append(f"| {row['world']} | " + " | ".join("<br>".join(c) for c in _kind_cells(row)) + " |")
    for entry in report["skipped"] + report["failed"]:
        lines.append(f"\nnot run: {entry['world']}: {entry['reason']}")
    return "\n".join(lines) + "\n"



def write_report(
    report: dict[str, Any], json_path: str | None, markdown_path: str | None, markdown: Callable[[dict[str, Any]], str]
) -> None:
    """Write ``report`` as JSON to ``json_path`` and as ``markdown(report)`` to ``markdown_path``, each only if given
    (a report command's ``--json`` / ``--markdown``), making their folders."""
    for path, text in ((json_path, lambda: json.dumps(report, indent=1) + "\n"), (markdown_path, lambda: markdown(report))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text())
