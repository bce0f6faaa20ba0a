"""``streamguard evaluate``: the detector, with default settings, over a matrix of labelled worlds.

Each world of the matrix is generated into a work folder (kept files are
reused), replayed through the whole detector in-process (the ``replay`` code
path, one partition) and scored; one row per world, and the worst case over
the worlds first: the lowest precision and recall, the most false alerts per
10,000 benign accounts.

Worlds come from three generators (``source``):

- ``sampled``: streamguard's own simulator in its sampled-world mode (the
  seed draws the world's family: geometry, mix and volumes of kinds,
  span, population); ``sim``: the same simulator's default, narrow family.
  ``evasion`` plants every evasion scenario of ``streamguard.sim``, ``traps``
  its benign traps (enterprise orgs, joint benchmarks, agent frameworks, ...).
- ``independent``: ``../shared/worlds/independent_traffic.py``, a world model
  written apart from streamguard (``--independent PATH``); skipped, in one
  line, when the script is not there.
- ``realtext``: ``streamguard simulate --real-text [--traps]``, prompts embedded by a
  sentence model; skipped, with the reason, until ``streamguard.sim.realtext``
  and the model's packages are installed.

Per world, computed as ``../shared/worlds/score.py`` computes them (the
scorer the project is judged with; a test holds the two equal): precision
(flagged distillers / flagged labelled accounts), recall, false alerts per
10k benign accounts, by benign kind, recall by distiller kind, and the
median detection delay in the account's own requests (requests up to its
first alert's event time; campaign members, kind ``sybil_member`` or
``campaign_member``, left out). Besides: recall of the ordinary distiller
kinds and of the evasion kinds (``evade_*``) apart, and, per multi-account
campaign, its members caught *as a campaign* (some alert of theirs has a
``kind`` containing ``campaign``). ``--min-recall`` applies to the ordinary
kinds' recall; evasion recall is reported, not checked.

Matrices (``MATRICES`` below; times measured on a busy 2-core machine,
cpu backend, generation included): ``short`` for CI, two sampled
simulator worlds, one with every evasion scenario, and the independent
world at scale 0.1, about 1 minute; ``full``, ten sampled simulator worlds,
two of the simulator's default family, six independent ones (several
seeds), scales 0.1 to 1, D = 384, 768 and 1024, with and without evasion,
and the real-text world when it is available, about 10 minutes (the
real-text world adds about 5 more while its embedding cache is cold).
``--world NAME`` runs named worlds instead (the names the table prints,
e.g. ``sampled-s7-x0.2-d384`` or ``independent-s7001-x0.1-d384-evasion``);
``--list`` prints a matrix's names.

The environment's ``STREAMGUARD_*`` settings are ignored: a run measures the
defaults, or the ``--config`` file given.
"""
# This docstring is the command's --help. The package: worlds.py (world names, generators,
# the matrices), scoring.py (one world's figures, the worst case, the floors), running.py
# (generate, replay, score each world), tables.py (the terminal and Markdown tables),
# command.py (the flags and the command).

from __future__ import annotations

from streamguard.evaluate_matrix.command import add_parser, list_worlds, run, worlds_of
from streamguard.evaluate_matrix.running import generate, run_matrix, run_world
from streamguard.evaluate_matrix.scoring import (
    CAMPAIGN_MEMBER_KINDS,
    Floors,
    check_floors,
    is_evasion_kind,
    score_world,
    worst_case,
)
from streamguard.evaluate_matrix.tables import markdown, render
from streamguard.evaluate_matrix.worlds import (
    GENERATORS,
    INDEPENDENT_RELATIVE,
    MATRICES,
    REALTEXT_PACKAGES,
    Generator,
    Sources,
    WorldError,
    WorldSpec,
    default_independent,
)

__all__ = [
    "CAMPAIGN_MEMBER_KINDS",
    "GENERATORS",
    "INDEPENDENT_RELATIVE",
    "MATRICES",
    "REALTEXT_PACKAGES",
    "Floors",
    "Generator",
    "Sources",
    "WorldError",
    "WorldSpec",
    "add_parser",
    "check_floors",
    "default_independent",
    "generate",
    "is_evasion_kind",
    "list_worlds",
    "markdown",
    "render",
    "run",
    "run_matrix",
    "run_world",
    "score_world",
    "worlds_of",
    "worst_case",
]
