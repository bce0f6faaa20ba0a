"""Alert sinks. The JSON Lines file is the contract's alert record, one per line."""

from __future__ import annotations

from pathlib import Path
from typing import IO, Iterable, Protocol

from streamguard.schema import AlertRecord


class AlertSink(Protocol):
    def write(self, alerts: Iterable[AlertRecord]) -> None: ...

    def flush(self) -> None: ...

    def close(self) -> None: ...


class JsonLinesAlertSink:
    """Appends alerts to a JSON Lines file (flushed at every checkpoint)."""

    def __init__(self, path: str | Path, append: bool = False) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh: IO[str] = self.path.open("a" if append else "w", encoding="utf-8")
        self.written = 0

    def write(self, alerts: Iterable[AlertRecord]) -> None:
        for alert in alerts:
            self._fh.write(alert.to_json() + "\n")
            self.written += 1

    def flush(self) -> None:
        self._fh.flush()

    def close(self) -> None:
        self._fh.close()


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
