"""``streamguard bench``: every section in turn, ``bench.json``, then the report."""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

from streamguard.bench.churn import churn_bench
from streamguard.bench.common import (
    EVENTS_PER_SCALE,
    TARGET_EVENTS_PER_SECOND,
    TARGET_RECALL,
    TARGET_STATE_BYTES,
    _backend_names,
    _blas_threads,
    _cpu_model,
    _json_default,
    _log,
    _make_backend,
    _max_threads,
    _peak_rss_bytes,
    _versions,
)
from streamguard.bench.end_to_end import end_to_end, traffic_file_rows, write_request_file
from streamguard.bench.near_duplicate import near_duplicate_bench
from streamguard.bench.parser import add_parser
from streamguard.bench.replay_memory import replay_memory
from streamguard.bench.report import plot, render
from streamguard.bench.sgemm import flops_per_event, measure_sgemm
from streamguard.bench.throughput import fit_codebook, make_traffic, ordered_batch, replay_run


def run(args: argparse.Namespace) -> int:
    """Run every section, print the tables, write ``bench.json`` and ``bench.png``; returns the exit status."""
    from streamguard.config import Settings  # noqa: PLC0415

    quick = bool(args.quick)
    dims = [int(d) for d in str(args.dims).split(",") if d.strip()]
    if getattr(args, "replay_rows", None):
        return replay_memory(args, dims[0])
    events = args.events or (12_000 if quick else 150_000)
    window = args.window or (8_192 if quick else 65_536)
    queries = args.queries or (1_024 if quick else 8_192)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    settings = Settings()
    tick_ms = int(getattr(settings.scoring, "tick_ms", 300_000))
    names, skipped = _backend_names(args.backends)
    started = time.perf_counter()
    report: dict[str, Any] = {
        "meta": {
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "host": platform.node(),
            "cpu": _cpu_model(),
            "cores": _max_threads(),
            "load_average_start": list(os.getloadavg()),
            "versions": _versions(),
            "quick": quick,
            "dims": dims,
            "events": events,
            "events_per_tick": args.events_per_tick,
            "seed": args.seed,
            "backends": names,
            "skipped_backends": skipped,
            "command": "streamguard bench " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["bench"] else "streamguard bench",
        }
    }
    _log(f"sgemm at d={dims}")
    report["sgemm"] = measure_sgemm(dims, settings.coverage.cells, settings.signature.bits, quick)
    report["flops"] = {str(d): flops_per_event(d, settings) for d in dims}

    report["throughput"] = []
    report["end_to_end"] = []
    near_dup: dict[str, Any] | None = None
    state_bytes: dict[str, int] = {}
    fixed_state: dict[str, int] = {}
    cpu_backend = None
    for dim in dims:
        _log(f"d={dim}: simulating {events} requests")
        table, days = make_traffic(dim, events, args.seed, args.events_per_tick, tick_ms)
        batch = ordered_batch(table, dim)
        backends = {name: _make_backend(name, settings) for name in names}
        if "cpu" in backends:
            cpu_backend = backends["cpu"]
        fitter = backends.get("cpu") or backends.get("cuda") or backends["numpy"] if backends else None
        codebook = fit_codebook(batch, settings, fitter)
        limit = report["sgemm"]["gflops_by_dim"][str(dim)] * 1e9 / report["flops"][str(dim)]["gemm"]
        runs: list[tuple[str, Any, int | None]] = [(name, backends[name], None) for name in names]
        if not quick and "cpu" in backends and _max_threads() > 1:
            chosen = backends["cpu"].threads
            other = 1 if chosen > 1 else _max_threads()
            runs.append((f"cpu ({other} thread{'s' if other > 1 else ''})", _make_backend("cpu", settings, threads=other), other))
            runs.append(("cpu (threads measured)", _make_backend("cpu", settings, threads=None), None))
        reference_alerts = None
        for label, backend, _ in runs:
            _log(f"d={dim}: replay on {label}")
            threads = getattr(backend, "threads", None) if backend.name == "cpu" else (cpu_backend.threads if cpu_backend else None)
            counters = (getattr(backend, "gram_rows", 0), getattr(backend, "exact_rows", 0))
            with _blas_threads(threads if backend.name == "numpy" else None):
                numbers, alerts = replay_run(table, settings, backend, codebook)
            if backend.name == "cpu":
                gram = backend.gram_rows - counters[0]
                exact = backend.exact_rows - counters[1]
                numbers["cells_without_second_gemm"] = gram / max(1, gram + exact)
                own_limit = report["sgemm"]["gflops_by_dim"][str(dim)] * 1e9 / report["flops"][str(dim)]["gemm_cpu_backend"]
                numbers["blas_limit_own_gemms_events_per_second"] = own_limit
                numbers["share_of_own_blas_limit"] = numbers["events_per_second"] / own_limit
            if label == "numpy":
                reference_alerts = alerts
            numbers.update(
                {
                    "dim": dim,
                    "backend": label if label != "cpu" else "cpu",
                    "threads": threads,
                    "traffic_days": days,
                    "events_per_tick": numbers["events"] / max(1.0, days * 86_400_000 / tick_ms),
                    "blas_limit_events_per_second": limit,
                    "share_of_blas_limit": numbers["events_per_second"] / limit,
                    "alerts_match_reference": None if reference_alerts is None else alerts == reference_alerts,
                }
            )
            state_bytes[str(dim)] = numbers["state_bytes_per_account"]
            fixed_state = numbers["fixed_state_bytes"] or fixed_state
            report["throughput"].append(numbers)
        if not quick and "cpu" in backends and dim == dims[0]:
            _log(f"d={dim}: replay on cpu at the simulator's own event-time density")
            sparse_events = min(events, 50_000)
            sim_density = int(EVENTS_PER_SCALE / (3 * 86_400_000 / tick_ms))  # the simulator's default: scale 1 over 3 days
            sparse, sparse_days = make_traffic(dim, sparse_events, args.seed, sim_density, tick_ms)
            numbers, _ = replay_run(sparse, settings, backends["cpu"], fit_codebook(ordered_batch(sparse, dim), settings, backends["cpu"]))
            numbers.update(
                {
                    "dim": dim,
                    "backend": "cpu (simulator density)",
                    "threads": backends["cpu"].threads,
                    "traffic_days": sparse_days,
                    "events_per_tick": numbers["events"] / max(1.0, sparse_days * 86_400_000 / tick_ms),
                    "note": "per-tick scoring dominates at this density",
                    "blas_limit_events_per_second": limit,
                    "share_of_blas_limit": numbers["events_per_second"] / limit,
                    "alerts_match_reference": None,
                }
            )
            report["throughput"].append(numbers)
        if dim == dims[0]:
            chosen = next((n for n in ("cpu", "cuda", "numpy") if n in backends), None)
            if chosen is not None:
                path = write_request_file(table, out / f"traffic-d{dim}.parquet")
                detector = next(r for r in report["throughput"] if r["dim"] == dim and r["backend"] == chosen)
                _log(f"d={dim}: `streamguard replay` end to end on {chosen} ({path})")
                report["end_to_end"].append(end_to_end(path, f"simulator d={dim}", chosen, detector, out, profile=True))
        if near_dup is None:
            _log(f"d={dim}: near-duplicate job, W={window}, {queries} queries")
            scan_backend = backends.get("cpu") or backends.get("cuda") or backends["numpy"]
            near_dup = near_duplicate_bench(batch, codebook, settings, scan_backend, window, queries)
        del table, batch
    for traffic in getattr(args, "traffic", None) or []:
        path = Path(traffic)
        chosen = next((n for n in ("cpu", "cuda", "numpy") if n in names), "numpy")
        backend = _make_backend(chosen, settings)
        _log(f"{path.name}: the detector alone on {chosen}")
        detector, dim = traffic_file_rows(path, settings, backend)
        detector.update({"dim": dim, "backend": chosen, "traffic": str(path)})
        _log(f"{path.name}: `streamguard replay` end to end on {chosen}")
        report["end_to_end"].append(end_to_end(path, path.stem, chosen, detector, out, profile=True))
    report["near_duplicate"] = near_dup
    # Sections of their own (a module each, like churn.py) are added here, with their key in common.SECTIONS.
    churn_backend = cpu_backend or _make_backend("numpy", settings)
    _log("account churn")
    report["churn"] = churn_bench(settings, churn_backend, quick, args.seed)
    if getattr(args, "adversarial", False):
        from streamguard.bench.adversarial import run_adversarial  # noqa: PLC0415 - an opt-in section

        _log("an adversarial account sending half the traffic")
        adversary_backend = next((n for n in ("cpu", "cuda", "numpy") if n in names), "numpy")
        report["adversarial"] = run_adversarial(
            events=args.events or (12_000 if quick else 100_000), dim=dims[0], seed=args.seed, backend=adversary_backend,
            settings=settings,
        )
    report["memory"] = {
        "peak_rss_bytes": _peak_rss_bytes(),
        "state_bytes_per_account": state_bytes,
        "fixed_state_bytes": sum(fixed_state.values()),
        "fixed_state_parts": fixed_state,
        "cross_account_table_bytes": fixed_state.get("cross_account_tables"),
        "note": "peak RSS of the whole bench process (traffic, every backend, baselines); fixed state is per "
        "pipeline (per partition), whatever the number of accounts",
    }
    report["targets"] = _targets(report, dims)
    report["meta"]["seconds"] = time.perf_counter() - started
    report["meta"]["load_average_end"] = list(os.getloadavg())
    path = out / "bench.json"
    path.write_text(json.dumps(report, indent=2, default=_json_default))
    plot(report, out / "bench.png")
    render(report)
    print(f"wrote {path} and {out / 'bench.png'}")
    return 0


def _targets(report: dict[str, Any], dims: list[int]) -> dict[str, Any]:
    dim = 384 if 384 in dims else dims[0]
    cpu = [r for r in report["throughput"] if r["backend"] == "cpu" and r["dim"] == dim]
    nd = report["near_duplicate"] or {}
    by_name = {a["name"]: a for a in nd.get("approaches", [])}
    scan = next((a for n, a in by_name.items() if n.startswith("streamguard within")), None)
    binary = by_name.get("faiss IndexBinaryFlat (SimHash)")
    state = report["memory"]["state_bytes_per_account"].get(str(dim))
    return {
        "dim": dim,
        "cpu_events_per_second": cpu[0]["events_per_second"] if cpu else None,
        "cpu_events_per_second_ok": bool(cpu and cpu[0]["events_per_second"] >= TARGET_EVENTS_PER_SECOND),
        "near_duplicate_recall": scan.get("recall") if scan else None,
        "near_duplicate_recall_ok": bool(scan and (scan.get("recall") or 0) >= TARGET_RECALL),
        "scan_vs_binary_flat": (scan["queries_per_second"] / binary["queries_per_second"]) if scan and binary and "queries_per_second" in binary else None,
        "state_bytes_per_account": state,
        "state_ok": bool(state is not None and state <= TARGET_STATE_BYTES),
        "fixed_state_bytes_per_pipeline": report["memory"].get("fixed_state_bytes"),
        "mean_chain": nd.get("mean_chain"),
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m streamguard.bench [flags]``: the same as ``streamguard bench``."""
    parser = argparse.ArgumentParser(prog="streamguard")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return run(args)
