"""Alert sinks: the protocol, the one in memory, and reading a JSON Lines alert file back.

The JSON Lines file itself (the contract's alert record, one per line) is
:class:`streamguard.sinks.alert_file.AlertFile`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Protocol

from streamguard.schema import AlertRecord


class AlertSink(Protocol):
    def write(self, alerts: Iterable[AlertRecord]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class MemoryAlertSink:
    """Keeps alerts in a list (the demo and tests)."""

    def __init__(self) -> None:
        self.alerts: list[AlertRecord] = []

    def write(self, alerts: Iterable[AlertRecord]) -> None:
        self.alerts.extend(alerts)

    def flush(self) -> None:
        """Nothing buffered."""

    def close(self) -> None:
        """Nothing to release."""


def read_alerts(path: str | Path) -> list[AlertRecord]:
    """Alert records from a JSON Lines file; a bad line raises ValueError naming it."""
    import json

    alerts = []
    with Path(path).open(encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                alerts.append(AlertRecord.from_dict(json.loads(line)))
            except (ValueError, TypeError) as exc:
                raise ValueError(f"{path}:{number}: not an alert record ({exc})") from None
    return alerts
