"""``run`` over a topic equals ``replay --partitions N`` over the same records, on more than one world.

Issue 15: a file of another world, published over 4 partitions, alerted other
accounts in ``run`` than in ``replay --partitions 4``. The cause was the
codebook when no codebook file is given: ``run`` (up to f922561) had each
partition fit its own, on that partition's first ``coverage.warmup`` requests,
while ``replay`` fitted one for all partitions on the stream's first
``coverage.warmup``. Measured on f922561 with these tests: all five failed; its
``run`` equalled, record for record, the union of ``replay --partitions 1`` over
each partition's requests alone (a codebook each), and given replay's codebook
(``--codebook``) it equalled ``replay --partitions N``: nothing else differed.
Both now fit one codebook on the warm-up the partitions pool (stream/warmup.py);
these tests hold them to it, with no codebook file, on worlds of
``../shared/worlds/independent_traffic.py`` (two seeds) and of the simulator,
published as Arrow IPC and as JSON.

The independent generator floors every kind at two accounts (about 130,000
requests at its smallest scale): its files are thinned here to a random fifth
of their requests (every account, the whole 8 hours), so each world is ~25,000
requests at D = 64.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytestmark = pytest.mark.kafka

REPO = Path(__file__).resolve().parents[2]
# CI clones the repository next to ../shared (as streamguard/evaluate_matrix/worlds.py expects).
INDEPENDENT = REPO.parent / "shared" / "worlds" / "independent_traffic.py"

# (seed, partitions) of the independent worlds; each is published in both formats.
INDEPENDENT_WORLDS = [(7001, 4), (7002, 3)]


@dataclass
class World:
    table: pa.Table
    parquet: Path
    config: Path
    partitions: int
    oracle: list[dict[str, Any]]
    """``streamguard replay --partitions N`` over the file, without a codebook file."""


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.exists() else []


def _replay(parquet: Path, config: Path, partitions: int) -> list[dict[str, Any]]:
    alerts = parquet.with_suffix(".replay.jsonl")
    subprocess.run(
        [sys.executable, "-m", "streamguard", "replay", str(parquet), "--alerts", str(alerts), "--partitions", str(partitions),
         "--config", str(config), "--backend", "numpy"],
        check=True, cwd=REPO, capture_output=True, timeout=300,
    )
    oracle = _read_jsonl(alerts)
    assert oracle, f"replay raised no alert on {parquet.name}: the comparison would prove nothing"
    return oracle


def _independent_module() -> Any:
    if not INDEPENDENT.is_file():
        pytest.skip(f"no independent world generator at {INDEPENDENT} (CI clones the repository next to ../shared)")
    spec = importlib.util.spec_from_file_location("independent_traffic", INDEPENDENT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def independent_worlds(tmp_path_factory: pytest.TempPathFactory, small_stream_config: str) -> dict[int, World]:
    """Each seed's world written by the generator itself, thinned, and its replay oracle; built once."""
    module = _independent_module()
    root = tmp_path_factory.mktemp("worlds")
    config = root / "config.toml"
    config.write_text(small_stream_config)
    out = {}
    for seed, partitions in INDEPENDENT_WORLDS:
        full = root / f"independent-{seed}-full.parquet"
        module.write(*module.build(seed, 64, 0.01), str(full), str(root / f"independent-{seed}.labels.json"), 64)
        table = pq.read_table(full)
        table = table.filter(pa.array(np.random.default_rng(seed).random(table.num_rows) < 0.2))
        full.unlink()
        parquet = root / f"independent-{seed}.parquet"
        pq.write_table(table, parquet)
        out[seed] = World(table, parquet, config, partitions, _replay(parquet, config, partitions))
    return out


def _canonical(alerts: list[dict[str, Any]]) -> Counter:
    return Counter(json.dumps(a, sort_keys=True) for a in alerts)


def _assert_same_alerts(got: list[dict[str, Any]], want: list[dict[str, Any]], what: str) -> None:
    """Equal as multisets of whole records (scores, evidence); on failure, say which accounts differ."""
    if _canonical(got) == _canonical(want):
        return
    run_accounts, replay_accounts = {a["account_id"] for a in got}, {a["account_id"] for a in want}
    lines = [
        f"{what}: run raised {len(got)} alerts on {len(run_accounts)} accounts, replay {len(want)} on "
        f"{len(replay_accounts)}; accounts only in run {sorted(run_accounts - replay_accounts)}, "
        f"only in replay {sorted(replay_accounts - run_accounts)}"
    ]
    for side, texts in (("run", _canonical(got) - _canonical(want)), ("replay", _canonical(want) - _canonical(got))):
        for a in [json.loads(t) for t in texts][:10]:
            lines.append(f"only in {side}: {a['account_id']}@{a['ts']} {a['kind']} score={a['score']} seen={a['events_seen']}")
    raise AssertionError("\n".join(lines))


def _run(kit: Any, topic: str, config: Path, tag: str) -> tuple[list[dict[str, Any]], str]:
    """``streamguard run --stop-after-idle`` over the topic, no codebook file: its alerts file and its log."""
    svc = kit.start_service(topic, kit.name("g"), kit.tmp / f"state-{tag}", config=config, idle=3.0, tag=tag)
    assert svc.wait(240) == 0, svc.log()[-3000:]
    return _read_jsonl(svc.alerts_file), svc.log()


def _assert_pooled(log: str) -> None:
    """The partitions ran on one codebook, fitted on the warm-up they pooled (not one each)."""
    own = log.replace("shared codebook fitted on", "").count("codebook fitted on")
    assert log.count("shared codebook fitted on") == 1 and own == 0, log[-3000:]


# Two seeds, each in one of the two formats (the simulator file below is JSON too): both formats,
# both partition counts, at half the broker time of every pairing.
@pytest.mark.parametrize("seed, fmt", [(7001, "arrow"), (7002, "json")])
def test_run_equals_replay_on_independent_worlds(kit: Any, independent_worlds: dict[int, World], seed: int, fmt: str) -> None:
    world = independent_worlds[seed]
    topic = kit.name(f"w{seed}-{fmt}")
    kit.create_topic(topic, world.partitions)
    kit.publish(world.table, topic, fmt=fmt)
    got, log = _run(kit, topic, world.config, f"w{seed}-{fmt}")
    _assert_same_alerts(got, world.oracle, f"independent world seed {seed}, {fmt}, {world.partitions} partitions")
    _assert_pooled(log)


def test_run_equals_replay_on_a_simulator_file_published_as_json(kit: Any, tmp_path: Path, small_stream_config: str) -> None:
    """``streamguard simulate --to ... --to-format json --partitions 3``, then run and replay, no codebook file.

    (Arrow IPC records of the simulator are held to replay in test_kafka.py, with and without a codebook file.)
    """
    config = tmp_path / "config.toml"
    config.write_text(small_stream_config)
    parquet, topic = tmp_path / "sim.parquet", kit.name("sim-json")
    subprocess.run(
        [sys.executable, "-m", "streamguard", "simulate", "--out", str(parquet), "--labels", str(tmp_path / "sim.labels.json"),
         "--seed", "12", "--scale", "0.1", "--dim", "32",
         "--to", f"kafka://{kit.broker.bootstrap}/{topic}", "--to-format", "json", "--partitions", "3"],
        check=True, cwd=REPO, capture_output=True, timeout=300,
    )
    oracle = _replay(parquet, config, 3)
    got, log = _run(kit, topic, config, "sim-json")
    _assert_same_alerts(got, oracle, "simulator seed 12, json, 3 partitions")
    _assert_pooled(log)
