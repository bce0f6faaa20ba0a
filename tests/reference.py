"""Slow oracles, written for obviousness, that the NumPy reference backend is checked against."""

from __future__ import annotations

import numpy as np


def hamming(a: np.ndarray, b: np.ndarray) -> int:
    return int(sum(bin(int(x) ^ int(y)).count("1") for x, y in zip(a, b)))


def window_min_distance(sigs: np.ndarray, slots: np.ndarray, window: int) -> np.ndarray:
    """For each request, the smallest Hamming distance to its account's previous `window` requests."""
    none = sigs.shape[1] * 64 + 1
    history: dict[int, list[np.ndarray]] = {}
    out = np.full(len(slots), none, dtype=np.int32)
    for i, slot in enumerate(slots.tolist()):
        previous = history.setdefault(slot, [])
        if previous:
            out[i] = min(hamming(sigs[i], p) for p in previous[-window:])
        previous.append(sigs[i])
    return out


def signature_bits(x: np.ndarray, planes: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Signatures bit by bit: bit j of word w is set when projection 64*w+j is positive."""
    proj = x.astype(np.float64) @ planes.astype(np.float64) - offsets
    n, bits = proj.shape
    words = np.zeros((n, bits // 64), dtype=np.uint64)
    for i in range(n):
        for j in range(bits):
            if proj[i, j] > 0:
                words[i, j // 64] |= np.uint64(1) << np.uint64(j % 64)
    return words


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """(n, d) float32 random unit rows."""
    x = rng.standard_normal((n, d)).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)
