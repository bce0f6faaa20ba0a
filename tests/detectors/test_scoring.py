from dataclasses import replace

import numpy as np
import pytest

from streamguard.config import ScoringConfig
from streamguard.detectors.features import AccountFeatures
from streamguard.detectors.scoring import Scorer, robust_baseline

HOUR = 3_600_000


def features(m, rarity=0.5, spread=1.0, z=10.0, cross=0.0, dup=0.0, topics=50.0):
    """Coverage features as coverage.py computes them: ``sweep_z = rarity_effect * sqrt(k)``."""
    full = lambda v: np.full(m, v, dtype=np.float64)  # noqa: E731
    return AccountFeatures(
        rarity=full(rarity), rarity_effect=full(rarity), rarity_z=full(z),
        sweep_z=full(rarity * np.sqrt(min(topics, 500.0))),
        rarity_cond=full(0.0), rarity_cond_effect=full(0.0), rarity_cond_z=full(0.0), spread=full(spread),
        effective_topics=full(topics), topics_covered=full(80.0), n_eff=full(500.0),
        seen=np.full(m, 300, dtype=np.int64), dup_rate=full(dup), cross_rate=full(cross),
    )


def test_a_short_burst_never_confirms_but_a_sustained_sweep_does():
    cfg = ScoringConfig()
    scorer = Scorer(cfg, capacity=4)
    slots = np.array([0, 1])
    first = np.array([0, 0])
    # Both cross at 300 requests, 30 minutes in.
    assert scorer.judge(slots, np.array([300, 300]), np.array([HOUR // 2] * 2), features(2), first) == []
    # The benchmark (slot 0) is done after 40 minutes; the sweeper goes on for hours.
    assert scorer.judge(np.array([0]), np.array([400]), np.array([40 * 60_000]), features(1), first[:1]) == []
    verdicts = scorer.judge(np.array([1]), np.array([420]), np.array([3 * HOUR]), features(1), first[:1])
    assert [v.slot for v in verdicts] == [1]
    assert "coverage_sweep" in verdicts[0].kinds and 0.5 <= verdicts[0].score <= 1.0
    assert verdicts[0].evidence["events_at_first_crossing"] == 300


def test_below_the_line_nothing_fires():
    scorer = Scorer(ScoringConfig(), capacity=2)
    for t in range(1, 10):
        assert scorer.judge(np.array([0]), np.array([300 * t]), np.array([t * HOUR]), features(1, rarity=0.05), np.array([0])) == []


def test_narrow_but_rare_is_not_a_sweep():
    scorer = Scorer(ScoringConfig(), capacity=2)
    scorer.refresh_baseline(features(100, rarity=0.0, topics=8.0))  # the typical established account: 8 topics
    narrow = features(1, rarity=3.0, topics=4.0)  # sweep_z 6: far past the line, over half the typical breadth
    assert narrow.sweep_z[0] > 1.5 * scorer.sweep_line()
    for t in range(1, 10):
        assert scorer.judge(np.array([0]), np.array([300 * t]), np.array([t * HOUR]), narrow, np.array([0])) == []
    broad = features(1, rarity=3.0, topics=9.0)  # the same rarity over more topics than the typical account
    alerted = [scorer.judge(np.array([1]), np.array([300 * t]), np.array([t * HOUR]), broad, np.array([0])) for t in range(1, 10)]
    assert {v.slot for verdicts in alerted for v in verdicts} == {1}


def test_the_sweep_line_is_the_normal_quantile_of_the_false_alert_rate():
    from streamguard.detectors.scoring import sweep_line

    assert sweep_line(5.0) == pytest.approx(3.29, abs=0.01)
    assert sweep_line(100.0) == pytest.approx(2.326, abs=0.01)
    between = features(1, rarity=2.8 / np.sqrt(50.0))  # sweep_z 2.8: between the two lines
    strict = Scorer(ScoringConfig(), capacity=2)
    lenient = Scorer(replace(ScoringConfig(), false_alerts_per_10k=100.0), capacity=2)
    for scorer, alerted in ((strict, []), (lenient, [0])):
        scorer.judge(np.array([0]), np.array([300]), np.array([HOUR // 2]), between, np.array([0]))
        verdicts = scorer.judge(np.array([0]), np.array([600]), np.array([3 * HOUR]), between, np.array([0]))
        assert [v.slot for v in verdicts] == alerted


def test_population_baseline_is_robust_to_a_few_outliers():
    values = np.r_[np.full(95, 0.01), np.full(5, 0.9)]
    base = robust_baseline({"cross_rate": values})
    assert base.median["cross_rate"] == 0.01
    assert base.threshold("cross_rate", 6.0, 0.5, 30) == 0.5  # the floor holds on a homogeneous population


def sweep_until_confirmed(scorer, slots, seen=300, start=0):
    """Cross at ``start`` + 30 min, confirm three hours later; returns the verdicts of the confirming tick."""
    m = slots.size
    first = np.full(m, start)
    scorer.judge(slots, np.full(m, seen), np.full(m, start + HOUR // 2), features(m), first)
    return scorer.judge(slots, np.full(m, seen * 2), np.full(m, start + 3 * HOUR), features(m), first)


def test_the_alert_budget_sends_the_strongest_first_and_holds_the_rest_for_later():
    cfg = replace(ScoringConfig(), alert_budget=100.0)  # 100 per 10k: 2 a day for 200 accounts
    scorer = Scorer(cfg, capacity=8)
    scorer.refresh_baseline(features(200, rarity=0.0, z=0.0))
    assert scorer.budget_left(0) == 2
    slots = np.arange(5)
    m = slots.size
    first = np.zeros(m, dtype=np.int64)
    strength = replace(features(m), sweep_z=np.array([4.0, 9.0, 5.0, 8.0, 4.5]))  # all cross; slots 1 and 3 furthest
    scorer.judge(slots, np.full(m, 300), np.full(m, HOUR // 2), strength, first)
    verdicts = scorer.judge(slots, np.full(m, 600), np.full(m, 3 * HOUR), strength, first)
    assert sorted(v.slot for v in verdicts) == [1, 3]
    assert scorer.held_back == 3
    # Still pending and still crossing, the others are alerted once the day has passed.
    later = scorer.judge(slots, np.full(m, 700), np.full(m, 3 * HOUR + 86_400_000), strength, first)
    assert sorted(v.slot for v in later) == [2, 4]  # budget 2 again: the strongest two of the three


def test_no_budget_means_no_cap_and_exempt_accounts_are_never_alerted():
    scorer = Scorer(ScoringConfig(), capacity=8)
    assert scorer.budget_left(0) == float("inf")
    slots = np.arange(4)
    first = np.zeros(4, dtype=np.int64)
    exempt = np.array([False, True, False, False])
    scorer.judge(slots, np.full(4, 300), np.full(4, HOUR // 2), features(4), first, exempt)
    verdicts = scorer.judge(slots, np.full(4, 600), np.full(4, 3 * HOUR), features(4), first, exempt)
    assert sorted(v.slot for v in verdicts) == [0, 2, 3]


def test_alerts_say_where_the_account_stands_in_the_live_population():
    scorer = Scorer(ScoringConfig(), capacity=4)
    # The account's rarity_effect of 0.5 beats all of them.
    population = replace(features(100, rarity=0.0, z=0.0, spread=0.05), rarity_effect=np.linspace(-1.0, 0.4, 100))
    scorer.refresh_baseline(population)
    verdicts = sweep_until_confirmed(scorer, np.array([0]))
    pct = verdicts[0].evidence["population_percentile"]
    assert pct["rarity_effect"] == 100.0
    assert 0.0 <= pct["cross_rate"] <= 100.0 and "sweep_margin" in pct
    assert scorer.baseline.quantile("rarity_effect", 0.5) == np.float32(np.median(population.rarity_effect))


def test_an_alert_confirmed_while_holding_above_the_hysteresis_names_its_kind():
    scorer = Scorer(ScoringConfig(), capacity=2)
    first = np.array([0])
    scorer.judge(np.array([0]), np.array([300]), np.array([HOUR // 2]), features(1), first)
    # Evidence slipped under the line (margin 0.9 >= hysteresis 0.8): still pending, and confirmed.
    held = features(1, rarity=0.9 * scorer.sweep_line() / np.sqrt(50.0))
    verdicts = scorer.judge(np.array([0]), np.array([600]), np.array([3 * HOUR]), held, first)
    assert [v.kinds for v in verdicts] == [["coverage_sweep"]]


def test_cross_account_near_duplicates_count_only_with_partners_beyond_chance():
    """Two heavy users of one popular topic near-duplicate everyone else on it (cross rate 0.9):
    without a shared-prompt link beyond chance that is the topic's popularity, not a template."""
    scorer = Scorer(ScoringConfig(), capacity=2)
    slots, first = np.array([0, 1]), np.array([0, 0])
    narrow = replace(features(2, rarity=-0.5, topics=1.2, cross=0.9, dup=0.9), partnered=np.array([True, False]))
    verdicts = []
    for hour in (1, 3, 4):
        verdicts += scorer.judge(slots, np.array([300 * hour] * 2), np.array([hour * HOUR] * 2), narrow, first)
    assert [(v.slot, v.kinds) for v in verdicts] == [(0, ["near_duplicate"])]


def group_stats(sweep_z=4.0, topics=60.0):
    return {
        "members": 5.0, "rarity_effect": sweep_z / np.sqrt(topics), "rarity_z": 30.0, "sweep_z": sweep_z,
        "effective_topics": topics, "spread": 1.0, "complementarity": 4.0,
    }


def test_a_linked_group_is_alerted_once_it_persists_and_its_members_do_too():
    """Benchmark runs of one template, each a burst, can cover different subjects and look like a
    group dividing its work; persistence is asked of the members as well as of the group."""
    members = np.arange(5)
    for member_span, alerted in ((HOUR // 2, False), (3 * HOUR, True)):
        scorer = Scorer(ScoringConfig(), capacity=8)
        assert scorer.judge_campaign("c", members, group_stats(), 1000, HOUR, 0, member_span_ms=member_span) is None
        verdict = scorer.judge_campaign("c", members, group_stats(), 1500, 4 * HOUR, 0, member_span_ms=member_span)
        assert (verdict is not None) == alerted
        if alerted:
            assert verdict.kinds == ["campaign"] and sorted(verdict.members.tolist()) == members.tolist()
            assert verdict.evidence["campaign_sweep_z"] == 4.0


def test_only_the_members_doing_the_groups_work_are_alerted_and_the_rest_later_if_they_do():
    """A group over the line alerts the members ``alertable`` marks (sustained, and for a group that only
    shares a value, with topics rarer than the population's); a member that qualifies later is
    alerted then. A group alerted for sharing prompts alerts every member."""
    members = np.arange(5)
    alertable = np.array([True, True, False, True, False])
    scorer = Scorer(ScoringConfig(), capacity=8)
    assert scorer.judge_campaign("c", members, group_stats(), 1000, HOUR, 0, member_span_ms=3 * HOUR, alertable=alertable) is None
    verdict = scorer.judge_campaign("c", members, group_stats(), 1500, 4 * HOUR, 0, member_span_ms=3 * HOUR, alertable=alertable)
    assert verdict is not None and verdict.members.tolist() == [0, 1, 3]
    later = scorer.judge_campaign("c", members, group_stats(), 2000, 5 * HOUR, 0, member_span_ms=3 * HOUR,
                                  alertable=np.array([True, True, True, True, False]))
    assert later is not None and later.members.tolist() == [2]
    sharing = Scorer(ScoringConfig(), capacity=8)
    dup = {**group_stats(sweep_z=0.0), "cross_rate": 0.9}
    assert sharing.judge_campaign("d", members, dup, 1000, HOUR, 0, member_span_ms=3 * HOUR, alertable=alertable) is None
    verdict = sharing.judge_campaign("d", members, dup, 1500, 4 * HOUR, 0, member_span_ms=3 * HOUR, alertable=alertable)
    assert verdict is not None and verdict.members.tolist() == members.tolist()


def test_a_group_below_its_line_is_never_alerted_and_the_line_is_its_own_rate():
    from streamguard.detectors.scoring import sweep_line

    members = np.arange(5)
    weak = group_stats(sweep_z=0.9 * sweep_line(100.0))
    scorer = Scorer(ScoringConfig(), capacity=8)
    for t in range(1, 8):
        assert scorer.judge_campaign("c", members, weak, 500 * t, t * HOUR, 0, line=sweep_line(100.0), member_span_ms=t * HOUR) is None
    lenient = Scorer(replace(ScoringConfig()), capacity=8)
    verdicts = [lenient.judge_campaign("c", members, weak, 500 * t, t * HOUR, 0, line=sweep_line(1000.0), member_span_ms=t * HOUR)
                for t in range(1, 8)]
    assert any(v is not None for v in verdicts)


def test_a_broad_rise_against_its_own_history_is_a_sweep_and_a_narrow_one_is_not():
    """A product whose traffic mirrors the population (sweep_z 0) but whose recent traffic adds rare
    topics over many topics is alerted as a sweep with its drift in the evidence; a user whose rise
    sits on two new topics is not, however large."""
    scorer = Scorer(ScoringConfig(), capacity=4)
    scorer.refresh_baseline(features(100, rarity=0.0, topics=8.0))

    def drifting(z, topics):
        return replace(features(1, rarity=0.0, topics=60.0), drift_z=np.array([z]), drift_effect=np.array([0.2]),
                       drift_topics=np.array([topics]))

    for slot, feats in ((0, drifting(6.0, 60.0)), (1, drifting(40.0, 2.0)), (2, drifting(2.0, 60.0))):
        alerted = [
            scorer.judge(np.array([slot]), np.array([300 * t]), np.array([t * HOUR]), feats, np.array([0]))
            for t in range(1, 10)
        ]
        verdicts = [v for vs in alerted for v in vs]
        if slot == 0:
            assert {v.slot for v in verdicts} == {0} and verdicts[0].kinds == ["coverage_sweep"]
            assert verdicts[0].evidence["drift_z"] == 6.0 and verdicts[0].evidence["drift_effective_topics"] == 60.0
        else:
            assert verdicts == []


def test_a_value_groups_members_at_work_are_sustained_rare_and_broad():
    """Behind a campaign's network prefix: members that sweep their share (rare topics over a dozen),
    a product mirroring the population, a batch job of one rare topic, a benchmark burst of an hour."""
    from streamguard.detectors.scoring import members_at_work

    kinds = ["member", "member", "product", "batch job", "burst"]
    own = replace(
        features(5), rarity_effect=np.array([0.9, 1.1, -0.1, 1.8, 0.8]), effective_topics=np.array([12.0, 9.0, 60.0, 1.5, 30.0])
    )
    spans = np.array([5, 6, 20, 30, 1]) * HOUR
    at_work = members_at_work(spans, 2 * HOUR, own, min_topics=0.5 * 9.0)
    assert [k for k, ok in zip(kinds, at_work) if ok] == ["member", "member"]
    # A group linked by what its members send (style, prompts, timing) asks persistence only.
    assert members_at_work(spans, 2 * HOUR).tolist() == [True, True, True, True, False]


def test_the_breadth_line_is_not_set_by_distillers_that_outnumber_ordinary_accounts():
    """Where two established accounts in three sweep (a sampled world's distillers, 200-300
    effective topics each), the median established account is a sweeper and no campaign nor
    targeted sweeper (40-190 topics) is ever broad enough. The accounts the robust mix kept set
    a cap on the line (their 90th percentile); where they are most accounts, nothing changes."""
    cfg = ScoringConfig()
    rng = np.random.default_rng(3)
    ordinary = rng.uniform(2.0, 12.0, 60)
    sweepers = rng.uniform(200.0, 320.0, 140)
    crowd = replace(features(200), effective_topics=np.r_[ordinary, sweepers])
    kept = np.r_[np.ones(60, bool), np.zeros(140, bool)]

    scorer = Scorer(cfg)
    scorer.refresh_baseline(crowd)
    assert scorer.median_breadth() > 200.0  # the sweepers' median
    scorer.refresh_baseline(crowd, kept)
    assert scorer.median_breadth() == pytest.approx(np.quantile(ordinary, 0.9))
    assert scorer.sweep_margin(np.array([8.0]), np.array([150.0]))[0] > 1.0  # a campaign's 150 topics: broad
    # Too few kept accounts to say anything: the median of all.
    scorer.refresh_baseline(crowd, np.r_[np.ones(cfg.population_min_accounts - 1, bool), np.zeros(200 - cfg.population_min_accounts + 1, bool)])
    assert scorer.median_breadth() > 200.0

    # An ordinary stream: the mix keeps nearly everyone, and the line is the median as before.
    stream = replace(features(200), effective_topics=np.r_[rng.uniform(2.0, 12.0, 195), sweepers[:5]])
    scorer.refresh_baseline(stream)
    before = scorer.median_breadth()
    scorer.refresh_baseline(stream, np.r_[np.ones(195, bool), np.zeros(5, bool)])
    assert scorer.median_breadth() == before
