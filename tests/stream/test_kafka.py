"""``streamguard run`` against a real broker (Tansu), in subprocesses.

Each test owns its topics and consumer group on the session's broker. The
oracle is ``streamguard replay --partitions 3`` over the same records, with the
same codebook file or, where ``run`` has none, fitting the codebook of the
warm-up the partitions pool, as ``run`` does (stream/warmup.py).
"""

from __future__ import annotations

import json
import random
import re
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

pytestmark = pytest.mark.kafka


def manifest_offsets(state_dir: Path, topic: str) -> dict[int, int]:
    out = {}
    for path in (state_dir / topic).glob("partition-*/MANIFEST.json"):
        try:
            manifest = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        out[int(manifest["partition"])] = int(manifest["offset"])
    return out


def messages_per_partition(table: pa.Table, fmt: str, batch_rows: int = 256, partitions: int = 3) -> dict[int, int]:
    from streamguard.stream.partitioner import partition_for

    rows = Counter(partition_for(a, partitions) for a in table.column("account_id").to_pylist())
    if fmt == "json":
        return dict(rows)
    return {p: -(-n // batch_rows) for p, n in rows.items()}


def alert_messages(kit: Any, topic: str) -> list[dict[str, Any]]:
    """Alerts read from the topic, checked for the contract's key and for duplicate sequence numbers."""
    messages = kit.read_topic(topic)
    ids = []
    out = []
    for m in messages:
        alert = json.loads(m.value)
        headers = dict(m.headers)
        assert m.key.decode() == alert["account_id"]
        ids.append((headers["streamguard.source"], int(headers["streamguard.seq"])))
        out.append(alert)
    assert len(ids) == len(set(ids)), "an alert was exported twice"
    return out


def canonical(alerts: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(a, sort_keys=True) for a in alerts)


def assert_same_alerts(got: list[dict[str, Any]], want: list[dict[str, Any]]) -> None:
    """Equal as multisets of whole records; on failure, name the records and fields that differ."""
    if canonical(got) == canonical(want):
        return
    extra = Counter(canonical(got)) - Counter(canonical(want))
    missing = Counter(canonical(want)) - Counter(canonical(got))
    lines = [f"{len(got)} alerts, expected {len(want)}"]
    for text in missing:
        a = json.loads(text)
        twins = [json.loads(t) for t in extra if json.loads(t)["account_id"] == a["account_id"] and json.loads(t)["ts"] == a["ts"]]
        if twins:
            b = twins[0]
            fields = {k: (a.get(k), b.get(k)) for k in set(a) | set(b) if a.get(k) != b.get(k)}
            evidence = {k: (a["evidence"].get(k), b["evidence"].get(k)) for k in set(a["evidence"]) | set(b["evidence"])
                        if a["evidence"].get(k) != b["evidence"].get(k)}
            lines.append(f"differs {a['account_id']}@{a['ts']}: {fields.keys() - {'evidence'}} evidence {evidence}")
        else:
            lines.append(f"missing {a['account_id']}@{a['ts']} {a['kind']} seen={a['events_seen']}")
    for text in extra:
        a = json.loads(text)
        lines.append(f"extra {a['account_id']}@{a['ts']} {a['kind']} seen={a['events_seen']}")
    raise AssertionError("\n".join(lines))


def test_run_equals_replay_on_three_partitions(kit: Any, traffic: Any, jsonl: Any, keys: Any) -> None:
    topic, alerts_topic, dlq = kit.name("req"), kit.name("alerts"), kit.name("dlq")
    kit.create_topic(topic, 3)
    kit.publish(traffic.table, topic, fmt="arrow")
    svc = kit.start_service(
        topic, kit.name("g"), kit.tmp / "state", alerts_topic=alerts_topic, dead_letter_topic=dlq,
        codebook=traffic.codebook, config=traffic.config,
    )
    assert svc.wait(180) == 0, svc.log()[-3000:]
    from_topic = alert_messages(kit, alerts_topic)
    assert keys(from_topic) == keys(traffic.replay_alerts)
    # Not only the keys: the whole records (scores, evidence) are those of replay, once each.
    assert_same_alerts(from_topic, traffic.replay_alerts)
    assert_same_alerts(jsonl(svc.alerts_file), traffic.replay_alerts)
    assert kit.read_topic(dlq) == []
    offsets = manifest_offsets(svc.state_dir, topic)
    assert offsets == messages_per_partition(traffic.table, "arrow")


def test_sigterm_checkpoints_commits_and_leaves_the_group(kit: Any, traffic: Any, wait_for: Any) -> None:
    from kafka import KafkaConsumer, TopicPartition

    topic, group = kit.name("req"), kit.name("g")
    kit.create_topic(topic, 3)
    part = traffic.table.slice(0, 6000)
    kit.publish(part, topic, fmt="json", embedding="b64")
    expected = messages_per_partition(part, "json")
    state = kit.tmp / "state"
    svc = kit.start_service(topic, group, state, codebook=traffic.codebook, config=traffic.config, idle=None)
    wait_for(lambda: svc.http("/readyz") == 200, 60, "/readyz")
    assert svc.http("/healthz") == 200
    wait_for(lambda: manifest_offsets(state, topic) == expected, 60, "checkpoints covering every record")
    import urllib.request

    body = urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics_port}/metrics", timeout=5).read().decode()
    assert "streamguard_ready 1.0" in body
    total = sum(float(line.split()[-1]) for line in body.splitlines() if line.startswith("streamguard_requests_total{"))
    assert total == part.num_rows
    assert 'streamguard_consumer_lag_records{partition="0"} 0.0' in body
    started = time.monotonic()
    svc.terminate()
    assert svc.wait(30) == 0, svc.log()[-3000:]
    assert time.monotonic() - started < 20
    assert "stopping (SIGTERM)" in svc.log()
    consumer = KafkaConsumer(bootstrap_servers=kit.broker.bootstrap, group_id=group, enable_auto_commit=False)
    try:
        committed = {p: consumer.committed(TopicPartition(topic, p)) for p in range(3)}
    finally:
        consumer.close()
    assert committed == expected == manifest_offsets(state, topic)


def test_kill9_at_random_points_loses_and_duplicates_nothing(
    kit: Any, traffic: Any, jsonl: Any, keys: Any, checkpoint_counts: Any, wait_for: Any
) -> None:
    """No --codebook: the partitions pool the warm-up, so kills also land during the warm-up buffering."""
    topic, alerts_topic, group = kit.name("req"), kit.name("alerts"), kit.name("g")
    kit.create_topic(topic, 3)
    kit.publish(traffic.table, topic, fmt="arrow", batch_rows=32)
    total = sum(messages_per_partition(traffic.table, "arrow", batch_rows=32).values())
    state, alerts_file = kit.tmp / "state", kit.tmp / "alerts.jsonl"
    rng = random.Random(20261122)
    kills = sorted(rng.uniform(0.05, 0.7) for _ in range(3))
    progress = []
    for fraction in kills:
        svc = kit.start_service(
            topic, group, state, "--checkpoint-interval", "0.25", alerts_topic=alerts_topic, alerts_file=alerts_file,
            config=traffic.config,
        )
        def reached(svc: Any = svc, fraction: float = fraction) -> bool:
            return sum(manifest_offsets(state, topic).values()) >= fraction * total or svc.proc.poll() is not None

        wait_for(reached, 120, f"progress to {fraction:.0%}", interval=0.02)
        time.sleep(rng.uniform(0.0, 0.3))
        assert svc.proc.poll() is None, "the run ended before the kill"
        svc.kill9()
        progress.append(sum(manifest_offsets(state, topic).values()))
    assert sum(p < total for p in progress) >= 2, f"kills should land mid-stream: checkpointed {progress} of {total}"
    final = kit.start_service(topic, group, state, alerts_topic=alerts_topic, alerts_file=alerts_file, config=traffic.config)
    assert final.wait(180) == 0, final.log()[-3000:]
    from_topic = alert_messages(kit, alerts_topic)
    assert_same_alerts(from_topic, traffic.replay_alerts)
    assert_same_alerts(jsonl(alerts_file), traffic.replay_alerts)
    assert checkpoint_counts(state, topic, traffic.config) == traffic.counts


def test_two_replicas_split_partitions_and_hand_over_when_one_dies(kit: Any, traffic: Any, keys: Any, wait_for: Any) -> None:
    topic, alerts_topic, group = kit.name("req"), kit.name("alerts"), kit.name("g")
    kit.create_topic(topic, 3)
    kit.publish(traffic.table, topic, fmt="json")
    state = kit.tmp / "state"
    common = {"alerts_topic": alerts_topic, "codebook": traffic.codebook, "config": traffic.config}
    a = kit.start_service(topic, group, state, tag="a", idle=5.0, **common)
    # b outlives a's session timeout even when its own partitions run dry first.
    b = kit.start_service(topic, group, state, tag="b", idle=15.0, **common)

    def active(svc: Any) -> set[int] | None:
        lines = [line for line in svc.log().splitlines() if "partitions assigned:" in line]
        if not lines:
            return None
        return set(json.loads(lines[-1].rsplit("(active ", 1)[1].rstrip(")")))

    def split() -> bool:
        pa_, pb = active(a), active(b)
        return bool(pa_ and pb and not (pa_ & pb) and (pa_ | pb) == {0, 1, 2})

    wait_for(split, 60, "the two replicas to split the partitions")
    mine = active(a)
    expected = messages_per_partition(traffic.table, "json")
    # Kill `a` once it has checkpointed part, not all, of its partitions' records.
    wait_for(lambda: sum(manifest_offsets(state, topic).get(p, 0) for p in mine) >= 0.1 * sum(expected[p] for p in mine),
             120, "replica a to checkpoint", interval=0.02)
    assert sum(manifest_offsets(state, topic).get(p, 0) for p in mine) < sum(expected[p] for p in mine)
    a.kill9()
    wait_for(lambda: active(b) == {0, 1, 2}, 60, "replica b to take over every partition")
    assert b.wait(180) == 0, b.log()[-3000:]
    from_topic = alert_messages(kit, alerts_topic)
    assert_same_alerts(from_topic, traffic.replay_alerts)
    assert manifest_offsets(state, topic) == expected


def test_poison_records_are_dead_lettered_while_good_ones_flow(kit: Any, traffic: Any, jsonl: Any) -> None:
    from streamguard.dead_letter import arrow_stream_bytes

    topic, alerts_topic, dlq = kit.name("req"), kit.name("alerts"), kit.name("dlq")
    kit.create_topic(topic, 3)
    first, second = traffic.table.slice(0, 12000), traffic.table.slice(12000)
    kit.publish(first, topic, fmt="arrow")
    good = json.loads(kit_json_row(traffic.table))
    bad_arrow = traffic.table.slice(0, 3).select(["request_id", "ts", "account_id", "org_id", "embedding"])
    emb = np.full((3, 32), np.nan, np.float32)
    bad_arrow = bad_arrow.set_column(4, "embedding", pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), 32))
    good_arrow_bytes = arrow_stream_bytes(traffic.table.slice(0, 50))
    poison = [
        (b"\x00\x13garbage bytes", "undecodable: neither"),
        (json.dumps({**good, "embedding": good["embedding"][:31]}).encode(), "wrong dimension: 31"),
        (json.dumps({**good, "embedding": [float("nan")] * 32}).encode(), "embedding has NaN or Inf"),
        (good_arrow_bytes[: len(good_arrow_bytes) // 2], "undecodable: truncated or corrupt Arrow"),
        (json.dumps({**good, "embedding": [0.0] * 32}).encode(), "zero vector"),
        (b"", "undecodable: empty value"),
    ]
    # Issue 15's probes: a column twice (it crashed the service on every restart) is that record's dead
    # letter; times no partition should trust (one stamped 2**62 blinded its partition) are turned away.
    head = traffic.table.slice(0, 2)
    doubled = pa.Table.from_arrays(head.columns + [head.column("account_id")], names=head.schema.names + ["account_id"])
    poison.append((arrow_stream_bytes(doubled), "undecodable"))
    untrusted_times = {"poison-future": 2**62, "poison-zero": 0, "poison-negative": -1}
    timed = [json.dumps({**good, "request_id": rid, "account_id": "fresh-account", "ts": ts}).encode() for rid, ts in untrusted_times.items()]
    kit.produce_raw(topic, [(i % 3, None, value) for i, (value, _) in enumerate(poison)])
    kit.produce_raw(topic, [(1, None, value) for value in timed])
    # An extra column makes no record undecodable: its rows are judged one by one (here all NaN).
    kit.produce_raw(topic, [(1, None, arrow_stream_bytes(bad_arrow)), (2, None, arrow_stream_bytes(bad_arrow.append_column("note", pa.array(["x", "y", "z"]))))])
    kit.publish(second, topic, fmt="arrow")
    svc = kit.start_service(topic, kit.name("g"), kit.tmp / "state", alerts_topic=alerts_topic, dead_letter_topic=dlq,
                            codebook=traffic.codebook, config=traffic.config)
    assert svc.wait(180) == 0, svc.log()[-3000:]
    assert_same_alerts(alert_messages(kit, alerts_topic), traffic.replay_alerts)
    dead = kit.read_topic(dlq)
    by_value: dict[bytes, dict[str, bytes]] = {}
    rows = []
    for m in dead:
        headers = dict(m.headers)
        assert headers["streamguard.source.topic"].decode() == topic
        if "streamguard.source.row" in headers:
            rows.append((m, headers))
        else:
            by_value[m.value or b""] = headers
    assert "account_id appear more than once" in by_value[poison[-1][0]]["streamguard.reason"].decode()
    for i, (value, reason) in enumerate(poison):
        headers = by_value.pop(value)
        assert headers["streamguard.reason"].decode().startswith(reason)
        assert int(headers["streamguard.source.partition"]) == i % 3
    # What is left are the turned-away times, as the validated JSON request.
    assert {json.loads(v)["request_id"]: h["streamguard.reason"].decode().split(":")[0] for v, h in by_value.items()} == {
        rid: "event time outside the sane range" for rid in untrusted_times
    }
    assert len(rows) == 6
    for m, headers in rows:
        assert headers["streamguard.reason"].decode() == "embedding has NaN or Inf"
        row = pa.ipc.open_stream(m.value).read_all()
        assert row.num_rows == 1 and row.column("request_id")[0].as_py() in bad_arrow.column("request_id").to_pylist()
    assert len(dead) == len(poison) + len(timed) + 6
    assert f"{len(poison) + len(timed) + 6} dead letters" in svc.log()


def kit_json_row(table: pa.Table) -> bytes:
    from streamguard.stream.kafka import json_values

    return json_values(table.slice(0, 1))[0]


@pytest.mark.slow
def test_broker_killed_and_restarted_loses_nothing(s3_broker: Any, traffic: Any, jsonl: Any, wait_for: Any) -> None:
    """Tansu on S3 (moto): topics, records and committed offsets survive a broker kill -9."""
    kit = s3_broker
    topic, alerts_topic = kit.name("req"), kit.name("alerts")
    kit.create_topic(topic, 3)
    kit.create_topic(alerts_topic, 3)
    first, second = traffic.table.slice(0, 14000), traffic.table.slice(14000)
    kit.publish(first, topic, fmt="arrow")
    state = kit.tmp / "state"
    svc = kit.start_service(topic, kit.name("g"), state, alerts_topic=alerts_topic, codebook=traffic.codebook,
                            config=traffic.config, idle=5.0)
    expected_first = messages_per_partition(first, "arrow")
    wait_for(lambda: manifest_offsets(state, topic) == expected_first, 120, "the first half to be checkpointed")
    kit.broker.kill()
    wait_for(lambda: svc.http("/readyz") == 503, 30, "/readyz to fail while the broker is away")
    time.sleep(7)  # longer than --stop-after-idle: an outage is not idleness
    assert svc.proc.poll() is None, svc.log()[-3000:]
    assert svc.http("/healthz") == 200
    kit.broker.start()
    kit.publish(second, topic, fmt="arrow")
    assert svc.wait(240) == 0, svc.log()[-3000:]
    assert_same_alerts(alert_messages(kit, alerts_topic), traffic.replay_alerts)
    assert_same_alerts(jsonl(svc.alerts_file), traffic.replay_alerts)


def test_two_replicas_link_a_campaign_through_the_signatures_topic(kit: Any, tmp_path: Path, jsonl: Any, wait_for: Any) -> None:
    """A campaign resending its prompts across accounts, sharded over two replicas: each sees half.

    Without the signatures topic (the oracle: ``replay --partitions 2``) each half is a broken chain;
    with it, the replicas link their members through the other's accounts.
    """
    import subprocess
    import sys

    import pyarrow.parquet as pq

    from streamguard.sim import SimConfig, simulate
    from streamguard.stream.replay import event_time_order

    sim = simulate(SimConfig(seed=11, scale=0.2, dim=32, evasion=("resampled",)))
    table = event_time_order(sim.table)
    labels = sim.labels["accounts"]
    members = {a for a, i in labels.items() if i["kind"] == "evade_resampled"}
    benign = {a for a, i in labels.items() if i["label"] == "benign"}
    parquet, codebook, oracle = tmp_path / "t.parquet", tmp_path / "book.npz", tmp_path / "oracle.jsonl"
    pq.write_table(table, parquet)
    subprocess.run(
        [sys.executable, "-m", "streamguard", "replay", str(parquet), "--alerts", str(oracle), "--partitions", "2",
         "--save-codebook", str(codebook), "--backend", "cpu"],
        check=True, capture_output=True, timeout=300,
    )
    alone = members & {a["account_id"] for a in jsonl(oracle)}
    alone_linked = members & {a["account_id"] for a in jsonl(oracle) if a["campaign_id"]}

    topic, signatures, group = kit.name("req"), kit.name("sig"), kit.name("g")
    kit.create_topic(topic, 2)
    state = kit.tmp / "state"
    extra = ("--signatures-topic", signatures, "--backend", "cpu", "--partitions-hint", "2")
    a = kit.start_service(topic, group, state, *extra, codebook=codebook, idle=12.0, tag="a")
    b = kit.start_service(topic, group, state, *extra, codebook=codebook, idle=12.0, tag="b")
    wait_for(lambda: "partitions assigned: [" in a.log() and "partitions assigned: [" in b.log(), 90, "both replicas to join")
    # A live stream, not a backlog: records arrive over ~20 s, so each replica hears the other's
    # signatures a few event-time hours late at most, as in a deployment, not days late.
    chunk = -(-table.num_rows // 40)
    for start in range(0, table.num_rows, chunk):
        kit.publish(table.slice(start, chunk), topic, fmt="arrow")
        time.sleep(0.5)
    assert a.wait(300) == 0, a.log()[-3000:]
    assert b.wait(300) == 0, b.log()[-3000:]
    for svc in (a, b):
        assert "partitions assigned:" in svc.log()
        matched = [line for line in svc.log().splitlines() if "signatures: published" in line]
        assert matched and not matched[-1].rstrip().endswith(" 0 matched a request of this replica's partitions")
        # Session boundaries (and attribute tokens, where the traffic has them) travel too.
        records = [line for line in svc.log().splitlines() if "account records: published" in line]
        assert records and re.search(r"published [1-9]\d*, received [1-9]\d*", records[-1]), records
    alerts = jsonl(a.alerts_file) + jsonl(b.alerts_file)
    in_campaign = {x["account_id"] for x in alerts if x["campaign_id"]}
    # Found: nearly all, and no fewer than alone (which finds most of them too, as sweepers, at
    # the default's ~830 topics at D = 32). What the signatures topic adds is the link.
    found = members & {x["account_id"] for x in alerts}
    assert len(found) >= 0.9 * len(members) and len(found) >= len(alone)
    # Linked as a campaign: most of them (a few cross alone first, as sweepers; the same world in
    # tests/detectors/test_remote.py) and many more than without the signatures topic.
    assert len(members & in_campaign) >= 0.75 * len(members) and len(members & in_campaign) >= 2 * len(alone_linked)
    assert not benign & in_campaign, "a benign account was pulled into a campaign"
    # The signature messages carry account keys, never raw ids.
    messages = kit.read_topic(signatures)
    raw = b"".join(m.value for m in messages)
    assert not any(acct.encode() in raw for acct in list(members)[:5])
    from streamguard.detectors.remote import account_keys
    from streamguard.stream.signatures import decode

    carried = [d.accounts for d in map(decode, (m.value for m in messages)) if d.accounts is not None]
    assert carried and all(r.bounds.shape[1] <= 16 and r.tokens.shape[1] <= 4 for r in carried)
    assert {int(k) for k in account_keys(np.array(sorted(members), dtype=object))} & {int(k) for r in carried for k in r.keys}


def test_a_fresh_topic_of_small_partitions_alerts_without_a_codebook_file(kit: Any, tmp_path: Path, jsonl: Any, wait_for: Any) -> None:
    """Issue 15: 30,000 requests over 3 partitions, each far below the default warm-up of 20,000.

    No --codebook: the partitions pool their warm-up (stream/warmup.py). While they wait, /readyz
    is 200 and says for what, the log says it once per partition, the gauges export it; then alerts
    come out live, and run (stopped, restarted, finished) equals ``replay --partitions 3``.
    """
    import subprocess
    import sys
    import urllib.error
    import urllib.request

    import pyarrow.parquet as pq

    from streamguard.config import load_settings
    from streamguard.sim import SimConfig, simulate
    from streamguard.stream.partitioner import partition_for
    from streamguard.stream.replay import event_time_order

    # The test settings' lenient alert rates for a small stream, with the default warm-up.
    config = tmp_path / "cold.toml"
    config.write_text(
        "[state]\ninitial_accounts = 1024\n\n[scoring]\nfalse_alerts_per_10k = 500.0\n\n[campaign]\ngroup_false_alerts_per_10k = 500.0\n"
    )
    warmup = load_settings(config).coverage.warmup
    table = event_time_order(simulate(SimConfig(seed=11, scale=0.15, dim=32)).table)
    sizes = Counter(partition_for(a, 3) for a in table.column("account_id").to_pylist())
    assert 28_000 <= table.num_rows <= 32_000 and max(sizes.values()) < warmup, sizes
    parquet, oracle_path = tmp_path / "cold.parquet", tmp_path / "cold-replay.jsonl"
    pq.write_table(table, parquet)
    subprocess.run(
        [sys.executable, "-m", "streamguard", "replay", str(parquet), "--alerts", str(oracle_path), "--partitions", "3",
         "--config", str(config), "--backend", "numpy"],
        check=True, capture_output=True, timeout=300,
    )
    oracle = jsonl(oracle_path)
    assert oracle, "replay raised no alert: the comparison would prove nothing"

    topic, group, state, alerts_file = kit.name("req"), kit.name("g"), kit.tmp / "state", kit.tmp / "cold-alerts.jsonl"
    kit.create_topic(topic, 3)
    head = 3_000
    kit.publish(table.slice(0, head), topic, fmt="arrow")
    svc = kit.start_service(topic, group, state, alerts_file=alerts_file, config=config, idle=None)

    def get(path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{svc.metrics_port}{path}", timeout=2) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()
        except OSError:
            return -1, ""

    def gauge(text: str, name: str) -> float | None:
        values = [float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + " ")]
        return values[0] if values else None

    def buffered() -> bool:
        # The head is buffered (but for the few requests the event-time guard holds until later ones come).
        remaining = gauge(get("/metrics")[1], "streamguard_warmup_remaining_requests")
        return remaining is not None and remaining < warmup - head // 2 and svc.log().count("no codebook yet") == 3

    wait_for(buffered, 90, "the first requests to be buffered for the warm-up", interval=0.2)
    status, body = get("/readyz")
    assert status == 200 and body.startswith("ok\nwarm-up: waiting, "), body
    assert "requests buffered across 3 partition(s)" in body and f"of the {warmup:,} the shared codebook is fitted on" in body
    metrics = get("/metrics")[1]
    assert gauge(metrics, "streamguard_warmup_waiting") == 1
    assert warmup - head <= gauge(metrics, "streamguard_warmup_remaining_requests") < warmup
    lines = [line for line in svc.log().splitlines() if "no codebook yet" in line]
    assert sorted(line.split("partition ")[1].split(":")[0] for line in lines) == ["0", "1", "2"], "one line per partition"

    kit.publish(table.slice(head), topic, fmt="arrow")
    # Live: alerts before the input ends, from partitions that never held 20,000 requests.
    wait_for(lambda: jsonl(alerts_file), 240, "alerts while the service runs", interval=0.5)
    wait_for(lambda: "warm-up: done" in get("/readyz")[1], 30, "/readyz to say the warm-up is done")
    assert gauge(get("/metrics")[1], "streamguard_warmup_waiting") == 0
    svc.terminate()
    assert svc.wait(60) == 0, svc.log()[-3000:]
    assert not any(a in svc.log() for a in set(table.column("account_id").to_pylist())), "a raw account id was logged"
    # The restart restores the shared codebook from the checkpoints and finishes the input.
    final = kit.start_service(topic, group, state, alerts_file=alerts_file, config=config, idle=4.0)
    assert final.wait(180) == 0, final.log()[-3000:]
    assert "no codebook yet" not in final.log()
    assert_same_alerts(jsonl(alerts_file), oracle)
