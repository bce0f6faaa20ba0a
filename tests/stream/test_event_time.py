"""Event time no record can hijack: the guard's window, its robust watermark, and the pipeline it feeds.

Unit tests drive :class:`EventTimeGuard` with synthetic requests (times and
accounts only); the property test checks that its decisions depend on the
requests and their order alone (not batching, not a snapshot in between); the
pipeline tests check the issue's acceptance bar on simulated traffic: one
poisoned record changes no alert and is dead-lettered with its reason.
"""

from __future__ import annotations

import pickle
from unittest import mock

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.config import EventTimeConfig
from streamguard.schema import RequestBatch, infer_dim, validate_table
from streamguard.stream.event_time import HOLD_LIMIT, REASON_AHEAD, REASON_BEHIND, REASON_RANGE, EventTimeGuard, _Run
from streamguard.stream.pipeline import Pipeline
from streamguard.stream.replay import event_time_order

T0 = 1_767_225_600_000  # 2026-01-01
MIN = 60_000
HOUR = 3_600_000
DAY = 24 * HOUR
CFG = EventTimeConfig()


def requests(ts, accounts) -> RequestBatch:
    """Requests with the given times and accounts (embeddings do not matter to the guard)."""
    ts = np.asarray(ts, dtype=np.int64)
    n = ts.size
    ids = np.array([f"r{i}" for i in range(n)], dtype=object)
    emb = np.zeros((n, 2), np.float32)
    emb[:, 0] = 1.0
    return RequestBatch(ids, ts, np.asarray(accounts, dtype=object), np.full(n, None, object), emb, np.arange(n, dtype=np.int64))


def clean_stream(n: int = 2000, accounts: int = 50, seed: int = 0) -> RequestBatch:
    """Mostly ordered traffic: a request every few seconds, some a little late."""
    rng = np.random.default_rng(seed)
    ts = T0 + np.cumsum(rng.integers(0, 5_000, n)) - rng.integers(0, 20_000, n) * (rng.random(n) < 0.1)
    return requests(ts, [f"a{k}" for k in rng.integers(0, accounts, n)])


def spliced(batch: RequestBatch, at: int, ts: int, account: str) -> RequestBatch:
    """The times and accounts of ``batch`` with one request inserted before row ``at`` (ids follow positions)."""
    times, accounts = batch.ts.tolist(), batch.account_ids.tolist()
    times.insert(at, ts)
    accounts.insert(at, account)
    return requests(times, accounts)


def admit_all(guard: EventTimeGuard, batch: RequestBatch, cuts=()):
    ids, marks, rejected = [], [], []
    start = 0
    for cut in list(cuts) + [len(batch)]:
        out = guard.admit(batch.take(np.arange(start, cut)))
        ids += out.batch.request_ids.tolist()
        marks += out.watermarks.tolist()
        rejected += list(zip(out.rejected.rows.request_ids.tolist(), out.rejected.reasons))
        start = cut
    out = guard.release()
    ids += out.batch.request_ids.tolist()
    marks += out.watermarks.tolist()
    rejected += list(zip(out.rejected.rows.request_ids.tolist(), out.rejected.reasons))
    return ids, marks, rejected


# ------------------------------------------------------------------ the guard


def test_a_clean_stream_is_admitted_whole_and_its_watermark_is_the_running_maximum() -> None:
    batch = clean_stream()
    ids, marks, rejected = admit_all(EventTimeGuard(CFG), batch)
    assert rejected == []
    assert ids == batch.request_ids.tolist()  # fed in arrival order
    assert marks == np.maximum.accumulate(batch.ts).tolist()


@pytest.mark.parametrize("ts", [0, -1, -(2**63), 2**62, 2**63 - 1, 946_684_799_999, 4_102_444_800_001])
def test_times_outside_the_sane_range_are_rejected_whatever_the_watermark(ts: int) -> None:
    batch = clean_stream(300)
    poisoned = spliced(batch, 150, ts, "fresh")
    ids, marks, rejected = admit_all(EventTimeGuard(CFG), poisoned)
    assert [(rid, reason.split(":")[0]) for rid, reason in rejected] == [("r150", REASON_RANGE)]
    assert marks == admit_all(EventTimeGuard(CFG), batch)[1]


def test_a_request_too_far_behind_or_ahead_is_rejected_and_moves_nothing() -> None:
    batch = clean_stream(400)
    base = admit_all(EventTimeGuard(CFG), batch)[1]
    now = int(batch.ts[199])
    for ts, reason in [(now - 8 * DAY, REASON_BEHIND), (now + 2 * DAY, REASON_AHEAD), (now + 400 * DAY, REASON_AHEAD)]:
        poisoned = spliced(batch, 200, ts, "x")
        ids, marks, rejected = admit_all(EventTimeGuard(CFG), poisoned)
        assert [(rid, why.split(":")[0]) for rid, why in rejected] == [("r200", reason)]
        assert marks == base
    # Inside the window it is admitted (a late request is ordinary), without moving the watermark.
    late = spliced(batch, 200, now - 6 * DAY, "x")
    ids, marks, rejected = admit_all(EventTimeGuard(CFG), late)
    assert rejected == [] and "r200" in ids and marks[:200] + marks[201:] == base


def test_a_few_accounts_stamping_ahead_cannot_drag_the_watermark() -> None:
    """Two accounts stamp ever later times, 20 s to 20 h ahead, inside the window: at every request the
    watermark stays within step_ms of the others' latest time; what no one confirms waits, then is fed
    once the others' time gets there (or at the end, without moving the watermark)."""
    batch = clean_stream(3000)
    rng = np.random.default_rng(1)
    ts, accounts = batch.ts.tolist(), batch.account_ids.tolist()
    for k, i in enumerate(sorted(rng.choice(np.arange(100, 3000), 60, replace=False).tolist(), reverse=True)):
        ts.insert(i, int(batch.ts[i]) + (60 - k) ** 2 * 20 * HOUR // 3600)
        accounts.insert(i, "walker-a" if k % 2 else "walker-b")
    stream = requests(ts, accounts)
    walker = np.char.startswith(stream.account_ids.astype(str), "walker")
    honest_latest = np.maximum.accumulate(np.where(walker, 0, stream.ts))
    guard, fed, lead = EventTimeGuard(CFG), [], []
    for i in range(len(stream)):  # one request at a time: the watermark as each one arrives
        fed += guard.admit(stream.take(np.array([i]))).batch.request_ids.tolist()
        lead.append((guard.watermark or 0) - int(honest_latest[i]))
    fed += guard.release().batch.request_ids.tolist()
    assert sorted(fed, key=lambda r: int(r[1:])) == stream.request_ids.tolist()  # all fed: all inside the window
    assert max(lead) <= CFG.step_ms
    assert max(lead) > 0  # the walkers a few minutes ahead did move it, that far
    assert fed != stream.request_ids.tolist()  # those far ahead waited for the others' time


def test_a_gap_longer_than_the_window_is_crossed_once_other_accounts_agree() -> None:
    before = clean_stream(500, seed=2)
    after = clean_stream(500, seed=3)
    gap = int(before.ts.max()) + 3 * DAY - int(after.ts.min())
    both = requests(np.r_[before.ts, after.ts + gap], np.r_[before.account_ids, after.account_ids])
    guard = EventTimeGuard(CFG)
    first = guard.admit(both.take(np.arange(501)))
    assert first.batch.request_ids.tolist() == [f"r{i}" for i in range(500)]  # the first after the gap waits
    ids, marks, rejected = admit_all(guard, both.take(np.arange(501, 1000)))
    assert rejected == []
    assert ids == [f"r{i}" for i in range(500, 1000)]
    assert marks == np.maximum.accumulate(np.r_[before.ts, after.ts + gap]).tolist()[500:]


def test_a_rejected_request_confirms_nothing() -> None:
    """q, 10 min ahead, is confirmed by the next request (a step); p, 20 min ahead, is followed by a
    request of another account stamped 2**62 (rejected: it confirms nothing), then by ordinary ones,
    which contradict p: p waits until their time reaches it, and the watermark never leads them by
    more than step_ms."""
    batch = clean_stream(1200)
    now = int(batch.ts[199])
    stream = spliced(spliced(spliced(batch, 200, 2**62, "p2"), 200, now + 20 * MIN, "p"), 199, now + 10 * MIN, "q")
    ids, marks, rejected = admit_all(EventTimeGuard(CFG), stream)
    assert [(rid, why.split(":")[0]) for rid, why in rejected] == [("r202", REASON_RANGE)]
    honest = np.maximum.accumulate(np.where(np.isin(stream.account_ids, ["p", "p2", "q"]), 0, stream.ts))
    position = {rid: i for i, rid in enumerate(stream.request_ids.tolist())}
    assert ids.index("r201") > ids.index("r203")  # p was not fed in its turn
    # When p is fed, the watermark has reached it on the others' word.
    assert marks[ids.index("r201")] >= int(stream.ts[position["r201"]])
    assert max(m - honest[position[r]] for r, m in zip(ids, marks) if r not in ("r199", "r201")) <= CFG.step_ms
    with mock.patch.object(_Run, "_fast", lambda self, k: 0):
        assert admit_all(EventTimeGuard(CFG), stream) == (ids, marks, rejected)


def test_one_wrong_first_record_is_outvoted_at_the_start() -> None:
    batch = clean_stream(300)
    poisoned = spliced(batch, 0, T0 + 10 * 365 * DAY, "early-bird")
    ids, marks, rejected = admit_all(EventTimeGuard(CFG), poisoned)
    assert [(rid, why.split(":")[0]) for rid, why in rejected] == [("r0", REASON_AHEAD)]
    assert ids == [f"r{i}" for i in range(1, 301)]
    assert marks == np.maximum.accumulate(batch.ts).tolist()


def test_a_partition_of_too_few_accounts_is_fed_at_its_end_or_after_a_bound() -> None:
    guard = EventTimeGuard(CFG)
    two = requests(T0 + np.arange(10) * MIN, ["a", "b"] * 5)  # its first time needs more accounts to confirm it
    assert len(guard.admit(two).batch) == 0 and guard.holding == 10
    out = guard.release()
    assert out.batch.request_ids.tolist() == two.request_ids.tolist() and guard.holding == 0
    solo = requests(T0 + np.arange(HOLD_LIMIT + 5) * 1000, ["solo"] * (HOLD_LIMIT + 5))
    guard = EventTimeGuard(CFG)
    assert guard.admit(solo).batch.request_ids.tolist() == [f"r{i}" for i in range(5)]  # one account confirms itself
    assert guard.release().batch.request_ids.tolist() == [f"r{i}" for i in range(5, HOLD_LIMIT + 5)]


# Poisons drawn into an otherwise clean stream: (time offset from the request they follow, account).
poison = st.tuples(
    st.integers(0, 299),
    st.sampled_from([-(2**63), -1, 0, 2**62, -9 * DAY, -3 * DAY, 20 * MIN, 3 * HOUR, 23 * HOUR, 2 * DAY, 40 * DAY]),
    st.sampled_from(["p1", "p2", "p3", "a1"]),
)


# Quiet spells: (from row, length); the stream resumes that much later.
gap = st.tuples(st.integers(1, 299), st.sampled_from([10 * MIN, 20 * MIN, 3 * HOUR, 2 * DAY]))


@settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(
    st.lists(poison, max_size=8),
    st.lists(gap, max_size=3),
    st.lists(st.integers(0, 330), max_size=6),
    st.integers(0, 3),
    st.integers(0, 330),
)
def test_decisions_depend_on_the_requests_alone_not_on_batches_or_restarts(poisons, gaps, cuts, seed, restart_at) -> None:
    """The vectorised path decides exactly as the request-by-request rule, however the stream is cut."""
    batch = clean_stream(300, accounts=8, seed=seed)
    shift = np.zeros(len(batch), dtype=np.int64)
    for start, length in gaps:
        shift[start:] += length
    ts, accounts = (batch.ts + shift).tolist(), batch.account_ids.tolist()
    for position, offset, account in sorted(poisons, reverse=True):
        absolute = offset in (-(2**63), -1, 0, 2**62)
        ts.insert(position, offset if absolute else ts[position] + offset)
        accounts.insert(position, account)
    stream = requests(ts, accounts)
    with mock.patch.object(_Run, "_fast", lambda self, k: 0):  # the rule alone, one request at a time
        reference = admit_all(EventTimeGuard(CFG), stream)
    assert sorted(reference[0] + [rid for rid, _ in reference[2]]) == sorted(stream.request_ids.tolist())
    assert admit_all(EventTimeGuard(CFG), stream) == reference

    cuts = sorted({min(c, len(stream)) for c in cuts})
    assert admit_all(EventTimeGuard(CFG), stream, cuts) == reference

    restart_at = min(restart_at, len(stream))
    guard = EventTimeGuard(CFG)
    first = guard.admit(stream.take(np.arange(restart_at)))
    restored = EventTimeGuard(CFG)
    restored.load_state_dict(pickle.loads(pickle.dumps(guard.state_dict())))
    rest = admit_all(restored, stream.take(np.arange(restart_at, len(stream))))
    assert first.batch.request_ids.tolist() + rest[0] == reference[0]
    assert first.watermarks.tolist() + rest[1] == reference[1]


# ------------------------------------------------------------ the pipeline


@pytest.fixture(scope="module")
def clean(small_traffic):
    table = event_time_order(small_traffic.table)
    valid, dead = validate_table(table, infer_dim(table))
    assert dead == []
    return valid


def pipeline_alerts(settings, batch: RequestBatch, step: int = 2048):
    pipeline = Pipeline(settings, NumpyBackend())
    alerts, rejected = [], []
    for start in range(0, len(batch), step):
        alerts += pipeline.process(batch.take(np.arange(start, min(start + step, len(batch)))))
        rejected += list(zip(pipeline.rejected.rows.request_ids.tolist(), pipeline.rejected.reasons))
    alerts += pipeline.finish()
    rejected += list(zip(pipeline.rejected.rows.request_ids.tolist(), pipeline.rejected.reasons))
    return sorted(a.to_json() for a in alerts), rejected, pipeline


def with_rows(batch: RequestBatch, rows: list[tuple[int, int, str]]) -> RequestBatch:
    """``batch`` with requests inserted: (before row, ts, account), a valid embedding each."""
    out, start = [], 0
    for k, (at, ts, account) in enumerate(sorted(rows)):
        out.append(batch.take(np.arange(start, at)))
        extra = batch.take(np.array([at]))
        extra.request_ids = np.array([f"poison-{k}"], dtype=object)
        extra.ts = np.array([ts], dtype=np.int64)
        extra.account_ids = np.array([account], dtype=object)
        out.append(extra)
        start = at
    out.append(batch.take(np.arange(start, len(batch))))
    return RequestBatch.concat(out, batch.dim)


@pytest.fixture(scope="module")
def reference(small_settings, clean):
    alerts, rejected, _ = pipeline_alerts(small_settings, clean)
    assert alerts, "the small traffic must raise alerts, or these tests prove nothing"
    assert rejected == []
    return alerts


def test_one_poisoned_record_changes_no_alert(small_settings, clean, reference) -> None:
    """The issue's case: ts = 2**62 from a fresh account once froze its partition's alerts."""
    poisoned = with_rows(clean, [(len(clean) // 3, 2**62, "fresh-account")])
    alerts, rejected, pipeline = pipeline_alerts(small_settings, poisoned)
    assert alerts == reference
    assert [(rid, why.split(":")[0]) for rid, why in rejected] == [("poison-0", REASON_RANGE)]
    assert pipeline.stats.event_time_rejected == 1


def test_every_kind_of_poisoned_time_is_dead_lettered_and_changes_no_alert(small_settings, clean, reference) -> None:
    n, now = len(clean), lambda i: int(clean.ts[i])
    rows = [
        (0, now(0) + 5 * 365 * DAY, "first-ever"),  # before the partition even started
        (n // 5, 0, "zero"),
        (n // 4, -1, "minus-one"),
        (n // 3, -(2**63), "int64-min"),
        (n // 2, now(n // 2) + 30 * DAY, "future"),
        (2 * n // 3, now(2 * n // 3) - 30 * DAY, "past"),
    ]
    alerts, rejected, _ = pipeline_alerts(small_settings, with_rows(clean, rows), step=1000)
    assert alerts == reference
    assert sorted((rid, why.split(":")[0]) for rid, why in rejected) == [
        ("poison-0", REASON_AHEAD),
        ("poison-1", REASON_RANGE),
        ("poison-2", REASON_RANGE),
        ("poison-3", REASON_RANGE),
        ("poison-4", REASON_AHEAD),
        ("poison-5", REASON_BEHIND),
    ]


def test_a_snapshot_written_before_the_guard_restores_with_its_watermark(small_settings, clean) -> None:
    """Older snapshots have no event-time state: their watermark (a running maximum) carries on."""
    first = Pipeline(small_settings, NumpyBackend())
    first.process(clean.take(np.arange(2500)))
    first.finish()  # nothing waits now, as nothing ever waited before the guard
    state = pickle.loads(pickle.dumps(first.snapshot()))
    old = {k: v for k, v in state.items() if k not in ("event_time", "row_watermarks")}
    new, older = Pipeline(small_settings, NumpyBackend()), Pipeline(small_settings, NumpyBackend())
    new.restore(state)
    older.restore(old)
    assert older.event_time.watermark == first.event_time.watermark == int(clean.ts[:2500].max())
    rest = clean.take(np.arange(2500, 6000))
    assert [a.to_json() for a in older.process(rest) + older.finish()] == [a.to_json() for a in new.process(rest) + new.finish()]
    assert older.stats.requests == new.stats.requests == 6000
