"""Running the matrix: each world generated (or reused), replayed through the whole detector, scored."""

from __future__ import annotations

import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any, Callable, Iterable

from streamguard.evaluate_matrix.scoring import score_world, worst_case
from streamguard.evaluate_matrix.worlds import GENERATORS, Sources, WorldError, WorldSpec


def generate(spec: WorldSpec, work: Path, sources: Sources) -> tuple[Path, Path, bool]:
    """The world's request file and labels in ``work``, written unless both are there already.

    Returns ``(traffic, labels, cached)``. Files are written under temporary
    names and renamed, labels last, so an interrupted run never leaves a
    world that looks complete.
    """
    traffic, labels = work / f"{spec.name}.parquet", work / f"{spec.name}.labels.json"
    if traffic.is_file() and labels.is_file():
        return traffic, labels, True
    work.mkdir(parents=True, exist_ok=True)
    tmp_traffic, tmp_labels = work / f".{traffic.name}.tmp", work / f".{labels.name}.tmp"
    try:
        try:
            GENERATORS[spec.source].write(spec, tmp_traffic, tmp_labels, sources)
        except (ValueError, TypeError, ImportError) as exc:
            raise WorldError(f"generation failed: {type(exc).__name__}: {exc}") from exc
        if not (tmp_traffic.is_file() and tmp_labels.is_file()):
            raise WorldError(f"the {spec.source} generator wrote no {'traffic' if not tmp_traffic.is_file() else 'labels'}")
        os.replace(tmp_traffic, traffic)
        os.replace(tmp_labels, labels)
    finally:
        tmp_traffic.unlink(missing_ok=True)
        tmp_labels.unlink(missing_ok=True)
    return traffic, labels, False


def run_world(spec: WorldSpec, work: Path, sources: Sources, settings: Any, backend: Any) -> dict[str, Any]:
    """Generate (or reuse), replay with ``settings`` on ``backend``, score: the world's row.

    The alerts are also written to ``work/<name>.alerts.jsonl`` so that
    ``score.py`` can be run on the same files.

    Raises
    ------
    WorldError
        When the generator or the detector fails on this world, saying which.
    """
    from streamguard.evaluation import load_labels  # noqa: PLC0415
    from streamguard.schema import read_request_file  # noqa: PLC0415
    from streamguard.sinks.alerts import MemoryAlertSink  # noqa: PLC0415
    from streamguard.sinks.dead_letter import DeadLetterSink  # noqa: PLC0415
    from streamguard.stream.replay import replay_table  # noqa: PLC0415

    started = time.perf_counter()
    traffic_path, labels_path, cached = generate(spec, work, sources)
    generated = time.perf_counter()
    table = read_request_file(traffic_path)
    sink = MemoryAlertSink()
    try:
        replay_table(table, settings, backend, sink, DeadLetterSink())
    except Exception as exc:  # one world's crash is that world's row; the other worlds still run
        raise WorldError(f"the detector failed: {type(exc).__name__}: {exc}") from exc
    detected = time.perf_counter()
    alerts_path = work / f"{spec.name}.alerts.jsonl"
    alerts_path.write_text("".join(a.to_json() + "\n" for a in sink.alerts))
    labels = load_labels(labels_path)
    row = {"world": spec.name, **asdict(spec)}
    row.update(score_world(labels, sink.alerts, table))
    if isinstance(labels.get("world"), dict):
        row["family"] = labels["world"]  # what a sampled world drew: geometry, mix, volumes, span
    row["alerts"] = len(sink.alerts)
    row["cached"] = cached
    row["seconds"] = {
        "generate": round(generated - started, 2),
        "detect": round(detected - generated, 2),
        "total": round(time.perf_counter() - started, 2),
    }
    return row


def run_matrix(
    worlds: Iterable[WorldSpec],
    settings: Any,
    backend: Any,
    work: Path,
    sources: Sources,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every world in turn; a source that cannot run here is skipped with one line, a failed world noted.

    Returns
    -------
    dict
        ``worlds`` (rows in matrix order), ``worst`` (:func:`worst_case`),
        ``skipped`` and ``failed`` (``{"world", "reason"}``), ``seconds``.
    """
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    reasons: dict[str, str | None] = {}
    for spec in worlds:
        if spec.source not in reasons:
            reasons[spec.source] = GENERATORS[spec.source].unavailable(sources)
            if reasons[spec.source] is not None:
                say(f"{spec.source} worlds skipped: {reasons[spec.source]}")
        if reasons[spec.source] is not None:
            skipped.append({"world": spec.name, "reason": str(reasons[spec.source])})
            continue
        try:
            row = run_world(spec, work, sources, settings, backend)
        except (WorldError, OSError, ValueError) as exc:
            failed.append({"world": spec.name, "reason": str(exc)})
            say(f"{spec.name}: failed: {exc}")
            continue
        rows.append(row)
        s = row["seconds"]
        say(
            f"{spec.name}: {row['requests']:,} requests, {row['accounts']:,} accounts; "
            f"{'reused' if row['cached'] else 'generated in ' + format(s['generate'], '.1f') + ' s'}, "
            f"detected in {s['detect']:.1f} s; {s['total']:.1f} s in all"
        )
    return {
        "worlds": rows,
        "worst": worst_case(rows),
        "skipped": skipped,
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
    }

