"""The adversarial-account bench row: one account sends as many requests as all the others together.

Issue 14, "bounded worst case": an account that sends half a partition's
traffic must slow the detector by at most 2x, and must not change what the
ordinary accounts' near-duplicate scan finds. This runs, in one process and
side by side, the *ordinary* row (simulated traffic) and the *adversarial*
row (the same traffic plus one account interleaved with it, a request at the
event time of each ordinary one, on random directions), with the same
codebook (fitted on the ordinary traffic), once with the per-account cap of
the near-duplicate window (``near_duplicate.account_share``) and once
without it (share 1: the window as it was before the cap). It reports the
throughput of each row and, for the ordinary accounts, their within- and
cross-account near-duplicate counts and alerts with and without the
adversary.

    python -m streamguard.bench.adversarial  (or: streamguard bench --adversarial) [--events 100000] [--dim 384] [--backend cpu]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

ADVERSARY = "acct-adversary"


@contextlib.contextmanager
def _account_share(share: float) -> Iterator[None]:
    """The near-duplicate detector built with ``account_share = share`` (the pipeline does not pass it yet)."""
    from streamguard.detectors.near_duplicate import NearDuplicateDetector  # noqa: PLC0415

    init = NearDuplicateDetector.__init__
    saved = init.__defaults__
    if saved is None:
        raise RuntimeError("NearDuplicateDetector.__init__ has no defaults to override")
    init.__defaults__ = (*saved[:-1], float(share))
    try:
        yield
    finally:
        init.__defaults__ = saved


def ordinary_table(events: int, dim: int, seed: int) -> Any:
    """About ``events`` simulated requests in event-time order (a day of a population scaled to fit)."""
    from streamguard.sim import SimConfig, simulate  # noqa: PLC0415
    from streamguard.stream.replay import event_time_order  # noqa: PLC0415

    scale = max(events / 115_000 * 0.5, 0.02)
    table = event_time_order(simulate(SimConfig(seed=seed, scale=scale, dim=dim, days=1.0)).table)
    return table.slice(0, min(events, table.num_rows))


def with_adversary(table: Any, seed: int) -> Any:
    """``table`` plus one account sending a request at each ordinary request's event time (random unit embeddings)."""
    import pyarrow as pa  # noqa: PLC0415

    from streamguard.stream.replay import event_time_order  # noqa: PLC0415

    n = table.num_rows
    dim = len(table.column("embedding")[0].as_py())
    rng = np.random.default_rng(seed)
    emb = rng.standard_normal((n, dim)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    columns: dict[str, Any] = {}
    for field in table.schema:
        name = field.name
        if name == "request_id":
            columns[name] = pa.array([f"adv-{i}" for i in range(n)], type=field.type)
        elif name == "account_id":
            columns[name] = pa.array([ADVERSARY] * n, type=field.type)
        elif name == "org_id":
            columns[name] = pa.array(["org-adversary"] * n, type=field.type)
        elif name == "ts":
            columns[name] = table.column("ts")
        elif name == "embedding":
            flat = pa.array(emb.reshape(-1), type=field.type.value_type)
            if isinstance(field.type, pa.FixedSizeListType):
                columns[name] = pa.FixedSizeListArray.from_arrays(flat, dim)
            else:
                columns[name] = pa.ListArray.from_arrays(pa.array(np.arange(n + 1, dtype=np.int32) * dim), flat)
        else:
            columns[name] = pa.nulls(n, type=field.type)
    adversary = pa.table(columns, schema=table.schema)
    return event_time_order(pa.concat_tables([table, adversary]))


def _replay(table: Any, settings: Any, backend: Any, codebook: Any) -> dict[str, Any]:
    from streamguard.sinks.alerts import MemoryAlertSink  # noqa: PLC0415
    from streamguard.sinks.dead_letter import DeadLetterSink  # noqa: PLC0415
    from streamguard.stream.replay import replay_table  # noqa: PLC0415

    sink = MemoryAlertSink()
    begin = time.perf_counter()
    result = replay_table(table, settings, backend, sink, DeadLetterSink(keep_in_memory=0), codebook=codebook)
    wall = time.perf_counter() - begin
    pipeline = result.pipelines[0]
    within: dict[str, int] = {}
    cross: dict[str, int] = {}
    for account in np.unique(table.column("account_id").to_numpy(zero_copy_only=False)):
        slot = pipeline.accounts.slot(str(account))
        if slot is not None and account != ADVERSARY:
            own, others = pipeline.near_duplicate.duplicate_counts(np.array([slot]))
            within[str(account)], cross[str(account)] = int(own[0]), int(others[0])
    return {
        "events": int(result.valid),
        "seconds": round(float(result.seconds), 3),
        "wall_seconds": round(wall, 3),
        "events_per_second": round(float(result.events_per_second), 1),
        "within": within,
        "cross": cross,
        "alerts": sorted({(a.account_id, a.kind) for a in sink.alerts if a.account_id != ADVERSARY}),
    }


def _compare(ordinary: dict[str, Any], adversarial: dict[str, Any]) -> dict[str, Any]:
    """Near-duplicate recall of the ordinary accounts with the adversary, against without it."""
    accounts = sorted(ordinary["within"])
    base_w = np.array([ordinary["within"][a] for a in accounts])
    base_c = np.array([ordinary["cross"][a] for a in accounts])
    adv_w = np.array([adversarial["within"].get(a, 0) for a in accounts])
    adv_c = np.array([adversarial["cross"].get(a, 0) for a in accounts])
    return {
        "ordinary_accounts": len(accounts),
        "within_dups": [int(base_w.sum()), int(adv_w.sum())],
        "within_recall": round(float(np.minimum(adv_w, base_w).sum() / max(base_w.sum(), 1)), 5),
        "within_accounts_changed": int((adv_w != base_w).sum()),
        "cross_dups": [int(base_c.sum()), int(adv_c.sum())],
        "cross_recall": round(float(np.minimum(adv_c, base_c).sum() / max(base_c.sum(), 1)), 5),
        "cross_accounts_changed": int((adv_c != base_c).sum()),
        "alerts": [len(ordinary["alerts"]), len(adversarial["alerts"])],
        "alerts_identical": ordinary["alerts"] == adversarial["alerts"],
    }


def run_adversarial(
    events: int = 100_000,
    dim: int = 384,
    seed: int = 0,
    backend: str = "cpu",
    shares: tuple[float, ...] | None = None,
    settings: Any = None,
) -> dict[str, Any]:
    """The ordinary and adversarial rows, for each account share (default: 1.0, no cap, and the setting's).

    Returns ``{"events", "dim", "backend", "rows": [...]}``, one row per share:
    the events/s of both runs, their ratio (``>= 0.5`` is the acceptance) and the
    ordinary accounts' near-duplicate results with the adversary against without.
    """
    from streamguard.backends import create_backend  # noqa: PLC0415
    from streamguard.config import Settings  # noqa: PLC0415
    from streamguard.schema import validate_table  # noqa: PLC0415
    from streamguard.stream.pipeline import Pipeline  # noqa: PLC0415

    settings = settings or Settings()
    shares = shares or (1.0, settings.near_duplicate.account_share)
    impl = create_backend(backend, settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    impl.warmup()
    ordinary = ordinary_table(events, dim, seed)
    adversarial = with_adversary(ordinary, seed + 1)
    batch, _ = validate_table(ordinary, dim)
    warm = batch.take(np.arange(min(len(batch), settings.coverage.warmup)))
    codebook = Pipeline(settings, impl).fit_codebook(warm)
    rows = []
    for share in shares:
        with _account_share(share):
            plain = _replay(ordinary, settings, impl, codebook)
            attacked = _replay(adversarial, settings, impl, codebook)
        rows.append(
            {
                "account_share": share,
                "ordinary_events_per_second": plain["events_per_second"],
                "adversarial_events_per_second": attacked["events_per_second"],
                "throughput_ratio": round(attacked["events_per_second"] / max(plain["events_per_second"], 1e-9), 3),
                "ordinary_events": plain["events"],
                "adversarial_events": attacked["events"],
                **_compare(plain, attacked),
                "_plain": plain,
            }
        )
    # The cap against no cap on ordinary traffic alone: what the cap costs the ordinary accounts.
    if len(rows) > 1:
        first, last = rows[0]["_plain"], rows[-1]["_plain"]
        for row in rows[1:]:
            row["ordinary_vs_uncapped"] = {k: v for k, v in _compare(first, row["_plain"]).items() if k != "ordinary_accounts"}
    for row in rows:
        row.pop("_plain")
    return {"events": events, "dim": dim, "seed": seed, "backend": backend, "rows": rows}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000, help="ordinary requests (the adversary adds as many)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--backend", default="cpu")
    parser.add_argument("--share", type=float, action="append", help="account shares to run (default: 1.0 and the setting)")
    args = parser.parse_args(argv)
    report = run_adversarial(args.events, args.dim, args.seed, args.backend, tuple(args.share) if args.share else None)
    print(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
