"""Timing links: accounts switched on and off together, judged against the stream's own rhythm."""

from __future__ import annotations

import numpy as np

from streamguard.detectors.timing import NO_BOUNDARY, SessionTiming, push_ring, segment_pairs

MINUTE = 60_000
HOUR = 60 * MINUTE


def _stream(rng: np.random.Generator, sessions: dict[int, list[tuple[int, int]]], per_session: int = 12):
    """Requests of each slot spread over its sessions, as one event-time-ordered stream."""
    slots, ts = [], []
    for slot, windows in sessions.items():
        for a, z in windows:
            t = np.sort(rng.integers(a, z, per_session))
            t[0], t[-1] = a, z  # the session's first and last request
            slots.append(np.full(per_session, slot)), ts.append(t)
    slots_a, ts_a = np.concatenate(slots), np.concatenate(ts)
    order = np.argsort(ts_a, kind="stable")
    return slots_a[order].astype(np.int64), ts_a[order].astype(np.int64)


def _human_sessions(rng: np.random.Generator, n: int, busy: tuple[int, int]) -> list[tuple[int, int]]:
    """Sessions at random minutes of the busy hours (one time zone's day), 10-40 minutes long."""
    starts = np.sort(rng.integers(busy[0], busy[1], n))
    return [(int(s), int(s + rng.integers(10, 40) * MINUTE)) for s in starts]


def _observe(timing: SessionTiming, slots: np.ndarray, ts: np.ndarray, batch: int = 500) -> None:
    for i in range(0, slots.size, batch):
        timing.observe(slots[i : i + batch], ts[i : i + batch])


def test_orchestrated_accounts_link_and_one_time_zone_does_not() -> None:
    rng = np.random.default_rng(3)
    # 300 users of one time zone: 6 sessions each, all within the same 8 busy hours.
    sessions = {slot: _human_sessions(rng, 6, (HOUR, 9 * HOUR)) for slot in range(300)}
    # 10 accounts of one orchestrator: the same 6 windows, each start and stop within a minute.
    windows = [(int(a), int(a + rng.integers(40, 90) * MINUTE)) for a in np.arange(6) * 80 * MINUTE + HOUR]
    for slot in range(300, 310):
        sessions[slot] = [(a + int(rng.integers(0, MINUTE)), z - int(rng.integers(0, MINUTE))) for a, z in windows]
    slots, ts = _stream(rng, sessions)
    timing = SessionTiming(capacity=512)
    _observe(timing, slots, ts)
    a, b, log_p = timing.pairs(np.arange(310), int(ts.max()) + HOUR)
    campaign = set(range(300, 310))
    linked = {(int(x), int(y)) for x, y in zip(a, b)}
    inside = {p for p in linked if p[0] in campaign and p[1] in campaign}
    assert len(inside) >= 35  # of 45 pairs (a window where two members both sent nothing is missed)
    assert linked == inside  # no user of the time zone linked, to anyone
    assert (log_p < np.log10(0.01 / 310**2)).all()


def test_a_burst_of_starts_alone_is_no_link() -> None:
    """Accounts that all start with the file (a replay's first request) or once together share too little."""
    rng = np.random.default_rng(5)
    sessions = {slot: [(0, 20 * MINUTE)] + _human_sessions(rng, 5, (HOUR, 9 * HOUR)) for slot in range(200)}
    slots, ts = _stream(rng, sessions)
    timing = SessionTiming(capacity=256)
    _observe(timing, slots, ts)
    a, _, _ = timing.pairs(np.arange(200), int(ts.max()) + HOUR)
    assert a.size == 0


def test_boundaries_are_recorded_once_whatever_the_batches() -> None:
    rng = np.random.default_rng(7)
    sessions = {slot: _human_sessions(rng, 4, (0, 6 * HOUR)) for slot in range(20)}
    slots, ts = _stream(rng, sessions)
    whole, cut = SessionTiming(capacity=32), SessionTiming(capacity=32)
    whole.observe(slots, ts)
    _observe(cut, slots, ts, batch=7)
    np.testing.assert_array_equal(np.sort(whole.bounds, axis=1), np.sort(cut.bounds, axis=1))
    np.testing.assert_array_equal(whole.last_ts, cut.last_ts)
    # Overlapping sessions of one slot merge, so at most 2 boundaries per gap between 4 sessions.
    recorded = (whole.bounds != NO_BOUNDARY).sum(axis=1)
    assert recorded.max() <= 6 and recorded.sum() > 0
    assert (recorded % 2 == 0).all()  # a start always comes with the end before it


def test_state_round_trips_and_reset_forgets() -> None:
    rng = np.random.default_rng(9)
    slots, ts = _stream(rng, {slot: _human_sessions(rng, 5, (0, 8 * HOUR)) for slot in range(10)})
    timing = SessionTiming(capacity=16)
    timing.observe(slots, ts)
    copy = SessionTiming(capacity=16)
    copy.load_state_dict(timing.state_dict())
    np.testing.assert_array_equal(copy.bounds, timing.bounds)
    timing.reset(np.array([3]))
    assert (timing.bounds[3] == NO_BOUNDARY).all() and timing.last_ts[3] == NO_BOUNDARY


def test_push_ring_keeps_the_latest_values_per_slot() -> None:
    table = np.zeros((3, 4), dtype=np.int64)
    nxt = np.zeros(3, dtype=np.uint8)
    push_ring(table, nxt, np.array([0, 1, 0, 0]), np.array([1, 10, 2, 3]))
    push_ring(table, nxt, np.array([0] * 3), np.array([4, 5, 6]))
    assert sorted(table[0].tolist()) == [3, 4, 5, 6]
    assert sorted(table[1].tolist()) == [0, 0, 0, 10]
    assert nxt.tolist() == [2, 1, 0]


def test_segment_pairs_lists_every_pair_within_each_segment() -> None:
    members = np.array([5, 6, 7, 8, 9, 10])
    a, b = segment_pairs(members, np.array([0, 3, 4]), np.array([3, 1, 2]))
    assert sorted(zip(a.tolist(), b.tolist())) == [(5, 6), (5, 7), (6, 7), (9, 10)]
