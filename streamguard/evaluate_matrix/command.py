"""``streamguard evaluate``: the flags, the worlds they name, and the command."""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from streamguard.evaluate_matrix.running import run_matrix
from streamguard.evaluate_matrix.scoring import Floors, check_floors
from streamguard.evaluate_matrix.tables import markdown, render, write_report
from streamguard.evaluate_matrix.worlds import INDEPENDENT_RELATIVE, MATRICES, Sources, WorldSpec, default_independent


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate",
        help="the detector with default settings over a matrix of labelled worlds: precision, recall, FP, delay",
        description=_description(),
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
    write_report(report, args.json, args.markdown, markdown)
    return 1 if args.check and failures else 0


def _description() -> str:
    """The package's docstring: what the command does."""
    from streamguard import evaluate_matrix  # noqa: PLC0415 - the package imports this module

    return str(evaluate_matrix.__doc__)
