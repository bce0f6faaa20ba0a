"""The flags of ``streamguard bench``."""

from __future__ import annotations

import argparse
from typing import Any

DEFAULT_OUT = "bench-out"


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``bench`` on the CLI's subparsers; returns its parser."""
    parser = subparsers.add_parser(
        "bench",
        help="throughput of every backend and of baselines, with the machine's BLAS limit",
        description=_description(),
    )
    parser.add_argument("--quick", action="store_true", help="small event counts: a CI run of well under a minute")
    parser.add_argument("--dims", default="384,1024", help="embedding dimensions, comma separated (default 384,1024)")
    parser.add_argument("--events", type=int, default=None, help="requests per dimension (default 150000; --quick 12000)")
    parser.add_argument("--window", type=int, default=None, help="near-duplicate window W (default 65536; --quick 8192)")
    parser.add_argument("--queries", type=int, default=None, help="near-duplicate queries (default 8192; --quick 1024)")
    parser.add_argument(
        "--events-per-tick",
        type=int,
        default=4096,
        help="event-time density of the traffic: requests per scoring tick (the simulator's own is ~75-250)",
    )
    parser.add_argument("--backends", default=None, help="comma separated (default: numpy, cpu and cuda where usable)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--adversarial",
        action="store_true",
        help="add the adversarial-account rows (bench/adversarial.py): one account sending half the traffic, "
        "with and without the near-duplicate window's per-account cap (--events ordinary requests, default 100000)",
    )
    parser.add_argument("--out", default=DEFAULT_OUT, help=f"directory for bench.json and bench.png (default {DEFAULT_OUT}/)")
    parser.add_argument(
        "--traffic",
        action="append",
        default=[],
        metavar="FILE",
        help="also time `streamguard replay` end to end (and the detector alone) on this request file (repeatable), "
        "e.g. python ../shared/worlds/independent_traffic.py w.parquet w.labels.json --seed 7001 --scale 0.1 --dim 384",
    )
    parser.add_argument(
        "--replay-rows",
        default=None,
        metavar="N[,N...]",
        help="instead of the other sections: write simulator files of N requests in pieces (at the first of --dims) "
        "and measure the peak RSS of `streamguard replay` on each (replay_memory.json in --out)",
    )
    parser.add_argument(
        "--replay-whole", action="store_true",
        help="with --replay-rows: also replay each file from memory (replay_table) and compare the alerts",
    )
    parser.add_argument(
        "--replay-dir", default=None, metavar="DIR",
        help="with --replay-rows: where the files are written (default: a temporary folder; each file is deleted after)",
    )
    return parser


def _description() -> str:
    """The first paragraph of the package's docstring."""
    from streamguard import bench  # noqa: PLC0415 - the package imports this module

    return str(bench.__doc__).split("\n\n")[0]
