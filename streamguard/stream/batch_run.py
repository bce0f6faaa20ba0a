"""One batch through a pipeline, the same for every driver: ``replay`` (and ``demo``, which replays)
and ``run`` feed batches here and write what comes back; neither times, counts or measures a batch
on its own."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from streamguard.schema import AlertRecord, RequestBatch
from streamguard.stream.event_time import Rejected
from streamguard.stream.pipeline import Pipeline


@dataclass
class BatchReport:
    """What one batch did.

    Attributes
    ----------
    alerts : the alerts it raised
    rejected : its requests turned away by event time (each driver dead-letters them with
        ``rejected.dead_letters(source)``, one :class:`~streamguard.dead_letter.DeadLetter` a row, and writes them to its sink)
    requests : requests fed
    seconds : wall time in the pipeline
    stage_seconds : wall time per detector stage spent on this batch
    held_back : alerts the alert budget held back during it
    """

    alerts: list[AlertRecord]
    rejected: Rejected
    requests: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    held_back: int = 0

    @classmethod
    def nothing(cls) -> "BatchReport":
        """The report of a batch with no request in it (a chunk of dead letters only)."""
        return cls([], Rejected.none(), 0, 0.0)


def run_batch(pipeline: Pipeline, batch: RequestBatch) -> BatchReport:
    """Feed ``batch`` to ``pipeline`` and report what it did."""
    before = dict(pipeline.stats.stage_seconds)
    held = pipeline.scorer.held_back
    started = time.perf_counter()
    alerts = pipeline.process(batch)
    seconds = time.perf_counter() - started
    stages = {
        name: total - before.get(name, 0.0)
        for name, total in pipeline.stats.stage_seconds.items()
        if total > before.get(name, 0.0)
    }
    return BatchReport(alerts, pipeline.rejected, len(batch), seconds, stages, pipeline.scorer.held_back - held)


def record_batch(
    metrics: Any, report: BatchReport, pipeline: Pipeline, batch: RequestBatch, partition: int | None,
    dead_reasons: Iterable[str] = (),
) -> None:
    """The Prometheus series of one batch (``metrics``: StreamguardMetrics): the same for every driver.

    ``dead_reasons``: the reasons of every record of the batch that was dead-lettered, by decoding
    or by event time.
    """
    metrics.held_back(report.held_back)
    if report.requests:
        metrics.requests(report.requests, partition)
        metrics.batch(report.seconds, report.requests)
        for name, seconds in report.stage_seconds.items():
            metrics.stage(name, seconds)
    for reason in dead_reasons:
        metrics.bad_records(reason)
    if report.requests:
        metrics.observe_scores(pipeline, batch.account_ids)
