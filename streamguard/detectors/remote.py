"""Shared-prompt evidence across partitions and replicas.

Accounts are sharded over Kafka partitions, and each partition has its own
pipeline, so two members of a campaign that share prompts but land on
different partitions never meet in one near-duplicate table. Each pipeline
therefore publishes the compact SimHash signatures of its requests (through
an internal Kafka topic, keyed by hash bucket: see ``stream/signatures.py``)
and ingests everyone else's into a :class:`RemoteIndex`:

- a request of this partition is looked up among recent *foreign*
  signatures: a hit is a cross-account near-duplicate with an account of
  another partition;
- a foreign signature is looked up among this partition's recent
  signatures: the same evidence, seen from the other side, when the foreign
  request came second.

Foreign accounts are known only by a 64-bit key (a hash of the account id),
enough to link them and never a raw id. Both tables keep, per band bucket,
the latest signature, like the local cross-account tables: the cost per
request is constant. What arrives from other replicas arrives when it
arrives, so this evidence, unlike everything else in the pipeline, depends on
timing; the pipeline's own alerts stay reproducible when it is off.

Attribute tokens and session boundaries travel the same way
(:class:`AccountRecords`, an optional section of a signature message): when
an account's tokens or boundaries change, or its request count has doubled
since it was last sent, its pipeline publishes its key, request count,
latest request time, tokens (already keyed 64-bit hashes, never values) and
boundary codes. Every other partition keeps the latest record per key in a
bounded :class:`ForeignAccounts` table, from which attribute groups and
timing links draw foreign members: they connect a group and count toward its
size, never toward its coverage statistics (their histograms live elsewhere),
and are never alerted here (each partition alerts its own accounts).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from streamguard.backends.numpy_backend import band_buckets, hamming
from streamguard.detectors.timing import NO_BOUNDARY


def account_keys(account_ids: np.ndarray) -> np.ndarray:
    """(n,) uint64 non-zero keys of account ids (BLAKE2b, 8 bytes): compact, and no raw id leaves."""
    out = np.empty(len(account_ids), dtype=np.uint64)
    for i, account in enumerate(account_ids.tolist()):
        digest = int.from_bytes(hashlib.blake2b(str(account).encode(), digest_size=8).digest(), "little")
        out[i] = digest or 1
    return out


@dataclass
class AccountRecords:
    """What other partitions learn of some accounts of one partition: links beyond prompts.

    keys : (m,) uint64 account keys; seen : (m,) int64 requests so far; ts : (m,) int64 the
    account's latest request (epoch ms); tokens : (m, k) uint64 attribute tokens (0: none);
    bounds : (m, b) int64 session boundary codes (``SessionTiming.bounds``; NO_BOUNDARY: none)
    half_ms : the half bucket the codes count in (``SessionTiming.half_ms``)
    """

    keys: np.ndarray
    seen: np.ndarray
    ts: np.ndarray
    tokens: np.ndarray
    bounds: np.ndarray
    half_ms: int = 0

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    @staticmethod
    def concat(parts: list[AccountRecords]) -> AccountRecords | None:
        """One set of records from several (rows in order; None if there is none)."""
        parts = [p for p in parts if len(p)]
        if not parts:
            return None
        k = max(p.tokens.shape[1] for p in parts)
        b = max(p.bounds.shape[1] for p in parts)
        return AccountRecords(
            np.concatenate([p.keys for p in parts]),
            np.concatenate([p.seen for p in parts]),
            np.concatenate([p.ts for p in parts]),
            np.concatenate([_widen(p.tokens, k, 0) for p in parts]),
            np.concatenate([_widen(p.bounds, b, NO_BOUNDARY) for p in parts]),
            parts[0].half_ms,
        )


def _widen(a: np.ndarray, width: int, fill: int) -> np.ndarray:
    if a.shape[1] >= width:
        return a
    return np.concatenate([a, np.full((a.shape[0], width - a.shape[1]), fill, dtype=a.dtype)], axis=1)


@dataclass
class SignatureBatch:
    """Signatures of one partition's requests, as exchanged between pipelines.

    sigs : (n, words) uint64; keys : (n,) uint64 account keys; ts : (n,) int64 epoch ms
    source : the partition the requests were read from
    accounts : records of the accounts whose links beyond prompts changed, or None
    """

    sigs: np.ndarray
    keys: np.ndarray
    ts: np.ndarray
    source: int
    accounts: AccountRecords | None = field(default=None)

    def __len__(self) -> int:
        return int(self.ts.shape[0])


@dataclass
class ForeignView:
    """The live accounts of other partitions, as one linking pass sees them (rows of :class:`ForeignAccounts`)."""

    keys: np.ndarray
    seen: np.ndarray
    tokens: np.ndarray
    bounds: np.ndarray

    def __len__(self) -> int:
        return int(self.keys.shape[0])


class ForeignAccounts:
    """The latest :class:`AccountRecords` row per foreign account key, ``capacity`` keys at most.

    A record older than the one held (by the account's latest request) is ignored, so the order
    in which messages arrive does not matter. Beyond ``capacity`` the keys updated longest ago
    make room. Tokens and boundaries beyond the widths given here keep the first columns.
    """

    def __init__(self, capacity: int, tokens: int, boundaries: int) -> None:
        self.capacity = int(capacity)
        self.row_of: dict[int, int] = {}
        self.keys = np.zeros(self.capacity, dtype=np.uint64)
        self.seen = np.zeros(self.capacity, dtype=np.int64)
        self.ts = np.full(self.capacity, NO_BOUNDARY, dtype=np.int64)
        self.tokens = np.zeros((self.capacity, int(tokens)), dtype=np.uint64)
        self.bounds = np.full((self.capacity, int(boundaries)), NO_BOUNDARY, dtype=np.int64)
        self.updated = np.zeros(self.capacity, dtype=np.int64)  # update counter: the oldest goes first
        self._clock = 0

    def __len__(self) -> int:
        return len(self.row_of)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.keys, self.seen, self.ts, self.tokens, self.bounds, self.updated))

    def update(self, records: AccountRecords) -> None:
        if self.capacity <= 0 or len(records) == 0:
            return
        # The latest record of each key in this set (by its account's latest request, then arrival).
        order = np.lexsort((np.arange(len(records)), records.ts, records.keys))
        last = np.r_[records.keys[order][1:] != records.keys[order][:-1], True]
        picked = np.sort(order[last])[-self.capacity :]
        held = [self.row_of.get(int(k)) for k in records.keys[picked].tolist()]
        fresh = [i for i, row in zip(picked.tolist(), held) if row is None]
        stale = [i for i, row in zip(picked.tolist(), held) if row is not None and records.ts[i] < self.ts[row]]
        rows = self._make_room(len(fresh), {int(records.keys[i]) for i in picked.tolist()})
        for i, row in zip(fresh, rows):
            self.row_of[int(records.keys[i])] = row
            self.keys[row] = records.keys[i]
        skip = set(stale)
        k, b = min(self.tokens.shape[1], records.tokens.shape[1]), min(self.bounds.shape[1], records.bounds.shape[1])
        for i in picked.tolist():
            if i in skip:
                continue
            row = self.row_of[int(records.keys[i])]
            self._clock += 1
            self.updated[row] = self._clock
            self.seen[row], self.ts[row] = records.seen[i], records.ts[i]
            self.tokens[row] = 0
            self.tokens[row, :k] = records.tokens[i, :k]
            self.bounds[row] = NO_BOUNDARY
            self.bounds[row, :b] = records.bounds[i, :b]

    def _make_room(self, n: int, keep: set[int]) -> list[int]:
        """``n`` free rows: the unused ones, then those of the keys updated longest ago (not in ``keep``)."""
        free = list(range(len(self.row_of), min(len(self.row_of) + n, self.capacity)))
        short = n - len(free)
        if short > 0:
            held = np.array([r for k, r in self.row_of.items() if k not in keep], dtype=np.int64)
            gone = held[np.argsort(self.updated[held], kind="stable")[:short]]
            for row in gone.tolist():
                del self.row_of[int(self.keys[row])]
            free += gone.tolist()
        return free

    def view(self, since_ts: int) -> ForeignView | None:
        """The accounts whose latest request is at ``since_ts`` or later (None if none)."""
        if not self.row_of:
            return None
        rows = np.fromiter(self.row_of.values(), dtype=np.int64, count=len(self.row_of))
        rows = np.sort(rows[self.ts[rows] >= since_ts])
        if rows.size == 0:
            return None
        return ForeignView(self.keys[rows], self.seen[rows], self.tokens[rows], self.bounds[rows])


@dataclass
class RemoteMatch:
    """Per looked-up row: the matching account on the other side (key or slot), or none."""

    rows: np.ndarray
    local_slots: np.ndarray
    foreign_keys: np.ndarray
    ts: np.ndarray


class RemoteIndex:
    """Band tables of foreign signatures and of this partition's own, for lookups both ways.

    Parameters
    ----------
    words : signature length in 64-bit words; bands, table_bits : band tables
    radius : Hamming radius of a near-duplicate; window_ms : maximum age difference
    """

    def __init__(self, words: int, radius: int, window_ms: int, bands: int = 8, table_bits: int = 14) -> None:
        self.words, self.radius, self.window_ms = int(words), int(radius), int(window_ms)
        self.bands, self.table_bits = int(bands), int(table_bits)
        size = 1 << self.table_bits
        self.foreign_key = np.zeros((bands, size), dtype=np.uint64)  # 0: empty
        self.foreign_ts = np.zeros((bands, size), dtype=np.int64)
        self.foreign_sig = np.zeros((bands, size, words), dtype=np.uint64)
        self.local_slot = np.full((bands, size), -1, dtype=np.int64)
        self.local_ts = np.zeros((bands, size), dtype=np.int64)
        self.local_sig = np.zeros((bands, size, words), dtype=np.uint64)

    def nbytes(self) -> int:
        return sum(a.nbytes for a in (self.foreign_key, self.foreign_ts, self.foreign_sig, self.local_slot, self.local_ts, self.local_sig))

    def _best(
        self, sigs: np.ndarray, ts: np.ndarray, owner: np.ndarray, owner_ts: np.ndarray, owner_sig: np.ndarray, empty: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """For each row, the band whose entry is the closest near-duplicate (-1 if none), and the buckets."""
        buckets = band_buckets(sigs, self.bands, self.table_bits)
        band = np.arange(self.bands)[None, :]
        found = owner[band, buckets]
        dist = hamming(sigs[:, None, :], owner_sig[band, buckets])
        ok = (found != empty) & (np.abs(ts[:, None] - owner_ts[band, buckets]) <= self.window_ms) & (dist <= self.radius)
        dist = np.where(ok, dist, np.iinfo(np.int32).max)
        best = np.argmin(dist, axis=1)
        best[~ok.any(axis=1)] = -1
        return best, buckets

    def match_local(self, sigs: np.ndarray, slots: np.ndarray, ts: np.ndarray) -> RemoteMatch:
        """This partition's requests against foreign signatures; then remember them for :meth:`ingest`."""
        rows = np.empty(0, np.int64)
        keys = np.empty(0, np.uint64)
        if len(ts):
            best, buckets = self._best(sigs, ts, self.foreign_key, self.foreign_ts, self.foreign_sig, empty=0)
            rows = np.flatnonzero(best >= 0)
            keys = self.foreign_key[best[rows], buckets[rows, best[rows]]]
            band = np.broadcast_to(np.arange(self.bands), buckets.shape)
            self.local_slot[band, buckets] = slots[:, None]
            self.local_ts[band, buckets] = ts[:, None]
            self.local_sig[band, buckets] = sigs[:, None, :]
        return RemoteMatch(rows, slots[rows], keys, ts[rows])

    def ingest(self, batch: SignatureBatch) -> RemoteMatch:
        """Foreign signatures against this partition's own; then remember them for :meth:`match_local`."""
        sigs, ts = batch.sigs, batch.ts
        if len(batch) == 0:
            return RemoteMatch(np.empty(0, np.int64), np.empty(0, np.int64), np.empty(0, np.uint64), np.empty(0, np.int64))
        best, buckets = self._best(sigs, ts, self.local_slot, self.local_ts, self.local_sig, empty=-1)
        rows = np.flatnonzero(best >= 0)
        slots = self.local_slot[best[rows], buckets[rows, best[rows]]]
        band = np.broadcast_to(np.arange(self.bands), buckets.shape)
        self.foreign_key[band, buckets] = batch.keys[:, None]
        self.foreign_ts[band, buckets] = ts[:, None]
        self.foreign_sig[band, buckets] = sigs[:, None, :]
        return RemoteMatch(rows, slots, batch.keys[rows], ts[rows])
