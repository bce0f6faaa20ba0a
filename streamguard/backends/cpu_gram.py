"""What the cpu backend's Gram path derives from a codebook, and when the path applies.

The Gram path (:func:`streamguard.backends.cpu_kernels_coverage._gram_cells`)
takes a request's destyled cell from the first GEMM and the centroids' Gram
matrix instead of a second GEMM; :class:`streamguard.backends.cpu_backend.CpuBackend`
decides per batch whether it applies.
"""

from __future__ import annotations

from typing import Any

import numpy as np

_GRAM_MIN_ROWS = 64
"""OpenBLAS takes other code paths for tiny GEMMs (gemv for one row, small-matrix kernels for a
few), which round differently from the regular kernel; the rows of a regular GEMM round the same
whatever the number of rows. The Gram path only runs where the reference's second GEMM is a
regular one (at least this many rows, ``K * d >= _GRAM_MIN_WORK``), and its exact fallback pads
the rows it recomputes to ``_FALLBACK_ROWS``: on OpenBLAS 0.3.31 (SkylakeX) every GEMM with
``K * d >= 32768`` and more than 8 rows measured regular."""
_GRAM_MIN_WORK = 1 << 15
_FALLBACK_ROWS = 32
_UNIT_TOLERANCE = 1e-4
"""The error bound of the Gram path assumes unit centroids (the codebook's)."""


def _gram_margin(dim: int) -> float:
    """Gap between the two best cells below which the Gram estimate is not trusted.

    With ``g = d * 2**-24 / (1 - d * 2**-24)`` (the bound on the relative
    error of a float32 dot product of length ``d``, any summation order), the
    reference's float32 GEMM is within ``2g`` of the exact product of its
    float32 operands (``|u - style| <= 2``), and the estimate within ``3g``
    plus a few float32 roundings of it (first GEMM, the accounts' prior
    styles, the residuals' projections). Twice that sum, with room: a gap
    above the margin means both argmaxes agree.
    """
    unit = 2.0**-24
    return 12.0 * dim * unit / (1.0 - dim * unit) + 1e-6


class _Codebook:
    """What the Gram path derives from one centroids array, and whether it was checked."""

    def __init__(self, centroids: np.ndarray) -> None:
        self.key = _centroids_key(centroids)
        c64 = centroids.astype(np.float64)
        self.gram = (c64 @ c64.T).astype(np.float32)
        norms = np.sqrt(np.einsum("kd,kd->k", c64, c64))
        self.unit = bool(np.all(np.abs(norms - 1.0) <= _UNIT_TOLERANCE))
        self.margin = _gram_margin(centroids.shape[1])
        self.verified: bool | None = None  # None: not compared with the full GEMM yet


def _centroids_key(centroids: np.ndarray) -> tuple[Any, ...]:
    """Identity of a centroids array: buffer, shape, strides and a few values (codebooks are not edited in place)."""
    probe = (float(centroids[0, 0]), float(centroids[-1, -1]), float(centroids[centroids.shape[0] // 2].sum()))
    return (centroids.__array_interface__["data"][0], centroids.shape, centroids.strides, probe)
