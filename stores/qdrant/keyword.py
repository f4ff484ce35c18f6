"""The keyword side: chunk text as Qdrant sparse BM25 vectors, and the keyword index searching them.

The sparse vectors are built with :class:`~rag.core.analysis.Analyzer`, the local ``bm25s`` index's
analyzer, from the same :class:`~rag.core.analysis.KeywordAnalysis` settings, so both keyword sides index the
same terms (see :mod:`rag.stores.qdrant` for the scoring).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rag.core.analysis import Analyzer
from rag.core.errors import ConfigError
from rag.core.filters import Filter
from rag.core.types import ScoredId
from rag.stores.qdrant.client import SCROLL_BATCH, point_id
from rag.stores.qdrant.filters import MatchesNothing

if TYPE_CHECKING:
    from rag.stores.qdrant.store import QdrantStore

SPARSE_PREFIX = "bm25-"
# The fixed average document length of the saturated term frequency: 200-token windows (the default
# chunking.size) of this project's docs hold 78 analyzer tokens on average (stop words gone).
DEFAULT_AVG_LEN = 80.0


def term_id(term: str) -> int:
    """The sparse-vector index of an analysed term: the first 32 bits of its BLAKE2b hash.

    Stable across processes and machines (Python's ``hash`` is not). Qdrant indices are 32-bit: in a
    100,000-term vocabulary about one pair of terms shares an id (a given term clashes with a chance of about
    1 in 43,000), and such a pair counts as one term.
    """
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


class SparseBM25:
    """Encodes text as the sparse vectors of BM25 under Qdrant's IDF modifier (see :mod:`rag.stores.qdrant`).

    Args:
        analyzer: the tokenizer, stop words and stemmer; the local BM25's defaults when ``None``.
        k1: term-frequency saturation.
        b: length normalisation.
        avg_len: the average document length (in analyzer tokens) that ``b`` normalises against.

    Raises:
        ConfigError: ``k1 <= 0``, ``b`` outside [0, 1] or ``avg_len <= 0``.
    """

    def __init__(
        self, analyzer: Analyzer | None = None, k1: float = 1.2, b: float = 0.75, avg_len: float = DEFAULT_AVG_LEN
    ) -> None:
        if k1 <= 0 or not 0 <= b <= 1 or avg_len <= 0:
            raise ConfigError(f"sparse BM25 needs k1 > 0, 0 <= b <= 1 and avg_len > 0, got {k1}, {b}, {avg_len}")
        self.analyzer = analyzer or Analyzer()
        self.k1, self.b, self.avg_len = float(k1), float(b), float(avg_len)
        settings = {"analyzer": self.analyzer.config(), "k1": self.k1, "b": self.b, "avg_len": self.avg_len,
                    "ids": "blake2b-32"}
        digest = hashlib.blake2b(json.dumps(settings, sort_keys=True).encode(), digest_size=4).hexdigest()
        self.vector_name = SPARSE_PREFIX + digest
        """The collection's name for vectors written with exactly these settings."""

    def document(self, text: str) -> tuple[list[int], list[float]]:
        """Sorted term ids and their saturated term frequencies (empty for text without indexable terms)."""
        tokens = self.analyzer(text)
        counts = Counter(map(term_id, tokens))
        norm = self.k1 * (1.0 - self.b + self.b * len(tokens) / self.avg_len)
        indices = sorted(counts)
        return indices, [counts[i] / (counts[i] + norm) for i in indices]

    def query(self, text: str) -> tuple[list[int], list[float]]:
        """Sorted term ids and how often each occurs in the query (``bm25s`` counts a repeated term twice)."""
        counts = Counter(map(term_id, self.analyzer(text)))
        indices = sorted(counts)
        return indices, [float(counts[i]) for i in indices]


class QdrantKeywordIndex:
    """:class:`~rag.retrieve.keyword.KeywordIndex` over a :class:`QdrantStore`'s sparse BM25 vector, with
    the store's filters inside the search; it sees the store's writes as its dense search does.

    Args:
        store: the store whose collection it searches (it lives and closes with it).
    """

    name = "qdrant-bm25"

    def __init__(self, store: QdrantStore) -> None:
        self.store = store

    def search_request(self, query: Any, k: int, native: Any | None) -> dict[str, Any]:
        """The keyword arguments of ``query_points`` for :meth:`search`, given the sparse query vector."""
        return {"query": query, "using": self.store.sparse_vector_name, "limit": k, "query_filter": native,
                "with_payload": ["chunk_id"]}

    def search(self, query: str, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` best chunks sharing a term with ``query`` that satisfy ``filter``, best first, ties by
        chunk id (among those the engine returned).

        Raises:
            ValueError: ``k`` is not positive.
            FilterError: a filter value Qdrant cannot compare.
            StoreError: the engine failed.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        store = self.store
        sparse = store.sparse_query(query)
        if sparse is None:
            return []
        try:
            native = store._filters.translate(filter) if filter else None
        except MatchesNothing:
            return []
        response = store._call("search", store.client.query_points, store.collection,
                               **self.search_request(sparse, k, native))
        found = [ScoredId(point.payload["chunk_id"], float(point.score)) for point in response.points]
        return sorted(found, key=lambda hit: (-hit.score, hit.chunk_id))

    def scores(self, query: str, chunk_ids: Sequence[str]) -> dict[str, float]:
        """BM25 scores of ``chunk_ids``: 0.0 for a stored chunk that shares no term with ``query``; ids the
        collection does not hold are left out. A sparse search restricted to the ids (``has_id``), then a
        look-up of the ids it did not return, to tell a stored chunk from an unknown one."""
        store, m = self.store, self.store._models
        by_point = {point_id(cid): cid for cid in chunk_ids}
        if not by_point:
            return {}
        sparse = store.sparse_query(query)
        found: dict[str, float] = {}
        ids = list(by_point)
        for start in range(0, len(ids), SCROLL_BATCH):
            batch = ids[start : start + SCROLL_BATCH]
            if sparse is not None:
                only = m.Filter(must=[m.HasIdCondition(has_id=batch)])
                response = store._call("search", store.client.query_points, store.collection,
                                       **self.search_request(sparse, len(batch), only))
                found.update((point.payload["chunk_id"], float(point.score)) for point in response.points)
            unscored = [pid for pid in batch if by_point[pid] not in found]
            if unscored:
                points = store._call("read", store.client.retrieve, store.collection, ids=unscored,
                                     with_payload=False, with_vectors=False)
                found.update((by_point[str(point.id)], 0.0) for point in points)
        return found
