"""Parity of kernels/coverage.cu with the NumPy reference, on the CPU emulation and on a device.

Exact where the arithmetic is the reference's own (argmax with its tie and NaN
rules, the residual and its weighting, the style scan, the float16 cast,
histogram sums of dyadic weights, distinct counts). Stated tolerances where a
sum runs in another order: norms and squared norms (float32, rtol 1e-5), the
float64 reductions (rtol 1e-12), float32 histogram sums of arbitrary weights
(rtol 1e-6).
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels.kernel_harness import TINY
from streamguard.backends.cuda_backend import CudaBackend
from streamguard.backends.numpy_backend import NumpyBackend

SIZES = (0, 1, 2 * TINY.warps_per_block - 1, TINY.warps_per_block + 1, TINY.threads - 1, TINY.threads + 1, 61)


def WARP_GRID(n: int) -> tuple[tuple[int, int, int], tuple[int, int, int]]:  # noqa: N802 - reads as a constant
    """Grid and block of a one-warp-per-row kernel under :data:`TINY`."""
    return (max(1, min(TINY.max_blocks, -(-n // TINY.warps_per_block))), 1, 1), (32 * TINY.warps_per_block, 1, 1)


def _dev(backend: CudaBackend, host: np.ndarray):
    return backend.runtime.upload(np.ascontiguousarray(host))


def _host(backend: CudaBackend, array) -> np.ndarray:
    return backend.runtime.download(array)


def _launch(backend: CudaBackend, entry: str, grid, block, *args) -> None:
    with backend.runtime.on_stream():
        backend.launcher(entry)(grid, block, args)


def _unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


# --------------------------------------------------------------- row_argmax


@pytest.mark.covers("row_argmax")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("k", [1, 31, 32, 33, 100])
def test_row_argmax_matches_numpy_ties_and_nan(backend: CudaBackend, n: int, k: int) -> None:
    rng = np.random.default_rng(n * 7 + k)
    scores = rng.integers(-3, 4, size=(n, k)).astype(np.float32)  # few distinct values: ties everywhere
    if n > 2 and k > 3:
        scores[1, [k - 1, 2]] = np.nan  # numpy returns the first NaN
        scores[2, :] = -np.inf
    out = backend.xp.empty(n, dtype=backend.xp.int32)
    if n:
        _launch(backend, "row_argmax", *WARP_GRID(n), _dev(backend, scores), np.int64(n), np.int64(k), out)
    np.testing.assert_array_equal(_host(backend, out), scores.argmax(axis=1).astype(np.int32))


# ---------------------------------------------------------- nearest_residual


@pytest.mark.covers("nearest_residual")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("d", "k"), [(37, 5), (64, 33)])
def test_nearest_residual(backend: CudaBackend, n: int, d: int, k: int) -> None:
    """Given the reference's unit rows and scores, the residual and its weighted copy are bit-exact."""
    rng = np.random.default_rng(n + d + k)
    unit, centroids = _unit_rows(rng, n, d), _unit_rows(rng, k, d)
    scores = unit @ centroids.T
    if n > 1:
        scores[1, :] = scores[1, 0]  # a full tie: cell 0
    weights = rng.uniform(0.1, 30.0, size=n)
    nearest = scores.argmax(axis=1)
    residual = unit - scores[np.arange(n), nearest][:, None] * centroids[nearest]
    want_weighted = residual * weights[:, None].astype(np.float32)
    want_sq = (residual * residual).sum(axis=1).astype(np.float32)
    xp = backend.xp
    residual_sq, weighted = xp.empty(n, dtype=xp.float32), xp.empty((n, d), dtype=xp.float32)
    if n:
        _launch(
            backend, "nearest_residual", *WARP_GRID(n), _dev(backend, scores), np.int64(n), np.int64(k),
            _dev(backend, unit), _dev(backend, centroids), np.int64(d), _dev(backend, weights), residual_sq, weighted,
        )  # fmt: skip
    np.testing.assert_array_equal(_host(backend, weighted), want_weighted)
    np.testing.assert_allclose(_host(backend, residual_sq), want_sq, rtol=1e-5, atol=1e-7)


# --------------------------------------------------------------- center_unit


@pytest.mark.covers("center_unit_f16", "center_unit_f32")
def test_center_unit_float16_cast_is_exact_for_every_half(backend: CudaBackend) -> None:
    """center_unit_f16(x) == center_unit_f32(float32(x)) bit for bit, over all finite float16 values
    (subnormals included): the kernel's own half -> float conversion is numpy's exact cast."""
    halves = np.arange(2**16, dtype=np.uint16).view(np.float16)
    halves = halves[np.isfinite(halves)]
    d = 64
    halves = np.concatenate([halves, np.zeros(-len(halves) % d, np.float16)]).reshape(-1, d)
    n = halves.shape[0]
    mean = np.zeros(d, np.float32)
    out16, out32 = (backend.xp.empty((n, d), dtype=backend.xp.float32) for _ in range(2))
    grid, block = ((TINY.max_blocks, 1, 1), (32 * TINY.warps_per_block, 1, 1))
    _launch(backend, "center_unit_f16", grid, block, _dev(backend, halves.view(np.uint16)), _dev(backend, mean),
            np.int64(n), np.int64(d), out16)  # fmt: skip
    _launch(backend, "center_unit_f32", grid, block, _dev(backend, halves.astype(np.float32)), _dev(backend, mean),
            np.int64(n), np.int64(d), out32)  # fmt: skip
    np.testing.assert_array_equal(_host(backend, out16), _host(backend, out32))


@pytest.mark.covers("center_unit_f32")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d", [1, 37, 96])
def test_center_unit(backend: CudaBackend, n: int, d: int) -> None:
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d)).astype(np.float32)
    mean = rng.standard_normal(d).astype(np.float32)
    if n > 1:
        x[1] = mean  # a zero row after centring: divided by 1e-12, stays 0
    centred = x - mean
    want = centred / np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-12)
    out = backend.xp.empty((n, d), dtype=backend.xp.float32)
    if n:
        _launch(backend, "center_unit_f32", *WARP_GRID(n), _dev(backend, x), _dev(backend, mean), np.int64(n),
                np.int64(d), out)  # fmt: skip
    np.testing.assert_allclose(_host(backend, out), want, rtol=1e-5, atol=1e-7)


# -------------------------------------------------------------- style_prefix


def _style_oracle(keys_order, unit, weighted, weights, slots, style_sum, style_weight):
    """The scan written as the obvious loop, in the kernel's float64 / float32 arithmetic."""
    state, total = style_sum.copy(), style_weight.copy()
    before = style_sum.astype(np.float64)
    destyled = np.empty_like(unit)
    for i in keys_order:
        s = slots[i]
        style = (before[s] / total[s]).astype(np.float32) if total[s] > 0 else np.zeros_like(unit[i])
        destyled[i] = unit[i] - style
        before[s] += weighted[i].astype(np.float64)
        state[s] += weighted[i]
        total[s] += weights[i]
    return destyled, state, total


@pytest.mark.covers("style_prefix")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("d", "accounts"), [(37, 3), (20, 40)])
def test_style_prefix(backend: CudaBackend, n: int, d: int, accounts: int) -> None:
    rng = np.random.default_rng(3 * n + d + accounts)
    capacity = accounts + 1
    unit = _unit_rows(rng, n, d)
    weighted = (0.3 * rng.standard_normal((n, d))).astype(np.float32)
    weights = rng.uniform(0.5, 20.0, size=n)
    slots = rng.integers(0, accounts, size=n).astype(np.int64)
    style_sum = rng.standard_normal((capacity, d)).astype(np.float32)
    style_weight = rng.choice([0.0, 1.5, 40.0], size=capacity)
    order = np.argsort(slots, kind="stable")
    want, want_sum, want_weight = _style_oracle(order, unit, weighted, weights, slots, style_sum, style_weight)
    xp = backend.xp
    dev_sum, dev_weight = _dev(backend, style_sum), _dev(backend, style_weight)
    destyled = xp.empty((n, d), dtype=xp.float32)
    if n:
        keys = _dev(backend, np.sort(slots * n + np.arange(n)))
        grid = (min(n, TINY.max_blocks), 1, 1)
        _launch(
            backend, "style_prefix", grid, (TINY.column_threads, 1, 1), keys, np.int64(n), np.int64(d),
            _dev(backend, unit), _dev(backend, weighted), _dev(backend, weights), dev_sum, dev_weight,
            np.int64(capacity), destyled, xp.zeros(1, dtype=xp.int32),
        )  # fmt: skip
    np.testing.assert_array_equal(_host(backend, destyled), want)
    np.testing.assert_array_equal(_host(backend, dev_sum), want_sum)
    np.testing.assert_array_equal(_host(backend, dev_weight), want_weight)


# ------------------------------------------------------------ destyled_cells


def _clustered(rng: np.random.Generator, n: int, d: int, k: int, dtype: type):
    """Requests near their topic's centroid, as real ones are: every argmax has a clear winner
    (margins >> float32 rounding), so the two pipelines must agree on every cell."""
    centroids = _unit_rows(rng, k, d)
    mean = (0.2 * rng.standard_normal(d)).astype(np.float32)
    topic = rng.integers(0, k, size=n)
    x = centroids[topic] + 0.25 * rng.standard_normal((n, d)) / np.sqrt(d) + mean
    return x.astype(dtype), mean, centroids


@pytest.mark.covers("center_unit_f32", "center_unit_f16", "nearest_residual", "slot_keys", "style_prefix", "row_argmax")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("d", "k"), [(37, 5), (64, 33)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_destyled_cells(backend: CudaBackend, n: int, d: int, k: int, dtype: type) -> None:
    rng = np.random.default_rng(n * 13 + d + k)
    accounts = 4
    capacity = accounts + 1
    style_sum = (0.05 * rng.standard_normal((capacity, d))).astype(np.float32)
    style_weight = rng.choice([0.0, 2.0, 10.0], size=capacity)
    ref_sum, ref_weight = style_sum.copy(), style_weight.copy()
    dev_sum, dev_weight = _dev(backend, style_sum), _dev(backend, style_weight)
    reference = NumpyBackend()
    for _batch in range(2):
        emb, mean, centroids = _clustered(rng, n, d, k, dtype)
        slots = rng.integers(0, accounts, size=n).astype(np.int64)
        # Dyadic weights keep the reference's float64 weight sums exact (see the xfail below).
        weights = rng.integers(4, 64, size=n) / 8.0
        want_cells, want_sq = reference.destyled_cells(emb, mean, centroids, slots, weights, ref_sum, ref_weight)
        cells, residual_sq = backend.destyled_cells(
            _dev(backend, emb), _dev(backend, mean), _dev(backend, centroids), _dev(backend, slots),
            _dev(backend, weights), dev_sum, dev_weight,
        )  # fmt: skip
        cells, residual_sq = _host(backend, cells), _host(backend, residual_sq)
        assert cells.dtype == np.int32 and residual_sq.dtype == np.float32
        np.testing.assert_array_equal(cells, want_cells)
        np.testing.assert_allclose(residual_sq, want_sq, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(_host(backend, dev_sum), ref_sum, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(_host(backend, dev_weight), ref_weight)  # float64 adds in the same order


def test_reference_first_request_of_a_new_account_has_no_style() -> None:
    """A request whose account has no state and no earlier request in the batch must get its plain
    nearest cell, exactly (a global cumulative sum once left ~1e-16 there and divided by it)."""
    n, d, k = 7, 64, 33
    rng = np.random.default_rng(n * 13 + d + k)
    style_sum = (0.05 * rng.standard_normal((5, d))).astype(np.float32)
    style_weight = rng.choice([0.0, 2.0, 10.0], size=5)
    emb, mean, centroids = _clustered(rng, n, d, k, np.float32)
    slots = rng.integers(0, 4, size=n).astype(np.int64)
    weights = rng.uniform(0.5, 8.0, size=n)
    fresh = [i for i in range(n) if style_weight[slots[i]] == 0 and slots[i] not in slots[:i]]
    centred = emb.astype(np.float64) - mean
    plain = (centred @ centroids.T.astype(np.float64)).argmax(axis=1)
    cells, _ = NumpyBackend().destyled_cells(emb, mean, centroids, slots, weights, style_sum, style_weight)
    assert fresh, "the batch must hold such a request"
    np.testing.assert_array_equal(cells[fresh], plain[fresh])


def test_destyled_cells_rejects_a_slot_outside_the_state(backend: CudaBackend) -> None:
    d = 8
    rng = np.random.default_rng(0)
    with pytest.raises(IndexError, match="destyled_cells"):
        backend.to_host(
            backend.destyled_cells(
                _dev(backend, _unit_rows(rng, 2, d)), _dev(backend, np.zeros(d, np.float32)),
                _dev(backend, _unit_rows(rng, 3, d)), _dev(backend, np.array([0, 5], np.int64)),
                _dev(backend, np.ones(2)), _dev(backend, np.zeros((2, d), np.float32)), _dev(backend, np.zeros(2)),
            )[0]
        )  # fmt: skip


# ------------------------------------------------------------ histogram_add


@pytest.mark.covers("histogram_add")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("dyadic", [True, False])
def test_histogram_add(backend: CudaBackend, n: int, dyadic: bool) -> None:
    """Duplicates add up; with dyadic weights every order of the float32 sums is exact."""
    rng = np.random.default_rng(n + dyadic)
    slots_count, topics = 3, 5
    hist = rng.integers(0, 4, size=(slots_count, topics)).astype(np.float32)
    slots = rng.integers(0, slots_count, size=n).astype(np.int64)
    cells = rng.integers(0, topics, size=n).astype(np.int32)
    weights = rng.integers(1, 16, size=n) / 4.0 if dyadic else rng.uniform(0.0, 3.0, size=n)
    want = hist.copy()
    NumpyBackend().histogram_add(want, slots, cells, weights)
    dev = _dev(backend, hist)
    backend.histogram_add(dev, _dev(backend, slots), _dev(backend, cells), _dev(backend, weights))
    got = _host(backend, dev)
    if dyadic:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_histogram_add_skips_and_reports_bad_indices(backend: CudaBackend) -> None:
    hist = np.zeros((2, 3), np.float32)
    dev = _dev(backend, hist)
    slots, cells = np.array([0, 2, -1, 1], np.int64), np.array([1, 0, 0, 3], np.int32)
    with pytest.raises(IndexError, match="histogram_add"):
        backend.histogram_add(dev, _dev(backend, slots), _dev(backend, cells), _dev(backend, np.ones(4)))
        backend.to_host(dev)
    expected = np.zeros((2, 3), np.float32)
    expected[0, 1] = 1.0  # the one valid item was added, nothing was written out of bounds
    np.testing.assert_array_equal(_host(backend, dev), expected)


# ---------------------------------------------------------- coverage_reduce


@pytest.mark.covers("coverage_reduce")
@pytest.mark.parametrize("m", SIZES)
@pytest.mark.parametrize("topics", [1, 5, 37, 300])
def test_coverage_reduce(backend: CudaBackend, m: int, topics: int) -> None:
    rng = np.random.default_rng(m + topics)
    slots_count = 6
    hist = rng.exponential(1.0, size=(slots_count, topics)).astype(np.float32)
    hist[rng.random((slots_count, topics)) < 0.4] = 0.0
    hist[2] = 0.0  # an account that never asked anything
    slots = rng.integers(0, slots_count, size=m).astype(np.int64)  # repeats allowed
    surprisal = rng.uniform(0.5, 9.0, size=topics).astype(np.float32)
    want = NumpyBackend().coverage_reduce(hist, slots, surprisal)
    got = backend.coverage_reduce(_dev(backend, hist), _dev(backend, slots), _dev(backend, surprisal))
    assert set(got) == set(want)
    for key in want:
        assert got[key].dtype == np.float64 and got[key].shape == (m,)
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=0)
    np.testing.assert_array_equal(got["distinct"], want["distinct"])


def test_coverage_reduce_rejects_a_slot_outside_hist(backend: CudaBackend) -> None:
    with pytest.raises(IndexError, match="coverage_reduce"):
        backend.coverage_reduce(
            _dev(backend, np.ones((2, 3), np.float32)), _dev(backend, np.array([1, 2], np.int64)),
            _dev(backend, np.ones(3, np.float32)),
        )  # fmt: skip
