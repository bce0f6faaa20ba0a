import numpy as np

from streamguard.backends.numpy_backend import NumpyBackend, band_buckets, pack_sign_bits
from streamguard.detectors.codebook import make_planes
from streamguard.detectors.near_duplicate import DetectorBatch, NearDuplicateDetector
from tests.reference import signature_bits, unit_rows, window_min_distance


def test_signatures_match_bit_by_bit_oracle():
    rng = np.random.default_rng(0)
    x = unit_rows(rng, 20, 37)
    planes = make_planes(37, 128, 5)
    offsets = (0.01 * rng.standard_normal(128)).astype(np.float32)
    got = NumpyBackend().signatures(x, planes, offsets)
    want = signature_bits(x, planes, offsets)
    margin = np.abs(x.astype(np.float64) @ planes - offsets) > 1e-4  # float32 vs float64 sign near 0
    bits_got = np.unpackbits(got.view(np.uint8), axis=1, bitorder="little").astype(bool)
    bits_want = np.unpackbits(want.view(np.uint8), axis=1, bitorder="little").astype(bool)
    np.testing.assert_array_equal(bits_got[margin], bits_want[margin])


def test_dup_scan_equals_sliding_window_oracle_across_batches():
    rng = np.random.default_rng(1)
    n, window = 300, 5
    sigs = rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64)
    sigs[50:60] = sigs[10]  # exact repeats
    slots = rng.integers(0, 7, n).astype(np.int64)
    backend = NumpyBackend()
    ring = np.zeros((7, window, 2), np.uint64)
    count = np.zeros(7, np.int64)
    parts = [backend.dup_scan(sigs[a:b], slots[a:b], ring, count).within_dist for a, b in ((0, 17), (17, 18), (18, 200), (200, n))]
    np.testing.assert_array_equal(np.concatenate(parts), window_min_distance(sigs, slots, window))
    assert count.sum() == n


def test_band_buckets_are_in_range_and_deterministic():
    rng = np.random.default_rng(2)
    sigs = rng.integers(0, 2**63, size=(50, 2), dtype=np.uint64)
    b = band_buckets(sigs, 8, 12)
    assert b.min() >= 0 and b.max() < 2**12
    np.testing.assert_array_equal(b, band_buckets(sigs.copy(), 8, 12))


def detector(capacity=8):
    planes = make_planes(32, 128, 3)
    return NearDuplicateDetector(NumpyBackend(), planes, np.zeros(128, np.float32), radius=20, window=16, capacity=capacity)


def test_repeats_within_an_account_are_found_causally():
    rng = np.random.default_rng(3)
    x = unit_rows(rng, 6, 32)
    x[3] = x[0]  # account 0 repeats its first prompt
    det = detector()
    result = det.update(DetectorBatch(np.zeros(6, np.int64), np.arange(6, dtype=np.int64), x))
    assert not result.is_dup[0]  # nothing came before it
    assert result.is_dup[3] and result.within_dist[3] == 0
    assert det.dups[0] == result.is_dup.sum() and det.seen[0] == 6


def test_the_same_prompt_from_another_account_is_a_cross_account_match():
    rng = np.random.default_rng(4)
    x = unit_rows(rng, 4, 32)
    x[2] = x[0]
    slots = np.array([0, 1, 1, 2], np.int64)
    ts = np.array([0, 1, 2, 3], np.int64)
    result = detector().update(DetectorBatch(slots, ts, x))
    assert result.cross_slot[2] == 0 and result.is_cross_dup[2]
    assert not result.is_cross_dup[[0, 1, 3]].any()
    assert not result.is_dup[2]  # a different account's prompt is not a within-account repeat


def test_cross_account_matches_expire():
    rng = np.random.default_rng(5)
    x = unit_rows(rng, 2, 32)
    x[1] = x[0]
    det = detector()
    det.cross_window_ms = 1000
    result = det.update(DetectorBatch(np.array([0, 1], np.int64), np.array([0, 5000], np.int64), x))
    assert not result.is_cross_dup[1]


def test_pack_sign_bits_layout():
    proj = np.full((1, 128), -1.0)
    proj[0, 0] = proj[0, 65] = 1.0
    words = pack_sign_bits(proj)
    assert words[0, 0] == 1 and words[0, 1] == 2
