import numpy as np

from streamguard.config import ScoringConfig
from streamguard.detectors.scoring import Scorer, robust_baseline

HOUR = 3_600_000


def features(m, rarity=0.5, spread=1.0, z=10.0, cross=0.0, dup=0.0):
    full = lambda v: np.full(m, v, dtype=np.float64)  # noqa: E731
    return {
        "rarity": full(rarity), "rarity_effect": full(rarity), "rarity_z": full(z),
        "rarity_cond_effect": full(0.0), "rarity_cond_z": full(0.0), "spread": full(spread),
        "effective_topics": full(50.0), "topics_covered": full(80.0), "n_eff": full(500.0),
        "dup_rate": full(dup), "cross_rate": full(cross),
    }


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
    for t in range(1, 10):
        assert scorer.judge(np.array([0]), np.array([300 * t]), np.array([t * HOUR]), features(1, spread=0.03), np.array([0])) == []


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
    from dataclasses import replace

    cfg = replace(ScoringConfig(), alert_budget=100.0)  # 100 per 10k: 2 a day for 200 accounts
    scorer = Scorer(cfg, capacity=8)
    scorer.refresh_baseline({k: np.resize(v, 200) for k, v in features(200, rarity=0.0, z=0.0).items()})
    assert scorer.budget_left(0) == 2
    slots = np.arange(5)
    m = slots.size
    first = np.zeros(m, dtype=np.int64)
    strength = features(m)
    strength["rarity_effect"] = np.array([0.2, 0.9, 0.3, 0.8, 0.25])  # slots 1 and 3 cross furthest
    strength["rarity"] = strength["rarity_effect"].copy()
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
    population = features(100, rarity=0.0, z=0.0, spread=0.05)
    population["rarity_effect"] = np.linspace(-1.0, 0.4, 100)  # the account's 0.5 beats all of them
    scorer.refresh_baseline(population)
    verdicts = sweep_until_confirmed(scorer, np.array([0]))
    pct = verdicts[0].evidence["population_percentile"]
    assert pct["rarity_effect"] == 100.0
    assert 0.0 <= pct["cross_rate"] <= 100.0 and "sweep_margin" in pct
    assert scorer.baseline.quantile("rarity_effect", 0.5) == np.float32(np.median(population["rarity_effect"]))


def test_an_alert_confirmed_while_holding_above_the_hysteresis_names_its_kind():
    scorer = Scorer(ScoringConfig(), capacity=2)
    first = np.array([0])
    scorer.judge(np.array([0]), np.array([300]), np.array([HOUR // 2]), features(1), first)
    # Evidence slipped under the line (margin 0.9 >= hysteresis 0.8): still pending, and confirmed.
    held = features(1, rarity=0.9 * ScoringConfig().rarity_effect)
    verdicts = scorer.judge(np.array([0]), np.array([600]), np.array([3 * HOUR]), held, first)
    assert [v.kinds for v in verdicts] == [["coverage_sweep"]]
