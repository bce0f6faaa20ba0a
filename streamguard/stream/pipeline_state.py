"""A :class:`~streamguard.stream.pipeline.Pipeline`'s state as a whole: checkpoints (snapshots,
incremental records, restore), memory per account and the eviction that keeps it in budget."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from streamguard.detectors.codebook import Codebook

ACCOUNT_OVERHEAD_BYTES = 400
"""Process memory per account beyond the detector arrays, measured (scripts/state_scale.py): the
account id string and its table entry, the last request ids, the checkpoint's copies of the
counters, at 20-40 character ids."""


class PipelineState:
    """Mixed into :class:`~streamguard.stream.pipeline.Pipeline`: reads and replaces the state its
    ``__init__`` and ``_build`` set (settings, backend, codebook, accounts, scorer, stats, remote, foreign, event_time,
    the detectors near_duplicate, coverage, campaigns and timing, ``ready``, the warm-up buffer
    ``_warm``/``_warm_rows``, ``_tick``, ``_watermark``, ``_row_watermarks``, ``_touched``,
    ``_last_request``, ``_last_dup_request``, ``_changes``) and calls its ``_build`` on restore."""

    def _evict_idle(self) -> None:
        idle_ms = int(self.settings.state.idle_evict_hours * 3_600_000)
        if self._watermark is not None:
            evicted = self.accounts.evict_idle(self._watermark, idle_ms)
            self._touched.difference_update(evicted.tolist())
            self._count_evicted("idle", evicted.size)

    def _evict_over_bound(self) -> None:
        """Past 90% of ``max_accounts``, evict the least recently active down to it: the next
        tick's new accounts then find free slots (see AccountTable.evict_lru)."""
        bound = self.accounts.max_accounts
        keep = bound - bound // 10
        if bound and len(self.accounts) > keep:
            evicted = self.accounts.evict_lru(keep)
            self._touched.difference_update(evicted.tolist())
            self._count_evicted("memory", evicted.size)

    def _count_evicted(self, reason: str, n: int) -> None:
        self.stats.evicted += int(n)
        self.stats.evicted_by[reason] += int(n)

    def memory_bytes_per_account(self) -> int:
        """Process memory one more account holds, measured (README "State"): the detector state of
        :meth:`state_bytes_per_account` plus the account table, the example request ids and the
        checkpoint bookkeeping (Python objects: ids, dict entries; copies of the counters)."""
        return self.state_bytes_per_account() + ACCOUNT_OVERHEAD_BYTES

    def accounts_in_budget(self) -> int:
        """Accounts that fit in ``state.memory_mb`` (per partition) at :meth:`memory_bytes_per_account`."""
        budget = int(self.settings.state.memory_mb * 2**20)
        return max(1024, budget // max(1, self.memory_bytes_per_account()))

    # ------------------------------------------------------------ checkpoints

    SNAPSHOT_VERSION = 3
    """2: near-duplicate window and chains (no per-account ring), campaign links, alert budget.
    3: the account table as per-slot arrays (version 2 snapshots still restore)."""

    def snapshot(self) -> dict[str, Any]:
        """Everything needed to continue exactly where this pipeline is (host values; picklable).

        Restoring a snapshot into a fresh pipeline built with the same
        settings gives the same alerts as never having stopped.
        """
        state = self._meta()
        state.update({k: v.copy() for k, v in self._row_columns().items()})
        state.update({name: part.state_dict() for name, part in self._parts().items()})
        return state

    def checkpoint_state(self, full: bool = False) -> dict[str, Any]:
        """A checkpoint record (stream/state_log.py): what changed since the last call, or everything.

        ``materialize`` of the last full record and every record after it equals :meth:`snapshot`
        at the last one. A record that never became durable must be followed by a full one
        (:meth:`forget_changes`)."""
        return self._changes.record(self._meta(), self._parts(), self._row_columns(), self.backend, self._epoch(), full=full)

    def forget_changes(self) -> None:
        """The last :meth:`checkpoint_state` was not written: the next one is full."""
        self._changes.forget()

    def _meta(self) -> dict[str, Any]:
        return {
            "version": self.SNAPSHOT_VERSION,
            "codebook": dataclasses.asdict(self.codebook) if self.codebook is not None else None,
            "warm": list(self._warm),
            "warm_rows": self._warm_rows,
            "tick": self._tick,
            "watermark": self._watermark,
            "event_time": self.event_time.state_dict(),
            "row_watermarks": self._row_watermarks.copy(),
            "touched": sorted(self._touched),
            "requests": self.stats.requests,
        }

    def _row_columns(self) -> dict[str, np.ndarray]:
        return {"last_request": self._last_request, "last_dup_request": self._last_dup_request}

    def _parts(self) -> dict[str, Any]:
        parts: dict[str, Any] = {"accounts": self.accounts, "scorer": self.scorer}
        if self.ready:
            assert self.near_duplicate and self.coverage and self.campaigns and self.timing
            parts.update(
                near_duplicate=self.near_duplicate, coverage=self.coverage, campaigns=self.campaigns, timing=self.timing
            )
        return parts

    def _epoch(self) -> Any:
        # The coverage clock's rebase scales every histogram and style sum at once.
        return self.coverage.decay_epoch() if self.coverage is not None else None

    def restore(self, state: dict[str, Any]) -> None:
        """Load a :meth:`snapshot` into this (freshly built) pipeline."""
        if state.get("version") not in (2, self.SNAPSHOT_VERSION):
            raise ValueError(
                f"snapshot version {state.get('version')} is not {self.SNAPSHOT_VERSION}: written by another "
                "streamguard release; start this partition afresh (move its checkpoint away) or run the matching release"
            )
        if state["codebook"] is not None and not self.ready:
            self._build(Codebook(**state["codebook"]))
        self._warm = list(state["warm"])
        self._warm_rows = int(state["warm_rows"])
        self._tick = state["tick"]
        self._watermark = state["watermark"]
        if "event_time" in state:
            self.event_time.load_state_dict(state["event_time"])
            self._row_watermarks = np.asarray(state["row_watermarks"], dtype=np.int64).copy()
        else:  # a snapshot from before the guard: its watermark was the running maximum
            pending = np.concatenate([b.ts for b in state["warm"]]) if state["warm"] else np.empty(0, np.int64)
            floor = self._watermark if self._watermark is not None else np.iinfo(np.int64).min
            self._row_watermarks = np.maximum.accumulate(np.maximum(pending, floor))
            last = int(self._row_watermarks[-1]) if len(pending) else self._watermark
            self.event_time.load_state_dict({"watermark": last})
        self._touched = set(state["touched"])
        self._last_request = state["last_request"].copy()
        self._last_dup_request = state["last_dup_request"].copy()
        self.stats.requests = int(state["requests"])
        self.accounts.load_state_dict(state["accounts"])
        # Not in the snapshot: sized to the restored table (which grew without calling on_grow), and
        # every account's record is published again, as by a fresh pipeline. At the initial size, the
        # first eviction past it after a restart raised IndexError, on every restart.
        self._sent_seen = np.zeros(self.accounts.capacity, dtype=np.int64)
        self.scorer.load_state_dict(state["scorer"])
        if self.ready:
            assert self.near_duplicate and self.coverage and self.campaigns
            self.near_duplicate.load_state_dict(state["near_duplicate"])
            self.coverage.load_state_dict(state["coverage"])
            self.campaigns.load_state_dict(state["campaigns"])
            assert self.timing is not None
            if "timing" in state:  # a snapshot from before timing links has none: boundaries start afresh
                self.timing.load_state_dict(state["timing"])
        # Checkpoint records continue from the restored state.
        self._changes.sync(self._parts(), self._row_columns(), self.backend, self._epoch())

    def state_bytes_per_account(self) -> int:
        if self.near_duplicate is None or self.coverage is None:
            return 0
        assert self.campaigns is not None
        return (
            self.near_duplicate.state_bytes_per_account()
            + self.coverage.state_bytes_per_account()
            + self.campaigns.state_bytes_per_account()
            + (self.timing.state_bytes_per_account() if self.timing is not None else 0)
            + 3 * 8  # scorer
            + 8  # account table
        )

    def fixed_state_bytes(self) -> int:
        """State that does not grow with accounts: the near-duplicate window and tables, shared-prompt
        edges (a few per linked account) and, when sharing, the other partitions' signature tables."""
        if self.near_duplicate is None:
            return 0
        total = sum(self.near_duplicate.fixed_state_bytes().values())
        if self.campaigns is not None:
            total += self.campaigns.fixed_state_bytes()
        if self.remote is not None:
            total += self.remote.nbytes()
        if self.foreign is not None:
            total += self.foreign.nbytes()
        return total
