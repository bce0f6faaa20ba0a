"""Coverage statistics tell a sweep from a mirror of the population and from a narrow user."""

import numpy as np
import pytest

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.detectors.coverage import CoverageDetector, PopulationMix

TOPICS, DIM = 40, 64


@pytest.fixture()
def world():
    rng = np.random.default_rng(0)
    centroids = rng.standard_normal((TOPICS, DIM)).astype(np.float32)
    centroids /= np.linalg.norm(centroids, axis=1, keepdims=True)
    popularity = 1.0 / np.arange(1, TOPICS + 1) ** 1.1  # skewed, as real traffic is
    popularity /= popularity.sum()
    return rng, centroids, popularity


def requests(rng, centroids, topics):
    x = centroids[topics] + 0.05 * rng.standard_normal((len(topics), DIM)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def run(world, accounts):
    """accounts: list of topic arrays, one per account; returns the detector after seeing them."""
    rng, centroids, popularity = world
    detector = CoverageDetector(
        NumpyBackend(), np.zeros(DIM, np.float32), centroids, np.arange(TOPICS, dtype=np.int32),
        np.arange(TOPICS, dtype=np.int32) // 8, popularity * 1000, capacity=len(accounts),
    )
    from streamguard.detectors.near_duplicate import DetectorBatch

    slots = np.concatenate([np.full(len(t), i, np.int64) for i, t in enumerate(accounts)])
    topics = np.concatenate(accounts)
    order = rng.permutation(len(slots))
    ts = np.arange(len(slots), dtype=np.int64) * 1000
    detector.update(DetectorBatch(slots[order], ts, requests(rng, centroids, topics[order])))
    return detector


def test_sweeper_mirror_and_narrow_user_are_told_apart(world):
    rng, _, popularity = world
    population = [rng.choice(TOPICS, 60, p=popularity) for _ in range(150)]
    mirror = rng.choice(TOPICS, 3000, p=popularity)
    sweeper = rng.integers(0, TOPICS, 600)
    narrow = rng.choice([7, 23], 600)
    det = run(world, population + [mirror, sweeper, narrow])
    stats = det.account_stats(np.array([150, 151, 152]))
    mirror_rarity, sweep_rarity, narrow_rarity = stats["rarity_effect"]
    assert abs(mirror_rarity) < 0.1
    assert sweep_rarity > 0.4 and stats["rarity_z"][1] > 4
    assert stats["spread"][1] > 1.0 > stats["spread"][0] * 0.5
    # The narrow user is not thorough, whatever its topics: two topics' worth.
    assert stats["effective_topics"][2] < 2.5 and stats["spread"][2] < 0.25 * stats["spread"][1]


def test_group_stats_equal_the_stats_of_the_pooled_requests(world):
    rng, _, _ = world
    a, b = rng.integers(0, 20, 300), rng.integers(20, 40, 300)
    det = run(world, [a, b, np.concatenate([a, b])])
    group = det.group_stats(np.array([0, 1]))
    pooled = det.account_stats(np.array([2]))
    for key in ("rarity", "effective_topics", "topics_covered"):
        assert group[key] == pytest.approx(float(pooled[key][0]), rel=1e-4)


def test_population_mix_moments():
    mix = PopulationMix.from_counts(np.array([8.0, 1.0, 1.0, 0.0]), np.array([0, 0, 1, 1]))
    assert mix.p.sum() == pytest.approx(1.0)
    assert (mix.p > 0).all()  # the floor keeps unseen topics possible
    assert mix.entropy == pytest.approx(float(mix.p @ -np.log(mix.p)))
    assert mix.effective_topics == pytest.approx(1.0 / float(mix.p @ mix.p))
