"""``streamguard demo``: simulated traffic with planted distillers, the full pipeline, a live table.

Everything runs in memory: the simulator writes labelled traffic, the same
replay path as ``streamguard replay`` detects, and the evaluation of
``streamguard eval`` closes the run. Accounts are shown by a keyed hash, as
in the metrics, never by their id.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from collections import Counter, deque

from rich.console import Console, Group
from rich.live import Live
from rich.panel import Panel
from rich.table import Table

from streamguard.backends.base import Backend
from streamguard.config import Settings
from streamguard.evaluation import evaluate, render
from streamguard.schema import AlertRecord
from streamguard.sinks.alerts import MemoryAlertSink
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.replay import ReplayResult, replay_table

_DEMO_KEY = b"streamguard-demo"


def short_hash(account_id: str) -> str:
    return hmac.new(_DEMO_KEY, account_id.encode(), hashlib.sha256).hexdigest()[:12]


class LiveView:
    """The live table: progress, throughput, alerts by kind, the latest alerts."""

    def __init__(self, total: int, labels: dict) -> None:
        self.total = total
        self.labels = labels
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
        table = Table(title="latest alerts", expand=True)
        for column in ("account (hash)", "kind", "score", "requests seen", "truth"):
            table.add_column(column)
        for alert in reversed(self.latest):
            truth = self.labels.get(alert.account_id, {})
            table.add_row(
                short_hash(alert.account_id),
                alert.kind + (f" [{alert.campaign_id[-6:]}]" if alert.campaign_id else ""),
                f"{alert.score:.2f}",
                str(alert.events_seen),
                f"{truth.get('label', '?')}/{truth.get('kind', '?')}",
            )
        return Group(Panel(head, title="streamguard demo"), table)


def run_demo(settings: Settings, backend: Backend, seed: int, scale: float, dim: int, live: bool = True) -> int:
    """Simulate, detect, evaluate; returns the exit status."""
    from streamguard.sim import SimConfig, simulate

    console = Console()
    t0 = time.perf_counter()
    with console.status("simulating labelled traffic ..."):
        traffic = simulate(SimConfig(seed=seed, scale=scale, dim=dim))
    accounts = traffic.labels["accounts"]
    distillers = sum(1 for a in accounts.values() if a["label"] == "distiller")
    console.print(
        f"simulated {traffic.table.num_rows:,} requests from {len(accounts):,} accounts "
        f"({distillers} distillers planted) in {time.perf_counter() - t0:.1f} s; backend {backend.name}"
    )
    view = LiveView(traffic.table.num_rows, accounts)
    sink = MemoryAlertSink()
    if live:
        with Live(view, console=console, refresh_per_second=4, transient=False):
            result = replay_table(traffic.table, settings, backend, sink, DeadLetterSink(), progress=view.update)
    else:
        result = replay_table(traffic.table, settings, backend, sink, DeadLetterSink())
    console.print(
        f"detected over {result.valid:,} requests in {result.seconds:.1f} s "
        f"({result.events_per_second:,.0f} events/s, backend {backend.name}); {result.alerts} alerts"
    )
    render(evaluate(traffic.labels, sink.alerts, traffic.table), console)
    console.print(f"total {time.perf_counter() - t0:.1f} s")
    return 0
