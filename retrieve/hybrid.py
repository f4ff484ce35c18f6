"""Hybrid retrieval: dense and keyword candidates, fused, post-filtered, hydrated into hits.

The keyword side is a :class:`~rag.retrieve.keyword.KeywordIndex`: the local ``bm25s`` index by default,
or the store's own text search where the store provides one (Postgres full-text search for pgvector).
The docstrings below say "BM25" for the keyword side, its default.

Linear fusion scores every candidate in the union of both lists with *both* of its true scores (a
BM25-only candidate gets its real cosine similarity from the stored vector, a dense-only one its real
BM25 score), min-max normalises each score over the union, and combines
``alpha * dense + (1 - alpha) * bm25``. So ``alpha = 1`` ranks exactly as dense search and
``alpha = 0`` exactly as BM25. Reciprocal-rank fusion (``fusion="rrf"``) is the rank-based alternative,
weighted by the same ``alpha``.

With ``confidence_power`` (γ) above 0, linear fusion adapts ``alpha`` per query to how confident each
retriever is: the dense side by its best cosine similarity, BM25 by how far its best score stands above
its tenth, ``(s1 - s10) / s1``. Each is raised to γ and the query's weight becomes
``alpha·c_dense / (alpha·c_dense + (1 - alpha)·c_bm25)``. Both signals correlate with which retriever
wins a query on nfcorpus and on DBpedia-entity, and with γ = 3 the fused ranking beats both retrievers on
both sets, where no fixed weight does (see docs/benchmarks.md). γ = 0 is plain linear fusion, and the
endpoints ``alpha`` = 0 and 1 are unchanged.

Pre-filters go *into* both searches (the store and BM25 evaluate them before ranking); post-filters
(minimum score, chunks per document) run on the fused list.

Native hybrid search: when the keyword side is the store's own text search and the store can also fuse
(:class:`~rag.stores.base.ProvidesHybridSearch`: OpenSearch, Qdrant with its sparse BM25 vector), a linear
search with ``0 < alpha < 1`` can be one request to the engine instead of two searches plus score
look-ups, with ``native_hybrid = "auto"``. It is off by default because the engines' fusion measured
significantly lower nDCG@10 than the local one (``benchmarks/bench_native_fusion.py``). The engine's fusion is its own (OpenSearch: min-max and a fixed weighted
mean; Qdrant: weighted RRF), without confidence weighting, so its hits carry the fused score only
(``dense_score`` and ``bm25_score`` are ``None``). The stores' documentation lists every difference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

import numpy as np

from rag.core.errors import ConfigError
from rag.core.filters import Filter
from rag.core.query import Fusion  # defined once, with the query options; re-exported here
from rag.core.tracing import span
from rag.core.types import Chunk, Evidence, Hit, ScoredId
from rag.retrieve.answerable import gather_evidence
from rag.retrieve.keyword import KeywordIndex
from rag.stores.base import ProvidesHybridSearch, VectorStore

log = logging.getLogger(__name__)

NativeHybrid = Literal["auto", "off"]


class ChunkLookup(Protocol):
    """Where hits get their text and metadata (the catalog)."""

    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]: ...


@dataclass(frozen=True, slots=True)
class FusedScore:
    """One candidate after fusion, with the raw scores it was built from."""

    chunk_id: str
    score: float
    dense: float | None
    bm25: float | None


def min_max(scores: Mapping[str, float]) -> dict[str, float]:
    """Scale scores to [0, 1]; a constant list maps to 1 if positive, else 0."""
    if not scores:
        return {}
    low, high = min(scores.values()), max(scores.values())
    if high == low:
        return dict.fromkeys(scores, 1.0 if high > 0 else 0.0)
    span = high - low
    return {cid: (s - low) / span for cid, s in scores.items()}


def linear_fusion(dense: Mapping[str, float], bm25: Mapping[str, float], alpha: float) -> list[FusedScore]:
    """Fuse two score maps over the same candidates: ``alpha * norm(dense) + (1 - alpha) * norm(bm25)``.

    A candidate missing from one map scores 0 there after normalisation. Ties are broken by the raw
    score of the heavier-weighted retriever, then by chunk id, so ``alpha`` in {0, 1} reproduces that
    retriever's order exactly.
    """
    _check_alpha(alpha)
    nd, nb = min_max(dense), min_max(bm25)
    primary = dense if alpha >= 0.5 else bm25
    fused = [
        FusedScore(cid, alpha * nd.get(cid, 0.0) + (1 - alpha) * nb.get(cid, 0.0), dense.get(cid), bm25.get(cid))
        for cid in dense.keys() | bm25.keys()
    ]
    fused.sort(key=lambda f: (-f.score, -primary.get(f.chunk_id, -np.inf), f.chunk_id))
    return fused


def confidence_alpha(
    alpha: float, dense: Sequence[ScoredId], bm25: Sequence[ScoredId], power: float, depth: int = 10
) -> float:
    """The per-query weight of the dense side under confidence weighting (see the module docstring).

    Args:
        alpha: the configured weight.
        dense: dense results, best first.
        bm25: BM25 results, best first.
        power: γ; 0 returns ``alpha`` unchanged.
        depth: BM25's confidence compares its best score with the one at this rank.
    """
    _check_alpha(alpha)
    if power < 0:
        raise ConfigError(f"confidence_power must be >= 0, got {power}")
    if power == 0 or alpha in (0.0, 1.0):
        return alpha
    c_dense = max(dense[0].score, 0.0) ** power if dense else 0.0
    top = bm25[0].score if bm25 else 0.0
    # Fewer than `depth` chunks share a term with the query: the rest score 0, and a rare term that
    # singles out a few chunks is BM25 at its most confident.
    reference = bm25[depth - 1].score if len(bm25) >= depth else 0.0
    c_bm25 = ((top - reference) / top) ** power if top > 0 else 0.0
    total = alpha * c_dense + (1 - alpha) * c_bm25
    return alpha * c_dense / total if total > 0 else alpha


def rrf_fusion(
    dense: Sequence[ScoredId], bm25: Sequence[ScoredId], alpha: float = 0.5, k: int = 60
) -> list[FusedScore]:
    """Weighted reciprocal-rank fusion: ``alpha / (k + rank_dense) + (1 - alpha) / (k + rank_bm25)``.

    Ranks start at 1; a list a candidate is absent from contributes nothing. With ``alpha = 0.5`` this
    is classic RRF (Cormack et al., 2009) up to a constant factor.
    """
    _check_alpha(alpha)
    if k <= 0:
        raise ConfigError(f"rrf_k must be positive, got {k}")
    scores: dict[str, float] = {}
    for weight, ranked in ((alpha, dense), (1 - alpha, bm25)):
        for rank, hit in enumerate(ranked, start=1):
            scores[hit.chunk_id] = scores.get(hit.chunk_id, 0.0) + weight / (k + rank)
    raw_dense = {h.chunk_id: h.score for h in dense}
    raw_bm25 = {h.chunk_id: h.score for h in bm25}
    fused = [FusedScore(cid, s, raw_dense.get(cid), raw_bm25.get(cid)) for cid, s in scores.items()]
    fused.sort(key=lambda f: (-f.score, f.chunk_id))
    return fused


def _check_alpha(alpha: float) -> None:
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be within [0, 1], got {alpha}")


@dataclass(frozen=True, slots=True)
class PostFilter:
    """Rules applied to the fused list: a score floor and a per-document cap."""

    min_score: float | None = None
    max_per_doc: int | None = None

    def __post_init__(self) -> None:
        if self.max_per_doc is not None and self.max_per_doc <= 0:
            raise ConfigError(f"max_per_doc must be positive, got {self.max_per_doc}")


class HybridRetriever:
    """Dense + keyword retrieval with fusion, pre-filters inside both searches, and post-filters.

    Args:
        store: the vector store holding chunk vectors.
        keyword: the keyword index over the same chunks (:class:`~rag.retrieve.keyword.LocalBM25` wraps
            a local :class:`~rag.retrieve.bm25.BM25Index`).
        embed_query: turns a query into a normalised vector.
        lookup: hydrates chunk ids into chunks (ids it lacks are dropped as orphans).
        candidates: how many candidates each retriever contributes before fusion.
        rrf_k: the RRF rank constant.
        confidence_power: γ of confidence-weighted linear fusion; 0 for a fixed ``alpha``.
        native_hybrid: ``"auto"`` lets a store that fuses natively run linear searches with
            ``0 < alpha < 1`` when ``keyword`` is that store's own index (see :meth:`native_store`);
            ``"off"`` (the default) always fuses here: the engines' fusion measured lower nDCG@10.

    Raises:
        ConfigError: ``candidates``, ``confidence_power`` or ``native_hybrid`` is out of range, or
            ``keyword`` is not a :class:`~rag.retrieve.keyword.KeywordIndex` (a bare ``BM25Index`` needs
            ``LocalBM25(index)``).
    """

    def __init__(
        self,
        store: VectorStore,
        keyword: KeywordIndex,
        embed_query: Callable[[str], np.ndarray],
        lookup: ChunkLookup,
        candidates: int = 100,
        rrf_k: int = 60,
        confidence_power: float = 3.0,
        native_hybrid: NativeHybrid = "off",
    ) -> None:
        if candidates <= 0:
            raise ConfigError(f"candidates must be positive, got {candidates}")
        if confidence_power < 0:
            raise ConfigError(f"confidence_power must be >= 0, got {confidence_power}")
        if native_hybrid not in ("auto", "off"):
            raise ConfigError(f"native_hybrid must be 'auto' or 'off', got {native_hybrid!r}")
        if not isinstance(keyword, KeywordIndex):
            raise ConfigError(
                f"keyword must be a KeywordIndex (search, scores, name), got {type(keyword).__name__}; wrap a "
                "BM25Index in rag.retrieve.keyword.LocalBM25"
            )
        self.store, self.keyword, self.embed_query, self.lookup = store, keyword, embed_query, lookup
        self.candidates, self.rrf_k, self.confidence_power = candidates, rrf_k, confidence_power
        self.native_hybrid = native_hybrid

    def native_store(self, alpha: float, fusion: Fusion) -> ProvidesHybridSearch | None:
        """The store, when a search with ``alpha`` and ``fusion`` runs as the store's native hybrid query.

        That is when ``native_hybrid`` is ``"auto"``, fusion is linear, ``0 < alpha < 1`` (the endpoints
        stay single-retriever searches, exact by construction), the keyword side is the store's own index
        (its ``store`` attribute is this store: a local ``bm25s`` index has none, and a store cannot fuse
        with a keyword side it does not hold), and the store says native search is available now.
        """
        if self.native_hybrid != "auto" or fusion != "linear" or not 0.0 < alpha < 1.0:
            return None
        store = self.store
        if getattr(self.keyword, "store", None) is not store or not isinstance(store, ProvidesHybridSearch):
            return None
        reason = store.hybrid_search_unavailable()
        if reason is not None:
            # The store warns once itself; this is the per-query trace.
            log.debug("fusing locally: native hybrid search is unavailable (%s)", reason)
            return None
        return store

    def search(
        self,
        query: str,
        k: int = 5,
        *,
        alpha: float = 0.5,
        fusion: Fusion = "linear",
        filter: Filter | None = None,
        post: PostFilter | None = None,
        vector: np.ndarray | None = None,
    ) -> list[Hit]:
        """The ``k`` best chunks for ``query`` (:meth:`search_with_evidence` without the evidence)."""
        return self.search_with_evidence(
            query, k, alpha=alpha, fusion=fusion, filter=filter, post=post, vector=vector
        )[0]

    def search_with_evidence(
        self,
        query: str,
        k: int = 5,
        *,
        alpha: float = 0.5,
        fusion: Fusion = "linear",
        filter: Filter | None = None,
        post: PostFilter | None = None,
        vector: np.ndarray | None = None,
    ) -> tuple[list[Hit], Evidence | None]:
        """The ``k`` best chunks for ``query``, and the raw evidence of both retrievers before fusion.

        The evidence (see :func:`rag.retrieve.answerable.gather_evidence`) is ``None`` for a store's
        native hybrid query, which returns fused scores only.

        A linear search with ``0 < alpha < 1`` runs as the store's native hybrid query when
        :meth:`native_store` says so; its hits carry the engine's fused score and no per-side scores.

        Args:
            vector: the dense side searches with this (normalised) vector instead of the query's
                embedding; the keyword side still reads ``query`` (HyDE uses this, natively too).

        Raises:
            ConfigError: for ``k <= 0``, ``alpha`` outside [0, 1] or an unknown fusion.
        """
        if k <= 0:
            raise ConfigError(f"k must be positive, got {k}")
        _check_alpha(alpha)
        if fusion not in ("linear", "rrf"):
            raise ConfigError(f"unknown fusion {fusion!r}; use 'linear' or 'rrf'")
        if not query.strip():
            raise ConfigError("query is empty")
        with span("rag.retrieve.search", {"rag.k": k, "rag.alpha": alpha, "rag.fusion": fusion}) as current:
            hits, evidence = self._search(query, k, alpha, fusion, filter, post, vector)
            current.set_attribute("rag.hits", len(hits))
        return hits, evidence

    def _search(
        self, query: str, k: int, alpha: float, fusion: Fusion, filter: Filter | None, post: PostFilter | None,
        vector: np.ndarray | None,
    ) -> tuple[list[Hit], Evidence | None]:
        depth = max(self.candidates, k)
        native = self.native_store(alpha, fusion)
        if native is not None:
            # The engine fuses `depth` candidates from each side and returns up to their union (2 × depth),
            # as the local fusion ranks the union: fewer would cut recall after the post-filters and
            # orphans that `_finish` drops (measured: -0.013 recall@100 on NFCorpus with `depth` only).
            if vector is None:
                vector = self._embed(query)
            with span("rag.retrieve.native_hybrid", {"rag.store": type(native).__name__, "rag.candidates": depth}) as s:
                found = native.hybrid_search(query, vector, 2 * depth, alpha, filter, candidates=depth)
                s.set_attribute("rag.results", len(found))
            fused = [FusedScore(s.chunk_id, s.score, None, None) for s in found]
            return self._finish(fused, k, post or PostFilter()), None
        use_dense, use_bm25 = alpha > 0 or fusion == "rrf", alpha < 1 or fusion == "rrf"

        if use_dense and vector is None:
            vector = self._embed(query)
        elif not use_dense:
            vector = None
        dense: list[ScoredId] = []
        if vector is not None:
            with span("rag.retrieve.dense", {"rag.store": type(self.store).__name__, "rag.candidates": depth}) as s:
                dense = self.store.search(vector, depth, filter)
                s.set_attribute("rag.results", len(dense))
        keyword: list[ScoredId] = []
        if use_bm25:
            with span("rag.retrieve.keyword", {"rag.keyword": getattr(self.keyword, "name", None),
                                               "rag.candidates": depth}) as s:
                keyword = self.keyword.search(query, depth, filter)
                s.set_attribute("rag.results", len(keyword))

        with span("rag.retrieve.fusion", {"rag.fusion": fusion, "rag.alpha": alpha}) as s:
            if fusion == "rrf":
                fused = rrf_fusion(dense, keyword, alpha, self.rrf_k)
            else:
                dense_map = {h.chunk_id: h.score for h in dense}
                bm25_map = {h.chunk_id: h.score for h in keyword}
                if use_dense and use_bm25:
                    alpha = confidence_alpha(alpha, dense, keyword, self.confidence_power)
                    self._complete_scores(query, vector, dense_map, bm25_map)
                fused = linear_fusion(dense_map, bm25_map, alpha)
                s.set_attribute("rag.alpha.effective", alpha)
            s.set_attribute("rag.candidates", len(fused))
        evidence = self._evidence(query, dense if use_dense else None, keyword if use_bm25 else None)
        return self._finish(fused, k, post or PostFilter()), evidence

    def _embed(self, query: str) -> np.ndarray:
        with span("rag.retrieve.embed_query", {"rag.embed.texts": 1}):
            return self.embed_query(query)

    def _evidence(self, query: str, dense: list[ScoredId] | None, keyword: list[ScoredId] | None) -> Evidence:
        """The answerability evidence; the terms come from a keyword side that can analyse text (the local one)."""
        analyze = getattr(self.keyword, "analyze", None)
        query_terms = top_terms = None
        if keyword is not None and callable(analyze):
            query_terms = analyze(query)
            if keyword:
                best = self.lookup.get_chunks([keyword[0].chunk_id]).get(keyword[0].chunk_id)
                top_terms = analyze(best.text) if best is not None else None
        return gather_evidence(dense, keyword, query_terms=query_terms, top_terms=top_terms,
                               keyword_name=getattr(self.keyword, "name", None))

    def _complete_scores(
        self, query: str, vector: np.ndarray, dense_map: dict[str, float], bm25_map: dict[str, float]
    ) -> None:
        """Give every union candidate its true score from the retriever that did not propose it."""
        need_dense = [cid for cid in bm25_map if cid not in dense_map]
        if need_dense:
            for cid, vec in self.store.get_vectors(need_dense).items():
                dense_map[cid] = float(np.dot(vec, vector))
        need_bm25 = [cid for cid in dense_map if cid not in bm25_map]
        if need_bm25:
            bm25_map.update(self.keyword.scores(query, need_bm25))

    def _finish(self, fused: list[FusedScore], k: int, post: PostFilter) -> list[Hit]:
        if post.min_score is not None:
            fused = [f for f in fused if f.score >= post.min_score]
        # Hydrate lazily in rank order: the per-document cap and orphan vectors can drop candidates.
        hits: list[Hit] = []
        per_doc: dict[str, int] = {}
        window = max(k * 2, 20)
        for start in range(0, len(fused), window):
            batch = fused[start : start + window]
            chunks = self.lookup.get_chunks([f.chunk_id for f in batch])
            for f in batch:
                chunk = chunks.get(f.chunk_id)
                if chunk is None:
                    continue  # an orphan vector from an interrupted ingest
                if post.max_per_doc is not None:
                    if per_doc.get(chunk.doc_id, 0) >= post.max_per_doc:
                        continue
                    per_doc[chunk.doc_id] = per_doc.get(chunk.doc_id, 0) + 1
                hits.append(Hit(chunk, f.score, f.dense, f.bm25))
                if len(hits) == k:
                    return hits
        return hits


def apply_post_filter(hits: Sequence[Hit], post: PostFilter, k: int) -> list[Hit]:
    """``post`` applied to an already ranked list of hits, cut to ``k`` (for reranked or merged lists)."""
    kept: list[Hit] = []
    per_doc: dict[str, int] = {}
    for hit in hits:
        if post.min_score is not None and hit.score < post.min_score:
            continue
        if post.max_per_doc is not None:
            if per_doc.get(hit.chunk.doc_id, 0) >= post.max_per_doc:
                continue
            per_doc[hit.chunk.doc_id] = per_doc.get(hit.chunk.doc_id, 0) + 1
        kept.append(hit)
        if len(kept) == k:
            break
    return kept
