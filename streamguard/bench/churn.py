"""Account churn: accounts keep arriving and going idle; active slots must stay bounded."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from streamguard.bench.throughput import fit_codebook


def churn_bench(settings: Any, backend: Any, quick: bool, seed: int) -> dict[str, Any]:
    """Accounts keep arriving, send a few requests, go idle: active slots must stay bounded.

    Accounts arrive at a constant rate, each sends its requests within 30
    minutes and is never heard of again; ``StateConfig.idle_evict_hours`` is
    shortened so that a day of event time shows the steady state.
    """
    from streamguard.config import StateConfig  # noqa: PLC0415
    from streamguard.schema import RequestBatch  # noqa: PLC0415
    from streamguard.stream.pipeline import Pipeline  # noqa: PLC0415

    dim = 64
    hours = 12 if quick else 30
    per_hour = 150 if quick else 800
    per_account = 6 if quick else 8
    idle_hours = 2.0
    rng = np.random.default_rng(seed)
    accounts = hours * per_hour
    arrive = np.sort(rng.uniform(0, hours * 3_600_000, accounts)).astype(np.int64)
    owner = np.repeat(np.arange(accounts), per_account)
    ts = arrive[owner] + rng.integers(0, 1_800_000, owner.size)
    order = np.argsort(ts, kind="stable")
    owner, ts = owner[order], ts[order] + 1_767_225_600_000
    topics = rng.standard_normal((64, dim)).astype(np.float32)
    emb = topics[rng.integers(0, 64, owner.size)] + 0.5 * rng.standard_normal((owner.size, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ids = np.array([f"churn-{a}" for a in range(accounts)], dtype=object)
    batch = RequestBatch(
        np.array([f"r{i}" for i in range(owner.size)], dtype=object),
        ts,
        ids[owner],
        np.full(owner.size, None, dtype=object),
        emb,
    )
    state = replace(settings.state, idle_evict_hours=idle_hours) if hasattr(settings.state, "idle_evict_hours") else StateConfig()
    churn_settings = replace(settings, state=state)
    codebook = fit_codebook(batch, churn_settings, backend)
    pipeline = Pipeline(churn_settings, backend, codebook)
    step = min(churn_settings.batch.max_size, max(256, owner.size // 60))
    series = []
    seen: set[int] = set()
    max_active = 0
    for s in range(0, len(batch), step):
        part = batch.take(np.arange(s, min(len(batch), s + step)))
        pipeline.process(part)
        seen.update(owner[s : s + step].tolist())
        active = len(pipeline.accounts)
        max_active = max(max_active, active)
        series.append({"hour": float((part.ts[-1] - ts[0]) / 3_600_000), "active": active, "seen": len(seen), "capacity": int(pipeline.accounts.capacity)})
    per_account_bytes = int(pipeline.state_bytes_per_account())
    capacity = int(pipeline.accounts.capacity)
    return {
        "events": int(owner.size),
        "hours": hours,
        "accounts_seen": accounts,
        "arrivals_per_hour": per_hour,
        "requests_per_account": per_account,
        "idle_evict_hours": idle_hours,
        "max_active_accounts": max_active,
        "final_active_accounts": len(pipeline.accounts),
        "slot_capacity": capacity,
        "evicted": int(pipeline.stats.evicted),
        "state_bytes_at_capacity": capacity * per_account_bytes,
        "state_bytes_without_eviction": accounts * per_account_bytes,
        "expected_active": per_hour * (0.5 + idle_hours + churn_settings.scoring.evict_every_ticks * churn_settings.scoring.tick_ms / 3_600_000)
        if hasattr(churn_settings.scoring, "evict_every_ticks")
        else None,
        "series": series,
    }


