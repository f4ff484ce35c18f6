"""The server-side hybrid query: dense and sparse BM25 prefetches fused by weighted RRF inside Qdrant.

:class:`~rag.stores.qdrant.store.QdrantStore`'s ``hybrid_search_unavailable``, ``hybrid_request`` and
``hybrid_search`` (the optional :class:`~rag.stores.base.ProvidesHybridSearch`) delegate here; the functions
work on the store's client, collection and sparse-vector state.
"""

from __future__ import annotations

import importlib.metadata
import time
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.core.errors import ConfigError, StoreError
from rag.core.filters import Filter
from rag.core.types import ScoredId
from rag.stores.base import unit_rows
from rag.stores.qdrant.client import warn_once
from rag.stores.qdrant.filters import MatchesNothing

if TYPE_CHECKING:
    from rag.stores.qdrant.store import QdrantStore

# RRF with a chosen k came in server 1.16, with per-prefetch weights in 1.17.
WEIGHTED_RRF_SINCE = (1, 17)
# How long an unreadable server version (perhaps a passing network failure) is trusted before asking again.
_RECHECK_SECONDS = 60.0


def _client_version() -> str:
    try:
        return importlib.metadata.version("qdrant-client")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def _client_has_weighted_rrf(models: Any) -> bool:
    """Whether the installed qdrant-client can send RRF with per-prefetch weights (``Rrf.weights``)."""
    rrf = getattr(models, "Rrf", None)
    return hasattr(models, "RrfQuery") and rrf is not None and "weights" in getattr(rrf, "model_fields", {})


def unavailable_reason(store: QdrantStore) -> str | None:
    """Why :func:`hybrid_search` cannot run (no sparse vector, a client or server without weighted
    RRF), or ``None``. The server's version is read once; the reason is logged once as a warning."""
    checked = store._native_checked_at
    if checked is not None and time.monotonic() - checked < _RECHECK_SECONDS:
        return store._native_reason
    reason, final = None, True
    if store.keyword_index() is None:
        reason = store._sparse_missing or "the sparse BM25 vector is switched off (sparse=False)"
    elif not _client_has_weighted_rrf(store._models):
        reason = (
            f"qdrant-client {_client_version()} cannot send RRF with weights (models.Rrf.weights); install "
            "qdrant-client 1.17 or later"
        )
    elif store.url is not None:
        version = store._read_server_version()
        if version is None:
            reason, final = f"the version of the Qdrant server at {store._where} cannot be read", False
        elif version < WEIGHTED_RRF_SINCE:
            reason = (
                f"the Qdrant server at {store._where} is {version[0]}.{version[1]}, older than "
                f"{'.'.join(map(str, WEIGHTED_RRF_SINCE))} (RRF with weights)"
            )
    if reason is not None and store._sparse_name is not None:
        warn_once(f"native hybrid search is unavailable: {reason}; fusing locally")
    # An unreadable version may be a passing network failure: ask again a minute later.
    store._native_reason = reason
    store._native_checked_at = float("inf") if final else time.monotonic()
    return reason


def hybrid_request(
    store: QdrantStore, query: str, vector: list[float], k: int, alpha: float, native: Any | None, candidates: int
) -> dict[str, Any] | None:
    """The keyword arguments of ``query_points`` for :func:`hybrid_search`; ``None`` if no side can run.

    A dense and a sparse prefetch, each with the filter and ``limit = max(k, candidates)``, fused by
    ``RrfQuery`` with weights ``[alpha, 1 - alpha]`` (dense first) and ``k = 2 * rrf_k + 1``. Qdrant
    scores a point at 0-based rank ``r`` of a list with weight ``w`` as ``1 / ((r + 1) / w + k - 1)``,
    so at ``alpha = 0.5`` a chunk at 1-based rank ``R`` gets ``1 / (2R + 2 * rrf_k)``, half of local
    RRF's ``1 / (R + rrf_k)``: the same ranking. An endpoint ``alpha`` (or a query without indexable
    terms) sends one prefetch, so Qdrant never sees a zero weight.
    """
    m = store._models
    depth = max(k, candidates)
    prefetch, weights = [], []
    if alpha > 0:
        prefetch.append(m.Prefetch(query=vector, filter=native, limit=depth))
        weights.append(alpha)
    sparse = store.sparse_query(query) if alpha < 1 else None
    if sparse is not None:
        prefetch.append(m.Prefetch(query=sparse, using=store._sparse_name, filter=native, limit=depth))
        weights.append(1.0 - alpha)
    if not prefetch:
        return None
    return {
        "prefetch": prefetch,
        "query": m.RrfQuery(rrf=m.Rrf(k=2 * store.rrf_k + 1, weights=weights)),
        "limit": k,
        "with_payload": ["chunk_id"],
    }


def hybrid_search(
    store: QdrantStore,
    query: str,
    vector: np.ndarray,
    k: int,
    alpha: float,
    filter: Filter | None = None,
    *,
    candidates: int = 100,
) -> list[ScoredId]:
    """Hybrid search inside Qdrant: dense and sparse BM25 prefetches fused by weighted RRF (one
    Query API request; see :func:`hybrid_request`). Scores are the RRF values, not cosine similarities.

    Args:
        query: the keyword query text.
        vector: the dense query vector.
        k: results wanted.
        alpha: weight of the dense side, 0 to 1.
        filter: applied inside both prefetches.
        candidates: each prefetch's limit (at least ``k``).

    Raises:
        ValueError: ``k`` is not positive.
        ConfigError: ``alpha`` is outside [0, 1].
        IndexMismatchError: ``vector`` has another dimension than the collection.
        FilterError: a filter value Qdrant cannot compare.
        StoreError: native hybrid search is unavailable (``store.hybrid_search_unavailable()`` says why),
            or the engine failed.
    """
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if not 0.0 <= alpha <= 1.0:
        raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
    dense = unit_rows(vector, store.dimension, "the query")[0].tolist()
    reason = store.hybrid_search_unavailable()
    if reason is not None:
        raise StoreError(f"native hybrid search is unavailable: {reason}; set retrieval.native_hybrid = 'off'")
    try:
        native = store._filters.translate(filter) if filter else None
    except MatchesNothing:
        return []
    request = store.hybrid_request(query, dense, k, alpha, native, candidates)
    if request is None:
        return []
    response = store._call("search", store.client.query_points, store.collection, **request)
    return [ScoredId(point.payload["chunk_id"], float(point.score)) for point in response.points]
