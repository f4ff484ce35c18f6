"""The keyword side: BM25 ``match`` queries on the ``text`` field of the store's index, with its filters."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rag.core.filters import Filter
from rag.core.types import ScoredId
from rag.stores.opensearch.documents import document_id
from rag.stores.opensearch.filters import MatchesNothing, filter_clauses

if TYPE_CHECKING:
    from rag.stores.opensearch.store import OpenSearchStore

# index.max_result_window and the k-NN plugin's largest k.
MAX_RESULTS = 10_000
SCORE_SORT = [{"_score": "desc"}, {"chunk_id": "asc"}]


class OpenSearchKeywordIndex:
    """:class:`~rag.retrieve.keyword.KeywordIndex` over an :class:`OpenSearchStore`'s ``text`` field: BM25
    ``match`` queries, with the store's filters in the same ``bool`` query; it sees the store's writes.

    Args:
        store: the store whose index it searches (it lives and closes with it).
    """

    name = "opensearch-bm25"

    def __init__(self, store: OpenSearchStore) -> None:
        self.store = store

    def search(self, query: str, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` best chunks (at most 10,000) sharing a term with ``query`` that satisfy ``filter``, best
        first, ties by chunk id.

        Raises:
            ValueError: ``k`` is not positive.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        try:
            body = self.search_body(query, min(k, MAX_RESULTS), filter)
        except MatchesNothing:
            return []
        if not self.store._visible():
            return []
        store = self.store
        return store._hits(store._call("search", store.client.search, index=store.index, body=body), convert=float)

    @staticmethod
    def search_body(query: str, size: int, filter: Filter | None) -> dict[str, Any]:
        """The request body of :meth:`search`.

        Raises:
            MatchesNothing: the filter can match nothing.
        """
        clauses = filter_clauses(filter)
        bool_query: dict[str, Any] = {"must": [{"match": {"text": {"query": query}}}]}
        if clauses:
            bool_query["filter"] = clauses
        return {"size": size, "_source": ["chunk_id"], "track_scores": True, "sort": SCORE_SORT,
                "query": {"bool": bool_query}}

    def scores(self, query: str, chunk_ids: Sequence[str]) -> dict[str, float]:
        """BM25 scores of ``chunk_ids``: 0.0 for a stored chunk that shares no term with ``query``; ids the
        index does not hold are left out."""
        ids = list(dict.fromkeys(document_id(cid) for cid in chunk_ids))
        if not ids or not self.store._visible():
            return {}
        store = self.store
        found: dict[str, float] = {}
        for start in range(0, len(ids), MAX_RESULTS):
            body = self.scores_body(query, ids[start : start + MAX_RESULTS])
            response = store._call("search", store.client.search, index=store.index, body=body)
            found.update((hit.chunk_id, hit.score) for hit in store._hits(response, convert=float))
        return found

    @staticmethod
    def scores_body(query: str, doc_ids: list[str]) -> dict[str, Any]:
        """The request body of :meth:`scores`: the ``match`` is optional (``should``), so every listed
        document comes back, scoring 0 when it matches no term."""
        return {
            "size": len(doc_ids),
            "_source": ["chunk_id"],
            "query": {"bool": {
                "should": [{"match": {"text": {"query": query}}}],
                "filter": [{"ids": {"values": doc_ids}}],
            }},
        }
