"""Timing links: accounts switched on and off together by one orchestrator.

A campaign that shares no template, no prompt and no attribute can still be
driven by one scheduler: its accounts start work in the same minute and stop
in the same minute, window after window. That is what this module looks for,
in bounded state and without comparing every account with every other.

**The sketch.** Each account keeps the times of its latest ``boundaries``
session boundaries: a *start* is a request after at least ``gap`` of silence
(the account's first request is not one: in a replay every account "starts"
with the file), an *end* is the last request before such a silence (an
account silent for ``gap`` at a linking pass has ended its session). Times
are kept at half a bucket's resolution, 8 B each.

**The candidates.** Boundaries fall into buckets of ``bucket`` milliseconds
on two grids offset by half a bucket, so two boundaries less than half a
bucket apart share a bucket on at least one grid. Only accounts that share a
bucket are ever compared: the work is the sum over buckets of the squared
number of accounts in them, capped at ``max_pairs`` (the buckets most above
their neighbourhood first).

**Against chance, in the stream itself.** Accounts of one time zone share a
daily rhythm, so boundaries bunch at busy hours; that is no link. The rate at
which any account has a boundary in a bucket is read from the bucket's
neighbourhood (``baseline`` either side, the bucket itself left out, so a
burst of accounts starting together does not hide itself). If account ``b``
placed its boundaries like the population does, the number that land in
``a``'s buckets would be Poisson with mean
``lambda = sum over a's buckets of s_b * rate(bucket) / S`` (``s_b``: b's
boundaries of that kind, ``S``: all boundaries of that kind). A pair is
linked when its shared boundaries are beyond chance for every pair of the
pass together: the Poisson tail at most ``false_links`` / (number of pairs).
The rate is a count of this stream, not a constant of a world; ``gap`` and
``bucket`` are time scales of schedulers and people (a pause for lunch is a
session gap, a scheduler starts its workers within a minute), not of
any embedding.
"""

from __future__ import annotations

import math

import numpy as np

from streamguard.detectors.state import Stateful

NO_BOUNDARY = np.iinfo(np.int64).min
"""An empty slot of the ring (and a ``last_ts`` of an account never seen)."""


def push_ring(table: np.ndarray, nxt: np.ndarray, slots: np.ndarray, values: np.ndarray) -> None:
    """Append ``values`` to the per-slot rings ``table[slot]`` (``nxt``: next position), in order.

    ``slots`` and ``values`` are (n,) in the order the values arrived; a slot given more values
    than its ring holds keeps the latest.
    """
    if slots.size == 0:
        return
    width = table.shape[1]
    order = np.argsort(slots, kind="stable")
    slots, values = slots[order], values[order]
    starts = np.r_[0, np.flatnonzero(np.diff(slots)) + 1]
    lengths = np.diff(np.r_[starts, slots.size])
    rank = np.arange(slots.size) - np.repeat(starts, lengths)
    count = np.repeat(lengths, lengths)
    keep = rank >= count - width
    slots, values, rank = slots[keep], values[keep], rank[keep] - np.maximum(count[keep] - width, 0)
    position = (nxt[slots].astype(np.int64) + rank) % width
    table[slots, position] = values
    unique_slots, added = np.unique(slots, return_counts=True)
    nxt[unique_slots] = ((nxt[unique_slots].astype(np.int64) + added) % width).astype(nxt.dtype)


def segment_pairs(members: np.ndarray, starts: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (i < j in position) within each segment ``members[start : start + length]``."""
    if (lengths * (lengths - 1)).sum() == 0:
        return np.empty(0, np.int64), np.empty(0, np.int64)
    # Every element's position, and how many later elements of its segment it pairs with.
    positions = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(starts, lengths)
    later = np.repeat(starts + lengths, lengths) - positions - 1
    first = np.repeat(positions, later)
    offset = np.arange(first.size) - np.repeat(np.cumsum(later) - later, later)
    return members[first], members[first + 1 + offset]


class SessionTiming(Stateful):
    """Per-account session boundaries and the pairs of accounts that share them beyond chance.

    Parameters
    ----------
    gap_ms : silence that ends a session
    bucket_ms : width of a boundary bucket (two accounts' boundaries within half of it always meet)
    baseline_ms : either side of a bucket, the neighbourhood its chance rate is read from
    boundaries : boundaries remembered per account
    false_links : expected chance links per linking pass, over all pairs together
    max_pairs : pairs compared per linking pass at most
    min_shared : boundaries a pair must share at least, whatever the chance
    capacity : initial number of account slots
    """

    _state_fields = ("capacity", "last_ts", "bounds", "bounds_next")

    def __init__(
        self,
        gap_ms: int = 30 * 60_000,
        bucket_ms: int = 120_000,
        baseline_ms: int = 30 * 60_000,
        boundaries: int = 16,
        false_links: float = 0.01,
        max_pairs: int = 2_000_000,
        min_shared: int = 3,
        capacity: int = 4096,
    ) -> None:
        self.gap_ms = int(gap_ms)
        self.half_ms = max(int(bucket_ms) // 2, 1)
        self.baseline_buckets = max(int(baseline_ms) // (2 * self.half_ms), 1)
        self.false_links = float(false_links)
        self.max_pairs = int(max_pairs)
        self.min_shared = int(min_shared)
        self.capacity = int(capacity)
        self.last_ts = np.full(capacity, NO_BOUNDARY, dtype=np.int64)
        # Boundary codes: (time // half bucket) << 1 | is_end; NO_BOUNDARY where empty.
        self.bounds = np.full((capacity, int(boundaries)), NO_BOUNDARY, dtype=np.int64)
        self.bounds_next = np.zeros(capacity, dtype=np.uint8)

    # ------------------------------------------------------------ state layout

    def resize(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.last_ts = np.concatenate([self.last_ts, np.full(extra, NO_BOUNDARY, np.int64)])
        self.bounds = np.concatenate([self.bounds, np.full((extra, self.bounds.shape[1]), NO_BOUNDARY, np.int64)])
        self.bounds_next = np.concatenate([self.bounds_next, np.zeros(extra, np.uint8)])
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        self.last_ts[slots] = NO_BOUNDARY
        self.bounds[slots] = NO_BOUNDARY
        self.bounds_next[slots] = 0

    def state_bytes_per_account(self) -> int:
        return 8 + 8 * self.bounds.shape[1] + 1

    # ---------------------------------------------------------------- evidence

    def observe(self, slots: np.ndarray, ts: np.ndarray) -> None:
        """Record the session boundaries of one batch (host arrays; any order within the batch)."""
        if slots.size == 0:
            return
        order = np.lexsort((ts, slots))
        s, t = slots[order].astype(np.int64), ts[order].astype(np.int64)
        same = np.r_[False, s[1:] == s[:-1]]
        previous = np.where(same, np.r_[NO_BOUNDARY, t[:-1]], self.last_ts[s])
        # A late request (before the account's latest) opens no session.
        opens = (previous != NO_BOUNDARY) & (t - np.where(previous == NO_BOUNDARY, 0, previous) >= self.gap_ms)
        rows = np.flatnonzero(opens)
        if rows.size:
            ends = (previous[rows] // self.half_ms) << 1 | 1
            begins = (t[rows] // self.half_ms) << 1
            push_ring(self.bounds, self.bounds_next, np.repeat(s[rows], 2), np.stack([ends, begins], axis=1).ravel())
        # An account's latest: the last of its batch rows (sorted by ts within a slot), if later.
        last = np.r_[np.flatnonzero(~same[1:]), s.size - 1]
        np.maximum.at(self.last_ts, s[last], t[last])

    def boundary_codes(self, nodes: np.ndarray, now_ts: int) -> tuple[np.ndarray, np.ndarray]:
        """(node index, code) of every remembered boundary, plus the end of a session silent for ``gap``."""
        codes = self.bounds[nodes]
        index, col = np.nonzero(codes != NO_BOUNDARY)
        last = self.last_ts[nodes]
        quiet = np.flatnonzero((last != NO_BOUNDARY) & (now_ts - last >= self.gap_ms))
        return (
            np.r_[index, quiet].astype(np.int64),
            np.r_[codes[index, col], (last[quiet] // self.half_ms) << 1 | 1].astype(np.int64),
        )

    def pairs(
        self, nodes: np.ndarray, now_ts: int, foreign: tuple[np.ndarray, np.ndarray] | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs of ``nodes`` (slots) linked by shared boundaries: (slot a, slot b, log10 of the chance).

        Each pair is tested on both grids; the smaller tail counts, and the threshold is halved
        for it (two tests per pair). ``foreign``: (ids, (f, b) boundary codes) of accounts of other
        partitions (detectors/remote.py), nodes too: a pair is (local, local), (local, foreign) or
        (foreign, foreign), the foreign end second. Their remembered boundaries only: when their
        latest session ended is not known here.
        """
        empty = (np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0))
        if foreign is not None and len(foreign[0]):
            local_n = nodes.size
            nodes = np.r_[nodes, foreign[0]].astype(np.int64)
        else:
            foreign = None
        if self.false_links <= 0 or nodes.size < 2:
            return empty
        if foreign is None:
            owner, code = self.boundary_codes(nodes, now_ts)
        else:
            owner, code = self.boundary_codes(nodes[:local_n], now_ts)
            f_index, f_col = np.nonzero(foreign[1] != NO_BOUNDARY)
            owner, code = np.r_[owner, local_n + f_index].astype(np.int64), np.r_[code, foreign[1][f_index, f_col]].astype(np.int64)
        if owner.size == 0:
            return empty
        n = nodes.size
        tests = 2.0 * n * (n - 1) / 2.0
        log_alpha = math.log10(self.false_links / tests)
        found = [self._grid_pairs(owner, code, grid, n) for grid in (0, 1)]
        keys = np.concatenate([f[0] for f in found])
        if keys.size == 0:
            return empty
        keys, inverse = np.unique(keys, return_inverse=True)
        log_p = np.zeros(keys.size)
        np.minimum.at(log_p, inverse, np.concatenate([f[1] for f in found]))
        linked = log_p <= log_alpha
        keys, log_p = keys[linked], log_p[linked]
        return nodes[keys // n], nodes[keys % n], log_p

    def _grid_pairs(self, owner: np.ndarray, code: np.ndarray, grid: int, n: int) -> tuple[np.ndarray, np.ndarray]:
        """(pair key lo * n + hi, log10 Poisson tail) of the pairs sharing boundaries on one grid."""
        from scipy.special import gammainc  # noqa: PLC0415 - only when linking (scipy.stats costs seconds to import)

        kind = code & 1
        bucket = ((code >> 1) + grid) >> 1
        # One boundary per (account, bucket, kind): two of one account can share a bucket after a short gap.
        token = np.unique(np.stack([bucket, kind, owner], axis=1), axis=0)
        bucket, kind, owner = token[:, 0], token[:, 1], token[:, 2]
        keys, first, inverse, count = np.unique(
            np.stack([kind, bucket], axis=1), axis=0, return_index=True, return_inverse=True, return_counts=True
        )
        rate = np.zeros(count.size)
        total = np.zeros(2)
        per_node = np.zeros((n, 2))
        np.add.at(per_node, (owner, kind), 1.0)
        w = self.baseline_buckets
        for k in (0, 1):
            rows = np.flatnonzero(keys[:, 0] == k)
            b, c = keys[rows, 1], count[rows].astype(np.float64)
            total[k] = c.sum()
            cum = np.r_[0.0, np.cumsum(c)]
            lo, hi = np.searchsorted(b, b - w, "left"), np.searchsorted(b, b + w, "right")
            # The neighbourhood's boundaries per bucket, the bucket left out; +1 keeps an empty
            # neighbourhood from calling any coincidence impossible.
            rate[rows] = (cum[hi] - cum[lo] - c + 1.0) / (2 * w)
        # Expected boundaries of b in a's buckets if b placed its own like the population: per node a and
        # kind, the summed rate of its buckets over that kind's total.
        token_rate = rate[inverse.ravel()]
        exposure = np.zeros((n, 2))
        np.add.at(exposure, (owner, kind), token_rate / np.maximum(total[kind], 1.0))
        # Candidate pairs: the accounts of each bucket shared by two or more, the most excessive buckets first.
        excess = count - rate
        shared = np.flatnonzero(count >= 2)
        shared = shared[np.argsort(-excess[shared], kind="stable")]
        budget = np.cumsum(count[shared] * (count[shared] - 1) // 2)
        shared = np.sort(shared[budget <= self.max_pairs])
        none = (np.empty(0, np.int64), np.empty(0))
        if shared.size == 0:
            return none
        a, b = segment_pairs(owner, first[shared], count[shared])
        pair_key, hits = np.unique(np.minimum(a, b) * n + np.maximum(a, b), return_counts=True)
        hits_ok = hits >= self.min_shared
        pair_key, hits = pair_key[hits_ok], hits[hits_ok]
        if pair_key.size == 0:
            return none
        lo, hi = pair_key // n, pair_key % n
        lam = 0.5 * ((per_node[hi] * exposure[lo]).sum(axis=1) + (per_node[lo] * exposure[hi]).sum(axis=1))
        # P(Poisson(lam) >= hits) is the regularized lower incomplete gamma function P(hits, lam).
        log_p = np.log10(np.maximum(gammainc(hits.astype(np.float64), np.maximum(lam, 1e-12)), 1e-300))
        return pair_key, log_p
