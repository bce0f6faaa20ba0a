"""``streamguard evasion``: recall under each evasion scenario, false positives alongside.

One command reproduces the README's evasion table: it simulates the
ordinary population once without evasion (the baseline) and once per
scenario with that scenario's distillers planted on top, runs the whole
detector over each (the ``replay`` code path), and reports, per scenario,
the recall of the evasive accounts (campaign members and single accounts
apart), the recall of the ordinary distillers, and the false positives per
10,000 benign accounts, so that a change in false positives shows next to
the baseline's.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

from streamguard.sim.accounts import EVASION_PREFIX


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evasion",
        help="recall of every evasion scenario against the same population, with false positives",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--scenario", action="append", default=[], help="run only these (repeatable); default all")
    parser.add_argument("--json", default=None, help="write the results as JSON here")
    parser.add_argument("--markdown", default=None, help="write the table as Markdown here")
    return parser


def _row(name: str, labels: dict[str, Any], alerts: list[Any], traffic: Any, seconds: float) -> dict[str, Any]:
    from streamguard.evaluation import evaluate  # noqa: PLC0415

    result = evaluate(labels, alerts, traffic)
    flagged = {a.account_id for a in alerts}
    accounts = labels["accounts"]
    evasive = {a: i for a, i in accounts.items() if str(i["kind"]).startswith(EVASION_PREFIX)}
    ordinary = [a for a, i in accounts.items() if i["label"] == "distiller" and a not in evasive]
    ordinary_members = [a for a in ordinary if accounts[a].get("campaign")]
    members = [a for a, i in evasive.items() if i.get("campaign")]
    singles = [a for a, i in evasive.items() if not i.get("campaign")]

    def share(group: list[str]) -> dict[str, Any]:
        hit = sum(1 for a in group if a in flagged)
        return {"accounts": len(group), "flagged": hit, "recall": hit / len(group) if group else None}

    benign_pulled = sum(
        1 for a in alerts if a.campaign_id and accounts.get(a.account_id, {}).get("label") == "benign"
    )
    return {
        "scenario": name,
        "evasive": share(list(evasive)),
        "evasive_campaign_members": share(members),
        "evasive_single_accounts": share(singles),
        "ordinary_distillers": share(ordinary),
        "ordinary_campaign_members": share(ordinary_members),
        "benign_accounts": result.benign,
        "false_positives": result.false_positives,
        "false_positives_per_10k_benign": result.false_positives_per_10k_benign,
        "benign_campaign_alerts": benign_pulled,
        "precision": result.precision,
        "requests": traffic.num_rows,
        "seconds": round(seconds, 1),
    }


def _fmt(part: dict[str, Any]) -> str:
    if not part["accounts"]:
        return "-"
    return f"{part['recall']:.2f} ({part['flagged']}/{part['accounts']})"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"`streamguard evasion --seed {report['seed']} --scale {report['scale']} --dim {report['dim']}` "
        f"({report['date']}, backend {report['backend']})",
        "",
        "| scenario | evasive: campaign members | evasive: single accounts | ordinary distillers "
        "(of which campaign members) | FP / 10k benign (FP) | benign in a campaign alert |",
        "|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        lines.append(
            f"| {row['scenario']} | {_fmt(row['evasive_campaign_members'])} | {_fmt(row['evasive_single_accounts'])} | "
            f"{_fmt(row['ordinary_distillers'])} ({_fmt(row['ordinary_campaign_members'])}) | "
            f"{row['false_positives_per_10k_benign']:.1f} ({row['false_positives']}) | "
            f"{row['benign_campaign_alerts']} |"
        )
    return "\n".join(lines) + "\n"


def run(args: argparse.Namespace, settings: Any, backend: Any) -> int:
    from rich.table import Table  # noqa: PLC0415

    from streamguard.console import make_console  # noqa: PLC0415
    from streamguard.evaluate_matrix.tables import write_report  # noqa: PLC0415

    from streamguard.sim import KNOWN_EVASIONS, SimConfig, simulate  # noqa: PLC0415
    from streamguard.sinks.alerts import MemoryAlertSink  # noqa: PLC0415
    from streamguard.sinks.dead_letter import DeadLetterSink  # noqa: PLC0415
    from streamguard.stream.replay import replay_table  # noqa: PLC0415

    unknown = sorted(set(args.scenario) - KNOWN_EVASIONS)
    if unknown:
        raise ValueError(f"unknown scenario(s) {unknown}; known: {', '.join(sorted(KNOWN_EVASIONS))}")
    scenarios = [s for s in sorted(KNOWN_EVASIONS) if not args.scenario or s in args.scenario]
    console = make_console()
    rows = []
    for name in ["baseline", *scenarios]:
        started = time.perf_counter()
        evasion = () if name == "baseline" else (name,)
        with console.status(f"{name}: simulating and detecting ..."):
            traffic = simulate(SimConfig(seed=args.seed, scale=args.scale, dim=args.dim, evasion=evasion))
            sink = MemoryAlertSink()
            replay_table(traffic.table, settings, backend, sink, DeadLetterSink())
        rows.append(_row(name, traffic.labels, sink.alerts, traffic.table, time.perf_counter() - started))
        console.print(f"{name}: done in {rows[-1]['seconds']} s")
    report = {
        "seed": args.seed,
        "scale": args.scale,
        "dim": args.dim,
        "backend": backend.name,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "rows": rows,
    }
    table = Table(title=f"evasion scenarios (seed {args.seed}, scale {args.scale}, D={args.dim})")
    for col in ("scenario", "evasive members", "evasive singles", "ordinary distillers", "FP/10k benign", "benign in campaign"):
        table.add_column(col)
    for row in rows:
        table.add_row(
            row["scenario"],
            _fmt(row["evasive_campaign_members"]),
            _fmt(row["evasive_single_accounts"]),
            _fmt(row["ordinary_distillers"]),
            f"{row['false_positives_per_10k_benign']:.1f} ({row['false_positives']})",
            str(row["benign_campaign_alerts"]),
        )
    console.print(table)
    write_report(report, args.json, args.markdown, markdown)
    return 0
