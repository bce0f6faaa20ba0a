"""The codebook: how the stream's embedding space is cut into cells and hashed.

Fitted once on a warm-up sample of the stream (or loaded from a file) and then
fixed, so that every replica and every restart judges requests the same way.
It holds:

- the stream mean, subtracted before hashing and cell assignment, because real
  embedding models are anisotropic (unrelated prompts sit at cosine 0.1-0.2);
  centring spreads them back around the sphere;
- the few directions of the centred space that still dominate its variance,
  damped before cell assignment (:func:`dominant_directions`): k-means spends
  its cells on the directions of most variance, and when a handful of them
  carry a third of it the cells cut along those and mix the topics;
- K fine cells (spherical k-means centroids of the centred sample), merged
  into T *topics*: k-means spends many cells on popular regions and few on
  rare ones, so cells are roughly equal in population mass and a sweep that
  is uniform over topics would look ordinary cell by cell. Merging cells
  whose centroids are as close to each other as a typical request is to its
  own centroid (average linkage) undoes that split; the threshold is read
  off the warm-up itself, not fixed in cosine units;
- the SimHash hyperplanes, with offsets that apply the centring for free
  (``sign((x - mean) @ planes) == sign(x @ planes - mean @ planes)``);
- the warm-up's cell counts, the prior of the population's cell mix.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Codebook:
    """Fixed model of the stream's geometry.

    Attributes
    ----------
    mean : (d,) float32
    centroids : (K, d) float32, unit rows, in the centred space
    topic_of_cell : (K,) int32 in [0, T)
    domain_of_topic : (T,) int32 in [0, G): a coarser cut of the same merge tree
    planes : (d, bits) float32 SimHash hyperplanes
    warmup_counts : (T,) float64 requests of the warm-up sample per topic
    dominant : (r, d) float32 orthonormal rows, or None: the directions damped before cells
        are assigned (see :func:`dominant_directions`); None for a codebook without (r = 0)
    dominant_shrink : (r,) float32 in (0, 1): the share of each direction's component taken away
    """

    mean: np.ndarray
    centroids: np.ndarray
    topic_of_cell: np.ndarray
    domain_of_topic: np.ndarray
    planes: np.ndarray
    warmup_counts: np.ndarray
    # Defaults: codebook files and checkpoints written before damping existed load as undamped.
    dominant: np.ndarray | None = None
    dominant_shrink: np.ndarray | None = None

    @property
    def dim(self) -> int:
        return int(self.mean.shape[0])

    @property
    def cells(self) -> int:
        return int(self.centroids.shape[0])

    @property
    def topics(self) -> int:
        return int(self.topic_of_cell.max()) + 1

    @property
    def domains(self) -> int:
        return int(self.domain_of_topic.max()) + 1

    @property
    def bits(self) -> int:
        return int(self.planes.shape[1])

    @property
    def plane_offsets(self) -> np.ndarray:
        """(bits,) float32: ``mean @ planes``."""
        return (self.mean @ self.planes).astype(np.float32)

    def save(self, path: str | Path) -> None:
        arrays = {name: getattr(self, name) for name in _FILE_DTYPES}
        arrays["dominant"], arrays["dominant_shrink"] = self.damping()
        np.savez(Path(path), **arrays)

    def damping(self) -> tuple[np.ndarray, np.ndarray]:
        """``(dominant (r, d), dominant_shrink (r,))``, empty (r = 0) for an undamped codebook."""
        if self.dominant is None or self.dominant_shrink is None:
            return np.zeros((0, self.dim), np.float32), np.zeros(0, np.float32)
        return self.dominant, self.dominant_shrink

    def damp(self, centred: np.ndarray) -> np.ndarray:
        """``centred`` (m, d) rows with the dominant directions damped (see :func:`damp`)."""
        return damp(centred, *self.damping())

    @classmethod
    def load(cls, path: str | Path) -> "Codebook":
        try:
            with np.load(Path(path)) as data:
                # Files written before damping existed have no dominant directions: undamped.
                arrays = {name: data[name].astype(dtype) for name, dtype in _FILE_DTYPES.items() if name in data.files}
                if arrays.get("dominant") is not None and arrays["dominant"].shape[0] == 0:
                    arrays.pop("dominant"), arrays.pop("dominant_shrink", None)
                book = cls(**arrays)
        except (OSError, KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: not a streamguard codebook ({exc})") from None
        if book.centroids.shape[1] != book.dim or book.planes.shape[0] != book.dim:
            raise ValueError(f"{path}: inconsistent codebook shapes")
        return book


_FILE_DTYPES = {
    "mean": np.float32, "centroids": np.float32, "topic_of_cell": np.int32, "domain_of_topic": np.int32,
    "planes": np.float32, "warmup_counts": np.float64, "dominant": np.float32, "dominant_shrink": np.float32,
}
"""Every array of a codebook file, with the dtype it is loaded as."""

DIMENSIONS_PER_DOMINANT = 100
"""At most one direction in this many is damped: d // 100, the number of dominating directions
Mu & Viswanath ("All-but-the-top", ICLR 2018) found in real word and sentence embeddings of every
dimension they measured. A count per dimension, not per world."""

DOMINANT_CAP = 2.0
"""A damped direction keeps twice the variance of the first direction not considered for damping.

The cap is relative to the stream's own spectrum, so it means the same in any world and for any
embedding model: a direction stands out only if it carries more than twice what the bulk of
topic directions carry; a spectrum that decays smoothly (many topics, none dominant) is barely
touched. Measured on `streamguard evaluate --matrix full` (19 worlds): with a cap of 1 (the
top directions flattened to the bulk) casual users of `independent-s7002` were linked into a
campaign by style; with 4, `sampled-s18`, whose two dominant directions carry a quarter of its
variance, still had its topics cut along them (recall 0.006)."""


def dominant_directions(centred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The directions of ``centred`` (m, d) that dominate its variance, and how much to damp each.

    Of the top ``d // DIMENSIONS_PER_DOMINANT`` principal directions, those whose variance exceeds
    ``DOMINANT_CAP`` times the next direction's are scaled down to that level (their share of
    every vector shrinks by ``1 - sqrt(cap / variance)``); none is removed. Real sentence models
    put a large share of the variance of their centred embeddings into a few directions that
    separate no topic (in word embeddings, word frequency); spherical k-means, which splits the directions
    of most variance first, then cuts cells along them and mixes topics in every cell, and a sweep
    that is even over the topics looks, cell by cell, like an ordinary account.

    Returns ``(directions (r, d) float32, shrink (r,) float32)``, r = 0 when nothing stands out.
    """
    m, d = centred.shape
    considered = d // DIMENSIONS_PER_DOMINANT
    if considered == 0 or m <= considered:
        return np.zeros((0, d), np.float32), np.zeros(0, np.float32)
    x = centred.astype(np.float64)
    variance, vectors = np.linalg.eigh(x.T @ x / m)
    variance, vectors = variance[::-1], vectors[:, ::-1]
    cap = DOMINANT_CAP * max(float(variance[considered]), 0.0)
    top = variance[:considered]
    damped = np.flatnonzero(top > cap)
    shrink = 1.0 - np.sqrt(cap / top[damped])
    return vectors[:, damped].T.astype(np.float32), shrink.astype(np.float32)


def damp(rows: Any, directions: Any, shrink: Any, offset: Any = 0.0) -> Any:
    """``rows`` minus ``shrink`` of their centred components along ``directions``.

    ``offset``: ``mean @ directions.T`` for rows that are not centred, so that damping them needs
    no centred copy of every row (the kernel that assigns cells centres and normalises rows itself);
    0 for rows already centred. Array-module agnostic (NumPy or a backend's device arrays): only
    matrix products and broadcasting. A no-op when there is no direction.
    """
    if directions.shape[0] == 0:
        return rows
    return rows - ((rows @ directions.T - offset) * shrink) @ directions


def make_planes(dim: int, bits: int, seed: int) -> np.ndarray:
    """Gaussian hyperplanes (d, bits) float32; the same seed gives the same planes on every replica."""
    return np.random.default_rng(seed).standard_normal((dim, bits)).astype(np.float32)


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.maximum(norms, 1e-12)


def spherical_kmeans(x: np.ndarray, k: int, iters: int, rng: np.random.Generator) -> np.ndarray:
    """Unit centroids (k, d) of unit rows ``x`` (m, d): k-means++ seeding, cosine Lloyd steps.

    Empty clusters are re-seeded with the points worst served by the current
    centroids, so all k cells stay in use.
    """
    m = x.shape[0]
    centroids = np.empty((k, x.shape[1]), dtype=np.float32)
    centroids[0] = x[rng.integers(m)]
    closest = 1.0 - x @ centroids[0]
    for j in range(1, k):
        prob = np.maximum(closest, 0.0) ** 2
        total = prob.sum()
        pick = rng.choice(m, p=prob / total) if total > 0 else rng.integers(m)
        centroids[j] = x[pick]
        closest = np.minimum(closest, 1.0 - x @ centroids[j])
    for _ in range(iters):
        sims = x @ centroids.T
        assign = sims.argmax(axis=1)
        sums = np.zeros_like(centroids)
        np.add.at(sums, assign, x)
        counts = np.bincount(assign, minlength=k)
        empty = np.flatnonzero(counts == 0)
        if empty.size:
            worst = np.argsort(sims.max(axis=1))[: empty.size]
            sums[empty] = x[worst]
        centroids = _normalise(sums).astype(np.float32)
    return centroids


SAMPLES_PER_CELL = 4
"""k-means is given at least this many sample rows per cell (fewer cells on a smaller sample)."""


def sample_cap(rows_per_account: np.ndarray, floor: int, target: int) -> int:
    """The smallest per-account cap, at least ``floor``, whose sample reaches ``target`` rows.

    Each account's share of the warm-up sample is capped so that heavy accounts do not own cells;
    a stream of few accounts gets a higher cap rather than a coarser codebook (the cap rises only
    until the sample supports the cells asked for, or every row is kept).
    """
    counts = np.asarray(rows_per_account, dtype=np.int64)
    if counts.size == 0 or np.minimum(counts, floor).sum() >= target:
        return floor
    lo, hi = floor, int(counts.max())  # the sample at hi is every row
    while lo < hi:
        mid = (lo + hi) // 2
        if np.minimum(counts, mid).sum() >= target:
            hi = mid
        else:
            lo = mid + 1
    return lo


def balanced_sample(account_keys: np.ndarray, per_account: int, rng: np.random.Generator) -> np.ndarray:
    """Indices keeping at most ``per_account`` rows of each account (a random subset)."""
    order = rng.permutation(account_keys.shape[0])
    _, inverse = np.unique(account_keys[order], return_inverse=True)
    seen = np.zeros(inverse.max() + 1 if inverse.size else 0, dtype=np.int64)
    keep = np.zeros(order.shape[0], dtype=bool)
    for i, a in enumerate(inverse):
        if seen[a] < per_account:
            seen[a] += 1
            keep[i] = True
    return np.sort(order[keep])


def _shared_cells(centroids: np.ndarray, sample: np.ndarray, accounts: np.ndarray, min_accounts: int) -> np.ndarray:
    """Keep the cells that several accounts ask about.

    A cell whose warm-up requests come from fewer than ``min_accounts``
    accounts is one account's template or system prompt, not a capability;
    left in, it would catch that account's requests and make an ordinary
    product account look like a sweeper of rare cells.
    """
    assign = (sample @ centroids.T).argmax(axis=1)
    _, account_index = np.unique(accounts, return_inverse=True)
    pairs = np.unique(np.stack([assign, account_index]), axis=1)
    distinct = np.bincount(pairs[0], minlength=centroids.shape[0])
    keep = distinct >= min_accounts
    if keep.sum() < 2:
        return centroids
    return centroids[keep]


def _wrapper_cells(centroids: np.ndarray, sample: np.ndarray, mad_k: float, rounds: int = 5) -> np.ndarray:
    """Keep the cells whose requests they explain; drop the wrappers around other cells.

    A template shared by a campaign's accounts pulls their requests, whatever their topic,
    into cells of its own; a codebook that keeps such a cell sees the template where the
    campaign swept hundreds of topics. What a topic's centroid leaves of its requests is
    noise, but what a template's centroid leaves is the topics it wrapped: the residual of
    a request still points at another cell. A cell whose requests' residuals point at
    other cells far more than the stream's cells typically do (beyond ``mad_k`` robust
    deviations of the median cell) is dropped, and its requests fall to the cells nearest
    to them. That can be another cell the template had a share of (a few of the
    campaign's requests among others), which now catches all of them: the test is
    repeated on the cells that remain until none is dropped (``rounds`` at most).
    """
    for _ in range(rounds):
        keep = _explaining_cells(centroids, sample, mad_k)
        if keep.all() or keep.sum() < 2:
            break
        centroids = centroids[keep]
    return centroids


def _explaining_cells(centroids: np.ndarray, sample: np.ndarray, mad_k: float) -> np.ndarray:
    """(K,) bool: the cells whose requests' residuals do not point at other cells (one round)."""
    scores = sample @ centroids.T
    own = scores.argmax(axis=1)
    residual = _normalise(sample - scores[np.arange(sample.shape[0]), own][:, None] * centroids[own])
    elsewhere = residual @ centroids.T
    elsewhere[np.arange(sample.shape[0]), own] = -np.inf
    pointing = elsewhere.max(axis=1)
    per_cell = np.full(centroids.shape[0], np.nan)
    order = np.argsort(own, kind="stable")
    cells, starts = np.unique(own[order], return_index=True)
    for cell, values in zip(cells.tolist(), np.split(pointing[order], starts[1:])):
        per_cell[cell] = float(np.median(values))
    used = np.isfinite(per_cell)
    median = float(np.median(per_cell[used]))
    mad = 1.4826 * float(np.median(np.abs(per_cell[used] - median)))
    return ~used | (per_cell <= median + mad_k * max(mad, 1e-6))


def _natural_topics(tree: np.ndarray, cohesion: float) -> np.ndarray:
    """Topic labels (1-based) of the cells where the tree is cut at ``cohesion`` (see :func:`merge_cells`)."""
    from scipy.cluster.hierarchy import fcluster  # noqa: PLC0415 - only at fit time

    return fcluster(tree, t=max(1.0 - cohesion, 1e-6), criterion="distance")


def natural_topic_count(centroids: np.ndarray, cohesion: float) -> int:
    """How many topics :func:`merge_cells` makes of ``centroids`` before any ``max_topics`` cut."""
    from scipy.cluster.hierarchy import linkage  # noqa: PLC0415 - only at fit time

    if centroids.shape[0] < 4:
        return int(centroids.shape[0])
    return int(_natural_topics(linkage(centroids.astype(np.float64), method="average", metric="cosine"), cohesion).max())


def merge_cells(centroids: np.ndarray, cohesion: float, max_topics: int) -> tuple[np.ndarray, np.ndarray]:
    """Topic of each cell, and domain of each topic, from one average-linkage tree.

    Two cells are one topic when their centroids are, on average, at least as
    similar as a typical warm-up request is to its own centroid. If that leaves
    more than ``max_topics`` topics, the tree is cut at ``max_topics`` instead.
    Domains cut the same tree higher, into about ``sqrt(T)`` groups, so every
    topic lies in exactly one domain.

    Returns topic_of_cell (K,) int32 and domain_of_topic (T,) int32.
    """
    from scipy.cluster.hierarchy import fcluster, linkage  # noqa: PLC0415 - only at fit time

    k = centroids.shape[0]
    if k < 4:
        return np.arange(k, dtype=np.int32), np.zeros(k, dtype=np.int32)
    tree = linkage(centroids.astype(np.float64), method="average", metric="cosine")
    topics = _natural_topics(tree, cohesion)
    if topics.max() > max_topics:
        topics = fcluster(tree, t=max_topics, criterion="maxclust")
    _, topic_of_cell = np.unique(topics, return_inverse=True)
    n_topics = int(topic_of_cell.max()) + 1
    domains = fcluster(tree, t=max(2, min(n_topics - 1, round(math.sqrt(n_topics)))), criterion="maxclust")
    _, domain_of_cell = np.unique(domains, return_inverse=True)
    domain_of_topic = np.zeros(n_topics, dtype=np.int32)
    domain_of_topic[topic_of_cell] = domain_of_cell
    return topic_of_cell.astype(np.int32), domain_of_topic


def fit_codebook(
    embeddings: np.ndarray,
    account_keys: np.ndarray,
    cells: int,
    max_topics: int,
    bits: int,
    plane_seed: int,
    per_account: int = 8,
    iters: int = 10,
    seed: int = 0,
    min_accounts: int = 2,
    wrapper_mad_k: float = 6.0,
) -> Codebook:
    """Fit a codebook on a warm-up sample.

    Parameters
    ----------
    embeddings : (m, d) float32 unit rows
    account_keys : (m,) account of each row; caps each account's share of the
        fit (``per_account``, raised by :func:`sample_cap` on a stream of few
        accounts) so that no product account or template owns cells
    cells : K, reduced when the sample is too small to support it
    max_topics : upper bound on T
    min_accounts : a cell must be shared by this many accounts of the warm-up
    wrapper_mad_k : cells that wrap other cells (templates) beyond this many robust
        deviations are dropped (0: keep them); see :func:`_wrapper_cells`
    """
    if embeddings.ndim != 2 or embeddings.shape[0] == 0:
        raise ValueError("cannot fit a codebook on an empty warm-up sample")
    rng = np.random.default_rng(seed)
    mean = embeddings.mean(axis=0).astype(np.float32)
    _, rows_per_account = np.unique(account_keys, return_counts=True)
    kept = balanced_sample(account_keys, sample_cap(rows_per_account, per_account, SAMPLES_PER_CELL * cells), rng)
    sample = embeddings[kept]
    dominant, shrink = dominant_directions(_normalise(sample - mean))
    centred = _normalise(damp(sample - mean, dominant, shrink)).astype(np.float32)
    k = int(max(2, min(cells, centred.shape[0] // SAMPLES_PER_CELL)))

    def cells_of(k: int) -> tuple[np.ndarray, float]:
        centroids = spherical_kmeans(centred, k, iters, rng)
        centroids = _shared_cells(centroids, centred, account_keys[kept], min_accounts)
        if wrapper_mad_k > 0:
            centroids = _wrapper_cells(centroids, centred, wrapper_mad_k)
        return centroids, float(np.median((centred @ centroids.T).max(axis=1)))

    centroids, cohesion = cells_of(k)
    natural = natural_topic_count(centroids, cohesion)
    if natural > max_topics:
        # Cutting the tree at max_topics would merge the most densely sampled cells first: a campaign
        # that fills the warm-up would lose its distinctions and look like one common topic. Fewer
        # cells keep k-means' allocation and the cohesion cut everywhere alike.
        centroids, cohesion = cells_of(max(2, k * max_topics // natural))
    topic_of_cell, domain_of_topic = merge_cells(centroids, cohesion, max_topics)
    warm_cells = (damp(embeddings - mean, dominant, shrink) @ centroids.T).argmax(axis=1)
    return Codebook(
        mean=mean,
        centroids=centroids,
        topic_of_cell=topic_of_cell,
        domain_of_topic=domain_of_topic,
        planes=make_planes(embeddings.shape[1], bits, plane_seed),
        warmup_counts=np.bincount(topic_of_cell[warm_cells], minlength=int(topic_of_cell.max()) + 1).astype(np.float64),
        dominant=dominant if dominant.shape[0] else None,
        dominant_shrink=shrink if dominant.shape[0] else None,
    )
