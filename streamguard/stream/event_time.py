"""Event time a partition can trust: which request times it accepts, and a watermark no one record can drag.

Event time drives everything stateful: scoring ticks, histogram decay, idle
eviction, campaign links. A running maximum of ``ts`` hands that clock to
whoever sends the largest number: one record stamped 2**62 once froze a
partition's scoring and decayed every history to zero. :class:`EventTimeGuard`
sits in front of a partition's detectors (``Pipeline.process``, so ``replay``
and ``run`` share it) and judges every request in arrival order:

``event time outside the sane range``
    ``ts`` before ``floor_ms`` (2000-01-01) or after ``ceiling_ms`` (2100-01-01),
    whatever the watermark: 0, -1, int64 sentinels, seconds read as microseconds...
``event time too far behind``
    more than ``behind_ms`` before the watermark.
``event time too far ahead``
    more than ``ahead_ms`` after the watermark, and no other account confirms it.

The rest is admitted and fed to the detectors with its own ``ts``; the
watermark moves only on *confirmed* time. A request later than the watermark
waits (it is not fed yet) until the next request of another account either
confirms it (is at most ``step_ms`` earlier) or contradicts it (is earlier
still). Confirmed requests are fed in arrival order and the watermark moves
to their time; a contradicted one is set aside until the watermark reaches its
time on others' word (or dead-lettered when that is more than ``ahead_ms``
away). A move of more than ``step_ms`` at once (traffic resuming after a quiet
spell or an outage) waits for ``jump_confirmations`` other accounts, none
disagreeing in between; a partition's first time is such a move.

So one request, or one account, cannot move the watermark at all; a run of
back-to-back requests of several accounts moves it at most ``step_ms`` per
account past the others, or anywhere only with ``jump_confirmations`` of them
and nobody in between. A gateway node whose clock is off and whose records
arrive in long runs can still do that (a known limit). On a clean stream,
ordered to within ``step_ms``, every request is confirmed by the next one of
another account, so requests are fed in arrival order and the watermark is the
running maximum: the scoring ticks, hence the alerts, are those of a stream
without the guard; the last requests simply wait for the next ones.

Decisions depend only on the requests and their order, never on how they are
cut into batches: a vectorised path takes the runs of requests the rule above
confirms plainly, the rule itself handles the rest. The guard's state (the
watermark, the waiting and set-aside requests) is part of the pipeline's
snapshot. At most :data:`HOLD_LIMIT` requests wait (a partition of one account
confirms itself that way) and as many stay aside.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from streamguard.config import EventTimeConfig
from streamguard.dead_letter import DeadLetter
from streamguard.schema import TS_RANGE_REASON, RequestBatch
from streamguard.stream.decode import turned_away_dead_letter

REASON_RANGE = TS_RANGE_REASON
REASON_BEHIND = "event time too far behind"
REASON_AHEAD = "event time too far ahead"
REASONS = (REASON_RANGE, REASON_BEHIND, REASON_AHEAD)

HOLD_LIMIT = 1024
"""Requests waiting for confirmation beyond this: the oldest is taken as confirmed. Requests set
aside beyond this: the furthest ahead is dead-lettered."""

_HOUR_MS = 3_600_000


@dataclass
class Rejected:
    """Requests turned away, with why (one reason per row, in the order they were judged).

    ``rows`` keeps each row's ``origin`` so that the driver can name its source.
    """

    rows: RequestBatch
    reasons: list[str]

    def __len__(self) -> int:
        return len(self.reasons)

    @classmethod
    def none(cls) -> "Rejected":
        return cls(RequestBatch.empty(0), [])

    def dead_letters(self, source: str) -> list[DeadLetter]:
        """The rows as dead letters, the same for every driver, each with the row as its record.

        A row of a file (``origin`` its row number) is sourced ``SOURCE:ROW``, a row without an origin
        ``SOURCE:?``; a row decoded from Kafka (``origin`` ``(offset, row)``, ``SOURCE`` ``kafka:TOPIC/PARTITION``)
        also carries what the dead-letter topic gets (:func:`~streamguard.stream.decode.turned_away_dead_letter`).
        """
        rows, out = self.rows, []
        for i, reason in enumerate(self.reasons):
            record = {
                "request_id": rows.request_ids[i],
                "ts": int(rows.ts[i]),
                "account_id": rows.account_ids[i],
                "org_id": rows.org_ids[i],
                "embedding": rows.embeddings[i].tolist(),
            }
            if rows.origin is not None and rows.origin.ndim == 2:
                out.append(turned_away_dead_letter(rows, i, reason, source, record))
            else:
                where = "?" if rows.origin is None else str(int(rows.origin[i]))
                out.append(DeadLetter(reason, f"{source}:{where}", record))
        return out


@dataclass
class Admission:
    """What one :meth:`EventTimeGuard.admit` call decided.

    batch : the requests to feed, in the order to feed them (requests confirmed on this
        call, including ones that waited since earlier calls)
    watermarks : (n,) int64, the watermark after each of them (non-decreasing)
    rejected : the requests turned away on this call
    """

    batch: RequestBatch
    watermarks: np.ndarray
    rejected: Rejected


class EventTimeGuard:
    """Admits or rejects requests by event time and keeps one partition's watermark.

    Parameters
    ----------
    config : EventTimeConfig
    """

    def __init__(self, config: EventTimeConfig) -> None:
        self.config = config
        self._watermark: int | None = None
        self._waiting = RequestBatch.empty(0)
        self._vouches: list[set[str]] = []
        """Per waiting request, the other accounts whose requests confirmed its time."""
        self._aside = RequestBatch.empty(0)

    @property
    def watermark(self) -> int | None:
        """The partition's watermark (epoch ms), None until its first time is confirmed."""
        return self._watermark

    @property
    def holding(self) -> int:
        """Requests waiting for confirmation or set aside (not fed yet)."""
        return len(self._waiting) + len(self._aside)

    def state_dict(self) -> dict[str, Any]:
        return {
            "watermark": self._watermark,
            "waiting": self._waiting,
            "vouches": [sorted(v) for v in self._vouches],
            "aside": self._aside,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._watermark = None if state["watermark"] is None else int(state["watermark"])
        self._waiting = state.get("waiting", RequestBatch.empty(0))
        self._vouches = [set(v) for v in state.get("vouches", [])]
        self._aside = state.get("aside", RequestBatch.empty(0))

    def admit(self, batch: RequestBatch) -> Admission:
        """Judge ``batch`` (validated requests in arrival order); returns what to feed and what to reject."""
        run = _Run(self, batch)
        run.scan()
        return run.close()

    def release(self) -> Admission:
        """End of input: feed what waits, in order, within the window; the watermark moves only
        by plain steps (see ``_Run.end``)."""
        run = _Run(self, RequestBatch.empty(0))
        run.end()
        return run.close()


class _Run:
    """One call's work: set-aside, then waiting, then new requests, in one batch indexed by position."""

    def __init__(self, guard: EventTimeGuard, batch: RequestBatch) -> None:
        self.guard = guard
        self.cfg = guard.config
        parts = [b for b in (guard._aside, guard._waiting, batch) if len(b)]
        self.work = RequestBatch.concat(parts, batch.dim) if parts else batch
        self.ts, self.acc = self.work.ts, self.work.account_ids
        na, nw = len(guard._aside), len(guard._waiting)
        self.aside = list(range(na))
        self.waiting = list(range(na, na + nw))
        self.vouches = {r: set(v) for r, v in zip(self.waiting, guard._vouches) if v}
        self.waiting_accounts: dict[str, int] = {}  # account -> waiting rows of it
        for r in self.waiting:
            self._count(r, 1)
        self.first_new = na + nw
        self.fed: list[np.ndarray] = []
        self.marks: list[np.ndarray] = []
        self.rejected: list[int] = []
        self.reasons: list[str] = []

    # ------------------------------------------------------------------ scan

    def scan(self) -> None:
        k, n = self.first_new, len(self.ts)
        while k < n:
            if self.guard._watermark is not None and self._simple_waiting(k):
                k += self._fast(k)
                if k >= n:
                    break
            self._arrive(k)
            k += 1

    def end(self) -> None:
        """Nothing waits past the end of input: a plain step nobody contradicted is taken as
        confirmed, anything else inside the window is fed without moving the watermark, the rest
        is rejected."""
        cfg = self.cfg
        contradicted = set(self.aside)
        for r in self.waiting + self.aside:
            t, w = int(self.ts[r]), self.guard._watermark
            if w is None or (t <= w + cfg.step_ms and r not in contradicted):
                self._feed(r, confirmed=True)
            elif t <= w + cfg.ahead_ms:
                self._feed(r, confirmed=False)
            else:
                self._reject(r, self._ahead_reason(t, w, "and no other account confirmed it before the input ended"))
        self.waiting, self.aside, self.vouches, self.waiting_accounts = [], [], {}, {}

    def close(self) -> Admission:
        guard = self.guard
        guard._waiting = self.work.take(np.asarray(self.waiting, dtype=np.int64))
        guard._vouches = [self.vouches.get(r, set()) for r in self.waiting]
        guard._aside = self.work.take(np.asarray(self.aside, dtype=np.int64))
        index = np.concatenate(self.fed) if self.fed else np.empty(0, np.int64)
        marks = np.concatenate(self.marks) if self.marks else np.empty(0, np.int64)
        rejected = Rejected(self.work.take(np.asarray(self.rejected, dtype=np.int64)), self.reasons)
        return Admission(self.work.take(index), marks, rejected)

    # ------------------------------------------------------- the plain case

    def _simple_waiting(self, k: int) -> bool:
        """Whether the vectorised path may start at row k: nothing waits but a run of one account
        with no confirmation yet, and row k could confirm it."""
        if not self.waiting:
            return True
        return len(self.waiting_accounts) == 1 and not self.vouches and self.acc[k] not in self.waiting_accounts

    def _count(self, r: int, delta: int) -> None:
        account = self.acc[r]
        left = self.waiting_accounts.get(account, 0) + delta
        if left:
            self.waiting_accounts[account] = left
        else:
            del self.waiting_accounts[account]

    def _fast(self, k: int) -> int:
        """Feed, in one go, the requests from row k (the waiting run first) that the rule plainly confirms.

        The rule, on a run of rows where it only ever confirms: each row of one account
        arrives (in range, not too far behind) and waits until the first row of the next
        account's run arrives and confirms it (is at most step_ms earlier, and the row was
        a step of at most step_ms); then the run is fed in order and the watermark is the
        running maximum. This feeds every run up to the last one that is not plainly
        confirmed, or that would bring the watermark to a row set aside; the rule takes
        over from that run's first row, with nothing waiting, as it would. Returns the
        number of new rows consumed.
        """
        cfg, w = self.cfg, self.guard._watermark
        assert w is not None
        nw = len(self.waiting)
        seq = np.concatenate([np.asarray(self.waiting, dtype=np.int64), np.arange(k, len(self.ts), dtype=np.int64)])
        t, a = self.ts[seq], self.acc[seq]
        m = seq.size
        before = np.maximum.accumulate(np.concatenate([[w], t[:-1]]))  # the watermark as each row's turn comes
        needs = t > before
        starts = np.flatnonzero(a[1:] != a[:-1]) + 1  # rows where the account changes
        runs = np.concatenate([[0], starts])
        next_other = np.full(m, m, dtype=np.int64)  # the first row of the next run (m: none yet)
        following = np.searchsorted(starts, np.arange(m), side="right")
        has = following < starts.size
        next_other[has] = starts[following[has]]
        arrives = np.ones(m, dtype=bool)  # the waiting rows have arrived already
        new = t[nw:]
        arrives[nw:] = (new >= cfg.floor_ms) & (new <= cfg.ceiling_ms) & (new >= before[nw:] - cfg.behind_ms)
        j = np.minimum(next_other, m - 1)
        confirmed = (next_other < m) & arrives[j] & (t[j] >= t - cfg.step_ms) & (t <= before + cfg.step_ms)
        ok = arrives & (~needs | confirmed)
        first_bad = int(np.argmin(ok)) if not ok.all() else m
        cut = int(runs[np.searchsorted(runs, first_bad, side="right") - 1])  # the run the rule takes over
        after = np.maximum(before, t)
        if self.aside and cut > 0:
            reach = np.flatnonzero(after[:cut] >= int(self.ts[self.aside].min()))
            if reach.size:  # the rule releases rows set aside once that run is fed
                cut = int(runs[np.searchsorted(runs, reach[0], side="right")])
        if cut == 0:
            return 0
        self.fed.append(seq[:cut])
        self.marks.append(after[:cut])
        self.guard._watermark = int(after[cut - 1])
        self.waiting, self.vouches, self.waiting_accounts = [], {}, {}
        return cut - nw

    # ---------------------------------------------------------------- the rule

    def _arrive(self, k: int) -> None:
        cfg, w = self.cfg, self.guard._watermark
        t, account = int(self.ts[k]), self.acc[k]
        if not cfg.floor_ms <= t <= cfg.ceiling_ms:
            self._reject(k, f"{REASON_RANGE}: ts={t} is not between {cfg.floor_ms} and {cfg.ceiling_ms} (epoch ms)")
            return
        if w is not None and t < w - cfg.behind_ms:
            self._reject(k, f"{REASON_BEHIND}: ts={t} is {(w - t) / _HOUR_MS:.1f} h behind the partition's watermark "
                            f"{w} (limit {cfg.behind_ms / _HOUR_MS:g} h)")
            return
        if self.waiting and (len(self.waiting_accounts) > 1 or account not in self.waiting_accounts):
            current = w is None or t >= w - cfg.step_ms  # a straggler says nothing about the present
            still = []
            for r in self.waiting:
                if self.acc[r] == account or self._releasable(r):
                    still.append(r)
                elif t >= int(self.ts[r]) - cfg.step_ms:
                    self.vouches.setdefault(r, set()).add(account)
                    still.append(r)
                elif current:  # another account says time is not there yet
                    self.vouches.pop(r, None)
                    self._count(r, -1)
                    self._set_aside(r)
                else:
                    still.append(r)
            self.waiting = still
        self.waiting.append(k)
        self._count(k, 1)
        self._drain()

    def _releasable(self, r: int) -> bool:
        w, t = self.guard._watermark, int(self.ts[r])
        if w is not None and t <= w:
            return True
        needed = 1 if w is not None and t <= w + self.cfg.step_ms else self.cfg.jump_confirmations
        return len(self.vouches.get(r, ())) >= needed

    def _drain(self) -> None:
        while self.waiting and (self._releasable(self.waiting[0]) or len(self.waiting) > HOLD_LIMIT):
            r = self.waiting.pop(0)
            self.vouches.pop(r, None)
            self._count(r, -1)
            self._feed(r, confirmed=True)
        self._check_aside()

    def _set_aside(self, r: int) -> None:
        w = self.guard._watermark
        if w is not None and int(self.ts[r]) > w + self.cfg.ahead_ms:
            self._reject(r, self._ahead_reason(int(self.ts[r]), w, "and no other account confirms it"))
        else:
            self.aside.append(r)

    def _check_aside(self) -> None:
        w = self.guard._watermark
        if w is None or not self.aside:
            return
        still = []
        for r in self.aside:
            t = int(self.ts[r])
            if t <= w:
                self._feed(r, confirmed=False)  # the watermark reached it on others' word
            elif t > w + self.cfg.ahead_ms:
                self._reject(r, self._ahead_reason(t, w, "and no other account confirms it"))
            else:
                still.append(r)
        if len(still) > HOLD_LIMIT:
            furthest = max(still, key=lambda r: (int(self.ts[r]), r))
            still.remove(furthest)
            self._reject(furthest, self._ahead_reason(int(self.ts[furthest]), w, "and too many requests wait ahead"))
        self.aside = still

    def _feed(self, r: int, confirmed: bool) -> None:
        t, w = int(self.ts[r]), self.guard._watermark
        if confirmed:
            w = t if w is None else max(w, t)
            self.guard._watermark = w
        self.fed.append(np.array([r], dtype=np.int64))
        self.marks.append(np.array([w], dtype=np.int64))

    def _reject(self, r: int, reason: str) -> None:
        self.rejected.append(r)
        self.reasons.append(reason)

    def _ahead_reason(self, t: int, w: int | None, why: str) -> str:
        lead = "" if w is None else f" is {(t - w) / _HOUR_MS:.1f} h ahead of the partition's watermark {w}"
        return f"{REASON_AHEAD}: ts={t}{lead} (limit {self.cfg.ahead_ms / _HOUR_MS:g} h) {why}"
