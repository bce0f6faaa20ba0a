"""Judging alerts against labels: precision, recall, false positives, detection delay.

An account counts as flagged when it has at least one alert; its first alert is
the detection, and the detection delay is the number of requests the account
had sent when it was first alerted (``events_seen``), also given as a share of
all its requests and in hours since its first request.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamguard.schema import AlertRecord


class LabelsError(ValueError):
    """A labels file in neither of the formats :func:`load_labels` reads."""


def _independent_labels(path: str | Path, data: dict[str, Any]) -> dict[str, Any]:
    """The independent worlds' format (``{account_id: {"label", "kind", "campaign", "events"}}``) in streamguard's form."""
    accounts: dict[str, dict[str, Any]] = {}
    campaigns: dict[str, dict[str, Any]] = {}
    for account, info in data.items():
        if not isinstance(info, dict):
            raise LabelsError(f"{path}: account {account!r} needs an object with 'label' 'benign' or 'distiller'")
        events = info.get("events")
        accounts[account] = {
            "label": info.get("label"),
            "kind": info.get("kind", "unknown"),
            "campaign": info.get("campaign"),
            "n_requests": int(events) if events is not None else None,
        }
        if info.get("campaign") is not None:
            campaigns.setdefault(str(info["campaign"]), {"members": []})["members"].append(account)
    return {"format": "independent", "accounts": accounts, "campaigns": campaigns}


def load_labels(path: str | Path) -> dict[str, Any]:
    """Read a labels file of either format, normalised to streamguard's.

    Two formats are read: streamguard's own (``streamguard simulate``:
    ``{"version", ..., "accounts": {account_id: {"label", "kind", "campaign",
    "n_requests"}}, "campaigns": {...}}``) and the independent worlds'
    (``../shared/worlds/independent_traffic.py``: ``{account_id: {"label",
    "kind", "campaign", "events"}}``). Both come back in the first form, with
    ``"format"`` set to ``"streamguard"`` or ``"independent"``; an
    independent file's ``events`` become ``n_requests`` and its campaigns are
    collected from the accounts.

    Raises
    ------
    LabelsError
        If the file is missing, not JSON, in neither format, or an account's
        label is not ``"benign"`` or ``"distiller"``.
    """
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise LabelsError(f"{path}: no such labels file") from None
    except json.JSONDecodeError as exc:
        raise LabelsError(f"{path}: not JSON ({exc})") from None
    if not isinstance(data, dict) or not data:
        raise LabelsError(
            f"{path}: expected an object with an 'accounts' mapping (streamguard simulate) "
            "or one mapping account ids to labels (independent worlds)"
        )
    accounts = data.get("accounts")
    # An independent file could name an account "accounts"; its value then carries a label.
    if isinstance(accounts, dict) and "label" not in accounts:
        data = {**data, "format": "streamguard"}
    else:
        data = _independent_labels(path, data)
    for account, info in data["accounts"].items():
        if not isinstance(info, dict) or info.get("label") not in ("benign", "distiller"):
            raise LabelsError(f"{path}: account {account!r} needs label 'benign' or 'distiller'")
    return data


@dataclass
class Evaluation:
    distillers: int
    benign: int
    flagged: int
    true_positives: int
    false_positives: int
    precision: float
    recall: float
    false_positives_per_10k_benign: float
    by_benign_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    by_distiller_kind: dict[str, dict[str, float]] = field(default_factory=dict)
    unlabelled_flagged: int = 0
    delay_requests_median: float = float("nan")
    delay_requests_p90: float = float("nan")
    delay_hours_median: float = float("nan")

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


def _first_alerts(alerts: list[AlertRecord]) -> dict[str, AlertRecord]:
    first: dict[str, AlertRecord] = {}
    for alert in alerts:
        known = first.get(alert.account_id)
        if known is None or (alert.ts, alert.events_seen) < (known.ts, known.events_seen):
            first[alert.account_id] = alert
    return first


def account_activity(traffic: pa.Table) -> dict[str, tuple[int, int]]:
    """Per account: (requests, first event time in ms)."""
    ts = traffic.column("ts")
    if pa.types.is_timestamp(ts.type):
        ts = pc.cast(pc.cast(ts, pa.timestamp("ms")), pa.int64())
    grouped = pa.table({"account_id": traffic.column("account_id"), "ts": ts}).group_by("account_id").aggregate(
        [("ts", "count"), ("ts", "min")]
    )
    return {
        a: (int(c), int(m))
        for a, c, m in zip(
            grouped.column("account_id").to_pylist(),
            grouped.column("ts_count").to_pylist(),
            grouped.column("ts_min").to_pylist(),
        )
    }


def evaluate(labels: dict[str, Any], alerts: list[AlertRecord], traffic: pa.Table | None = None) -> Evaluation:
    """Score alerts against labels; ``traffic`` adds delays as shares and hours."""
    accounts: dict[str, dict[str, Any]] = labels["accounts"]
    first = _first_alerts(alerts)
    activity = account_activity(traffic) if traffic is not None else {}
    kinds: dict[tuple[str, str], list[str]] = defaultdict(list)
    for account, info in accounts.items():
        kinds[(info["label"], str(info.get("kind", "unknown")))].append(account)

    distillers = [a for a, i in accounts.items() if i["label"] == "distiller"]
    benign = [a for a, i in accounts.items() if i["label"] == "benign"]
    tp = sum(1 for a in distillers if a in first)
    fp = sum(1 for a in benign if a in first)
    unlabelled = sum(1 for a in first if a not in accounts)
    flagged = tp + fp + unlabelled
    delays = [first[a].events_seen for a in distillers if a in first]
    hours = [
        (first[a].ts - activity[a][1]) / 3_600_000.0 for a in distillers if a in first and a in activity
    ]

    by_benign: dict[str, dict[str, float]] = {}
    by_distiller: dict[str, dict[str, float]] = {}
    for (label, kind), members in sorted(kinds.items()):
        hit = [a for a in members if a in first]
        row: dict[str, float] = {"accounts": len(members), "flagged": len(hit)}
        if label == "benign":
            row["per_10k"] = 1e4 * len(hit) / max(len(members), 1)
            by_benign[kind] = row
        else:
            row["recall"] = len(hit) / max(len(members), 1)
            d = [first[a].events_seen for a in hit]
            row["delay_median"] = float(np.median(d)) if d else float("nan")
            if activity:
                shares = [first[a].events_seen / max(activity.get(a, (1, 0))[0], 1) for a in hit]
                row["delay_share_median"] = float(np.median(shares)) if shares else float("nan")
            by_distiller[kind] = row

    return Evaluation(
        distillers=len(distillers),
        benign=len(benign),
        flagged=flagged,
        true_positives=tp,
        false_positives=fp,
        precision=tp / flagged if flagged else float("nan"),
        recall=tp / len(distillers) if distillers else float("nan"),
        false_positives_per_10k_benign=1e4 * fp / max(len(benign), 1),
        by_benign_kind=by_benign,
        by_distiller_kind=by_distiller,
        unlabelled_flagged=unlabelled,
        delay_requests_median=float(np.median(delays)) if delays else float("nan"),
        delay_requests_p90=float(np.percentile(delays, 90)) if delays else float("nan"),
        delay_hours_median=float(np.median(hours)) if hours else float("nan"),
    )


def render(result: Evaluation, console: Any = None) -> None:
    """Print the evaluation as rich tables."""
    from rich.table import Table

    from streamguard.console import make_console

    console = console or make_console()
    head = Table(title="streamguard eval", show_header=False)
    head.add_row("distiller accounts", str(result.distillers))
    head.add_row("benign accounts", str(result.benign))
    head.add_row("flagged accounts", f"{result.flagged} ({result.unlabelled_flagged} unlabelled)")
    head.add_row("precision", f"{result.precision:.3f}")
    head.add_row("recall", f"{result.recall:.3f}")
    head.add_row("false positives per 10k benign", f"{result.false_positives_per_10k_benign:.1f}")
    head.add_row(
        "detection delay (requests)",
        f"median {result.delay_requests_median:.0f}, p90 {result.delay_requests_p90:.0f}",
    )
    head.add_row("detection delay (hours since first request)", f"median {result.delay_hours_median:.1f}")
    console.print(head)
    kinds = Table(title="by kind")
    # A kind name is never cut short, however narrow the output (a log, a pipe).
    longest = max((len(k) for k in (*result.by_distiller_kind, *result.by_benign_kind)), default=4)
    for col in ("label", "kind", "accounts", "flagged", "recall / FP per 10k", "median delay (requests)"):
        kinds.add_column(col, no_wrap=col == "kind", min_width=longest if col == "kind" else None)
    for kind, row in result.by_distiller_kind.items():
        kinds.add_row("distiller", kind, str(int(row["accounts"])), str(int(row["flagged"])), f"{row['recall']:.3f}", f"{row['delay_median']:.0f}")
    for kind, row in result.by_benign_kind.items():
        kinds.add_row("benign", kind, str(int(row["accounts"])), str(int(row["flagged"])), f"{row['per_10k']:.1f}", "")
    console.print(kinds)
