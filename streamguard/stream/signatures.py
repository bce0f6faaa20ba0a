"""Signatures between replicas, through Kafka itself.

Every partition's pipeline publishes the SimHash signatures of its requests
(see ``detectors/remote.py``) to an internal topic, and every replica reads
the whole topic back, so that shared prompts link accounts whatever
partition, and whatever replica, they were sharded to. No cluster protocol
of our own: the broker orders, stores and replays the exchange.

A message is an Arrow IPC stream of the rows of one partition's batch that
fall into one hash bucket (the low bits of the signature), keyed by that
bucket: ``key`` (uint64 account key, never a raw id), ``ts`` (int64 epoch
ms), ``sig`` (fixed-size binary, the signature's words little-endian); the
source partition is in the schema metadata. 32 bytes a request.

The topic needs no more retention than ``near_duplicate.cross_window_ms``
(a match must be that recent); a replica reads it from the beginning when it
starts, which rebuilds the foreign half of its tables.
"""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from streamguard.config import KafkaConfig
from streamguard.detectors.remote import SignatureBatch

log = logging.getLogger(__name__)

BUCKETS = 8
"""Message keys: the low 3 bits of a signature (a coarse hash bucket; fewer, larger messages)."""


def encode(batch: SignatureBatch, buckets: int = BUCKETS) -> list[tuple[bytes, bytes]]:
    """(key, value) messages of ``batch``, one per non-empty bucket."""
    if len(batch) == 0:
        return []
    words = batch.sigs.shape[1]
    bucket = (batch.sigs[:, 0] % np.uint64(buckets)).astype(np.int64)
    out = []
    schema = pa.schema(
        [("key", pa.uint64()), ("ts", pa.int64()), ("sig", pa.binary(8 * words))],
        metadata={b"source": str(batch.source).encode(), b"words": str(words).encode()},
    )
    for b in np.unique(bucket).tolist():
        rows = np.flatnonzero(bucket == b)
        sig_bytes = np.ascontiguousarray(batch.sigs[rows].astype("<u8")).tobytes()
        sig = pa.FixedSizeBinaryArray.from_buffers(pa.binary(8 * words), rows.size, [None, pa.py_buffer(sig_bytes)])
        table = pa.table([pa.array(batch.keys[rows], pa.uint64()), pa.array(batch.ts[rows], pa.int64()), sig], schema=schema)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, schema) as writer:
            writer.write_table(table)
        out.append((str(b).encode(), sink.getvalue().to_pybytes()))
    return out


def decode(value: bytes) -> SignatureBatch:
    """The inverse of :func:`encode` for one message (raises ``ValueError`` on anything else)."""
    try:
        table = pa.ipc.open_stream(value).read_all()
        meta = table.schema.metadata or {}
        source, words = int(meta[b"source"]), int(meta[b"words"])
        sig = table.column("sig").combine_chunks()
        raw = np.frombuffer(sig.buffers()[1], dtype="<u8", count=len(table) * words, offset=sig.offset * 8 * words)
        return SignatureBatch(
            raw.reshape(len(table), words).astype(np.uint64),
            table.column("key").to_numpy().astype(np.uint64),
            table.column("ts").to_numpy().astype(np.int64),
            source,
        )
    except (pa.ArrowInvalid, KeyError, ValueError, IndexError) as exc:
        raise ValueError(f"not a signature message: {exc}") from None


def merge_by_source(batches: list[SignatureBatch]) -> list[SignatureBatch]:
    """One batch per source partition, rows in arrival order: fewer, larger lookups."""
    by_source: dict[int, list[SignatureBatch]] = {}
    for batch in batches:
        by_source.setdefault(batch.source, []).append(batch)
    return [
        SignatureBatch(
            np.concatenate([b.sigs for b in group]),
            np.concatenate([b.keys for b in group]),
            np.concatenate([b.ts for b in group]),
            source,
        )
        for source, group in sorted(by_source.items())
    ]


class SignatureExchange:
    """Publish this replica's signatures; read every replica's (the whole topic, no group)."""

    def __init__(self, bootstrap_servers: str, topic: str, config: KafkaConfig, client_id: str) -> None:
        from kafka import KafkaConsumer, KafkaProducer, TopicPartition

        self.topic = topic
        servers = bootstrap_servers.split(",")
        options = config.client_options()
        self._producer = KafkaProducer(bootstrap_servers=servers, client_id=f"{client_id}-signatures", linger_ms=50, acks=1, **options)
        self._consumer = KafkaConsumer(
            bootstrap_servers=servers,
            client_id=f"{client_id}-signatures-in",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            **options,
        )
        parts = self._consumer.partitions_for_topic(topic) or set()
        self._consumer.assign([TopicPartition(topic, p) for p in sorted(parts)])
        self._consumer.seek_to_beginning()
        self.published = 0
        self.received = 0
        self.bad = 0

    def publish(self, batches: list[SignatureBatch]) -> None:
        for batch in batches:
            for key, value in encode(batch):
                self._producer.send(self.topic, key=key, value=value)
            self.published += len(batch)

    def poll(self, timeout_s: float = 0.0) -> list[SignatureBatch]:
        out = []
        polled: dict[Any, list[Any]] = self._consumer.poll(timeout_ms=int(timeout_s * 1000), max_records=2000)
        for records in polled.values():
            for record in records:
                try:
                    batch = decode(record.value)
                except ValueError as exc:
                    self.bad += 1
                    log.warning("skipping a record of %s at offset %d: %s", self.topic, record.offset, exc)
                    continue
                self.received += len(batch)
                out.append(batch)
        return merge_by_source(out)

    def flush(self, timeout_s: float = 10.0) -> None:
        self._producer.flush(timeout=timeout_s)

    def close(self) -> None:
        try:
            self._producer.flush(timeout=5)
            self._producer.close(timeout=5)
        finally:
            self._consumer.close()
