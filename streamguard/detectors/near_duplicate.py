"""Near-duplicate detection: templated, repeated prompts within and across accounts.

Each request is reduced to a SimHash signature of its centred embedding. A
request is a near-duplicate *within* its account when one of the account's
requests among the last ``window`` requests this pipeline has seen is within
the Hamming radius, and a near-duplicate *across* accounts when another
account sent such a request within ``cross_window_ms`` (found through banded
hash tables, so the cost per request is constant). Order inside a batch is
causal: a request sees only earlier ones.

The within-account search is over one window per pipeline (shard), not a
ring per account: a ring of an account's last 64 requests missed a third of
the repeats that exact cosine finds in the last 65,536 requests (heavy
accounts repeat themselves from far back). The window stores the last
``2 * window`` signatures, each with the position of its account's previous
request; each account slot stores the position of its latest request (its
head). A request walks its account's chain back while the position is inside
its own window ``[q - window, q)``: the walk costs the number of the
account's requests in that window (see ``streamguard bench``). Batches longer
than ``window`` are cut into pieces, so a request always sees exactly the
``window`` positions before it, whatever the batching, and a snapshot holds
the whole window.

Per account the detector keeps the head and the counts that scoring needs:
requests seen, within-account and cross-account duplicates, and the last
account it shared a prompt with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamguard.backends.base import Backend
from streamguard.detectors.state import Stateful


@dataclass
class DetectorBatch:
    """What every detector consumes.

    slots : (n,) int64 account slots; ts : (n,) int64 epoch ms;
    embeddings : (n, d) float32 unit rows (a backend array).
    """

    slots: np.ndarray
    ts: np.ndarray
    embeddings: Any

    def __len__(self) -> int:
        return int(self.slots.shape[0])


@dataclass
class NearDuplicateResult:
    """Per request (host arrays): ``within_dist``/``cross_dist`` (n,) int32,
    ``is_dup``/``is_cross_dup`` (n,) bool, ``cross_slot`` (n,) int64 (-1 if none);
    ``signatures`` (n, words) uint64 backend array, the requests' SimHash signatures."""

    within_dist: np.ndarray
    is_dup: np.ndarray
    cross_dist: np.ndarray
    cross_slot: np.ndarray
    is_cross_dup: np.ndarray
    signatures: Any = None

    def scores(self, bits: int) -> np.ndarray:
        """(n,) float64 in [0, 1]: SimHash estimate of the cosine to the closest earlier
        request of the account (``cos(pi * d / bits)``), 0 when there is none."""
        d = np.minimum(self.within_dist, bits).astype(np.float64)
        return np.clip(np.cos(np.pi * d / bits), 0.0, 1.0)


class NearDuplicateDetector(Stateful):
    """Within- and cross-account near-duplicate scan over SimHash signatures.

    Parameters
    ----------
    backend : the array backend
    planes : (d, bits) float32 hyperplanes; plane_offsets : (bits,) float32
    radius : Hamming radius of a near-duplicate
    window : the within-account search covers the account's requests among
        the last ``window`` requests this detector has seen
    bands, table_bits : cross-account tables (bands x 2**table_bits buckets)
    cross_window_ms : maximum age of a cross-account match
    capacity : initial number of account slots
    """

    _state_fields = (
        "capacity", "position", "window_sig", "window_prev", "head", "table_slot", "table_ts", "table_sig",
        "seen", "dups", "cross_dups", "last_partner",
    )
    _device_fields = ("window_sig", "window_prev", "head", "table_slot", "table_ts", "table_sig")

    def __init__(
        self,
        backend: Backend,
        planes: np.ndarray,
        plane_offsets: np.ndarray,
        radius: int,
        window: int = 65_536,
        bands: int = 8,
        table_bits: int = 16,
        cross_window_ms: int = 86_400_000,
        capacity: int = 4096,
    ) -> None:
        self.backend = backend
        self.planes = backend.asarray(planes)
        self.plane_offsets = backend.asarray(plane_offsets)
        self.radius = int(radius)
        self.window = int(window)
        if self.window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        self.bands = int(bands)
        self.table_bits = int(table_bits)
        self.cross_window_ms = int(cross_window_ms)
        self.capacity = int(capacity)
        self.bits = int(planes.shape[1])
        self.words = self.bits // 64
        xp = backend.xp
        # The shared window: rows for 2 * window positions, so a piece of up to `window`
        # requests can be inserted before it is scanned without overwriting any row a
        # request of the piece still reads.
        self.window_rows = 2 * self.window
        self.window_sig = xp.zeros((self.window_rows, self.words), dtype=xp.uint64)
        self.window_prev = xp.full(self.window_rows, -1, dtype=xp.int64)
        self.head = xp.full(capacity, -1, dtype=xp.int64)
        self.position = 0
        """Requests inserted so far: the position of the next one."""
        size = 1 << table_bits
        self.table_slot = xp.full((bands, size), -1, dtype=xp.int64)
        self.table_ts = xp.zeros((bands, size), dtype=xp.int64)
        self.table_sig = xp.zeros((bands, size, self.words), dtype=xp.uint64)
        # Counters read by scoring (host: they are small and touched once per batch).
        self.seen = np.zeros(capacity, dtype=np.int64)
        self.dups = np.zeros(capacity, dtype=np.int64)
        self.cross_dups = np.zeros(capacity, dtype=np.int64)
        self.last_partner = np.full(capacity, -1, dtype=np.int64)

    # ------------------------------------------------------------ state layout

    def resize(self, capacity: int) -> None:
        """Grow per-account arrays to ``capacity`` slots (new slots empty)."""
        xp = self.backend.xp
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.head = xp.concatenate([self.head, xp.full(extra, -1, dtype=xp.int64)])
        self.seen = np.concatenate([self.seen, np.zeros(extra, np.int64)])
        self.dups = np.concatenate([self.dups, np.zeros(extra, np.int64)])
        self.cross_dups = np.concatenate([self.cross_dups, np.zeros(extra, np.int64)])
        self.last_partner = np.concatenate([self.last_partner, np.full(extra, -1, np.int64)])
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        """Forget evicted accounts (their window and table entries age out).

        Without a head, a slot's next account starts a new chain and never
        walks into the entries of the account that held the slot before.
        """
        device_slots = self.backend.asarray(slots)
        self.head[device_slots] = -1
        self.seen[slots] = 0
        self.dups[slots] = 0
        self.cross_dups[slots] = 0
        self.last_partner[slots] = -1
        self.last_partner[np.isin(self.last_partner, slots)] = -1

    def state_bytes_per_account(self) -> int:
        """Per account slot: the head (8 B) and four counters (32 B)."""
        return 8 + 4 * 8

    def fixed_state_bytes(self) -> dict[str, int]:
        """State that does not grow with the accounts, per detector (one per pipeline)."""
        return {
            "window": self.window_rows * (self.words * 8 + 8),
            "cross_account_tables": self.bands * (1 << self.table_bits) * (8 + 8 + self.words * 8),
        }

    # ------------------------------------------------------------------ update

    def _scan(self, sigs: Any, slots: Any, n: int) -> np.ndarray:
        """Within-account scan in pieces of at most ``window_rows - window`` requests."""
        piece = self.window_rows - self.window
        parts = []
        for a in range(0, n, piece):
            b = min(n, a + piece)
            scan = self.backend.dup_scan(
                sigs[a:b], slots[a:b], self.window_sig, self.window_prev, self.head, self.position, self.window
            )
            self.position += b - a
            parts.append(scan.within_dist)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def update(self, batch: DetectorBatch) -> NearDuplicateResult:
        """Score every request against what came before it, then remember it."""
        backend = self.backend
        n = len(batch)
        if n == 0:
            empty_i = np.empty(0, np.int32)
            return NearDuplicateResult(empty_i, np.empty(0, bool), empty_i.copy(), np.empty(0, np.int64), np.empty(0, bool))
        slots_dev = backend.asarray(batch.slots)
        sigs = backend.signatures(batch.embeddings, self.planes, self.plane_offsets)
        within = self._scan(sigs, slots_dev, n)
        cross = backend.cross_lookup(
            sigs,
            slots_dev,
            backend.asarray(batch.ts),
            self.table_slot,
            self.table_ts,
            self.table_sig,
            self.radius,
            self.cross_window_ms,
        )
        is_dup = within <= self.radius
        is_cross = cross.cross_slot >= 0
        np.add.at(self.seen, batch.slots, 1)
        np.add.at(self.dups, batch.slots, is_dup.astype(np.int64))
        np.add.at(self.cross_dups, batch.slots, is_cross.astype(np.int64))
        matched = np.flatnonzero(is_cross)
        self.last_partner[batch.slots[matched]] = cross.cross_slot[matched]
        return NearDuplicateResult(within, is_dup, cross.cross_dist, cross.cross_slot, is_cross, sigs)
