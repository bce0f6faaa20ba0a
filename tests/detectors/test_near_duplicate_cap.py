"""The per-account cap of the near-duplicate window (issue 14, bounded worst case)."""

from __future__ import annotations

import numpy as np

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.detectors.near_duplicate import DetectorBatch, NearDuplicateDetector

D, BITS = 12, 128


def _traffic(rng: np.random.Generator, n: int, heavy_share: float) -> tuple[np.ndarray, np.ndarray]:
    """Slots (0: the heavy account) and unit embeddings: ordinary accounts repeat a few prompts each."""
    slots = np.where(rng.random(n) < heavy_share, 0, rng.integers(1, 9, n)).astype(np.int64)
    prompts = rng.standard_normal((9, 4, D))
    emb = prompts[slots, rng.integers(0, 4, n)] + 0.03 * rng.standard_normal((n, D))
    heavy = slots == 0
    emb[heavy] = rng.standard_normal((int(heavy.sum()), D))  # the heavy account: random, distinct
    emb = emb.astype(np.float32)
    return slots, emb / np.linalg.norm(emb, axis=1, keepdims=True)


def _detector(rng: np.random.Generator, window: int, share: float) -> NearDuplicateDetector:
    planes = rng.standard_normal((D, BITS)).astype(np.float32)
    return NearDuplicateDetector(NumpyBackend(), planes, np.zeros(BITS, np.float32), radius=16, window=window,
                                 account_share=share, capacity=9)  # fmt: skip


def test_a_heavy_account_holds_at_most_its_cap_and_its_walk_is_bounded() -> None:
    rng = np.random.default_rng(0)
    det = _detector(rng, window=128, share=0.25)
    slots, emb = _traffic(rng, 2000, heavy_share=0.9)
    for a in range(0, 2000, 50):
        det.update(DetectorBatch(slots[a : a + 50], np.zeros(50, np.int64), emb[a : a + 50]))
        window = det.window_owner[np.arange(max(0, det.position - 128), det.position) % det.window_rows]
        assert (window == 0).sum() <= det.account_cap == 32  # the walk of any of its requests: at most 32 entries
    # The other accounts keep the rest of the window: 1,800 heavy requests took few positions.
    assert det.position < 2000 - 1000
    assert det.state_dict()["window_owner"].shape == (256,)


def test_an_adversary_leaves_the_ordinary_accounts_near_duplicates_unchanged() -> None:
    rng = np.random.default_rng(1)
    n = 1200
    slots, emb = _traffic(rng, n, heavy_share=0.0)
    adversary = rng.standard_normal((n, D)).astype(np.float32)
    adversary /= np.linalg.norm(adversary, axis=1, keepdims=True)
    mixed_slots = np.empty(2 * n, np.int64)
    mixed_slots[0::2], mixed_slots[1::2] = slots, 0  # interleaved, half the traffic
    mixed_emb = np.empty((2 * n, D), np.float32)
    mixed_emb[0::2], mixed_emb[1::2] = emb, adversary
    results = {}
    for name, s, e in (("ordinary", slots, emb), ("attacked", mixed_slots, mixed_emb)):
        det = _detector(np.random.default_rng(2), window=1024, share=1 / 64)
        out = det.update(DetectorBatch(s, np.zeros(s.size, np.int64), e))
        keep = s != 0
        results[name] = (out.within_dist[keep], det.dups[1:].copy())
    np.testing.assert_array_equal(results["attacked"][0], results["ordinary"][0])
    np.testing.assert_array_equal(results["attacked"][1], results["ordinary"][1])
    assert results["ordinary"][1].sum() > 0
