"""The vector store contract every backend honours, the record it stores, and its optional capabilities."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from rag.core.errors import REBUILD_HINT, ConfigError, IndexMismatchError, StoreError
from rag.core.filters import Filter
from rag.core.types import ScoredId


@dataclass(frozen=True, slots=True)
class StoredChunk:
    """What a store keeps per chunk: identity, vector, text and filterable metadata."""

    chunk_id: str
    vector: np.ndarray
    text: str
    metadata: dict[str, Any]


def unit_rows(vectors: np.ndarray | Sequence[np.ndarray], dimension: int, what: str) -> np.ndarray:
    """Validate and L2-normalise a ``(n, dimension)`` matrix, or one vector, as a contiguous float32 copy.

    Every store normalises on the way in, so scores are cosine similarities whatever the caller passed.

    Args:
        vectors: one vector, a matrix with one row per vector, or a sequence of vectors.
        dimension: the length the store expects.
        what: names the data in error messages (``"upsert"``, ``"the query"``).

    Returns:
        A ``(n, dimension)`` float32 array whose rows have unit L2 norm.

    Raises:
        IndexMismatchError: the vectors have another dimension than the store (another embedding model).
        StoreError: a vector is zero or not finite, so its cosine similarity is undefined.
    """
    try:
        matrix = np.array(vectors, dtype=np.float32, ndmin=2)
        shape = f"shape {matrix.shape[1:]}"
    except ValueError:  # a sequence of vectors of different lengths
        matrix, shape = np.empty((0, 0), dtype=np.float32), "different lengths"
    if matrix.ndim != 2 or matrix.shape[1] != dimension:
        raise IndexMismatchError(
            f"{what} has vectors of {shape} but the store holds {dimension}-dimensional ones; embed with the "
            f"model the index was built with, or {REBUILD_HINT}"
        )
    norms = np.linalg.norm(matrix, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        raise StoreError(f"{what} has a zero or non-finite vector (row {int(np.argmax(bad))}); cannot store it")
    matrix /= norms[:, None]
    return np.ascontiguousarray(matrix)

@runtime_checkable
class KeywordIndex(Protocol):
    """Keyword search over the indexed chunks.

    Attributes:
        name: what runs the search, for logs and ``explain`` (``"bm25s"``, ``"postgres-fts"``).
    """

    name: str

    def search(self, query: str, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` best chunks for ``query`` that satisfy ``filter``, best first.

        Only chunks that match at least one query term are returned (so fewer than ``k`` may come back),
        and the filter is applied inside the search, as :meth:`VectorStore.search
        <rag.stores.base.VectorStore.search>` does. Ties break by chunk id.

        Raises:
            ValueError: ``k`` is not positive.
        """

    def scores(self, query: str, chunk_ids: Sequence[str]) -> dict[str, float]:
        """The keyword scores of ``chunk_ids`` for ``query``, on the scale :meth:`search` uses.

        A chunk that matches no query term scores 0.0; ids the index does not hold are left out (an
        orphan vector is fused as "not scored", not as a zero that would move the normalisation).
        """

@runtime_checkable
class VectorStore(Protocol):
    """A persistent, filterable nearest-neighbour index over chunk vectors.

    Scores are inner products of L2-normalised vectors (cosine similarity), higher is better. Chunk ids
    are strings chosen by the caller; writing an existing id replaces it. Writes become durable on
    :meth:`flush`; a process killed before it leaves the last flushed state loadable.
    """

    dimension: int

    def upsert(self, chunks: list[StoredChunk]) -> None:
        """Insert or replace chunks by id."""

    def delete(self, chunk_ids: list[str]) -> None:
        """Remove chunks by id; unknown ids are ignored."""

    def search(self, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` nearest chunks that satisfy ``filter``, best first.

        The filter is applied inside the search, so a selective filter still returns ``k`` results
        whenever ``k`` matching chunks exist.
        """

    def get_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """Stored vectors of the given ids (unknown ids are left out)."""

    def ids(self) -> set[str]:
        """Every stored chunk id."""

    def count(self) -> int:
        """Number of stored chunks."""

    def flush(self) -> None:
        """Make all writes so far durable, atomically."""

    def close(self) -> None:
        """Flush and release files, connections and locks."""

    def drop(self) -> None:
        """Delete every stored chunk together with the collection or files that hold them, then close.

        ``rag ingest --rebuild`` calls it, so that a remote collection is recreated (at a new dimension,
        after a model change) on the next open.
        """

    def size_bytes(self) -> int:
        """Bytes the store occupies on disk (0 for a remote server)."""


@runtime_checkable
class ProvidesKeywordIndex(Protocol):
    """Optional capability, not part of :class:`VectorStore`: the store searches chunk text itself.

    A store that keeps the chunk text (``StoredChunk.text``) and can rank it by keywords offers a
    :class:`~rag.retrieve.keyword.KeywordIndex` over the same rows, with the store's filter semantics,
    and the engine uses it as the keyword side of hybrid search instead of the local ``bm25s`` index
    (``retrieval.keyword = "auto"``). Such an index must see the store's writes as its vector search does
    (no separate rebuild), live as long as the store (it is not closed separately), and be safe to call
    from several threads as the store is. Stores without the method get the local index.
    """

    def keyword_index(self) -> KeywordIndex | None:
        """The store's keyword search, or ``None`` when it cannot offer one right now (for example a
        read-only store whose table predates keyword search and has not been migrated by a writer)."""


@runtime_checkable
class ProvidesHybridSearch(Protocol):
    """Optional capability: the engine behind the store fuses dense and keyword results itself.

    A store that also offers :class:`ProvidesKeywordIndex` can run the whole alpha-weighted hybrid query
    in one request (OpenSearch: a ``hybrid`` query and a normalization pipeline; Qdrant: two prefetches
    fused by weighted RRF). :class:`~rag.retrieve.hybrid.HybridRetriever` uses it, with
    ``retrieval.native_hybrid = "auto"``, only when its keyword side is this store's own keyword index
    (recognised by the index's ``store`` attribute being this store), fusion is linear and ``0 < alpha < 1``;
    otherwise, or when :meth:`hybrid_search_unavailable` gives a reason, it fuses locally. The fused
    scores are the engine's, not the local fusion's: each store's documentation says how they differ.
    """

    def hybrid_search_unavailable(self) -> str | None:
        """Why :meth:`hybrid_search` cannot run right now (a server too old for it, a collection that
        predates the keyword side), or ``None`` when it can. Cheap after the first call: a store checks
        its server once and remembers the answer."""

    def hybrid_search(
        self,
        query: str,
        vector: np.ndarray,
        k: int,
        alpha: float,
        filter: Filter | None = None,
        *,
        candidates: int = 100,
    ) -> list[ScoredId]:
        """The ``k`` best chunks for ``query`` (keyword side) and ``vector`` (dense side), fused inside
        the engine with weight ``alpha`` on the dense side, best first.

        Args:
            query: the keyword query text.
            vector: the dense query vector (normalised by the store).
            k: results wanted.
            alpha: weight of the dense side, 0 to 1.
            filter: applied inside both sides' searches.
            candidates: how many candidates each side contributes before fusion (at least ``k``).

        Raises:
            ValueError: ``k`` is not positive.
            ConfigError: ``alpha`` is outside [0, 1].
            StoreError: the engine failed, or native hybrid search is unavailable.
        """


def store_options(options: Any, known: Sequence[str], kind: str) -> dict[str, Any]:
    """The ``[store.options]`` table of ``options`` (a ``StoreSettings``), checked against ``known`` keys.

    Raises:
        ConfigError: a key the ``kind`` store does not know (a typo must not be silently ignored).
    """
    extra = dict(options.options)
    unknown = sorted(set(extra) - set(known))
    if unknown:
        raise ConfigError(f"unknown {kind} store option(s) {unknown}; known: {', '.join(known)}")
    return extra
