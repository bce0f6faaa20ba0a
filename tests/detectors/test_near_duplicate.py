import numpy as np
import pytest

from streamguard.backends.numpy_backend import NumpyBackend, band_buckets, pack_sign_bits
from streamguard.detectors.codebook import make_planes
from streamguard.detectors.near_duplicate import DetectorBatch, NearDuplicateDetector
from tests.reference import hamming, signature_bits, unit_rows


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


def last_positions_min_distance(sigs: np.ndarray, slots: np.ndarray, window: int) -> np.ndarray:
    """For each request, the smallest Hamming distance to its account's requests among the previous `window`
    requests of the stream (whatever their account), bits + 1 when there is none: the definition, in plain loops."""
    none = sigs.shape[1] * 64 + 1
    out = np.full(len(slots), none, dtype=np.int32)
    for q in range(len(slots)):
        partners = [p for p in range(max(0, q - window), q) if slots[p] == slots[q]]
        if partners:
            out[q] = min(hamming(sigs[q], sigs[p]) for p in partners)
    return out


def test_dup_scan_equals_the_last_window_oracle_across_batches():
    rng = np.random.default_rng(1)
    n, window = 300, 5
    sigs = rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64)
    sigs[50:60] = sigs[10]  # exact repeats
    sigs[200:230] ^= np.uint64(1)  # near repeats of the account's own requests, 1 bit away
    slots = rng.integers(0, 3, n).astype(np.int64)
    backend = NumpyBackend()
    state = (np.zeros((2 * window, 2), np.uint64), np.full(2 * window, -1, np.int64), np.full(3, -1, np.int64))
    parts, position = [], 0
    for a, b in ((0, 5), (5, 6), (6, 11), (11, 200), (200, n)):
        for c in range(a, b, window):  # pieces of at most `window`, as the detector cuts them
            d = min(b, c + window)
            parts.append(backend.dup_scan(sigs[c:d], slots[c:d], *state, position, window).within_dist)
            position = d
    want = last_positions_min_distance(sigs, slots, window)
    np.testing.assert_array_equal(np.concatenate(parts), want)
    assert (want < 129).any() and (want == 129).any()
    assert state[2].max() == n - 1


def test_dup_scan_rejects_what_the_window_cannot_hold():
    state = (np.zeros((8, 2), np.uint64), np.full(8, -1, np.int64), np.full(3, -1, np.int64))
    with pytest.raises(ValueError, match="window rows"):
        NumpyBackend().dup_scan(np.zeros((5, 2), np.uint64), np.zeros(5, np.int64), *state, 0, 4)
    with pytest.raises(IndexError, match="slot"):
        NumpyBackend().dup_scan(np.zeros((2, 2), np.uint64), np.array([0, 3], np.int64), *state, 0, 4)


def test_band_buckets_are_in_range_and_deterministic():
    rng = np.random.default_rng(2)
    sigs = rng.integers(0, 2**63, size=(50, 2), dtype=np.uint64)
    b = band_buckets(sigs, 8, 12)
    assert b.min() >= 0 and b.max() < 2**12
    np.testing.assert_array_equal(b, band_buckets(sigs.copy(), 8, 12))


def detector(capacity=8, window=16, backend=None, account_share=1.0):
    """Uncapped by default (share 1): these tests are about the window itself; the cap: test_near_duplicate_cap.py."""
    planes = make_planes(32, 128, 3)
    return NearDuplicateDetector(
        backend or NumpyBackend(), planes, np.zeros(128, np.float32), radius=20, window=window, capacity=capacity,
        account_share=account_share,
    )


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


def test_a_repeat_is_found_as_long_as_it_is_inside_the_window():
    """A heavy account repeats a prompt 40 requests later, with other accounts in between: a ring of its last
    few requests would miss it; the window of the last `window` requests of the stream finds it, and stops
    finding it once the first copy is more than `window` requests back. Batches longer than the window are
    cut into pieces."""
    rng = np.random.default_rng(6)
    x = unit_rows(rng, 100, 32)
    slots = np.where(np.arange(100) % 2 == 0, 0, 1 + np.arange(100) % 5).astype(np.int64)
    x[40] = x[0]  # account 0, 40 positions later (20 of its own requests in between)
    x[98] = x[2]  # account 0, 96 positions later: outside a window of 64
    det = detector(window=64)
    result = det.update(DetectorBatch(slots, np.arange(100, dtype=np.int64), x))
    assert result.within_dist[40] == 0 and result.is_dup[40]
    assert result.within_dist[98] > 0
    assert det.position == 100


def test_batching_and_snapshots_do_not_change_the_scan():
    rng = np.random.default_rng(7)
    n = 500
    base = unit_rows(rng, 20, 32)
    x = base[rng.integers(0, 20, n)] + 0.05 * unit_rows(rng, n, 32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    slots = rng.choice(6, size=n, p=[0.5, 0.2, 0.1, 0.1, 0.05, 0.05]).astype(np.int64)
    ts = np.arange(n, dtype=np.int64)
    whole = detector(window=37).update(DetectorBatch(slots, ts, x)).within_dist
    det = detector(window=37)
    got = []
    for a, b in ((0, 1), (1, 80), (80, 81), (81, 300), (300, n)):
        if a == 81:  # restore a snapshot into a fresh detector midway
            state = det.state_dict()
            det = detector(window=37)
            det.load_state_dict(state)
        got.append(det.update(DetectorBatch(slots[a:b], ts[a:b], x[a:b])).within_dist)
    np.testing.assert_array_equal(np.concatenate(got), whole)


def test_an_evicted_slot_does_not_see_its_previous_account():
    rng = np.random.default_rng(8)
    x = unit_rows(rng, 3, 32)
    x[2] = x[0]
    det = detector()
    det.update(DetectorBatch(np.array([0, 1], np.int64), np.array([0, 1], np.int64), x[:2]))
    det.reset(np.array([0], np.int64))  # slot 0 goes to a new account
    result = det.update(DetectorBatch(np.array([0], np.int64), np.array([2], np.int64), x[2:]))
    assert not result.is_dup[0] and result.within_dist[0] == 129
    assert det.seen[0] == 1


def test_per_account_state_is_small_and_the_window_is_a_fixed_cost():
    det = detector(capacity=8, window=65_536)
    assert det.state_bytes_per_account() == 40
    fixed = det.fixed_state_bytes()
    assert fixed["window"] == 2 * 65_536 * (16 + 8 + 8)  # signature, chain link, owner (host)
    det.resize(100)
    assert det.fixed_state_bytes() == fixed and det.head.shape == (100,) and (det.head[8:] == -1).all()
