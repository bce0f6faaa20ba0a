"""The account slot table: every per-account state array is indexed by a slot.

Slots are dense integers so that detector state lives in preallocated arrays
(host or device) rather than in dicts. The table grows by doubling and frees
the slots of accounts idle for longer than the eviction horizon, so memory is
bounded by the number of *active* accounts, not by every account ever seen.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from streamguard.detectors.state import Stateful


class AccountTable(Stateful):
    """Maps account ids to slots; tells listeners when arrays must grow or slots reset."""

    _state_fields = ("capacity", "_slot_of", "_ids", "first_ts", "last_ts", "_free")

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = max(1, int(capacity))
        self._slot_of: dict[str, int] = {}
        self._ids: list[str | None] = [None] * self.capacity
        self.first_ts = np.full(self.capacity, np.iinfo(np.int64).max, dtype=np.int64)
        self.last_ts = np.zeros(self.capacity, dtype=np.int64)
        self._free: list[int] = list(range(self.capacity - 1, -1, -1))
        self._on_grow: list[Callable[[int], None]] = []
        self._on_reset: list[Callable[[np.ndarray], None]] = []

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
        return np.fromiter(self._slot_of.values(), dtype=np.int64, count=len(self._slot_of))

    def assign(self, account_ids: np.ndarray, ts: np.ndarray) -> np.ndarray:
        """Slots (n,) int64 of ``account_ids``, allocating new ones; updates last activity."""
        slots = np.empty(len(account_ids), dtype=np.int64)
        get = self._slot_of.get
        for i, account in enumerate(account_ids):
            slot = get(account)
            if slot is None:
                slot = self._allocate(account)
            slots[i] = slot
        if slots.size:
            np.maximum.at(self.last_ts, slots, ts)
            np.minimum.at(self.first_ts, slots, ts)
        return slots

    def _allocate(self, account: str) -> int:
        if not self._free:
            self._grow()
        slot = self._free.pop()
        self._slot_of[account] = slot
        self._ids[slot] = account
        return slot

    def _grow(self) -> None:
        old = self.capacity
        new = old * 2
        for callback in self._on_grow:
            callback(new)
        self._ids.extend([None] * (new - old))
        self.last_ts = np.concatenate([self.last_ts, np.zeros(new - old, dtype=np.int64)])
        self.first_ts = np.concatenate([self.first_ts, np.full(new - old, np.iinfo(np.int64).max, dtype=np.int64)])
        self._free.extend(range(new - 1, old - 1, -1))
        self.capacity = new

    def evict_idle(self, now_ms: int, idle_ms: int) -> np.ndarray:
        """Free the slots of accounts silent since ``now_ms - idle_ms``; returns them."""
        active = self.active_slots()
        stale = active[self.last_ts[active] < now_ms - idle_ms]
        if stale.size:
            for callback in self._on_reset:
                callback(stale)
            for slot in stale.tolist():
                account = self._ids[slot]
                del self._slot_of[account]
                self._ids[slot] = None
                self.last_ts[slot] = 0
                self.first_ts[slot] = np.iinfo(np.int64).max
                self._free.append(slot)
        return stale
