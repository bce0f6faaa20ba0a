"""Per-partition checkpoints: pipeline state and the input offset it covers, written together.

Layout under ``--state-dir`` (one directory per input partition)::

    STATE/
      <topic>/
        partition-00002/
          MANIFEST.json                       the commit point (see below)
          snapshot-000000012345-<id>.pkl      the state: Pipeline.checkpoint_state(full=True), pickled
          log-000000012400-<id>.pkl           what changed since the checkpoint before (one per checkpoint)

``MANIFEST.json`` names the snapshot file with its SHA-256 and size, and holds
the offset it covers (the next record to process), the number of alerts the
partition has emitted so far, and what the alert sinks need to make their
output idempotent after a crash. A checkpoint is written as: snapshot to a
temporary file, fsync, rename; manifest to a temporary file, fsync, rename
over ``MANIFEST.json``, fsync the directory. The manifest rename is atomic, so
a reader sees the old checkpoint or the new one, never a mix; the previous
snapshot is deleted only after the new manifest is durable.

Incremental checkpoints (stream/state_log.py): a checkpoint whose ``delta_of``
names the partition's current checkpoint writes only a change record, and its
manifest lists the full snapshot and every change record since, in order, each
with its size and checksum. Loading applies them in order
(:func:`streamguard.stream.state_log.materialize`). A full checkpoint
(compaction) starts a new chain and deletes the old files once its manifest is
durable. Any snapshot that is not a state record (older releases, tests) is
loaded as it was pickled.

Snapshots are pickles: the state directory must be writable by streamguard
alone (a pickle from an untrusted writer runs code when loaded).
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import re
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ContextManager

from streamguard.stream.state_log import is_record, materialize

MANIFEST = "MANIFEST.json"
FORMAT_VERSION = 1
_SNAPSHOT = re.compile(r"(snapshot|log)-\d+-[0-9a-f]+\.pkl\Z")


class CheckpointError(RuntimeError):
    """A checkpoint that exists but cannot be used (corrupt, other topic, other dimension)."""


@dataclass
class Checkpoint:
    """One partition's durable state.

    Attributes
    ----------
    topic, partition : the input partition
    offset : next input offset to process; every record before it is in ``snapshot``
    snapshot : ``Pipeline.snapshot()``
    alerts_emitted : alerts the partition has produced so far (alert sequence numbers ``0..n-1``)
    dim : the stream's embedding dimension, None before the first valid request
    alert_scan_from : alerts-topic partition -> an offset at or before every alert
        this partition may have exported after this checkpoint (where the
        restore-time duplicate scan starts)
    alerts_file, alerts_file_pos : the JSON Lines alert file and its size once
        this checkpoint's alerts were fsynced
    checkpoint_id : unique id of this checkpoint (a replica that still holds the
        partition in memory compares it to tell whether someone else moved on)
    topic_id : the id (UUID) of the topic that ``offset`` counts in, None when
        unknown; another id on restore means the topic was deleted and created
        again, so ``offset`` means nothing there
    partitions : the topic's partition count when this was written, None when unknown
    """

    topic: str
    partition: int
    offset: int
    snapshot: dict[str, Any]
    alerts_emitted: int = 0
    dim: int | None = None
    alert_scan_from: dict[int, int] = field(default_factory=dict)
    alerts_file: str | None = None
    alerts_file_pos: int = 0
    checkpoint_id: str = ""
    written_at: float = 0.0
    topic_id: str | None = None
    partitions: int | None = None
    delta_of: str | None = None
    """When set, ``snapshot`` is a change record (stream/state_log.py) following the checkpoint of
    this id, which must still be the partition's last one."""
    base_bytes: int = 0
    """Size of the chain's full snapshot file (set by save and load)."""
    log_bytes: int = 0
    """Size of the change records written since it (set by save and load)."""
    log_entries: int = 0
    """Change records since the full snapshot (set by save and load)."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Digest:
    """A file object that hashes and counts what is written through it (pickle.dump streams into it)."""

    def __init__(self, fh: Any) -> None:
        self.fh = fh
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: Any) -> int:
        self.sha.update(data)
        self.size += memoryview(data).nbytes
        return self.fh.write(data)


def _dump_durably(path: Path, value: Any) -> tuple[int, str]:
    """Pickle ``value`` to ``path`` (temporary file, fsync, rename) without a copy in memory; (bytes, sha256)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        out = _Digest(fh)
        pickle.dump(value, out, protocol=pickle.HIGHEST_PROTOCOL)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    return out.size, out.sha.hexdigest()


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


class CheckpointStore:
    """Checkpoints of one input topic under ``root``.

    Several replicas may share ``root`` (a ReadWriteMany volume): each
    partition is written only by its current owner in the consumer group.
    """

    def __init__(self, root: str | os.PathLike[str], topic: str) -> None:
        if not topic or "/" in topic or topic in (".", ".."):
            raise ValueError(f"invalid topic name {topic!r}")
        self.root = Path(root)
        self.topic = topic
        self.topic_dir = self.root / topic

    def partition_dir(self, partition: int) -> Path:
        return self.topic_dir / f"partition-{int(partition):05d}"

    # ------------------------------------------------------------- reading

    def manifest(self, partition: int) -> dict[str, Any] | None:
        """The partition's manifest, or None when it was never checkpointed."""
        path = self.partition_dir(partition) / MANIFEST
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return None
        try:
            manifest = json.loads(text)
        except ValueError as exc:
            raise CheckpointError(f"{path}: corrupt manifest ({exc})") from None
        if manifest.get("version") != FORMAT_VERSION:
            raise CheckpointError(f"{path}: manifest version {manifest.get('version')} is not {FORMAT_VERSION}")
        if manifest.get("topic") != self.topic or manifest.get("partition") != partition:
            raise CheckpointError(f"{path}: manifest is for {manifest.get('topic')}/{manifest.get('partition')}")
        return manifest

    def manifests(self) -> dict[int, dict[str, Any]]:
        """Every partition's manifest (partition -> manifest)."""
        found: dict[int, dict[str, Any]] = {}
        if not self.topic_dir.is_dir():
            return found
        for child in sorted(self.topic_dir.iterdir()):
            match = re.fullmatch(r"partition-(\d+)", child.name)
            if match and (child / MANIFEST).exists():
                manifest = self.manifest(int(match.group(1)))
                if manifest is not None:
                    found[int(match.group(1))] = manifest
        return found

    def load(self, partition: int) -> Checkpoint | None:
        """The partition's last checkpoint, or None when there is none.

        Raises
        ------
        CheckpointError
            When the manifest or its snapshot is unreadable or does not match
            its checksum: resuming from nothing would silently forget the
            partition's history, so this needs an operator.
        """
        manifest = self.manifest(partition)
        if manifest is None:
            return None
        directory = self.partition_dir(partition)
        snapshot = self._read(directory / manifest["snapshot"], manifest["snapshot_bytes"], manifest["snapshot_sha256"])
        log = manifest.get("log", [])
        if log or is_record(snapshot):
            records = [snapshot] + [self._read(directory / e["file"], e["bytes"], e["sha256"]) for e in log]
            try:
                snapshot = materialize(records)
            except (ValueError, KeyError, IndexError, TypeError) as exc:
                raise CheckpointError(f"{directory}: the snapshot and its change records do not fit together ({exc})") from None
        return Checkpoint(
            topic=self.topic,
            partition=partition,
            offset=int(manifest["offset"]),
            snapshot=snapshot,
            alerts_emitted=int(manifest["alerts_emitted"]),
            dim=manifest.get("dim"),
            alert_scan_from={int(k): int(v) for k, v in manifest.get("alert_scan_from", {}).items()},
            alerts_file=manifest.get("alerts_file"),
            alerts_file_pos=int(manifest.get("alerts_file_pos", 0)),
            checkpoint_id=str(manifest["checkpoint_id"]),
            written_at=float(manifest.get("written_at", 0.0)),
            topic_id=manifest.get("topic_id"),
            partitions=int(manifest["partitions"]) if manifest.get("partitions") is not None else None,
            base_bytes=int(manifest["snapshot_bytes"]),
            log_bytes=sum(int(e["bytes"]) for e in log),
            log_entries=len(log),
        )

    @staticmethod
    def _read(path: Path, size: int, sha256: str) -> Any:
        try:
            blob = path.read_bytes()
        except OSError as exc:
            raise CheckpointError(f"{path}: snapshot named by the manifest is unreadable ({exc})") from None
        if len(blob) != size or hashlib.sha256(blob).hexdigest() != sha256:
            raise CheckpointError(f"{path}: snapshot does not match the manifest's size and checksum")
        try:
            return pickle.loads(blob)
        except Exception as exc:  # unpickling raises many types on a bad blob
            raise CheckpointError(f"{path}: snapshot cannot be unpickled ({exc})") from None

    # ------------------------------------------------------------- writing

    def save(self, checkpoint: Checkpoint, guard: Callable[[], ContextManager[bool]] | None = None) -> Checkpoint | None:
        """Write ``checkpoint`` atomically; returns it with its new id and time. Old snapshots are removed.

        ``guard`` (optional) is entered around the commit point: when it yields
        False (the partition was revoked meanwhile) nothing is committed and
        None is returned. Ownership cannot change while the guard is held.
        """
        if checkpoint.topic != self.topic:
            raise ValueError(f"checkpoint of topic {checkpoint.topic!r} given to the store of {self.topic!r}")
        directory = self.partition_dir(checkpoint.partition)
        fresh = not directory.exists()
        directory.mkdir(parents=True, exist_ok=True)
        if fresh:
            _fsync_dir(directory.parent)
        checkpoint.checkpoint_id = uuid.uuid4().hex
        checkpoint.written_at = time.time()
        delta = checkpoint.delta_of is not None
        name = f"{'log' if delta else 'snapshot'}-{checkpoint.offset:012d}-{checkpoint.checkpoint_id[:12]}.pkl"
        size, sha = _dump_durably(directory / name, checkpoint.snapshot)
        # Not dataclasses.asdict: it would deep-copy the whole snapshot.
        skip = ("snapshot", "delta_of", "base_bytes", "log_bytes", "log_entries")
        manifest = {f.name: getattr(checkpoint, f.name) for f in fields(checkpoint) if f.name not in skip}
        manifest.update(
            version=FORMAT_VERSION,
            snapshot=name,
            snapshot_bytes=size,
            snapshot_sha256=sha,
            log=[],
            alert_scan_from={str(k): v for k, v in sorted(checkpoint.alert_scan_from.items())},
        )
        with guard() if guard is not None else nullcontext(True) as owned:
            previous = self.manifest(checkpoint.partition) if owned and delta else None
            if delta and (previous is None or previous.get("checkpoint_id") != checkpoint.delta_of):
                owned = False  # the chain moved on without this process: a full checkpoint must follow
            if not owned:
                (directory / name).unlink(missing_ok=True)
                return None
            if delta:
                assert previous is not None
                log = list(previous.get("log", [])) + [{"file": name, "bytes": size, "sha256": sha}]
                manifest.update(
                    snapshot=previous["snapshot"], snapshot_bytes=previous["snapshot_bytes"],
                    snapshot_sha256=previous["snapshot_sha256"], log=log,
                )
            keep = {manifest["snapshot"]} | {e["file"] for e in manifest["log"]}
            _write_durably(directory / MANIFEST, (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode())
            _fsync_dir(directory)
            for old in directory.iterdir():
                if old.name not in keep and (_SNAPSHOT.match(old.name) or old.name.endswith(".tmp")):
                    try:
                        old.unlink()
                    except FileNotFoundError:
                        pass
        checkpoint.base_bytes = int(manifest["snapshot_bytes"])
        checkpoint.log_entries = len(manifest["log"])
        checkpoint.log_bytes = sum(int(e["bytes"]) for e in manifest["log"])
        return checkpoint
