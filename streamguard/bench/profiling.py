"""The top costs of a cProfile run of ``streamguard replay``."""

from __future__ import annotations

import contextlib
import cProfile
import io
import os
import pstats
import time
from pathlib import Path
from typing import Any

PROFILE_TOP = 10


def profile_replay(path: Path, alerts: Path, backend: str, top: int = PROFILE_TOP) -> dict[str, Any]:
    """cProfile of ``streamguard replay`` (in this process; imports and numba compilation already done).

    The functions are listed by cumulative time, leaving out those that enclose
    almost the whole run (the command, the replay loop: they would fill the top
    with one line each of "everything").
    """
    from streamguard.cli import main as cli_main  # noqa: PLC0415

    profiler = cProfile.Profile()
    with contextlib.redirect_stdout(io.StringIO()):
        begin = time.perf_counter()
        profiler.enable()
        status = cli_main(["replay", str(path), "--alerts", str(alerts), "--backend", backend])
        profiler.disable()
        seconds = time.perf_counter() - begin
    stats = pstats.Stats(profiler)
    entries = stats.stats  # type: ignore[attr-defined]
    # A caller that spends (nearly) all its time in one callee is a pass-through: listing both
    # would fill the top with one chain (feed -> process -> Pipeline.process -> ...). Keep the callee.
    wrappers = set()
    for key, (_, _, _, cumtime, callers) in entries.items():
        for caller in callers:
            if caller in entries and entries[caller][3] <= cumtime * 1.03:
                wrappers.add(caller)
    rows = []
    for key, (_, calls, tottime, cumtime, _) in entries.items():
        filename, line, name = key
        if "importlib" in filename or name in ("<built-in method builtins.exec>", "<built-in method builtins.__import__>"):
            continue  # modules the command imports on its first run in this process: start-up, timed apart
        rows.append(
            {
                "function": f"{_short_path(filename)}:{line}({name})" if line else name,
                "calls": int(calls),
                "tottime": float(tottime),
                "cumtime": float(cumtime),
                "wrapper": key in wrappers,
            }
        )
    rows.sort(key=lambda r: r["cumtime"], reverse=True)
    # The replay proper: the longest call that is not the command itself.
    run = next((r["cumtime"] for r in rows if r["function"].endswith("(replay_file)")), seconds)
    for r in rows:
        r["share"] = r["cumtime"] / max(run, 1e-9)
    return {
        "status": status,
        "seconds": seconds,
        "replay_seconds": run,
        "top": [r for r in rows if r["share"] < 0.95 and not r["wrapper"]][:top],
        "enclosing": [r["function"] for r in rows if r["share"] >= 0.95][:8],
        "note": f"top {top} functions by cumulative time of a profiled `replay` run (in the bench's process, so "
        "imports are not in it); 'share' is of replay_file's time; the functions holding >= 95% of it (the command, "
        "the replay loop) are listed under 'enclosing' instead, and a caller that spends >= 97% of its time in one "
        "callee is left out for that callee",
    }


def _short_path(filename: str) -> str:
    marker = f"{os.sep}streamguard{os.sep}"
    if marker in filename:
        return "streamguard/" + filename.rsplit(marker, 1)[1]
    parts = Path(filename).parts
    return "/".join(parts[-2:]) if len(parts) > 1 else filename
