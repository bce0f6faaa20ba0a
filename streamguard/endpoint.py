"""``/metrics``, ``/healthz`` and ``/readyz`` on one port: the HTTP side of the metrics.

:func:`serve` routes the three paths on a WSGI server whose threads,
connections and waiting times are all bounded (:class:`_BoundedWSGIServer`);
:class:`Endpoint` is what the batch commands (``replay``, ``demo``) serve:
fresh registry, :class:`~streamguard.metrics.StreamguardMetrics`, backend
info and kernel timing. ``run`` wires its own (``streamguard.service.command``).
"""

from __future__ import annotations

import dataclasses
import io
import logging
import math
import queue as pyqueue
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer

from prometheus_client import CollectorRegistry, make_wsgi_app

from streamguard.backends.device import backend_device
from streamguard.backends.kernel_timer import instrument_kernels
from streamguard.metrics import NAMESPACE, StreamguardMetrics
from streamguard.pseudonyms import hmac_key_from_env

# The logger these lines have always had (they lived in streamguard/metrics.py).
log = logging.getLogger("streamguard.metrics")

#: Connections still sending their request head, at most; beyond it the oldest is closed (503).
HTTP_MAX_CONNECTIONS = 64
#: Threads that answer complete requests.
HTTP_WORKERS = 4
#: Complete requests waiting for a thread, at most; beyond it a request is answered 503 at once.
HTTP_QUEUE = 16
#: Seconds a client has, from connecting, to send its request head; also the limit of each write of the answer.
HTTP_TIMEOUT_S = 5.0
#: A request head larger than this is answered 431 (probes and scrapes send a few hundred bytes).
HTTP_MAX_HEAD_BYTES = 16 * 1024


@dataclasses.dataclass
class _Pending:
    """A connection whose request head has not fully arrived."""

    address: Any
    deadline: float
    head: bytes = b""


class _DebugStream:
    """``wsgi.errors`` and wsgiref's traceback output: a client that stops reading is not worth a traceback."""

    def write(self, text: str) -> int:
        if text.strip():
            log.debug("metrics endpoint: %s", text.rstrip())
        return len(text)

    def flush(self) -> None:
        pass


class _QuietHandler(WSGIRequestHandler):
    """One request whose head the server already read (``head``); answers are written with a timeout."""

    def __init__(self, request: socket.socket, client_address: Any, server: Any, head: bytes = b"") -> None:
        self._head = head
        self.timeout = server.timeout_s  # StreamRequestHandler.setup sets it on the socket: writes time out
        super().__init__(request, client_address, server)

    def setup(self) -> None:
        super().setup()
        self.rfile.close()  # the socket is not read again: the head (and any body bytes) came with the request
        self.rfile = io.BytesIO(self._head)

    def get_stderr(self) -> Any:
        return _DebugStream()

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        """Scrapes and probes every few seconds would flood the log."""


class _BoundedWSGIServer(WSGIServer):
    """A WSGI server whose threads, connections and waiting times are all bounded.

    One thread (``serve_forever``) accepts connections and reads their request
    heads without blocking (a selector), so an open connection holds no thread
    until its whole head has arrived:

    - a client that has not sent its head ``timeout_s`` after connecting is
      answered 408 and closed, however slowly it drips bytes (slow loris);
    - beyond ``max_connections`` connections still sending their heads, the
      oldest is answered 503 and closed, so idle connections cannot keep a
      probe or a scrape out;
    - a complete request goes to one of ``workers`` threads through a queue of
      ``queue`` places; when the queue is full it is answered 503 at once;
    - the answer is written with a timeout of ``timeout_s`` per write (a client
      that does not read); one request per connection, as wsgiref.
    """

    request_queue_size = 128
    """Listen backlog: connections are accepted as fast as they come, the limits apply after."""

    def __init__(
        self,
        server_address: tuple[str, int],
        handler_class: type[_QuietHandler],
        *,
        max_connections: int = HTTP_MAX_CONNECTIONS,
        workers: int = HTTP_WORKERS,
        queue: int = HTTP_QUEUE,
        timeout_s: float = HTTP_TIMEOUT_S,
    ) -> None:
        for name, value in (("max_connections", max_connections), ("workers", workers), ("queue", queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if not (isinstance(timeout_s, (int, float)) and math.isfinite(timeout_s) and timeout_s > 0):
            raise ValueError(f"timeout_s must be a finite number > 0, got {timeout_s!r}")
        self.max_connections = max_connections
        self.workers = workers
        self.timeout_s = float(timeout_s)
        self._requests: pyqueue.Queue[tuple[socket.socket, Any, bytes]] = pyqueue.Queue(maxsize=queue)
        self._stop = False
        self._stopped = threading.Event()
        self._stopped.set()
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        super().__init__(server_address, handler_class)

    # -- the accepting thread --------------------------------------------

    def serve_forever(self, poll_interval: float = 0.5) -> None:
        self._stopped.clear()
        threads = [
            threading.Thread(target=self._work, name=f"streamguard-metrics-{i}", daemon=True) for i in range(self.workers)
        ]
        for thread in threads:
            thread.start()
        pending: dict[socket.socket, _Pending] = {}
        self.socket.setblocking(False)
        with selectors.DefaultSelector() as selector:
            selector.register(self.socket, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            try:
                while not self._stop:
                    timeout = poll_interval
                    if pending:  # deadlines grow in insertion order: the first is the nearest
                        timeout = min(timeout, max(next(iter(pending.values())).deadline - time.monotonic(), 0.0))
                    for key, _ in selector.select(timeout):
                        if key.fileobj is self.socket:
                            self._accept(selector, pending)
                        elif key.fileobj is self._wake_r:
                            self._drain_wake()
                        else:
                            self._read(selector, pending, key.fileobj)  # type: ignore[arg-type]
                    now = time.monotonic()
                    while pending and next(iter(pending.values())).deadline <= now:
                        self._drop(selector, pending, next(iter(pending)), "408 Request Timeout")
            finally:
                for conn in list(pending):
                    self._drop(selector, pending, conn, None)
                while True:  # requests still queued are not answered; the workers see _stop and leave
                    try:
                        conn, _, _ = self._requests.get_nowait()
                    except pyqueue.Empty:
                        break
                    self.shutdown_request(conn)
                self._stopped.set()

    def shutdown(self) -> None:
        """Stop ``serve_forever`` and wait until it has returned (as ``socketserver.BaseServer.shutdown``)."""
        self._stop = True
        try:
            self._wake_w.send(b"x")
        except OSError:
            pass
        self._stopped.wait()

    def server_close(self) -> None:
        super().server_close()
        self._wake_r.close()
        self._wake_w.close()

    def _drain_wake(self) -> None:
        try:
            while self._wake_r.recv(64):
                pass
        except OSError:
            pass

    def _accept(self, selector: selectors.BaseSelector, pending: dict[socket.socket, _Pending]) -> None:
        for _ in range(self.request_queue_size):
            try:
                conn, address = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors...: the backlog waits
                log.debug("metrics endpoint: accept failed: %s", exc)
                return
            conn.setblocking(False)
            pending[conn] = _Pending(address, time.monotonic() + self.timeout_s)
            selector.register(conn, selectors.EVENT_READ)
            while len(pending) > self.max_connections:
                self._drop(selector, pending, next(iter(pending)), "503 Service Unavailable")

    def _read(self, selector: selectors.BaseSelector, pending: dict[socket.socket, _Pending], conn: socket.socket) -> None:
        entry = pending.get(conn)
        if entry is None:
            return
        try:
            data = conn.recv(4096)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:  # the client went away
            self._drop(selector, pending, conn, None)
            return
        entry.head += data
        if b"\r\n\r\n" in entry.head or b"\n\n" in entry.head:
            selector.unregister(conn)
            del pending[conn]
            try:
                self._requests.put_nowait((conn, entry.address, entry.head))
            except pyqueue.Full:
                self._refuse(conn, "503 Service Unavailable")
        elif len(entry.head) > HTTP_MAX_HEAD_BYTES:
            self._drop(selector, pending, conn, "431 Request Header Fields Too Large")

    def _drop(
        self, selector: selectors.BaseSelector, pending: dict[socket.socket, _Pending], conn: socket.socket, status: str | None
    ) -> None:
        pending.pop(conn, None)
        try:
            selector.unregister(conn)
        except (KeyError, ValueError):
            pass
        if status is None:
            self.shutdown_request(conn)
        else:
            self._refuse(conn, status)

    def _refuse(self, conn: socket.socket, status: str) -> None:
        """A short answer written without blocking (dropped if it does not fit), then close."""
        body = status.split(" ", 1)[1].lower().encode() + b"\n"
        head = f"HTTP/1.0 {status}\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        try:
            conn.setblocking(False)
            conn.send(head.encode() + body)
        except OSError:
            pass
        self.shutdown_request(conn)

    # -- the answering threads -------------------------------------------

    def _work(self) -> None:
        while not self._stop:
            try:
                conn, address, head = self._requests.get(timeout=0.5)
            except pyqueue.Empty:
                continue
            try:
                self.RequestHandlerClass(conn, address, self, head)  # type: ignore[call-arg]
            except Exception as exc:  # a client that stopped reading, a reset connection
                log.debug("metrics endpoint: request from %s failed: %s", address, exc)
            finally:
                self.shutdown_request(conn)


def serve(
    registry: CollectorRegistry,
    port: int,
    addr: str = "127.0.0.1",
    *,
    liveness: Callable[[], bool] | None = None,
    readiness: Callable[[], bool] | None = None,
    readiness_detail: Callable[[], str] | None = None,
    max_connections: int = HTTP_MAX_CONNECTIONS,
    workers: int = HTTP_WORKERS,
    queue: int = HTTP_QUEUE,
    timeout_s: float = HTTP_TIMEOUT_S,
) -> tuple[WSGIServer, threading.Thread]:
    """Serve ``/metrics``, ``/healthz`` and ``/readyz`` on ``addr:port`` from a daemon thread.

    ``/metrics`` is ``prometheus_client.make_wsgi_app(registry)``, the same
    exposition ``prometheus_client.start_http_server`` serves (content
    negotiation, gzip, ``name[]`` filters). That server answers every path
    with metrics, so a probe of ``/readyz`` would always pass; this one routes:

    - ``/healthz``: 200 while ``liveness()`` is true (default: always, the
      process is serving), else 503;
    - ``/readyz``: 200 while ``readiness()`` is true (default:
      ``streamguard_ready == 1`` in ``registry``), else 503; the body's
      first line is ``ok`` or ``not ready``, then ``readiness_detail()`` if
      given (what the detector still waits for: the shared warm-up);
    - anything else but ``/`` and ``/metrics``: 404.

    Every resource a client can hold is bounded (:class:`_BoundedWSGIServer`):
    a connection holds no thread until its request head has arrived, which
    must happen within ``timeout_s`` of connecting (else 408); at most
    ``max_connections`` connections may be sending heads (the oldest is
    closed beyond); ``workers`` threads answer, ``queue`` complete requests
    may wait for them (503 beyond); each write of an answer times out after
    ``timeout_s``. Idle or slow clients cannot keep a probe or a scrape out.

    Parameters
    ----------
    registry : the registry to expose
    port : TCP port; 0 picks a free one (read ``server.server_port``)
    addr : address to bind. Loopback by default: only this host can scrape.
        In a Kubernetes pod the kubelet's probes and Prometheus connect to the
        pod IP, so ``streamguard run`` there needs ``0.0.0.0`` (or ``::``, or
        the pod IP from the downward API): deploy/k8s sets
        ``STREAMGUARD_METRICS_ADDR=0.0.0.0``.
    max_connections, workers, queue, timeout_s : the limits above

    Returns
    -------
    (server, thread) : stop with ``server.shutdown(); server.server_close(); thread.join()``
    """
    metrics_app = make_wsgi_app(registry)

    def default_readiness() -> bool:
        return registry.get_sample_value(f"{NAMESPACE}_ready") == 1.0

    is_live = liveness or (lambda: True)
    is_ready = readiness or default_readiness

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "/")
        if path in ("/", "/metrics"):
            return metrics_app(environ, start_response)
        if path in ("/healthz", "/readyz"):
            check = is_live if path == "/healthz" else is_ready
            try:
                ok = bool(check())
            except Exception:
                log.exception("%s check failed", path)
                ok = False
            body = b"ok\n" if ok else b"not ready\n" if path == "/readyz" else b"unhealthy\n"
            if path == "/readyz" and readiness_detail is not None:
                try:
                    detail = readiness_detail()
                except Exception:
                    log.exception("/readyz detail failed")
                    detail = ""
                body += f"{detail}\n".encode() if detail else b""
            start_response("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain; charset=utf-8")])
            return [body]
        start_response("404 Not Found", [("Content-Type", "text/plain; charset=utf-8")])
        return [b"not found: try /metrics, /healthz or /readyz\n"]

    server_class: type[_BoundedWSGIServer] = _BoundedWSGIServer
    if ":" in addr:
        server_class = type("_BoundedWSGIServer6", (_BoundedWSGIServer,), {"address_family": socket.AF_INET6})
    server = server_class(
        (addr, port), _QuietHandler, max_connections=max_connections, workers=workers, queue=queue, timeout_s=timeout_s
    )
    server.set_app(app)
    thread = threading.Thread(target=server.serve_forever, name="streamguard-metrics", daemon=True)
    thread.start()
    return server, thread


class Endpoint:
    """The metrics of one batch command (``replay``, ``demo``), served on a port.

    ``run`` wires its own (probes follow the consumer group); ``replay`` and
    ``demo`` use this: a fresh registry with the process collectors, a
    :class:`StreamguardMetrics` keyed by ``STREAMGUARD_HMAC_KEY`` (else
    ``default_key``, else a random key), backend info, kernel timing on the
    ``cuda`` backend, and :func:`serve` with ``/readyz`` answering 200 while
    ``streamguard_ready`` is 1 (the command sets it while it detects).

    Use as a context manager; :meth:`linger` keeps serving after the work is done.
    """

    def __init__(self, port: int, addr: str, backend: Any, *, default_key: bytes | None = None) -> None:
        from prometheus_client import PlatformCollector, ProcessCollector  # noqa: PLC0415

        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        key, self.stable_key = hmac_key_from_env()
        if not self.stable_key and default_key:
            key, self.stable_key = default_key, True
        self.metrics = StreamguardMetrics(self.registry, key)
        self.metrics.backend_info(getattr(backend, "name", "unknown"), backend_device(backend))
        self.metrics.ready(False)
        self.kernel_timer = instrument_kernels(self.metrics, backend)
        self.server, self._thread = serve(self.registry, port, addr)
        host = f"[{addr}]" if ":" in addr else addr
        self.url = f"http://{host}:{self.server.server_port}/metrics"

    def linger(self, seconds: float) -> bool:
        """Keep serving for ``seconds`` (so a scraper sees the final values); SIGTERM or Ctrl-C ends it early.

        Returns True when the whole time was served, False when interrupted.
        """
        if seconds <= 0:
            return True
        import signal  # noqa: PLC0415

        stop = threading.Event()
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, lambda *_: stop.set())
        try:
            return not stop.wait(seconds)
        except KeyboardInterrupt:
            return False
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)

    def close(self) -> None:
        self.metrics.ready(False)
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "Endpoint":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
