"""Kafka plumbing: the consumer-group source, client settings, and the request producer.

The service talks to Kafka only through :class:`Source` (consume, seek, pause,
commit, rebalance marks), so its loop runs the same against a real broker
(:class:`KafkaSource`) and against the in-memory source of the unit tests.

kafka-python is imported lazily: ``import streamguard.stream.kafka`` costs
nothing on a machine without a broker.

Measured facts shape this module (see FIELD-NOTES.md):

- kafka-python 3 runs rebalance callbacks on its network thread, and only
  while the poll loop is blocked inside ``poll()``: the listener here only
  *marks* partitions; the loop does the checkpoint and restore work after
  ``poll()`` returns.
- Tansu answers ListOffsets wrongly after batch writes; the high watermark in
  fetch responses is right, so lag is computed from :meth:`Source.highwater`.
- kafka-python 3.0.12 asks the broker to create every topic its metadata
  requests name, whatever ``allow_auto_create_topics`` says, and Tansu keeps
  serving a member the empty assignment it got while the topic was missing:
  :class:`KafkaSource` switches the creation off on the client's metadata,
  joins the group only once the request topic exists, and joins afresh when
  a rebalance during the topic's absence left it an outdated assignment.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator, Mapping, Protocol
from urllib.parse import urlparse

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamguard.config import KafkaConfig
from streamguard.dead_letter import arrow_stream_bytes
from streamguard.stream.decode import Record
from streamguard.stream.partitioner import partition_for

log = logging.getLogger(__name__)

MiB = 1 << 20


def parse_kafka_url(url: str) -> tuple[str, str]:
    """``kafka://host:port[,host:port]/topic`` -> (bootstrap servers, topic)."""
    parsed = urlparse(url)
    topic = parsed.path.lstrip("/")
    if parsed.scheme != "kafka" or not parsed.netloc or not topic or "/" in topic:
        raise ValueError(f"{url!r}: expected kafka://HOST:PORT/TOPIC")
    return parsed.netloc, topic


# ------------------------------------------------------------------ source


@dataclass(frozen=True)
class TopicShape:
    """What the cluster metadata says of the request topic."""

    partitions: int | None
    """Partition count; None when the topic does not exist (or this client may not see it)."""
    topic_id: str | None
    """The topic's UUID (Kafka 2.8+, KIP-516); a new one means the topic was deleted and created again."""
    as_of: float
    """``time.monotonic()`` of the metadata response it comes from (0.0 before the first)."""


class Source(Protocol):
    """What the service loop needs from a consumer group (partitions are of one topic)."""

    topic: str
    ownership: Ownership
    """Bumped by the rebalance listener on revocation (see :class:`Ownership`)."""

    def poll(self, timeout_s: float) -> dict[int, list[Record]]:
        """Records per partition, in offset order (empty when none arrived in time)."""

    def take_rebalance(self) -> list[tuple[str, set[int]]]:
        """Rebalance events since the last call, in order: ``("revoked"|"assigned", partitions)``."""

    def seek(self, partition: int, offset: int | None) -> None:
        """Next record to fetch; None = the earliest retained record."""

    def pause(self, partitions: set[int]) -> None: ...

    def resume(self, partitions: set[int]) -> None: ...

    def commit(self, offsets: Mapping[int, int]) -> bool:
        """Commit next-offsets to the group (for lag monitoring); False when it failed."""

    def highwater(self, partition: int) -> int | None:
        """High watermark from the last fetch response, None before the first."""

    def connected(self) -> bool:
        """False while the group coordinator cannot be reached (before the topic exists and the group is
        joined: while the cluster's metadata cannot be read)."""

    def partition_count(self) -> int | None: ...

    def topic_shape(self, refresh: bool = False) -> TopicShape:
        """The request topic's shape from the metadata at hand, without blocking; ``refresh``
        also asks the cluster again (a later call sees the answer)."""

    def close(self) -> None:
        """Leave the group and release the client."""


class Ownership:
    """Revocation epochs of partitions, bumped the moment a partition is revoked.

    A checkpoint written in the background commits only while holding
    :meth:`holding` with the epoch it was taken at: once the rebalance
    listener has marked the partition revoked (which happens before this
    member rejoins the group, hence before anyone else can own it), a late
    write is dropped instead of landing under the next owner.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._epoch: dict[int, int] = {}

    def revoke(self, partitions: set[int]) -> None:
        with self._lock:
            for p in partitions:
                self._epoch[p] = self._epoch.get(p, 0) + 1

    def epoch(self, partition: int) -> int:
        with self._lock:
            return self._epoch.get(partition, 0)

    @contextmanager
    def holding(self, partition: int, epoch: int) -> Iterator[bool]:
        """Yields whether the partition is still owned since ``epoch``; revocation waits until exit."""
        with self._lock:
            yield self._epoch.get(partition, 0) == epoch


class _Marks:
    """Rebalance listener: runs on kafka-python's network thread, so it only records events."""

    def __init__(self, ownership: Ownership) -> None:
        self._lock = threading.Lock()
        self._events: list[tuple[str, set[int]]] = []
        self.ownership = ownership

    def on_partitions_revoked(self, revoked: Any) -> None:
        partitions = {tp.partition for tp in revoked}
        self.ownership.revoke(partitions)
        with self._lock:
            self._events.append(("revoked", partitions))

    def on_partitions_lost(self, lost: Any) -> None:
        self.on_partitions_revoked(lost)

    def on_partitions_assigned(self, assigned: Any) -> None:
        with self._lock:
            self._events.append(("assigned", {tp.partition for tp in assigned}))

    def take(self) -> list[tuple[str, set[int]]]:
        with self._lock:
            events, self._events = self._events, []
        return events


class KafkaSource:
    """A kafka-python consumer in a group, subscribed to one topic; offsets are never auto-committed."""

    def __init__(self, bootstrap_servers: str, topic: str, group_id: str, config: KafkaConfig, client_id: str = "streamguard") -> None:
        from kafka import ConsumerRebalanceListener, KafkaConsumer

        self.topic = topic
        self.config = config
        self.ownership = Ownership()
        self._marks = _Marks(self.ownership)
        marks = self._marks

        source = self

        class Listener(ConsumerRebalanceListener):
            def on_partitions_revoked(self, revoked: Any) -> None:
                marks.on_partitions_revoked(revoked)

            def on_partitions_assigned(self, assigned: Any) -> None:
                source._joined_with = set(source._cluster.partitions_for_topic(topic) or ())
                source._stale_since = None
                marks.on_partitions_assigned(assigned)

            def on_partitions_lost(self, lost: Any) -> None:
                marks.on_partitions_lost(lost)

        self._consumer = KafkaConsumer(
            bootstrap_servers=bootstrap_servers.split(","),
            group_id=group_id,
            client_id=client_id,
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=config.session_timeout_ms,
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            max_poll_interval_ms=config.max_poll_interval_ms,
            max_poll_records=config.max_poll_records,
            fetch_max_bytes=config.fetch_max_bytes,
            max_partition_fetch_bytes=config.max_partition_fetch_bytes,
            allow_auto_create_topics=False,
            **config.client_options(),
        )
        # kafka-python 3.0.12 does not hand allow_auto_create_topics to its metadata (every metadata
        # request says "create it"): a consumer that creates the topic it waits for would hide a lost
        # or misspelt topic behind an empty one with the broker's default partition count.
        self._cluster = self._consumer._cluster
        self._cluster.config["allow_auto_create_topics"] = False
        # The group is joined once the topic exists: a member that joins before gets nothing assigned,
        # and Tansu keeps serving that empty assignment after the topic appears (its generation does
        # not move). Until then the topic's metadata is watched (refreshed by the client's thread).
        self._listener = Listener()
        self._subscribed = False
        # The same holds mid-run: a group that rebalanced while the topic was deleted keeps its empty
        # assignment after the topic is created again. The partitions the metadata listed when this
        # member's assignment came are kept; when the metadata has listed others for longer than the
        # client takes to rejoin on its own (kafka-python does on a partition change), the member leaves
        # and joins afresh.
        self._joined_with: set[int] | None = None
        self._stale_since: float | None = None
        self._rejoin_grace_s = 3 * config.heartbeat_interval_ms / 1000
        self._cluster.add_topic(topic)
        self._subscribe()

    def _subscribe(self) -> bool:
        if self._subscribed and self._assignment_outdated():
            self._leave()
        if not self._subscribed and self._cluster.partitions_for_topic(self.topic):
            self._consumer.subscribe([self.topic], listener=self._listener)
            self._subscribed = True
        return self._subscribed

    def _assignment_outdated(self) -> bool:
        """True once the topic has existed with other partitions than at the last assignment for
        ``_rejoin_grace_s`` (a topic missing from the metadata says nothing: it may be a moment's error)."""
        listed = self._cluster.partitions_for_topic(self.topic)
        if not listed or self._joined_with is None or set(listed) == self._joined_with:
            self._stale_since = None
            return False
        now = time.monotonic()
        if self._stale_since is None:
            self._stale_since = now
        return now - self._stale_since >= self._rejoin_grace_s

    def _leave(self) -> None:
        """Leave the group (the loop sets the partitions held aside, as on a revocation); the next
        :meth:`_subscribe` joins with a new member id."""
        log.warning(
            "request topic %s lists partitions %s, this member was assigned when it listed %s and no rebalance "
            "followed: leaving the group to join afresh", self.topic,
            sorted(self._cluster.partitions_for_topic(self.topic) or ()), sorted(self._joined_with or ()),
        )
        self._marks.on_partitions_revoked(self._consumer.assignment())
        self._consumer.unsubscribe()
        self._cluster.add_topic(self.topic)  # unsubscribe() stopped the metadata of the topic being fetched
        self._subscribed = False
        self._joined_with = None
        self._stale_since = None

    def _tp(self, partition: int) -> Any:
        from kafka import TopicPartition

        return TopicPartition(self.topic, partition)

    def poll(self, timeout_s: float) -> dict[int, list[Record]]:
        from kafka.errors import KafkaError

        if not self._subscribe():
            time.sleep(timeout_s)  # the topic does not exist (yet): see __init__
            return {}
        try:
            polled = self._consumer.poll(timeout_ms=int(timeout_s * 1000))
        except KafkaError as exc:
            log.warning("poll failed (%s); retrying", exc)
            time.sleep(min(timeout_s, 1.0))
            return {}
        return {
            tp.partition: [Record(m.offset, m.value, m.key) for m in messages]
            for tp, messages in polled.items()
            if tp.topic == self.topic
        }

    def take_rebalance(self) -> list[tuple[str, set[int]]]:
        return self._marks.take()

    def assigned(self) -> set[int]:
        return {tp.partition for tp in self._consumer.assignment() if tp.topic == self.topic}

    def seek(self, partition: int, offset: int | None) -> None:
        tp = self._tp(partition)
        if partition not in self.assigned():
            return
        if offset is None:
            self._consumer.seek_to_beginning(tp)
        else:
            self._consumer.seek(tp, offset)

    def pause(self, partitions: set[int]) -> None:
        owned = self.assigned()
        self._consumer.pause(*[self._tp(p) for p in partitions if p in owned])

    def resume(self, partitions: set[int]) -> None:
        owned = self.assigned()
        self._consumer.resume(*[self._tp(p) for p in partitions if p in owned])

    def commit(self, offsets: Mapping[int, int]) -> bool:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata

        owned = self.assigned()
        todo = {self._tp(p): OffsetAndMetadata(o, "", -1) for p, o in offsets.items() if p in owned}
        if not todo:
            return True
        try:
            self._consumer.commit(todo, timeout_ms=self.config.request_timeout_ms)
        except (KafkaError, RuntimeError) as exc:
            log.info("offset commit failed (%s); the checkpoint holds the offsets, the next commit catches up", exc)
            return False
        return True

    def highwater(self, partition: int) -> int | None:
        try:
            return self._consumer.highwater(self._tp(partition))
        except Exception:  # IllegalStateError once the partition is no longer assigned
            return None

    def connected(self) -> bool:
        if not self._subscribed:  # no group yet: the broker answers metadata (refreshed while the topic is missing)
            return time.monotonic() - self._cluster._last_successful_refresh_ms / 1000 < 10.0
        return not self._consumer._coordinator.coordinator_unknown()

    def partition_count(self) -> int | None:
        try:
            found = self._consumer.partitions_for_topic(self.topic)
        except Exception as exc:  # broker unreachable
            log.debug("partitions_for_topic failed: %s", exc)
            return None
        return len(found) if found else None

    def topic_shape(self, refresh: bool = False) -> TopicShape:
        cluster = self._cluster
        partitions = cluster.partitions_for_topic(self.topic)
        topic_id = cluster.topic_id(self.topic)
        shape = TopicShape(
            partitions=len(partitions) if partitions else None,
            topic_id=str(topic_id) if topic_id is not None and getattr(topic_id, "int", 1) != 0 else None,
            as_of=cluster._last_successful_refresh_ms / 1000,
        )
        if refresh:
            cluster.request_update()  # answered on the client's network thread
        return shape

    def close(self) -> None:
        try:
            self._consumer.close(autocommit=False, timeout_ms=5_000)
        except Exception as exc:
            log.warning("consumer close failed: %s", exc)


# ----------------------------------------------------------------- topics


def ensure_topic(bootstrap_servers: str, topic: str, partitions: int, config: KafkaConfig | None = None) -> int:
    """Create ``topic`` with ``partitions`` partitions unless it exists; returns its partition count."""
    from kafka import KafkaAdminClient, KafkaConsumer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    config = config or KafkaConfig()
    admin = KafkaAdminClient(bootstrap_servers=bootstrap_servers.split(","), **config.client_options())
    try:
        try:
            admin.create_topics([NewTopic(topic, partitions, 1)])
        except TopicAlreadyExistsError:
            pass
    finally:
        admin.close()
    probe = KafkaConsumer(bootstrap_servers=bootstrap_servers.split(","), enable_auto_commit=False, **config.client_options())
    try:
        deadline = time.monotonic() + 30
        while True:
            found = probe.partitions_for_topic(topic)
            if found or time.monotonic() > deadline:
                break
            time.sleep(0.2)
    finally:
        probe.close()
    if not found:
        raise RuntimeError(f"topic {topic} does not show up in the cluster metadata")
    return len(found)


# ---------------------------------------------------------------- producer


def request_producer(bootstrap_servers: str, config: KafkaConfig | None = None, **overrides: Any) -> Any:
    """A KafkaProducer tuned for request records (large batches, acknowledged by all replicas)."""
    from kafka import KafkaProducer

    config = config or KafkaConfig()
    options: dict[str, Any] = dict(
        acks="all",
        linger_ms=20,
        batch_size=1 * MiB,
        max_request_size=8 * MiB,
        **config.client_options(),
    )
    options.update(overrides)
    return KafkaProducer(bootstrap_servers=bootstrap_servers.split(","), **options)


def _ts_ms(table: pa.Table) -> np.ndarray:
    col = table.column("ts").combine_chunks()
    if pa.types.is_timestamp(col.type):
        col = col.cast(pa.timestamp("ms"), safe=False).cast(pa.int64())
    return col.to_numpy(zero_copy_only=False).astype(np.int64)


def json_values(table: pa.Table, embedding: str = "list") -> list[bytes]:
    """One JSON request per row (``embedding`` as a list, or ``"b64"``: ``embedding_b64``)."""
    if embedding not in ("list", "b64"):
        raise ValueError("embedding must be 'list' or 'b64'")
    from base64 import b64encode

    ts = _ts_ms(table)
    ids = table.column("request_id").to_pylist()
    accounts = table.column("account_id").to_pylist()
    orgs = table.column("org_id").to_pylist() if "org_id" in table.column_names else [None] * table.num_rows
    emb = table.column("embedding").combine_chunks()
    out = []
    for i in range(table.num_rows):
        vec = emb[i].values.to_numpy(zero_copy_only=False).astype(np.float32)
        record: dict[str, Any] = {"request_id": ids[i], "ts": int(ts[i]), "account_id": accounts[i], "org_id": orgs[i]}
        if embedding == "list":
            record["embedding"] = vec.tolist()
        else:
            record["embedding_b64"] = b64encode(vec.astype("<f4").tobytes()).decode("ascii")
        out.append(json.dumps(record, separators=(",", ":")).encode())
    return out


def publish_table(
    table: pa.Table,
    url: str,
    fmt: str = "arrow",
    batch_rows: int = 256,
    *,
    partitions: int | None = None,
    config: KafkaConfig | None = None,
    event_time: bool = True,
    embedding: str = "list",
    producer: Any = None,
) -> int:
    """Publish request records to ``kafka://host:port/topic``; returns the number of messages.

    Rows keep the table's order within each partition (sorted by event time
    first unless ``event_time=False``: that is the order ``replay`` feeds, so
    ``run`` on the topic gives ``replay --partitions N``'s alerts).

    Parameters
    ----------
    fmt : ``"json"``: one message per request, key = account_id; ``"arrow"``:
        rows grouped by the default partitioner of account_id, one Arrow IPC
        stream of up to ``batch_rows`` rows per message (embedding as
        ``fixed_size_list<float32>[D]``)
    partitions : create the topic with this many partitions if it is missing
    embedding : JSON only, ``"list"`` or ``"b64"``
    """
    if fmt not in ("arrow", "json"):
        raise ValueError(f"fmt must be 'arrow' or 'json', got {fmt!r}")
    if batch_rows < 1:
        raise ValueError("batch_rows must be >= 1")
    bootstrap, topic = parse_kafka_url(url)
    if event_time:
        from streamguard.stream.replay import event_time_order

        table = event_time_order(table)
    if partitions is not None:
        ensure_topic(bootstrap, topic, partitions, config)
    own = producer is None
    producer = producer or request_producer(bootstrap, config)
    try:
        count = producer.partitions_for(topic)
        n_parts = len(count) if count else 1
        sent = 0
        if fmt == "json":
            keys = table.column("account_id").to_pylist()
            for key, value in zip(keys, json_values(table, embedding), strict=True):
                producer.send(topic, key=key.encode() if key is not None else None, value=value)
                sent += 1
        else:
            table = _arrow_request_table(table)
            accounts = table.column("account_id").to_pylist()
            cache: dict[str, int] = {}
            parts = np.array([cache.setdefault(a, partition_for(a, n_parts)) if a is not None else 0 for a in accounts])
            for p in range(n_parts):
                rows = np.flatnonzero(parts == p)
                for start in range(0, rows.size, batch_rows):
                    chunk = table.take(pa.array(rows[start : start + batch_rows]))
                    producer.send(topic, value=arrow_stream_bytes(chunk), partition=p)
                    sent += 1
        producer.flush()
        return sent
    finally:
        if own:
            producer.close()


def _arrow_request_table(table: pa.Table) -> pa.Table:
    """The contract's columns, embeddings as fixed_size_list<float32>[D] when every row has D values."""
    from streamguard.schema import infer_dim

    cols = ["request_id", "ts", "account_id", "embedding"] + (["org_id"] if "org_id" in table.column_names else [])
    table = table.select(cols)
    emb = table.column("embedding")
    if not pa.types.is_fixed_size_list(emb.type):
        dim = infer_dim(table)
        lengths = pc.list_value_length(emb).to_numpy(zero_copy_only=False)
        if emb.null_count == 0 and (lengths == dim).all():
            flat = pc.list_flatten(emb.combine_chunks()).cast(pa.float32())
            fixed = pa.FixedSizeListArray.from_arrays(flat, dim)
            table = table.set_column(table.column_names.index("embedding"), "embedding", fixed)
    elif emb.type.value_type != pa.float32():
        table = table.set_column(
            table.column_names.index("embedding"), "embedding", emb.cast(pa.list_(pa.float32(), emb.type.list_size))
        )
    return table
