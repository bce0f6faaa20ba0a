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
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

from streamguard.backends.numpy_backend import band_buckets, hamming


def account_keys(account_ids: np.ndarray) -> np.ndarray:
    """(n,) uint64 non-zero keys of account ids (BLAKE2b, 8 bytes): compact, and no raw id leaves."""
    out = np.empty(len(account_ids), dtype=np.uint64)
    for i, account in enumerate(account_ids.tolist()):
        digest = int.from_bytes(hashlib.blake2b(str(account).encode(), digest_size=8).digest(), "little")
        out[i] = digest or 1
    return out


@dataclass
class SignatureBatch:
    """Signatures of one partition's requests, as exchanged between pipelines.

    sigs : (n, words) uint64; keys : (n,) uint64 account keys; ts : (n,) int64 epoch ms
    source : the partition the requests were read from
    """

    sigs: np.ndarray
    keys: np.ndarray
    ts: np.ndarray
    source: int

    def __len__(self) -> int:
        return int(self.ts.shape[0])


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
