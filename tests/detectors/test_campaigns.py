import math

import numpy as np

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.detectors.campaigns import FOREIGN_BASE, WEAK_STYLE_SHARE, CampaignDetector, make_style_projection
from streamguard.detectors.coverage import CoverageDetector
from streamguard.detectors.near_duplicate import DetectorBatch
from tests.reference import unit_rows

DIM, TOPICS = 96, 48
HOUR = 3_600_000
NOW = 1_767_225_600_000


def build(rng):
    centroids = unit_rows(rng, TOPICS, DIM)
    cov = CoverageDetector(
        NumpyBackend(), np.zeros(DIM, np.float32), centroids, np.arange(TOPICS, dtype=np.int32),
        np.arange(TOPICS, dtype=np.int32) // 6, np.ones(TOPICS), capacity=64,
    )
    camp = CampaignDetector(NumpyBackend(), make_style_projection(DIM, 64, 1), capacity=64, min_group=3, link_min_requests=20)
    return centroids, cov, camp


def send(rng, cov, centroids, slot, topics, template=None, strength=0.6):
    x = centroids[topics] + 0.3 * rng.standard_normal((len(topics), DIM)).astype(np.float32)
    if template is not None:
        x = x + strength * template
    x = (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)
    cov.update(DetectorBatch(np.full(len(topics), slot, np.int64), np.arange(len(topics), dtype=np.int64), x))


def test_members_sharing_a_template_are_linked_and_divide_the_work():
    rng = np.random.default_rng(0)
    centroids, cov, camp = build(rng)
    template = unit_rows(rng, 1, DIM)[0]
    for member in range(8):  # each member covers its own slice of 6 topics
        send(rng, cov, centroids, member, rng.integers(member * 6, member * 6 + 6, 120), template)
    for user in range(8, 30):  # ordinary users, no shared template
        send(rng, cov, centroids, user, rng.integers(0, TOPICS, 60))
    seen = np.r_[np.full(8, 120), np.full(22, 60), np.zeros(34)].astype(np.int64)
    campaigns = camp.link(cov, seen, np.arange(30), NOW)
    assert len(campaigns) == 1
    assert sorted(campaigns[0].members.tolist()) == list(range(8))
    assert campaigns[0].stats["complementarity"] > 3
    # The id is stable while the group persists.
    again = camp.link(cov, seen, np.arange(30), NOW)
    assert again[0].campaign_id == campaigns[0].campaign_id


def test_small_accounts_join_a_group_whose_template_they_share_and_never_make_one():
    """A slow campaign's members send too few requests to be linked on their own (under
    ``link_min_requests``, 20 here): one that shares the template of an existing group joins it;
    small accounts never form a group of their own, and small ordinary users join nothing."""
    rng = np.random.default_rng(12)
    centroids, cov, camp = build(rng)
    template, other = unit_rows(rng, 2, DIM)
    for member in range(8):  # the campaign's larger members, each on its own slice of 6 topics
        send(rng, cov, centroids, member, rng.integers(member * 6, member * 6 + 6, 120), template, strength=2.0)
    for member in range(8, 14):  # its small members: 16 requests each, same template
        slice_ = (member - 8) * 6
        send(rng, cov, centroids, member, rng.integers(slice_, slice_ + 6, 16), template, strength=2.0)
    for user in range(14, 34):  # small ordinary users, no template
        send(rng, cov, centroids, user, rng.integers(0, TOPICS, 16))
    for account in range(34, 40):  # small accounts sharing a template of their own, and no group
        send(rng, cov, centroids, account, rng.integers(0, TOPICS, 16), other, strength=2.0)
    seen = np.r_[np.full(8, 120), np.full(32, 16), np.zeros(24)].astype(np.int64)
    campaigns = camp.link(cov, seen, np.arange(40), NOW)
    assert [sorted(c.members.tolist()) for c in campaigns] == [list(range(14))]
    assert campaigns[0].stats["links_small_members"] == 6
    # The cheap screen of many small accounts keeps every style the exact test finds, and drops
    # the ordinary users' (no template: their styles are noise, at 1 +- sqrt(2 / 96) of the noise
    # line here, against a screen at 4/3 of it: one in twenty may pass, to be dropped by the test).
    weak_line = camp.style_snr * WEAK_STYLE_SHARE
    screened = camp._style_energy_floor(cov, np.arange(8, 40), weak_line)
    strong, _, _ = camp._strong_styles(cov, np.arange(8, 40), weak_line)
    assert set(strong.tolist()) <= set(screened.tolist())
    assert len(set(range(14, 34)) & set(screened.tolist())) <= 1
    # Without the larger members there is no group to join.
    assert camp.link(cov, seen, np.arange(8, 40), NOW) == []


def turned(t, e, degrees):
    """The unit direction ``degrees`` from ``t`` towards ``e`` (orthonormal)."""
    r = math.radians(degrees)
    return (math.cos(r) * t + math.sin(r) * e).astype(np.float32)


def orthonormal_pair(rng):
    t, e = unit_rows(rng, 2, DIM)
    e = e - (e @ t) * t
    return t, (e / np.linalg.norm(e)).astype(np.float32)


def test_a_small_account_with_a_weak_style_joins_only_a_group_it_links_almost_whole():
    """An account whose style stands under ``style_snr`` (but over half of it), small or not, joins
    a group only when it links to three quarters of its members: a slow campaign's smallest member shares
    the template with all of them; an account leaning one side's way links to about half."""
    rng = np.random.default_rng(1)
    centroids, cov, camp = build(rng)
    t, _ = orthonormal_pair(rng)
    for member in range(8):  # one template throughout
        send(rng, cov, centroids, member, rng.integers(member * 6, member * 6 + 6, 120), t, strength=2.0)
    send(rng, cov, centroids, 8, rng.integers(0, TOPICS, 16), t, strength=1.2)
    # A member over link_min_requests (20 here) with a weak share of the template, and one with none.
    send(rng, cov, centroids, 9, rng.integers(0, TOPICS, 60), t, strength=0.6)
    send(rng, cov, centroids, 10, rng.integers(0, TOPICS, 60))
    seen = np.r_[np.full(8, 120), 16, 60, 60, np.zeros(53)].astype(np.int64)
    _, _, snr = camp._strong_styles(cov, np.array([8, 9]), 0.0)
    # The weak tier is what is tested, for a small account and for one that could link on its own.
    assert (camp.style_snr * WEAK_STYLE_SHARE <= snr).all() and (snr < camp.style_snr).all()
    campaigns = camp.link(cov, seen, np.arange(11), NOW)
    assert [sorted(c.members.tolist()) for c in campaigns] == [list(range(10))]
    assert campaigns[0].stats["links_small_members"] == 1 and campaigns[0].stats["links_weak_members"] == 1

    # A group of two sides: five members on one template, three on one turned 60 degrees from
    # it, and a member between that links the two. Small accounts of the first side's template
    # link to the first side only (and perhaps the member between): about six of nine.
    rng = np.random.default_rng(20)
    centroids, cov, camp = build(rng)
    t, e = orthonormal_pair(rng)
    for member, degrees in enumerate([0] * 5 + [60] * 3 + [30]):
        topics = rng.integers(member * 5 % 42, member * 5 % 42 + 6, 120)
        send(rng, cov, centroids, member, topics, turned(t, e, degrees), strength=2.0)
    send(rng, cov, centroids, 9, rng.integers(0, TOPICS, 16), t, strength=2.0)  # strong style
    send(rng, cov, centroids, 10, rng.integers(0, TOPICS, 16), t, strength=1.2)  # weak style
    seen = np.r_[np.full(9, 120), 16, 16, np.zeros(53)].astype(np.int64)
    found, unit, snr = camp._strong_styles(cov, np.array([9, 10]), 0.0)
    _, members_unit, _ = camp._strong_styles(cov, np.arange(9))
    links = (unit @ members_unit.T >= camp.link_z / math.sqrt(camp.dims)).sum(axis=1)
    assert snr[0] >= camp.style_snr and camp.style_snr * WEAK_STYLE_SHARE <= snr[1] < camp.style_snr
    assert (links >= 5).all() and (links < 7).all()  # at least half, under three quarters
    assert [sorted(c.members.tolist()) for c in camp.link(cov, seen, np.arange(11), NOW)] == [list(range(10))]


def test_accounts_repeating_the_same_work_are_not_a_campaign():
    rng = np.random.default_rng(1)
    centroids, cov, camp = build(rng)
    template = unit_rows(rng, 1, DIM)[0]
    suite = rng.integers(0, TOPICS, 150)
    for runner in range(5):  # five accounts run the same benchmark suite with one template
        send(rng, cov, centroids, runner, suite, template)
    seen = np.r_[np.full(5, 150), np.zeros(59)].astype(np.int64)
    assert camp.link(cov, seen, np.arange(5), NOW) == []


def share_prompts(camp, a, b, times, ts=NOW):
    """``times`` cross-account near-duplicates between slots ``a`` (the later sender) and ``b``."""
    n = int(times)
    camp.observe(np.full(n, a, np.int64), np.full(n, ts, np.int64), np.full(n, b, np.int64), None)


def slices_without_template(rng, cov, centroids, members, per_member=120):
    """Members covering their own slice of topics, with no style in common."""
    for member in members:
        send(rng, cov, centroids, member, rng.integers(member * 6 % TOPICS, member * 6 % TOPICS + 6, per_member))


def test_accounts_sharing_prompts_repeatedly_are_linked_without_a_template():
    rng = np.random.default_rng(2)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(8))
    seen = np.r_[np.full(8, 120), np.zeros(56)].astype(np.int64)
    assert camp.link(cov, seen, np.arange(8), NOW) == []  # nothing links them yet
    for member in range(8):  # a ring: each resends some of the previous member's prompts
        share_prompts(camp, member, (member - 1) % 8, 8)
    cross = np.r_[np.full(8, 8), np.zeros(56)].astype(np.int64)
    campaigns = camp.link(cov, seen, np.arange(8), NOW, cross_dups=cross)
    assert len(campaigns) == 1 and campaigns[0].members.tolist() == list(range(8))
    assert campaigns[0].stats["links_shared_prompts"] == 8
    assert campaigns[0].stats["cross_rate"] == 8 / 120


def test_an_account_attached_by_a_single_link_is_not_a_member():
    rng = np.random.default_rng(6)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(9))
    seen = np.r_[np.full(9, 120), np.zeros(55)].astype(np.int64)
    for member in range(8):
        share_prompts(camp, member, (member - 1) % 8, 8)
    share_prompts(camp, 8, 3, 9)  # slot 8 resent a few of member 3's prompts, once in a while
    campaigns = camp.link(cov, seen, np.arange(9), NOW)
    assert [c.members.tolist() for c in campaigns] == [list(range(8))]


def test_one_popular_prompt_in_common_is_no_link_and_old_evidence_fades():
    rng = np.random.default_rng(3)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(8))
    seen = np.r_[np.full(8, 120), np.zeros(56)].astype(np.int64)
    for member in range(1, 8):  # everyone once sent the same famous prompt
        share_prompts(camp, member, 0, 1)
    assert camp.link(cov, seen, np.arange(8), NOW) == []
    for member in range(1, 8):  # strong evidence, but two days old: 3 x 2**-2 < 3
        share_prompts(camp, member, member - 1, 3, ts=NOW - 48 * HOUR)
    assert camp.link(cov, seen, np.arange(8), NOW) == []
    lo, hi, weight = camp.edge_weights(NOW)
    assert weight.max() < 3.0 and lo.size == hi.size == weight.size


def test_an_org_alone_is_no_link_but_lowers_the_bar():
    rng = np.random.default_rng(4)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(8))
    seen = np.r_[np.full(8, 120), np.zeros(56)].astype(np.int64)
    orgs = np.array(["org-a"] * 8, dtype=object)
    camp.observe(np.arange(8, dtype=np.int64), np.full(8, NOW, np.int64), np.full(8, -1, np.int64), orgs)
    assert camp.link(cov, seen, np.arange(8), NOW) == []  # employees of one company
    for member in range(8):  # one shared prompt per pair is enough inside one org
        share_prompts(camp, member, (member - 1) % 8, 1)
    campaigns = camp.link(cov, seen, np.arange(8), NOW)
    assert len(campaigns) == 1 and campaigns[0].members.size == 8
    assert campaigns[0].stats["links_same_org"] == 8


def test_allowlisted_and_evicted_accounts_are_not_linked():
    rng = np.random.default_rng(5)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(8))
    seen = np.r_[np.full(8, 120), np.zeros(56)].astype(np.int64)
    for member in range(8):
        for back in (1, 2):  # each resends prompts of the two members before it
            share_prompts(camp, member, (member - back) % 8, 8)
    excluded = np.zeros(64, dtype=bool)
    excluded[2] = True
    campaigns = camp.link(cov, seen, np.arange(8), NOW, excluded=excluded)
    assert [c.members.tolist() for c in campaigns] == [[0, 1, 3, 4, 5, 6, 7]]
    camp.reset(np.array([5]))
    assert all(5 not in (k >> 32, k & 0xFFFFFFFF) for k in camp.edges.keys.tolist())


def test_resetting_slots_drops_exactly_their_edges_and_keeps_the_rest_as_they_were():
    camp = build(np.random.default_rng(3))[2]
    foreign = FOREIGN_BASE + 7  # an account of another partition, known by key only
    a = np.array([1, 2, 2, 4, 6, 1], dtype=np.int64)
    b = np.array([2, 3, 5, foreign, 9, 9], dtype=np.int64)
    camp._add_edges(a, b, np.arange(a.size, dtype=np.int64) * 1000 + NOW)
    assert len(camp.edges) == 6
    before = dict(zip(camp.edges.keys.tolist(), zip(camp.edges.weight.tolist(), camp.edges.at.tolist())))
    camp.reset(np.array([2, 9]))
    kept = {k: v for k, v in before.items() if not {k >> 32, k & 0xFFFFFFFF} & {2, 9}}
    assert dict(zip(camp.edges.keys.tolist(), zip(camp.edges.weight.tolist(), camp.edges.at.tolist()))) == kept
    assert [(k >> 32, k & 0xFFFFFFFF) for k in kept] == [(4, foreign)]


def test_heavy_accounts_meeting_by_chance_are_not_linked():
    rng = np.random.default_rng(7)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(4), per_member=400)
    seen = np.r_[np.full(4, 400), np.zeros(60)].astype(np.int64)
    for member in range(4):  # 5 near-duplicates in 400 requests: chance on popular topics
        share_prompts(camp, member, (member - 1) % 4, 5)
    assert camp.link(cov, seen, np.arange(4), NOW) == []
    for member in range(4):  # 40 in 400: a rate
        share_prompts(camp, member, (member - 1) % 4, 35)
    assert len(camp.link(cov, seen, np.arange(4), NOW)) == 1


def test_accounts_of_other_partitions_connect_this_partitions_members():
    from streamguard.detectors.campaigns import FOREIGN_BASE

    rng = np.random.default_rng(8)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(6))
    seen = np.r_[np.full(6, 120), np.zeros(58)].astype(np.int64)
    # Local members 0..5 of a ring whose other half lives on another partition: each local member
    # shares prompts with the foreign members next to it, never with another local one.
    foreign = np.array([101, 102, 103, 104, 105, 106], dtype=np.uint64)
    for member in range(6):
        for key in (foreign[member], foreign[(member + 1) % 6]):
            camp.observe_foreign(np.full(8, member, np.int64), np.full(8, NOW, np.int64), np.full(8, key, np.uint64))
    campaigns = camp.link(cov, seen, np.arange(6), NOW)
    assert [c.members.tolist() for c in campaigns] == [list(range(6))]
    assert campaigns[0].stats["links_other_partitions"] == 6
    assert all(k & 0xFFFFFFFF >= FOREIGN_BASE for k in camp.edges.keys.tolist())


def test_shared_prompt_evidence_is_bounded_by_dropping_the_weakest():
    rng = np.random.default_rng(9)
    _, _, camp = build(rng)
    camp.max_edges = 10
    for pair in range(30):  # 30 pairs of accounts, pair k with k+1 shared prompts
        share_prompts(camp, 2 * pair, 2 * pair + 1, pair + 1)
    lo, hi, weight = camp.edge_weights(NOW)
    assert len(camp.edges) == 10 and sorted(weight.tolist()) == [float(k) for k in range(21, 31)]


def share_value(camp, slots, value, key="net"):
    """Each of ``slots`` sends one request carrying ``key`` = ``value``."""
    from streamguard.attributes import PER_REQUEST, token

    attributes = np.zeros((len(slots), PER_REQUEST), np.uint64)
    attributes[:, 0] = token(key, value)
    n = len(slots)
    camp.observe(np.asarray(slots, np.int64), np.full(n, NOW, np.int64), np.full(n, -1, np.int64), None, attributes)


def test_accounts_sharing_a_rare_attribute_value_are_judged_as_one_group():
    rng = np.random.default_rng(7)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(8))  # no template, no shared prompt: nothing else links them
    for user in range(8, 40):
        send(rng, cov, centroids, user, rng.integers(0, TOPICS, 60))
    seen = np.r_[np.full(8, 120), np.full(32, 60), np.zeros(24)].astype(np.int64)
    assert camp.link(cov, seen, np.arange(40), NOW) == []
    share_value(camp, range(8), "proxy-1")
    share_value(camp, range(8, 40), "carrier-nat")  # 32 of 40 live accounts: infrastructure, no group
    groups = camp.link(cov, seen, np.arange(40), NOW)
    assert len(groups) == 1 and sorted(groups[0].members.tolist()) == list(range(8))
    stats = groups[0].stats
    assert stats["attribute_share"] == 8 / 40 and stats["links_attribute"] == 28 and stats["complementarity"] > 3
    assert groups[0].campaign_id.startswith("campaign-net-") and "proxy" not in groups[0].campaign_id
    assert camp.link(cov, seen, np.arange(40), NOW)[0].campaign_id == groups[0].campaign_id


def test_attribute_tokens_are_bounded_per_account_and_survive_a_state_round_trip():
    rng = np.random.default_rng(8)
    _, _, camp = build(rng)
    for value in range(10):  # an account rotating through ten network prefixes keeps the latest four
        share_value(camp, [3], f"p{value}")
    from streamguard.attributes import token

    assert set(camp.attr_tokens[3].tolist()) == {token("net", f"p{v}") for v in range(6, 10)}
    share_value(camp, [3], "p9")  # a token it holds already takes no room
    assert set(camp.attr_tokens[3].tolist()) == {token("net", f"p{v}") for v in range(6, 10)}
    fresh = build(np.random.default_rng(8))[2]
    fresh.load_state_dict(camp.state_dict())
    assert np.array_equal(fresh.attr_tokens, camp.attr_tokens)
    camp.reset(np.array([3]))
    assert not camp.attr_tokens[3].any()


def test_a_value_whose_holders_are_a_random_sample_is_judged_against_random_groups():
    rng = np.random.default_rng(9)
    centroids, cov, camp = build(rng)
    camp.group_line = 2.0
    for slot in range(60):  # a third of the accounts sweep every topic, the others ask about 4 of the first half
        topics = rng.integers(0, TOPICS, 150) if slot % 3 == 0 else rng.choice(rng.choice(24, 4, replace=False), 150)
        send(rng, cov, centroids, slot, topics)
    cov.refresh_mix(np.arange(60))
    seen = np.r_[np.full(60, 150), np.zeros(4)].astype(np.int64)
    common = np.array([0, 3, 6, 1, 2, 4, 5, 7, 8, 10])  # 10 holders like the population: 3 sweepers
    share_value(camp, common, "sdk-1", key="client")
    groups = camp.link(cov, seen, np.arange(60), NOW)
    assert len(groups) == 1 and groups[0].stats["null_sweep_z"] > 0
    raw = cov.group_stats(groups[0].members, balanced=True)["sweep_z"]
    # Counted above random groups of 10 of these accounts, it is no sweep however rare its raw mix.
    assert raw >= camp.group_line and groups[0].stats["sweep_z"] < camp.group_line


def test_accounts_switched_on_and_off_together_are_one_group_by_timing():
    from streamguard.detectors.timing import SessionTiming  # noqa: PLC0415

    rng = np.random.default_rng(11)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(8))  # nothing but their clock links them
    for user in range(8, 40):
        send(rng, cov, centroids, user, rng.integers(0, TOPICS, 60))
    seen = np.r_[np.full(8, 120), np.full(32, 60), np.zeros(24)].astype(np.int64)
    timing = SessionTiming(capacity=64)
    minute = 60_000
    windows = [(NOW + k * 3 * HOUR, NOW + k * 3 * HOUR + HOUR) for k in range(5)]
    for slot in range(40):
        if slot < 8:  # one orchestrator's windows, each member within a minute of them
            sessions = [(a + int(rng.integers(0, minute)), z - int(rng.integers(0, minute))) for a, z in windows]
        else:  # users at their own times
            starts = NOW + rng.integers(0, 15 * HOUR, 5)
            sessions = [(int(a), int(a + rng.integers(10, 50) * minute)) for a in np.sort(starts)]
        for a, z in sessions:
            timing.observe(np.full(3, slot), np.array([a, (a + z) // 2, z]))
    now = NOW + 16 * HOUR
    assert camp.link(cov, seen, np.arange(40), now) == []
    groups = camp.link(cov, seen, np.arange(40), now, timing=timing)
    assert len(groups) == 1 and sorted(groups[0].members.tolist()) == list(range(8))
    assert groups[0].stats["links_timing"] >= 20 and groups[0].stats["timing_log10_chance"] < -6


def test_colleagues_cover_less_than_random_accounts_and_a_campaign_more():
    """The line one org's accounts are judged against (pipeline_judging: colleagues must cover more
    than as many random accounts): an org asking about its own field falls under it, a campaign
    splitting the space clears it."""
    rng = np.random.default_rng(7)
    centroids, cov, camp = build(rng)
    for colleague in range(8):  # one org: everyone asks about the same domain (6 topics)
        send(rng, cov, centroids, colleague, rng.integers(0, 6, 120))
    for member in range(8, 16):  # a campaign: each member its own slice of 4 topics
        send(rng, cov, centroids, member, rng.integers((member - 8) * 4 + 8, (member - 8) * 4 + 12, 120))
    for user in range(16, 56):  # ordinary users: a few topics each, anywhere
        send(rng, cov, centroids, user, rng.choice(TOPICS, 3, replace=False)[rng.integers(0, 3, 120)])
    pool = np.arange(16, 56)
    line = camp.null_breadth(cov, pool, 8, seed=1)
    assert line == camp.null_breadth(cov, pool, 8, seed=1)  # seeded: replay, run and restarts agree
    colleagues = cov.group_stats(np.arange(8))["effective_topics"]
    campaign = cov.group_stats(np.arange(8, 16))["effective_topics"]
    assert colleagues < line < campaign
    assert camp.null_breadth(cov, pool, pool.size, seed=1) == 0.0  # no random group to draw: no line


def test_an_orgs_members_each_broader_than_the_median_account_are_not_colleagues():
    """Where every ordinary account spreads over many topics (written prompts), as many random
    accounts cover more than a campaign that splits a slice of the space: the breadth line alone
    calls such an org colleagues. Its members are each at least as broad as the median established
    account (``Scorer.median_breadth``, what pipeline_judging asks before that line), where
    colleagues keeping to their field are narrower."""
    from streamguard.config import ScoringConfig  # noqa: PLC0415
    from streamguard.detectors.features import AccountFeatures, DuplicateFeatures  # noqa: PLC0415
    from streamguard.detectors.scoring import Scorer  # noqa: PLC0415

    rng = np.random.default_rng(5)
    centroids, cov, camp = build(rng)
    for member in range(8):  # a campaign of one org: 12 topics each, all inside a slice of 24
        send(rng, cov, centroids, member, rng.choice(np.arange(24, 48), 12, replace=False)[rng.integers(0, 12, 150)])
    for colleague in range(8, 16):  # colleagues of one org: 3 topics each of their field's 6
        send(rng, cov, centroids, colleague, rng.choice(6, 3, replace=False)[rng.integers(0, 3, 150)])
    for user in range(16, 56):  # ordinary users: 6 topics each, anywhere
        send(rng, cov, centroids, user, rng.choice(TOPICS, 6, replace=False)[rng.integers(0, 6, 150)])
    everyone = np.arange(56)
    pool = np.arange(16, 56)
    campaign = cov.group_stats(np.arange(8))["effective_topics"]
    assert campaign < camp.null_breadth(cov, pool, 8, seed=1)  # the breadth line alone: "colleagues"

    scorer = Scorer(ScoringConfig(), capacity=64)
    assert scorer.median_breadth() is None  # nobody established yet: nobody broad, the line decides
    zeros = np.zeros(everyone.size)
    scorer.refresh_baseline(AccountFeatures.compose(cov.features(everyone), DuplicateFeatures(np.full(everyone.size, 150), zeros, zeros)))
    members = np.median(cov.features(np.arange(8)).effective_topics)
    colleagues = np.median(cov.features(np.arange(8, 16)).effective_topics)
    assert colleagues < scorer.median_breadth() <= members


def test_a_value_groups_shared_prompts_are_those_its_members_share_with_each_other():
    """Accounts behind one network prefix that repeat prompts of the whole stream (famous prompts,
    benchmark items) share nothing among themselves: the group's rate of shared prompts counts only
    prompts shared between two of its members."""
    rng = np.random.default_rng(7)
    centroids, cov, camp = build(rng)
    slices_without_template(rng, cov, centroids, range(8))
    for user in range(8, 40):
        send(rng, cov, centroids, user, rng.integers(0, TOPICS, 60))
    seen = np.r_[np.full(8, 120), np.full(32, 60), np.zeros(24)].astype(np.int64)
    share_value(camp, range(8), "proxy-1")
    for member in range(8):  # each member repeats 30 prompts of accounts outside the group
        share_prompts(camp, member, 8 + member, 30)
    cross = np.r_[np.full(8, 30), np.zeros(56)].astype(np.int64)
    group = [g for g in camp.link(cov, seen, np.arange(40), NOW, cross_dups=cross) if g.campaign_id.startswith("campaign-net-")]
    assert len(group) == 1 and group[0].stats["cross_rate"] == 0.0
    share_prompts(camp, 1, 0, 12)  # two members resend each other's prompts
    share_prompts(camp, 3, 2, 12)
    group = [g for g in camp.link(cov, seen, np.arange(40), NOW, cross_dups=cross) if g.campaign_id.startswith("campaign-net-")]
    assert len(group) == 1 and group[0].stats["cross_rate"] == 24 / (8 * 120)
