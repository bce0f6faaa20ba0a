"""The ``run`` command: its flags (settings ``[service]``, ``[metrics]``, ``[runtime]``), then the service wired and run.

Builds the backend, the metrics and their endpoint, the Kafka clients
(retried while the broker is unreachable) and :class:`~streamguard.service.loop.Service`,
installs the signal handlers and quiets kafka-python's logging.
``streamguard run`` registers :func:`add_parser` and calls :func:`run`;
:func:`main` is ``python -m streamguard.service``.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

from streamguard.service.loop import EXIT_FAILED, EXIT_OK, EXIT_USAGE, Service
from streamguard.service.state import RunOptions, ServiceError
from streamguard.stream.checkpoint import CheckpointError
from streamguard.stream.kafka import KafkaConfig

# One logger for the whole service, as when it was one module: operators filter on its name.
log = logging.getLogger("streamguard.service")


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``run`` on the ``streamguard`` command's subparsers."""
    run_p = subparsers.add_parser("run", help="the service: Kafka in, alerts out, /metrics /healthz /readyz")
    add_arguments(run_p)
    return run_p


SERVICE_FLAG_KINDS: dict[str, dict[str, Any]] = {
    "partitions_hint": {"type": int, "metavar": "N"},
    "stop_after_idle": {"type": float, "metavar": "SECONDS"},
    "dim": {"type": int},
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The flags of ``run``, one per setting of ``[service]``, ``[metrics]``, ``[runtime]`` and a few of ``[kafka]``.

    Every flag defaults to None (not given): :func:`resolve_settings` layers the given ones over the
    defaults, the TOML file and the ``STREAMGUARD_<SECTION>_<FIELD>`` variables.
    """
    from dataclasses import fields

    from streamguard.config import BACKENDS, ServiceConfig, flag_help

    for f in fields(ServiceConfig):
        p.add_argument(f"--{f.name.replace('_', '-')}", default=None, help=flag_help("service", f.name), **SERVICE_FLAG_KINDS.get(f.name, {}))
    p.add_argument("--metrics-port", type=int, default=None, help=flag_help("metrics", "port"))
    p.add_argument("--metrics-addr", default=None, help=flag_help("metrics", "addr"))
    p.add_argument("--alert-account-hash", action="store_true", default=None, help=flag_help("runtime", "alert_account_hash"))
    p.add_argument("--config", default=os.environ.get("STREAMGUARD_CONFIG"), help="TOML settings file (env STREAMGUARD_CONFIG)")
    p.add_argument("--backend", default=None, choices=list(BACKENDS), help=flag_help("runtime", "backend"))
    p.add_argument("--codebook", default=None, help=flag_help("runtime", "codebook", " (.npz from replay --save-codebook)"))
    p.add_argument("--checkpoint-interval", type=float, default=None, help=flag_help("kafka", "checkpoint_interval_s"))
    security = p.add_argument_group("Kafka security (passed through to the client; env STREAMGUARD_KAFKA_<NAME>)")
    for flag in ("security-protocol", "sasl-mechanism", "sasl-username", "sasl-password", "ssl-cafile", "ssl-certfile", "ssl-keyfile"):
        security.add_argument(f"--{flag}", default=None, help=flag_help("kafka", flag.replace("-", "_")))


def resolve_settings(args: argparse.Namespace, environ: Any = None) -> Any:
    """Settings of ``run``: defaults < TOML (``--config``) < ``STREAMGUARD_*`` variables < flags.

    The resolved values are written back onto ``args`` (``args.topic`` ...), every section is validated.
    """
    from streamguard.config import flag_overrides, load_settings, settle_flags

    settings = load_settings(args.config, environ=environ, overrides=flag_overrides(args))
    settle_flags(args, settings)
    return settings


def _kafka_config(settings: Any, args: argparse.Namespace) -> KafkaConfig:
    """``[kafka]`` of the settings, the flags already layered in by :func:`resolve_settings`."""
    base = getattr(settings, "kafka", None)
    config = base if isinstance(base, KafkaConfig) else KafkaConfig.from_env()
    return config.validate()


class _Retry(Exception):
    pass


def _connect(build: Callable[[], Any], what: str, service_stop: Callable[[], bool]) -> Any:
    """Build a client, retrying with backoff while the broker is unreachable."""
    from kafka.errors import KafkaError

    delay = 1.0
    while True:
        try:
            return build()
        except KafkaError as exc:
            if service_stop():
                raise _Retry() from None
            log.warning("%s: broker unreachable (%s); retrying in %.0f s", what, exc, delay)
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


def run(args: argparse.Namespace) -> int:
    """``streamguard run``: returns the exit status (2: usage error, 1: failure, 0: clean stop)."""
    quiet_kafka_logs()
    try:
        return _run(args)
    except (ValueError, ServiceError, CheckpointError) as exc:
        print(f"streamguard run: error: {exc}", file=sys.stderr)
        return EXIT_USAGE if isinstance(exc, ValueError) else EXIT_FAILED


def _run(args: argparse.Namespace) -> int:
    from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

    from streamguard.backends import BackendUnavailable, create_backend
    from streamguard.detectors.codebook import Codebook
    from streamguard.backends.device import backend_device
    from streamguard.backends.kernel_timer import instrument_kernels
    from streamguard.endpoint import serve
    from streamguard.metrics import StreamguardMetrics
    from streamguard.pseudonyms import hmac_key_from_env
    from streamguard.sinks.kafka import KafkaOutputs
    from streamguard.stream.kafka import KafkaSource, ensure_topic
    from streamguard.stream.pipeline import Pipeline

    from streamguard.config import unknown_env_names

    settings = resolve_settings(args)
    logging.getLogger().setLevel(settings.runtime.log_level.upper())
    for name in unknown_env_names(os.environ):
        log.warning("%s is not a streamguard setting (streamguard settings lists them): ignored", name)
    if not args.bootstrap_servers:
        raise ValueError("--bootstrap-servers is required (or STREAMGUARD_SERVICE_BOOTSTRAP_SERVERS)")
    if not args.topic:
        raise ValueError("--topic is required (or STREAMGUARD_SERVICE_TOPIC)")
    kafka_config = _kafka_config(settings, args)
    codebook = Codebook.load(args.codebook) if args.codebook else None
    if codebook is not None and args.dim is not None and codebook.dim != args.dim:
        raise ValueError(f"--dim {args.dim} but the codebook has dimension {codebook.dim}")
    try:
        backend = create_backend(args.backend, settings.near_duplicate.bands, settings.near_duplicate.table_bits)
    except BackendUnavailable as exc:
        raise ValueError(str(exc)) from None
    log.warning("backend: %s", backend.name)

    options = RunOptions(
        topic=args.topic,
        group_id=args.group_id,
        state_dir=Path(args.state_dir),
        alerts_topic=args.alerts_topic or None,
        alerts_file=Path(args.alerts_file) if args.alerts_file else None,
        dead_letter_topic=args.dead_letter_topic or None,
        stop_after_idle=args.stop_after_idle,
        dim=args.dim,
        kafka=kafka_config,
    )
    options.state_dir.mkdir(parents=True, exist_ok=True)

    registry = CollectorRegistry()
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    key, stable_key = hmac_key_from_env()
    if args.alert_account_hash and not stable_key:
        raise ValueError("--alert-account-hash needs STREAMGUARD_HMAC_KEY (a stable key, from a Secret)")
    if not stable_key:
        log.warning("STREAMGUARD_HMAC_KEY is not set: account hashes in metrics change at every restart")
    metrics = StreamguardMetrics(registry, key)
    metrics.backend_info(backend.name, backend_device(backend))
    metrics.ready(False)
    options.alert_hash = metrics.account_hash if args.alert_account_hash else None
    kernel_timer = instrument_kernels(metrics, backend)

    holder: dict[str, Any] = {}
    stopping = {"flag": False}

    def on_signal(signum: int, _frame: Any) -> None:
        stopping["flag"] = True
        if "service" in holder:
            holder["service"].request_stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    started = time.monotonic()

    def live() -> bool:
        service = holder.get("service")
        return service.live() if service is not None else time.monotonic() - started < kafka_config.liveness_timeout_s * 10

    def ready() -> bool:
        service = holder.get("service")
        return bool(service is not None and service.ready())

    def ready_detail() -> str:
        # Ready while consuming, warm-up or not; the body says what alerts still wait for.
        service = holder.get("service")
        return service.warmup_text if service is not None else ""

    server = None
    if args.metrics_port is not None:
        server, _ = serve(
            registry, args.metrics_port, args.metrics_addr, liveness=live, readiness=ready, readiness_detail=ready_detail
        )
        log.warning("serving /metrics /healthz /readyz on %s:%d", args.metrics_addr, server.server_port)

    def make_pipeline() -> Any:
        return Pipeline(settings, backend, codebook)

    try:
        source = _connect(
            lambda: KafkaSource(args.bootstrap_servers, args.topic, args.group_id, kafka_config, client_id=f"streamguard-{os.getpid()}"),
            "consumer",
            lambda: stopping["flag"],
        )
        count = source.partition_count()
        if count is not None and args.partitions_hint and count != args.partitions_hint:
            log.warning("%s has %d partitions, --partitions-hint says %d", args.topic, count, args.partitions_hint)
        for out_topic in (options.alerts_topic, options.dead_letter_topic):
            if out_topic:
                try:
                    ensure_topic(args.bootstrap_servers, out_topic, args.partitions_hint or count or 1, kafka_config)
                except Exception as exc:  # no permission to create topics, or the broker is away: the producer will tell
                    log.warning("could not ensure topic %s exists: %s", out_topic, exc)
        signatures = None
        if args.signatures_topic:
            from streamguard.stream.signatures import SignatureExchange  # noqa: PLC0415 - only when sharing

            try:
                ensure_topic(args.bootstrap_servers, args.signatures_topic, args.partitions_hint or count or 1, kafka_config)
            except Exception as exc:  # no permission to create topics: it may exist already
                log.warning("could not ensure topic %s exists: %s", args.signatures_topic, exc)
            signatures = _connect(
                lambda: SignatureExchange(args.bootstrap_servers, args.signatures_topic, kafka_config, f"streamguard-{os.getpid()}"),
                "signature exchange",
                lambda: stopping["flag"],
            )
        outputs = _connect(
            lambda: KafkaOutputs(
                args.bootstrap_servers, kafka_config, args.topic, args.group_id, options.alerts_topic, options.dead_letter_topic
            ),
            "producer",
            lambda: stopping["flag"],
        )
    except _Retry:
        return EXIT_OK
    service = Service(
        options, settings, make_pipeline, source, outputs, metrics, codebook, kernel_timer=kernel_timer, signatures=signatures
    )
    holder["service"] = service
    if stopping["flag"]:
        service.request_stop("signal")
    try:
        status = service.run()
    finally:
        if server is not None:
            server.shutdown()
            server.server_close()
    busy = (service.last_processed_at or 0.0) - (service.first_record_at or 0.0)
    log.warning(
        "run finished: %d requests, %d dead letters, %d alerts, %d checkpoints; %.0f events/s from the first record to the last processed",
        service.stats["requests"],
        service.stats["dead_letters"],
        service.stats["alerts"],
        service.stats["checkpoints"],
        service.stats["requests"] / busy if busy > 0 else 0.0,
    )
    if signatures is not None:
        log.warning(
            "signatures: published %d, received %d (%d bad messages), %d matched a request of this replica's partitions",
            signatures.published, signatures.received, signatures.bad, service.stats["remote_duplicates"],
        )
        log.warning("account records: published %d, received %d", signatures.records_published, signatures.records_received)
    log.info("time spent: %s", ", ".join(f"{k} {v:.2f} s" for k, v in sorted(service.seconds.items())))
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m streamguard.service run ...`` (the same as ``streamguard run ...``)."""
    parser = argparse.ArgumentParser(prog="streamguard")
    parser.add_argument("--log-level", default=None)
    sub = parser.add_subparsers(dest="command", required=True)
    add_parser(sub)
    args = parser.parse_args(argv)
    from streamguard.config import initial_log_level

    logging.basicConfig(level=initial_log_level(args.log_level), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return run(args)


class _MissingTopicLines(logging.Filter):
    """kafka-python logs a missing topic at ERROR on every metadata retry (ten times a second); once a minute
    is enough (the service says it at WARNING and counts it, ``topic_missing``)."""

    def __init__(self, interval_s: float = 60.0) -> None:
        super().__init__()
        self.interval_s = interval_s
        self._last: dict[str, float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if "not found in cluster metadata" not in str(record.msg):
            return True
        key, now = record.getMessage(), time.monotonic()
        if now - self._last.get(key, -float("inf")) < self.interval_s:
            return False
        self._last[key] = now
        return True


def quiet_kafka_logs() -> None:
    """kafka-python logs every connection at INFO; keep its warnings only, a missing topic once a minute."""
    kafka_logger = logging.getLogger("kafka")
    if kafka_logger.getEffectiveLevel() < logging.WARNING:
        kafka_logger.setLevel(logging.WARNING)
    cluster_logger = logging.getLogger("kafka.cluster")
    if not any(isinstance(f, _MissingTopicLines) for f in cluster_logger.filters):
        cluster_logger.addFilter(_MissingTopicLines())
