"""Alerts and dead letters to Kafka, and the read-back that keeps alert output free of duplicates.

Alert messages: key = account_id, value = the contract's JSON alert record,
headers ``streamguard.source`` (``TOPIC/PARTITION`` of the input partition),
``streamguard.group`` and ``streamguard.seq`` (the alert's number within its
input partition: 0, 1, 2, ...). Alerts are a deterministic function of a
partition's records, so after a crash the restored partition numbers the
alerts it regenerates exactly as before; :meth:`KafkaOutputs.scan_alerts`
reads back which numbers already reached the topic and those are not sent
again. Downstream consumers can use ``(source, group, seq)`` as an
idempotence key too.

Dead-letter messages: key = the record's key, value = the ORIGINAL bytes
(the whole value, or the offending row as a one-row Arrow IPC stream),
headers ``streamguard.reason``, ``streamguard.source.topic``,
``streamguard.source.partition``, ``streamguard.source.offset``,
``streamguard.source.row`` (rows of Arrow records only) and
``streamguard.format``.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Callable

from streamguard.schema import AlertRecord
from streamguard.config import KafkaConfig
from streamguard.dead_letter import DeadLetter

log = logging.getLogger(__name__)

H_SOURCE = "streamguard.source"
H_GROUP = "streamguard.group"
H_SEQ = "streamguard.seq"
H_REASON = "streamguard.reason"
H_SRC_TOPIC = "streamguard.source.topic"
H_SRC_PARTITION = "streamguard.source.partition"
H_SRC_OFFSET = "streamguard.source.offset"
H_SRC_ROW = "streamguard.source.row"
H_FORMAT = "streamguard.format"


@dataclass
class FlushResult:
    """Outcome of waiting for the broker to acknowledge everything sent.

    done : every send has completed (acknowledged or failed); when False,
        nothing may be re-sent yet (a send still in flight may land later)
    failed_alerts : input partitions with at least one alert send that failed
    """

    done: bool
    failed_alerts: set[int]


def alert_headers(source_topic: str, partition: int, group: str, seq: int) -> list[tuple[str, bytes]]:
    return [
        (H_SOURCE, f"{source_topic}/{partition}".encode()),
        (H_GROUP, group.encode()),
        (H_SEQ, str(seq).encode()),
    ]


def dead_letter_headers(dead: DeadLetter, source_topic: str, partition: int) -> list[tuple[str, bytes]]:
    headers = [
        (H_REASON, dead.reason.encode("utf-8", "replace")),
        (H_SRC_TOPIC, source_topic.encode()),
        (H_SRC_PARTITION, str(partition).encode()),
        (H_SRC_OFFSET, str(dead.offset).encode()),
        (H_FORMAT, dead.fmt.encode()),
    ]
    if dead.row is not None:
        headers.append((H_SRC_ROW, str(dead.row).encode()))
    return headers


class KafkaOutputs:
    """One idempotent producer for the alerts topic and the dead-letter topic.

    Parameters
    ----------
    bootstrap_servers, config : where and how to connect
    source_topic, group : identify this service's alerts in the alerts topic
    alerts_topic, dead_letter_topic : None to skip that output
    """

    def __init__(
        self,
        bootstrap_servers: str,
        config: KafkaConfig,
        source_topic: str,
        group: str,
        alerts_topic: str | None,
        dead_letter_topic: str | None,
        client_id: str = "streamguard-out",
    ) -> None:
        from kafka import KafkaProducer

        self.bootstrap_servers = bootstrap_servers
        self.config = config
        self.source_topic = source_topic
        self.group = group
        self.alerts_topic = alerts_topic
        self.dead_letter_topic = dead_letter_topic
        self.alert_ends: dict[int, int] = {}
        """Alerts-topic partition -> one past the highest offset this process saw acknowledged."""
        self._inflight: list[tuple[Any, str, int, Callable[[], None] | None]] = []
        self._producer = KafkaProducer(
            bootstrap_servers=bootstrap_servers.split(","),
            client_id=client_id,
            acks="all",
            linger_ms=5,
            max_request_size=16 * 1024 * 1024,
            **config.client_options(),
        )

    def send_alert(self, alert: AlertRecord, partition: int, seq: int) -> None:
        if self.alerts_topic is None:
            return
        future = self._producer.send(
            self.alerts_topic,
            key=alert.account_id.encode(),
            value=alert.to_json().encode(),
            headers=alert_headers(self.source_topic, partition, self.group, seq),
        )
        self._inflight.append((future, "alert", partition, None))

    def send_dead_letter(self, dead: DeadLetter, partition: int) -> None:
        if self.dead_letter_topic is None:
            return
        topic = self.dead_letter_topic

        def send() -> None:
            future = self._producer.send(
                topic, key=dead.key, value=dead.original_bytes(), headers=dead_letter_headers(dead, self.source_topic, partition)
            )
            self._inflight.append((future, "dead", partition, send))

        send()

    def flush(self, timeout_s: float) -> FlushResult:
        """Wait for acknowledgements; failed dead letters are sent again (at least once)."""
        from kafka.errors import KafkaError

        try:
            self._producer.flush(timeout=timeout_s)
        except KafkaError as exc:
            log.warning("producer flush did not complete in %.0f s (%s)", timeout_s, exc)
        if any(not f.is_done for f, _, _, _ in self._inflight):
            return FlushResult(False, set())
        failed: set[int] = set()
        resend: list[Callable[[], None]] = []
        for future, kind, partition, again in self._inflight:
            if future.failed():
                log.warning("%s send for partition %d failed: %s", kind, partition, future.exception)
                if kind == "alert":
                    failed.add(partition)
                elif again is not None:
                    resend.append(again)
            elif kind == "alert":
                meta = future.value
                self.alert_ends[meta.partition] = max(self.alert_ends.get(meta.partition, 0), meta.offset + 1)
        self._inflight = []
        for again in resend:
            again()
        if resend:
            return FlushResult(False, failed)
        return FlushResult(True, failed)

    def scan_alerts(self, partitions: set[int], scan_from: dict[int, int], timeout_s: float) -> dict[int, set[int]] | None:
        """Alert numbers already in the alerts topic for these input partitions (None: broker unreachable).

        Reads every alerts-topic partition from ``scan_from`` (an offset at
        or before any alert exported after the checkpoint) to its high
        watermark.
        """
        found: dict[int, set[int]] = {p: set() for p in partitions}
        if self.alerts_topic is None or not partitions:
            return found
        from kafka import KafkaConsumer, TopicPartition
        from kafka.errors import KafkaError

        wanted = {f"{self.source_topic}/{p}".encode(): p for p in partitions}
        group = self.group.encode()
        deadline = time.monotonic() + timeout_s
        try:
            consumer = KafkaConsumer(
                bootstrap_servers=self.bootstrap_servers.split(","),
                group_id=None,
                enable_auto_commit=False,
                auto_offset_reset="earliest",
                client_id="streamguard-alert-scan",
                **self.config.client_options(),
            )
        except KafkaError as exc:
            log.warning("alert scan: cannot connect (%s)", exc)
            return None
        try:
            ids = None
            while ids is None and time.monotonic() < deadline:
                ids = consumer.partitions_for_topic(self.alerts_topic)
                if not ids:
                    if consumer.bootstrap_connected():
                        return found  # no alerts topic yet: nothing was exported
                    ids = None
                    time.sleep(0.2)
            if ids is None:
                return None
            tps = [TopicPartition(self.alerts_topic, p) for p in sorted(ids)]
            consumer.assign(tps)
            for tp in tps:
                consumer.seek(tp, scan_from.get(tp.partition, 0))
            while time.monotonic() < deadline:
                for messages in consumer.poll(timeout_ms=200).values():
                    for m in messages:
                        headers = dict(m.headers or [])
                        p = wanted.get(headers.get(H_SOURCE, b""))
                        if p is not None and headers.get(H_GROUP) == group:
                            try:
                                found[p].add(int(headers.get(H_SEQ, b"-1")))
                            except ValueError:
                                continue
                caught_up = True
                for tp in tps:
                    high = consumer.highwater(tp)
                    if high is None or consumer.position(tp) < high:
                        caught_up = False
                        break
                if caught_up:
                    return found
            log.warning("alert scan did not reach the end of %s in %.0f s", self.alerts_topic, timeout_s)
            return None
        except KafkaError as exc:
            log.warning("alert scan failed (%s)", exc)
            return None
        finally:
            consumer.close()

    def close(self, timeout_s: float = 10.0) -> None:
        try:
            self._producer.close(timeout=timeout_s)
        except Exception as exc:
            log.warning("producer close failed: %s", exc)
