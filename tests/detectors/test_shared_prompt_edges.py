"""Shared-prompt edges in sorted arrays: batches merged at once equal hits added one by one."""

from __future__ import annotations

import math
import pickle

import numpy as np
import pytest

from streamguard.detectors.shared_prompt_edges import SharedPromptEdges, pair_keys

RATE = math.log(2.0) / 3_600_000.0  # one hour's half-life


def one_by_one(a, b, ts):
    """The definition, hit by hit in arrival order: weight kept as of the pair's latest hit."""
    edges: dict[int, list[float]] = {}
    for key, t in zip(pair_keys(a, b).tolist(), np.asarray(ts, dtype=np.float64).tolist()):
        edge = edges.get(key)
        if edge is None:
            edges[key] = [1.0, t]
        elif t >= edge[1]:
            edges[key] = [edge[0] * math.exp(-RATE * (t - edge[1])) + 1.0, t]
        else:  # a late hit adds less
            edge[0] += math.exp(-RATE * (edge[1] - t))
    return edges


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_batches_in_any_split_give_the_weights_of_hits_added_one_by_one(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    a, b = rng.integers(0, 40, n), rng.integers(0, 40, n)
    # Mostly ordered event time with late hits, over a few half-lives.
    ts = np.sort(rng.integers(0, 4 * 3_600_000, n)) - rng.integers(0, 2, n) * rng.integers(0, 1_800_000, n)
    expected = one_by_one(a, b, ts)
    edges = SharedPromptEdges(RATE)
    cuts = np.sort(rng.choice(np.arange(1, n), 25, replace=False))
    for lo, hi in zip(np.r_[0, cuts], np.r_[cuts, n]):
        edges.add(a[lo:hi], b[lo:hi], ts[lo:hi])
    assert edges.keys.tolist() == sorted(expected)
    assert np.all(np.diff(edges.keys) > 0)
    np.testing.assert_allclose(edges.weight, [expected[k][0] for k in edges.keys.tolist()], rtol=1e-12)
    np.testing.assert_array_equal(edges.at, [expected[k][1] for k in edges.keys.tolist()])
    lo_end, hi_end = edges.ends()
    assert np.all(lo_end <= hi_end) and set(zip(lo_end.tolist(), hi_end.tolist())) <= set(zip(np.minimum(a, b).tolist(), np.maximum(a, b).tolist()))


def test_decay_drop_and_restore_from_arrays_or_an_older_snapshots_dict():
    edges = SharedPromptEdges(RATE)
    edges.add(np.array([3, 1, 7]), np.array([1, 3, 2]), np.array([0, 3_600_000, 0]))
    # Sorted by key: pair (1, 3), one hit an hour ago and one now; pair (2, 7), one hit at 0.
    assert edges.keys.tolist() == [int(pair_keys(1, 3)), int(pair_keys(2, 7))]
    np.testing.assert_allclose(edges.decayed(3_600_000), [1.0 + 0.5, 0.5])
    np.testing.assert_allclose(edges.decayed(0), edges.weight)  # never grown back in time

    restored = SharedPromptEdges.from_state(RATE, pickle.loads(pickle.dumps(edges.state_dict())))
    for field in ("keys", "weight", "at"):
        np.testing.assert_array_equal(getattr(restored, field), getattr(edges, field))
    legacy = {int(k): [float(w), float(t)] for k, w, t in zip(edges.keys[::-1], edges.weight[::-1], edges.at[::-1])}
    from_dict = SharedPromptEdges.from_state(RATE, legacy)
    for field in ("keys", "weight", "at"):
        np.testing.assert_array_equal(getattr(from_dict, field), getattr(edges, field))
    assert len(SharedPromptEdges.from_state(RATE, {})) == 0

    gone = np.zeros(8, dtype=bool)
    gone[7] = True
    edges.drop_nodes(gone)
    assert edges.keys.tolist() == [int(pair_keys(1, 3))]
