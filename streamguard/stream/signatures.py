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

A batch may carry :class:`~streamguard.detectors.remote.AccountRecords` (the
accounts whose attribute tokens or session boundaries changed, or whose
request count doubled, since they were last sent: one row per account of the
batch at most). They ride in the message of the batch's lowest bucket, as a
second Arrow IPC stream appended after the first; the first stream's schema
metadata says how long it is (``accounts``: bytes, at the end of the value).
Its columns: ``key`` (uint64 account key), ``seen`` (int64 requests so far),
``ts`` (int64, the account's latest request, epoch ms), ``tokens``
(list<uint64>: attribute tokens, keyed 64-bit hashes, never values; at most
``campaign.attributes_per_account``), ``bounds`` (list<int64>: session
boundary codes, ``(ms // half bucket) << 1 | is_end``; at most
``campaign.session_boundaries``); the half bucket's ms are in its metadata
(``half_ms``), so a receiver with other timing settings drops the codes
(``Pipeline.ingest_signatures``) instead of misreading them. About 30 bytes plus 8 a token or boundary, per
record. A message without the section (written before it existed) decodes
to a batch without records, and a decoder from before it existed reads the
first stream and ignores the rest.

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
from streamguard.detectors.remote import AccountRecords, SignatureBatch
from streamguard.detectors.timing import NO_BOUNDARY

log = logging.getLogger(__name__)

BUCKETS = 8
"""Message keys: the low 3 bits of a signature (a coarse hash bucket; fewer, larger messages)."""


def _ipc(table: pa.Table) -> bytes:
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def _lists(values: np.ndarray, empty: int, kind: pa.DataType) -> pa.ListArray:
    """Rows of ``values`` without their ``empty`` cells, as one list array."""
    keep = values != empty
    offsets = np.r_[0, np.cumsum(keep.sum(axis=1))].astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values[keep], kind))


def encode_accounts(records: AccountRecords) -> bytes:
    """The account section: one Arrow IPC stream (see the module docstring)."""
    schema = pa.schema(
        [("key", pa.uint64()), ("seen", pa.int64()), ("ts", pa.int64()), ("tokens", pa.list_(pa.uint64())),
         ("bounds", pa.list_(pa.int64()))],
        metadata={b"half_ms": str(int(records.half_ms)).encode()},
    )
    columns = [
        pa.array(records.keys, pa.uint64()),
        pa.array(records.seen, pa.int64()),
        pa.array(records.ts, pa.int64()),
        _lists(records.tokens, 0, pa.uint64()),
        _lists(records.bounds, NO_BOUNDARY, pa.int64()),
    ]
    return _ipc(pa.table(columns, schema=schema))


def _padded(column: pa.ChunkedArray, fill: int, dtype: Any) -> np.ndarray:
    """A list column as a (rows, longest) array, padded with ``fill``."""
    lists = column.combine_chunks()
    offsets = lists.offsets.to_numpy().astype(np.int64)
    lengths = np.diff(offsets)
    values = lists.flatten().to_numpy(zero_copy_only=False).astype(dtype)
    out = np.full((len(lengths), int(lengths.max(initial=0))), fill, dtype=dtype)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    out[rows, np.arange(values.size) - np.repeat(offsets[:-1] - offsets[0], lengths)] = values
    return out


def decode_accounts(value: bytes) -> AccountRecords:
    """The inverse of :func:`encode_accounts`."""
    table = pa.ipc.open_stream(value).read_all()
    meta = table.schema.metadata or {}
    return AccountRecords(
        table.column("key").to_numpy().astype(np.uint64),
        table.column("seen").to_numpy().astype(np.int64),
        table.column("ts").to_numpy().astype(np.int64),
        _padded(table.column("tokens"), 0, np.uint64),
        _padded(table.column("bounds"), NO_BOUNDARY, np.int64),
        int(meta[b"half_ms"]),
    )


def encode(batch: SignatureBatch, buckets: int = BUCKETS) -> list[tuple[bytes, bytes]]:
    """(key, value) messages of ``batch``, one per non-empty bucket; its account records in the first."""
    if len(batch) == 0:
        return []
    words = batch.sigs.shape[1]
    bucket = (batch.sigs[:, 0] % np.uint64(buckets)).astype(np.int64)
    out = []
    metadata = {b"source": str(batch.source).encode(), b"words": str(words).encode()}
    section = b""
    if batch.accounts is not None and len(batch.accounts):
        section = encode_accounts(batch.accounts)
    for b in np.unique(bucket).tolist():
        schema = pa.schema([("key", pa.uint64()), ("ts", pa.int64()), ("sig", pa.binary(8 * words))], metadata=metadata)
        if section:
            schema = schema.with_metadata({**metadata, b"accounts": str(len(section)).encode()})
        rows = np.flatnonzero(bucket == b)
        sig_bytes = np.ascontiguousarray(batch.sigs[rows].astype("<u8")).tobytes()
        sig = pa.FixedSizeBinaryArray.from_buffers(pa.binary(8 * words), rows.size, [None, pa.py_buffer(sig_bytes)])
        table = pa.table([pa.array(batch.keys[rows], pa.uint64()), pa.array(batch.ts[rows], pa.int64()), sig], schema=schema)
        out.append((str(b).encode(), _ipc(table) + section))
        section = b""
    return out


def decode(value: bytes) -> SignatureBatch:
    """The inverse of :func:`encode` for one message (raises ``ValueError`` on anything else)."""
    try:
        table = pa.ipc.open_stream(value).read_all()
        meta = table.schema.metadata or {}
        source, words = int(meta[b"source"]), int(meta[b"words"])
        sig = table.column("sig").combine_chunks()
        raw = np.frombuffer(sig.buffers()[1], dtype="<u8", count=len(table) * words, offset=sig.offset * 8 * words)
        accounts = None
        if b"accounts" in meta:
            size = int(meta[b"accounts"])
            if not 0 < size < len(value):
                raise ValueError(f"account section of {size} bytes in a message of {len(value)}")
            accounts = decode_accounts(value[-size:])
        return SignatureBatch(
            raw.reshape(len(table), words).astype(np.uint64),
            table.column("key").to_numpy().astype(np.uint64),
            table.column("ts").to_numpy().astype(np.int64),
            source,
            accounts,
        )
    except (pa.ArrowInvalid, KeyError, ValueError, IndexError, OSError) as exc:
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
            AccountRecords.concat([b.accounts for b in group if b.accounts is not None]),
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
        self.records_published = 0
        """Account records (links beyond prompts) published and received."""
        self.records_received = 0

    def publish(self, batches: list[SignatureBatch]) -> None:
        for batch in batches:
            for key, value in encode(batch):
                self._producer.send(self.topic, key=key, value=value)
            self.published += len(batch)
            self.records_published += len(batch.accounts) if batch.accounts is not None else 0

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
                self.records_received += len(batch.accounts) if batch.accounts is not None else 0
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
