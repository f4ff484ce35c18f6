"""Answerability: how likely the index holds an answer to a query, from the raw scores fusion hides.

Fusion min-max normalises each retriever's scores per query, so the best fused hit scores near 1 whether it
answers the query or is merely the least bad chunk. The raw scores say more: a query whose answer is indexed
usually meets a chunk with a high cosine similarity that stands out from the next ones, matches its rarer
terms with a high BM25 score per query term, and the two retrievers agree on their best chunks. A miss looks
flat on both sides. :func:`gather_evidence` collects those signals into a :class:`~rag.core.types.Evidence`,
and :func:`answerable_probability` turns them into a probability with a logistic regression whose
coefficients (:mod:`rag.retrieve.answerable_model`) were fitted by ``benchmarks/bench_answerable.py --fit``
on judged NFCorpus and DBpedia queries, each asked once against the full index (answerable) and once against
the index without its relevant documents (unanswerable).

Three models ship, picked by which evidence a search produced:

* ``hybrid``: both retrievers ran and the keyword side is the local ``bm25s`` index (the default search);
* ``dense``: the dense side only (``alpha = 1``, or a keyword side of another scale, such as Postgres
  full-text search, whose scores the model was not fitted on);
* ``keyword``: BM25 only (``alpha = 0``).

A store's native hybrid query returns fused scores only, and then there is no probability (``None``).
The reranker's best score is reported in the evidence but not used by the models: no reranker ships, and a
probability must not change meaning with the model a user configures.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence

from rag.core.types import Evidence, ScoredId
from rag.retrieve.answerable_model import MODELS

EVIDENCE_DEPTH = 10
"""The gaps and the agreement look at each retriever's top this many."""


def gather_evidence(
    dense: Sequence[ScoredId] | None,
    keyword: Sequence[ScoredId] | None,
    *,
    query_terms: Sequence[str] | None = None,
    top_terms: Collection[str] | None = None,
    keyword_name: str | None = None,
) -> Evidence:
    """The evidence of one search from each retriever's ranked raw results (best first).

    Args:
        dense: the dense side's results, or ``None`` when it did not run.
        keyword: the keyword side's results, or ``None`` when it did not run (an empty list means it ran
            and no chunk shares a term with the query: strong evidence of a miss).
        query_terms: the analysed query terms, for the per-term BM25 score and the coverage.
        top_terms: the analysed terms of the best keyword hit, for the coverage.
        keyword_name: the keyword side's name (``bm25s`` for the local index).
    """
    depth = EVIDENCE_DEPTH
    dense_top = dense_gap = None
    if dense is not None and dense:
        dense_top = float(dense[0].score)
        rest = [float(s.score) for s in dense[1:depth]]
        dense_gap = dense_top - (sum(rest) / len(rest)) if rest else 0.0
    bm25_top = bm25_per_term = bm25_gap = coverage = None
    if keyword is not None:
        top = float(keyword[0].score) if keyword else 0.0
        reference = float(keyword[depth - 1].score) if len(keyword) >= depth else 0.0
        bm25_top = top
        bm25_gap = (top - reference) / top if top > 0 else 0.0
        if query_terms is not None:
            bm25_per_term = top / len(query_terms) if query_terms else 0.0
            distinct = set(query_terms)
            if top_terms is not None or not keyword:
                coverage = len(distinct.intersection(top_terms or ())) / len(distinct) if distinct else 0.0
    agreement = in_bm25 = None
    if dense and keyword is not None:
        dense_ids = [s.chunk_id for s in dense[:depth]]
        keyword_ids = {s.chunk_id for s in keyword[:depth]}
        agreement = sum(cid in keyword_ids for cid in dense_ids) / len(dense_ids)
        in_bm25 = dense_ids[0] in keyword_ids
    return Evidence(
        dense_top=dense_top, dense_gap=dense_gap, bm25_top=bm25_top, bm25_per_term=bm25_per_term,
        bm25_gap=bm25_gap, term_coverage=coverage, agreement=agreement, dense_top_in_bm25=in_bm25,
        query_terms=len(query_terms) if query_terms is not None else None,
        keyword=keyword_name if keyword is not None else None,
    )


def model_for(evidence: Evidence) -> str | None:
    """Which shipped model applies to ``evidence``: ``hybrid``, ``dense``, ``keyword``, or ``None``."""
    has_dense = evidence.dense_top is not None
    has_bm25 = evidence.keyword == "bm25s" and evidence.bm25_per_term is not None and evidence.term_coverage is not None
    if has_dense and has_bm25:
        return "hybrid"
    if has_dense:
        return "dense"
    if has_bm25:
        return "keyword"
    return None


def feature_vector(evidence: Evidence, model: str) -> list[float]:
    """The named model's input features from ``evidence`` (see :data:`FEATURE_OF`)."""
    return [FEATURE_OF[name](evidence) for name in MODELS[model]["features"]]


FEATURE_OF = {
    "dense_top": lambda e: float(e.dense_top),
    "dense_gap": lambda e: float(e.dense_gap),
    "log_bm25_per_term": lambda e: math.log1p(max(float(e.bm25_per_term), 0.0)),
    "log_bm25_top": lambda e: math.log1p(max(float(e.bm25_top), 0.0)),
    "bm25_gap": lambda e: float(e.bm25_gap),
    "term_coverage": lambda e: float(e.term_coverage or 0.0),
    "agreement": lambda e: float(e.agreement or 0.0),
    "dense_top_in_bm25": lambda e: 1.0 if e.dense_top_in_bm25 else 0.0,
}
FEATURES = tuple(FEATURE_OF)
"""Every feature a model may use, by name."""


def answerable_probability(evidence: Evidence | None) -> float | None:
    """The calibrated probability that the index holds an answer, or ``None`` without usable evidence."""
    if evidence is None:
        return None
    model = model_for(evidence)
    if model is None or model not in MODELS:
        return None
    params = MODELS[model]
    z = float(params["intercept"])
    for x, mean, scale, coef in zip(
        feature_vector(evidence, model), params["mean"], params["scale"], params["coef"], strict=True
    ):
        z += coef * (x - mean) / scale
    return 1.0 / (1.0 + math.exp(-z)) if z > -700 else 0.0
