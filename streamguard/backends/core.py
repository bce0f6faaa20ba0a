"""What the backends share: constants of the definition and input checks (after STUMPY's ``core.py``).

The NumPy reference, the numba backend and the CUDA backend all import from
here, so that none of them imports another for a helper.
"""

from __future__ import annotations

import numpy as np

GOLDEN = np.uint64(0x9E3779B97F4A7C15)
"""Multiplier of the bands' multiplicative hashing (``band_buckets`` and its twins)."""

CLARITY = 0.6
"""A style-free cell is kept when its cosine is at least this share of the raw nearest cell's."""


def check_window(n: int, capacity: int, window: int) -> None:
    """The window store must hold a query's whole window while the batch is inserted: ``n <= C - window``."""
    if window < 1 or n > capacity - window:
        raise ValueError(
            f"dup_scan: a batch of {n} over a window of {window} needs {n + window} window rows, "
            f"the store has {capacity}; split the batch (NearDuplicateDetector does)"
        )


def check_slots(slots: np.ndarray, head: np.ndarray) -> None:
    """Every account slot of a non-empty ``dup_scan`` batch must index ``head``."""
    if slots.min() < 0 or slots.max() >= head.shape[0]:
        raise IndexError(f"dup_scan: an account slot outside head (0 <= slot < {head.shape[0]})")
