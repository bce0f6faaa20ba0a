import numpy as np

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.detectors.campaigns import CampaignDetector, make_style_projection
from streamguard.detectors.coverage import CoverageDetector
from streamguard.detectors.near_duplicate import DetectorBatch
from tests.reference import unit_rows

DIM, TOPICS = 96, 48


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
    campaigns = camp.link(cov, seen, np.arange(30))
    assert len(campaigns) == 1
    assert sorted(campaigns[0].members.tolist()) == list(range(8))
    assert campaigns[0].stats["complementarity"] > 3
    # The id is stable while the group persists.
    again = camp.link(cov, seen, np.arange(30))
    assert again[0].campaign_id == campaigns[0].campaign_id


def test_accounts_repeating_the_same_work_are_not_a_campaign():
    rng = np.random.default_rng(1)
    centroids, cov, camp = build(rng)
    template = unit_rows(rng, 1, DIM)[0]
    suite = rng.integers(0, TOPICS, 150)
    for runner in range(5):  # five accounts run the same benchmark suite with one template
        send(rng, cov, centroids, runner, suite, template)
    seen = np.r_[np.full(5, 150), np.zeros(59)].astype(np.int64)
    assert camp.link(cov, seen, np.arange(5)) == []
