"""One contract over every stateful part (see STYLE.md; after River's ``check_estimator``).

Each part (detectors, the linker, session timing, the scorer, the account table) is fed through a
small adapter, and every check runs over every part: input unchanged, an empty batch changes
nothing, one batch of 2n == two batches of n (results and state), the same seed gives the same
results (and a different one does not), a state round trip gives the same state and the same
future. Adding a part adds an entry to ``PARTS``, not a new hand-written test.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import pytest

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.config import ScoringConfig
from streamguard.detectors.accounts import AccountTable
from streamguard.detectors.campaigns import CampaignDetector, make_style_projection
from streamguard.detectors.codebook import Codebook, fit_codebook
from streamguard.detectors.coverage import CoverageDetector
from streamguard.detectors.features import AccountFeatures
from streamguard.detectors.near_duplicate import DetectorBatch, NearDuplicateDetector
from streamguard.detectors.scoring import Scorer
from streamguard.detectors.timing import SessionTiming
from tests.reference import unit_rows

DIM = 16
ACCOUNTS = 12
CAPACITY = 512  # the scorer's rows are accounts: one slot per row
T0 = 1_767_225_600_000
HOUR = 3_600_000


@dataclass(frozen=True)
class Traffic:
    """One stream of requests, in order; ``row`` numbers them across slices."""

    x: np.ndarray
    slots: np.ndarray
    ts: np.ndarray
    account_ids: np.ndarray
    cross_slot: np.ndarray
    org_ids: np.ndarray
    attributes: np.ndarray
    row: np.ndarray

    def take(self, rows: slice) -> "Traffic":
        return Traffic(**{f.name: getattr(self, f.name)[rows] for f in dataclasses.fields(self)})

    def __len__(self) -> int:
        return int(self.slots.shape[0])


def traffic(seed: int, n: int = 400, tokens: int = 4) -> Traffic:
    """Requests of 12 accounts over 6 hours; ``tokens`` distinct attribute values in all (an account
    remembers 4: more make its ring's content depend on batching, see the xfail below)."""
    rng = np.random.default_rng(seed)
    base = unit_rows(rng, 32, DIM)
    x = base[rng.integers(0, 32, n)] + 0.15 * rng.standard_normal((n, DIM)).astype(np.float32)
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    slots = rng.integers(0, ACCOUNTS, n).astype(np.int64)
    ts = np.sort(rng.integers(0, 6 * HOUR, n)).astype(np.int64) + T0
    # A fifth of the requests repeat another account's prompt; a third bill to an org.
    other = (slots + rng.integers(1, ACCOUNTS, n)) % ACCOUNTS
    cross_slot = np.where(rng.random(n) < 0.2, other, -1).astype(np.int64)
    org_ids = np.array([f"org{s % 3}" if s % 3 else None for s in slots.tolist()], dtype=object)
    values = rng.integers(1, 2**62, tokens, dtype=np.uint64)
    attributes = np.where(rng.random((n, 2)) < 0.5, values[rng.integers(0, tokens, (n, 2))], np.uint64(0)).astype(np.uint64)
    ids = np.array([f"acct{s}" for s in slots.tolist()], dtype=object)
    return Traffic(x, slots, ts, ids, cross_slot, org_ids, attributes, np.arange(n, dtype=np.int64))


# --------------------------------------------------------------------- parts


@dataclass(frozen=True)
class Part:
    """How the contract drives one stateful part.

    make : a fresh part; inputs : the arguments of one feed, from a slice of traffic;
    feed : feed them, return the result as named host arrays; split : whether 2n == n + n holds
    """

    make: Callable[[Codebook], Any]
    inputs: Callable[[Traffic], tuple]
    feed: Callable[[Any, tuple], dict[str, np.ndarray]]
    split: bool = True


def result_arrays(result: Any) -> dict[str, np.ndarray]:
    return {k: np.asarray(v) for k, v in vars(result).items() if isinstance(v, np.ndarray)}


def detector_batch(t: Traffic) -> tuple:
    return (DetectorBatch(t.slots, t.ts, t.x),)


def update(part: Any, args: tuple) -> dict[str, np.ndarray]:
    return result_arrays(part.update(*args))


def near_duplicate(book: Codebook) -> NearDuplicateDetector:
    return NearDuplicateDetector(NumpyBackend(), book.planes, book.plane_offsets, 30, window=8, bands=8, table_bits=10, capacity=CAPACITY)


def coverage(book: Codebook) -> CoverageDetector:
    return CoverageDetector(
        NumpyBackend(), book.mean, book.centroids, book.topic_of_cell, book.domain_of_topic, book.warmup_counts, 24.0, 10,
        capacity=CAPACITY,
    )


def campaigns(book: Codebook) -> CampaignDetector:
    return CampaignDetector(NumpyBackend(), make_style_projection(DIM, 4, 7), capacity=CAPACITY)


def observe(part: Any, args: tuple) -> dict[str, np.ndarray]:
    part.observe(*args)
    return {}


def scorer_inputs(t: Traffic) -> tuple:
    """The scorer judges accounts, not requests: here each row is an account, judged twice
    (crossing, then three hours later), with features that depend on the row alone."""
    m = len(t)
    full = lambda v: np.full(m, v, dtype=np.float64)  # noqa: E731
    sweep_z = 8.0 * t.x[:, 0].astype(np.float64) + 2.0
    features = AccountFeatures(
        rarity=sweep_z / 7.0, rarity_effect=sweep_z / 7.0, rarity_z=sweep_z * 3.0, sweep_z=sweep_z,
        rarity_cond=full(0.0), rarity_cond_effect=full(0.0), rarity_cond_z=full(0.0), spread=full(1.0),
        effective_topics=full(50.0), topics_covered=full(40.0), n_eff=full(200.0),
        seen=300 + t.ts % 100, dup_rate=np.abs(t.x[:, 1]).astype(np.float64), cross_rate=np.abs(t.x[:, 2]).astype(np.float64),
        partnered=t.cross_slot >= 0,
    )
    return t.row, features, t.ts, t.ts - 4 * HOUR


def judge(part: Scorer, args: tuple) -> dict[str, np.ndarray]:
    rows, features, ts, first = args
    part.judge(rows, features.seen, ts, features, first)
    verdicts = part.judge(rows, 2 * features.seen, ts + 3 * HOUR, features, first)
    return {"slot": np.array([v.slot for v in verdicts], np.int64), "score": np.array([v.score for v in verdicts])}


def assign(part: AccountTable, args: tuple) -> dict[str, np.ndarray]:
    return {"slots": part.assign(*args)}


PARTS: dict[str, Part] = {
    "near_duplicate": Part(near_duplicate, detector_batch, update),
    "coverage": Part(coverage, detector_batch, update),
    "campaigns": Part(campaigns, lambda t: (t.slots, t.ts, t.cross_slot, t.org_ids, t.attributes), observe),
    "timing": Part(lambda book: SessionTiming(gap_ms=20 * 60_000, capacity=CAPACITY), lambda t: (t.slots, t.ts), observe),
    # No alert budget: a budget is spent in the order accounts are judged, one call or two.
    "scorer": Part(lambda book: Scorer(ScoringConfig(alert_budget=0.0), CAPACITY), scorer_inputs, judge),
    "accounts": Part(lambda book: AccountTable(CAPACITY), lambda t: (t.account_ids, t.ts), assign),
}


# ---------------------------------------------------------------- comparison


def flat(value: Any, name: str = "") -> dict[str, Any]:
    """Every array and plain value inside ``value`` (dataclasses, dicts, lists), by path."""
    if isinstance(value, AccountFeatures):
        value = value.to_dict()
    elif dataclasses.is_dataclass(value) and not isinstance(value, type):
        value = vars(value)
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flat(item, f"{name}.{key}"))
        return out
    if isinstance(value, (list, tuple)):
        out = {f"{name}#len": len(value)}
        for i, item in enumerate(value):
            out.update(flat(item, f"{name}[{i}]"))
        return out
    if isinstance(value, set):
        return {name: sorted(value)}
    return {name: value.copy() if isinstance(value, np.ndarray) else value}


def assert_same(a: Any, b: Any, rtol: float = 0.0, atol: float = 0.0) -> None:
    fa, fb = flat(a), flat(b)
    assert fa.keys() == fb.keys()
    for key, x in fa.items():
        y = fb[key]
        if isinstance(x, np.ndarray) and x.dtype.kind == "f":
            np.testing.assert_allclose(x, y, rtol=rtol, atol=atol, err_msg=key)
        elif isinstance(x, np.ndarray):
            assert np.asarray(y).dtype == x.dtype, key
            assert x.shape == np.asarray(y).shape and x.tolist() == np.asarray(y).tolist(), key
        elif isinstance(x, float):
            assert x == pytest.approx(y, rel=rtol, abs=atol), key
        else:
            assert x == y, key


@pytest.fixture(scope="module")
def book() -> Codebook:
    t = traffic(99, 800)
    return fit_codebook(t.x, t.slots.astype(str).astype(object), cells=32, max_topics=16, bits=128, plane_seed=1, min_accounts=1)


def run(part: Part, book: Codebook, *slices: Traffic) -> tuple[Any, list[dict[str, np.ndarray]]]:
    obj = part.make(book)
    return obj, [part.feed(obj, part.inputs(t)) for t in slices]


# -------------------------------------------------------------------- checks


@pytest.mark.parametrize("name", sorted(PARTS))
def test_input_is_not_mutated(name, book):
    part = PARTS[name]
    args = part.inputs(traffic(1))
    before = copy.deepcopy(flat(args))
    part.feed(part.make(book), args)
    assert_same(before, flat(args))


@pytest.mark.parametrize("name", sorted(PARTS))
def test_an_empty_batch_changes_nothing(name, book):
    part = PARTS[name]
    t = traffic(1)
    obj, _ = run(part, book, t)
    state = obj.state_dict()
    result = part.feed(obj, part.inputs(t.take(slice(0, 0))))
    assert all(v.shape[0] == 0 for v in result.values())
    assert_same(state, obj.state_dict())


@pytest.mark.parametrize("name", sorted(n for n, p in PARTS.items() if p.split))
def test_one_batch_of_2n_equals_two_batches_of_n(name, book):
    part = PARTS[name]
    t = traffic(2)
    h = len(t) // 2
    whole, (one,) = run(part, book, t)
    split, (first, second) = run(part, book, t.take(slice(0, h)), t.take(slice(h, None)))
    joined = {k: np.concatenate([first[k], second[k]]) for k in one}
    assert_same(one, joined, rtol=1e-5, atol=1e-6)
    assert_same(whole.state_dict(), split.state_dict(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", sorted(PARTS))
def test_same_seed_same_results(name, book):
    part = PARTS[name]
    a_part, (a,) = run(part, book, traffic(3))
    b_part, (b,) = run(part, book, traffic(3))
    assert_same(a, b)
    assert_same(a_part.state_dict(), b_part.state_dict())
    for value in a.values():
        if value.dtype.kind == "f":
            assert np.isfinite(value).all()
    # A different seed changes the state: the check can fail.
    c_part, _ = run(part, book, traffic(4))
    with pytest.raises(AssertionError):
        assert_same(a_part.state_dict(), c_part.state_dict())


@pytest.mark.parametrize("name", sorted(PARTS))
def test_state_round_trip_gives_the_same_state_and_future(name, book):
    part = PARTS[name]
    t = traffic(5)
    h = len(t) // 2
    original, _ = run(part, book, t.take(slice(0, h)))
    restored = part.make(book)
    restored.load_state_dict(original.state_dict())
    assert_same(original.state_dict(), restored.state_dict())
    rest = t.take(slice(h, None))
    assert_same(part.feed(original, part.inputs(rest)), part.feed(restored, part.inputs(rest)))
    assert_same(original.state_dict(), restored.state_dict())


@pytest.mark.xfail(
    strict=True,
    reason="an account's attribute ring keeps a batch's distinct values in order of first appearance, so "
    "past its 4 slots a value seen early and again late survives a cut between the two and not one batch "
    "(detectors/attribute_groups.py); a known batching dependence, outside this contract's refactor",
)
def test_campaign_attribute_rings_past_their_size_do_not_depend_on_batching(book):
    part = PARTS["campaigns"]
    t = traffic(2, tokens=6)
    h = len(t) // 2
    whole, _ = run(part, book, t)
    split, _ = run(part, book, t.take(slice(0, h)), t.take(slice(h, None)))
    assert_same(whole.state_dict()["attr_tokens"], split.state_dict()["attr_tokens"])
