"""Attribute groups: the accounts that share a request attribute value, judged as one actor.

Accounts that share a request attribute value (a network prefix, a payment
instrument, a client fingerprint: see ``streamguard/attributes.py``) form a
group of their own, judged like any other: the accounts behind one proxy or
paid with one card, and the share of the live accounts that hold the value
(its rarity) in the evidence. Sharing is not guilt (an office shares a
network prefix, a household a card); the group is alerted only if, taken as
one actor, it sweeps beyond what any group of as many live accounts does:
its ``sweep_z`` is counted in deviations above the median of random groups
of its size drawn from the live accounts (``null_sweep_z``, ``null_sweep_sd``),
so a common value whose holders are a sample of a stream rich in distillers,
or three server accounts of one cloud range, is no campaign. Each
member weighs at most the median member (a crowd behind one prefix with a few
heavy sweepers in it is no campaign either). A value held by more than
``attribute_max_share`` of the live accounts (a carrier's NAT, a popular SDK)
is not looked at.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

import numpy as np

from streamguard.attributes import KEY_NAMES, key_of
from streamguard.detectors.coverage import CoverageDetector
from streamguard.detectors.timing import push_ring

if TYPE_CHECKING:
    from streamguard.detectors.campaigns import Campaign
    from streamguard.detectors.remote import ForeignView

HEAVIER_THAN_PEERS = 4.0
"""An attribute group leaves out members with more than this many times its median member's requests.
A ratio of volumes, not a unit of the embedding or the stream: the same on any world."""


class AttributeGroups:
    """Mixed into :class:`~streamguard.detectors.campaigns.CampaignDetector`: reads and writes the
    attribute state its ``__init__`` sets (``attr_tokens``, ``attr_next``, ``key_names``, ``org_of``) and
    its parameters (``min_group``, ``complementarity``, ``attribute_max_share``, ``attribute_min_group``,
    ``max_attribute_groups``, ``group_line``, ``null_groups``), and calls its ``group_stats`` and
    ``edge_weights`` (the shared-prompt edges)."""

    def _remember_attributes(self, slots: np.ndarray, attributes: np.ndarray) -> None:
        """Add each account's new distinct tokens to its ring (the oldest token makes room)."""
        rows, cols = np.nonzero(attributes)
        if rows.size == 0:
            return
        pair_slot, token = slots[rows].astype(np.int64), attributes[rows, cols]
        for code in np.unique(key_of(token)).tolist():
            if code not in self.key_names and len(self.key_names) < 256:
                self.key_names[code] = KEY_NAMES.get(code, f"key{code}")
        # Distinct (slot, token) pairs, in order of first appearance.
        keys = np.stack([pair_slot.astype(np.uint64), token], axis=1)
        _, first = np.unique(keys, axis=0, return_index=True)
        first.sort()
        pair_slot, token = pair_slot[first], token[first]
        known = (self.attr_tokens[pair_slot] == token[:, None]).any(axis=1)
        pair_slot, token = pair_slot[~known], token[~known]
        if pair_slot.size == 0:
            return
        push_ring(self.attr_tokens, self.attr_next, pair_slot, token)

    def _attribute_groups(
        self,
        coverage: CoverageDetector,
        seen: np.ndarray,
        active: np.ndarray,
        now_ts: int,
        excluded: np.ndarray | None,
        found: list[Campaign],
        cross_dups: np.ndarray | None,
        foreign: ForeignView | None = None,
    ) -> list[Campaign]:
        """The live accounts that share an attribute value, one group per value, each judged as one actor.

        Every live account counts (a hydra's members may be small); a value held by more than
        ``attribute_max_share`` of them is infrastructure and skipped. A group smaller than
        ``attribute_min_group``, that does not divide its work, or whose members already form a linked group
        of this pass, is left out. The largest groups are judged first, ``max_attribute_groups``
        of them at most.

        ``foreign``: live accounts of other partitions (detectors/remote.py). Those holding a value held
        here count toward the group's size (``attribute_min_group``; the heavier-than-peers rule applies
        to them too), and the share is read here only (sharding by account is a random sample). The
        group is judged on its members of this partition, at least ``min_group`` of them: what the
        others sweep is known only where they live, and they are alerted there.
        """
        from streamguard.detectors.campaigns import Campaign  # noqa: PLC0415 - campaigns.py imports this module

        if self.attribute_max_share <= 0 or active.size < self.min_group:
            return []
        holders = active[seen[active] > 0]
        if excluded is not None:
            holders = holders[~excluded[holders]]
        tokens = self.attr_tokens[holders]
        rows, cols = np.nonzero(tokens)
        if rows.size == 0:
            return []
        owner, token = holders[rows], tokens[rows, cols]
        values, inverse, counts = np.unique(token, return_inverse=True, return_counts=True)
        share = counts / float(max(active.size, 1))
        sizes = counts
        if foreign is not None:
            # Foreign holders of the values held here: (value index, foreign row).
            f_rows, f_cols = np.nonzero(foreign.tokens)
            f_token = foreign.tokens[f_rows, f_cols]
            f_value = np.minimum(np.searchsorted(values, f_token), values.size - 1)
            held = values[f_value] == f_token
            f_rows, f_value = f_rows[held], f_value[held]
            f_order = np.argsort(f_value, kind="stable")
            f_rows, f_value = f_rows[f_order], f_value[f_order]
            sizes = counts + np.bincount(f_value, minlength=values.size)
        candidates = np.flatnonzero((sizes >= self.attribute_min_group) & (share <= self.attribute_max_share))
        if candidates.size == 0:
            return []
        candidates = candidates[np.argsort(-sizes[candidates], kind="stable")][: self.max_attribute_groups]
        order = np.argsort(inverse, kind="stable")
        bounds = np.r_[0, np.cumsum(counts)]
        known = [frozenset(c.members.tolist()) for c in found]
        pairs = self.edge_weights(now_ts)
        groups = []
        for value in candidates.tolist():
            members = np.unique(owner[order[bounds[value] : bounds[value + 1]]])
            # An actor spreads its work over accounts alike; one many times heavier than the group's
            # median is another kind of customer on the same network or card (a reseller on a cloud
            # range), judged on its own.
            others = 0
            if foreign is None:
                members = members[seen[members] <= HEAVIER_THAN_PEERS * np.median(seen[members])]
                size = members.size
            else:
                lo, hi = np.searchsorted(f_value, [value, value + 1])
                f_seen = foreign.seen[np.unique(f_rows[lo:hi])]
                median = np.median(np.r_[seen[members], f_seen])
                members = members[seen[members] <= HEAVIER_THAN_PEERS * median]
                others = int(np.count_nonzero(f_seen <= HEAVIER_THAN_PEERS * median))
                size = members.size + others
                if members.size < self.min_group:
                    continue
            if size < self.attribute_min_group or frozenset(members.tolist()) in known:
                continue
            stats = self.group_stats(coverage, members, balanced=True)
            if stats["complementarity"] < self.complementarity:
                continue
            stats["null_sweep_z"], stats["null_sweep_sd"] = 0.0, 1.0
            if stats["sweep_z"] >= self.group_line:
                null = self._null_sweep_z(coverage, holders, members.size, int(values[value]))
                stats["null_sweep_z"], stats["null_sweep_sd"] = null
                stats["sweep_z"] = (stats["sweep_z"] - null[0]) / null[1]
            code = int(key_of(values[value : value + 1])[0])
            stats["links_attribute"] = float(size * (size - 1) // 2)
            if others:
                stats["links_other_partitions"] = float(others)
            stats["attribute_share"] = float(share[value])
            stats["orgs"] = float(len(set(o for o in self.org_of[members].tolist() if o)))
            if cross_dups is not None:
                # Only the prompts the members share with each other: a crowd behind one network prefix
                # shares famous prompts and benchmark items with the whole stream, no work among itself.
                stats["cross_rate"] = self._shared_within(pairs, members) / max(float(seen[members].sum()), 1.0)
            # Named by the value's token (never the value): stable while the value is shared.
            digest = hashlib.sha256(int(values[value]).to_bytes(8, "little")).hexdigest()[:12]
            groups.append(Campaign(f"campaign-{self.key_names.get(code, f'key{code}')}-{digest}", members, stats))
            known.append(frozenset(members.tolist()))
        return groups

    @staticmethod
    def _shared_within(pairs: tuple[np.ndarray, np.ndarray, np.ndarray], members: np.ndarray) -> float:
        """Prompts shared between two members of ``members``: the edges' (decayed) weight inside the group."""
        lo, hi, weight = pairs
        return float(weight[np.isin(lo, members) & np.isin(hi, members)].sum())

    def _null_sweep_z(self, coverage: CoverageDetector, holders: np.ndarray, size: int, seed: int) -> tuple[float, float]:
        """Median (0 at most: never a bonus) and spread (1 at least) of ``sweep_z`` over random groups
        of ``size`` live accounts.

        The spread is the draws' standard deviation, never below the statistic's own null
        deviation of 1: a small group's random draws scatter widely when a few heavy sweepers can
        fall into them. The generator is seeded by the value's token, so the same stream gives
        the same draws (replay, run and a restart agree).
        """
        if holders.size <= size:
            return 0.0, 1.0
        rng = np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32, size])
        draws = [
            coverage.group_stats(rng.choice(holders, size, replace=False), balanced=True)["sweep_z"]
            for _ in range(self.null_groups)
        ]
        return max(float(np.median(draws)), 0.0), max(float(np.std(draws, ddof=1)), 1.0)

    def null_breadth(
        self, coverage: CoverageDetector, pool: np.ndarray, size: int, seed: int, balanced: bool = False
    ) -> float:
        """Median effective number of topics of random groups of ``size`` accounts drawn from ``pool``.

        How broad ``size`` accounts of this stream are together, whoever they are: the line a
        linked group's breadth is judged against. A campaign divides the space and covers more of it
        than as many random accounts; an enterprise org, a team or a family of accounts behind one
        card asks about its own field together, and covers less. Seeded by ``seed`` (the group's
        id), so replay, run and a restart agree.
        """
        if pool.size <= size:
            return 0.0
        rng = np.random.default_rng([seed & 0xFFFFFFFF, seed >> 32, size])
        draws = [
            coverage.group_stats(rng.choice(pool, size, replace=False), balanced=balanced)["effective_topics"]
            for _ in range(self.null_groups)
        ]
        return float(np.median(draws))
