"""Every backend against the NumPy reference, one body per function.

Each test builds its inputs on the host, runs the reference and the backend
under test on copies of the same state, and compares results *and* the state
each function updates in place. Integers (signatures, cells, distances,
slots, window and table contents) must be identical. Floats are compared with
the tolerances below: the cpu backend reproduces the reference's arithmetic
and meets them with room to spare (it is bit-identical except for the order
of the float64 reductions in ``coverage_reduce``); a GPU backend sums in
another order and needs them.

Shapes cover n = 0, 1 and small odd sizes, several accounts, accounts with
batches longer than the near-duplicate window, D not a multiple of 32, and float16 input.
"""

from __future__ import annotations

import functools
from typing import Any

import numpy as np
import pytest

from streamguard.backends import NumpyBackend, create_backend, cuda_unavailable_reason
from streamguard.backends.numpy_backend import band_buckets

RTOL32 = 2e-5
"""float32 results (residual energy, float32 state): relative tolerance."""
RTOL64 = 1e-10
"""float64 results and state (style weights, coverage reductions)."""

BACKENDS = [
    "numpy",
    "cpu",
    "cpu-parallel",  # the cpu backend's parallel kernels, forced on every input size
    pytest.param("cuda", marks=pytest.mark.gpu),
]


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> Any:
    name = request.param
    if name == "cuda":
        reason = cuda_unavailable_reason()
        if reason is not None:
            pytest.skip(reason)
    if name.startswith("cpu"):
        pytest.importorskip("numba")
    if name == "cpu-parallel":
        from streamguard.backends.cpu_backend import CpuBackend

        made = CpuBackend(threads=2)
        if made.threads < 2:
            pytest.skip("one core: no parallel kernels to test")
        made.parallel_rows = 1
    else:
        made = create_backend(name)
    made.warmup()
    return made


@pytest.fixture(scope="module")
def reference() -> NumpyBackend:
    return NumpyBackend()


def host(backend: Any, value: Any) -> np.ndarray:
    return np.asarray(backend.to_host(value))


def device(backend: Any, *arrays: np.ndarray) -> list[Any]:
    """Copies of host arrays on the backend (the reference works on its own copies)."""
    return [backend.asarray(np.array(a, copy=True)) for a in arrays]


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def account_slots(rng: np.random.Generator, n: int, accounts: int) -> np.ndarray:
    """Slots in [0, accounts), one account heavy enough to exceed any small ring in one batch."""
    slots = rng.integers(0, accounts, n).astype(np.int64)
    slots[::2] = accounts - 1
    return slots


def near_duplicate_signatures(rng: np.random.Generator, n: int, words: int, flips: int = 6) -> np.ndarray:
    """(n, words) uint64: a few templates, each copy with up to ``flips`` bits flipped, plus random rows."""
    templates = rng.integers(0, 2**63, (4, words), dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
    sigs = templates[rng.integers(0, 4, n)].copy()
    for i in range(n):
        for _ in range(rng.integers(0, flips + 1)):
            bit = int(rng.integers(0, words * 64))
            sigs[i, bit // 64] ^= np.uint64(1) << np.uint64(bit % 64)
    fresh = rng.random(n) < 0.2
    sigs[fresh] = rng.integers(0, 2**63, (int(fresh.sum()), words), dtype=np.int64).astype(np.uint64)
    return sigs


SIZES = [0, 1, 2, 7, 33, 129]


# ------------------------------------------------------------------ signatures


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d,bits", [(5, 64), (33, 128), (96, 192)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_signatures(backend: Any, reference: NumpyBackend, n: int, d: int, bits: int, dtype: type) -> None:
    rng = np.random.default_rng(n * 1000 + d)
    emb = unit_rows(rng, n, d).astype(dtype)
    planes = rng.standard_normal((d, bits)).astype(np.float32)
    offsets = (rng.standard_normal(d).astype(np.float32) * 0.1) @ planes
    expected = reference.signatures(emb, planes, offsets)
    got = host(backend, backend.signatures(*device(backend, emb, planes, offsets)))
    assert got.dtype == np.uint64 and got.shape == (n, bits // 64)
    np.testing.assert_array_equal(got, expected)


# -------------------------------------------------------------- destyled cells


def _cells_case(rng: np.random.Generator, n: int, d: int, cells: int, accounts: int, dtype: type) -> dict[str, np.ndarray]:
    mean = (rng.standard_normal(d) * 0.2).astype(np.float32)
    style_weight = rng.random(accounts) * 3.0
    style_weight[: max(1, accounts // 3)] = 0.0  # accounts with no style yet
    return {
        "embeddings": unit_rows(rng, n, d).astype(dtype),
        "mean": mean,
        "centroids": unit_rows(rng, cells, d),
        "slots": account_slots(rng, n, accounts),
        "weights": rng.uniform(0.5, 2.0, n),
        "style_sum": np.where(style_weight[:, None] > 0, rng.standard_normal((accounts, d)) * 0.3, 0.0).astype(np.float32),
        "style_weight": style_weight,
    }


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("d,cells,accounts", [(5, 3, 2), (33, 17, 5), (96, 64, 9)])
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_destyled_cells(backend: Any, reference: NumpyBackend, n: int, d: int, cells: int, accounts: int, dtype: type) -> None:
    rng = np.random.default_rng(7 * n + d)
    case = _cells_case(rng, n, d, cells, accounts, dtype)
    order = ["embeddings", "mean", "centroids", "slots", "weights", "style_sum", "style_weight"]
    ref_state = {k: case[k].copy() for k in order}
    dev = dict(zip(order, device(backend, *(case[k] for k in order))))
    for step in range(2):  # the second batch sees the state the first one left
        want_cells, want_sq = reference.destyled_cells(*(ref_state[k] for k in order))
        got_cells, got_sq = backend.destyled_cells(*(dev[k] for k in order))
        got_cells, got_sq = host(backend, got_cells), host(backend, got_sq)
        assert got_cells.dtype == np.int32 and got_cells.shape == (n,), step
        assert got_sq.dtype == np.float32 and got_sq.shape == (n,), step
        np.testing.assert_array_equal(got_cells, want_cells)
        np.testing.assert_allclose(got_sq, want_sq, rtol=RTOL32, atol=1e-6)
        np.testing.assert_allclose(host(backend, dev["style_sum"]), ref_state["style_sum"], rtol=RTOL32, atol=1e-6)
        np.testing.assert_allclose(host(backend, dev["style_weight"]), ref_state["style_weight"], rtol=RTOL64)


@pytest.mark.parametrize("n", [64, 65, 300, 1100])
def test_destyled_cells_large_batches(backend: Any, reference: NumpyBackend, n: int) -> None:
    """Batches big enough for the cpu backend's Gram path (K * d >= 32768), over several steps.

    Uneven weights and accounts that already have a style put many rows near
    a tie between two cells, where that path must defer to the exact GEMM.
    """
    rng = np.random.default_rng(n)
    d, cells, accounts = 96, 512, 40
    case = _cells_case(rng, n, d, cells, accounts, np.float32)
    order = ["embeddings", "mean", "centroids", "slots", "weights", "style_sum", "style_weight"]
    ref_state = {k: case[k].copy() for k in order}
    dev = dict(zip(order, device(backend, *(case[k] for k in order))))
    for step in range(3):
        embeddings = unit_rows(rng, n, d)
        slots = account_slots(rng, n, accounts)
        weights = rng.uniform(0.2, 3.0, n)
        ref_state.update(embeddings=embeddings, slots=slots, weights=weights)
        dev.update(zip(["embeddings", "slots", "weights"], device(backend, embeddings, slots, weights)))
        want_cells, want_sq = reference.destyled_cells(*(ref_state[k] for k in order))
        got_cells, got_sq = backend.destyled_cells(*(dev[k] for k in order))
        np.testing.assert_array_equal(host(backend, got_cells), want_cells, err_msg=f"step {step}")
        np.testing.assert_allclose(host(backend, got_sq), want_sq, rtol=RTOL32, atol=1e-6)
        np.testing.assert_allclose(host(backend, dev["style_sum"]), ref_state["style_sum"], rtol=RTOL32, atol=1e-5)
        np.testing.assert_allclose(host(backend, dev["style_weight"]), ref_state["style_weight"], rtol=RTOL64)
    if backend.name == "cpu":
        # The fast path really ran, and agreed with the full GEMM on its first batch.
        assert backend._codebook is not None and backend._codebook.verified is True
        assert backend.gram_rows > 0


# ---------------------------------------------------------- near-duplicate scan


def _scan_in_pieces(backend: Any, sigs: np.ndarray, slots: np.ndarray, state: list[Any], position: int, window: int) -> tuple[np.ndarray, int]:
    """``dup_scan`` over a batch cut into the pieces the window store allows; the distances and the next position."""
    piece = int(np.asarray(backend.to_host(state[1])).shape[0]) - window
    parts = []
    for a in range(0, sigs.shape[0], piece):
        b = min(sigs.shape[0], a + piece)
        parts.append(host(backend, backend.dup_scan(*device(backend, sigs[a:b], slots[a:b]), *state, position, window).within_dist))
        position += b - a
    return (np.concatenate(parts) if parts else np.empty(0, np.int32)), position


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("words,window,accounts", [(1, 4, 3), (2, 8, 6), (3, 64, 2), (2, 200, 9)])
def test_dup_scan(backend: Any, reference: NumpyBackend, n: int, words: int, window: int, accounts: int) -> None:
    rng = np.random.default_rng(31 * n + window)
    rows = 2 * window
    state = [np.zeros((rows, words), dtype=np.uint64), np.full(rows, -1, dtype=np.int64), np.full(accounts + 1, -1, dtype=np.int64)]
    # Warm state: the window has wrapped around its rows (3 windows' worth of requests); slot `accounts` stays fresh.
    prefill = near_duplicate_signatures(rng, 3 * window, words)
    _, position = _scan_in_pieces(reference, prefill, account_slots(rng, prefill.shape[0], accounts), state, 0, window)
    ref_state = [a.copy() for a in state]
    dev_state = device(backend, *state)
    for step in range(2):
        sigs = near_duplicate_signatures(rng, n, words)
        slots = account_slots(rng, n, accounts)
        if n > 3:
            slots[3] = accounts  # a fresh account: its head is -1
        want, _ = _scan_in_pieces(reference, sigs, slots, ref_state, position, window)
        got, position = _scan_in_pieces(backend, sigs, slots, dev_state, position, window)
        assert got.dtype == np.int32 and got.shape == (n,), step
        np.testing.assert_array_equal(got, want)
        for dev, ref in zip(dev_state, ref_state, strict=True):
            np.testing.assert_array_equal(host(backend, dev), ref)
    if n > window:
        assert n > rows - window  # the batch was cut into pieces


def test_dup_scan_on_heavy_accounts(backend: Any, reference: NumpyBackend) -> None:
    """Long chains (a few accounts own the window), many requests of one account per batch, evictions (head -1)."""
    rng = np.random.default_rng(11)
    words, window, accounts, n = 2, 300, 4, 1000
    state = [np.zeros((2 * window, words), np.uint64), np.full(2 * window, -1, np.int64), np.full(accounts, -1, np.int64)]
    ref_state = [a.copy() for a in state]
    dev_state = device(backend, *state)
    position = 0
    for step in range(4):
        sigs = near_duplicate_signatures(rng, n, words, flips=12)
        slots = rng.choice(accounts, size=n, p=[0.7, 0.2, 0.05, 0.05]).astype(np.int64)
        want, _ = _scan_in_pieces(reference, sigs, slots, ref_state, position, window)
        got, position = _scan_in_pieces(backend, sigs, slots, dev_state, position, window)
        np.testing.assert_array_equal(got, want, err_msg=f"step {step}")
        for dev, ref in zip(dev_state, ref_state, strict=True):
            np.testing.assert_array_equal(host(backend, dev), ref)
        # Evict account 1 (as NearDuplicateDetector.reset does).
        ref_state[2][1] = -1
        dev_head = host(backend, dev_state[2]).copy()
        dev_head[1] = -1
        dev_state[2] = backend.asarray(dev_head)


# ------------------------------------------------------- cross-account lookup


def _tables(bands: int, table_bits: int, words: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    size = 1 << table_bits
    return (
        np.full((bands, size), -1, dtype=np.int64),
        np.zeros((bands, size), dtype=np.int64),
        np.zeros((bands, size, words), dtype=np.uint64),
    )


@pytest.mark.parametrize("n", SIZES + [300])
@pytest.mark.parametrize("words,bands,table_bits", [(1, 4, 8), (2, 8, 8), (2, 8, 16), (3, 8, 10)])
def test_cross_lookup(backend: Any, reference: NumpyBackend, n: int, words: int, bands: int, table_bits: int) -> None:
    rng = np.random.default_rng(17 * n + bands + table_bits)
    radius, window_ms = 8, 5_000
    tables = _tables(bands, table_bits, words)
    ref_tables = [t.copy() for t in tables]
    dev_tables = device(backend, *tables)
    clock = 0
    for step in range(2):
        sigs = near_duplicate_signatures(rng, n, words, flips=10)
        slots = account_slots(rng, n, 7)
        ts = (clock + np.sort(rng.integers(0, 8_000, n)) - rng.integers(0, 50, n)).astype(np.int64)  # mostly ordered
        clock += 8_000
        want = reference.cross_lookup(sigs, slots, ts, *ref_tables, radius, window_ms)
        got = backend.cross_lookup(*device(backend, sigs, slots, ts), *dev_tables, radius, window_ms)
        assert host(backend, got.cross_slot).dtype == np.int64 and host(backend, got.cross_dist).dtype == np.int32
        np.testing.assert_array_equal(host(backend, got.cross_slot), want.cross_slot)
        np.testing.assert_array_equal(host(backend, got.cross_dist), want.cross_dist)
        for got_table, want_table in zip(dev_tables, ref_tables):
            np.testing.assert_array_equal(host(backend, got_table), want_table)
    if n >= 300:
        assert (want.cross_slot >= 0).any() and (want.cross_slot < 0).any()


def test_cross_lookup_ties_go_to_the_lowest_band(backend: Any) -> None:
    """Two bands hold matches at the same distance from different accounts: band order decides."""
    bands, table_bits, words = 8, 8, 2
    rng = np.random.default_rng(5)
    query = rng.integers(0, 2**63, (1, words), dtype=np.int64).astype(np.uint64)
    buckets = band_buckets(query, bands, table_bits)[0]
    table_slot, table_ts, table_sig = _tables(bands, table_bits, words)
    near = query[0].copy()
    near[1] ^= np.uint64(0b111)  # 3 bits away
    farther = query[0].copy()
    farther[0] ^= np.uint64(0b11111)  # 5 bits away
    for b, slot, sig in [(1, 9, farther), (3, 4, near), (6, 2, near)]:
        table_slot[b, buckets[b]], table_ts[b, buckets[b]], table_sig[b, buckets[b]] = slot, 100, sig
    got = backend.cross_lookup(
        *device(backend, query, np.array([1], np.int64), np.array([120], np.int64), table_slot, table_ts, table_sig),
        8,
        1_000,
    )
    assert host(backend, got.cross_slot).tolist() == [4]
    assert host(backend, got.cross_dist).tolist() == [3]


# --------------------------------------------------------------------- coverage


@pytest.mark.parametrize("n", SIZES)
def test_histogram_add(backend: Any, reference: NumpyBackend, n: int) -> None:
    rng = np.random.default_rng(n)
    hist = rng.random((6, 37)).astype(np.float32)
    slots = account_slots(rng, n, 6)
    cells = rng.integers(0, 37, n).astype(np.int32)
    cells[: n // 2] = 3  # duplicates add up
    weights = rng.uniform(0.1, 5.0, n)
    want = hist.copy()
    reference.histogram_add(want, slots, cells, weights)
    (got,) = device(backend, hist)
    backend.histogram_add(got, *device(backend, slots, cells, weights))
    np.testing.assert_allclose(host(backend, got), want, rtol=RTOL32)


@pytest.mark.parametrize("m", [0, 1, 5, 33])
@pytest.mark.parametrize("topics", [1, 7, 129, 512])
def test_coverage_reduce(backend: Any, reference: NumpyBackend, m: int, topics: int) -> None:
    rng = np.random.default_rng(m + topics)
    hist = (rng.random((40, topics)) * (rng.random((40, topics)) < 0.3)).astype(np.float32)
    slots = rng.choice(40, m, replace=False).astype(np.int64)
    surprisal = rng.uniform(1.0, 9.0, topics).astype(np.float32)
    want = reference.coverage_reduce(hist, slots, surprisal)
    got = backend.coverage_reduce(*device(backend, hist, slots, surprisal))
    assert set(got) == set(want)
    for key in want:
        value = host(backend, got[key])
        assert value.dtype == np.float64 and value.shape == (m,), key
        np.testing.assert_allclose(value, want[key], rtol=RTOL64, err_msg=key)
    np.testing.assert_array_equal(host(backend, got["distinct"]), want["distinct"])


# ------------------------------------------------------------------ end to end


def _replay_alerts(table: Any, backend: Any, settings: Any) -> list[tuple[str, str, int, int]]:
    from streamguard.sinks.alerts import MemoryAlertSink
    from streamguard.sinks.dead_letter import DeadLetterSink
    from streamguard.stream.replay import replay_table

    sink = MemoryAlertSink()
    replay_table(table, settings, backend, sink, DeadLetterSink())
    return [(a.account_id, a.kind, a.events_seen, a.ts) for a in sink.alerts]


def _e2e_settings() -> Any:
    """Small batches and a short warm-up put many batches through the detector (ring
    wrap-around, table reuse, style state carried over); 512 cells of 64 dimensions
    are enough for the cpu backend's Gram path."""
    from dataclasses import replace

    from streamguard.config import Settings

    base = Settings()
    return replace(
        base,
        batch=replace(base.batch, max_size=512),
        coverage=replace(base.coverage, warmup=5_000, cells=512, max_topics=128),
        # Streams this small support too few topics for a significant sweep at the default rate.
        scoring=replace(base.scoring, false_alerts_per_10k=2000.0),
        campaign=replace(base.campaign, group_false_alerts_per_10k=2000.0),
    )


E2E_TRAFFIC = {
    "simulator-density": {"seed": 11, "scale": 0.1, "dim": 64},
    "dense": {"seed": 12, "scale": 0.1, "dim": 256, "days": 0.25},  # big updates; K * d large enough for the Gram path
}


@functools.cache
def _reference_case(name: str) -> tuple[Any, list[tuple[str, str, int, int]]]:
    """Simulated traffic and the reference's alerts on it, computed once per session
    (pytest may set a parametrised module fixture up more than once)."""
    from streamguard.sim import SimConfig, simulate

    table = simulate(SimConfig(**E2E_TRAFFIC[name])).table
    alerts = _replay_alerts(table, NumpyBackend(), _e2e_settings())
    assert len(alerts) >= 3, "the scenario must raise alerts to compare"
    return table, alerts


@pytest.fixture(params=sorted(E2E_TRAFFIC))
def e2e_case(request: pytest.FixtureRequest) -> tuple[Any, list[tuple[str, str, int, int]]]:
    return _reference_case(request.param)


def test_replay_alerts_match_the_reference(backend: Any, e2e_case: tuple[Any, list[Any]]) -> None:
    """The whole detector on simulated traffic: the same alerts (account, kind, events seen, ts), in the same order."""
    table, want = e2e_case
    if backend.name == "numpy":
        pytest.skip("the reference itself")
    if getattr(backend, "parallel_rows", None) == 1:
        pytest.skip("the parallel kernels are covered function by function; forced on tiny inputs they only slow this down")
    assert _replay_alerts(table, backend, _e2e_settings()) == want


def test_capped_window_detector(backend: Any, reference: NumpyBackend) -> None:
    """The per-account cap of the window (``dup_query`` for the requests not stored), whole and in batches."""
    from streamguard.detectors.near_duplicate import DetectorBatch, NearDuplicateDetector

    rng = np.random.default_rng(5)
    n, d, accounts = 1500, 12, 6
    planes = rng.standard_normal((d, 128)).astype(np.float32)
    offsets = np.zeros(128, np.float32)
    slots = np.where(rng.random(n) < 0.5, 0, rng.integers(1, accounts, n)).astype(np.int64)
    centres = rng.standard_normal((30, d))
    emb = (centres[rng.integers(0, 30, n)] + 0.05 * rng.standard_normal((n, d))).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    ts = np.arange(n, dtype=np.int64)

    def run(impl: Any, size: int) -> tuple[np.ndarray, int]:
        det = NearDuplicateDetector(impl, planes, offsets, radius=12, window=64, account_share=0.25, capacity=accounts)
        parts = [det.update(DetectorBatch(slots[a : a + size], ts[a : a + size], impl.asarray(emb[a : a + size])))
                 for a in range(0, n, size)]  # fmt: skip
        return np.concatenate([p.within_dist for p in parts]), det.position

    want, stored = run(reference, n)
    assert stored < n  # the heavy account was capped
    for size in (n, 97):
        got, position = run(backend, size)
        np.testing.assert_array_equal(got, want)
        assert position == stored
