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


def shard_and_run(traffic, partitions, share, **env):
    from streamguard.backends import create_backend
    from streamguard.config import load_settings
    from streamguard.schema import infer_dim, validate_table
    from streamguard.stream.pipeline import Pipeline
    from streamguard.stream.replay import PartitionRouter, event_time_order

    # A small stream (seed 11, scale 0.2): lenient lines, as tests/conftest.py's small_settings.
    settings = load_settings(environ={
        "STREAMGUARD_SCORING_FALSE_ALERTS_PER_10K": "500", "STREAMGUARD_CAMPAIGN_GROUP_FALSE_ALERTS_PER_10K": "500",
        **{f"STREAMGUARD_{k.upper()}": str(v) for k, v in env.items()},
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
    found_shared = members & {a.account_id for a in shared}
    # Found: nearly all, and no fewer than alone (at D = 32 the default codebook's ~830 topics find
    # most of them alone too, as sweepers: 28 of 30 measured). What sharing adds is the link.
    assert len(found_shared) >= 0.9 * len(members) and len(found_shared) >= len(found_alone)
    # Linked as a campaign: most of them (a few cross alone first, as sweepers) and many more than without sharing.
    linked_alone = members & {a.account_id for a in alone if a.campaign_id}
    linked_shared = members & {a.account_id for a in shared if a.campaign_id}
    assert len(linked_shared) >= 0.75 * len(members) and len(linked_shared) >= 2 * len(linked_alone)
    assert not benign & {a.account_id for a in shared if a.campaign_id}, "no benign account in a campaign"
    assert len(benign & {a.account_id for a in shared}) <= len(benign & {a.account_id for a in alone})
    assert all(p.stats.remote_duplicates > 0 for p in pipes)
    linked = [a for a in shared if a.account_id in members and a.campaign_id]
    assert any(a.evidence["campaign_links"].get("other_partitions") for a in linked)


# ------------------------------------------------- links beyond prompts across partitions


def account_records(n, tokens=4, bounds=16, seed=2):
    from streamguard.detectors.remote import AccountRecords
    from streamguard.detectors.timing import NO_BOUNDARY

    rng = np.random.default_rng(seed)
    tok = rng.integers(1, 2**63, size=(n, tokens), dtype=np.int64).astype(np.uint64)
    tok[::3, 2:] = 0  # some accounts hold fewer tokens
    codes = rng.integers(0, 2**40, size=(n, bounds), dtype=np.int64)
    codes[::2, 5:] = NO_BOUNDARY  # and fewer boundaries
    keys = account_keys(np.array([f"a{i}" for i in range(n)], dtype=object))
    return AccountRecords(keys, rng.integers(1, 1000, n).astype(np.int64), NOW + np.arange(n, dtype=np.int64), tok, codes, 60_000)


def test_the_account_section_round_trips_and_old_messages_still_decode():
    rng = np.random.default_rng(3)
    keys = account_keys(np.array([f"a{i}" for i in range(200)], dtype=object))
    plain = SignatureBatch(random_sigs(rng, 200), keys, np.arange(200, dtype=np.int64) + NOW, source=2)
    records = account_records(40)
    with_section = SignatureBatch(plain.sigs, plain.keys, plain.ts, 2, records)
    old, new = encode(plain), encode(with_section)
    # Without the section: the messages of before it existed, byte for byte, and no records.
    assert old == encode(SignatureBatch(plain.sigs, plain.keys, plain.ts, 2, None))
    assert all(decode(v).accounts is None for _, v in old)
    # With it: the same signatures, the records once (in the first message), exactly.
    got = [decode(v) for _, v in new]
    assert [(k, len(d)) for (k, _), d in zip(new, got)] == [(k, len(decode(v))) for k, v in old]
    carried = [d.accounts for d in got if d.accounts is not None]
    assert len(carried) == 1 and got[0].accounts is carried[0]
    back = carried[0]
    assert back.keys.tolist() == records.keys.tolist() and back.seen.tolist() == records.seen.tolist()
    assert back.ts.tolist() == records.ts.tolist() and back.half_ms == 60_000
    assert back.tokens.shape == records.tokens.shape and (back.tokens == records.tokens).all()
    assert back.bounds.shape == records.bounds.shape and (back.bounds == records.bounds).all()
    # A decoder from before the section reads the first stream and ignores the rest.
    import pyarrow as pa

    first = pa.ipc.open_stream(new[0][1]).read_all()
    assert first.num_rows == len(got[0]) and first.column_names == ["key", "ts", "sig"]
    # Compact: ~30 bytes and 8 a token or boundary per record.
    cells = int((records.tokens != 0).sum() + (records.bounds != np.iinfo(np.int64).min).sum())
    assert len(new[0][1]) - len(old[0][1]) < 40 * len(records) + 8 * cells + 1500
    # Merged by source, records concatenate.
    from streamguard.stream.signatures import merge_by_source

    merged = merge_by_source(got + [decode(v) for _, v in encode(with_section)])
    assert len(merged) == 1 and len(merged[0].accounts) == 80
    with pytest.raises(ValueError, match="signature"):
        decode(new[0][1][: len(new[0][1]) - 10])


def test_foreign_accounts_keep_the_latest_record_and_forget_the_oldest_beyond_capacity():
    from streamguard.detectors.remote import AccountRecords, ForeignAccounts

    records = account_records(10)
    table = ForeignAccounts(capacity=6, tokens=4, boundaries=8)
    table.update(records)
    # Ten keys in a table of six: the six latest stay.
    assert len(table) == 6 and set(table.view(0).keys.tolist()) == set(records.keys[4:].tolist())
    assert table.view(0).bounds.shape == (6, 8)
    # An older record of a held key changes nothing; a newer one replaces it and makes it the latest.
    key = records.keys[4:5]
    stale = AccountRecords(key, np.array([1]), np.array([NOW - 1]), np.zeros((1, 4), np.uint64), records.bounds[:1], 60_000)
    table.update(stale)
    assert int(table.seen[table.row_of[int(key[0])]]) == int(records.seen[4])
    fresh = AccountRecords(key, np.array([7]), np.array([NOW + 100]), np.zeros((1, 2), np.uint64), records.bounds[:1, :3], 60_000)
    table.update(fresh)
    row = table.row_of[int(key[0])]
    assert int(table.seen[row]) == 7 and (table.tokens[row] == 0).all()
    # The next newcomer pushes out the key updated longest ago (records.keys[5]), not the refreshed one.
    table.update(AccountRecords(np.array([12345], np.uint64), np.array([3]), np.array([NOW]), records.tokens[:1], records.bounds[:1], 60_000))
    held = set(table.view(0).keys.tolist())
    assert int(key[0]) in held and 12345 in held and int(records.keys[5]) not in held
    # Only the accounts heard from since a time are live.
    assert set(table.view(NOW + 50).keys.tolist()) == {int(key[0])}


def test_timing_pairs_reach_accounts_of_other_partitions():
    from streamguard.detectors.campaigns import FOREIGN_BASE
    from streamguard.detectors.timing import SessionTiming

    rng = np.random.default_rng(5)
    timing = SessionTiming(capacity=64)
    # 40 local accounts on their own clocks; account 0 runs 8 sessions whose starts and ends a
    # foreign account shares to the minute.
    slots, ts = [], []
    windows = [(NOW + k * 5 * HOUR + int(rng.integers(0, HOUR)), 2 * HOUR) for k in range(8)]
    for a, length in windows:
        t = np.sort(rng.integers(a, a + length, size=20))
        t[0], t[-1] = a, a + length
        slots.append(np.zeros(20, np.int64))
        ts.append(t)
    for s in range(1, 40):
        t = np.sort(rng.integers(NOW, NOW + 40 * HOUR, size=60))
        slots.append(np.full(60, s, np.int64))
        ts.append(t)
    slots, ts = np.concatenate(slots), np.concatenate(ts)
    order = np.argsort(ts, kind="stable")
    timing.observe(slots[order], ts[order])
    nodes = np.arange(40, dtype=np.int64)
    now = NOW + 45 * HOUR
    twin = timing.bounds[0:1].copy()
    twin[twin != np.iinfo(np.int64).min] += 2  # the same minutes (a few seconds later)
    a, b, _ = timing.pairs(nodes, now, (np.array([FOREIGN_BASE + 7]), twin))
    assert (0, FOREIGN_BASE + 7) in set(zip(a.tolist(), b.tolist()))
    assert not (a >= FOREIGN_BASE).any()  # a local end first
    # Without the foreign account, the local pairs are what they were.
    alone = timing.pairs(nodes, now)
    assert not (alone[1] >= FOREIGN_BASE).any()


def test_sharing_forms_an_attribute_group_across_partitions():
    """attribute_only (30 accounts sharing a card and a client, nothing else) over 2 partitions,
    with groups needing 21 holders: the partitions hold 10 and 20 of them. Sharing counts the others."""
    from streamguard.sim import SimConfig, simulate

    traffic = simulate(SimConfig(seed=11, scale=0.1, dim=32, evasion=("attribute_only",)))
    labels = traffic.labels["accounts"]
    members = {a for a, i in labels.items() if i["kind"] == "evade_attribute_only"}
    benign = {a for a, i in labels.items() if i["label"] == "benign"}
    # Alone, neither partition holds the 21 holders a group needs (measured at 512 topics: 2 of 30 alerted in a
    # campaign without sharing, 30 with it).
    from streamguard.stream.replay import PartitionRouter

    side = PartitionRouter(2)(np.array(sorted(members), dtype=object))
    assert max(np.bincount(side, minlength=2)) < 21
    # The coarser codebook of 512 topics: with the default's ~830 topics at D = 32 most members sweep
    # alone, and a value group whose members sweep alone is judged on the others
    # (stream/pipeline_judging.py), which fall short of the line here (measured: 28 of 30 alerted,
    # none as a campaign). This test is about sharing's count of holders, not that rule.
    shared, pipes = shard_and_run(traffic, 2, share=True, campaign_attribute_min_group=21, coverage_max_topics=512)
    in_campaign = {a.account_id for a in shared if a.campaign_id}
    assert len(members & in_campaign) >= 0.9 * len(members)
    assert not benign & in_campaign, "no benign account in a campaign"
    assert all(p.foreign is not None and len(p.foreign) > 0 for p in pipes)
    # Each partition alerts its own accounts; the group counts the other's.
    linked = [a for a in shared if a.account_id in members and a.campaign_id]
    assert any(a.evidence["campaign_links"].get("other_partitions") for a in linked)
