"""The traffic under construction: account kinds, an account's ground truth, a world's habits.

``TrafficBuilder`` collects the latent rows every behaviour (``behaviours.py``,
``evasion.py``, ``traps.py``) emits for its accounts; ``world.embed_requests``
turns them into embeddings later.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from streamguard.sim.world import Catalog, World

__all__ = [
    "BENIGN_KINDS",
    "DISTILLER_KINDS",
    "EVASION_PREFIX",
    "KINDS",
    "Account",
    "Habits",
    "TrafficBuilder",
]

BENIGN_KINDS: tuple[str, ...] = ("casual", "power_user", "product", "batch_job", "benchmark")
DISTILLER_KINDS: tuple[str, ...] = (
    "template_sweeper",
    "paraphrase_sweeper",
    "targeted_sweeper",
    "slow_sweeper",
    "campaign_member",
)
KINDS: tuple[str, ...] = BENIGN_KINDS + DISTILLER_KINDS
EVASION_PREFIX = "evade_"
"""Kinds of the evasion scenarios (``sim/evasion.py``) start with this; they are distillers."""


@dataclass
class Account:
    """One account's ground truth."""

    kind: str
    campaign: str | None = None
    org_id: str | None = None
    account_id: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    """Request metadata the account shares on purpose: attribute key -> symbolic
    group name (``attributes.py`` maps each name to one pseudonymised value);
    keys not given follow the account's kind."""

    @property
    def label(self) -> str:
        """``"distiller"`` or ``"benign"``."""
        distiller = self.kind in DISTILLER_KINDS or self.kind.startswith(EVASION_PREFIX)
        return "distiller" if distiller else "benign"


@dataclass(frozen=True)
class Habits:
    """How the accounts of one world behave, beyond what their kind fixes.

    The defaults are the default mode's habits: they change no volume and no
    template strength, and draw nothing from the accounts' stream.

    Attributes
    ----------
    volume : dict of str to float
        Multiplier of the request count of each kind (missing: 1).
    template_odds : float
        Multiplies the odds ``s / (1 - s)`` of the squared share ``s`` every
        template and system prompt takes of a prompt's embedding: < 1 light
        templates, > 1 dominant ones.
    template_spread : float
        Standard deviation of an extra per-account (per-campaign) factor
        ``exp(N(0, spread))`` on those odds.
    """

    volume: dict[str, float] = field(default_factory=dict)
    template_odds: float = 1.0
    template_spread: float = 0.0


# Largest squared share a template may take after the world's odds: the
# prompt's own topic always keeps a part.
_MAX_TEMPLATE_SHARE = 0.85


@dataclass
class TrafficBuilder:
    """Collects the latent rows of every account.

    Attributes
    ----------
    world, catalog : World, Catalog
    rng : numpy.random.Generator
        The accounts' stream.
    t0, t1 : int
        Simulated period ``[t0, t1)`` in epoch ms.
    habits : Habits
        The world's volume and template-strength habits.
    scale : float
        The simulation's scale, for scenarios whose size grows with it (the
        default population is sized by ``plan_population`` instead).
    """

    world: World
    catalog: Catalog
    rng: np.random.Generator
    t0: int
    t1: int
    habits: Habits = field(default_factory=Habits)
    scale: float = 1.0
    accounts: list[Account] = field(default_factory=list)
    company_orgs: list[str] = field(default_factory=list)
    _parts: list[tuple[np.ndarray, ...]] = field(default_factory=list)
    _org_ids: set[str] = field(default_factory=set)

    def new_org(self) -> str:
        """A fresh opaque org id."""
        while True:
            org = "org-" + self.rng.bytes(5).hex()
            if org not in self._org_ids:
                self._org_ids.add(org)
                return org

    def company_org(self) -> str:
        """An org from the shared pool of companies (Zipf-like sizes)."""
        k = len(self.company_orgs)
        p = 1.0 / np.arange(1, k + 1)
        return self.company_orgs[int(self.rng.choice(k, p=p / p.sum()))]

    def volume(self, kind: str, n: int, floor: int) -> int:
        """Request count ``n`` of an account of ``kind`` under the world's habits, at least ``floor``."""
        v = self.habits.volume.get(kind, 1.0)
        return n if v == 1.0 else max(floor, int(round(n * v)))

    def new_styles(self, shares: float | np.ndarray, kind: str) -> np.ndarray:
        """Register templates (one account's, or one campaign's); returns (k,) int32 ids.

        ``shares`` are the default mode's squared shares; the world's habits
        move them towards light or dominant, with one extra factor per call.
        """
        h = self.habits
        if h.template_odds != 1.0 or h.template_spread != 0.0:
            s = np.atleast_1d(np.asarray(shares, np.float64))
            odds = s / (1.0 - s) * h.template_odds * np.exp(h.template_spread * self.rng.standard_normal())
            shares = np.minimum(odds / (1.0 + odds), _MAX_TEMPLATE_SHARE)
        return self.catalog.new_styles(shares, kind)

    def emit(
        self,
        account: Account,
        ts: np.ndarray,
        subtopic: np.ndarray,
        style: np.ndarray,
        context: np.ndarray,
        content: np.ndarray,
        text: np.ndarray,
    ) -> None:
        """Record one account and its requests (arrays of equal length n)."""
        idx = len(self.accounts)
        self.accounts.append(account)
        n = ts.shape[0]
        self._parts.append(
            (
                np.full(n, idx, np.int32),
                np.clip(ts, self.t0, self.t1 - 1).astype(np.int64),
                subtopic.astype(np.int32),
                style.astype(np.int32),
                context.astype(np.int32),
                content.astype(np.int64),
                text.astype(np.int64),
            )
        )

    def rows(self) -> dict[str, np.ndarray]:
        """All latent rows, concatenated in emission order.

        Returns
        -------
        dict
            ``account`` (n,) int32 index into ``accounts``; ``ts`` (n,) int64
            epoch ms; ``subtopic``, ``style``, ``context`` (n,) int32;
            ``content``, ``text`` (n,) int64.
        """
        names = ("account", "ts", "subtopic", "style", "context", "content", "text")
        return {name: np.concatenate([p[i] for p in self._parts]) for i, name in enumerate(names)}
