"""The whole detector alone (``replay_table``, codebook given) over simulated traffic in memory."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamguard.bench.common import EVENTS_PER_SCALE

# ------------------------------------------------------------------- traffic


def make_traffic(dim: int, events: int, seed: int, events_per_tick: int, tick_ms: int) -> tuple[Any, float]:
    """Simulated traffic of about ``events`` requests, squeezed in event time to ``events_per_tick``."""
    from streamguard.sim import SimConfig, simulate  # noqa: PLC0415

    scale = max(events / EVENTS_PER_SCALE, 0.05)
    days = max(events / events_per_tick * tick_ms / 86_400_000, 1.0 / 24)
    traffic = simulate(SimConfig(seed=seed, scale=scale, dim=dim, days=days))
    table = traffic.table
    if table.num_rows > events:
        from streamguard.stream.replay import event_time_order  # noqa: PLC0415

        table = event_time_order(table).slice(0, events)
    return table, days


def ordered_batch(table: Any, dim: int) -> Any:
    from streamguard.schema import validate_table  # noqa: PLC0415
    from streamguard.stream.replay import event_time_order  # noqa: PLC0415

    batch, _ = validate_table(event_time_order(table), dim)
    return batch


def fit_codebook(batch: Any, settings: Any, backend: Any) -> Any:
    from streamguard.stream.pipeline import Pipeline  # noqa: PLC0415

    warm = batch.take(np.arange(min(len(batch), settings.coverage.warmup)))
    return Pipeline(settings, backend).fit_codebook(warm)


# ---------------------------------------------------------------- throughput


def replay_run(table: Any, settings: Any, backend: Any, codebook: Any) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """The whole detector over ``table``; returns its numbers and its alerts."""
    from streamguard.sinks.alerts import MemoryAlertSink  # noqa: PLC0415
    from streamguard.sinks.dead_letter import DeadLetterSink  # noqa: PLC0415
    from streamguard.stream.replay import replay_table  # noqa: PLC0415

    sink = MemoryAlertSink()
    result = replay_table(table, settings, backend, sink, DeadLetterSink(keep_in_memory=0), codebook=codebook)
    pipeline = result.pipelines[0]
    batch_seconds = np.asarray(pipeline.stats.batch_seconds, dtype=np.float64)
    alerts = [(a.account_id, a.kind, a.events_seen, a.ts) for a in sink.alerts]
    numbers = {
        "events": int(result.valid),
        "seconds": float(result.seconds),
        "events_per_second": float(result.events_per_second),
        "batches": int(batch_seconds.size),
        "p50_batch_seconds": float(np.percentile(batch_seconds, 50)) if batch_seconds.size else None,
        "p99_batch_seconds": float(np.percentile(batch_seconds, 99)) if batch_seconds.size else None,
        "stage_seconds": {k: round(float(v), 4) for k, v in pipeline.stats.stage_seconds.items()},
        "alerts": len(alerts),
        "state_bytes_per_account": int(pipeline.state_bytes_per_account()),
        "fixed_state_bytes": dict(pipeline.near_duplicate.fixed_state_bytes()) if pipeline.near_duplicate else {},
    }
    return numbers, alerts

