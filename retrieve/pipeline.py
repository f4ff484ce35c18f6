"""The retrieval pipeline: query transforms → hybrid search (pre-filters inside) → rerank → post-filters.

Every stage is optional and off by default; with all of them off this is exactly
:meth:`HybridRetriever.search`. The stages, in order:

1. **condense** (when earlier turns are given): the LLM rewrites a follow-up ("and how do I undo it?")
   into a standalone question. It is what gets searched, reranked against, and answered. Where the only
   LLM would be the bundled one (``condense_llm`` false), the previous question and the follow-up are
   searched together instead, without asking it.
2. **rewrite**: the LLM turns the question into a keyword search query; both retrievers search it.
3. **multi-query** (N): the LLM writes N more variants; each is searched and the lists are merged by
   reciprocal-rank fusion, deduplicated by chunk.
4. **HyDE**: the LLM writes a passage that would answer the question; the dense side searches with its
   embedding (blended with the search query's by ``hyde_weight``), BM25 keeps the query. The passage
   never reaches the answer prompt or the citations.
5. **hybrid search** of each query, pre-filters inside both retrievers.
6. **rerank**: a cross-encoder (or the LLM) scores the top ``top_n`` candidates against the question;
   the final score is the reranker's, or a blend with the fused score. Candidates below that window
   (when ``k`` is larger) follow in the fused order, at the window's lowest score.
7. **post-filters** (``min_score`` on the final score, ``max_per_doc``), then the top ``k``.

A transform whose LLM call fails, times out or replies with nothing usable falls back (to the plain
query; a follow-up to the previous question plus the follow-up) with a warning: a search never fails
because a transform failed. So does an LLM reranker (to the fused order). :class:`Retrieval` carries the
hits, those warnings and an ``explain`` record of what every stage produced and how long it took.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Protocol

import numpy as np

from rag.core.errors import ConfigError, GenerationError
from rag.core.filters import Filter
from rag.core.tracing import set_attributes, span, stage_failed
from rag.core.types import Evidence, Hit
from rag.retrieve.answerable import answerable_probability
from rag.retrieve.hybrid import Fusion, HybridRetriever, PostFilter, apply_post_filter, min_max
from rag.retrieve.transforms import QueryTransformer, heuristic_standalone

log = logging.getLogger(__name__)

MERGE_RRF_K = 60
"""Rank constant of the reciprocal-rank fusion that merges multi-query lists."""


@dataclass(frozen=True, slots=True)
class StageOptions:
    """Which stages run for one retrieval (see the module docstring); the defaults run none."""

    hyde: bool = False
    hyde_weight: float = 0.5
    rewrite: bool = False
    multi_query: int = 0
    condense: bool = True
    # False: condense without the LLM (the previous question and the follow-up, quietly), for setups whose
    # only LLM would be the bundled one, which writes wrong standalone questions.
    condense_llm: bool = True
    rerank_top_n: int = 20
    rerank_score: Literal["rerank", "blend"] = "rerank"
    rerank_blend_weight: float = 0.7

    def __post_init__(self) -> None:
        if not 0.0 <= self.hyde_weight <= 1.0:
            raise ConfigError(f"hyde_weight must be within [0, 1], got {self.hyde_weight}")
        if self.multi_query < 0:
            raise ConfigError(f"multi_query must be 0 or more, got {self.multi_query}")
        if self.rerank_top_n <= 0:
            raise ConfigError(f"rerank.top_n must be positive, got {self.rerank_top_n}")
        if self.rerank_score not in ("rerank", "blend"):
            raise ConfigError(f"rerank.score must be 'rerank' or 'blend', got {self.rerank_score!r}")
        if not 0.0 <= self.rerank_blend_weight <= 1.0:
            raise ConfigError(f"rerank.blend_weight must be within [0, 1], got {self.rerank_blend_weight}")


@dataclass(slots=True)
class Retrieval:
    """The outcome of one retrieval.

    Attributes:
        query: the question as searched and answered: the user's, or its standalone form after a
            follow-up was condensed.
        hits: the final hits, best first.
        explain: what each stage produced and how long it took (``rag search --explain``).
        warnings: stages that fell back, and why.
        evidence: the raw retriever scores behind the answerability (of the first searched query; the
            reranker's best score when it ran), ``None`` for a store's native hybrid query.
        answerable: the calibrated probability that the index holds an answer
            (:mod:`rag.retrieve.answerable`), ``None`` without usable evidence.
    """

    query: str
    hits: list[Hit]
    explain: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    evidence: Evidence | None = None
    answerable: float | None = None

    def answerability(self) -> dict[str, Any]:
        """``{"answerable": probability, "evidence": {...}}``: the fields search and ask output carry."""
        return {
            "answerable": self.answerable,
            "evidence": self.evidence.to_dict() if self.evidence is not None else None,
        }


class _Trace:
    """Collects the explain record while the pipeline runs."""

    def __init__(self, question: str) -> None:
        self.started = time.perf_counter()
        self.stages: list[dict[str, Any]] = []
        self.warnings: list[str] = []
        self.question = question
        self.llm_failed: str | None = None  # once a transform's LLM call fails, the others skip it

    def stage(self, name: str, started: float, **fields: Any) -> dict[str, Any]:
        record = {"stage": name, "ms": round((time.perf_counter() - started) * 1000, 2), **fields}
        self.stages.append(record)
        return record

    def fallback(self, name: str, started: float, exc: Exception, instead: str, **fields: Any) -> None:
        if self.llm_failed is None:
            self.llm_failed = name
        message = f"{name} failed ({exc}); {instead}"
        log.info("%s", message)  # the caller shows Retrieval.warnings; logging it as a warning would say it twice
        self.warnings.append(message)
        self.stage(name, started, fallback=str(exc), **fields)

    def result(
        self, query: str, search_queries: list[str], hits: list[Hit], evidence: Evidence | None = None
    ) -> Retrieval:
        answerable = answerable_probability(evidence)
        explain = {
            "question": self.question,
            "standalone_question": query if query != self.question else None,
            "search_queries": search_queries,
            "stages": self.stages,
            "warnings": list(self.warnings),
            "answerable": answerable,
            "evidence": evidence.to_dict() if evidence is not None else None,
            "total_ms": round((time.perf_counter() - self.started) * 1000, 2),
        }
        return Retrieval(query, hits, explain, list(self.warnings), evidence, answerable)


class Reranker(Protocol):
    """What the rerank stage needs (:class:`rag.retrieve.rerank.Reranker`, restated so that this module
    does not import sentence-transformers)."""

    name: str

    def score(self, query: str, texts: Sequence[str]) -> list[float]: ...


class RetrievalPipeline:
    """Runs the stages around one :class:`HybridRetriever`.

    Args:
        retriever: the first stage.
        embed_query: embeds a query or a HyDE passage (normalised), as the retriever's dense side does.
        transformer: makes the LLM transformer on first use (starting an embedded LLM only when a
            transform is asked for); ``None`` when no LLM is available.
    """

    def __init__(
        self,
        retriever: HybridRetriever,
        embed_query: Callable[[str], np.ndarray],
        transformer: Callable[[], QueryTransformer] | None = None,
    ) -> None:
        self.retriever, self.embed_query, self._transformer = retriever, embed_query, transformer

    def _llm(self, trace: _Trace) -> QueryTransformer:
        if trace.llm_failed is not None:
            # A timed-out request still occupies a one-slot server: asking again would wait again.
            raise GenerationError(f"skipped, the LLM already failed in this search's {trace.llm_failed} stage")
        if self._transformer is None:
            raise GenerationError("no LLM is configured for query transforms")
        return self._transformer()

    def run(
        self,
        question: str,
        k: int,
        *,
        alpha: float,
        fusion: Fusion,
        filter: Filter | None = None,
        post: PostFilter | None = None,
        options: StageOptions | None = None,
        history: Sequence[Mapping[str, str]] = (),
        reranker: Reranker | None = None,
    ) -> Retrieval:
        """The ``k`` best chunks for ``question`` through the stages ``options`` switch on.

        Raises:
            ConfigError / FilterError: a bad argument (never a failed transform).
        """
        if k <= 0:
            raise ConfigError(f"k must be positive, got {k}")
        if not question.strip():
            raise ConfigError("query is empty")
        options = options or StageOptions()
        post = post or PostFilter()
        trace = _Trace(question)

        query = (
            self._condense(question, history, trace, llm=options.condense_llm)
            if history and options.condense else question
        )
        search_query = self._rewrite(query, trace) if options.rewrite else query
        queries = [search_query]
        if options.multi_query:
            queries += self._variants(query, search_query, options.multi_query, trace)
        vector = self._hyde(query, search_query, options.hyde_weight, trace) if options.hyde else None

        search = {"alpha": alpha, "fusion": fusion, "filter": filter}
        # Where the two sides are fused: here, or inside a store that runs the hybrid query natively.
        fused_in = "store" if self.retriever.native_store(alpha, fusion) is not None else "local"
        started = time.perf_counter()
        if reranker is None and len(queries) == 1:
            # No stage reorders the list: the retriever applies the post-filters itself, as it always has.
            hits, evidence = self.retriever.search_with_evidence(search_query, k, post=post, vector=vector, **search)
            trace.stage("search", started, queries=queries, hits=len(hits), fused_in=fused_in)
            return trace.result(query, queries, hits, evidence)

        depth = max(k, options.rerank_top_n) if reranker is not None else k
        # The per-document cap goes into each search, so a capped list still fills ``depth``.
        capped = PostFilter(max_per_doc=post.max_per_doc)
        searched = [
            self.retriever.search_with_evidence(q, depth, post=capped, vector=vector if i == 0 else None, **search)
            for i, q in enumerate(queries)
        ]
        lists = [found for found, _ in searched]
        evidence = searched[0][1]  # the search query's own: variants are the LLM's words, not the user's
        if len(lists) > 1:
            with span("rag.retrieve.merge", {"rag.queries": len(lists)}):
                candidates = merge_ranked(lists)
        else:
            candidates = lists[0]
        trace.stage("search", started, queries=queries, hits=len(candidates), fused_in=fused_in,
                    merged=("rrf" if len(lists) > 1 else None))
        if reranker is not None:
            window = options.rerank_top_n
            reranked = self._rerank(reranker, query, candidates[:window], options, trace)
            tail = candidates[window:depth]
            if reranked is not None:
                # Below the window the fused order stands, at the window's lowest score (scores never rise).
                floor = reranked[-1].score if reranked else 0.0
                tail = [replace(hit, score=floor) for hit in tail]
                candidates = reranked + tail
                rerank_scores = [hit.rerank_score for hit in reranked if hit.rerank_score is not None]
                if evidence is not None and rerank_scores:
                    evidence = replace(evidence, rerank_top=max(rerank_scores))
            else:
                candidates = candidates[:depth]
        started = time.perf_counter()
        with span("rag.retrieve.post_filter", {"rag.candidates": len(candidates)}) as current:
            hits = apply_post_filter(candidates, post, k)
            current.set_attribute("rag.hits", len(hits))
        if post.min_score is not None or post.max_per_doc is not None:
            trace.stage("post_filter", started, kept=len(hits), of=len(candidates))
        return trace.result(query, queries, hits, evidence)

    # -- transforms -------------------------------------------------------------------------------

    def _condense(
        self, question: str, history: Sequence[Mapping[str, str]], trace: _Trace, *, llm: bool = True
    ) -> str:
        started = time.perf_counter()
        with span("rag.retrieve.condense", {"rag.history.turns": len(history), "rag.llm": llm}) as current:
            if not llm:
                standalone = heuristic_standalone(question, history)
                trace.stage("condense", started, output=standalone, method="heuristic")
                return standalone
            try:
                standalone, reply = self._llm(trace).condense(question, history)
            except GenerationError as exc:
                fallback = heuristic_standalone(question, history)
                stage_failed(current, exc, "heuristic")
                trace.fallback("condense", started, exc, "searched with the previous question and the follow-up",
                               output=fallback)
                return fallback
            current.set_attribute("rag.cached", reply.cached)
        trace.stage("condense", started, output=standalone, cached=reply.cached)
        return standalone

    def _rewrite(self, query: str, trace: _Trace) -> str:
        started = time.perf_counter()
        with span("rag.retrieve.rewrite") as current:
            try:
                rewritten, reply = self._llm(trace).rewrite(query)
            except GenerationError as exc:
                stage_failed(current, exc, "question")
                trace.fallback("rewrite", started, exc, "searched with the question as asked", output=query)
                return query
            current.set_attribute("rag.cached", reply.cached)
        trace.stage("rewrite", started, output=rewritten, cached=reply.cached)
        return rewritten

    def _variants(self, query: str, search_query: str, n: int, trace: _Trace) -> list[str]:
        started = time.perf_counter()
        with span("rag.retrieve.multi_query", {"rag.multi_query": n}) as current:
            try:
                variants, reply = self._llm(trace).variants(query, n)
            except GenerationError as exc:
                stage_failed(current, exc, "one query")
                trace.fallback("multi_query", started, exc, "searched with the one query", output=[])
                return []
            variants = [v for v in variants if v.casefold() != search_query.casefold()]
            set_attributes(current, {"rag.cached": reply.cached, "rag.queries": len(variants)})
        trace.stage("multi_query", started, output=variants, cached=reply.cached)
        return variants

    def _hyde(self, query: str, search_query: str, weight: float, trace: _Trace) -> np.ndarray | None:
        started = time.perf_counter()
        with span("rag.retrieve.hyde", {"rag.hyde.weight": weight}) as current:
            try:
                passage, reply = self._llm(trace).hyde(query)
            except GenerationError as exc:
                stage_failed(current, exc, "query")
                trace.fallback("hyde", started, exc, "the dense side searched with the query")
                return None
            current.set_attribute("rag.cached", reply.cached)
            with span("rag.retrieve.embed_query", {"rag.embed.texts": 1 if weight >= 1.0 else 2}):
                vector = weight * np.asarray(self.embed_query(passage), dtype=np.float32)
                if weight < 1.0:
                    vector = vector + (1.0 - weight) * np.asarray(self.embed_query(search_query), dtype=np.float32)
            vector = vector / max(float(np.linalg.norm(vector)), 1e-12)
        trace.stage("hyde", started, output=passage, cached=reply.cached, weight=weight)
        return vector.astype(np.float32)

    # -- rerank -----------------------------------------------------------------------------------

    def _rerank(
        self, reranker: Reranker, query: str, candidates: list[Hit], options: StageOptions, trace: _Trace
    ) -> list[Hit] | None:
        """The reranked ``candidates``, or ``None`` when the reranker failed (the fused order stands)."""
        started = time.perf_counter()
        if not candidates:
            trace.stage("rerank", started, model=reranker.name, ranks=[])
            return candidates
        with span("rag.retrieve.rerank", {"rag.rerank.model": reranker.name,
                                          "rag.rerank.candidates": len(candidates)}) as current:
            try:
                scores = reranker.score(query, [hit.chunk.text for hit in candidates])
            except GenerationError as exc:
                stage_failed(current, exc, "fused order")
                trace.fallback("rerank", started, exc, "kept the fused order", model=reranker.name)
                return None
        if len(scores) != len(candidates):
            raise GenerationError(f"reranker {reranker.name} returned {len(scores)} scores for {len(candidates)}")
        reranked = rerank_hits(candidates, scores, options.rerank_score, options.rerank_blend_weight)
        before = {hit.chunk.chunk_id: rank for rank, hit in enumerate(candidates, start=1)}
        ranks = [
            {"chunk_id": hit.chunk.chunk_id, "doc_id": hit.chunk.doc_id, "before": before[hit.chunk.chunk_id],
             "after": rank, "rerank_score": hit.rerank_score, "score": hit.score}
            for rank, hit in enumerate(reranked, start=1)
        ]
        unscored = sum(1 for s in scores if math.isnan(s))
        trace.stage("rerank", started, model=reranker.name, score=options.rerank_score, unscored=unscored,
                    ranks=ranks)
        return reranked


def rerank_hits(hits: Sequence[Hit], scores: Sequence[float], mode: str = "rerank", weight: float = 0.7) -> list[Hit]:
    """``hits`` reordered by reranker ``scores`` (NaN = could not be scored).

    ``mode="rerank"``: the final score is the reranker's. ``"blend"``: ``weight`` × the reranker's score
    plus (1 − ``weight``) × the fused score, both min-max scaled over these hits. A hit the reranker could
    not score takes the lowest reranker score given, so it sinks below the scored ones; ties keep the
    fused order.
    """
    valid = [s for s in scores if not math.isnan(s)]
    floor = min(valid) if valid else 0.0
    filled = {hit.chunk.chunk_id: (floor if math.isnan(s) else float(s)) for hit, s in zip(hits, scores)}
    if mode == "blend":
        rerank_norm = min_max(filled)
        fused_norm = min_max({hit.chunk.chunk_id: hit.score for hit in hits})
        final = {cid: weight * rerank_norm[cid] + (1 - weight) * fused_norm[cid] for cid in filled}
    else:
        final = filled
    order = sorted(range(len(hits)), key=lambda i: (-final[hits[i].chunk.chunk_id], i))
    return [
        replace(hits[i], score=final[hits[i].chunk.chunk_id],
                rerank_score=None if math.isnan(scores[i]) else float(scores[i]))
        for i in order
    ]


def merge_ranked(lists: Sequence[Sequence[Hit]], k: int = MERGE_RRF_K) -> list[Hit]:
    """Reciprocal-rank fusion of several ranked lists, deduplicated by chunk.

    A chunk's score is ``Σ 1 / (k + rank)`` over the lists it appears in; it keeps the dense and BM25
    scores of its first appearance. Ties are broken by chunk id.
    """
    scores: dict[str, float] = {}
    first: dict[str, Hit] = {}
    for ranked in lists:
        for rank, hit in enumerate(ranked, start=1):
            cid = hit.chunk.chunk_id
            scores[cid] = scores.get(cid, 0.0) + 1.0 / (k + rank)
            first.setdefault(cid, hit)
    order = sorted(scores, key=lambda cid: (-scores[cid], cid))
    return [replace(first[cid], score=scores[cid]) for cid in order]
