"""The server-side hybrid query: a ``hybrid`` query whose BM25 and k-NN sub-query scores a search pipeline
min-max normalises and combines with weight alpha (the neural-search plugin).

:class:`~rag.stores.opensearch.store.OpenSearchStore`'s ``hybrid_search`` (the optional
:class:`~rag.stores.base.ProvidesHybridSearch`) delegates here; the functions work on the store's client and
the pipelines it has created.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from rag.core.errors import ConfigError
from rag.core.filters import Filter
from rag.core.types import ScoredId
from rag.stores.base import unit_rows
from rag.stores.opensearch.filters import MatchesNothing, filter_clauses
from rag.stores.opensearch.keyword import MAX_RESULTS

if TYPE_CHECKING:
    from rag.stores.opensearch.store import OpenSearchStore


def pipeline_name(alpha: float) -> str:
    """The search pipeline for ``alpha`` rounded to 2 decimals: ``rag-hybrid-a050`` for 0.5."""
    return f"rag-hybrid-a{round(alpha * 100):03d}"


def pipeline_body(alpha: float) -> dict[str, Any]:
    """The normalization processor: min-max per sub-query, arithmetic mean weighted ``[1 - α, α]``
    (keyword first, as in :func:`hybrid_body`)."""
    a = round(alpha, 2)
    return {
        "description": f"rag-platform hybrid search, alpha={a:.2f}: min_max, arithmetic_mean [keyword, dense]",
        "phase_results_processors": [
            {
                "normalization-processor": {
                    "normalization": {"technique": "min_max"},
                    "combination": {
                        "technique": "arithmetic_mean",
                        "parameters": {"weights": [round(1 - a, 2), a]},
                    },
                }
            }
        ],
    }


def hybrid_body(
    query: str, vector: list[float], size: int, depth: int, filter: Filter | None
) -> dict[str, Any]:
    """The ``hybrid`` query: BM25 ``match`` and ``knn`` (filter inside both), fused by the pipeline.

    Raises:
        MatchesNothing: the filter can match nothing.
    """
    clauses = filter_clauses(filter)
    keyword: dict[str, Any] = {"must": [{"match": {"text": {"query": query}}}]}
    knn: dict[str, Any] = {"vector": vector, "k": depth}
    if clauses:
        keyword["filter"] = clauses
        knn["filter"] = {"bool": {"filter": clauses}}
    return {
        "size": size,
        "_source": ["chunk_id"],
        "query": {"hybrid": {"queries": [{"bool": keyword}, {"knn": {"vector": knn}}]}},
    }


def hybrid_search(
    store: OpenSearchStore,
    query: str,
    vector: np.ndarray,
    k: int,
    alpha: float,
    filter: Filter | None = None,
    *,
    candidates: int = 100,
) -> list[ScoredId]:
    """Hybrid search inside OpenSearch: a ``hybrid`` query whose sub-query scores a search pipeline
    min-max normalises and combines as ``(1 - α) · keyword + α · dense`` (arithmetic mean).

    The pipeline for ``alpha`` rounded to 2 decimals (``rag-hybrid-a050``) is created on first use by
    this store object. Scores are the fused values in [0, 1], not cosine similarities. The engine's
    :class:`~rag.retrieve.hybrid.HybridRetriever` calls it for linear searches with ``0 < alpha < 1``
    (``retrieval.native_hybrid = "auto"``), with ``k = candidates = max(retrieval.candidates, k)``.

    Args:
        query: the keyword query text.
        vector: the query embedding.
        k: results wanted (at most 10,000).
        alpha: weight of the dense side, 0 to 1.
        filter: applied inside both sub-queries.
        candidates: the ``knn`` sub-query's ``k`` (at least ``k``).

    Raises:
        ValueError: ``k`` is not positive.
        ConfigError: ``alpha`` is outside [0, 1].
        StoreError: OpenSearch failed (the neural-search plugin provides the ``hybrid`` query).
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    size = min(k, MAX_RESULTS)
    query_vector = unit_rows(vector, store.dimension, "the query")[0].tolist()
    try:
        body = hybrid_body(query, query_vector, size, min(max(size, candidates), MAX_RESULTS), filter)
    except MatchesNothing:
        return []
    if not store._visible():
        return []
    name = ensure_pipeline(store, alpha)
    params = {"search_pipeline": name}
    response = store._call("search", store.client.search, index=store.index, body=body, params=params)
    return store._hits(response, convert=float)


def ensure_pipeline(store: OpenSearchStore, alpha: float) -> str:
    """The search pipeline for ``alpha``, created on the cluster the first time ``store`` uses it."""
    name = pipeline_name(alpha)
    with store._lock:
        if name not in store._pipelines:
            store._call(
                "create the search pipeline for", store.client.transport.perform_request,
                "PUT", f"/_search/pipeline/{name}", body=pipeline_body(alpha),
            )
            store._pipelines.add(name)
    return name
