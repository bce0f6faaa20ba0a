"""Incremental checkpoints: one full record of a pipeline's state, then records of what changed.

A *record* (:meth:`SlotChanges.record`) holds

- everything that is not per account (the near-duplicate window and tables,
  campaign edges, the population, event time...), whole;
- the per-account arrays (indexed by account slot, :data:`SLOT_FIELDS`) at
  the slots that changed since the previous record, or at every slot in a
  full record. Float matrices (coverage histograms, style sums) are stored
  sparse where most of a row is zero, as they are for small accounts.

:func:`materialize` turns a full record and the records after it into
exactly the dict :meth:`Pipeline.snapshot` gives at the last of them.

Which slots changed is known two ways. The arrays the pipeline writes only at
the slots of a batch or of an eviction (the account table, the example
request ids, the coverage matrices) are marked as they are written
(:meth:`SlotChanges.mark`). Every other per-account array (counters, flags,
campaign ids, written by scoring, linking and refreshes at slots the pipeline
does not see) is compared with a host copy of it as of the last record: a
few dozen bytes per account, where copying the matrices would double them. A
per-account field this module does not list is stored whole in every record:
never wrong, only larger.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

import numpy as np

FORMAT = "streamguard-state/1"

SLOT_FIELDS: dict[str, tuple[str, ...]] = {
    "": ("last_request", "last_dup_request"),
    "accounts": ("_ids", "first_ts", "last_ts"),
    "near_duplicate": ("head", "seen", "dups", "cross_dups", "last_partner"),
    "coverage": ("hist", "style_sum", "w_sum", "w2_sum", "requests", "style_weight", "mix_member"),
    "campaigns": ("campaign_of", "org_of", "partnered", "attr_tokens", "attr_next"),
    "timing": ("last_ts", "bounds", "bounds_next"),
    "scorer": ("crossed_ts", "crossed_n", "alerted_n"),
}
"""Per-account arrays of each part of a snapshot ("": the pipeline's own keys)."""

MARKED: frozenset[tuple[str, str]] = frozenset(
    {("", "last_request"), ("", "last_dup_request"), ("accounts", "_ids"), ("accounts", "first_ts"),
     ("accounts", "last_ts"), ("coverage", "hist"), ("coverage", "style_sum")}
)
"""Arrays written only at marked slots (a batch's, an evicted account's) or, for the coverage
matrices, all at once when the coverage clock is rebased (the record's ``epoch``)."""

_CHUNK_VALUES = 1 << 22  # values per gathered piece: bounds the temporary copies of a full record


def is_record(value: Any) -> bool:
    return isinstance(value, dict) and value.get("format") == FORMAT


class SlotChanges:
    """Which account slots changed since the last record, and the records themselves.

    Parameters
    ----------
    capacity : the account table's slots now
    """

    def __init__(self, capacity: int) -> None:
        self.dirty = np.zeros(int(capacity), dtype=bool)
        self._shadow: dict[tuple[str, str], np.ndarray] = {}
        self._parts: tuple[str, ...] | None = None  # parts of the last record; None: the next is full
        self._epoch: Any = None

    def grow(self, capacity: int) -> None:
        """New slots count as changed (the next record holds them, as fresh slots)."""
        extra = int(capacity) - self.dirty.size
        if extra > 0:
            self.dirty = np.concatenate([self.dirty, np.ones(extra, dtype=bool)])

    def mark(self, slots: np.ndarray) -> None:
        self.dirty[slots] = True

    def forget(self) -> None:
        """The next record must be full (the last one never became durable)."""
        self._parts = None

    def sync(self, parts: Mapping[str, Any], pipeline_columns: Mapping[str, np.ndarray], backend: Any, epoch: Any) -> None:
        """State was just restored from a record chain: nothing has changed since it."""
        self.record({}, parts, pipeline_columns, backend, epoch, full=True, keep=False)

    def record(
        self,
        meta: dict[str, Any],
        parts: Mapping[str, Any],
        pipeline_columns: Mapping[str, np.ndarray],
        backend: Any,
        epoch: Any = None,
        full: bool = False,
        keep: bool = True,
    ) -> dict[str, Any]:
        """A record of the state: full, or what changed since the last record; then nothing is changed.

        Parameters
        ----------
        meta : the pipeline's own values (copies), stored whole
        parts : snapshot key -> Stateful part (``accounts``, ``scorer``, detectors)
        pipeline_columns : the pipeline's own per-account arrays (``last_request``...)
        epoch : a value that changes when the marked matrices are rewritten as a whole
        full : every slot, whatever changed
        """
        names = tuple(sorted(parts))
        capacity = int(parts["accounts"].capacity)
        full = full or self._parts != names
        columns: dict[tuple[str, str], Any] = {("", k): v for k, v in pipeline_columns.items()}
        for name in names:
            fields = parts[name]._state_fields
            columns.update({(name, f): getattr(parts[name], f) for f in SLOT_FIELDS.get(name, ()) if f in fields})
        host = {key: (value if key[0] == "" else np.asarray(backend.to_host(value))) for key, value in columns.items()
                if key not in MARKED}
        if self.dirty.size < capacity:
            self.grow(capacity)
        if not full:
            if epoch != self._epoch:
                self.dirty[:] = True
            for key, now in host.items():
                before = self._shadow.get(key)
                if before is None:
                    self.dirty[:] = True
                    continue
                n = min(before.shape[0], now.shape[0])
                changed = np.asarray(now[:n] != before[:n])
                if changed.ndim > 1:
                    changed = changed.reshape(n, -1).any(axis=1)
                self.dirty[:n] |= changed
        rows = np.arange(capacity, dtype=np.int64) if full else np.flatnonzero(self.dirty[:capacity])
        out: dict[str, Any] = {}
        if keep:
            out = {
                "format": FORMAT,
                "full": full,
                "capacity": capacity,
                "meta": meta,
                "parts": {name: parts[name].state_dict(exclude=SLOT_FIELDS.get(name, ())) for name in names},
                "rows": rows,
                "columns": {f"{part}.{field}": _gather(value, rows, backend if part else None) for (part, field), value in columns.items()},
            }
        for key, now in host.items():
            before = self._shadow.get(key)
            if full or before is None:
                self._shadow[key] = now.copy()
                continue
            if before.shape[0] < now.shape[0]:
                before = np.concatenate([before, now[before.shape[0]:]])
            before[rows] = now[rows]
            self._shadow[key] = before
        for key in [k for k in self._shadow if k not in host]:
            del self._shadow[key]
        self.dirty[:] = False
        self._parts = names
        self._epoch = epoch
        return out


def _gather(value: Any, rows: np.ndarray, backend: Any) -> dict[str, Any]:
    """``value[rows]`` on the host, in pieces; float matrices sparse where that is smaller."""
    shape = tuple(value.shape)
    width = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    step = max(1, _CHUNK_VALUES // max(width, 1))
    pieces = []
    for a in range(0, rows.size, step):
        idx = rows[a : a + step]
        if backend is not None:
            block = np.asarray(backend.to_host(value[backend.asarray(idx)]))
        else:
            block = np.asarray(value)[idx]
        if block.ndim > 1 and block.dtype.kind == "f":
            # Zero by bit pattern, so -0.0 and NaN payloads come back as they were.
            bits = block.view(np.dtype(f"u{block.dtype.itemsize}"))
            nz = np.flatnonzero(bits)
            if 3 * nz.size < block.size:  # index (4 or 8 B) + value beat the dense block
                kind = np.int32 if block.size < 2**31 else np.int64
                pieces.append(("sparse", a, idx.size, nz.astype(kind), block.reshape(-1)[nz]))
                continue
        pieces.append(("dense", a, idx.size, block))
    return {"shape": shape[1:], "dtype": np.dtype(value.dtype).str if value.dtype != object else "O", "pieces": pieces}


def _scatter(target: np.ndarray, rows: np.ndarray, column: dict[str, Any]) -> None:
    for piece in column["pieces"]:
        kind, a, n = piece[0], piece[1], piece[2]
        idx = rows[a : a + n]
        if kind == "dense":
            target[idx] = piece[3]
        else:
            block = np.zeros((n, *column["shape"]), dtype=target.dtype)
            block.reshape(-1)[piece[3]] = piece[4]
            target[idx] = block


def _empty(column: dict[str, Any], capacity: int) -> np.ndarray:
    dtype = np.dtype(object) if column["dtype"] == "O" else np.dtype(column["dtype"])
    if dtype == object:
        return np.full((capacity, *column["shape"]), None, dtype=object)
    return np.zeros((capacity, *column["shape"]), dtype=dtype)


def materialize(records: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """The :meth:`Pipeline.snapshot` dict at the last of ``records`` (a full record, then deltas)."""
    columns: dict[str, np.ndarray] = {}
    meta: dict[str, Any] = {}
    parts: dict[str, Any] = {}
    started = False
    for rec in records:
        if not is_record(rec):
            raise ValueError("not a streamguard state record")
        if rec["full"]:
            columns, started = {}, True
        elif not started:
            raise ValueError("a state log must start with a full record")
        meta, parts, capacity, rows = rec["meta"], rec["parts"], int(rec["capacity"]), rec["rows"]
        for key, column in rec["columns"].items():
            target = columns.get(key)
            if target is None:
                target = _empty(column, capacity)
            elif target.shape[0] < capacity:
                target = np.concatenate([target, _empty(column, capacity - target.shape[0])])
            _scatter(target, rows, column)
            columns[key] = target
    if not started:
        raise ValueError("empty state log")
    snapshot = dict(meta)
    for name, values in parts.items():
        snapshot[name] = dict(values)
    for key, array in columns.items():
        part, field = key.split(".", 1)
        (snapshot if part == "" else snapshot[part])[field] = array
    return snapshot
