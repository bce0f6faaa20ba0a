"""An account judged against its own history, not only against the population.

A reseller or a product account whose end users mirror the population, and
which starts a sweep in a tenth of its traffic, stays near the population's
mix as a whole: against the population its ``sweep_z`` is about 1. Against
its own past it changed. Each heavy account's topic histogram is frozen once,
as of its ``baseline_requests``-th request; what it sent since (the live
histogram less the frozen one, both decayed alike) is compared with that past:

``drift_z``
    The rise of the mean surprisal (``-log p`` of the population's mix) from
    the frozen part to the recent part, over its standard error: the account's
    own spread of surprisal and the Kish effective sizes of both parts. About
    standard normal for an account whose mix does not change (its requests are
    independent picks from its own mix, as a product's end users are).
``drift_topics``
    The effective number of topics (inverse Simpson) of what the recent mix has
    in excess of the old one. A sweep adds many topics; a user who moves on to a
    new project, with a large ``drift_z`` over few requests repeated, adds a few.

Only the heavy accounts keep a history (one ``T``-float row each), so state
grows with them, not with every account seen. A sweep that starts with an
account's first requests is part of its history: the population test is left
to see it.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from streamguard.detectors.state import Stateful

DRIFT_FEATURES = ("drift_z", "drift_effect", "drift_topics")


class OwnHistory(Stateful):
    """Frozen topic histograms of the accounts that reached ``baseline_requests`` (0: none).

    ``slots`` (sorted) hold a history; ``hist`` (k, T) float32, ``w``/``w2`` (k,) float64 are
    their histograms and decay weight sums as of the freezing request, in the coverage
    detector's weight basis (rescaled with it, :meth:`rescale`).
    """

    _state_fields = ("baseline_requests", "slots", "hist", "w", "w2")

    def __init__(self, topics: int, baseline_requests: int) -> None:
        self.baseline_requests = int(baseline_requests)
        self.slots = np.zeros(0, dtype=np.int64)
        self.hist = np.zeros((0, int(topics)), dtype=np.float32)
        self.w = np.zeros(0, dtype=np.float64)
        self.w2 = np.zeros(0, dtype=np.float64)

    def __len__(self) -> int:
        return int(self.slots.size)

    def rows_of(self, slots: np.ndarray) -> np.ndarray:
        """(m,) int64: each slot's row, -1 for an account without a history."""
        at = np.searchsorted(self.slots, slots)
        found = at < self.slots.size
        found[found] = self.slots[at[found]] == slots[found]
        return np.where(found, at, -1)

    def rescale(self, factor: float) -> None:
        self.hist *= np.float32(factor)
        self.w *= factor
        self.w2 *= factor * factor

    def freeze(
        self,
        slots: np.ndarray,
        k: np.ndarray,
        topics: np.ndarray,
        weights: np.ndarray,
        live: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
    ) -> None:
        """Freeze the history of every account of the batch that reached ``baseline_requests``.

        ``slots``, ``k`` (the request's number in its account), ``topics``, ``weights``: the
        batch, already counted into the live histograms; ``live(new)`` gives the live rows
        (float64) and weight sums of the accounts ``new``. The history is taken as of the
        freezing request (the batch's later requests of the account taken back out), so the
        same stream gives the same history however it is cut into batches.
        """
        size = self.baseline_requests
        if size <= 0:
            return
        due = (k >= size) & (self.rows_of(slots) < 0)
        new = np.unique(slots[due])
        if new.size == 0:
            return
        # Each account's first request at or past the size: the size itself, but for an account
        # already past it when histories were first kept (a snapshot from an older version).
        at = np.searchsorted(new, slots[due])
        cut = np.full(new.size, np.iinfo(np.int64).max)
        np.minimum.at(cut, at, k[due])
        rows, w, w2 = live(new)
        mine = np.flatnonzero(due)
        later = mine[k[mine] > cut[at]]
        where = np.searchsorted(new, slots[later])
        np.subtract.at(rows, (where, topics[later]), weights[later])
        np.subtract.at(w, where, weights[later])
        np.subtract.at(w2, where, weights[later] ** 2)
        order = np.argsort(np.concatenate([self.slots, new]), kind="stable")
        self.slots = np.concatenate([self.slots, new])[order]
        self.hist = np.concatenate([self.hist, np.maximum(rows, 0.0).astype(np.float32)])[order]
        self.w = np.concatenate([self.w, w])[order]
        self.w2 = np.concatenate([self.w2, w2])[order]

    def forget(self, slots: np.ndarray) -> None:
        """Drop the histories of ``slots`` (evicted accounts: a slot's next account starts afresh)."""
        keep = ~np.isin(self.slots, slots)
        if keep.all():
            return
        self.slots, self.hist, self.w, self.w2 = self.slots[keep], self.hist[keep], self.w[keep], self.w2[keep]

    def drift(
        self, slots: np.ndarray, live: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]],
        surprisal: np.ndarray, surprisal_sd: float,
    ) -> dict[str, np.ndarray]:
        """``drift_z``, ``drift_effect`` (the rise in population sds) and ``drift_topics`` of ``slots``
        (host float64, (m,)); 0 for an account without a history or with nothing since."""
        out = {name: np.zeros(slots.size) for name in DRIFT_FEATURES}
        rows_of = self.rows_of(slots)
        has = np.flatnonzero(rows_of >= 0)
        if has.size == 0:
            return out
        now, w_all, w2_all = live(slots[has])
        past = self.hist[rows_of[has]].astype(np.float64)
        w_old, w2_old = self.w[rows_of[has]], self.w2[rows_of[has]]
        recent = np.maximum(now - past, 0.0)
        w_new, w2_new = w_all - w_old, w2_all - w2_old
        ok = (w_new > 0) & (w2_new > 0) & (w_old > 0) & (w2_old > 0)
        w_new, w2_new = np.where(ok, w_new, 1.0), np.where(ok, w2_new, 1.0)
        w_old, w2_old = np.where(ok, w_old, 1.0), np.where(ok, w2_old, 1.0)
        rise = recent @ surprisal / w_new - past @ surprisal / w_old
        # The account's own spread of surprisal: what one pick varies by, for this account. Floored:
        # an account of one topic has none, and the rounding of its two means is no rise.
        total = np.maximum(now.sum(axis=1), 1e-300)
        mean = now @ surprisal / total
        var = np.maximum(now @ surprisal**2 / total - mean**2, 1e-6)
        z = rise / np.sqrt(var * (w2_new / w_new**2 + w2_old / w_old**2))
        excess = np.maximum(recent / w_new[:, None] - past / w_old[:, None], 0.0)
        mass = excess.sum(axis=1)
        topics = np.where(mass > 0, mass**2 / np.maximum((excess**2).sum(axis=1), 1e-300), 0.0)
        out["drift_z"][has] = np.where(ok, z, 0.0)
        out["drift_effect"][has] = np.where(ok, rise / surprisal_sd, 0.0)
        out["drift_topics"][has] = np.where(ok, topics, 0.0)
        return out
