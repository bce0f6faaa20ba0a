"""Campaigns: many accounts, one actor.

A campaign spreads its work over many small accounts, each covering a slice
of the space and each below every per-account threshold, but the members
share templates. A template is a component common to every request it
shapes, whatever the topic, so it survives in what is left of a request once
its topic is removed. The coverage detector keeps, per account, the decayed
mean of that residual (its *style*); this detector projects styles to a few
dimensions, links accounts whose styles point the same way, and scores each
linked group as one actor on its combined topic histogram.

Styles are one of three kinds of link:

- **style**: the accounts' mean topic residuals point the same way (a shared
  template, even when no two prompts are alike);
- **shared prompts**: the accounts sent near-duplicates of each other's
  prompts (the cross-account hits of the near-duplicate detector). Each hit
  adds 1 to the pair's edge weight, which halves every
  ``edge_half_life_hours``; a pair is linked at ``shared_prompt_links``, so
  two accounts that once sent the same popular prompt are not;
- **org**: the accounts bill to the same ``org_id``. A company has many
  employees, so an org alone never makes one actor; it lowers the bar of the
  other two links instead: styles of the same org link at ``org_link_z``, and
  one shared prompt links two accounts of the same org.

Accounts that share a request attribute value form groups of their own: see
``streamguard/detectors/attribute_groups.py``.

Four rules keep benign accounts out:

- a member needs links to at least ``min_links`` others of its group: a
  benign account whose personal template happens to point like a campaign's,
  or that once resent one of its prompts, is attached by a single link;

- a style must stand out of its own noise (``style_snr``): the mean of ``n``
  unrelated residuals has squared norm ``E|r|^2 / n``; accounts with no
  consistent style are never linked;
- a link needs a cosine far beyond chance for random directions in ``p``
  dimensions (``link_z / sqrt(p)``), a threshold set by the projection, not by
  the embedding model;
- a group must *divide* its work: its effective number of topics, or the
  number of distinct topics it touched, must exceed its typical member's
  several times (``complementarity``). Several accounts running the same
  benchmark share a template, but each covers the same ground, so their union
  is no broader than one of them.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field

import numpy as np

from streamguard.backends.base import Backend
from streamguard.detectors.attribute_groups import HEAVIER_THAN_PEERS, AttributeGroups  # noqa: F401 - HEAVIER_THAN_PEERS: importable here too
from streamguard.detectors.coverage import CoverageDetector
from streamguard.detectors.remote import ForeignView
from streamguard.detectors.shared_prompt_edges import SharedPromptEdges
from streamguard.detectors.state import Stateful
from streamguard.detectors.timing import NO_BOUNDARY, SessionTiming


@dataclass
class Campaign:
    """A linked group of accounts at one moment.

    members : (m,) int64 slots; campaign_id : stable while the group persists
    stats : the group's coverage statistics as one actor (floats)
    joined : the members that joined by style alone, under ``link_min_requests`` or with a style
        under ``style_snr`` (see :meth:`CampaignDetector._attach_unlinked`); judged and alerted with
        the group, but the mix every account is judged against leaves out only the accounts the
        links made the group of
    """

    campaign_id: str
    members: np.ndarray
    stats: dict[str, float]
    joined: np.ndarray = field(default_factory=lambda: np.empty(0, np.int64))

    def linked(self) -> np.ndarray:
        """The members the links made the group of (``members`` without ``joined``)."""
        return self.members if self.joined.size == 0 else np.setdiff1d(self.members, self.joined)


FOREIGN_BASE = 1 << 31
"""Node ids at and above this stand for accounts of other partitions (see remote.py)."""

STYLE_CHUNK = 16_384
"""Rows of account styles gathered at once when many small accounts are screened (bounded memory)."""

WEAK_STYLE_SHARE = 0.5
"""An account the links left out (a small one, or one whose style is under ``style_snr``) joins a group
on a style of at least this share of ``style_snr``, if it links to ``WEAK_STYLE_LINKS`` of the group's
members (see ``CampaignDetector._attach_unlinked``). Both are ratios
(of the noise line, of the group's size), not values of any one world's geometry."""

WEAK_STYLE_LINKS = 0.75
"""The share of a group's members an account under ``style_snr`` must link to (a small one over it: half)."""

WEAK_STYLE_MIN_REQUESTS = 10
"""... and the requests it must have sent. The noise line is the stream's mean residual energy, and a
handful of requests stands far from any mean: a weak style of so few says little, and screening every
account of 2-9 requests at the weak line took a stream of a million one-off accounts from 34,407 to
20,874 events/s (``scripts/run_at_scale.py``, 2026-12-07). A slow campaign's members send 20 or more."""


def make_style_projection(dim: int, dims: int, seed: int) -> np.ndarray:
    """(dim, dims) float32 Gaussian projection scaled to preserve norms."""
    rng = np.random.default_rng(seed)
    return (rng.standard_normal((dim, dims)) / math.sqrt(dims)).astype(np.float32)


class CampaignDetector(AttributeGroups, Stateful):
    """Account linking by style, and group statistics. State: campaign ids per slot.

    Parameters
    ----------
    backend : the array backend
    projection : (d, p) float32 style projection
    style_snr, link_z, min_group, complementarity : see the module docstring
    link_min_requests : accounts with fewer requests are not linked
    max_link_accounts : the strongest styles considered per linking pass
    shared_prompt_links, shared_prompt_share, edge_half_life_hours : when shared prompts link
    link_orgs, org_link_z : how a shared org lowers the bar of the other links
    min_links : links a member needs inside its group
    style_min_topics : effective topics an account needs before its style may link it
    max_edges : shared-prompt pairs remembered (the weakest are dropped beyond it)
    attribute_max_share : an attribute value held by more of the live accounts is not a link
    attributes_per_account : attribute tokens remembered per account (the latest distinct ones)
    max_attribute_groups : attribute groups judged per linking pass (the largest first)
    attribute_min_group : accounts a shared value needs before its holders are judged as a group
    group_line : the sweep line of a group (pipeline: ``campaign.group_false_alerts_per_10k``): an
        attribute group below it needs no comparison with random groups
    null_groups : random groups drawn per attribute group that crosses ``group_line``
    capacity : initial number of account slots
    """

    _state_fields = (
        "capacity",
        "campaign_of",
        "org_of",
        "edges",
        "foreign_nodes",
        "next_foreign",
        "partnered",
        "attr_tokens",
        "attr_next",
        "key_names",
    )

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
        shared_prompt_links: float = 3.0,
        shared_prompt_share: float = 0.05,
        edge_half_life_hours: float = 24.0,
        link_orgs: bool = True,
        org_link_z: float = 3.0,
        min_links: int = 2,
        style_min_topics: float = 2.0,
        max_edges: int = 1_000_000,
        attribute_max_share: float = 0.25,
        attributes_per_account: int = 4,
        max_attribute_groups: int = 256,
        attribute_min_group: int = 6,
        group_line: float = 3.29,
        null_groups: int = 15,
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
        self.shared_prompt_links = float(shared_prompt_links)
        self.shared_prompt_share = float(shared_prompt_share)
        self.edge_rate = math.log(2.0) / (float(edge_half_life_hours) * 3_600_000.0)
        self.link_orgs = bool(link_orgs)
        self.org_link_z = float(org_link_z) if link_orgs else float(link_z)
        self.min_links = int(min_links)
        self.style_min_topics = float(style_min_topics)
        self.max_edges = int(max_edges)
        self.capacity = int(capacity)
        self.dims = int(projection.shape[1])
        self.campaign_of = np.full(capacity, "", dtype=object)
        self.org_of = np.full(capacity, "", dtype=object)
        # Shared-prompt evidence per pair of nodes. Nodes are slots, or FOREIGN_BASE + n for
        # accounts of other partitions (known by key only).
        self.edges = SharedPromptEdges(self.edge_rate)
        self.foreign_nodes: dict[int, int] = {}
        self.next_foreign = 0
        # Accounts with a shared-prompt link beyond chance at the last link pass: their
        # near-duplicates are shared with particular accounts, not with everyone on a popular topic.
        self.partnered = np.zeros(capacity, dtype=bool)
        self.attribute_max_share = float(attribute_max_share)
        self.max_attribute_groups = int(max_attribute_groups)
        self.attribute_min_group = max(int(attribute_min_group), self.min_group)
        self.group_line = float(group_line)
        self.null_groups = int(null_groups)
        # Each account's latest distinct attribute tokens (0: empty), written round-robin from attr_next.
        self.attr_tokens = np.zeros((capacity, int(attributes_per_account)), dtype=np.uint64)
        self.attr_next = np.zeros(capacity, dtype=np.uint8)
        # Key code -> key name of the attributes seen (names are not secret, values are), kept with
        # the state so a campaign's id names its key the same after a restart.
        self.key_names: dict[int, str] = {}

    # ------------------------------------------------------------ state layout

    def resize(self, capacity: int) -> None:
        extra = capacity - self.capacity
        if extra <= 0:
            return
        self.campaign_of = np.concatenate([self.campaign_of, np.full(extra, "", dtype=object)])
        self.org_of = np.concatenate([self.org_of, np.full(extra, "", dtype=object)])
        self.partnered = np.concatenate([self.partnered, np.zeros(extra, dtype=bool)])
        self.attr_tokens = np.concatenate([self.attr_tokens, np.zeros((extra, self.attr_tokens.shape[1]), np.uint64)])
        self.attr_next = np.concatenate([self.attr_next, np.zeros(extra, dtype=np.uint8)])
        self.capacity = capacity

    def reset(self, slots: np.ndarray) -> None:
        self.campaign_of[slots] = ""
        self.org_of[slots] = ""
        self.partnered[slots] = False
        self.attr_tokens[slots] = 0
        self.attr_next[slots] = 0
        slots = np.asarray(slots, dtype=np.int64)
        if slots.size and len(self.edges):
            # Only slots are reset here: a node of another partition (FOREIGN_BASE + n) is beyond the mask.
            gone = np.zeros(self.capacity, dtype=bool)
            gone[slots] = True
            self.edges.drop_nodes(gone)

    def state_dict(self, exclude: tuple[str, ...] = ()) -> dict:
        state = super().state_dict(exclude=exclude + ("edges",))
        if "edges" not in exclude:
            state["edges"] = self.edges.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        # A snapshot from before partner links has none: the next link pass finds them.
        capacity = int(state.get("capacity", self.capacity))
        defaults = {
            "partnered": np.zeros(capacity, dtype=bool),
            "attr_tokens": np.zeros((capacity, self.attr_tokens.shape[1]), dtype=np.uint64),
            "attr_next": np.zeros(capacity, dtype=np.uint8),
            "key_names": {},
        }
        super().load_state_dict({**defaults, **state, "edges": {}})
        # Sorted arrays; a snapshot of an older version holds a {key: [weight, at]} dict.
        self.edges = SharedPromptEdges.from_state(self.edge_rate, state["edges"])

    def state_bytes_per_account(self) -> int:
        # Campaign id and org references, attribute tokens; edges are counted apart (a few per linked account).
        return 16 + self.attr_tokens.itemsize * self.attr_tokens.shape[1] + 1

    def fixed_state_bytes(self) -> int:
        """Shared-prompt edges and the other partitions' accounts they name (a few per linked account)."""
        return 24 * len(self.edges) + 16 * len(self.foreign_nodes)

    # ---------------------------------------------------------------- evidence

    def observe(
        self,
        slots: np.ndarray,
        ts: np.ndarray,
        cross_slot: np.ndarray,
        org_ids: np.ndarray | None,
        attributes: np.ndarray | None = None,
    ) -> None:
        """Remember who shared prompts with whom, billing orgs and attributes (host arrays, one batch in order).

        Parameters
        ----------
        slots, ts : (n,) int64; cross_slot : (n,) int64, the other account of a cross-account
        near-duplicate or -1; org_ids : (n,) object array of str or None
        attributes : (n, k) uint64 attribute tokens of each request (0: none), or None
        """
        if org_ids is not None:
            has = np.flatnonzero((org_ids != None) & (org_ids != ""))  # noqa: E711 - elementwise on an object array
            if has.size:
                self.org_of[slots[has]] = org_ids[has]
        hit = np.flatnonzero(cross_slot >= 0)
        self._add_edges(slots[hit], cross_slot[hit], ts[hit])
        if attributes is not None:
            self._remember_attributes(slots, attributes)

    def observe_foreign(self, slots: np.ndarray, ts: np.ndarray, foreign_keys: np.ndarray) -> None:
        """Shared prompts between accounts of this partition and accounts of others (see remote.py)."""
        nodes = np.array([self._foreign_node(int(k)) for k in foreign_keys.tolist()], dtype=np.int64)
        self._add_edges(np.asarray(slots, dtype=np.int64), nodes, np.asarray(ts, dtype=np.int64))

    def partnered_of(self, slots: np.ndarray) -> np.ndarray:
        """(m,) bool: the accounts shared prompts with particular accounts beyond chance at the last link pass."""
        return self.partnered[slots]

    def orgs_of(self, slots: np.ndarray) -> np.ndarray:
        """(m,) object: the billing org of each account ("" where unknown)."""
        return self.org_of[slots]

    def _foreign_node(self, key: int) -> int:
        node = self.foreign_nodes.get(key)
        if node is None:
            node = self.foreign_nodes[key] = FOREIGN_BASE + self.next_foreign
            self.next_foreign = (self.next_foreign + 1) % FOREIGN_BASE
        return node

    def _add_edges(self, a: np.ndarray, b: np.ndarray, ts: np.ndarray) -> None:
        # Kept as of the latest time seen (the stream is only mostly ordered): a late hit adds less.
        self.edges.add(a, b, ts)

    def edge_weights(self, now_ts: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Pairs (lo, hi) of slots and their shared-prompt weight decayed to ``now_ts``; drops spent edges."""
        if not len(self.edges):
            empty = np.empty(0, np.int64)
            return empty, empty, np.empty(0)
        weight = self.edges.decayed(now_ts)
        spent = weight < 0.05
        if weight.size - spent.sum() > self.max_edges:
            # Memory stays bounded: the weakest evidence goes first.
            spent |= weight < np.partition(weight, weight.size - self.max_edges)[weight.size - self.max_edges]
        if spent.any():
            self.edges.keep(~spent)
            weight = weight[~spent]
            if self.foreign_nodes:
                referenced = set(self.edges.ends()[1].tolist())
                self.foreign_nodes = {k: n for k, n in self.foreign_nodes.items() if n in referenced}
        lo, hi = self.edges.ends()
        return lo, hi, weight

    # ----------------------------------------------------------------- linking

    def link(
        self,
        coverage: CoverageDetector,
        seen: np.ndarray,
        active: np.ndarray,
        now_ts: int,
        cross_dups: np.ndarray | None = None,
        excluded: np.ndarray | None = None,
        timing: SessionTiming | None = None,
        foreign: ForeignView | None = None,
    ) -> list[Campaign]:
        """Link accounts by style, shared prompts, timing and org; score each group on its combined evidence.

        Parameters
        ----------
        coverage : the coverage detector (histograms and decay sums)
        seen : (S,) int64 requests per slot; cross_dups : (S,) int64 cross-account near-duplicates
        active : (a,) int64 slots of live accounts; now_ts : event time of the linking pass
        excluded : (S,) bool, slots never linked (the allowlist)
        timing : session boundaries (detectors/timing.py), or None: no timing links
        foreign : live accounts of other partitions (detectors/remote.py), or None: they join timing
            links and attribute groups as nodes and members that connect and count, never judged
            or alerted here
        """
        if foreign is not None and len(foreign) == 0:
            foreign = None
        campaigns = self._linked_groups(coverage, seen, active, now_ts, cross_dups, excluded, timing, foreign)
        campaigns.extend(self._attribute_groups(coverage, seen, active, now_ts, excluded, campaigns, cross_dups, foreign))
        if foreign is not None and self.foreign_nodes:
            # Keys named for timing links: kept while an edge refers to them or they are live (bounded
            # by the edges and the foreign table, and a live account keeps its node id).
            referenced = set(self.edges.ends()[1].tolist())
            live = set(foreign.keys.tolist())
            self.foreign_nodes = {k: n for k, n in self.foreign_nodes.items() if n in referenced or k in live}
        return campaigns

    def _linked_groups(
        self,
        coverage: CoverageDetector,
        seen: np.ndarray,
        active: np.ndarray,
        now_ts: int,
        cross_dups: np.ndarray | None,
        excluded: np.ndarray | None,
        timing: SessionTiming | None = None,
        foreign: ForeignView | None = None,
    ) -> list[Campaign]:
        """Connected groups of style, shared-prompt and timing links (see :meth:`link`)."""
        from scipy.sparse import coo_matrix  # noqa: PLC0415 - linking runs every few batches
        from scipy.sparse.csgraph import connected_components  # noqa: PLC0415

        nodes = active[seen[active] >= self.link_min_requests]
        if excluded is not None:
            nodes = nodes[~excluded[nodes]]
        self.partnered[:] = False
        if nodes.size < self.min_group:
            return []
        styled, styles, _ = self._strong_styles(coverage, nodes)
        pairs = [self._style_pairs(styled, styles), self._shared_prompt_pairs(nodes, now_ts, seen, coverage, cross_dups, active)]
        shared = np.concatenate(pairs[1])
        self.partnered[shared[shared < FOREIGN_BASE]] = True
        kinds = ("style", "shared_prompts", "timing")
        timed = (np.empty(0, np.int64),) * 2 + (np.empty(0),)
        if timing is not None:
            timed = timing.pairs(nodes, now_ts, self._foreign_timing(foreign))
        pairs.append(timed[:2])
        i = np.concatenate([p[0] for p in pairs])
        j = np.concatenate([p[1] for p in pairs])
        if i.size == 0:
            return []
        # Vertices: the local nodes, and accounts of other partitions that connect them (timing may
        # link two of those: the first end of a pair is foreign only if both are).
        vertices = np.union1d(nodes, np.r_[i[i >= FOREIGN_BASE], j[j >= FOREIGN_BASE]])
        pi, pj = np.searchsorted(vertices, i), np.searchsorted(vertices, j)
        graph = coo_matrix((np.ones(i.size), (pi, pj)), shape=(vertices.size, vertices.size))
        count, labels = connected_components(graph, directed=False)
        local = vertices < FOREIGN_BASE
        sizes = np.bincount(labels[local], minlength=count)
        link_kind = np.concatenate([np.full(p[0].size, k) for k, p in enumerate(pairs)])
        campaigns = []
        # Distinct neighbours of every vertex: one link alone does not make an account a member.
        lo_v, hi_v = np.minimum(pi, pj), np.maximum(pi, pj)
        distinct = np.unique(lo_v * vertices.size + hi_v)
        degree = np.bincount(np.r_[distinct // vertices.size, distinct % vertices.size], minlength=vertices.size)
        cores = []
        for label in np.flatnonzero(sizes >= self.min_group).tolist():
            members = vertices[(labels == label) & local & (degree >= self.min_links)]
            if members.size >= self.min_group:
                cores.append((label, members))
        unlinked = np.empty(0, np.int64)
        if cores:
            # Every account the links left out: the small ones, and those whose style is too weak to
            # link on its own (a node with a style over the line was linked or not by its own links).
            # One request is one topic, never a style spread over several.
            unlinked = np.setdiff1d(active[seen[active] >= 2], np.concatenate([styled, *(m for _, m in cores)]))
            if excluded is not None:
                unlinked = unlinked[~excluded[unlinked]]
        attached = self._attach_unlinked(coverage, unlinked, [members for _, members in cores])
        for (label, core), joined in zip(cores, attached):
            members = np.union1d(core, joined)
            stats = self.group_stats(coverage, members)
            if stats["complementarity"] < self.complementarity:
                continue
            inside = labels[pi] == label
            for k, name in enumerate(kinds):
                stats[f"links_{name}"] = float(np.count_nonzero(inside & (link_kind == k)))
            timed_inside = inside[link_kind == 2]
            if timed_inside.any():
                # How far beyond chance the group's timing links are (log10 of the Poisson tail, median link).
                stats["timing_log10_chance"] = float(np.median(timed[2][timed_inside]))
            stats["links_other_partitions"] = float(np.count_nonzero((labels == label) & ~local))
            small = seen[joined] < self.link_min_requests
            stats["links_small_members"] = float(np.count_nonzero(small))
            stats["links_weak_members"] = float(np.count_nonzero(~small))
            orgs = self.org_of[members]
            same_org = (i < FOREIGN_BASE) & (j < FOREIGN_BASE)
            same_org[same_org] = self._same_org(i[same_org], j[same_org])
            stats["links_same_org"] = float(np.count_nonzero(inside & same_org))
            stats["orgs"] = float(len(set(orgs[orgs != ""].tolist())))
            if cross_dups is not None:
                stats["cross_rate"] = float(cross_dups[members].sum() / max(seen[members].sum(), 1))
            campaigns.append(Campaign(self._campaign_id(members), members, stats, joined))
        return campaigns

    def _foreign_timing(self, foreign: ForeignView | None) -> tuple[np.ndarray, np.ndarray] | None:
        """(node ids, boundary codes) of the foreign accounts linkable by timing: as many requests as a
        local node needs, and a boundary at least."""
        if foreign is None:
            return None
        rows = np.flatnonzero((foreign.seen >= self.link_min_requests) & (foreign.bounds != NO_BOUNDARY).any(axis=1))
        if rows.size == 0:
            return None
        ids = np.array([self._foreign_node(int(k)) for k in foreign.keys[rows].tolist()], dtype=np.int64)
        return ids, foreign.bounds[rows]

    def _strong_styles(
        self, coverage: CoverageDetector, nodes: np.ndarray, snr_line: float | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The slots of ``nodes`` whose styles stand out of their noise (``snr_line`` times it; default
        ``style_snr``) over more than one topic, their unit style directions and their signal-to-noise
        ratios (the strongest ``max_link_accounts`` at most)."""
        empty = (np.empty(0, np.int64), np.empty((0, self.dims), np.float32), np.empty(0))
        if coverage.residual_count == 0 or nodes.size == 0:
            return empty
        w = coverage.w_sum[nodes]
        w2 = coverage.w2_sum[nodes]
        n_eff = np.where(w2 > 0, w * w / np.where(w2 > 0, w2, 1.0), 0.0)
        style = self.backend.to_host(coverage.style_sum[self.backend.asarray(nodes)]).astype(np.float64)
        means = (style @ self.projection) / np.maximum(w, 1e-300)[:, None]
        # A random projection keeps |r|^2 on average, so the noise floor is the mean residual energy / n.
        noise = (coverage.residual_sq_sum / coverage.residual_count) / np.maximum(n_eff, 1.0)
        snr = (means.astype(np.float64) ** 2).sum(axis=1) / noise
        strong = np.flatnonzero(snr >= (self.style_snr if snr_line is None else snr_line))
        if strong.size == 0:
            return empty
        # A template shapes requests whatever their topic: over about one topic a "style" is just
        # where that topic sits, and would link everyone asking about it.
        spread = coverage.account_stats(nodes[strong])["effective_topics"] >= self.style_min_topics
        strong = strong[spread]
        candidates, means, snr = nodes[strong], means[strong], snr[strong]
        if candidates.size > self.max_link_accounts:
            keep = np.argsort(-snr, kind="stable")[: self.max_link_accounts]
            keep.sort()
            candidates, means, snr = candidates[keep], means[keep], snr[keep]
        unit = (means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)).astype(np.float32)
        return candidates, unit, snr

    def _style_pairs(self, candidates: np.ndarray, unit: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pairs of ``candidates`` (slots whose styles stand out of their noise, see :meth:`_strong_styles`;
        ``unit`` their directions) whose styles point the same way."""
        if candidates.size < 2:
            return np.empty(0, np.int64), np.empty(0, np.int64)
        cosine = unit @ unit.T
        i, j = np.nonzero(cosine >= min(self.link_z, self.org_link_z) / math.sqrt(self.dims))
        upper = i < j
        i, j = candidates[i[upper]], candidates[j[upper]]
        strong = cosine[np.searchsorted(candidates, i), np.searchsorted(candidates, j)] >= self.link_z / math.sqrt(self.dims)
        return i[strong | self._same_org(i, j)], j[strong | self._same_org(i, j)]

    def _style_energy_floor(self, coverage: CoverageDetector, slots: np.ndarray, snr_line: float) -> np.ndarray:
        """The slots whose unprojected style energy reaches two thirds of ``snr_line``: a pass over
        many small accounts (a stream of a million one-off accounts) in bounded chunks, before the
        projection. The Gaussian projection keeps a style's energy on average (see
        :meth:`_strong_styles`), give or take sqrt(2 / style_dims) of it (12.5% at 128 dimensions),
        so an account under two thirds of the line reaches the line itself only where the projection
        adds half to its energy: 4 of those deviations. Pure noise stands at 1 on average (its
        energy is the noise line), so the screen keeps most of it out at any line of 2 or more;
        the residuals of a handful of requests spread far wider (``WEAK_STYLE_MIN_REQUESTS``)."""
        if slots.size == 0 or coverage.residual_count == 0:
            return slots
        mean_energy = coverage.residual_sq_sum / coverage.residual_count
        kept = []
        for start in range(0, slots.size, STYLE_CHUNK):
            part = slots[start : start + STYLE_CHUNK]
            w, w2 = coverage.w_sum[part], coverage.w2_sum[part]
            n_eff = np.where(w2 > 0, w * w / np.where(w2 > 0, w2, 1.0), 0.0)
            rows = self.backend.to_host(coverage.style_sum[self.backend.asarray(part)]).astype(np.float64)
            energy = (rows * rows).sum(axis=1) / np.maximum(w, 1e-300) ** 2
            kept.append(part[energy * np.maximum(n_eff, 1.0) / mean_energy >= snr_line * 2 / 3])
        return np.concatenate(kept)

    def _attach_unlinked(
        self, coverage: CoverageDetector, unlinked: np.ndarray, groups: list[np.ndarray]
    ) -> list[np.ndarray]:
        """The accounts of ``unlinked`` (no group's members: too few requests, or too weak a style, to
        link on their own) that join each group.

        An account under ``link_min_requests`` never makes or bridges a group: a casual user's few
        requests over a few topics can look like a style, and one chance link would pull it in.
        It joins a group that exists without it when its style is as strong as a node's and points
        the way of at least half of the group's members (``min_links`` at least): the members of one
        campaign share its template, so a small member links to most of them, where an account
        near one or two of them by chance does not. A slow campaign's members send 20-115
        requests each; without this only those over ``link_min_requests`` were ever linked.

        A style from a few dozen requests is noisy: a slow campaign's smallest members stand at 2.5-4
        times their noise, under the node line. They join at ``WEAK_STYLE_SHARE`` of it when they
        link to ``WEAK_STYLE_LINKS`` of the members: a member shares the template with all of them
        (its least cosine to a member 0.58-0.79 on a simulated slow campaign), where a casual user
        whose few topics lean the group's way links to half of them at most (measured: median
        cosine 0.51 against a line of 0.53, on written prompts). The same holds for an account
        over ``link_min_requests`` whose style stands under the node line (a campaign's member
        with a weaker share of its templates); with a style over it, it was linked or not by its
        own links.
        """
        joined = [np.empty(0, np.int64) for _ in groups]
        if not groups or unlinked.size == 0:
            return joined
        weak_line = self.style_snr * WEAK_STYLE_SHARE
        enough = coverage.requests[unlinked] >= WEAK_STYLE_MIN_REQUESTS
        screened = np.concatenate([
            self._style_energy_floor(coverage, unlinked[enough], weak_line),
            self._style_energy_floor(coverage, unlinked[~enough], self.style_snr),
        ])
        found, found_unit, found_snr = self._strong_styles(coverage, np.sort(screened), weak_line)
        strong = found_snr >= self.style_snr
        requests = coverage.requests[found]
        keep = np.where(strong, requests < self.link_min_requests, requests >= WEAK_STYLE_MIN_REQUESTS)
        found, found_unit, strong = found[keep], found_unit[keep], strong[keep]
        if found.size == 0:
            return joined
        line = self.link_z / math.sqrt(self.dims)
        best = np.full(found.size, -1, dtype=np.int64)
        best_links = np.zeros(found.size, dtype=np.int64)
        for g, members in enumerate(groups):
            slots, unit, _ = self._strong_styles(coverage, members)
            if slots.size == 0:
                continue
            links = np.count_nonzero(found_unit @ unit.T >= line, axis=1)
            need = np.where(
                strong,
                max(self.min_links, -(-members.size // 2)),
                max(self.min_links, math.ceil(WEAK_STYLE_LINKS * members.size)),
            )
            better = (links >= need) & (links > best_links)
            best[better], best_links[better] = g, links[better]
        for g in range(len(groups)):
            joined[g] = found[best == g]
        return joined

    def _same_org(self, i: np.ndarray, j: np.ndarray) -> np.ndarray:
        if not self.link_orgs:
            return np.zeros(i.shape[0], dtype=bool)
        return (self.org_of[i] == self.org_of[j]) & (self.org_of[i] != "")

    def _shared_prompt_pairs(
        self,
        nodes: np.ndarray,
        now_ts: int,
        seen: np.ndarray,
        coverage: CoverageDetector | None = None,
        cross_dups: np.ndarray | None = None,
        active: np.ndarray | None = None,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Pairs of slots that sent near-duplicates of each other's prompts often enough, lately.

        Often enough is an absolute count, a share of the smaller account's requests, and far
        beyond chance in this stream. The chance model: each account finds a near-duplicate
        partner for its requests at its own rate (its cross-account duplicate rate), and the
        partner is any account asking about the same topic, in proportion to how much it asks.
        Two ordinary users of one tight, quiet topic then share "near-duplicates" by the dozen,
        and so expected; a campaign resending its prompts to each other shares them far above
        that. The edge must exceed its expectation by ``link_z`` Poisson deviations
        (``org_link_z`` within an org).
        """
        lo, hi, weight = self.edge_weights(now_ts)
        # Both ends linkable here, or a local node and an account of another partition.
        keep = np.isin(lo, nodes) & (np.isin(hi, nodes) | (hi >= FOREIGN_BASE))
        lo, hi, weight = lo[keep], hi[keep], weight[keep]
        local = hi < FOREIGN_BASE
        smaller = seen[lo].astype(np.float64)
        smaller[local] = np.minimum(smaller[local], seen[hi[local]])
        same_org = np.zeros(lo.size, dtype=bool)
        same_org[local] = self._same_org(lo[local], hi[local])
        linked = ((weight >= self.shared_prompt_links) & (weight >= self.shared_prompt_share * smaller)) | (
            (weight >= 1.0) & same_org
        )
        if coverage is not None and cross_dups is not None and active is not None and linked.any():
            both = np.flatnonzero(linked & local)
            a, b = lo[both], hi[both]
            rate = cross_dups[a] / np.maximum(seen[a], 1) + cross_dups[b] / np.maximum(seen[b], 1)
            expected = rate * coverage.topic_overlap(a, b, active)
            z = np.where(same_org[both], self.org_link_z, self.link_z)
            linked[both] = weight[both] >= expected + z * np.sqrt(np.maximum(expected, 1.0))
        return lo[linked], hi[linked]

    def group_stats(self, coverage: CoverageDetector, members: np.ndarray, balanced: bool = False) -> dict[str, float]:
        """Coverage statistics of the group as one actor, plus how it divides the work."""
        member_stats = coverage.account_stats(members)
        group = coverage.group_stats(members, balanced=balanced)
        group["members"] = float(members.size)
        effective = group["effective_topics"] / max(float(np.median(member_stats["effective_topics"])), 1.0)
        # Distinct topics too: a strong shared template can pile every member's mass onto the same
        # few cells, hiding a division of work that the topics each member touches still show.
        covered = group["topics_covered"] / max(float(np.median(member_stats["topics_covered"])), 1.0)
        group["complementarity_effective"], group["complementarity_covered"] = effective, covered
        group["complementarity"] = max(effective, covered)
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
