import numpy as np

from streamguard.detectors.codebook import Codebook, balanced_sample, fit_codebook, merge_cells, spherical_kmeans
from tests.reference import unit_rows


def clustered(rng, clusters=12, per=80, dim=32, spread=0.1):
    centres = unit_rows(rng, clusters, dim)
    x = np.repeat(centres, per, axis=0) + spread * rng.standard_normal((clusters * per, dim)).astype(np.float32)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.repeat(np.arange(clusters), per)


def test_kmeans_cells_do_not_straddle_separated_clusters():
    rng = np.random.default_rng(0)
    x, truth = clustered(rng)
    centroids = spherical_kmeans(x, 24, 10, rng)  # more cells than clusters, as the codebook uses it
    assign = (x @ centroids.T).argmax(axis=1)
    purity = sum(np.bincount(truth[assign == c]).max() for c in np.unique(assign)) / len(x)
    assert purity > 0.95


def test_split_cells_merge_back_into_topics():
    rng = np.random.default_rng(1)
    x, truth = clustered(rng, clusters=6, per=200, spread=0.15)
    centroids = spherical_kmeans(x, 30, 10, rng)  # 5 cells per true cluster
    own = (x @ centroids.T).max(axis=1)
    topic_of_cell, domain_of_topic = merge_cells(centroids, float(np.median(own)), 512)
    topics = topic_of_cell[(x @ centroids.T).argmax(axis=1)]
    assert len(np.unique(topics)) <= 10  # far fewer than 30 cells
    for t in np.unique(topics):  # and each topic is (almost) one true cluster
        assert np.bincount(truth[topics == t]).max() / (topics == t).sum() > 0.95
    assert domain_of_topic.shape[0] == topic_of_cell.max() + 1


def test_cells_of_a_single_account_are_dropped():
    rng = np.random.default_rng(2)
    x, truth = clustered(rng, clusters=8, per=60)
    accounts = rng.integers(0, 50, len(x)).astype(str).astype(object)
    accounts[truth == 7] = "product"  # one account owns a whole region (its system prompt)
    book = fit_codebook(x, accounts, cells=16, max_topics=16, bits=64, plane_seed=0, per_account=1000, min_accounts=3)
    owned = (x[truth == 7] - book.mean) @ book.centroids.T
    others = (x[truth != 7] - book.mean) @ book.centroids.T
    # No centroid sits on the single-account region any more.
    assert owned.max() < np.percentile(others.max(axis=1), 5)


def test_balanced_sample_caps_each_account():
    rng = np.random.default_rng(3)
    keys = np.array(["big"] * 1000 + ["small"] * 5, dtype=object)
    picked = balanced_sample(keys, 16, rng)
    assert (keys[picked] == "big").sum() == 16 and (keys[picked] == "small").sum() == 5


def test_codebook_round_trips_through_a_file(tmp_path):
    rng = np.random.default_rng(4)
    x, _ = clustered(rng)
    book = fit_codebook(x, rng.integers(0, 40, len(x)).astype(str).astype(object), 24, 12, 128, 7, min_accounts=1)
    book.save(tmp_path / "book.npz")
    loaded = Codebook.load(tmp_path / "book.npz")
    for field in ("mean", "centroids", "topic_of_cell", "domain_of_topic", "planes", "warmup_counts"):
        np.testing.assert_array_equal(getattr(book, field), getattr(loaded, field))
