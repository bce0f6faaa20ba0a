"""The bench's report: rich tables on the terminal and ``bench.png``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from streamguard.bench.common import TARGET_EVENTS_PER_SECOND, TARGET_RECALL, TARGET_STATE_BYTES


def render(report: dict[str, Any]) -> None:
    """Rich tables on the terminal."""
    from rich.console import Console  # noqa: PLC0415
    from rich.table import Table  # noqa: PLC0415

    console = Console(width=max(Console().width, 150))
    meta = report["meta"]
    console.print(
        f"[bold]streamguard bench[/bold] {meta['date']} on {meta['cpu']} ({meta['cores']} cores, "
        f"load {meta['load_average_start'][0]:.1f}); {meta['versions'].get('blas', '')}"
    )
    sg = report["sgemm"]
    console.print(
        "sgemm (detector shapes, best thread count): "
        + ", ".join(f"d={d}: {g:.0f} GFLOP/s" for d, g in sg["gflops_by_dim"].items())
    )
    table = Table(title="whole detector (replay_table, codebook given)")
    for col in ("D", "backend", "threads", "events/s", "vs numpy", "BLAS limit", "share", "p50 batch", "p99 batch", "alerts", "= ref"):
        table.add_column(col, justify="right")
    base = {r["dim"]: r["events_per_second"] for r in report["throughput"] if r["backend"] == "numpy"}
    for r in report["throughput"]:
        ref = base.get(r["dim"])
        table.add_row(
            str(r["dim"]),
            r["backend"],
            str(r["threads"] or ""),
            f"{r['events_per_second']:,.0f}",
            f"{r['events_per_second'] / ref:.1f}x" if ref else "",
            f"{r['blas_limit_events_per_second']:,.0f}",
            f"{r['share_of_blas_limit']:.0%}",
            f"{r['p50_batch_seconds'] * 1e3:.1f} ms" if r["p50_batch_seconds"] is not None else "",
            f"{r['p99_batch_seconds'] * 1e3:.1f} ms" if r["p99_batch_seconds"] is not None else "",
            str(r["alerts"]),
            {True: "yes", False: "NO", None: ""}[r["alerts_match_reference"]],
        )
    console.print(table)
    flops = report["flops"]
    console.print(
        "  BLAS limit: this machine's sgemm rate at the detector's shapes (above) / the reference's GEMM work per "
        "event (" + ", ".join(f"d={d}: {f['gemm'] / 1e6:.2f} MFLOP" for d, f in flops.items()) + ": the signature "
        "projection and two cell GEMMs), the events/s of a detector that did nothing but those GEMMs at full speed. "
        "share = events/s / BLAS limit: how close the whole detector comes to that bound. Over 100% means less GEMM "
        "work than the reference's count (the cpu backend replaces the second cell GEMM; its share of the limit of "
        "its own GEMMs is below), or an sgemm sample slowed by other load."
    )
    for r in report["throughput"]:
        if "share_of_own_blas_limit" in r:
            console.print(
                f"  d={r['dim']} {r['backend']}: {r['cells_without_second_gemm']:.1%} of cells without the second GEMM; "
                f"{r['share_of_own_blas_limit']:.0%} of the limit of its own GEMMs ({r['blas_limit_own_gemms_events_per_second']:,.0f} events/s)"
            )
    _render_end_to_end(console, report.get("end_to_end") or [])
    nd = report["near_duplicate"]
    if nd:
        table = Table(
            title=f"near-duplicate job: same account, last W={nd['window']:,}, cos >= {nd['dup_cosine']} "
            f"(d={nd['dim']}, {nd['queries']:,} queries, {nd['positives']:,} positives; radius {nd['radius']}/{nd['bits']})"
        )
        for col in ("approach", "threads", "queries/s", "scan speed-up", "recall", "precision"):
            table.add_column(col, justify="right")
        scan = next((a for a in nd["approaches"] if a["name"].startswith("streamguard within")), None)
        for a in nd["approaches"]:
            if "skipped" in a:
                table.add_row(a["name"], "", "skipped", "", "", "")
                continue
            table.add_row(
                a["name"],
                str(a.get("threads") or ""),
                f"{a['queries_per_second']:,.0f}",
                f"{scan['queries_per_second'] / a['queries_per_second']:,.0f}x" if scan else "",
                f"{a['recall']:.4f}" if a.get("recall") is not None else "",
                f"{a['precision']:.4f}" if a.get("precision") is not None else "",
            )
        console.print(table)
        chain = nd["chain_percentiles"]
        console.print(
            f"chain walked per query (the account's requests in the window): mean {nd['mean_chain']:,.0f}, "
            f"p50 {chain['50']:,.0f}, p99 {chain['99']:,.0f}, max {chain['100']:,.0f}"
        )
        console.print(
            f"smallest radius reaching recall {TARGET_RECALL} (configured {nd['radius']}): whole window "
            f"{nd['radius_for_target_recall']['window']}; history, a per-account ring of R: "
            + ", ".join(f"R={k}: {v}" for k, v in nd["radius_for_target_recall"].items() if k != "window")
            + " (recall cap of an exact check over the ring: "
            + ", ".join(f"R={k}: {v:.4f}" for k, v in nd["ring_cap"].items() if v is not None)
            + ")"
        )
    churn = report["churn"]
    mem = report["memory"]
    console.print(
        f"state per active account: {mem['state_bytes_per_account']} bytes, plus per pipeline "
        f"{mem['fixed_state_bytes'] / 2**20:.1f} MiB fixed ({', '.join(f'{k} {v / 2**20:.1f} MiB' for k, v in mem['fixed_state_parts'].items())}); "
        f"peak RSS {mem['peak_rss_bytes'] / 2**20:,.0f} MiB; "
        f"churn: {churn['accounts_seen']:,} accounts seen, max {churn['max_active_accounts']:,} active, "
        f"{churn['slot_capacity']:,} slots ({churn['state_bytes_at_capacity'] / 2**20:.1f} MiB)"
    )
    for row in report.get("adversarial", {}).get("rows", []):
        console.print(
            f"adversarial account (share cap {row['account_share']}): {row['adversarial_events_per_second']:,.0f} events/s "
            f"against {row['ordinary_events_per_second']:,.0f} without it (ratio {row['throughput_ratio']:.2f}, >= 0.5 wanted)"
        )
    t = report["targets"]
    met = {True: "met", False: "NOT met"}
    recall = t["near_duplicate_recall"]
    console.print(
        f"targets (the project's acceptance bars, at d={t['dim']}"
        + ("; --quick: small samples, indicative only" if meta.get("quick") else "")
        + "):\n"
        f"  throughput: the whole detector on the cpu backend (codebook given, 4,096 events per scoring tick) should "
        f"replay >= {TARGET_EVENTS_PER_SECOND:,} events/s; measured {t['cpu_events_per_second'] or 0:,.0f}: "
        f"{met[t['cpu_events_per_second_ok']]}"
        + (f" ({t['cpu_events_per_second'] / TARGET_EVENTS_PER_SECOND:.0%} of the target)" if t["cpu_events_per_second"] else " (no cpu run)")
        + "\n"
        f"  near-duplicate recall: the within-account scan should find >= {TARGET_RECALL} of the exact-cosine "
        f"near-duplicates of the job above; measured {'-' if recall is None else f'{recall:.4f}'}: "
        f"{met[t['near_duplicate_recall_ok']]} (scan {t['scan_vs_binary_flat'] or 0:,.0f}x the queries/s of faiss IndexBinaryFlat)\n"
        f"  state: one active account should cost <= {TARGET_STATE_BYTES // 1024} KiB; measured "
        f"{t['state_bytes_per_account']} B: {met[t['state_ok']]}"
    )


def _render_end_to_end(console: Any, rows: list[dict[str, Any]]) -> None:
    """The `replay` command end to end beside the detector alone, and its profile's top costs."""
    from rich.table import Table  # noqa: PLC0415

    if not rows:
        return
    table = Table(title="`streamguard replay` end to end (own process: start-up, read, validate, order, codebook fit, detect, link, write)")
    for col in ("traffic", "backend", "events", "file", "wall", "start-up", "end-to-end ev/s", "detector ev/s", "share", "faiss job ev/s", "x faiss", "peak RSS", "alerts"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            r["traffic"],
            r["backend"],
            f"{r['events']:,}",
            f"{r['file_bytes'] / 2**20:,.0f} MiB",
            f"{r['wall_seconds']:.1f} s",
            f"{r['startup_seconds']:.1f} s",
            f"{r['events_per_second']:,.0f}",
            f"{r['detector_events_per_second']:,.0f}" if r.get("detector_events_per_second") else "",
            f"{r['share_of_detector']:.0%}" if r.get("share_of_detector") else "",
            f"{r['faiss_job_events_per_second']:,.0f}" if r.get("faiss_job_events_per_second") else "",
            f"{r['replay_over_faiss_job']:.2f}x" if r.get("replay_over_faiss_job") else "",
            f"{r['peak_rss_bytes'] / 2**20:,.0f} MiB",
            str(r["alerts"]),
        )
    console.print(table)
    console.print(
        "  end-to-end ev/s = valid requests / wall time of the whole command; detector ev/s = the detector alone over "
        "the same requests in memory, codebook given (the throughput table); share = end-to-end / detector; faiss job = "
        "a plain faiss IndexBinaryFlat near-duplicate job over the same file in its own process (bench/faiss_job.py: "
        "128-bit SimHash, window 65,536, batches of 4,096); x faiss = end-to-end / faiss job (issue 14: >= 3x)."
    )
    for r in rows:
        profile = r.get("profile")
        if not profile:
            continue
        console.print(
            f"  top costs of `replay` on {r['traffic']} (cProfile, cumulative, of {profile['replay_seconds']:.1f} s in replay_file; "
            f"enclosing: {', '.join(profile['enclosing'][:3])}):"
        )
        for p in profile["top"]:
            console.print(f"    {p['cumtime']:7.2f} s {p['share']:5.0%}  {p['calls']:>8,} calls  {p['function']}")


def plot(report: dict[str, Any], path: Path) -> None:
    """Four panels: throughput vs the BLAS limit, near-duplicate rates, recall per radius, churn."""
    import matplotlib  # noqa: PLC0415

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    ax = axes[0, 0]
    rows = report["throughput"]
    dims = sorted({r["dim"] for r in rows})
    labels = list(dict.fromkeys(r["backend"] for r in rows))
    width = 0.8 / max(1, len(labels))
    for k, label in enumerate(labels):
        values = [next((r["events_per_second"] for r in rows if r["dim"] == d and r["backend"] == label), 0.0) for d in dims]
        ax.bar(np.arange(len(dims)) + k * width, values, width, label=label)
    for i, d in enumerate(dims):
        limit = next(r["blas_limit_events_per_second"] for r in rows if r["dim"] == d)
        ax.hlines(limit, i - width / 2, i + 0.8 - width / 2, colors="k", linestyles="--")
    ax.set_xticks(np.arange(len(dims)) + 0.4 - width / 2, [f"D={d}" for d in dims])
    ax.set_ylabel("events/s")
    ax.set_title("whole detector (dashed: BLAS-bound limit)")
    ax.legend(fontsize=8)
    nd = report["near_duplicate"]
    ax = axes[0, 1]
    if nd:
        shown = [a for a in nd["approaches"] if "queries_per_second" in a]
        ax.barh([a["name"] for a in shown], [a["queries_per_second"] for a in shown], color="tab:blue")
        ax.set_xscale("log")
        for y, a in enumerate(shown):
            ax.text(a["queries_per_second"], y, f" recall {a.get('recall', 0):.3f}", va="center", fontsize=8)
        ax.set_xlabel("queries/s (log)")
        ax.set_title(f"near-duplicate job, W={nd['window']:,}, d={nd['dim']}")
        ax = axes[1, 0]
        sweep = nd["radius_sweep"]
        radii = [s["radius"] for s in sweep]
        ax.plot(radii, [s["recall_window"] for s in sweep], "s-", ms=3, label="whole window (streamguard, IndexBinaryFlat)")
        for size in nd["ring_sizes"]:
            ax.plot(radii, [s[f"recall_ring_{size}"] for s in sweep], "o:", ms=3, alpha=0.6, label=f"history: per-account ring of {size}")
        ax.plot(radii, [s["false_positive_rate_window"] for s in sweep], "^--", ms=3, label="false positives, whole window")
        ax.axhline(TARGET_RECALL, color="k", linestyle=":")
        ax.axvline(nd["radius"], color="tab:red", linestyle="--", label=f"configured radius {nd['radius']}")
        ax.set_xlabel(f"Hamming radius (of {nd['bits']} bits)")
        ax.set_ylabel("share of exact-cosine positives found")
        ax.set_title(f"recall vs radius (cos >= {nd['dup_cosine']})")
        ax.legend(fontsize=8)
    ax = axes[1, 1]
    churn = report["churn"]
    series = churn["series"]
    hours = [s["hour"] for s in series]
    ax.plot(hours, [s["seen"] for s in series], label="accounts seen")
    ax.plot(hours, [s["active"] for s in series], label="active accounts")
    ax.plot(hours, [s["capacity"] for s in series], label="slots allocated")
    ax.set_xlabel("event time (hours)")
    ax.set_title(f"account churn (idle eviction after {churn['idle_evict_hours']} h)")
    ax.legend(fontsize=8)
    fig.suptitle(f"streamguard bench {report['meta']['date']} - {report['meta']['cpu']}, {report['meta']['cores']} cores")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
