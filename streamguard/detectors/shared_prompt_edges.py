"""Shared-prompt evidence between pairs of accounts, decayed in event time, in sorted arrays.

Each pair of nodes (``lo << 32 | hi``) that sent near-duplicates of each other's prompts carries a
weight, the sum of ``exp(-rate * (at - t))`` over its hits, kept as of ``at``, the latest hit.
That sum does not depend on the order the hits arrive in, so a batch is merged at once: its hits
are summed per pair, then decayed onto the pair's weight. The pairs live in three parallel arrays
sorted by key (lookup by ``searchsorted``): a Python dict of a million pairs cost 0.1 s per link
pass to turn into arrays and as much per eviction to search (``scripts/run_at_scale.py``: 40% of a
run over a million accounts), and pickles element by element at every checkpoint.
"""

from __future__ import annotations

import numpy as np

LOW_BITS = np.int64(0xFFFFFFFF)


def pair_keys(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """The key of each pair of nodes, whichever end comes first."""
    a, b = np.asarray(a, dtype=np.int64), np.asarray(b, dtype=np.int64)
    return (np.minimum(a, b) << 32) | np.maximum(a, b)


class SharedPromptEdges:
    """Decayed weight per pair of nodes; rate is per millisecond of event time."""

    def __init__(self, rate: float) -> None:
        self.rate = float(rate)
        self.keys = np.empty(0, dtype=np.int64)
        self.weight = np.empty(0, dtype=np.float64)
        self.at = np.empty(0, dtype=np.float64)

    def __len__(self) -> int:
        return int(self.keys.size)

    def ends(self) -> tuple[np.ndarray, np.ndarray]:
        """(lo, hi) nodes of every pair."""
        return self.keys >> 32, self.keys & LOW_BITS

    def add(self, a: np.ndarray, b: np.ndarray, ts: np.ndarray) -> None:
        """One hit per element: node ``a[i]`` and node ``b[i]`` shared a prompt at ``ts[i]``."""
        if len(a) == 0:
            return
        keys = pair_keys(a, b)
        ts = np.asarray(ts, dtype=np.float64)
        order = np.argsort(keys, kind="stable")
        keys, ts = keys[order], ts[order]
        unique, start = np.unique(keys, return_index=True)
        latest = np.maximum.reduceat(ts, start)
        group = np.repeat(np.arange(unique.size), np.diff(np.r_[start, keys.size]))
        added = np.add.reduceat(np.exp(-self.rate * (latest[group] - ts)), start)

        pos = np.searchsorted(self.keys, unique)
        found = pos < self.keys.size
        found[found] = self.keys[pos[found]] == unique[found]
        rows = pos[found]
        old_at, new_at = self.at[rows], np.maximum(self.at[rows], latest[found])
        self.weight[rows] = self.weight[rows] * np.exp(-self.rate * (new_at - old_at)) + added[found] * np.exp(
            -self.rate * (new_at - latest[found])
        )
        self.at[rows] = new_at
        fresh = ~found
        if fresh.any():
            self.keys = np.insert(self.keys, pos[fresh], unique[fresh])
            self.weight = np.insert(self.weight, pos[fresh], added[fresh])
            self.at = np.insert(self.at, pos[fresh], latest[fresh])

    def decayed(self, now_ts: float) -> np.ndarray:
        """Every pair's weight as of ``now_ts`` (a late pair is not grown)."""
        return self.weight * np.exp(-self.rate * np.maximum(now_ts - self.at, 0.0))

    def keep(self, mask: np.ndarray) -> None:
        """Drop every pair where ``mask`` is False."""
        self.keys, self.weight, self.at = self.keys[mask], self.weight[mask], self.at[mask]

    def drop_nodes(self, gone: np.ndarray) -> None:
        """Drop every pair with an end ``n < gone.size`` where ``gone[n]``; larger nodes are never gone."""
        if self.keys.size == 0:
            return
        hit = np.zeros(self.keys.size, dtype=bool)
        for node in self.ends():
            local = node < gone.size
            hit |= local & gone[np.where(local, node, 0)]
        if hit.any():
            self.keep(~hit)

    def state_dict(self) -> dict[str, np.ndarray]:
        return {"keys": self.keys.copy(), "weight": self.weight.copy(), "at": self.at.copy()}

    @classmethod
    def from_state(cls, rate: float, state: dict) -> SharedPromptEdges:
        """Restore from :meth:`state_dict`, or from the ``{key: [weight, at]}`` dict of older snapshots."""
        edges = cls(rate)
        if state and "keys" in state and isinstance(state["keys"], np.ndarray):
            order = np.argsort(state["keys"], kind="stable")
            edges.keys = np.asarray(state["keys"], dtype=np.int64)[order]
            edges.weight = np.asarray(state["weight"], dtype=np.float64)[order]
            edges.at = np.asarray(state["at"], dtype=np.float64)[order]
        elif state:
            keys = np.fromiter(state.keys(), dtype=np.int64, count=len(state))
            raw = np.array(list(state.values()), dtype=np.float64).reshape(-1, 2)
            order = np.argsort(keys, kind="stable")
            edges.keys, edges.weight, edges.at = keys[order], raw[order, 0], raw[order, 1]
        return edges
