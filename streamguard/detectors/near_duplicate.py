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

No account holds more than ``account_cap = window * account_share`` entries
of the window (``near_duplicate.account_share``). A request of an account that
already holds its cap is *not stored*: it takes no position, and it is
compared with the account's entries in the window as they are (the walk from
the account's latest entry, ``backend.dup_query``), so its cost is at most
the cap and an account sending most of the traffic cannot push the other
accounts' requests out of the window. Its entries leave the window as other
accounts' requests come in, and its next requests are stored again: a heavy
account keeps a sample of its recent requests, spread over the window. Which
requests are stored is decided here, on the host, from ``window_owner`` (the
account of each row); accounts far from their cap (all of them, in ordinary
traffic) are stored without a look, and the backends scan exactly as before.

Per account the detector keeps the head and the counts that scoring needs:
requests seen, within-account and cross-account duplicates, and the last
account it shared a prompt with.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamguard.backends.base import Backend
from streamguard.config import NearDuplicateConfig
from streamguard.detectors.features import DuplicateFeatures
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
    account_share : no account holds more than ``window * account_share`` entries of
        the window; its further requests are compared with them and not stored
    """

    _state_fields = (
        "capacity", "position", "window_sig", "window_prev", "window_owner", "head", "table_slot", "table_ts",
        "table_sig", "seen", "dups", "cross_dups", "last_partner",
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
        account_share: float = NearDuplicateConfig.account_share,
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
        self.account_share = float(account_share)
        if not 0.0 < self.account_share <= 1.0:
            raise ValueError(f"account_share must be in (0, 1], got {account_share}")
        self.account_cap = max(1, int(self.window * self.account_share))
        self.bits = int(planes.shape[1])
        self.words = self.bits // 64
        xp = backend.xp
        # The shared window: rows for 2 * window positions, so a piece of up to `window`
        # requests can be inserted before it is scanned without overwriting any row a
        # request of the piece still reads.
        self.window_rows = 2 * self.window
        self.window_sig = xp.zeros((self.window_rows, self.words), dtype=xp.uint64)
        self.window_prev = xp.full(self.window_rows, -1, dtype=xp.int64)
        self.window_owner = np.full(self.window_rows, -1, dtype=np.int64)
        """Host: the account slot of each row's entry (-1: none, or an evicted account's)."""
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
        self.window_owner[np.isin(self.window_owner, slots)] = -1
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
            "window": self.window_rows * (self.words * 8 + 8 + 8),
            "cross_account_tables": self.bands * (1 << self.table_bits) * (8 + 8 + self.words * 8),
        }

    # ------------------------------------------------------------------ update

    def _admit(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Which requests of a piece are stored, given the cap on each account's entries.

        slots : (m,) int64 host, m <= window. Returns ``stored`` (m,) bool and, for
        the requests not stored, ``origin`` (m,) int64 (the account's latest entry
        before the request) and ``stop`` (m,) int64 (the oldest position of the
        request's window); both -1 where stored. In batch order: request ``i``, when
        the next free position is ``P``, is stored when its account holds fewer
        than ``account_cap`` entries in ``[P - window, P)``.
        """
        m = slots.shape[0]
        stored = np.ones(m, dtype=bool)
        origin = np.full(m, -1, dtype=np.int64)
        stop = np.full(m, -1, dtype=np.int64)
        start, window, cap = self.position, self.window, self.account_cap
        if m == 0:
            return stored, origin, stop
        lo = max(0, start - window)
        owners = self.window_owner[np.arange(lo, start) % self.window_rows]
        accounts, inverse, counts = np.unique(slots, return_inverse=True, return_counts=True)
        held = np.bincount(owners[owners >= 0], minlength=int(accounts[-1]) + 1)[accounts]
        # Entries only leave the window as the piece goes on, so an account whose held
        # entries plus its requests stay within the cap has all its requests stored.
        risky = held + counts > cap
        if not risky.any():
            return stored, origin, stop
        at_risk = risky[inverse]
        safe = (~at_risk).astype(np.int64)
        before = np.cumsum(safe) - safe  # requests of safe accounts before each request: all stored
        entries: dict[int, list[int]] = {}
        for k in np.flatnonzero(risky):
            entries[int(accounts[k])] = (lo + np.flatnonzero(owners == accounts[k])).tolist()
        expired = dict.fromkeys(entries, 0)
        added = dict.fromkeys(entries, 0)
        latest = {a: (e[-1] if e else -1) for a, e in entries.items()}
        extra = 0  # requests of accounts at risk stored so far in this piece
        for i in np.flatnonzero(at_risk).tolist():
            a = int(slots[i])
            position = start + int(before[i]) + extra
            old, gone = entries[a], expired[a]
            while gone < len(old) and old[gone] < position - window:
                gone += 1
            expired[a] = gone
            if len(old) - gone + added[a] < cap:
                added[a] += 1
                latest[a] = position
                extra += 1
            else:
                stored[i] = False
                origin[i] = latest[a]
                stop[i] = max(0, position - window)
        return stored, origin, stop

    def _scan(self, sigs: Any, slots: np.ndarray, slots_dev: Any, n: int) -> np.ndarray:
        """Within-account scan in pieces of at most ``window_rows - window`` requests."""
        backend = self.backend
        piece = self.window_rows - self.window
        out = np.empty(n, dtype=np.int32)
        for a in range(0, n, piece):
            b = min(n, a + piece)
            stored, origin, stop = self._admit(slots[a:b])
            keep = np.flatnonzero(stored)
            m = keep.size
            if m == b - a:
                scan = backend.dup_scan(
                    sigs[a:b], slots_dev[a:b], self.window_sig, self.window_prev, self.head, self.position, self.window
                )
                out[a:b] = scan.within_dist
            else:
                if m:
                    rows = backend.asarray(a + keep)
                    scan = backend.dup_scan(
                        sigs[rows], slots_dev[rows], self.window_sig, self.window_prev, self.head, self.position, self.window
                    )
                    out[a + keep] = scan.within_dist
                # After the insertion: a request not stored sees the entries stored before it.
                rest = np.flatnonzero(~stored)
                rest_rows = backend.asarray(a + rest)
                query = backend.dup_query(
                    sigs[rest_rows],
                    slots_dev[rest_rows],
                    backend.asarray(origin[rest]),
                    backend.asarray(stop[rest]),
                    self.window_sig,
                    self.window_prev,
                )
                out[a + rest] = query.within_dist
            self.window_owner[(self.position + np.arange(m)) % self.window_rows] = slots[a:b][keep]
            self.position += m
        return out

    def update(self, batch: DetectorBatch) -> NearDuplicateResult:
        """Score every request against what came before it, then remember it."""
        backend = self.backend
        n = len(batch)
        if n == 0:
            empty_i = np.empty(0, np.int32)
            return NearDuplicateResult(empty_i, np.empty(0, bool), empty_i.copy(), np.empty(0, np.int64), np.empty(0, bool))
        slots_dev = backend.asarray(batch.slots)
        sigs = backend.signatures(batch.embeddings, self.planes, self.plane_offsets)
        within = self._scan(sigs, np.asarray(batch.slots, dtype=np.int64), slots_dev, n)
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

    def features(self, slots: np.ndarray) -> DuplicateFeatures:
        """Requests seen and near-duplicate rates of the accounts ``slots`` (host arrays)."""
        seen = self.seen[slots]
        denom = np.maximum(seen, 1)
        return DuplicateFeatures(seen=seen, dup_rate=self.dups[slots] / denom, cross_rate=self.cross_dups[slots] / denom)

    def requests_seen(self, slots: np.ndarray | None = None) -> np.ndarray:
        """(m,) int64 requests seen per account of ``slots`` (None: every slot; a read-only view)."""
        if slots is None:
            view = self.seen.view()
            view.flags.writeable = False
            return view
        return self.seen[slots]

    def duplicate_counts(self, slots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(m,) int64 near-duplicates per account of ``slots``: of its own requests, and of other
        accounts' (other partitions' included)."""
        return self.dups[slots], self.cross_dups[slots]

    def cross_duplicates(self) -> np.ndarray:
        """(S,) int64 cross-account near-duplicates per slot (a read-only view)."""
        view = self.cross_dups.view()
        view.flags.writeable = False
        return view

    def partner(self, slot: int) -> int:
        """The slot of the account whose prompt ``slot`` last repeated, or -1."""
        return int(self.last_partner[slot])

    def count_remote(self, slots: np.ndarray) -> None:
        """Count near-duplicates of other partitions' requests (one per row of ``slots``) as cross-account ones."""
        np.add.at(self.cross_dups, slots, 1)
