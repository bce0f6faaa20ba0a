"""The whole detector on simulated traffic it was never tuned on: the issue's acceptance bar."""

import pytest

from streamguard.backends import create_backend
from streamguard.config import load_settings
from streamguard.evaluation import evaluate
from streamguard.sim import SimConfig, simulate
from streamguard.sinks.alerts import MemoryAlertSink
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.replay import replay_table

# A seed never used for tuning, at the simulator's default scale (smaller populations are weaker:
# see the README's limits).
UNSEEN = [(4242, 1.0, 128)]


@pytest.mark.slow
@pytest.mark.parametrize("seed, scale, dim", UNSEEN)
def test_precision_and_recall_on_unseen_traffic(seed, scale, dim):
    traffic = simulate(SimConfig(seed=seed, scale=scale, dim=dim))
    sink = MemoryAlertSink()
    replay_table(traffic.table, load_settings(environ={}), create_backend("auto"), sink, DeadLetterSink())
    result = evaluate(traffic.labels, sink.alerts, traffic.table)
    assert result.precision >= 0.9, result.to_dict()
    assert result.recall >= 0.9, result.to_dict()
    for kind in ("product", "batch_job"):
        assert result.by_benign_kind[kind]["flagged"] == 0, result.by_benign_kind
