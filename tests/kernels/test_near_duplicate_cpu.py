"""Parity of kernels/near_duplicate.cu with the NumPy reference, on the CPU emulation and on a device.

Integers (signatures, distances, slots, window and table contents) must match
exactly. Sizes cover n = 0, 1, a warp block +- 1 (blocks of 2 warps), a thread
block +- 1 (blocks of 8 threads) and more items than the capped grid holds.
"""

from __future__ import annotations

import numpy as np
import pytest

from tests.kernels.kernel_harness import TINY
from streamguard.backends.cuda_backend import CudaBackend
from streamguard.backends.numpy_backend import NumpyBackend, band_buckets

SIZES = (0, 1, 2 * TINY.warps_per_block - 1, TINY.warps_per_block + 1, TINY.threads - 1, TINY.threads + 1, 61)


def _dev(backend: CudaBackend, host: np.ndarray):
    return backend.runtime.upload(np.ascontiguousarray(host))


def _host(backend: CudaBackend, array) -> np.ndarray:
    return backend.runtime.download(array)


def _templated_sigs(rng: np.random.Generator, n: int, words: int, pool: int = 4, flips: int = 3) -> np.ndarray:
    """Signatures drawn around a few templates with a few flipped bits: many small, equal distances."""
    base = rng.integers(0, 2**64, size=(pool, words), dtype=np.uint64)
    sigs = base[rng.integers(0, pool, size=n)].copy()
    for _ in range(flips):
        row = np.arange(n)
        bit = rng.integers(0, 64 * words, size=n)
        keep = rng.random(n) < 0.6
        sigs[row[keep], bit[keep] // 64] ^= np.uint64(1) << (bit[keep] % 64).astype(np.uint64)
    return sigs


# ------------------------------------------------------------------ signatures


def _assert_signatures_match(
    got: np.ndarray, emb: np.ndarray, planes: np.ndarray, offsets: np.ndarray, exact: bool
) -> None:
    want = NumpyBackend().signatures(emb, planes, offsets)
    if exact:
        np.testing.assert_array_equal(got, want)
        return
    # cuBLAS sums in another order: a bit may differ only where the projection is within rounding of the offset.
    margin = np.abs(emb.astype(np.float64) @ planes.astype(np.float64) - offsets) > 1e-3
    got_bits = np.unpackbits(got.view(np.uint8), axis=1, bitorder="little").astype(bool)
    want_bits = np.unpackbits(want.view(np.uint8), axis=1, bitorder="little").astype(bool)
    np.testing.assert_array_equal(got_bits[margin], want_bits[margin])


@pytest.mark.covers("pack_sign_bits")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("d", "bits"), [(37, 64), (64, 192)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_signatures(backend: CudaBackend, n: int, d: int, bits: int, dtype: type) -> None:
    rng = np.random.default_rng(n * 1000 + d + bits)
    emb = rng.standard_normal((n, d)).astype(dtype)
    planes = rng.standard_normal((d, bits)).astype(np.float32)
    offsets = (0.1 * rng.standard_normal(bits)).astype(np.float32)
    offsets[:3] = 0.0  # exact zeros: `p - o > 0` must treat p == o as a 0 bit
    if n:
        emb[0, :] = 0  # every projection exactly 0: all bits of the first row are 0 where offsets are 0
    got = _host(backend, backend.signatures(_dev(backend, emb), _dev(backend, planes), _dev(backend, offsets)))
    assert got.shape == (n, bits // 64) and got.dtype == np.uint64
    _assert_signatures_match(got, emb, planes, offsets, exact=backend.runtime.xp is np)


# ---------------------------------------------------------------- dup_scan


def _prefill(reference: NumpyBackend, rng, state, words: int, capacity: int, window: int, count: int) -> int:
    """Push `count` requests through the window in the largest pieces it allows (the last slot is kept fresh)."""
    position = 0
    while position < count:
        m = min(state[0].shape[0] - window, count - position)
        sigs = _templated_sigs(rng, m, words)
        reference.dup_scan(sigs, rng.integers(0, capacity - 1, size=m).astype(np.int64), *state, position, window)
        position += m
    return position


@pytest.mark.covers("slot_keys", "dup_link", "dup_scan")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("words", "window", "accounts", "prefill"), [(1, 1, 3, 5), (2, 5, 4, 0), (2, 40, 2, 97), (3, 70, 40, 300)])
def test_dup_scan(backend: CudaBackend, n: int, words: int, window: int, accounts: int, prefill: int) -> None:
    rng = np.random.default_rng(7 * n + 31 * window + accounts)
    capacity = accounts + 2
    rows = window + max(n, 1)  # the smallest store the contract allows
    reference = NumpyBackend()
    state = (np.zeros((rows, words), np.uint64), np.full(rows, -1, np.int64), np.full(capacity, -1, np.int64))
    position = _prefill(reference, rng, state, words, capacity, window, prefill)
    ref_state = tuple(a.copy() for a in state)
    dev_state = tuple(_dev(backend, a) for a in state)
    for _batch in range(3):  # state carried over batches
        sigs = _templated_sigs(rng, n, words)
        slots = rng.integers(0, accounts, size=n).astype(np.int64)
        want = reference.dup_scan(sigs, slots, *ref_state, position, window).within_dist
        got = backend.dup_scan(_dev(backend, sigs), _dev(backend, slots), *dev_state, position, window).within_dist
        assert isinstance(got, np.ndarray) and got.dtype == np.int32
        np.testing.assert_array_equal(got, want)
        for dev, ref in zip(dev_state, ref_state, strict=True):
            np.testing.assert_array_equal(_host(backend, dev), ref)
        position += n


@pytest.mark.covers("slot_keys")
@pytest.mark.parametrize("n", SIZES)
def test_slot_keys_give_the_reference_group_order(backend: CudaBackend, n: int) -> None:
    """Sorted keys list each account's requests contiguously and in batch order (the reference's
    stable argsort); out-of-range slots become `capacity`, which the scans reject."""
    rng = np.random.default_rng(n)
    capacity = 5
    slots = rng.integers(-2, capacity + 2, size=n).astype(np.int64)
    keys = backend.xp.empty(n, dtype=backend.xp.int64)
    if n:
        grid = (min(TINY.max_blocks, -(-n // TINY.threads)), 1, 1)
        with backend.runtime.on_stream():
            backend.launcher("slot_keys")(grid, (TINY.threads, 1, 1), (_dev(backend, slots), np.int64(n),
                                                                        np.int64(capacity), keys))  # fmt: skip
    keys = np.sort(_host(backend, keys))
    safe = np.where((slots < 0) | (slots >= capacity), capacity, slots)
    np.testing.assert_array_equal(keys % max(n, 1), np.argsort(safe, kind="stable"))
    np.testing.assert_array_equal(keys // max(n, 1), np.sort(safe))


def test_dup_scan_exercises_its_cases(backend: CudaBackend) -> None:
    """One batch where in-batch partners, window partners, a fresh account, a chain that leaves the
    window, a distance-0 stop and rows wrapped around the store all decide a result."""
    words, window, rows = 1, 4, 10
    sig = np.zeros((rows, words), dtype=np.uint64)
    prev = np.full(rows, -1, dtype=np.int64)
    head = np.array([9, -1, 8], dtype=np.int64)
    # Positions 4..9 seen so far (rows 4..9; the batch overwrites row 4): slot 0 at 5, 7, 9; slot 2 at 4, 6, 8.
    for position, slot_prev, value in ((5, -1, 0b1), (7, 5, 0b1), (9, 7, 0b111), (4, -1, 0b1000), (6, 4, 0), (8, 6, 0b1)):
        sig[position % rows, 0], prev[position % rows] = value, slot_prev
    sigs = np.array([[0b1], [0], [0b10000], [0b1111], [0b1000]], dtype=np.uint64)
    slots = np.array([0, 1, 1, 0, 2], dtype=np.int64)  # positions 10..14
    ref = (sig.copy(), prev.copy(), head.copy())
    want = NumpyBackend().dup_scan(sigs, slots, *ref, 10, window).within_dist
    dev = tuple(_dev(backend, a) for a in (sig, prev, head))
    got = backend.dup_scan(_dev(backend, sigs), _dev(backend, slots), *dev, 10, window).within_dist
    np.testing.assert_array_equal(got, want)
    # 10 sees 9, then 7 at distance 0 (5 left its window): 0; 11: nothing; 12 sees 11: 1; 13 sees 10 and 9
    # (window 9..12): 1;
    # 14 sees 10..13 only, none of slot 2's (8 left the window): nothing.
    assert want.tolist() == [0, 65, 1, 1, 65]
    for d, r in zip(dev, ref, strict=True):
        np.testing.assert_array_equal(_host(backend, d), r)
    assert ref[2].tolist() == [13, 12, 14]


def test_dup_scan_sees_exactly_the_window_whatever_the_batching(backend: CudaBackend) -> None:
    """Against a plain loop over the last `window` positions, with the stream cut into uneven batches."""
    rng = np.random.default_rng(3)
    words, window, accounts, n = 2, 23, 5, 400
    sigs = _templated_sigs(rng, n, words, pool=6, flips=4)
    slots = rng.integers(0, accounts, size=n).astype(np.int64)
    state = tuple(_dev(backend, a) for a in (np.zeros((2 * window, words), np.uint64), np.full(2 * window, -1, np.int64), np.full(accounts, -1, np.int64)))
    got, position = [], 0
    for size in (1, 23, 5, 17, 23, 2) * 20:
        if position >= n:
            break
        end = min(n, position + size)
        got.append(backend.dup_scan(_dev(backend, sigs[position:end]), _dev(backend, slots[position:end]), *state, position, window).within_dist)
        position = end
    want = np.full(n, 129, np.int32)
    for q in range(n):
        partners = [p for p in range(max(0, q - window), q) if slots[p] == slots[q]]
        if partners:
            want[q] = min(int(np.bitwise_count(sigs[q] ^ sigs[p]).sum()) for p in partners)
    np.testing.assert_array_equal(np.concatenate(got), want)


def test_dup_scan_rejects_a_slot_outside_head(backend: CudaBackend) -> None:
    state = (np.zeros((6, 1), np.uint64), np.full(6, -1, np.int64), np.full(2, -1, np.int64))
    with pytest.raises(IndexError, match="dup_scan"):
        backend.dup_scan(
            _dev(backend, np.ones((3, 1), np.uint64)),
            _dev(backend, np.array([0, 2, -1], np.int64)),
            *(_dev(backend, a) for a in state),
            0,
            3,
        )


def test_dup_scan_rejects_a_batch_the_window_store_cannot_hold(backend: CudaBackend) -> None:
    state = tuple(_dev(backend, a) for a in (np.zeros((6, 1), np.uint64), np.full(6, -1, np.int64), np.full(2, -1, np.int64)))
    with pytest.raises(ValueError, match="window rows"):
        backend.dup_scan(_dev(backend, np.ones((4, 1), np.uint64)), _dev(backend, np.zeros(4, np.int64)), *state, 0, 3)


# ------------------------------------------------------------ cross_lookup


@pytest.mark.covers("band_hash")
@pytest.mark.parametrize("table_bits", [0, 1, 5, 16, 40])
@pytest.mark.parametrize(("words", "bands"), [(1, 8), (2, 3), (2, 8), (1, 1), (2, 128)])
def test_band_hash(backend: CudaBackend, table_bits: int, words: int, bands: int) -> None:
    """Buckets equal band_buckets, including bands that straddle words (42 bits) or are empty (0 bits)."""
    n = TINY.threads + 1
    rng = np.random.default_rng(table_bits + 10 * words + bands)
    sigs = rng.integers(0, 2**64, size=(n, words), dtype=np.uint64)
    keys = backend.xp.empty(bands * n, dtype=backend.xp.int64)
    grid = (min(TINY.max_blocks, -(-bands * n // TINY.threads)), 1, 1)
    args = (_dev(backend, sigs), np.int64(n), np.int64(words), np.int64(bands), np.int64(table_bits), keys)
    with backend.runtime.on_stream():
        backend.launcher("band_hash")(grid, (TINY.threads, 1, 1), args)
    got = _host(backend, keys).reshape(bands, n)
    want = band_buckets(sigs, bands, table_bits)
    np.testing.assert_array_equal(got // n - np.arange(bands)[:, None] * (1 << table_bits), want.T)
    np.testing.assert_array_equal(got % n, np.broadcast_to(np.arange(n), (bands, n)))


def _tables(rng: np.random.Generator, bands: int, table_bits: int, words: int, accounts: int, pool: np.ndarray):
    size = 1 << table_bits
    slot = rng.integers(-1, accounts, size=(bands, size)).astype(np.int64)  # about 1 in (accounts+1) empty
    ts = rng.integers(0, 2_000, size=(bands, size)).astype(np.int64)
    sig = pool[rng.integers(0, len(pool), size=(bands, size))]
    return slot, ts, np.ascontiguousarray(sig.reshape(bands, size, words))


def _run_cross(backend: CudaBackend, reference: NumpyBackend, batches, tables, radius: int, window_ms: int):
    ref_tables = [t.copy() for t in tables]
    dev_tables = [_dev(backend, t) for t in tables]
    outcomes = []
    for sigs, slots, ts in batches:
        want = reference.cross_lookup(sigs, slots, ts, *ref_tables, radius, window_ms)
        got = backend.cross_lookup(
            _dev(backend, sigs), _dev(backend, slots), _dev(backend, ts), *dev_tables, radius, window_ms
        )
        assert got.cross_slot.dtype == np.int64 and got.cross_dist.dtype == np.int32
        np.testing.assert_array_equal(got.cross_slot, want.cross_slot)
        np.testing.assert_array_equal(got.cross_dist, want.cross_dist)
        for dev, ref in zip(dev_tables, ref_tables, strict=True):
            np.testing.assert_array_equal(_host(backend, dev), ref)
        outcomes.append(want)
    return outcomes


@pytest.mark.covers("band_hash", "cross_candidates", "cross_best_insert")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(
    ("words", "bands", "table_bits", "radius"),
    [(1, 8, 2, 6), (2, 3, 3, 10), (2, 8, 1, 128), (1, 1, 0, 3), (2, 4, 6, 0)],
)
def test_cross_lookup(backend: CudaBackend, n: int, words: int, bands: int, table_bits: int, radius: int) -> None:
    """Tiny tables (many collisions), few accounts, templated signatures and a window that cuts: every
    branch of the match test decides some request, in batch and against the table."""
    rng = np.random.default_rng(n + 100 * words + 10 * bands + table_bits)
    accounts = 4
    pool = _templated_sigs(rng, 12, words, pool=3, flips=2)
    tables = _tables(rng, bands, table_bits, words, accounts, pool)
    batches = []
    for b in range(3):
        sigs = pool[rng.integers(0, len(pool), size=n)] if n else np.empty((0, words), np.uint64)
        flip = rng.random(n) < 0.3
        sigs[flip, 0] ^= np.uint64(1) << rng.integers(0, 64, size=int(flip.sum())).astype(np.uint64)
        slots = rng.integers(0, accounts, size=n).astype(np.int64)
        ts = (1_000 * b + rng.integers(0, 1_500, size=n)).astype(np.int64)
        batches.append((np.ascontiguousarray(sigs), slots, ts))
    _run_cross(backend, NumpyBackend(bands=bands), batches, tables, radius, window_ms=700)


def test_cross_lookup_lowest_band_wins_ties(backend: CudaBackend) -> None:
    """Two bands offer different accounts at the same distance: the reference keeps band 0's."""
    words, bands, table_bits = 1, 2, 4
    query = np.array([[0x00FF_0000_0000_00F0]], dtype=np.uint64)
    q = band_buckets(query, bands, table_bits)[0]
    table_slot = np.full((bands, 1 << table_bits), -1, np.int64)
    table_ts = np.zeros_like(table_slot)
    table_sig = np.zeros((bands, 1 << table_bits, words), np.uint64)
    # Same distance (1 bit) in both bands, from accounts 5 (band 0) and 6 (band 1).
    table_slot[0, q[0]], table_sig[0, q[0], 0] = 5, query[0, 0] ^ np.uint64(1 << 40)
    table_slot[1, q[1]], table_sig[1, q[1], 0] = 6, query[0, 0] ^ np.uint64(1 << 3)
    batches = [(query, np.array([1], np.int64), np.array([10], np.int64))]
    (want,) = _run_cross(backend, NumpyBackend(bands=bands), batches, (table_slot, table_ts, table_sig), 4, 100)
    assert want.cross_slot.tolist() == [5] and want.cross_dist.tolist() == [1]


def test_cross_lookup_sees_buckets_as_earlier_requests_left_them(backend: CudaBackend) -> None:
    """In one batch: account 1, then 2's copy matches 1; 1 again matches 2 (the latest writer);
    3's copy matches 1, not 2. A table entry exactly window_ms old matches, an older one does not;
    an account never matches itself."""
    words, bands, table_bits = 1, 2, 8
    sig = np.uint64(0xDEAD_BEEF_0BAD_F00D)
    sigs = np.array([[sig], [sig], [sig], [sig], [sig ^ np.uint64(1)]], dtype=np.uint64)
    slots = np.array([1, 2, 1, 3, 3], dtype=np.int64)
    ts = np.array([1_000, 1_001, 1_002, 1_003, 5_000], dtype=np.int64)
    size = 1 << table_bits
    table_slot = np.full((bands, size), 9, np.int64)  # every bucket: account 9, long ago
    table_ts = np.zeros((bands, size), np.int64)
    table_sig = np.full((bands, size, words), sig, np.uint64)
    (want,) = _run_cross(
        backend, NumpyBackend(bands=bands), [(sigs, slots, ts)], (table_slot, table_ts, table_sig), 2, 1_000
    )
    # 1 sees account 9's entry (ts 0: exactly window_ms old, still in); 2 sees 1; 1 again sees 2; 3 sees 1;
    # the last request (ts 5000) finds account 9's stale entry in band 0 and its own account in band 1.
    assert want.cross_slot.tolist() == [9, 1, 2, 1, -1]
    assert want.cross_dist.tolist() == [0, 0, 0, 0, 65]


@pytest.mark.covers("dup_query")
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize(("words", "window"), [(1, 5), (2, 40), (3, 70)])
def test_dup_query(backend: CudaBackend, n: int, words: int, window: int) -> None:
    """Requests not stored walk their account's chain from ``origin`` back to ``stop``; nothing is written."""
    rng = np.random.default_rng(3 * n + window)
    accounts = 4
    rows = 2 * window
    reference = NumpyBackend()
    state = (np.zeros((rows, words), np.uint64), np.full(rows, -1, np.int64), np.full(accounts, -1, np.int64))
    position = _prefill(reference, rng, state, words, accounts + 1, window, 3 * window)
    slots = np.sort(rng.integers(0, accounts, size=n)).astype(np.int64)
    head = state[2]
    origin = head[slots].copy()
    stop = np.maximum(position - window + np.sort(rng.integers(0, window // 2 + 1, size=n)), 0)
    if n:
        origin[0] = -1  # nothing to walk
    sigs = _templated_sigs(rng, n, words)
    want = reference.dup_query(sigs, slots, origin, stop, state[0], state[1]).within_dist
    got = backend.dup_query(_dev(backend, sigs), _dev(backend, slots), _dev(backend, origin), _dev(backend, stop),
                            _dev(backend, state[0]), _dev(backend, state[1])).within_dist  # fmt: skip
    assert isinstance(got, np.ndarray) and got.dtype == np.int32
    np.testing.assert_array_equal(got, want)
    if n > 1:
        assert (want[1:] < words * 64 + 1).any() or window < 8
