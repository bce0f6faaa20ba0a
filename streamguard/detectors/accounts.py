"""The account slot table: every per-account state array is indexed by a slot.

Slots are dense integers so that detector state lives in preallocated arrays
(host or device) rather than in dicts. The table grows by doubling up to
``max_accounts`` slots and frees slots two ways: accounts idle for longer than
the eviction horizon (:meth:`AccountTable.evict_idle`), and, when more than a
bound of accounts hold state, the least recently active ones
(:meth:`AccountTable.evict_lru`). Memory is then bounded by ``max_accounts``
whatever the number of accounts a stream brings.

Which slot a new account gets depends only on which slots are free (the
lowest free slot), never on the order slots were freed in, so a table
restored from its per-slot arrays hands out the same slots as the original.
"""

from __future__ import annotations

import heapq
from typing import Any, Callable

import numpy as np

from streamguard.detectors.state import Stateful

_NEVER = np.iinfo(np.int64).max


class AccountTable(Stateful):
    """Maps account ids to slots; tells listeners when arrays must grow or slots reset.

    Parameters
    ----------
    capacity : slots allocated at first
    max_accounts : the most slots the table grows to (0: unbounded). When every
        slot is taken, :meth:`assign` evicts the least recently active accounts
        not in the batch being assigned (an emergency: :meth:`evict_lru` at tick
        ends normally keeps free slots).
    """

    _state_fields = ("capacity", "_ids", "first_ts", "last_ts")

    def __init__(self, capacity: int = 4096, max_accounts: int = 0) -> None:
        self.max_accounts = max(0, int(max_accounts))
        capacity = max(1, int(capacity))
        if self.max_accounts:
            capacity = min(capacity, self.max_accounts)
        self.capacity = capacity
        self._ids = np.full(capacity, None, dtype=object)
        self.first_ts = np.full(capacity, _NEVER, dtype=np.int64)
        self.last_ts = np.zeros(capacity, dtype=np.int64)
        self._used = np.zeros(capacity, dtype=bool)
        self._slot_of: dict[str, int] = {}
        self._free: list[int] = list(range(capacity))  # a min-heap (a sorted list is one)
        self._on_grow: list[Callable[[int], None]] = []
        self._on_reset: list[Callable[[np.ndarray], None]] = []
        self.emergency_evicted = 0
        """Accounts evicted inside :meth:`assign` because every slot was taken."""

    def __len__(self) -> int:
        return len(self._slot_of)

    def on_grow(self, callback: Callable[[int], None]) -> None:
        """``callback(new_capacity)`` runs before any slot beyond the old capacity is handed out."""
        self._on_grow.append(callback)

    def on_reset(self, callback: Callable[[np.ndarray], None]) -> None:
        """``callback(slots)`` must clear the state of freed slots."""
        self._on_reset.append(callback)

    def account_id(self, slot: int) -> str | None:
        return self._ids[slot]

    def slot(self, account_id: str) -> int | None:
        return self._slot_of.get(account_id)

    def active_slots(self) -> np.ndarray:
        """(n,) int64, ascending: the slots that hold an account."""
        return np.flatnonzero(self._used)

    def assign(self, account_ids: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Slots (n,) int64 of ``account_ids``, allocating new ones; updates last activity."""
        slots = np.empty(len(account_ids), dtype=np.int64)
        get = self._slot_of.get
        for i, account in enumerate(account_ids):
            slot = get(account)
            if slot is None:
                if not self._free:
                    self._make_room(slots[:i])
                slot = heapq.heappop(self._free)
                self._slot_of[account] = slot
                self._ids[slot] = account
                self._used[slot] = True
            slots[i] = slot
        if slots.size:
            np.maximum.at(self.last_ts, slots, ts)
            np.minimum.at(self.first_ts, slots, ts)
        return slots

    def _make_room(self, in_batch: np.ndarray) -> None:
        if not self.max_accounts or self.capacity < self.max_accounts:
            self._grow()
            return
        # Every slot is taken: free the least recently active 10% (never an account of this batch), as
        # a tick end would; each eviction pass costs O(slots), so fewer, larger ones.
        chunk = max(1, self.max_accounts // 10)
        freed = self.evict_lru(len(self) - chunk, exclude=in_batch)
        self.emergency_evicted += int(freed.size)
        if not self._free:  # every account is in this batch: the bound cannot hold
            self._grow()

    def _grow(self) -> None:
        old = self.capacity
        new = old * 2
        if self.max_accounts and old < self.max_accounts:
            new = min(new, self.max_accounts)
        for callback in self._on_grow:
            callback(new)
        extra = new - old
        self._ids = np.concatenate([self._ids, np.full(extra, None, dtype=object)])
        self.last_ts = np.concatenate([self.last_ts, np.zeros(extra, dtype=np.int64)])
        self.first_ts = np.concatenate([self.first_ts, np.full(extra, _NEVER, dtype=np.int64)])
        self._used = np.concatenate([self._used, np.zeros(extra, dtype=bool)])
        self._free.extend(range(old, new))  # all above every free slot: still a heap
        self.capacity = new

    def _release(self, slots: np.ndarray) -> None:
        if not slots.size:
            return
        for callback in self._on_reset:
            callback(slots)
        slot_of = self._slot_of
        for account in self._ids[slots].tolist():
            del slot_of[account]
        self._ids[slots] = None
        self._used[slots] = False
        self.last_ts[slots] = 0
        self.first_ts[slots] = _NEVER
        self._free.extend(slots.tolist())
        heapq.heapify(self._free)

    def evict_idle(self, now_ms: int, idle_ms: int) -> np.ndarray:
        """Free the slots of accounts silent since ``now_ms - idle_ms``; returns them."""
        active = self.active_slots()
        stale = active[self.last_ts[active] < now_ms - idle_ms]
        self._release(stale)
        return stale

    def evict_lru(self, keep: int, exclude: np.ndarray | None = None) -> np.ndarray:
        """Free the least recently active accounts until at most ``keep`` hold a slot; returns their slots.

        Least recent is the smallest last event time; ties go to the lowest slot, so the choice
        depends on the table's content only.
        """
        excess = len(self) - max(0, int(keep))
        if excess <= 0:
            return np.empty(0, dtype=np.int64)
        active = self.active_slots()
        if exclude is not None and len(exclude):
            active = active[~np.isin(active, exclude)]
        if excess >= active.size:
            chosen = active
        else:
            ts = self.last_ts[active]
            kth = np.partition(ts, excess - 1)[excess - 1]
            below = active[ts < kth]
            chosen = np.concatenate([below, active[ts == kth][: excess - below.size]])
        self._release(chosen)
        return chosen

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if isinstance(state.get("_ids"), list):  # snapshot version 2: the id list, a dict and a free list
            state = {**state, "_ids": np.array(state["_ids"] + [None], dtype=object)[:-1]}
        super().load_state_dict(state)
        self._used = np.array([a is not None for a in self._ids.tolist()], dtype=bool)
        used = np.flatnonzero(self._used)
        self._slot_of = dict(zip(self._ids[used].tolist(), used.tolist()))
        self._free = np.flatnonzero(~self._used).tolist()
