"""The pipeline's alerts depend on the records and their order, never on batching or restarts."""

import pickle

import numpy as np
import pytest

from streamguard.backends.numpy_backend import NumpyBackend
from streamguard.schema import infer_dim, validate_table
from streamguard.stream.pipeline import Pipeline
from streamguard.stream.replay import event_time_order


@pytest.fixture(scope="module")
def batch(small_traffic):
    table = event_time_order(small_traffic.table)
    valid, dead = validate_table(table, infer_dim(table))
    assert dead == []
    return valid


def alerts_of(pipelines_output):
    return sorted((a.account_id, a.kind, a.ts, a.events_seen, a.score, a.campaign_id) for a in pipelines_output)


def run(settings, batch, cuts, restart_at=()):
    pipeline = Pipeline(settings, NumpyBackend())
    out, start = [], 0
    for cut in list(cuts) + [len(batch)]:
        out += pipeline.process(batch.take(np.arange(start, cut)))
        start = cut
        if cut in restart_at:
            snapshot = pickle.loads(pickle.dumps(pipeline.snapshot()))
            pipeline = Pipeline(settings, NumpyBackend())
            pipeline.restore(snapshot)
    return alerts_of(out + pipeline.finish())


def test_alerts_do_not_depend_on_batch_boundaries(small_settings, batch):
    reference = run(small_settings, batch, [])
    assert reference, "the small traffic must raise alerts, or this test proves nothing"
    assert run(small_settings, batch, [100, 101, 1499, 1501, 5000, 9000]) == reference


def test_a_restored_snapshot_continues_exactly(small_settings, batch):
    reference = run(small_settings, batch, [])
    cuts = [700, 1500 + 3, len(batch) // 2]  # before, just after the warm-up, mid-stream
    assert run(small_settings, batch, cuts, restart_at=set(cuts)) == reference


def test_warmup_uses_exactly_the_first_requests(small_settings, batch):
    a = Pipeline(small_settings, NumpyBackend())
    b = Pipeline(small_settings, NumpyBackend())
    a.process(batch.take(np.arange(3000)))
    for start in range(0, 3000, 7):
        b.process(batch.take(np.arange(start, min(start + 7, 3000))))
    np.testing.assert_array_equal(a.codebook.centroids, b.codebook.centroids)


def test_campaign_alerts_do_not_depend_on_batch_size():
    """Regression: campaign alerts once took their time from the last batch's end."""
    from streamguard.backends import create_backend
    from streamguard.config import load_settings
    from streamguard.sim import SimConfig, simulate

    table = event_time_order(simulate(SimConfig(seed=3, scale=0.3, dim=64)).table)
    valid, _ = validate_table(table, 64)
    # A small stream: see tests/conftest.py, small_settings.
    settings = load_settings(environ={
        "STREAMGUARD_SCORING_FALSE_ALERTS_PER_10K": "500", "STREAMGUARD_CAMPAIGN_GROUP_FALSE_ALERTS_PER_10K": "500",
    })

    def alerts(step):
        pipeline = Pipeline(settings, create_backend("auto"))
        out = []
        for start in range(0, len(valid), step):
            out += pipeline.process(valid.take(slice(start, min(start + step, len(valid)))))
        return alerts_of(out + pipeline.finish())

    reference = alerts(16384)
    assert any(a[1].startswith("campaign") for a in reference), "this traffic must raise campaign alerts"
    assert alerts(1365) == reference
