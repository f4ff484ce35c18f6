"""The keyword side of hybrid search: the :class:`KeywordIndex` protocol (defined in :mod:`rag.stores.base`,
next to :class:`~rag.stores.base.VectorStore`) and its local implementation.

Hybrid retrieval needs two things from a keyword index: its best chunks for a query (with a metadata
filter applied inside the search), and the true keyword score of any other chunk, so that a chunk the
dense side proposed is fused with its real keyword score rather than a guess. :class:`KeywordIndex` is
exactly that. Two implementations ship:

* :class:`LocalBM25`, the embedded default: the persisted ``bm25s`` index (:class:`~rag.retrieve.bm25.BM25Index`)
  that the engine builds from the catalog and stamps with its generation;
* a store's own text search, when the store offers one through the optional ``keyword_index()``
  capability (see :mod:`rag.stores.base`); :class:`~rag.stores.pgvector.PgVectorStore` offers
  Postgres full-text search over the chunk text it already holds.

Scores are only compared within one index (fusion min-max normalises them per query), so an index may
use any scale where higher is better and a chunk that shares no term with the query scores 0.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np

from rag.core.filters import Filter
from rag.core.types import ScoredId
from rag.retrieve.bm25 import BM25Index
from rag.stores.base import KeywordIndex  # the protocol lives with the store capabilities

__all__ = ["KeywordIndex", "LocalBM25"]


class LocalBM25:
    """:class:`KeywordIndex` over a local :class:`~rag.retrieve.bm25.BM25Index` (``bm25s``).

    ``bm25s`` scores every row of the index in one pass, so :meth:`search` keeps that score array and a
    :meth:`scores` call for the same query that follows it on the same thread costs nothing. The cache is
    per thread: the API shares one retriever between worker threads.

    Args:
        index: a built or loaded BM25 index; it is only read.
    """

    name = "bm25s"

    def __init__(self, index: BM25Index) -> None:
        self.index = index
        self._last = threading.local()

    def __len__(self) -> int:
        return len(self.index)

    def _raw_scores(self, query: str) -> np.ndarray:
        """Unfiltered BM25 scores of every row, reused when the same thread asks for the same query."""
        last = getattr(self._last, "entry", None)
        if last is not None and last[0] == query:
            return last[1]
        scores = self.index.score_all(query)
        self._last.entry = (query, scores)
        return scores

    def search(self, query: str, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """See :meth:`KeywordIndex.search`; identical to :meth:`BM25Index.search`."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        scores = self._raw_scores(query)
        if filter and scores.size:
            scores = self.index.mask(scores, filter)
        return self.index.top_k(scores, k)

    def analyze(self, text: str) -> list[str]:
        """The terms the index scores ``text`` with (the answerability evidence compares a query's with a hit's)."""
        return self.index.analyzer(text)

    def scores(self, query: str, chunk_ids: Sequence[str]) -> dict[str, float]:
        """See :meth:`KeywordIndex.scores`."""
        if not chunk_ids:
            return {}
        return self.index.scores_of(self._raw_scores(query), chunk_ids)
