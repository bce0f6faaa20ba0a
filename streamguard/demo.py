"""``streamguard demo``: simulated traffic with planted distillers, the full pipeline, a live table.

Everything runs in memory: the simulator writes labelled traffic, the same
replay path as ``streamguard replay`` detects, and the evaluation of
``streamguard eval`` closes the run. Accounts are shown by a keyed hash, as
in the metrics, never by their id.

With ``metrics_port`` the demo exports the same Prometheus series as
``streamguard run`` (no consumer lag: there is no Kafka), ``pace`` slows the
replay to a given number of requests per second so that a scraper sees the
series move, and ``linger`` keeps ``/metrics`` up after the summary.

Without a terminal (a pipe, a log) or with ``--no-live`` there is no live
table: progress goes to stderr as a line every few seconds, and the latest
alerts are printed once, at the end, at a width that cuts nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
import time
from collections import Counter, deque
from typing import TYPE_CHECKING, Callable

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from streamguard.backends.base import Backend
from streamguard.config import Settings
from streamguard.console import make_console
from streamguard.evaluation import evaluate, render
from streamguard.schema import AlertRecord
from streamguard.sinks.alerts import MemoryAlertSink
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.replay import ReplayHooks, ReplayResult, replay_table

if TYPE_CHECKING:
    from streamguard.endpoint import Endpoint

DEMO_KEY = b"streamguard-demo"
"""Key of the account hashes of the demo when STREAMGUARD_HMAC_KEY is not set (simulated accounts only)."""


def short_hash(account_id: str, key: bytes = DEMO_KEY) -> str:
    """HMAC-SHA256 of the account id, 16 hex characters: the ``account_hash`` label of the metrics."""
    return hmac.new(key, account_id.encode(), hashlib.sha256).hexdigest()[:16]


class LiveView:
    """The live table: progress, throughput, alerts by kind, the latest alerts."""

    def __init__(
        self, total: int, labels: dict, account_hash: Callable[[str], str] = short_hash, expand: bool = True
    ) -> None:
        self.total = total
        self.expand = expand  # fill the terminal; False: as wide as the content (printed once, to a log)
        self.labels = labels
        self.account_hash = account_hash
        self.started = time.perf_counter()
        self.kinds: Counter[str] = Counter()
        self.latest: deque[AlertRecord] = deque(maxlen=8)
        self.result = ReplayResult()

    def update(self, result: ReplayResult, alerts: list[AlertRecord]) -> None:
        self.result = result
        for alert in alerts:
            for kind in alert.kind.split("+"):
                self.kinds[kind] += 1
            self.latest.append(alert)

    def __rich__(self) -> Group:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        head = Table.grid(padding=(0, 2))
        head.add_row(
            f"requests {self.result.requests:,}/{self.total:,}",
            f"{self.result.requests / elapsed:,.0f} req/s",
            f"alerts {self.result.alerts}",
            "  ".join(f"{k} {v}" for k, v in sorted(self.kinds.items())),
        )
        table = Table(title="latest alerts", expand=self.expand)
        for column in ("account (hash)", "kind", "score", "requests seen", "truth"):
            table.add_column(column, overflow="fold")  # a kind or a label folds onto a second line, never cut
        for alert in reversed(self.latest):
            truth = self.labels.get(alert.account_id, {})
            table.add_row(
                self.account_hash(alert.account_id),
                alert.kind + (f" [{alert.campaign_id[-6:]}]" if alert.campaign_id else ""),
                f"{alert.score:.2f}",
                str(alert.events_seen),
                f"{truth.get('label', '?')}/{truth.get('kind', '?')}",
            )
        return Group(Panel(head, title="streamguard demo", expand=self.expand), table)


class ProgressLines:
    """Progress without the live table: a line to ``out`` (stderr) at most every ``every`` seconds."""

    def __init__(self, total: int, out=None, every: float = 5.0) -> None:
        self.total = total
        self.out = out
        self.every = every
        self.started = time.perf_counter()
        self.last: float | None = None

    def update(self, result: ReplayResult, alerts: list[AlertRecord]) -> None:
        """A line on the first call, then at most one every ``every`` seconds."""
        now = time.perf_counter()
        if self.last is not None and now - self.last < self.every:
            return
        self.last = now
        share = result.requests / self.total if self.total else 1.0
        print(
            f"detecting: {result.requests:,}/{self.total:,} requests ({share:.0%}), "
            f"{result.requests / max(now - self.started, 1e-9):,.0f} req/s, {result.alerts} alerts so far",
            file=self.out or sys.stderr,
            flush=True,
        )


def run_demo(
    settings: Settings,
    backend: Backend,
    seed: int,
    scale: float,
    dim: int,
    live: bool = True,
    endpoint: Endpoint | None = None,
    pace: float | None = None,
    linger: float = 0.0,
) -> int:
    """Simulate, detect, evaluate; returns the exit status.

    endpoint : a :class:`streamguard.endpoint.Endpoint` already serving
        ``/metrics`` (started before the simulation), fed while the demo
        detects, kept up ``linger`` seconds after the summary, then closed
    pace : feed the detector at most this many requests per second of wall time
    linger : seconds to keep serving ``/metrics`` after the summary
    """
    console = make_console()
    t0 = time.perf_counter()
    try:
        return _demo(settings, backend, seed, scale, dim, live, console, t0, endpoint, pace, linger)
    finally:
        if endpoint is not None:
            endpoint.close()


def _demo(
    settings: Settings,
    backend: Backend,
    seed: int,
    scale: float,
    dim: int,
    live: bool,
    console: Console,
    t0: float,
    endpoint: Endpoint | None,
    pace: float | None,
    linger: float,
) -> int:
    from streamguard.sim import SimConfig, simulate

    live = live and console.is_terminal  # a pipe or a log gets progress lines instead
    if not live:
        print(f"simulating labelled traffic (seed {seed}, scale {scale:g}, D={dim}) ...", file=sys.stderr, flush=True)
    with console.status("simulating labelled traffic ..."):
        traffic = simulate(SimConfig(seed=seed, scale=scale, dim=dim))
    accounts = traffic.labels["accounts"]
    distillers = sum(1 for a in accounts.values() if a["label"] == "distiller")
    console.print(
        f"simulated {traffic.table.num_rows:,} requests from {len(accounts):,} accounts "
        f"({distillers} distillers planted) in {time.perf_counter() - t0:.1f} s; backend {backend.name}"
    )
    metrics = endpoint.metrics if endpoint is not None else None
    view = LiveView(traffic.table.num_rows, accounts, metrics.account_hash if metrics is not None else short_hash, expand=live)
    sink = MemoryAlertSink()
    kernel_timer = endpoint.kernel_timer if endpoint is not None else None
    if metrics is not None:
        metrics.ready(True)
    if live:
        with Live(view, console=console, refresh_per_second=4, transient=False):
            hooks = ReplayHooks(progress=view.update, metrics=metrics, pace=pace, kernel_timer=kernel_timer)
            result = replay_table(traffic.table, settings, backend, sink, DeadLetterSink(), hooks=hooks)
    else:
        lines = ProgressLines(traffic.table.num_rows)

        def progress(result: ReplayResult, alerts: list[AlertRecord]) -> None:
            view.update(result, alerts)
            lines.update(result, alerts)

        print(f"detecting on {backend.name} (a progress line every {lines.every:g} s) ...", file=sys.stderr, flush=True)
        hooks = ReplayHooks(progress=progress, metrics=metrics, pace=pace, kernel_timer=kernel_timer)
        result = replay_table(traffic.table, settings, backend, sink, DeadLetterSink(), hooks=hooks)
        console.print(view)
    if metrics is not None:
        metrics.ready(False)
    console.print(
        f"detected over {result.valid:,} requests in {result.seconds:.1f} s "
        f"({result.events_per_second:,.0f} events/s, backend {backend.name}); {result.alerts} alerts"
    )
    render(evaluate(traffic.labels, sink.alerts, traffic.table), console)
    console.print(f"total {time.perf_counter() - t0:.1f} s")
    if endpoint is not None and linger > 0:
        console.print(f"still serving {endpoint.url} for {linger:g} s (Ctrl-C or SIGTERM to stop)")
        endpoint.linger(linger)
    return 0
