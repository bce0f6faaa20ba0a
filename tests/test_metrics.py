"""streamguard.metrics (with its endpoint, kernel timer and pseudonyms): values, bounded cardinality, no raw ids, valid exposition."""

from __future__ import annotations

import hashlib
import hmac
import shutil
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from streamguard.endpoint import serve
from streamguard.metrics import (
    ALERT_KINDS,
    BAD_RECORD_REASONS,
    SCORE_BUCKETS,
    STAGES,
    StreamguardMetrics,
)

KEY = b"test-key-0123456789abcdef"


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> StreamguardMetrics:
    return StreamguardMetrics(registry, KEY, top_n=5)


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    return registry.get_sample_value(name, labels)


def exercise_every_method(m: StreamguardMetrics) -> None:
    """Call every public method once with realistic values."""
    m.requests(256, partition=0)
    m.bad_records("wrong dimension: 12 (stream dimension is 384)")
    m.alerts(["coverage_sweep"])
    m.batch(0.042, 256)
    for stage in STAGES:
        m.stage(stage, 0.003)
    m.alert_delay(12.5)
    m.consumer_lag(0, 1500)
    m.accounts(1234, 56_000_000)
    m.scores("near_duplicate", [0.1, 0.2])
    m.scores("coverage_sweep", [0.9])
    m.suspicious([("acct-1", 0.97), ("acct-2", 0.5)])
    m.backend_info("cpu", "x86_64")
    m.gpu_kernel("hamming_scan", 0.0004)
    m.ready(True)
    m.last_progress(1_790_000_000.0)
    m.register_collector(lambda: {"streamguard_queue_depth": 3.0})


def series_lines(registry: CollectorRegistry) -> list[str]:
    return [line for line in generate_latest(registry).decode().splitlines() if line and not line.startswith("#")]


def test_constructor_validates_key_and_top_n(registry: CollectorRegistry) -> None:
    with pytest.raises(TypeError, match="bytes"):
        StreamguardMetrics(registry, "not-bytes")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="STREAMGUARD_HMAC_KEY"):
        StreamguardMetrics(registry, b"")
    with pytest.raises(ValueError, match="top_n"):
        StreamguardMetrics(registry, KEY, top_n=0)


def test_requests_are_counted_per_partition(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    metrics.requests(100, partition=3)
    metrics.requests(28, partition=3)
    metrics.requests(7, partition=0)
    metrics.requests(5)
    assert value(registry, "streamguard_requests_total", partition="3") == 128
    assert value(registry, "streamguard_requests_total", partition="0") == 7
    assert value(registry, "streamguard_requests_total", partition="none") == 5
    with pytest.raises(ValueError, match=">= 0"):
        metrics.requests(-1)
    with pytest.raises(ValueError, match="partition"):
        metrics.requests(1, partition=-2)


def test_bad_records_use_bounded_reason_stems(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    for reason in BAD_RECORD_REASONS:
        assert value(registry, "streamguard_bad_records_total", reason=reason) == 0
    metrics.bad_records("wrong dimension: 12 (stream dimension is 384)")
    metrics.bad_records("wrong dimension", n=2)
    metrics.bad_records("embedding has NaN or Inf")
    metrics.bad_records("zero vector", n=4)
    metrics.bad_records("missing account_id")
    metrics.bad_records("undecodable: invalid JSON at byte 3")
    metrics.bad_records("something nobody planned for: user-123")
    metrics.bad_records("user-456")
    assert value(registry, "streamguard_bad_records_total", reason="wrong dimension") == 3
    assert value(registry, "streamguard_bad_records_total", reason="embedding has NaN or Inf") == 1
    assert value(registry, "streamguard_bad_records_total", reason="zero vector") == 4
    assert value(registry, "streamguard_bad_records_total", reason="missing account_id") == 1
    assert value(registry, "streamguard_bad_records_total", reason="undecodable") == 1
    assert value(registry, "streamguard_bad_records_total", reason="other") == 2
    reasons = {s.labels["reason"] for s in _samples(registry, "streamguard_bad_records_total")}
    assert reasons == set(BAD_RECORD_REASONS)


def test_alerts_count_once_per_kind(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    for kind in ALERT_KINDS:  # exported at 0 before the first alert, so increase() sees the first one
        assert value(registry, "streamguard_alerts_total", kind=kind) == 0
    metrics.alerts(["near_duplicate", "campaign"])
    metrics.alerts(["near_duplicate+campaign", "campaign"])
    metrics.alerts(["coverage_sweep"])
    metrics.alerts([])
    assert value(registry, "streamguard_alerts_total", kind="near_duplicate") == 2
    assert value(registry, "streamguard_alerts_total", kind="campaign") == 2
    assert value(registry, "streamguard_alerts_total", kind="coverage_sweep") == 1
    with pytest.raises(ValueError, match="unknown alert kind"):
        metrics.alerts(["exfiltration"])


def test_batch_and_stage_histograms(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    metrics.batch(0.02, 100)
    metrics.batch(0.3, 300)
    assert value(registry, "streamguard_batch_duration_seconds_count") == 2
    assert value(registry, "streamguard_batch_duration_seconds_sum") == pytest.approx(0.32)
    assert value(registry, "streamguard_batch_duration_seconds_bucket", le="0.025") == 1
    assert value(registry, "streamguard_batch_duration_seconds_bucket", le="0.5") == 2
    assert value(registry, "streamguard_batch_size_sum") == 400
    assert value(registry, "streamguard_batch_size_bucket", le="128.0") == 1
    metrics.stage("near_duplicate", 0.004)
    metrics.stage("near_duplicate", 0.006)
    assert value(registry, "streamguard_stage_duration_seconds_count", stage="near_duplicate") == 2
    assert value(registry, "streamguard_stage_duration_seconds_sum", stage="near_duplicate") == pytest.approx(0.01)
    assert value(registry, "streamguard_stage_duration_seconds_count", stage="checkpoint") == 0
    with pytest.raises(ValueError, match="unknown stage"):
        metrics.stage("warp_drive", 1.0)


def test_alert_delay_clamps_clock_skew(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    metrics.alert_delay(90.0)
    metrics.alert_delay(-3.0)
    assert value(registry, "streamguard_alert_delay_seconds_count") == 2
    assert value(registry, "streamguard_alert_delay_seconds_sum") == 90.0
    assert value(registry, "streamguard_alert_delay_seconds_bucket", le="0.5") == 1
    with pytest.raises(ValueError, match="NaN"):
        metrics.alert_delay(float("nan"))


def test_consumer_lag_and_forgotten_partitions(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    metrics.consumer_lag(0, 10)
    metrics.consumer_lag(1, 20_000)
    metrics.consumer_lag(1, 15_000)
    assert value(registry, "streamguard_consumer_lag_records", partition="1") == 15_000
    metrics.forget_partitions([1, 7])
    assert value(registry, "streamguard_consumer_lag_records", partition="1") is None
    assert value(registry, "streamguard_consumer_lag_records", partition="0") == 10


def test_gauges(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    metrics.accounts(42, 1 << 20)
    metrics.ready(True)
    metrics.last_progress(1_790_000_123.5)
    assert value(registry, "streamguard_active_accounts") == 42
    assert value(registry, "streamguard_state_bytes") == 1 << 20
    assert value(registry, "streamguard_ready") == 1
    assert value(registry, "streamguard_last_progress_timestamp_seconds") == 1_790_000_123.5
    metrics.ready(False)
    assert value(registry, "streamguard_ready") == 0


def test_scores_match_a_prometheus_histogram(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    rng = np.random.default_rng(0)
    values = np.concatenate([rng.beta(0.5, 3.0, 5000), np.array(SCORE_BUCKETS), [0.0, 1.0]])
    oracle_registry = CollectorRegistry()
    oracle = Histogram("oracle", "same buckets, one observe per value", registry=oracle_registry, buckets=SCORE_BUCKETS)
    for v in values:
        oracle.observe(float(v))
    metrics.scores("coverage_sweep", values[:3000])
    metrics.scores("coverage_sweep", values[3000:])
    metrics.scores("coverage_sweep", [float("nan"), float("inf")])  # dropped
    for le in [*(str(float(b)) for b in SCORE_BUCKETS), "+Inf"]:
        got = value(registry, "streamguard_score_bucket", kind="coverage_sweep", le=le)
        assert got == oracle_registry.get_sample_value("oracle_bucket", {"le": le}), le
    assert value(registry, "streamguard_score_count", kind="coverage_sweep") == values.size
    assert value(registry, "streamguard_score_sum", kind="coverage_sweep") == pytest.approx(values.sum())
    assert value(registry, "streamguard_score_count", kind="near_duplicate") == 0
    metrics.scores("near_duplicate", [1.7, -0.2])  # clipped into [0, 1]
    assert value(registry, "streamguard_score_bucket", kind="near_duplicate", le="0.05") == 1
    assert value(registry, "streamguard_score_sum", kind="near_duplicate") == 1.0
    with pytest.raises(ValueError, match="unknown score kind"):
        metrics.scores("campaign", [0.5])


def test_account_hash_is_truncated_hmac_sha256(registry: CollectorRegistry) -> None:
    # RFC 4231, test case 2: HMAC-SHA256(key="Jefe", "what do ya want for nothing?")
    m = StreamguardMetrics(registry, b"Jefe")
    assert m.account_hash("what do ya want for nothing?") == "5bdcc146bf60754e"
    other = StreamguardMetrics(CollectorRegistry(), b"another key")
    assert other.account_hash("what do ya want for nothing?") != "5bdcc146bf60754e"


def test_suspicious_keeps_only_the_current_top_n(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    first = [(f"acct-{i}", i / 100) for i in range(20)]
    metrics.suspicious(first)
    rows = {s.labels["rank"]: (s.labels["account_hash"], s.value) for s in _samples(registry, "streamguard_suspicious_account_score")}
    assert sorted(rows) == ["1", "2", "3", "4", "5"]
    assert rows["1"] == (metrics.account_hash("acct-19"), 0.19)
    assert rows["5"] == (metrics.account_hash("acct-15"), 0.15)
    # A new ranking replaces the old one entirely; duplicates keep their best score.
    metrics.suspicious([("acct-x", 0.5), ("acct-y", 0.9), ("acct-x", 0.95), ("acct-z", float("nan"))])
    rows = {s.labels["rank"]: (s.labels["account_hash"], s.value) for s in _samples(registry, "streamguard_suspicious_account_score")}
    assert rows == {"1": (metrics.account_hash("acct-x"), 0.95), "2": (metrics.account_hash("acct-y"), 0.9)}
    metrics.suspicious([])
    assert _samples(registry, "streamguard_suspicious_account_score") == []


def test_backend_info_and_kernels(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    metrics.backend_info("cpu", "x86_64")
    metrics.backend_info("cuda", "NVIDIA H100 80GB HBM3")
    assert value(registry, "streamguard_backend_info", backend="cuda", device="NVIDIA H100 80GB HBM3") == 1
    assert value(registry, "streamguard_backend_info", backend="cpu", device="x86_64") is None
    metrics.gpu_kernel("coverage_update", 0.0002)
    assert value(registry, "streamguard_gpu_kernel_seconds_count", kernel="coverage_update") == 1
    with pytest.raises(ValueError, match="kernel name"):
        metrics.gpu_kernel("acct-123 prompt text", 0.1)


def test_register_collector_reads_at_scrape_and_survives_failures(
    metrics: StreamguardMetrics, registry: CollectorRegistry
) -> None:
    depth = {"value": 1.0}
    metrics.register_collector(lambda: {"streamguard_queue_depth": depth["value"], "not_ours": 1.0})
    assert value(registry, "streamguard_queue_depth") == 1.0
    depth["value"] = 9.0
    assert value(registry, "streamguard_queue_depth") == 9.0
    assert value(registry, "not_ours") is None

    def broken() -> dict[str, float]:
        raise RuntimeError("device lost")

    metrics.register_collector(broken)
    metrics.requests(1)
    assert b"streamguard_requests_total" in generate_latest(registry)


def test_one_million_accounts_keep_the_series_count_bounded(registry: CollectorRegistry) -> None:
    """One replica of the GPU deployment at its worst: 1M distinct accounts, 12 partitions, every kernel timed.

    The registry also carries the process and platform collectors, as in ``run``.
    Every exposed line counts (buckets, ``_sum``, ``_count``, ``_created``).
    """
    from prometheus_client import PlatformCollector, ProcessCollector

    from streamguard.backends.kernels import entry_points, kernel_sources

    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    m = StreamguardMetrics(registry, KEY, top_n=10)
    n_accounts, chunk = 1_000_000, 50_000
    rng = np.random.default_rng(7)
    exercise_every_method(m)
    kernels = [e.name for code in kernel_sources().values() for e in entry_points(code)]
    assert len(kernels) >= 10
    for kernel in kernels:
        m.gpu_kernel(kernel, 1e-4)
    for start in range(0, n_accounts, chunk):
        ids = [f"acct-{i:07d}" for i in range(start, start + chunk)]
        scores = rng.random(chunk)
        m.suspicious(list(zip(ids, scores.tolist())))
        m.scores("near_duplicate", scores)
        m.scores("coverage_sweep", scores[::-1])
        m.requests(chunk, partition=(start // chunk) % 12)
        m.consumer_lag((start // chunk) % 12, start)
        m.bad_records(f"wrong dimension: {ids[0]}")
        m.bad_records(ids[1])  # an id where a reason belongs still lands in "other"
        m.alerts(["near_duplicate+campaign"])
        m.batch(0.05, chunk)
        m.stage("coverage", 0.01)
        m.accounts(start + chunk, (start + chunk) * 4096)
        # every 50th account is alerted: 20,000 distinct alerted accounts go through the top-N
        m.observe_alerts([_alert(a, 0, float(sc), "coverage_sweep") for a, sc in zip(ids[::50], scores[::50])], now_ms=1e3)
    for p in range(12):
        m.consumer_lag(p, 10)
        m.requests(1, partition=p)
    lines = series_lines(registry)
    print(f"series exposed after {n_accounts} distinct accounts: {len(lines)}")
    assert len(lines) < 2000
    assert len(_samples(registry, "streamguard_suspicious_account_score")) == 10
    assert value(registry, "streamguard_score_count", kind="near_duplicate") == n_accounts + 2


def test_no_label_value_is_an_account_id(registry: CollectorRegistry) -> None:
    m = StreamguardMetrics(registry, KEY, top_n=10)
    exercise_every_method(m)
    ids = [f"user-{i}@example.com" for i in range(2000)] + ["acct-1", "acct-2"]
    m.suspicious([(a, (i % 97) / 97) for i, a in enumerate(ids)])
    for a in ids[:50]:
        m.bad_records(a)
        m.bad_records(f"missing ts: {a}")
    label_values = {
        v for family in text_string_to_metric_families(generate_latest(registry).decode()) for s in family.samples for v in s.labels.values()
    }
    assert not label_values & set(ids)
    assert not any(a in v for v in label_values for a in ("user-", "acct-", "@example.com"))
    hashes = {s.labels["account_hash"] for s in _samples(registry, "streamguard_suspicious_account_score")}
    assert len(hashes) == 10 and all(len(h) == 16 and int(h, 16) >= 0 for h in hashes)
    assert m.account_hash("acct-1") == hmac.new(KEY, b"acct-1", hashlib.sha256).hexdigest()[:16]


def test_exposition_passes_promtool_check_metrics(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: run scripts/install-ops-tools.sh (Debian package 'prometheus')")
    exercise_every_method(metrics)
    text = generate_latest(registry)
    result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True, timeout=60)
    assert result.returncode == 0, (result.stdout + result.stderr).decode()
    assert not (result.stdout + result.stderr).strip(), (result.stdout + result.stderr).decode()


def test_serve_routes_metrics_and_probes(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    server, thread = serve(registry, 0)
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        metrics.requests(3, partition=1)
        with urllib.request.urlopen(f"{base}/metrics", timeout=5) as response:
            assert response.status == 200
            assert 'streamguard_requests_total{partition="1"} 3.0' in response.read().decode()
        with urllib.request.urlopen(f"{base}/healthz", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as not_ready:
            urllib.request.urlopen(f"{base}/readyz", timeout=5)
        assert not_ready.value.code == 503
        metrics.ready(True)
        with urllib.request.urlopen(f"{base}/readyz", timeout=5) as response:
            assert response.status == 200
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(f"{base}/nope", timeout=5)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    assert not thread.is_alive()


# -- the HTTP endpoint is bounded ---------------------------------------------------------


def _serving(registry: CollectorRegistry, **limits):
    """``serve`` on a free loopback port; returns (server, thread, base URL, stop)."""
    server, thread = serve(registry, 0, **limits)

    def stop() -> None:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)

    return server, thread, f"http://127.0.0.1:{server.server_port}", stop


def _get(url: str, timeout: float = 5.0) -> tuple[int, float]:
    """(status, seconds) of one GET."""
    started = time.monotonic()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as exc:
        status = exc.code
    return status, time.monotonic() - started


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """What the server sent until it closed the connection, and when it closed it (seconds from now)."""
    started = time.monotonic()
    sock.settimeout(timeout)
    data = b""
    try:
        while chunk := sock.recv(4096):
            data += chunk
    except ConnectionResetError:
        pass
    return data, time.monotonic() - started


def test_idle_connections_do_not_keep_probes_or_scrapes_out(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    """Connections that send nothing hold no thread; past the limit the oldest are closed, never the new ones."""
    metrics.ready(True)
    server, thread, base, stop = _serving(registry, max_connections=16, timeout_s=30.0)
    idle: list[socket.socket] = []
    try:
        assert _get(base + "/healthz")[0] == 200  # the workers have started
        threads = threading.active_count()
        idle = [socket.create_connection(("127.0.0.1", server.server_port), timeout=5) for _ in range(200)]
        for path in ("/metrics", "/readyz", "/healthz", "/metrics"):
            status, seconds = _get(base + path)
            assert status == 200 and seconds < 2.0, (path, status, seconds)
        assert threading.active_count() <= threads, "idle connections must not cost threads"
        # The oldest idle connections were closed to make room (503, then EOF), the newest are still open.
        answer, seconds = _read_until_closed(idle[0], timeout=5)
        assert answer.startswith(b"HTTP/1.0 503") and seconds < 5
        idle[-1].setblocking(False)
        with pytest.raises(BlockingIOError):
            idle[-1].recv(1)
    finally:
        for sock in idle:
            sock.close()
        stop()
    assert not thread.is_alive()


def test_a_client_sending_half_a_request_is_cut_after_the_timeout(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    server, _, base, stop = _serving(registry, timeout_s=0.5)
    try:
        half = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
        half.sendall(b"GET /metrics HTTP/1.1\r\nHost: streamguard\r\n")  # no blank line: the head never ends
        answer, seconds = _read_until_closed(half, timeout=5)
        assert answer.startswith(b"HTTP/1.0 408") and 0.3 < seconds < 2.0, (answer[:40], seconds)
        # A slow loris dripping one byte every 0.1 s is cut at the same deadline, not reset by each byte.
        drip = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
        started = time.monotonic()
        with pytest.raises(OSError):
            for byte in b"GET /metrics HTTP/1.1\r\nHost: streamguard\r\nX-Slow: " + b"a" * 100:
                drip.send(bytes([byte]))
                time.sleep(0.1)
        assert time.monotonic() - started < 3.0
        half.close()
        drip.close()
        # Meanwhile, and after, whole requests are answered.
        assert _get(base + "/metrics")[0] == 200
    finally:
        stop()


def test_requests_beyond_the_workers_and_queue_get_503_at_once(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    """One worker stuck in a slow readiness check, one request queued: the next is refused without waiting."""
    release = threading.Event()
    _, _, base, stop = _serving(registry, readiness=lambda: release.wait(10), workers=1, queue=1, timeout_s=5.0)
    results: list[tuple[int, float]] = []
    try:
        waiting = [threading.Thread(target=lambda: results.append(_get(base + "/readyz", timeout=15))) for _ in range(2)]
        for t in waiting:
            t.start()
            time.sleep(0.3)  # the first occupies the worker, the second the queue
        status, seconds = _get(base + "/healthz")
        assert status == 503 and seconds < 1.0, (status, seconds)
        release.set()
        for t in waiting:
            t.join(timeout=15)
        assert [s for s, _ in results] == [200, 200]
        assert _get(base + "/healthz")[0] == 200
    finally:
        release.set()
        stop()


def test_shutdown_does_not_wait_for_a_stuck_request(metrics: StreamguardMetrics, registry: CollectorRegistry) -> None:
    release = threading.Event()
    server, thread = serve(registry, 0, readiness=lambda: release.wait(10), workers=1, queue=1)
    clients = []
    try:
        for _ in range(2):  # one answered by the only worker (stuck), one queued
            client = socket.create_connection(("127.0.0.1", server.server_port), timeout=5)
            client.sendall(b"GET /readyz HTTP/1.0\r\n\r\n")
            clients.append(client)
            time.sleep(0.2)
        started = time.monotonic()
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
        assert not thread.is_alive() and time.monotonic() - started < 2.0
        assert _read_until_closed(clients[1], timeout=5)[0] == b""  # the queued request is dropped
        release.set()
        assert _read_until_closed(clients[0], timeout=5)[0].startswith(b"HTTP/1.0 200")  # the one in hand finishes
    finally:
        release.set()
        for client in clients:
            client.close()


def test_serve_checks_its_limits(registry: CollectorRegistry) -> None:
    for bad in ({"workers": 0}, {"max_connections": -1}, {"queue": 1.5}, {"timeout_s": 0}, {"timeout_s": float("inf")}):
        with pytest.raises(ValueError):
            serve(registry, 0, **bad)


def _samples(registry: CollectorRegistry, name: str) -> list:
    return [s for family in registry.collect() for s in family.samples if s.name == name]


# -- what pipelines, alerts and the cuda backend feed ------------------------------------


class _FakeEvent:
    """A CUDA event stand-in: records a tick; ``done`` once the fake device has reached it."""

    device_clock = 0
    finished_up_to = 0

    def __init__(self) -> None:
        self.at: int | None = None

    def record(self) -> None:
        _FakeEvent.device_clock += 1
        self.at = _FakeEvent.device_clock

    @property
    def done(self) -> bool:
        return self.at is not None and self.at <= _FakeEvent.finished_up_to


class _FakeCudaBackend:
    name = "cuda"

    def __init__(self) -> None:
        self.launched: list[tuple[str, tuple]] = []

    def launcher(self, entry: str):
        return lambda grid, block, args: self.launched.append((entry, args))

    def _run(self, name: str, grid, block, *args) -> None:  # as CudaBackend._run does
        self.launcher(name)(grid, block, args)


def test_kernel_timer_observes_finished_launches_without_waiting(metrics: StreamguardMetrics, registry) -> None:
    from streamguard.backends.kernel_timer import KernelTimer, instrument_kernels

    backend = _FakeCudaBackend()
    timer = KernelTimer(metrics, backend, event=_FakeEvent, elapsed_s=lambda start, stop: (stop.at - start.at) * 1e-4)
    backend._run("dup_scan", (1,), (32,), "x")
    backend._run("coverage_reduce", (1,), (32,), "y")
    backend._run("dup_scan", (1,), (32,), "z")
    assert [entry for entry, _ in backend.launched] == ["dup_scan", "coverage_reduce", "dup_scan"]  # the kernels still ran
    assert timer.drain() == 0  # nothing finished on the device yet: drain never blocks
    _FakeEvent.finished_up_to = _FakeEvent.device_clock - 2  # the first two launches are done
    assert timer.drain() == 2
    assert value(registry, "streamguard_gpu_kernel_seconds_count", kernel="dup_scan") == 1
    assert value(registry, "streamguard_gpu_kernel_seconds_count", kernel="coverage_reduce") == 1
    assert value(registry, "streamguard_gpu_kernel_seconds_sum", kernel="dup_scan") == pytest.approx(1e-4)
    _FakeEvent.finished_up_to = _FakeEvent.device_clock
    assert timer.drain() == 1
    assert value(registry, "streamguard_gpu_kernel_seconds_count", kernel="dup_scan") == 2
    assert timer.launches == 3 and timer.dropped == 0
    # Only the cuda backend is instrumented.
    class Cpu:
        name = "cpu"

    assert instrument_kernels(metrics, Cpu()) is None


def test_kernel_timer_bounds_what_waits(metrics: StreamguardMetrics) -> None:
    from streamguard.backends.kernel_timer import KernelTimer

    backend = _FakeCudaBackend()
    timer = KernelTimer(metrics, backend, event=_FakeEvent, elapsed_s=lambda a, b: 0.0, max_pending=4)
    for _ in range(10):
        backend._run("slot_keys", (1,), (1,))
    assert timer.dropped == 6 and len(timer._pending) == 4


def _alert(account: str, ts: int, score: float, kind: str):
    from streamguard.schema import AlertRecord

    return AlertRecord(account, ts, score, kind, None, {"duplicate_rate": 0.5}, 300)


def test_observe_alerts_counts_kinds_delays_and_keeps_the_best_score(metrics: StreamguardMetrics, registry) -> None:
    alerts = [_alert("acct-a", 1_000, 0.7, "coverage_sweep"), _alert("acct-b", 2_000, 0.9, "near_duplicate+coverage_sweep"),
              _alert("acct-a", 3_000, 0.8, "campaign"), _alert("acct-c", 4_000, 0.5, "exfiltration")]
    metrics.observe_alerts(alerts, now_ms=11_000)
    assert value(registry, "streamguard_alerts_total", kind="coverage_sweep") == 2
    assert value(registry, "streamguard_alerts_total", kind="near_duplicate") == 1
    assert value(registry, "streamguard_alerts_total", kind="campaign") == 1  # the unknown kind is logged, not raised
    assert value(registry, "streamguard_alert_delay_seconds_count") == 4
    assert value(registry, "streamguard_alert_delay_seconds_sum") == pytest.approx(10 + 9 + 8 + 7)
    rows = {s.labels["rank"]: (s.labels["account_hash"], s.value) for s in _samples(registry, "streamguard_suspicious_account_score")}
    assert rows == {"1": (metrics.account_hash("acct-b"), 0.9), "2": (metrics.account_hash("acct-a"), 0.8),
                    "3": (metrics.account_hash("acct-c"), 0.5)}
    # replay/demo: the delay runs from when the triggering row was read, not from its event time
    metrics.observe_alerts([_alert("acct-d", 5_000, 0.1, "near_duplicate")], now_ms=2_000_000, arrival_ms=lambda ts: 1_999_500)
    assert value(registry, "streamguard_alert_delay_seconds_sum") == pytest.approx(34 + 0.5)


def test_alert_records_carry_the_keyed_hash_of_the_gauge(metrics: StreamguardMetrics) -> None:
    from streamguard.pseudonyms import account_hasher, hmac_key_from_env, with_account_hash

    alert = _alert("acct-7", 1, 0.9, "coverage_sweep")
    tagged = with_account_hash(alert, metrics.account_hash)
    assert tagged.evidence == {"duplicate_rate": 0.5, "account_hash": metrics.account_hash("acct-7")}
    assert alert.evidence == {"duplicate_rate": 0.5}  # the original is not changed
    assert set(tagged.to_dict()) == set(alert.to_dict())  # the contract's fields only
    assert account_hasher(KEY)("acct-7") == metrics.account_hash("acct-7")
    assert hmac_key_from_env({"STREAMGUARD_HMAC_KEY": "s3cret"}) == (b"s3cret", True)
    key, stable = hmac_key_from_env({})
    assert len(key) == 32 and not stable


def test_backend_device_names_the_machine() -> None:
    from streamguard.backends import NumpyBackend
    from streamguard.backends.device import backend_device

    assert backend_device(NumpyBackend())  # e.g. "x86_64 x2"

    class Named:
        name = "cuda"
        device = "NVIDIA H100 80GB HBM3"

    assert backend_device(Named()) == "NVIDIA H100 80GB HBM3"


@pytest.fixture(scope="module")
def small_replay():
    """(traffic, settings, backend) of a small simulated stream with planted distillers."""
    from streamguard.backends import BackendUnavailable, NumpyBackend, create_backend
    from streamguard.config import load_settings
    from streamguard.sim import SimConfig, simulate

    try:
        backend = create_backend("cpu")
    except BackendUnavailable:
        backend = NumpyBackend()
    traffic = simulate(SimConfig(seed=5, scale=0.1, dim=48))
    # A stream this small supports only ~50 topics, too few for a sweep to be significant at the
    # default false-alert rate; the series under test need alerts, so the line is set lower.
    settings = load_settings(environ={
        "STREAMGUARD_COVERAGE_WARMUP": "1500", "STREAMGUARD_COVERAGE_CELLS": "256",
        "STREAMGUARD_SCORING_FALSE_ALERTS_PER_10K": "500",
    })
    return traffic, settings, backend


def test_replay_feeds_the_same_series_as_run(small_replay) -> None:
    """A replay with metrics: every series agrees with what the replay itself reports."""
    from streamguard.sinks.alerts import MemoryAlertSink
    from streamguard.sinks.dead_letter import DeadLetterSink
    from streamguard.stream.replay import ReplayHooks, replay_table

    traffic, settings, backend = small_replay
    registry = CollectorRegistry()
    m = StreamguardMetrics(registry, KEY)
    sink = MemoryAlertSink()
    hooks = ReplayHooks(metrics=m, alert_hash=m.account_hash)
    result = replay_table(traffic.table, settings, backend, sink, DeadLetterSink(), partitions=2, hooks=hooks)
    plain = MemoryAlertSink()
    replay_table(traffic.table, settings, backend, plain, DeadLetterSink(), partitions=2)
    assert [a.account_id for a in sink.alerts] == [a.account_id for a in plain.alerts]  # hooks change no alert
    assert all(a.evidence["account_hash"] == m.account_hash(a.account_id) for a in sink.alerts)
    assert sink.alerts, "alerts are raised"
    by_partition = {s.labels["partition"]: s.value for s in _samples(registry, "streamguard_requests_total")}
    assert set(by_partition) == {"0", "1"} and sum(by_partition.values()) == result.valid
    kinds = {kind: sum(kind in a.kind.split("+") for a in sink.alerts) for kind in ALERT_KINDS}
    for kind, n in kinds.items():
        assert value(registry, "streamguard_alerts_total", kind=kind) == n
    assert value(registry, "streamguard_alert_delay_seconds_count") == len(sink.alerts)
    assert value(registry, "streamguard_batch_duration_seconds_count") >= 2
    assert value(registry, "streamguard_active_accounts") == sum(len(p.accounts) for p in result.pipelines)
    assert value(registry, "streamguard_state_bytes") > 0
    assert value(registry, "streamguard_score_count", kind="coverage_sweep") > 0
    for stage in ("decode", "accounts", "near_duplicate", "coverage", "scoring", "sink"):
        assert value(registry, "streamguard_stage_duration_seconds_count", stage=stage) > 0, stage
    top = {s.labels["account_hash"] for s in _samples(registry, "streamguard_suspicious_account_score")}
    assert top and top <= {m.account_hash(a.account_id) for a in sink.alerts}


def test_observed_scores_are_the_scorers_margins(registry, small_replay) -> None:
    from streamguard.sinks.alerts import MemoryAlertSink
    from streamguard.sinks.dead_letter import DeadLetterSink
    from streamguard.stream.replay import replay_table

    traffic, settings, backend = small_replay
    (pipeline,) = replay_table(traffic.table, settings, backend, MemoryAlertSink(), DeadLetterSink()).pipelines
    m = StreamguardMetrics(registry, KEY)
    ids = np.asarray(traffic.table.column("account_id").to_pylist(), dtype=object)
    n = m.observe_scores(pipeline, ids)
    everyone = pipeline.account_features(pipeline.accounts.active_slots())
    assert n == int((everyone.seen >= settings.scoring.min_requests).sum())
    assert m.observe_scores(pipeline, ids) == 0  # sampled: at most once a second per pipeline
    assert value(registry, "streamguard_score_count", kind="coverage_sweep") == n
    slots = np.sort([pipeline.accounts.slot(a) for a in set(ids.tolist())])
    features = pipeline.account_features(slots)
    established = features.take(features.seen >= settings.scoring.min_requests)
    margin = pipeline.scorer.sweep_margin(established.sweep_z, established.effective_topics)
    assert value(registry, "streamguard_score_sum", kind="coverage_sweep") == pytest.approx(float(np.sum(1 - 0.5 ** np.clip(margin, 0, 64))))
    crossed = value(registry, "streamguard_score_count", kind="coverage_sweep") - value(
        registry, "streamguard_score_bucket", kind="coverage_sweep", le="0.45")
    assert crossed >= 1, "a planted sweeper is past the line (score >= 0.5)"


def test_score_sampling_forgets_pipelines_it_no_longer_throttles(metrics: StreamguardMetrics) -> None:
    """Issue 13: one entry per pipeline ever sampled (a restore makes a new one) must not pile up over days."""
    from types import SimpleNamespace

    from streamguard.metrics import SCORE_SAMPLED_PIPELINES

    pipelines = [SimpleNamespace(ready=True, established_features=lambda a: (np.empty(0, np.int64), None)) for _ in range(1000)]
    for pipeline in pipelines:  # every restore of a partition: a new pipeline, sampled once
        metrics.observe_scores(pipeline, np.array(["a"], dtype=object), min_interval_s=0.0)
    assert len(metrics._score_sampled_at) <= SCORE_SAMPLED_PIPELINES
    live = pipelines[-1]
    metrics.observe_scores(live, np.array(["a"], dtype=object), min_interval_s=60.0)
    assert id(live) in metrics._score_sampled_at  # still throttled within its interval
