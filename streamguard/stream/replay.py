"""Replay: the whole detector over a table or a file of requests, in event-time order.

Rows are sorted by event time, cut into source batches of ``batch.max_size``
rows, validated (bad rows to the dead-letter sink), sharded over partitions
exactly as Kafka's default partitioner shards account keys, and fed to one
:class:`Pipeline` per partition; rows a partition turns away by event time go
to the dead-letter sink too. With one partition this is the plain detector;
with N it reproduces ``run`` on a topic of N partitions, where each replica
only knows its own partitions' accounts.

:func:`replay_table` sorts a table held in memory. :func:`replay_file` reads a
file in record batches and restores event-time order with a bounded reorder
buffer (:class:`EventTimeReorder`, ``replay.reorder_rows`` rows), so that its
memory is set by the settings, not by the file; it feeds the pipelines exactly
the batches :func:`replay_table` would feed them from the whole file, so both
raise the same alerts. A file more out of order than the buffer can repair is
an :class:`EventTimeOrderError` (checked on the ``ts`` column before any
alert is written), never a silent reordering or drop.
"""

from __future__ import annotations

import bisect
import datetime
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamguard.backends.base import Backend
from streamguard.config import Settings
from streamguard.detectors.codebook import Codebook
from streamguard.dead_letter import DeadLetter
from streamguard.schema import AlertRecord, RequestBatch, RequestFile, infer_dim, validate_table
from streamguard.sinks.alerts import AlertSink
from streamguard.sinks.dead_letter import DeadLetterSink
from streamguard.stream.batch_run import record_batch, run_batch
from streamguard.stream.event_time import Rejected
from streamguard.stream.partitioner import partition_for
from streamguard.stream.pipeline import Pipeline
from streamguard.stream.prefetch import prefetched
from streamguard.stream.warmup import SharedWarmup


@dataclass
class ReplayResult:
    requests: int = 0
    valid: int = 0
    dead_letters: int = 0
    alerts: int = 0
    seconds: float = 0.0
    pipelines: list[Pipeline] = field(default_factory=list)

    @property
    def events_per_second(self) -> float:
        return self.valid / self.seconds if self.seconds > 0 else float("nan")


@dataclass(frozen=True)
class ReplayHooks:
    """Operations hooks of a replay (all optional; none changes which alerts are raised).

    progress : called after each source batch with the result so far and the alerts it raised
    metrics : a :class:`streamguard.metrics.StreamguardMetrics`, fed the same series as ``run``
        feeds it (partition label ``none`` with one partition); the alert delay runs from the wall
        time the triggering row was read, since a replay does not run at the pace of its event times
    pace : read at most this many rows per second of wall time (a live-looking stream for
        dashboards and demos); None reads as fast as possible
    alert_hash : keyed hash put into each alert's ``evidence["account_hash"]``
    kernel_timer : a :class:`streamguard.backends.kernel_timer.KernelTimer`, drained after each batch
    """

    progress: Callable[[ReplayResult, list[AlertRecord]], None] | None = None
    metrics: Any = None
    pace: float | None = None
    alert_hash: Callable[[str], str] | None = None
    kernel_timer: Any = None


def event_time_order(table: pa.Table) -> pa.Table:
    """Rows sorted by event time (stable; rows without a time last, for the dead-letter sink)."""
    ts = table.column("ts")
    if pa.types.is_timestamp(ts.type):
        ts = pc.cast(ts, pa.int64())
    keys = ts.to_numpy(zero_copy_only=False)
    if keys.dtype.kind in "iu" and ts.null_count == 0 and (keys.size < 2 or bool(np.all(keys[1:] >= keys[:-1]))):
        return table  # already in event-time order: no copy
    keys = np.where(np.isnan(keys.astype(float)), np.inf, keys.astype(float)) if keys.dtype.kind == "O" or keys.dtype.kind == "f" else keys
    order = np.argsort(keys, kind="stable")
    return table.take(pa.array(order))


ROUTER_CACHE_ACCOUNTS = 1 << 20
"""Accounts whose partition :class:`PartitionRouter` remembers before it starts afresh (a file may hold
far more distinct accounts than the pipelines keep)."""


class PartitionRouter:
    """Account -> partition, cached (the hash is Python and accounts repeat)."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._cache: dict[str, int] = {}

    def __call__(self, account_ids: np.ndarray) -> np.ndarray:
        if self.partitions == 1:
            return np.zeros(len(account_ids), dtype=np.int64)
        cache = self._cache
        out = np.empty(len(account_ids), dtype=np.int64)
        for i, account in enumerate(account_ids):
            p = cache.get(account)
            if p is None:
                if len(cache) >= ROUTER_CACHE_ACCOUNTS:
                    cache.clear()  # a cache only (partition_for is pure): clearing it changes no route
                p = cache[account] = partition_for(account, self.partitions)
            out[i] = p
        return out


# ---------------------------------------------------------------- reading a file in event-time order


class EventTimeOrderError(ValueError):
    """A file more out of event-time order than the replay's reorder buffer can repair."""


def _when(key: Any) -> str:
    try:
        return datetime.datetime.fromtimestamp(int(key) / 1000, datetime.UTC).isoformat(timespec="milliseconds")
    except (OverflowError, OSError, ValueError):
        return f"ts={int(key)}"


class EventTimeReorder:
    """Restores the event-time order of a mostly ordered stream of rows, holding at most ``capacity`` rows.

    Rows come in pieces (``push``) in file order, each with its sort keys; rows go
    out in the order of a stable sort of all rows by key (ties keep file order),
    the order :func:`event_time_order` gives the whole file. Once more than
    ``capacity`` rows are held, the smallest go out; a row that arrives with a key
    below one already sent out would need a larger buffer:
    :class:`EventTimeOrderError`, naming the row. Everything sent out is therefore
    exactly in the whole file's order.

    Held pieces are zero-copy slices of what was read; when the pieces they keep
    alive hold more than twice ``capacity + piece size`` rows, the held rows are
    copied into one piece, so memory stays within a few times the setting.

    Parameters
    ----------
    capacity : rows held back (``replay.reorder_rows``)
    where : the file, for error messages
    """

    def __init__(self, capacity: int, where: str = "the stream") -> None:
        if capacity < 0:
            raise ValueError("capacity must be >= 0")
        self.capacity = capacity
        self.where = where
        self._keys: list[np.ndarray] = []
        self._rows: list[pa.Table | None] = []
        self._base: list[int] = []  # rows of the buffers each held piece keeps alive
        self._count = 0
        self._last: Any = None  # key of the last row sent out
        self.peak_rows = 0
        """Most rows held at once (for a report of what a file needed)."""

    @property
    def held(self) -> int:
        return self._count

    def push(self, keys: np.ndarray, rows: pa.Table | None, file_rows: np.ndarray) -> tuple[np.ndarray, pa.Table | None]:
        """Add rows: ``keys`` (n,) ints, ``rows`` the rows themselves (or None to check an order only),
        ``file_rows`` (n,) their rows in the file (for errors). Returns the keys and rows now in order."""
        if self._last is not None and keys.size:
            late = np.flatnonzero(keys < self._last)
            if late.size:
                i = int(late[0])
                raise EventTimeOrderError(
                    f"{self.where}: row {int(file_rows[i])} (event time {_when(keys[i])}) arrives after rows stamped "
                    f"up to {_when(self._last)} were already replayed: the file is more out of event-time order "
                    f"than replay.reorder_rows={self.capacity:,} rows can repair. Raise it (STREAMGUARD_REPLAY_REORDER_ROWS "
                    f"or [replay] reorder_rows in --config; each row held costs about 4 x D + 100 bytes), or sort "
                    f"the file by ts first (see README, 'Replaying large files')"
                )
        if keys.size:
            if keys.size > 1 and not bool(np.all(keys[1:] >= keys[:-1])):
                order = np.argsort(keys, kind="stable")
                keys = keys[order]
                rows = rows.take(pa.array(order)) if rows is not None else None
            self._keys.append(keys)
            self._rows.append(rows)
            self._base.append(keys.size)
            self._count += keys.size
            self.peak_rows = max(self.peak_rows, self._count)
        return self._release(self._count - self.capacity)

    def finish(self) -> tuple[np.ndarray, pa.Table | None]:
        """Every row still held, in order."""
        return self._release(self._count)

    def _release(self, m: int) -> tuple[np.ndarray, pa.Table | None]:
        if m <= 0 or not self._keys:
            return np.empty(0, dtype=np.int64), None
        carry = self._rows[0] is not None
        in_order = all(a[-1] <= b[0] for a, b in zip(self._keys, self._keys[1:]))
        if in_order:
            take = []
            left = m
            for k in self._keys:
                take.append(min(left, k.size))
                left -= take[-1]
            out_keys = np.concatenate([k[:t] for k, t in zip(self._keys, take) if t])
            out_rows = pa.concat_tables([r.slice(0, t) for r, t in zip(self._rows, take) if t]) if carry else None  # type: ignore[union-attr]
        else:
            # Each piece is sorted, so a stable sort of their concatenation orders ties by file
            # order too, and what goes out of each piece is a prefix of it.
            every = np.concatenate(self._keys)
            first = np.argsort(every, kind="stable")[:m]
            starts = np.cumsum([0] + [k.size for k in self._keys])
            piece = np.searchsorted(starts, first, side="right") - 1
            take = np.bincount(piece, minlength=len(self._keys)).tolist()
            out_keys = every[first]
            out_rows = None
            if carry:
                prefix_starts = np.cumsum([0] + take)
                position = prefix_starts[piece] + (first - starts[piece])
                prefixes = pa.concat_tables([r.slice(0, t) for r, t in zip(self._rows, take) if t])  # type: ignore[union-attr]
                out_rows = prefixes.take(pa.array(position))
        keys, rows, base = [], [], []
        for k, r, b, t in zip(self._keys, self._rows, self._base, take):
            if t < k.size:
                keys.append(k[t:])
                rows.append(r.slice(t) if r is not None else None)
                base.append(b)
        self._keys, self._rows, self._base = keys, rows, base
        self._count -= int(out_keys.size)
        self._last = out_keys[-1]
        if carry and sum(self._base) > 2 * (self.capacity + max(self._base, default=0)) and len(self._keys) > 1:
            self._compact()
        return out_keys, out_rows

    def _compact(self) -> None:
        """Copy the held rows into one piece, freeing the read buffers that slices of them kept alive."""
        every = np.concatenate(self._keys)
        order = np.argsort(every, kind="stable")
        rows = pa.concat_tables(self._rows).take(pa.array(order))  # type: ignore[arg-type]
        self._keys, self._rows, self._base = [every[order]], [rows], [int(every.size)]


def _ts_keys(column: pa.ChunkedArray | pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Sort keys of a ts column (what :func:`event_time_order` sorts by) and where the time is missing."""
    if pa.types.is_timestamp(column.type):
        column = pc.cast(column, pa.int64())
    missing = column.is_null().to_numpy(zero_copy_only=False) if column.null_count else np.zeros(len(column), dtype=bool)
    keys = pc.fill_null(column, 0).to_numpy(zero_copy_only=False) if column.null_count else column.to_numpy(zero_copy_only=False)
    return np.asarray(keys), np.asarray(missing, dtype=bool)


def check_event_time_order(source: RequestFile, reorder_rows: int, read_rows: int) -> int:
    """Raise :class:`EventTimeOrderError` unless ``source`` can be replayed with ``reorder_rows``
    held back; reads only its ``ts`` column. Returns the most rows the replay will hold."""
    buffer = EventTimeReorder(reorder_rows, str(source.path))
    row = 0
    for piece in source.batches(read_rows, columns=["ts"]):
        keys, missing = _ts_keys(piece.column(0))
        buffer.push(keys[~missing], None, row + np.flatnonzero(~missing))
        row += piece.num_rows
    return buffer.peak_rows


def event_time_chunks(
    source: RequestFile, dim: int, batch_rows: int, reorder_rows: int, read_rows: int
) -> Iterator[tuple[pa.Table, int] | list[DeadLetter]]:
    """The file's rows in event-time order, in chunks of ``batch_rows`` rows with their position in that
    order (the whole file's sorted table, sliced, minus its rows without a time, which come as
    dead letters as soon as they are read, named by their row in the file)."""
    buffer = EventTimeReorder(reorder_rows, str(source.path))
    pending: list[pa.Table] = []
    pending_rows = 0
    position = 0
    file_row = 0

    def cut(rows: pa.Table | None, final: bool) -> Iterator[tuple[pa.Table, int]]:
        nonlocal pending, pending_rows, position
        if rows is not None and rows.num_rows:
            pending.append(rows)
            pending_rows += rows.num_rows
        if pending_rows >= batch_rows or (final and pending_rows):
            table = pa.concat_tables(pending)
            whole = pending_rows if final else pending_rows - pending_rows % batch_rows
            for start in range(0, whole, batch_rows):
                yield table.slice(start, min(batch_rows, whole - start)), position
                position += min(batch_rows, whole - start)
            pending = [table.slice(whole)] if whole < pending_rows else []
            pending_rows -= whole

    for piece in source.batches(read_rows):
        table = pa.Table.from_batches([piece])
        keys, missing = _ts_keys(table.column("ts"))
        if missing.any():
            where = np.flatnonzero(missing)
            _, letters = validate_table(table.take(pa.array(where)), dim, source="file row")
            yield [DeadLetter(d.reason, f"file row:{file_row + int(i)}", d.record) for d, i in zip(letters, where)]
            keep = np.flatnonzero(~missing)
            table, keys = table.take(pa.array(keep)), keys[keep]
        _, rows = buffer.push(keys, table, file_row + (np.flatnonzero(~missing) if missing.any() else np.arange(keys.size)))
        file_row += piece.num_rows
        yield from cut(rows, final=False)
    _, rows = buffer.finish()
    yield from cut(rows, final=True)


def replay_file(
    path: str | Path, settings: Settings, backend: Backend, alert_sink: AlertSink, dead_letters: DeadLetterSink,
    partitions: int = 1, codebook: Codebook | None = None, hooks: ReplayHooks = ReplayHooks(),
) -> ReplayResult:
    """:func:`replay_table` over a Parquet or Arrow IPC file, read in record batches.

    Memory is bounded by ``settings.replay`` (``read_rows`` read at a time,
    ``reorder_rows`` held back to restore event-time order; see
    :class:`~streamguard.config.ReplayConfig`) and by the file's largest
    Parquet row group or Arrow record batch, not by the file's length. The
    pipelines get exactly the batches :func:`replay_table` would give them
    from the whole file, so the alerts are the same. Rows without an event
    time are dead-lettered as they are read (``file row:N``); other dead
    letters are named ``row:N`` by their position in event-time order, as
    :func:`replay_table` names them.

    Raises
    ------
    RecordFileError
        If the file is not a request file, or cannot be read to its end.
    EventTimeOrderError
        If the file is more out of event-time order than ``replay.reorder_rows``
        can repair; found from the ``ts`` column alone, before any alert is written.
    """
    _check_arguments(partitions, hooks.pace)
    started = time.perf_counter()
    source = RequestFile(path)
    read_rows, reorder_rows = settings.replay.read_rows, settings.replay.reorder_rows
    dim = source.dim(read_rows)
    check_event_time_order(source, reorder_rows, read_rows)
    chunks = event_time_chunks(source, dim, settings.batch.max_size, reorder_rows, read_rows)
    return _replay(chunks, dim, settings, backend, alert_sink, dead_letters, partitions, codebook, hooks, started)


def replay_table(
    table: pa.Table, settings: Settings, backend: Backend, alert_sink: AlertSink, dead_letters: DeadLetterSink,
    partitions: int = 1, codebook: Codebook | None = None, hooks: ReplayHooks = ReplayHooks(),
) -> ReplayResult:
    """Run the detector over ``table`` (request records); alerts go to ``alert_sink``.

    The codebook, unless given, is fitted once on the warm-up the partitions
    pool (:class:`~streamguard.stream.warmup.SharedWarmup`, the rule ``run``
    follows on a topic of ``partitions`` partitions) and shared by every
    partition, as a deployment shares one codebook artifact between replicas.
    ``hooks`` (:class:`ReplayHooks`) serve operations and change no alert.
    """
    _check_arguments(partitions, hooks.pace)
    started = time.perf_counter()
    dim = infer_dim(table)
    table = event_time_order(table)
    rows = settings.batch.max_size
    chunks = ((table.slice(start, rows), start) for start in range(0, table.num_rows, rows))
    return _replay(chunks, dim, settings, backend, alert_sink, dead_letters, partitions, codebook, hooks, started)


def _check_arguments(partitions: int, pace: float | None) -> None:
    if partitions < 1:
        raise ValueError("partitions must be >= 1")
    if pace is not None and not pace > 0:
        raise ValueError("pace must be > 0 rows per second")


def _replay(
    chunks: Iterable[tuple[pa.Table, int] | list[DeadLetter]],
    dim: int,
    settings: Settings,
    backend: Backend,
    alert_sink: AlertSink,
    dead_letters: DeadLetterSink,
    partitions: int,
    codebook: Codebook | None,
    hooks: ReplayHooks,
    started: float,
) -> ReplayResult:
    """The per-batch runner of every replay: ``chunks`` are source batches in event-time order,
    each with its position in that order, or dead letters of rows that have no place in it."""
    progress, metrics, pace = hooks.progress, hooks.metrics, hooks.pace
    alert_hash, kernel_timer = hooks.alert_hash, hooks.kernel_timer
    result = ReplayResult()
    route = PartitionRouter(partitions)
    pipelines = [Pipeline(settings, backend, codebook) for _ in range(partitions)]
    shared = SharedWarmup(settings.coverage.warmup, partitions) if codebook is None else None
    if shared is not None:
        for p, pipeline in enumerate(pipelines):
            pipeline.join_warmup(shared, p)

    # Wall time (epoch ms) at which each source chunk was read, by the chunk's latest event time.
    arrival_ts: list[int] = []
    arrival_wall: list[float] = []

    def arrival_ms(ts: int) -> float:
        i = min(bisect.bisect_left(arrival_ts, ts), len(arrival_ts) - 1)
        return arrival_wall[i] if i >= 0 else time.time() * 1000.0

    def emit(alerts: list[AlertRecord]) -> None:
        if alerts:
            alerts.sort(key=lambda a: a.ts)
            if alert_hash is not None:
                from streamguard.pseudonyms import with_account_hash  # noqa: PLC0415

                alerts = [with_account_hash(a, alert_hash) for a in alerts]
            t0 = time.perf_counter()
            alert_sink.write(alerts)
            result.alerts += len(alerts)
            if metrics is not None:
                metrics.stage("sink", time.perf_counter() - t0)
                metrics.observe_alerts(alerts, now_ms=time.time() * 1000.0, arrival_ms=arrival_ms)
        if progress is not None:
            progress(result, alerts)

    def turned_away(rejected: Rejected) -> list[DeadLetter]:
        """Dead-letter the rows a pipeline's call rejected by event time."""
        letters = rejected.dead_letters("row")
        if letters:
            dead_letters.write(letters)
            result.dead_letters += len(letters)
            result.valid -= len(letters)
        return letters

    def process(pipeline: Pipeline, batch: RequestBatch, partition: int | None) -> list[AlertRecord]:
        report = run_batch(pipeline, batch)
        letters = turned_away(report.rejected)
        if metrics is not None:
            record_batch(metrics, report, pipeline, batch, partition, (letter.reason for letter in letters))
        return report.alerts

    def catch_up() -> list[AlertRecord]:
        """Partitions still waiting start once the shared codebook exists (another one completed the warm-up)."""
        if shared is None or shared.codebook is None:
            return []
        return [alert for pipeline in pipelines if not pipeline.ready for alert in pipeline.catch_up()]

    def feed(batch: RequestBatch) -> None:
        alerts: list[AlertRecord] = []
        if len(pipelines) == 1:
            alerts = process(pipelines[0], batch, None)
        else:
            parts = route(batch.account_ids)
            for p, pipeline in enumerate(pipelines):
                index = np.flatnonzero(parts == p)
                if index.size:
                    alerts.extend(process(pipeline, batch.take(index), p))
        alerts.extend(catch_up())
        if metrics is not None:
            if kernel_timer is not None:
                kernel_timer.drain()
            metrics.observe_accounts(pipelines)
            metrics.last_progress(time.time())
        emit(alerts)

    def dead_letter(letters: list[DeadLetter]) -> None:
        result.requests += len(letters)
        result.dead_letters += len(letters)
        dead_letters.write(letters)
        if metrics is not None:
            for record in letters:
                metrics.bad_records(record.reason)

    def decoded(
        chunks: Iterable[tuple[pa.Table, int] | list[DeadLetter]],
    ) -> Iterator[tuple[int, RequestBatch, list[DeadLetter], float] | list[DeadLetter]]:
        """Each chunk validated: (rows, the valid batch, its dead letters, seconds spent)."""
        for item in chunks:
            if isinstance(item, list):
                yield item
                continue
            chunk, start = item
            t0 = time.perf_counter()
            batch, dead = validate_table(chunk, dim, source="row", row_offset=start)
            yield chunk.num_rows, batch, dead, time.perf_counter() - t0

    # Reading, ordering and validating the next batches overlap the detector's work on this one.
    for item in prefetched(decoded(chunks), settings.replay.prefetch_batches):
        if isinstance(item, list):
            dead_letter(item)
            continue
        rows, batch, dead, decode_seconds = item
        if pace is not None:
            ahead = started + result.requests / pace - time.perf_counter()
            if ahead > 0:
                time.sleep(ahead)
        if metrics is not None:
            metrics.stage("decode", decode_seconds)
            for record in dead:
                metrics.bad_records(record.reason)
            if len(batch):
                latest = int(batch.ts.max())
                if not arrival_ts or latest > arrival_ts[-1]:
                    arrival_ts.append(latest)
                    arrival_wall.append(time.time() * 1000.0)
        result.requests += rows
        result.valid += len(batch)
        if dead:
            dead_letters.write(dead)
            result.dead_letters += len(dead)
        feed(batch)

    for pipeline in pipelines:
        alerts = pipeline.finish()
        for letter in turned_away(pipeline.rejected):
            if metrics is not None:
                metrics.bad_records(letter.reason)
        emit(alerts)
    # A warm-up the end of input completed (every partition final) starts the partitions that finished first.
    emit(catch_up())
    alert_sink.flush()
    dead_letters.flush()
    result.pipelines = pipelines
    result.seconds = time.perf_counter() - started
    return result
