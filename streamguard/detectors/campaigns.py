"""Campaigns: many accounts, one actor.

A campaign spreads its work over many small accounts, each covering a slice
of the space and each below every per-account threshold, but the members
share templates. A template is a component common to every request it
shapes, whatever the topic, so it survives in what is left of a request once
its topic is removed. The coverage detector keeps, per account, the decayed
mean of that residual (its *style*); this detector projects styles to a few
dimensions, links accounts whose styles point the same way, and scores each
linked group as one actor on its combined topic histogram.

Three rules keep benign accounts out:

- a style must stand out of its own noise (``style_snr``): the mean of ``n``
  unrelated residuals has squared norm ``E|r|^2 / n``; accounts with no
  consistent style are never linked;
- a link needs a cosine far beyond chance for random directions in ``p``
  dimensions (``link_z / sqrt(p)``), a threshold set by the projection, not by
  the embedding model;
- a group must *divide* its work: its effective number of topics must exceed
  its typical member's several times (``complementarity``). Several accounts
  running the same benchmark share a template, but each covers the same
  ground, so their union is no broader than one of them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import numpy as np

from streamguard.backends.base import Backend
from streamguard.detectors.coverage import CoverageDetector
from streamguard.detectors.state import Stateful


@dataclass
class Campaign:
    """A linked group of accounts at one moment.

    members : (m,) int64 slots; campaign_id : stable while the group persists
    stats : the group's coverage statistics as one actor (floats)
    """

    campaign_id: str
    members: np.ndarray
    stats: dict[str, float]


def make_style_projection(dim: int, dims: int, seed: int) -> np.ndarray:
    """(dim, dims) float32 Gaussian projection scaled to preserve norms."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim, dims)) / math.sqrt(dims)).astype(np.float32)


class CampaignDetector(Stateful):
    """Account linking by style, and group statistics. State: campaign ids per slot.

    Parameters
    ----------
    backend : the array backend
    projection : (d, p) float32 style projection
    style_snr, link_z, min_group, complementarity : see the module docstring
    link_min_requests : accounts with fewer requests are not linked
    max_link_accounts : the strongest styles considered per linking pass
    capacity : initial number of account slots
    """

    _state_fields = ("capacity", "campaign_of")

    def __init__(
        self,
        backend: Backend,
        projection: np.ndarray,
        style_snr: float = 4.0,
        link_z: float = 6.0,
        min_group: int = 3,
        complementarity: float = 2.0,
        link_min_requests: int = 50,
        max_link_accounts: int = 5000,
        capacity: int = 4096,
    ) -> None:
        self.backend = backend
        self.projection = np.asarray(projection, dtype=np.float32)
        self.style_snr = float(style_snr)
        self.link_z = float(link_z)
        self.min_group = int(min_group)
        self.complementarity = float(complementarity)
        self.link_min_requests = int(link_min_requests)
        self.max_link_accounts = int(max_link_accounts)
        self.capacity = int(capacity)
        self.dims = int(projection.shape[1])
        self.campaign_of = np.full(capacity, "", dtype=object)

    # ------------------------------------------------------------ state layout

    def resize(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.campaign_of = np.concatenate([self.campaign_of, np.full(extra, "", dtype=object)])
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        self.campaign_of[slots] = ""

    def state_bytes_per_account(self) -> int:
        return 8

    # ----------------------------------------------------------------- linking

    def link(self, coverage: CoverageDetector, seen: np.ndarray, active: np.ndarray) -> list[Campaign]:
        """Link accounts by style, group them and score each group on its combined histogram.

        Parameters
        ----------
        coverage : the coverage detector (histograms and decay sums)
        seen : (S,) int64 requests per slot
        active : (a,) int64 slots of live accounts
        """
        from scipy.sparse import coo_matrix  # noqa: PLC0415 - linking runs every few batches
        from scipy.sparse.csgraph import connected_components  # noqa: PLC0415

        if coverage.residual_count == 0:
            return []
        candidates = active[seen[active] >= self.link_min_requests]
        if candidates.size < self.min_group:
            return []
        w = coverage.w_sum[candidates]
        w2 = coverage.w2_sum[candidates]
        n_eff = np.where(w2 > 0, w * w / np.where(w2 > 0, w2, 1.0), 0.0)
        style = self.backend.to_host(coverage.style_sum[self.backend.asarray(candidates)]).astype(np.float64)
        means = (style @ self.projection) / np.maximum(w, 1e-300)[:, None]
        # A random projection keeps |r|^2 on average, so the noise floor is the mean residual energy / n.
        noise = (coverage.residual_sq_sum / coverage.residual_count) / np.maximum(n_eff, 1.0)
        snr = (means.astype(np.float64) ** 2).sum(axis=1) / noise
        strong = snr >= self.style_snr
        candidates, means, snr = candidates[strong], means[strong], snr[strong]
        if candidates.size > self.max_link_accounts:
            keep = np.argsort(-snr, kind="stable")[: self.max_link_accounts]
            keep.sort()
            candidates, means = candidates[keep], means[keep]
        if candidates.size < self.min_group:
            return []
        unit = (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        cosine = unit @ unit.T
        threshold = self.link_z / math.sqrt(self.dims)
        i, j = np.nonzero(cosine >= threshold)
        upper = i < j
        i, j = i[upper], j[upper]
        if i.size == 0:
            return []
        graph = coo_matrix((np.ones(i.size), (i, j)), shape=(candidates.size, candidates.size))
        count, labels = connected_components(graph, directed=False)
        sizes = np.bincount(labels, minlength=count)
        campaigns = []
        for label in np.flatnonzero(sizes >= self.min_group):
            members = np.sort(candidates[labels == label])
            stats = self.group_stats(coverage, members)
            if stats["complementarity"] < self.complementarity:
                continue
            campaigns.append(Campaign(self._campaign_id(members), members, stats))
        return campaigns

    def group_stats(self, coverage: CoverageDetector, members: np.ndarray) -> dict[str, float]:
        """Coverage statistics of the group as one actor, plus how it divides the work."""
        member_stats = coverage.account_stats(members)
        group = coverage.group_stats(members)
        group["members"] = float(members.size)
        group["complementarity"] = group["effective_topics"] / max(float(np.median(member_stats["effective_topics"])), 1.0)
        return group

    def _campaign_id(self, members: np.ndarray) -> str:
        """Reuse the id most members already carry, so a growing group keeps its name."""
        known = [c for c in self.campaign_of[members] if c]
        if known:
            values, counts = np.unique(np.asarray(known, dtype=object), return_counts=True)
            campaign_id = str(values[np.argmax(counts)])
        else:
            digest = hashlib.sha256(np.asarray(members, dtype=np.int64).tobytes()).hexdigest()[:12]
            campaign_id = f"campaign-{digest}"
        self.campaign_of[members] = campaign_id
        return campaign_id
