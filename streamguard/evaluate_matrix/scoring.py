"""One world's figures, computed as ``../shared/worlds/score.py`` computes them; the worst case; the floors."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import asdict, dataclass
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamguard.schema import AlertRecord

# Members of multi-account campaigns in the two label formats; score.py
# leaves them out of the detection delay (each sends too little for one).
CAMPAIGN_MEMBER_KINDS: frozenset[str] = frozenset({"sybil_member", "campaign_member"})


def is_evasion_kind(kind: str) -> bool:
    """The kinds the evasion scenarios plant: ``evade_*`` in both generators (``streamguard.sim.EVASION_KINDS``)."""
    from streamguard.sim import EVASION_KINDS  # noqa: PLC0415
    from streamguard.sim.accounts import EVASION_PREFIX  # noqa: PLC0415

    return kind in EVASION_KINDS or kind.startswith(EVASION_PREFIX)


def _delays(traffic: pa.Table, first_ts: dict[str, int]) -> dict[str, int]:
    """Per alerted account: its requests with event time <= its first alert's (score.py's delay)."""
    if not first_ts:
        return {}
    ts = traffic.column("ts")
    if pa.types.is_timestamp(ts.type):
        ts = pc.cast(pc.cast(ts, pa.timestamp("ms")), pa.int64())
    keep = pc.is_in(traffic.column("account_id"), value_set=pa.array(list(first_ts), pa.string()))
    accounts = pc.filter(traffic.column("account_id"), keep).to_numpy(zero_copy_only=False)
    times = pc.filter(ts, keep).to_numpy(zero_copy_only=False).astype(np.int64)
    names, index = np.unique(accounts, return_inverse=True)
    limit = np.array([first_ts[a] for a in names], dtype=np.int64)
    counts = np.bincount(index, weights=times <= limit[index], minlength=len(names))
    return {str(a): int(c) for a, c in zip(names, counts)}


def score_world(labels: dict[str, Any], alerts: Iterable[AlertRecord], traffic: pa.Table) -> dict[str, Any]:
    """One world's figures, computed as ``../shared/worlds/score.py`` computes them.

    Parameters
    ----------
    labels : dict
        As :func:`streamguard.evaluation.load_labels` returns them (either format).
    alerts : iterable of AlertRecord
    traffic : pyarrow.Table
        The request records the alerts came from (``ts``, ``account_id``).

    Returns
    -------
    dict
        ``precision``, ``recall`` (all distillers), ``recall_ordinary`` and
        ``recall_evasion`` (None without such kinds), ``fp_per_10k_benign``,
        ``fp_by_kind`` and ``recall_by_kind`` (per kind: accounts, flagged and
        per_10k or recall), ``campaigns`` (per multi-account campaign:
        members, flagged, as_campaign), ``delay_requests_median`` and
        ``_p90`` (None when no distiller outside a campaign was caught), and
        counts. As in score.py, precision and recall are 0 when nothing was
        flagged or nothing is a distiller.
    """
    accounts: dict[str, dict[str, Any]] = labels["accounts"]
    first_ts: dict[str, int] = {}
    as_campaign: set[str] = set()
    for alert in alerts:
        if alert.account_id not in first_ts or alert.ts < first_ts[alert.account_id]:
            first_ts[alert.account_id] = int(alert.ts)
        if "campaign" in alert.kind:
            as_campaign.add(alert.account_id)
    benign = [a for a, i in accounts.items() if i["label"] == "benign"]
    bad = [a for a, i in accounts.items() if i["label"] == "distiller"]
    tp = [a for a in bad if a in first_ts]
    fp = [a for a in benign if a in first_ts]

    def kind(account: str) -> str:
        return str(accounts[account].get("kind", "unknown"))

    by_kind: dict[tuple[str, str], list[str]] = defaultdict(list)
    for account in benign + bad:
        by_kind[(accounts[account]["label"], kind(account))].append(account)
    fp_by_kind: dict[str, dict[str, Any]] = {}
    recall_by_kind: dict[str, dict[str, Any]] = {}
    for (label, name), members in sorted(by_kind.items(), key=lambda item: (is_evasion_kind(item[0][1]), item[0])):
        hit = sum(1 for a in members if a in first_ts)
        if label == "benign":
            fp_by_kind[name] = {"accounts": len(members), "flagged": hit, "per_10k": 1e4 * hit / len(members)}
        else:
            recall_by_kind[name] = {"accounts": len(members), "flagged": hit, "recall": hit / len(members)}

    def recall_of(group: list[str]) -> float | None:
        return sum(1 for a in group if a in first_ts) / len(group) if group else None

    groups: dict[str, list[str]] = defaultdict(list)
    for account in bad:
        if accounts[account].get("campaign") is not None:
            groups[str(accounts[account]["campaign"])].append(account)
    campaigns = {
        cid: {
            "members": len(members),
            "flagged": sum(1 for a in members if a in first_ts),
            "as_campaign": sum(1 for a in members if a in as_campaign),
        }
        for cid, members in sorted(groups.items())
        if len(members) > 1
    }
    delay = _delays(traffic, {a: first_ts[a] for a in tp})
    d = [delay[a] for a in tp if kind(a) not in CAMPAIGN_MEMBER_KINDS]
    return {
        "requests": traffic.num_rows,
        "accounts": len(accounts),
        "benign": len(benign),
        "distillers": len(bad),
        "flagged": len(first_ts),
        "unknown_accounts_flagged": sum(1 for a in first_ts if a not in accounts),
        "precision": len(tp) / max(1, len(tp) + len(fp)),
        "recall": len(tp) / max(1, len(bad)),
        "recall_ordinary": recall_of([a for a in bad if not is_evasion_kind(kind(a))]),
        "recall_evasion": recall_of([a for a in bad if is_evasion_kind(kind(a))]),
        "fp_per_10k_benign": 1e4 * len(fp) / max(1, len(benign)),
        "fp_by_kind": fp_by_kind,
        "recall_by_kind": recall_by_kind,
        "campaigns": campaigns,
        "campaign_members": sum(c["members"] for c in campaigns.values()),
        "campaign_members_as_campaign": sum(c["as_campaign"] for c in campaigns.values()),
        "delay_requests_median": int(np.median(d)) if d else None,
        "delay_requests_p90": int(np.percentile(d, 90)) if d else None,
    }


def _extreme(rows: list[dict[str, Any]], value: Callable[[dict[str, Any]], float | None], worst: Callable) -> dict[str, Any]:
    known = [(v, row["world"]) for row in rows if (v := value(row)) is not None]
    if not known:
        return {"value": None, "world": None}
    v, world = worst(known, key=lambda item: item[0])
    return {"value": v, "world": world}


def worst_case(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The worst of every figure over the worlds' rows, with the world it came from.

    Lowest precision, recall (all, ordinary kinds, evasion kinds), per-kind
    recall and share of campaign members caught as a campaign; highest false
    alerts per 10k benign (overall and per kind) and median delay.
    """

    def share(row: dict[str, Any]) -> float | None:
        members = row["campaign_members"]
        return row["campaign_members_as_campaign"] / members if members else None

    worst: dict[str, Any] = {
        "worlds": len(rows),
        "precision": _extreme(rows, lambda r: r["precision"], min),
        "recall": _extreme(rows, lambda r: r["recall"], min),
        "recall_ordinary": _extreme(rows, lambda r: r["recall_ordinary"], min),
        "recall_evasion": _extreme(rows, lambda r: r["recall_evasion"], min),
        "fp_per_10k_benign": _extreme(rows, lambda r: r["fp_per_10k_benign"], max),
        "campaign_as_campaign_share": _extreme(rows, share, min),
        "delay_requests_median": _extreme(rows, lambda r: r["delay_requests_median"], max),
    }
    recall_kinds = sorted({k for r in rows for k in r["recall_by_kind"]}, key=lambda k: (is_evasion_kind(k), k))
    benign_kinds = sorted({k for r in rows for k in r["fp_by_kind"]})
    worst["recall_by_kind"] = {
        k: _extreme(rows, lambda r, k=k: r["recall_by_kind"].get(k, {}).get("recall"), min) for k in recall_kinds
    }
    worst["fp_by_kind"] = {
        k: _extreme(rows, lambda r, k=k: r["fp_by_kind"].get(k, {}).get("per_10k"), max) for k in benign_kinds
    }
    return worst


@dataclass(frozen=True)
class Floors:
    """What ``--check`` holds the worst world to; None leaves a figure unchecked."""

    min_precision: float | None = None
    min_recall: float | None = None
    max_fp_per_10k: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in asdict(self).values())


def check_floors(worst: dict[str, Any], floors: Floors) -> list[str]:
    """One line per floor the worst world misses (recall: the ordinary kinds'); empty when all hold."""
    failures = []
    checks = (
        ("precision", worst["precision"], floors.min_precision, lambda v, f: v >= f, ">="),
        ("recall (ordinary kinds)", worst["recall_ordinary"], floors.min_recall, lambda v, f: v >= f, ">="),
        ("FP per 10k benign", worst["fp_per_10k_benign"], floors.max_fp_per_10k, lambda v, f: v <= f, "<="),
    )
    for what, entry, floor, holds, sign in checks:
        if floor is None or entry["value"] is None:
            continue
        if not holds(entry["value"], floor):
            failures.append(f"{what} {entry['value']:.4g} in {entry['world']}, needs {sign} {floor:g}")
    return failures
