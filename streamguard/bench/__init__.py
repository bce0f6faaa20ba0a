"""``streamguard bench``: every backend and the baselines a user would pick, in one run.

One run on the current machine measures, side by side (ratios are what
travel between machines, and between runs on a shared one):

- ``sgemm``: this machine's float32 GEMM rate at the detector's shapes, on 1
  thread and on all cores, and ``flops``: the detector's GEMM work per event,
  counted from the settings. Their ratio is the BLAS-bound limit, the rate a
  detector whose every GEMM ran at full speed and that did nothing else
  would reach.
- ``throughput``: the whole detector (``replay_table``, codebook given) over
  simulated traffic, per dimension and backend; p50/p99 batch latency; the
  alerts of every backend compared with the NumPy reference's.
- ``near_duplicate``: "for every request, is there an earlier request of the
  same account among the last W with cosine >= dup_cosine" (cosine in the
  stream-centred space, as the detector defines it), answered by a NumPy
  brute force (the ground truth), faiss ``IndexFlatIP`` (exact), faiss
  ``IndexBinaryFlat`` over streamguard's own SimHash signatures, and
  streamguard's within-account scan (its window of the last W requests,
  walked along each account's chain); queries/s, recall, precision, the
  recall of each Hamming radius, and the length of the chains walked (the
  account's requests in the window: what a query costs). The recall a
  per-account ring of the last R requests would have had (the scan before
  the window) is kept for comparison.
- ``end_to_end``: the ``streamguard replay`` command itself, in a process of
  its own, over a file (reading, validation, event-time order, codebook fit,
  detection, linking, alert output, interpreter start-up): events/s beside the
  detector-only figure of ``throughput`` on the same requests, its peak RSS,
  and the top costs of a cProfile run of the same command. On the simulator's
  traffic, and on every ``--traffic FILE`` (e.g. an independent world of
  ``../shared/worlds/independent_traffic.py``).
- ``memory``: peak RSS, state bytes per active account and the fixed state
  of a pipeline (the window, the cross-account tables); ``churn``: accounts
  that keep arriving and going idle, and how many stay active.

Output: a table on the terminal, ``bench.json`` and ``bench.png`` in ``--out``.

``--replay-rows N[,N...]`` runs a different job instead: it writes simulator
files of N requests in pieces (never all in memory) and measures the peak RSS
of ``streamguard replay`` on each, which must not grow with N
(``replay_memory.json``; ``--replay-whole`` also replays each file from
memory and checks that the alerts are identical).

The package, a module per job: ``parser.py`` (the flags), ``runner.py`` (the
sections in order, ``bench.json``; ``--replay-rows`` hands over to
``replay_memory.py``), ``sgemm.py`` (the machine's GEMM rate and the
detector's work per event), ``throughput.py`` (the detector alone),
``end_to_end.py`` (the ``replay`` command in its own process) and
``profiling.py`` (its cProfile), ``near_duplicate.py``, ``churn.py``,
``report.py`` (the terminal tables and ``bench.png``), ``common.py`` (the
machine, thread limits, backends, targets). Nothing in the runtime path
imports this package.
"""

from __future__ import annotations

from streamguard.bench.common import (
    EVENTS_PER_SCALE,
    SECTIONS,
    TARGET_EVENTS_PER_SECOND,
    TARGET_RECALL,
    TARGET_STATE_BYTES,
)
from streamguard.bench.end_to_end import run_measured
from streamguard.bench.parser import DEFAULT_OUT, add_parser
from streamguard.bench.profiling import PROFILE_TOP
from streamguard.bench.replay_memory import write_simulated_in_pieces
from streamguard.bench.runner import main, run

__all__ = [
    "DEFAULT_OUT",
    "EVENTS_PER_SCALE",
    "PROFILE_TOP",
    "SECTIONS",
    "TARGET_EVENTS_PER_SECOND",
    "TARGET_RECALL",
    "TARGET_STATE_BYTES",
    "add_parser",
    "main",
    "run",
    "run_measured",
    "write_simulated_in_pieces",
]
