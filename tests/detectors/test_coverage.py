"""Coverage statistics tell a sweep from a mirror of the population and from a narrow user."""

import copy

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


def run(world, accounts, prior_weight=1000.0, **options):
    """accounts: list of topic arrays, one per account; returns the detector after seeing them."""
    rng, centroids, popularity = world
    detector = CoverageDetector(
        NumpyBackend(), np.zeros(DIM, np.float32), centroids, np.arange(TOPICS, dtype=np.int32),
        np.arange(TOPICS, dtype=np.int32) // 8, popularity * prior_weight, capacity=len(accounts), **options,
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


def test_sweep_z_of_ordinary_accounts_is_standard_normal_whatever_their_volume(world):
    """The null the sweep line rests on: accounts that pick a few favourite topics from the
    population mix and ask about them hundreds of times have sweep_z ~ N(0, 1); the old
    per-request z grows with volume and would call many of them sweepers."""
    rng, _, popularity = world
    population = [rng.choice(TOPICS, 60, p=popularity) for _ in range(150)]
    ordinary = []
    for _ in range(300):
        favourites = rng.choice(TOPICS, int(rng.integers(2, 12)), replace=False, p=popularity)
        ordinary.append(rng.choice(favourites, int(rng.integers(300, 2000))))
    sweepers = [rng.integers(0, TOPICS, 400) for _ in range(5)]
    det = run(world, population + ordinary + sweepers)
    stats = det.account_stats(np.arange(150, 150 + 300 + 5))
    z, per_request = stats["sweep_z"][:300], stats["rarity_z"][:300]
    assert abs(np.median(z)) < 0.5 and 0.5 < np.std(z) < 1.6
    assert np.mean(z > 3.29) < 0.01  # the line of 5 per 10k passes (almost) none of them
    assert np.mean(np.abs(per_request) > 3.29) > 0.3  # what a per-request standard error would say
    assert (stats["sweep_z"][300:] > 3.29).all()


def test_the_mix_is_fitted_to_ordinary_accounts_so_many_sweepers_cannot_hide_each_other(world):
    """Two accounts in five sweep the topics evenly: in the mix of all traffic their spread
    lifts every rare topic, and they look ordinary to each other. The robust mix leaves them
    out; ordinary accounts (and a heavy account that mirrors the population) stay ordinary."""
    rng, _, popularity = world
    ordinary = []
    for _ in range(400):
        favourites = rng.choice(TOPICS, int(rng.integers(2, 12)), replace=False, p=popularity)
        ordinary.append(rng.choice(favourites, int(rng.integers(200, 1000))))
    sweepers = [rng.integers(0, TOPICS, int(rng.integers(1000, 3000))) for _ in range(250)]
    mirror = [rng.choice(TOPICS, 5000, p=popularity)]
    det = run(world, ordinary + sweepers + mirror, prior_weight=10.0)
    everyone = np.arange(len(ordinary) + len(sweepers) + 1)
    masked = det.account_stats(everyone)["sweep_z"]
    assert np.mean(masked[400:650] > 3.29) < 0.5  # hidden by their own share of the mix

    det.refresh_mix(everyone)
    z = det.account_stats(everyone)["sweep_z"]
    assert np.mean(z[400:650] > 3.29) > 0.95
    assert np.mean(z[:400] > 3.29) < 0.01 and abs(np.median(z[:400])) < 0.5
    assert z[650] < 3.29
    assert not det.mix_member[400:650].any() and det.mix_member[:400].mean() > 0.9


def _users_batch_jobs_product_sweeper(rng, popularity, batch_jobs):
    """400 light users (5-30 requests from the users' mix), ``batch_jobs`` heavy accounts on the
    three most popular topics, a product of 4,000 requests from the users' mix, a sweeper."""
    users = [rng.choice(TOPICS, int(rng.integers(5, 30)), p=popularity) for _ in range(400)]
    jobs = [rng.choice(3, 3000) for _ in range(batch_jobs)]
    product = [rng.choice(TOPICS, 4000, p=popularity)]
    sweeper = [rng.integers(0, TOPICS, 800)]
    return users + jobs + product + sweeper


@pytest.mark.parametrize("batch_jobs", [0, 120])
def test_sweeps_are_counted_from_where_the_light_accounts_stand(world, batch_jobs):
    """Heavy narrow accounts (batch jobs on the popular topics) pull the volume-weighted mix onto
    their topics: against it the users' own mix looks rare, and a product account that mirrors
    thousands of them crosses the sweep line. The light accounts (under 100 requests) show where
    an ordinary account stands; counted from there, the product is ordinary and the sweeper is
    not. Where nothing distorts the mix, the offset is about 0 and the verdicts are the same."""
    rng, _, popularity = world
    accounts = _users_batch_jobs_product_sweeper(rng, popularity, batch_jobs)
    product, sweeper = len(accounts) - 2, len(accounts) - 1
    everyone = np.arange(len(accounts))
    det = run(world, accounts, prior_weight=10.0, light_requests=100, light_min_accounts=30)
    det.refresh_mix(everyone)
    raw = det.account_stats(np.array([product, sweeper]))
    offset = det.centre_on_light(everyone)
    assert det.rarity_offset == offset >= 0.0
    centred = det.account_stats(np.array([product, sweeper]))
    np.testing.assert_allclose(centred["rarity_effect"], raw["rarity_effect"])  # the evidence is unchanged
    assert centred["sweep_z"][1] > 3.29  # the sweeper stays a sweeper
    if batch_jobs:
        assert raw["sweep_z"][0] > 3.29 and offset > 0.2
        assert centred["sweep_z"][0] < 3.29
        # A linked group is counted from the same place.
        group = det.group_stats(np.array([product]))
        assert group["sweep_z"] == pytest.approx(
            (group["rarity_effect"] - offset) * np.sqrt(min(group["n_eff"], group["effective_topics_shannon"]))
        )
    else:
        assert offset < 0.1
        assert (raw["sweep_z"] > 3.29).tolist() == (centred["sweep_z"] > 3.29).tolist() == [False, True]


def test_no_offset_without_enough_light_accounts_or_with_centring_off(world):
    rng, _, popularity = world
    accounts = _users_batch_jobs_product_sweeper(rng, popularity, 120)
    everyone = np.arange(len(accounts))
    off = run(world, accounts, prior_weight=10.0)  # light_requests 0: centring off
    off.refresh_mix(everyone)
    assert off.centre_on_light(everyone) == 0.0
    few = run(world, accounts, prior_weight=10.0, light_requests=100, light_min_accounts=1000)
    few.refresh_mix(everyone)
    assert few.centre_on_light(everyone) == 0.0
    # The offset is part of the detector's state: a restored detector counts from the same place.
    on = run(world, accounts, prior_weight=10.0, light_requests=100)
    on.refresh_mix(everyone)
    offset = on.centre_on_light(everyone)
    restored = run(world, [np.array([0])], prior_weight=10.0, light_requests=100)
    restored.load_state_dict(copy.deepcopy(on.state_dict()))
    assert restored.rarity_offset == offset > 0.0


def test_a_linked_group_that_stands_out_is_left_out_of_the_mix_as_a_whole(world):
    """A campaign divides the topics among its members: each asks about a few, evenly, and
    looks like a power user (kept in the mix), while together they flatten it and hide a
    lone sweeper. Handed the campaign detector's groups, the mix leaves the group out."""
    rng, _, popularity = world
    ordinary = []
    for _ in range(400):
        favourites = rng.choice(TOPICS, int(rng.integers(2, 8)), replace=False, p=popularity)
        ordinary.append(rng.choice(favourites, int(rng.integers(200, 1000))))
    members = [rng.choice(rng.permutation(TOPICS)[:3], int(rng.integers(1000, 2000))) for _ in range(300)]
    sweeper = [rng.integers(0, TOPICS, 1500)]
    det = run(world, ordinary + members + sweeper, prior_weight=10.0)
    everyone = np.arange(701)

    det.refresh_mix(everyone)
    assert det.mix_member[400:700].all()
    assert det.account_stats(everyone)["sweep_z"][700] < 3.29

    det.mix_groups = [np.arange(400, 700)]
    det.refresh_mix(everyone)
    z = det.account_stats(everyone)["sweep_z"]
    assert not det.mix_member[400:700].any()
    assert z[700] > 5.0
    assert np.mean(z[:400] > 3.29) < 0.01 and abs(np.median(z[:400])) < 0.5


def test_a_group_is_judged_against_the_population_without_it(world):
    """A campaign is a visible share of a small stream: against a mix that holds its own
    requests its topics look common; against the rest of the stream they are rare."""
    rng, _, popularity = world
    population = [rng.choice(TOPICS, 60, p=popularity) for _ in range(100)]
    rare = np.arange(25, 40)  # the campaign sweeps the tail
    members = [rng.choice(rare, 400) for _ in range(20)]
    det = run(world, population + members)
    group = det.group_stats(np.arange(100, 120))
    mix = det.population_mix()  # holds the campaign's own mass
    rows = det.hist[np.arange(100, 120)].astype(np.float64).sum(axis=0)
    against_all = (rows @ mix.surprisal / rows.sum() - mix.entropy) / mix.surprisal_sd
    assert group["rarity_effect"] > against_all + 0.3


def test_a_groups_picks_are_counted_past_the_template_that_piles_onto_one_topic(world):
    """Members that divide 30 topics but send a third of their requests to one shared
    template cell: the Shannon number still sees the 30 topics, inverse Simpson a handful."""
    rng, _, popularity = world
    population = [rng.choice(TOPICS, 60, p=popularity) for _ in range(100)]
    slices = np.array_split(rng.permutation(np.arange(10, 40)), 10)
    members = [np.where(rng.random(300) < 0.35, 39, rng.choice(s, 300)) for s in slices]
    det = run(world, population + members)
    group = det.group_stats(np.arange(100, 110))
    assert group["effective_topics"] < 10 < group["effective_topics_shannon"]
    assert group["sweep_z"] == pytest.approx(
        group["rarity_effect"] * np.sqrt(min(group["n_eff"], group["effective_topics_shannon"])), rel=1e-9
    )


def test_group_stats_equal_the_stats_of_the_pooled_requests(world):
    rng, _, _ = world
    a, b = rng.integers(0, 20, 300), rng.integers(20, 40, 300)
    det = run(world, [a, b, np.concatenate([a, b])])
    group = det.group_stats(np.array([0, 1]))
    pooled = det.account_stats(np.array([2]))
    for key in ("effective_topics", "topics_covered", "n_eff"):
        assert group[key] == pytest.approx(float(pooled[key][0]), rel=1e-4)
    # Rarity differs only by the mix it is judged against: the group's is the stream without it.


def test_population_mix_moments():
    mix = PopulationMix.from_counts(np.array([8.0, 1.0, 1.0, 0.0]), np.array([0, 0, 1, 1]))
    assert mix.p.sum() == pytest.approx(1.0)
    assert (mix.p > 0).all()  # the floor keeps unseen topics possible
    assert mix.entropy == pytest.approx(float(mix.p @ -np.log(mix.p)))
    assert mix.effective_topics == pytest.approx(1.0 / float(mix.p @ mix.p))


def test_a_product_that_starts_a_sweep_is_judged_against_its_own_history(world):
    """A product mirroring the population that turns a fifth of its traffic to a sweep is still an
    ordinary account against the population; against its own history the rise is far past the
    line and spread over many topics. A product that goes on as before is not, and a user who
    moves from two favourite topics to two rare ones rises only on a couple of topics."""
    from streamguard.detectors.near_duplicate import DetectorBatch

    rng, centroids, popularity = world
    det = CoverageDetector(
        NumpyBackend(), np.zeros(DIM, np.float32), centroids, np.arange(TOPICS, dtype=np.int32),
        np.arange(TOPICS, dtype=np.int32) // 8, popularity * 1000.0, capacity=4, drift_baseline_requests=1000,
    )
    clock = iter(range(0, 10**9, 1000))

    def send(phase):
        slots = np.concatenate([np.full(len(t), s, np.int64) for s, t in phase.items()])
        topics = np.concatenate(list(phase.values()))
        order = rng.permutation(slots.size)
        ts = np.array([next(clock) for _ in range(slots.size)], dtype=np.int64)
        det.update(DetectorBatch(slots[order], ts, requests(rng, centroids, topics[order])))

    product, steady, mover, small = 0, 1, 2, 3
    send({product: rng.choice(TOPICS, 1500, p=popularity), steady: rng.choice(TOPICS, 1500, p=popularity),
          mover: rng.choice([0, 1], 1500), small: rng.integers(0, TOPICS, 300)})
    sweep = np.concatenate([rng.choice(TOPICS, 3200, p=popularity), rng.integers(0, TOPICS, 800)])
    send({product: sweep, steady: rng.choice(TOPICS, 4000, p=popularity), mover: rng.choice([30, 31], 4000),
          small: rng.integers(0, TOPICS, 300)})
    slots = np.array([product, steady, mover, small])
    drift, stats = det.drift(slots), det.account_stats(slots)
    assert stats["sweep_z"][product] < 3.29  # hidden against the population
    assert drift["drift_z"][product] > 3.29 and drift["drift_topics"][product] > 10
    assert abs(drift["drift_z"][steady]) < 3.29
    assert drift["drift_topics"][mover] < 3  # whatever its z: two new topics are no sweep
    assert drift["drift_z"][small] == 0.0 and drift["drift_topics"][small] == 0.0  # under 1,000 requests: no history
    # The histories survive a snapshot, and an evicted account's is forgotten.
    restored = CoverageDetector(
        NumpyBackend(), np.zeros(DIM, np.float32), centroids, np.arange(TOPICS, dtype=np.int32),
        np.arange(TOPICS, dtype=np.int32) // 8, popularity * 1000.0, capacity=4,
    )
    restored.load_state_dict(det.state_dict())
    np.testing.assert_allclose(restored.drift(slots)["drift_z"], drift["drift_z"])
    det.reset(np.array([product]))
    assert det.drift(slots)["drift_z"][product] == 0.0
    np.testing.assert_allclose(det.drift(slots)["drift_z"][1:], drift["drift_z"][1:])


def test_an_accounts_history_is_the_same_however_the_stream_is_cut_into_batches(world):
    """The history freezes at the account's 1,000th request, not at the end of the batch that holds it."""
    from streamguard.detectors.near_duplicate import DetectorBatch

    rng, centroids, popularity = world
    slots = rng.integers(0, 3, 6000).astype(np.int64)
    topics = np.where(np.arange(6000) < 3000, rng.choice(TOPICS, 6000, p=popularity), rng.integers(0, TOPICS, 6000))
    x, ts = requests(rng, centroids, topics), np.arange(6000, dtype=np.int64) * 60_000

    def frozen(cuts):
        det = CoverageDetector(
            NumpyBackend(), np.zeros(DIM, np.float32), centroids, np.arange(TOPICS, dtype=np.int32),
            np.arange(TOPICS, dtype=np.int32) // 8, popularity * 1000.0, capacity=3, drift_baseline_requests=1000,
        )
        for a, b in zip([0] + cuts, cuts + [6000]):
            det.update(DetectorBatch(slots[a:b], ts[a:b], x[a:b]))
        history = det.history
        return history.hist[history.rows_of(np.arange(3))], history.w, det.drift(np.arange(3))["drift_z"]

    one, many = frozen([]), frozen(list(range(97, 6000, 97)))
    for a, b in zip(one, many):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    assert (one[1] > 0).all() and np.abs(one[2]).max() > 0  # every account has a history and a drift


def test_topic_overlap_gathers_the_population_in_pieces_and_gets_the_same_sums(world):
    rng, _, popularity = world
    det = run(world, [rng.choice(TOPICS, int(rng.integers(1, 80)), p=popularity) for _ in range(300)])
    population = rng.permutation(300)[:257]
    whole = det.hist[population].astype(np.float64).sum(axis=0)
    for chunk in (1, 7, 64, 4096):
        assert np.array_equal(det._summed_rows(population, chunk=chunk), whole)
    a, b = np.array([0, 5, 9]), np.array([1, 6, 299])
    expected = (det.hist[a].astype(np.float64) * det.hist[b] / np.maximum(whole, 1e-300)).sum(axis=1)
    assert np.array_equal(det.topic_overlap(a, b, population), expected)


@pytest.mark.parametrize("with_group", [False, True])
def test_the_mix_refresh_keeps_the_same_accounts_with_its_rows_sparse_or_dense(world, monkeypatch, with_group):
    """Many small accounts (1-3 requests) and a few heavy ones, a linked group among them: the
    sparse rows give the mix of the dense ones (up to the order of float additions)."""
    import streamguard.detectors.coverage as coverage

    rng, _, popularity = world
    small = [rng.choice(TOPICS, int(rng.integers(1, 4)), p=popularity) for _ in range(3000)]
    heavy = [rng.integers(0, TOPICS, 400) for _ in range(20)] + [rng.choice(TOPICS, 900, p=popularity) for _ in range(20)]
    everyone = np.arange(len(small) + len(heavy))
    seen = run(world, small + heavy, prior_weight=10.0)
    fitted = {}
    for name, density in (("dense", 0.0), ("sparse", 1.01)):
        monkeypatch.setattr(coverage, "SPARSE_ROWS_DENSITY", density)
        det = copy.deepcopy(seen)
        if with_group:
            det.mix_groups = [np.arange(3000, 3010)]
        det.refresh_mix(everyone)
        fitted[name] = (det.mix_counts.copy(), det.mix_member.copy())
    np.testing.assert_allclose(fitted["sparse"][0], fitted["dense"][0], rtol=1e-10)
    assert np.array_equal(fitted["sparse"][1], fitted["dense"][1])
    assert 0 < fitted["dense"][1].sum() < everyone.size  # some left out, most kept
