"""The machine's float32 GEMM rate at the detector's shapes, and the detector's GEMM work per event."""

from __future__ import annotations

from typing import Any

import numpy as np

from streamguard.bench.common import _blas_threads, _max_threads, _median_seconds


def measure_sgemm(dims: list[int], cells: int, bits: int, quick: bool) -> dict[str, Any]:
    """GFLOP/s of ``(m, d) @ (d, K)`` and ``(m, d) @ (d, bits)`` float32 matmuls, 1 thread and all cores."""
    rng = np.random.default_rng(0)
    m = 1024 if quick else 4096
    reps = 3 if quick else 7
    rows = []
    for d in dims:
        a = rng.standard_normal((m, d), dtype=np.float32)
        for n, what in ((cells, "cells"), (bits, "signature")):
            b = rng.standard_normal((d, n), dtype=np.float32)
            for threads in sorted({1, _max_threads()}):
                with _blas_threads(threads):
                    seconds = _median_seconds(lambda a=a, b=b: a @ b, reps)
                rows.append({"m": m, "k": d, "n": n, "what": what, "threads": threads, "gflops": 2.0 * m * d * n / seconds / 1e9})
    best: dict[str, float] = {}
    for d in dims:
        cell_rows = [r for r in rows if r["k"] == d and r["what"] == "cells"]
        top = max(cell_rows, key=lambda r: r["gflops"])
        best[str(d)] = top["gflops"]
    return {"shapes": rows, "gflops_by_dim": best, "gflops": max(best.values()), "note": "median of repeated calls"}


def flops_per_event(dim: int, settings: Any) -> dict[str, float]:
    """The detector's float operations per request, counted from the settings (multiply-add = 2).

    ``gemm`` is what the reference algorithm does in GEMMs: the signature
    projection ``d * bits * 2`` and two cell GEMMs ``2 * d * K * 2`` (nearest
    cell, then the destyled cell). ``other`` estimates the rest (centring and
    normalising, residuals, the style prefix, argmaxes; not the Hamming scan,
    whose length is measured in the near-duplicate section).
    """
    bits = settings.signature.bits
    cells = settings.coverage.cells
    signature = dim * bits * 2
    cell_gemms = 2 * dim * cells * 2
    # The Hamming scan (3 integer operations per signature word and chain entry) is not
    # counted: its length is the account's requests in the window, see near_duplicate.mean_chain.
    other = 4 * dim + 5 * dim + 6 * dim + 2 * cells
    return {
        "signature": signature,
        "cells": cell_gemms,
        "gemm": signature + cell_gemms,
        "gemm_cpu_backend": signature + dim * cells * 2,
        "other": other,
        "note": "gemm: the reference's GEMMs (signature + two cell GEMMs); gemm_cpu_backend: the cpu backend's "
        "(its Gram path replaces the second cell GEMM, up to a few % of rows recomputed exactly)",
    }


