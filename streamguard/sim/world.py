"""World model of the traffic simulator: topics, popularity and embedding geometry.

The world is a latent topic model on the unit sphere. A prompt's embedding is a
normalised weighted sum of

* a *common* direction shared by every prompt (sentence-embedding models are
  anisotropic: unrelated prompts still have cosine ~0.1-0.2),
* its domain vector and its subtopic vector (prompts of one subtopic ~0.4-0.6),
* a per-prompt *content* vector (the question itself; a prompt is a point),
* a per-text *surface* vector (the wording; paraphrases share content, not
  surface, and land at ~0.85-0.95),
* optional *style* (template or system prompt) and *context* (a batch job's
  document corpus) vectors that every prompt using them shares,
* a little isotropic noise per request (exact retries stay >= 0.97).

Squared weights are shares of the squared norm, so with near-orthogonal
components the cosine of two prompts is roughly the sum of the shares of the
components they have in common. The seed changes the world itself: numbers of
domains and subtopics, popularity skews and geometry weights are drawn from
the ranges of a ``Geometry``. The default ``Geometry`` is the narrow family of
the default mode; ``sim/sampled.py`` draws a wide one per world, which may
also give the embedding an anisotropic spectrum: a few directions carrying a
large share of the variance, as the leading principal components of a real
sentence model do.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Catalog",
    "EmbeddingWeights",
    "Geometry",
    "World",
    "build_world",
    "embed_requests",
]


@dataclass(frozen=True)
class EmbeddingWeights:
    """Squared shares of each embedding component.

    Attributes
    ----------
    common : float
        Share of the common direction in the whole vector; the cosine of two
        unrelated prompts.
    domain : float
        Share of the domain vector inside the non-common part.
    subtopic : (S,) float64
        Share of the subtopic vector inside the non-common part, per subtopic
        (some subtopics are tighter than others).
    surface : float
        Share of the wording (text) vector inside the non-common part.
    noise_lo, noise_hi : float
        Range of the per-request isotropic noise amplitude, relative to the
        unit vector (cosine of two exact retries ~ 1 / (1 + noise**2)).
    """

    common: float
    domain: float
    subtopic: np.ndarray
    surface: float
    noise_lo: float
    noise_hi: float

    @property
    def content(self) -> np.ndarray:
        """(S,) float64: share of the per-prompt content vector, per subtopic."""
        return 1.0 - self.domain - self.subtopic - self.surface


@dataclass(frozen=True)
class Geometry:
    """Ranges a world's structure and geometry are drawn from.

    Pairs are ``(low, high)``: inclusive for counts, ``[low, high)`` for the
    uniform draws. The defaults are the fixed family of the default mode;
    changing them changes every default world.

    Attributes
    ----------
    n_domains : (int, int)
        Number of domains.
    subtopics_per_domain : (int, int)
        Subtopics of each domain, drawn per domain.
    zipf_domain, zipf_subtopic, zipf_famous : (float, float)
        Popularity skew exponents of domains, of subtopics inside a domain,
        and of the famous prompts.
    common, domain, surface : (float, float)
        Squared shares of ``EmbeddingWeights``, drawn once per world.
    subtopic : (float, float)
        Squared share of the subtopic vector, drawn per subtopic (topic
        tightness).
    noise : (float, float)
        Per-request noise amplitude range (used as is, not drawn).
    n_famous : (int, int)
        Number of famous prompts.
    n_dominant : int
        Directions (orthogonal to the common one) that carry extra variance;
        capped at ``dim // 4``. 0 for an isotropic topic part.
    dominant_share : float
        Share of the topic part's variance those directions carry together
        (isotropic: ``n_dominant / (dim - 1)``), split over them in a 1/i
        spectrum.
    """

    n_domains: tuple[int, int] = (12, 20)
    subtopics_per_domain: tuple[int, int] = (6, 20)
    zipf_domain: tuple[float, float] = (0.7, 1.2)
    zipf_subtopic: tuple[float, float] = (0.6, 1.1)
    common: tuple[float, float] = (0.12, 0.18)
    domain: tuple[float, float] = (0.10, 0.16)
    subtopic: tuple[float, float] = (0.22, 0.34)
    surface: tuple[float, float] = (0.10, 0.18)
    noise: tuple[float, float] = (0.05, 0.10)
    n_famous: tuple[int, int] = (200, 400)
    zipf_famous: tuple[float, float] = (0.8, 1.2)
    n_dominant: int = 0
    dominant_share: float = 0.0

    def __post_init__(self) -> None:
        most = self.domain[1] + self.subtopic[1] + self.surface[1]
        if not most < 1.0:
            raise ValueError(f"domain + subtopic + surface shares must stay below 1 (content needs a share), got up to {most:.3f}")
        if not 0.0 < self.common[0] <= self.common[1] < 1.0:
            raise ValueError(f"common share must lie in (0, 1), got {self.common}")
        if self.n_domains[0] < 2 or self.subtopics_per_domain[0] < 1:
            raise ValueError("a world needs at least 2 domains of at least 1 subtopic")
        if not 0.0 <= self.dominant_share < 1.0:
            raise ValueError(f"dominant_share must lie in [0, 1), got {self.dominant_share!r}")


@dataclass
class World:
    """The latent topic space one simulation draws from.

    Attributes
    ----------
    dim : int
        Embedding dimension D.
    n_domains : int
        Number of domains.
    subtopic_domain : (S,) int32
        Domain of each subtopic; subtopics of one domain are contiguous.
    domain_pop : (n_domains,) float64
        Population popularity of each domain (sums to 1).
    subtopic_pop : (S,) float64
        Population popularity of each subtopic (sums to 1): the skewed mix
        ordinary traffic, and product accounts, draw from.
    zipf_domain, zipf_subtopic : float
        Popularity skew exponents this seed drew.
    weights : EmbeddingWeights
        Geometry of the embeddings.
    common : (D,) float32
        Unit common direction.
    topic_centers : (S, D) float32
        ``sqrt(domain) * domain_vec + sqrt(subtopic_s) * subtopic_vec``, both
        orthogonal to ``common``.
    famous_subtopic : (F,) int32
        Subtopic of each globally famous prompt (asked by many accounts).
    famous_pop : (F,) float64
        Popularity of each famous prompt (sums to 1).
    famous_content, famous_text : (F,) int64
        Content and text ids of the famous prompts.
    dominant : (k, D) float32
        Orthonormal directions, orthogonal to ``common``, that the topic part
        of every embedding is stretched along (k = 0: isotropic).
    dominant_stretch : (k,) float32
        Stretch factor (> 1) along each of them.
    """

    dim: int
    n_domains: int
    subtopic_domain: np.ndarray
    domain_pop: np.ndarray
    subtopic_pop: np.ndarray
    zipf_domain: float
    zipf_subtopic: float
    weights: EmbeddingWeights
    common: np.ndarray
    topic_centers: np.ndarray
    famous_subtopic: np.ndarray
    famous_pop: np.ndarray
    famous_content: np.ndarray
    famous_text: np.ndarray
    dominant: np.ndarray
    dominant_stretch: np.ndarray

    @property
    def n_subtopics(self) -> int:
        """Number of subtopics S (the latent topic cells)."""
        return int(self.subtopic_domain.shape[0])

    def subtopics_of(self, domains: np.ndarray) -> np.ndarray:
        """Subtopic ids (int32) belonging to any of ``domains``."""
        return np.flatnonzero(np.isin(self.subtopic_domain, domains)).astype(np.int32)


@dataclass
class Catalog:
    """Mutable registry of ids handed out while accounts are generated.

    Content ids name a question, text ids name one wording of it; style ids
    name templates and system prompts, context ids name batch corpora. Only
    the strengths are stored here: vectors are drawn when embedding.
    """

    n_content: int = 0
    n_text: int = 0
    style_strength: list[float] = field(default_factory=list)
    style_kind: list[str] = field(default_factory=list)
    context_strength: list[float] = field(default_factory=list)

    def new_content(self, n: int) -> np.ndarray:
        """Allocate ``n`` fresh content ids, (n,) int64."""
        out = np.arange(self.n_content, self.n_content + n, dtype=np.int64)
        self.n_content += n
        return out

    def new_text(self, n: int) -> np.ndarray:
        """Allocate ``n`` fresh text ids, (n,) int64."""
        out = np.arange(self.n_text, self.n_text + n, dtype=np.int64)
        self.n_text += n
        return out

    def new_styles(self, strengths: np.ndarray, kind: str) -> np.ndarray:
        """Register styles with the given squared shares; returns (k,) int32 ids."""
        start = len(self.style_strength)
        self.style_strength.extend(float(s) for s in np.atleast_1d(strengths))
        self.style_kind.extend([kind] * (len(self.style_strength) - start))
        return np.arange(start, len(self.style_strength), dtype=np.int32)

    def new_contexts(self, strengths: np.ndarray) -> np.ndarray:
        """Register batch corpora with the given squared shares; (k,) int32 ids."""
        start = len(self.context_strength)
        self.context_strength.extend(float(s) for s in np.atleast_1d(strengths))
        return np.arange(start, len(self.context_strength), dtype=np.int32)


def _zipf(rng: np.random.Generator, n: int, exponent: float) -> np.ndarray:
    """Zipf popularity over ``n`` items in a random rank order, (n,) float64."""
    p = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return rng.permutation(p / p.sum())


def _unit_rows(rng: np.random.Generator, n: int, dim: int, common: np.ndarray | None) -> np.ndarray:
    """(n, dim) float32 random unit rows, orthogonal to ``common`` if given."""
    x = rng.standard_normal((n, dim), dtype=np.float32)
    if common is not None:
        x -= np.outer(x @ common, common)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _spectrum(
    rng: np.random.Generator, dim: int, common: np.ndarray, k: int, share: float
) -> tuple[np.ndarray, np.ndarray]:
    """``k`` orthonormal directions orthogonal to ``common`` and their stretch factors.

    Direction i gets a share ``share * (1/i) / sum(1/j)`` of the variance of
    an isotropic unit vector stretched along them; the other ``dim - 1 - k``
    directions share the rest. Returns (k, D) float32 and (k,) float32.
    """
    if k == 0 or share <= 0.0:
        return np.zeros((0, dim), np.float32), np.zeros(0, np.float32)
    x = rng.standard_normal((dim, k))
    x -= np.outer(common, common @ x)
    q, _ = np.linalg.qr(x)
    w = 1.0 / np.arange(1, k + 1)
    target = share * w / w.sum()
    stretch = np.sqrt(np.maximum(1.0, target * (dim - 1 - k) / (1.0 - share)))
    return q.T.astype(np.float32), stretch.astype(np.float32)


def build_world(rng: np.random.Generator, dim: int, catalog: Catalog, geometry: Geometry | None = None) -> World:
    """Draw a world: topic structure, popularity, geometry, famous prompts.

    Parameters
    ----------
    rng : numpy.random.Generator
        The world's own stream, so the world depends on the seed alone.
    dim : int
        Embedding dimension D (>= 8).
    catalog : Catalog
        Receives the ids of the famous prompts.
    geometry : Geometry, optional
        Ranges to draw from; the default mode's when omitted.

    Returns
    -------
    World
    """
    g = Geometry() if geometry is None else geometry
    n_domains = int(rng.integers(g.n_domains[0], g.n_domains[1] + 1))
    sizes = rng.integers(g.subtopics_per_domain[0], g.subtopics_per_domain[1] + 1, size=n_domains)
    subtopic_domain = np.repeat(np.arange(n_domains, dtype=np.int32), sizes)
    zipf_domain = float(rng.uniform(*g.zipf_domain))
    zipf_subtopic = float(rng.uniform(*g.zipf_subtopic))
    domain_pop = _zipf(rng, n_domains, zipf_domain)
    subtopic_pop = np.concatenate(
        [domain_pop[d] * _zipf(rng, int(k), zipf_subtopic) for d, k in enumerate(sizes)]
    )
    subtopic_pop /= subtopic_pop.sum()
    n_sub = subtopic_pop.shape[0]

    # Default shares chosen so that: unrelated ~ common (0.12-0.18); same
    # domain ~ +0.1; same subtopic ~0.4-0.6; paraphrase ~ 1 - (1-common)*surface.
    common_w = float(rng.uniform(*g.common))
    domain_w = float(rng.uniform(*g.domain))
    sub_w = rng.uniform(*g.subtopic, size=n_sub)
    weights = EmbeddingWeights(
        common=common_w,
        domain=domain_w,
        subtopic=sub_w,
        surface=float(rng.uniform(*g.surface)),
        noise_lo=g.noise[0],
        noise_hi=g.noise[1],
    )

    common = rng.standard_normal(dim).astype(np.float32)
    common /= np.linalg.norm(common)
    dom_vecs = _unit_rows(rng, n_domains, dim, common)
    sub_vecs = _unit_rows(rng, n_sub, dim, common)
    centers = (
        np.sqrt(domain_w, dtype=np.float32) * dom_vecs[subtopic_domain]
        + np.sqrt(sub_w).astype(np.float32)[:, None] * sub_vecs
    ).astype(np.float32)

    # A pool of famous prompts ("explain quantum computing simply") that many
    # unrelated accounts send verbatim: benign cross-account duplicates.
    n_famous = int(rng.integers(g.n_famous[0], g.n_famous[1] + 1))
    famous_subtopic = rng.choice(n_sub, size=n_famous, p=subtopic_pop).astype(np.int32)
    famous_pop = _zipf(rng, n_famous, float(rng.uniform(*g.zipf_famous)))
    # Drawn last, and only when asked for, so the default worlds stay as they were.
    dominant, stretch = _spectrum(rng, dim, common, min(g.n_dominant, dim // 4), g.dominant_share)

    return World(
        dim=dim,
        n_domains=n_domains,
        subtopic_domain=subtopic_domain,
        domain_pop=domain_pop,
        subtopic_pop=subtopic_pop,
        zipf_domain=zipf_domain,
        zipf_subtopic=zipf_subtopic,
        weights=weights,
        common=common,
        topic_centers=centers,
        famous_subtopic=famous_subtopic,
        famous_pop=famous_pop,
        famous_content=catalog.new_content(n_famous),
        famous_text=catalog.new_text(n_famous),
        dominant=dominant,
        dominant_stretch=stretch,
    )


def _shared_index(ids: np.ndarray) -> tuple[np.ndarray, int]:
    """Map each row to a row of a table of ids used more than once.

    Returns
    -------
    row_to_table : (n,) int64
        Table row for rows whose id repeats, -1 for ids used once.
    n_table : int
        Number of repeated ids.
    """
    _, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    repeated = counts > 1
    table_of_unique = np.where(repeated, np.cumsum(repeated) - 1, -1)
    return table_of_unique[inverse], int(repeated.sum())


def embed_requests(
    world: World,
    catalog: Catalog,
    rng: np.random.Generator,
    subtopic: np.ndarray,
    style: np.ndarray,
    context: np.ndarray,
    content: np.ndarray,
    text: np.ndarray,
    chunk: int = 16384,
) -> np.ndarray:
    """Embed requests from their latent description.

    Parameters
    ----------
    world : World
    catalog : Catalog
        Style and context strengths; content/text ids are resolved here.
    rng : numpy.random.Generator
        Stream for the style, context, content, surface and noise vectors.
    subtopic : (n,) int32
    style, context : (n,) int32
        Style / context id, -1 for none.
    content, text : (n,) int64
        Content and text ids; rows sharing a text id are exact repeats (up to
        noise), rows sharing only a content id are paraphrases.
    chunk : int
        Rows embedded at a time; bounds the temporary memory to a few
        ``chunk x D`` float32 arrays.

    Returns
    -------
    (n, D) float32
        Unit-norm embeddings.
    """
    n = subtopic.shape[0]
    dim = world.dim
    w = world.weights
    c = world.common

    # Row -1 of each table is a zero vector with strength 0, so "no style"
    # indexes it directly without a branch.
    n_style = len(catalog.style_strength)
    style_vecs = np.vstack([_unit_rows(rng, n_style, dim, c), np.zeros((1, dim), np.float32)])
    style_s = np.append(np.asarray(catalog.style_strength, np.float32), np.float32(0.0))
    n_ctx = len(catalog.context_strength)
    ctx_vecs = np.vstack([_unit_rows(rng, n_ctx, dim, c), np.zeros((1, dim), np.float32)])
    ctx_s = np.append(np.asarray(catalog.context_strength, np.float32), np.float32(0.0))

    # Only ids that occur more than once need a stored vector; the others
    # are drawn fresh chunk by chunk.
    content_row, n_content_tab = _shared_index(content)
    text_row, n_text_tab = _shared_index(text)
    content_tab = _unit_rows(rng, n_content_tab, dim, None)
    text_tab = _unit_rows(rng, n_text_tab, dim, None)

    sq_content = np.sqrt(w.content).astype(np.float32)
    sq_surface = np.float32(np.sqrt(w.surface))
    sq_common = np.float32(np.sqrt(w.common))
    sq_rest = np.float32(np.sqrt(1.0 - w.common))
    stretch_minus_1 = world.dominant_stretch - np.float32(1.0)
    out = np.empty((n, dim), dtype=np.float32)
    for a in range(0, n, chunk):
        b = min(n, a + chunk)
        m = b - a
        sub = subtopic[a:b]
        cvec = rng.standard_normal((m, dim), dtype=np.float32)
        cvec /= np.linalg.norm(cvec, axis=1, keepdims=True)
        rows = content_row[a:b]
        hit = rows >= 0
        cvec[hit] = content_tab[rows[hit]]
        svec = rng.standard_normal((m, dim), dtype=np.float32)
        svec /= np.linalg.norm(svec, axis=1, keepdims=True)
        rows = text_row[a:b]
        hit = rows >= 0
        svec[hit] = text_tab[rows[hit]]

        topic = world.topic_centers[sub] + sq_content[sub, None] * cvec + sq_surface * svec
        topic -= np.outer(topic @ c, c)
        topic /= np.linalg.norm(topic, axis=1, keepdims=True)

        st = style[a:b]
        cx = context[a:b]
        s_share = style_s[st]
        k_share = ctx_s[cx]
        y = (
            np.sqrt(1.0 - s_share - k_share)[:, None] * topic
            + np.sqrt(s_share)[:, None] * style_vecs[st]
            + np.sqrt(k_share)[:, None] * ctx_vecs[cx]
        )
        if stretch_minus_1.shape[0]:
            # Anisotropic spectrum: a few directions carry more of the variance.
            y += ((y @ world.dominant.T) * stretch_minus_1) @ world.dominant
        y /= np.linalg.norm(y, axis=1, keepdims=True)
        x = sq_common * c + sq_rest * y

        # Every request carries a little noise, so exact repeats are near-
        # identical rather than bit-identical (cos ~0.98-0.995).
        noise = rng.standard_normal((m, dim), dtype=np.float32)
        amp = rng.uniform(w.noise_lo, w.noise_hi, size=m).astype(np.float32)
        noise *= (amp / np.sqrt(np.float32(dim)))[:, None]
        x += noise
        x /= np.linalg.norm(x, axis=1, keepdims=True)
        out[a:b] = x
    return out
