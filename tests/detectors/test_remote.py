"""Shared-prompt evidence across partitions: the index, the wire format, and two pipelines exchanging it."""

import numpy as np
import pytest

from streamguard.detectors.remote import RemoteIndex, SignatureBatch, account_keys
from streamguard.stream.signatures import decode, encode

HOUR = 3_600_000
NOW = 1_767_225_600_000


def random_sigs(rng, n, words=2):
    return rng.integers(0, 2**63, size=(n, words), dtype=np.int64).astype(np.uint64)


def flip(sigs, bits, rng):
    out = sigs.copy()
    for row in out:
        for b in rng.choice(64 * sigs.shape[1], size=bits, replace=False):
            row[b // 64] ^= np.uint64(1) << np.uint64(b % 64)
    return out


def test_account_keys_are_stable_nonzero_and_not_the_id():
    keys = account_keys(np.array(["acct-1", "acct-2", "acct-1"], dtype=object))
    assert keys.dtype == np.uint64 and keys[0] == keys[2] != keys[1] and (keys != 0).all()


def test_matches_both_ways_within_radius_and_window():
    rng = np.random.default_rng(0)
    index = RemoteIndex(words=2, radius=10, window_ms=24 * HOUR)
    local = random_sigs(rng, 50)
    index.match_local(local, np.arange(50, dtype=np.int64), np.full(50, NOW, np.int64))
    # Foreign requests: 10 near copies of local ones (3 bits off), 10 far (40 bits off), 10 too old.
    foreign = np.concatenate([flip(local[:10], 3, rng), flip(local[10:20], 40, rng), flip(local[20:30], 3, rng)])
    ts = np.r_[np.full(20, NOW + HOUR), np.full(10, NOW - 30 * HOUR)].astype(np.int64)
    keys = np.arange(1, 31, dtype=np.uint64)
    seen = index.ingest(SignatureBatch(foreign, keys, ts, source=1))
    assert seen.rows.tolist() == list(range(10))
    assert seen.local_slots.tolist() == list(range(10)) and seen.foreign_keys.tolist() == list(range(1, 11))
    # And the other way: a later local request near a foreign one.
    again = index.match_local(flip(foreign[:5], 2, rng), np.arange(100, 105, dtype=np.int64), np.full(5, NOW + 2 * HOUR, np.int64))
    assert again.rows.tolist() == list(range(5)) and again.foreign_keys.tolist() == list(range(1, 6))


def test_the_wire_format_round_trips_and_rejects_garbage():
    rng = np.random.default_rng(1)
    batch = SignatureBatch(random_sigs(rng, 300), account_keys(np.array([f"a{i}" for i in range(300)], dtype=object)),
                           np.arange(300, dtype=np.int64) + NOW, source=4)
    messages = encode(batch)
    assert 1 < len(messages) <= 8 and all(key.isdigit() for key, _ in messages)
    parts = [decode(value) for _, value in messages]
    got = {(tuple(s.tolist()), int(k), int(t)) for p in parts for s, k, t in zip(p.sigs, p.keys, p.ts)}
    assert got == {(tuple(s.tolist()), int(k), int(t)) for s, k, t in zip(batch.sigs, batch.keys, batch.ts)}
    assert {p.source for p in parts} == {4}
    assert sum(len(v) for _, v in messages) < 300 * 32 + 8 * 1200  # ~32 bytes a request plus headers
    with pytest.raises(ValueError, match="signature"):
        decode(b"not arrow")


def shard_and_run(traffic, partitions, share):
    from streamguard.backends import create_backend
    from streamguard.config import load_settings
    from streamguard.schema import infer_dim, validate_table
    from streamguard.stream.pipeline import Pipeline
    from streamguard.stream.replay import PartitionRouter, event_time_order

    # A small stream (seed 11, scale 0.2): lenient lines, as tests/conftest.py's small_settings.
    settings = load_settings(environ={
        "STREAMGUARD_SCORING_FALSE_ALERTS_PER_10K": "500", "STREAMGUARD_CAMPAIGN_GROUP_FALSE_ALERTS_PER_10K": "500",
    })
    backend = create_backend("cpu")
    table = event_time_order(traffic.table)
    batch, _ = validate_table(table, infer_dim(table))
    book = Pipeline(settings, backend).fit_codebook(batch.take(np.arange(settings.coverage.warmup)))
    pipes = [Pipeline(settings, backend, book) for _ in range(partitions)]
    if share:
        for p, pipe in enumerate(pipes):
            pipe.enable_sharing(p)
    route = PartitionRouter(partitions)
    alerts = []
    for start in range(0, len(batch), 4096):
        part = batch.take(slice(start, min(start + 4096, len(batch))))
        where = route(part.account_ids)
        for p, pipe in enumerate(pipes):
            rows = np.flatnonzero(where == p)
            if rows.size:
                alerts += pipe.process(part.take(rows))
        # What the Kafka topic does between replicas, in process: everyone gets everyone's signatures.
        for sent in [b for pipe in pipes for b in pipe.drain_signatures()]:
            for pipe in pipes:
                pipe.ingest_signatures(sent)
    for pipe in pipes:
        alerts += pipe.finish()
    return alerts, pipes


def test_sharing_links_a_campaign_split_over_partitions():
    from streamguard.sim import SimConfig, simulate

    traffic = simulate(SimConfig(seed=11, scale=0.2, dim=32, evasion=("resampled",)))
    labels = traffic.labels["accounts"]
    members = {a for a, i in labels.items() if i["kind"] == "evade_resampled"}
    benign = {a for a, i in labels.items() if i["label"] == "benign"}
    alone, _ = shard_and_run(traffic, 2, share=False)
    shared, pipes = shard_and_run(traffic, 2, share=True)
    found_alone = members & {a.account_id for a in alone}
    found_shared = members & {a.account_id for a in shared if a.campaign_id}
    assert len(found_shared) >= 0.9 * len(members) > len(found_alone)
    assert not benign & {a.account_id for a in shared if a.campaign_id}, "no benign account in a campaign"
    assert len(benign & {a.account_id for a in shared}) <= len(benign & {a.account_id for a in alone})
    assert all(p.stats.remote_duplicates > 0 for p in pipes)
    linked = [a for a in shared if a.account_id in members and a.campaign_id]
    assert any(a.evidence["campaign_links"].get("other_partitions") for a in linked)
