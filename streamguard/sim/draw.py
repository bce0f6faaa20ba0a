"""What the behaviours draw with: event times (diurnal, sessions, windows) and content (prompts, retries, sweeps).

Shared by ``behaviours.py``, ``evasion.py`` and ``traps.py``.
"""

from __future__ import annotations

import numpy as np

from streamguard.sim.accounts import TrafficBuilder

MS_PER_S = 1_000
MS_PER_MIN = 60_000
MS_PER_H = 3_600_000
MS_PER_DAY = 86_400_000
_DIURNAL_BIN_MS = 10 * MS_PER_MIN

# Time zones of human users: (low, high) UTC offset in hours, and weight.
_REGIONS = ((-8.0, -5.0, 0.4), (0.0, 2.0, 0.3), (5.5, 9.0, 0.3))



# ---------------------------------------------------------------------------
# time helpers


def _human_clock(rng: np.random.Generator) -> tuple[float, float]:
    """Peak activity hour (UTC) and diurnal amplitude of a human account."""
    region = rng.choice(len(_REGIONS), p=[r[2] for r in _REGIONS])
    tz = rng.uniform(_REGIONS[region][0], _REGIONS[region][1])
    peak_local = rng.uniform(11.0, 17.0)
    return float((peak_local - tz) % 24.0), float(rng.uniform(0.5, 0.9))


def diurnal_times(
    rng: np.random.Generator, n: int, t0: int, t1: int, peak_hour: float, amplitude: float
) -> np.ndarray:
    """Sorted times from a rate ``1 + amplitude * cos(2 pi (hour - peak) / 24)``.

    Parameters
    ----------
    n : int
        Number of times.
    t0, t1 : int
        Window ``[t0, t1)`` in epoch ms.
    peak_hour : float
        UTC hour of the highest rate.
    amplitude : float
        0 for a flat rate, up to <1 for strongly diurnal humans.

    Returns
    -------
    (n,) int64
    """
    if t1 - t0 <= _DIURNAL_BIN_MS:
        return np.sort(rng.integers(t0, max(t0 + 1, t1), size=n)).astype(np.int64)
    edges = np.arange(t0, t1, _DIURNAL_BIN_MS, dtype=np.int64)
    widths = np.minimum(_DIURNAL_BIN_MS, t1 - edges)
    hours = ((edges + widths / 2) / MS_PER_H) % 24.0
    rate = (1.0 + amplitude * np.cos(2 * np.pi * (hours - peak_hour) / 24.0)) * widths
    cdf = np.cumsum(rate)
    b = np.searchsorted(cdf, rng.random(n) * cdf[-1], side="right")
    b = np.minimum(b, edges.shape[0] - 1)
    return np.sort(edges[b] + (rng.random(n) * widths[b]).astype(np.int64))


def _sessions(
    rng: np.random.Generator, n: int, starts: np.ndarray, mean_gap_ms: float, t1: int
) -> np.ndarray:
    """Times of ``n`` requests spread over sessions beginning at ``starts``.

    Requests are assigned to sessions at random; inside a session they follow
    one another with exponential gaps. A session that would run past ``t1``
    is moved earlier rather than piled up at the end. Returns (n,) int64.
    """
    starts = np.sort(starts)
    which = np.sort(rng.integers(0, starts.shape[0], size=n))
    gaps = rng.exponential(mean_gap_ms, size=n)
    first = np.ones(n, dtype=bool)
    first[1:] = which[1:] != which[:-1]
    gaps[first] = 0.0
    cs = np.cumsum(gaps)
    head = np.maximum.accumulate(np.where(first, np.arange(n), 0))
    offset = (cs - cs[head]).astype(np.int64)
    length = np.zeros(starts.shape[0], dtype=np.int64)
    np.maximum.at(length, which, offset)
    overflow = np.maximum(0, starts + length - (t1 - 1))
    return np.sort(starts[which] + offset - overflow[which])


def _window(rng: np.random.Generator, t0: int, t1: int, duration_ms: float) -> tuple[int, int]:
    """A window of ``duration_ms`` (clamped to the period) placed at random."""
    dur = int(min(duration_ms, t1 - t0))
    a = int(rng.integers(t0, t1 - dur + 1))
    return a, a + dur


def worker_shards(rng: np.random.Generator, items: int, workers: int, lo: int, hi: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """How ``workers`` accounts run one suite of ``items`` in the burst ``[lo, hi)``: (item indices, times) each.

    Most runs split the suite into one shard per worker, the others run all of it on every worker;
    each worker starts with the burst, within a minute, and paces its share over the rest of it.
    Workers left without an item are left out.
    """
    sharded = rng.random() < 0.6
    shards = np.array_split(np.arange(items), workers) if sharded else [np.arange(items)] * workers
    runs = []
    for idx in shards:
        k = idx.shape[0]
        if k == 0:
            continue
        start = lo + int(rng.uniform(0, 60) * MS_PER_S)
        step = max(1.0, (hi - start) / k)
        runs.append((idx, (start + np.arange(k) * step + rng.random(k) * step).astype(np.int64)))
    return runs


def daily_starts(rng: np.random.Generator, days: np.ndarray, t0: int, t1: int) -> np.ndarray:
    """Session starts of one user online at the same hour each day (``days``: that hour, day by day):
    25 minutes of jitter, three days in four, at least one."""
    starts = days + rng.normal(0, 25 * MS_PER_MIN, size=days.shape[0]).astype(np.int64)
    starts = starts[(starts >= t0) & (starts < t1)]
    if starts.shape[0] == 0:
        starts = np.array([t0], np.int64)
    active = rng.random(starts.shape[0]) < 0.75
    active[rng.integers(starts.shape[0])] = True
    return starts[active]


# ---------------------------------------------------------------------------
# content helpers


def _fresh(
    b: TrafficBuilder, sub: np.ndarray, p_famous: float = 0.0, p_para: float = 0.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Content and text ids for a sequence of prompts on ``sub``.

    A share ``p_famous`` of prompts is replaced by globally famous prompts
    (verbatim, shared with other accounts); a share ``p_para`` re-asks the
    previous question in new words (same content id and subtopic, new text).

    Returns
    -------
    sub : (n,) int32, content : (n,) int64, text : (n,) int64
    """
    rng, w = b.rng, b.world
    n = sub.shape[0]
    sub = sub.astype(np.int32).copy()
    content = b.catalog.new_content(n)
    text = b.catalog.new_text(n)
    f = np.zeros(n, dtype=bool)
    if p_famous > 0 and n:
        f = rng.random(n) < p_famous
        idx = rng.choice(w.famous_pop.shape[0], size=int(f.sum()), p=w.famous_pop)
        sub[f] = w.famous_subtopic[idx]
        content[f] = w.famous_content[idx]
        text[f] = w.famous_text[idx]
    if p_para > 0 and n > 1:
        # A famous prompt keeps its verbatim text, so it cannot be a paraphrase.
        para = (rng.random(n) < p_para) & ~f
        para[0] = False
        src = np.maximum.accumulate(np.where(para, 0, np.arange(n)))
        content = content[src]
        sub = sub[src]
    return sub, content, text


def _with_retries(
    b: TrafficBuilder,
    n_retry: int,
    ts: np.ndarray,
    sub: np.ndarray,
    style: np.ndarray,
    context: np.ndarray,
    content: np.ndarray,
    text: np.ndarray,
) -> tuple[np.ndarray, ...]:
    """Append ``n_retry`` verbatim resends of random earlier rows, 1-45 s later."""
    if n_retry <= 0 or ts.shape[0] == 0:
        return ts, sub, style, context, content, text
    src = b.rng.integers(0, ts.shape[0], size=n_retry)
    delay = b.rng.integers(1 * MS_PER_S, 45 * MS_PER_S, size=n_retry)
    cat = np.concatenate
    return (
        cat([ts, ts[src] + delay]),
        cat([sub, sub[src]]),
        cat([style, style[src]]),
        cat([context, context[src]]),
        cat([content, content[src]]),
        cat([text, text[src]]),
    )


def _none(n: int) -> np.ndarray:
    return np.full(n, -1, np.int32)


def _popular_subset(b: TrafficBuilder, k: int, concentration: float) -> tuple[np.ndarray, np.ndarray]:
    """``k`` distinct subtopics chosen by population popularity, with personal weights."""
    k = min(k, b.world.n_subtopics)
    subs = b.rng.choice(b.world.n_subtopics, size=k, replace=False, p=b.world.subtopic_pop)
    return subs.astype(np.int32), b.rng.dirichlet(np.full(k, concentration))


def _sweep(rng: np.random.Generator, cells: np.ndarray, n: int) -> np.ndarray:
    """Subtopics of a sweep: even over ``cells``, rare ones included.

    Most sweepers enumerate (concatenated random permutations: every cell
    once before any twice); the others sample uniformly at random.
    """
    if rng.random() < 0.6:
        reps = -(-n // cells.shape[0])
        return np.concatenate([rng.permutation(cells) for _ in range(reps)])[:n].astype(np.int32)
    return rng.choice(cells, size=n).astype(np.int32)


def _member_slices(rng: np.random.Generator, n_subtopics: int, n_members: int) -> list[np.ndarray]:
    """A random partition of the subtopics into one slice per campaign member.

    With more members than subtopics, members take one subtopic each in
    turn, so several members share a subtopic and no slice is empty.
    """
    perm = rng.permutation(n_subtopics).astype(np.int32)
    if n_members <= n_subtopics:
        return np.array_split(perm, n_members)
    return [perm[i % n_subtopics : i % n_subtopics + 1] for i in range(n_members)]


def _log_skewed(rng: np.random.Generator, lo: float, hi: float, power: float) -> int:
    """An integer in [lo, hi], log-uniform bent towards ``lo`` by ``power`` > 1."""
    return int(round(lo * (hi / lo) ** (rng.random() ** power)))
