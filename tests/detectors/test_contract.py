"""One contract over every detector (see STYLE.md):

input unchanged, empty batch -> empty result, one batch of 2n == two batches
of n, same seed -> same scores, scores finite.
"""

from __future__ import annotations

import numpy as np
import pytest

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.detectors.codebook import fit_codebook
from streamguard.detectors.coverage import CoverageDetector
from streamguard.detectors.near_duplicate import DetectorBatch, NearDuplicateDetector
from tests.reference import unit_rows

DIM = 40


def traffic(seed: int, n: int = 400):
    rng = np.random.default_rng(seed)
    base = unit_rows(rng, 30, DIM)
    which = rng.integers(0, 30, n)
    x = base[which] + 0.15 * rng.standard_normal((n, DIM)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    slots = rng.integers(0, 12, n).astype(np.int64)
    ts = np.sort(rng.integers(0, 6 * 3_600_000, n)).astype(np.int64) + 1_767_225_600_000
    return x.astype(np.float32), slots, ts


def codebook():
    x, slots, _ = traffic(99, 800)
    return fit_codebook(x, slots.astype(str).astype(object), cells=32, max_topics=16, bits=128, plane_seed=1, min_accounts=1)


def near_duplicate(book):
    radius = 30
    return NearDuplicateDetector(NumpyBackend(), book.planes, book.plane_offsets, radius, window=8, bands=8, table_bits=10, capacity=16)


def coverage(book):
    return CoverageDetector(
        NumpyBackend(), book.mean, book.centroids, book.topic_of_cell, book.domain_of_topic, book.warmup_counts, 24.0, 10, capacity=16
    )


def result_arrays(result) -> dict[str, np.ndarray]:
    return {k: v for k, v in vars(result).items() if isinstance(v, np.ndarray)}


def state_arrays(detector) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in detector.state_dict().items() if isinstance(v, np.ndarray)}


DETECTORS = {"near_duplicate": near_duplicate, "coverage": coverage}


@pytest.fixture(scope="module")
def book():
    return codebook()


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_input_is_not_mutated(name, book):
    detector = DETECTORS[name](book)
    x, slots, ts = traffic(1)
    copies = (x.copy(), slots.copy(), ts.copy())
    detector.update(DetectorBatch(slots, ts, x))
    for before, after in zip(copies, (x, slots, ts)):
        np.testing.assert_array_equal(before, after)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_empty_batch_gives_empty_result(name, book):
    detector = DETECTORS[name](book)
    result = detector.update(DetectorBatch(np.empty(0, np.int64), np.empty(0, np.int64), np.empty((0, DIM), np.float32)))
    assert all(v.shape[0] == 0 for v in result_arrays(result).values())


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_one_batch_equals_two_halves(name, book):
    x, slots, ts = traffic(2)
    whole = DETECTORS[name](book)
    one = result_arrays(whole.update(DetectorBatch(slots, ts, x)))
    split = DETECTORS[name](book)
    h = len(slots) // 2
    first = result_arrays(split.update(DetectorBatch(slots[:h], ts[:h], x[:h])))
    second = result_arrays(split.update(DetectorBatch(slots[h:], ts[h:], x[h:])))
    for key, value in one.items():
        joined = np.concatenate([first[key], second[key]])
        if value.dtype.kind == "f":
            np.testing.assert_allclose(value, joined, rtol=1e-5, atol=1e-6, err_msg=key)
        else:
            np.testing.assert_array_equal(value, joined, err_msg=key)
    for key, value in state_arrays(whole).items():
        other = state_arrays(split)[key]
        if value.dtype.kind == "f":
            np.testing.assert_allclose(value, other, rtol=1e-4, atol=1e-5, err_msg=key)
        else:
            np.testing.assert_array_equal(value, other, err_msg=key)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_same_seed_same_scores_and_finite(name, book):
    x, slots, ts = traffic(3)
    a = result_arrays(DETECTORS[name](book).update(DetectorBatch(slots, ts, x)))
    b = result_arrays(DETECTORS[name](book).update(DetectorBatch(slots, ts, x)))
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
        if a[key].dtype.kind == "f":
            assert np.isfinite(a[key]).all()
    # A different seed changes the results: the test can fail.
    x4, slots4, ts4 = traffic(4)
    c = result_arrays(DETECTORS[name](book).update(DetectorBatch(slots4, ts4, x4)))
    assert any(not np.array_equal(a[k], c[k]) for k in a)
