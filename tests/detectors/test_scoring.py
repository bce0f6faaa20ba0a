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
