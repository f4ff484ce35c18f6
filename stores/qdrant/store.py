"""The Qdrant store's lifecycle and :class:`~rag.stores.base.VectorStore` side, and its registry factory.

Filter translation is in :mod:`~rag.stores.qdrant.filters`, the sparse BM25 keyword side in
:mod:`~rag.stores.qdrant.keyword` and the server-side hybrid query in :mod:`~rag.stores.qdrant.hybrid`;
:mod:`rag.stores.qdrant` describes the whole backend.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.core.analysis import Analyzer, KeywordAnalysis
from rag.core.errors import REBUILD_HINT, ConfigError, FilterError, IndexMismatchError, StoreError
from rag.core.filters import Filter
from rag.core.settings import StoreSettings
from rag.core.types import ScoredId
from rag.stores.base import StoredChunk, store_options, unit_rows
from rag.stores.qdrant import hybrid
from rag.stores.qdrant.client import SCROLL_BATCH, import_qdrant, parse_version, point_id, warn_once
from rag.stores.qdrant.filters import RESERVED_KEYS, FilterTranslator, MatchesNothing
from rag.stores.qdrant.keyword import DEFAULT_AVG_LEN, SPARSE_PREFIX, QdrantKeywordIndex, SparseBM25

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

log = logging.getLogger(__name__)

# Keyword fields most filters name; a server indexes them (local mode has no payload indexes).
INDEXED_FIELDS = ("source", "doc_id")
UPSERT_BATCH = 256
_FACET_LIMIT = 10_000
DENSE = ""  # Qdrant's name for the unnamed (default) vector, beside the named sparse one
# Sparse vectors with the IDF modifier and the Query API (prefetch + fusion) came in server 1.10.
SPARSE_IDF_SINCE = (1, 10)
_EXTRA_OPTIONS = (
    "sparse", "stemmer", "stopwords", "bm25_k1", "bm25_b", "bm25_avg_len", "rrf_k", "shards", "replication_factor",
)
# Deprecated [store.options] aliases of the [retrieval] analysis settings, by KeywordAnalysis field: the
# sparse vector now follows retrieval.stemmer, stopwords, bm25_k1 and bm25_b, as the local index does.
_DEPRECATED_ANALYSIS_OPTIONS = {"stemmer": "stemmer", "stopwords": "stopwords", "bm25_k1": "k1", "bm25_b": "b"}


class QdrantStore:
    """A :class:`~rag.stores.base.VectorStore` on one Qdrant collection.

    Points carry the payload ``{"chunk_id", "text", **metadata}`` under a UUID derived from the chunk id.
    The collection uses cosine distance and vectors are normalised on the way in, so scores equal
    :class:`~rag.stores.faiss_store.FaissStore`'s. Writes wait for the engine, so :meth:`flush` has
    nothing left to do; in local mode every point is committed on its own (slow for large ingests: local
    mode suits up to some tens of thousands of chunks). With the sparse BM25 vector beside the (unnamed)
    dense one, the store also provides :meth:`keyword_index` and :meth:`hybrid_search` (the optional
    :class:`~rag.stores.base.ProvidesKeywordIndex` and :class:`~rag.stores.base.ProvidesHybridSearch`).

    Args:
        dimension: vector length; must equal the existing collection's.
        path: folder for local on-disk mode (used when ``url`` is None); with neither, an in-memory
            collection that vanishes on close (tests).
        url: a Qdrant server, e.g. ``http://localhost:6333``.
        api_key: the server's key, if it needs one; never logged.
        collection: collection name; created on first use.
        any_dimension: open an existing collection whatever its vector size (only to :meth:`drop` it).
        sparse: create a new collection with the sparse BM25 vector (keyword and native hybrid search):
            ``None`` (default) on a server only, ``True`` in local mode too, ``False`` never. Local mode
            leaves it off by default: its engine scores sparse vectors in Python over every point, where the
            local ``bm25s`` index is faster, and there is no round trip to save. An existing collection that
            holds the vector is always written with it (so it stays complete for every reader) and, unless
            ``sparse`` is ``False``, searched with it.
        analyzer, bm25_k1, bm25_b, bm25_avg_len: the sparse vector's BM25 (see :class:`SparseBM25`).
        rrf_k: the RRF rank constant of :meth:`hybrid_search`, as ``retrieval.rrf_k``.

    Raises:
        ConfigError: a BM25 parameter or ``rrf_k`` is out of range.
        StoreError: qdrant-client is missing, the server is unreachable, or the local folder is in use
            by another process.
        IndexMismatchError: the collection exists with another vector size or distance.
    """

    def __init__(  # noqa: PLR0913 - one keyword per store option, as the registry's factory passes them
        self,
        dimension: int,
        path: Path | None = None,
        url: str | None = None,
        api_key: str | None = None,
        collection: str = "rag",
        any_dimension: bool = False,
        sparse: bool | None = None,
        analyzer: Analyzer | None = None,
        bm25_k1: float = 1.2,
        bm25_b: float = 0.75,
        bm25_avg_len: float = DEFAULT_AVG_LEN,
        rrf_k: int = 60,
        shards: int | None = None,
        replication_factor: int | None = None,
    ) -> None:
        if dimension <= 0:
            raise ConfigError(f"vector dimension must be positive, got {dimension}")
        if not collection:
            raise ConfigError("the Qdrant collection name must not be empty")
        if rrf_k <= 0:
            raise ConfigError(f"rrf_k must be positive, got {rrf_k}")
        for name, value in (("shards", shards), ("replication_factor", replication_factor)):
            if value is not None and value <= 0:
                raise ConfigError(f"{name} must be positive, got {value}")
        # A new collection's distribution over a cluster (Qdrant's shard_number and replication_factor);
        # None leaves the server's default. An existing collection keeps its own.
        self._distribution = {
            key: value for key, value in (("shard_number", shards), ("replication_factor", replication_factor))
            if value is not None
        }
        self.bm25 = SparseBM25(analyzer, bm25_k1, bm25_b, bm25_avg_len)
        self.rrf_k = rrf_k
        self._sparse_wanted = sparse if sparse is not None else url is not None
        self._sparse_searched = sparse is not False
        # Set by _ensure_collection: the sparse vector's name when the collection holds ours, else why not.
        self._sparse_name: str | None = None
        self._sparse_missing: str | None = None
        self._server_version: tuple[int, int] | None = None
        self._native_reason: str | None = None
        self._native_checked_at: float | None = None  # monotonic time; None: not yet, inf: for good
        client_class, self._models = import_qdrant()
        self.dimension = dimension
        self.collection = collection
        self._any_dimension = any_dimension
        self.path = Path(path) if path is not None and url is None else None
        self.url = url
        where = url or (str(self.path) if self.path else "memory")
        try:
            if url is not None:
                self._client: QdrantClient | None = client_class(url=url, api_key=api_key)
            elif self.path is not None:
                self.path.mkdir(parents=True, exist_ok=True)
                self._client = client_class(path=str(self.path))
            else:
                self._client = client_class(location=":memory:")
        except RuntimeError as exc:  # local mode: "already accessed by another instance of Qdrant client"
            raise StoreError(
                f"cannot open the Qdrant store at {where}: {exc}; close the other process using it and retry"
            ) from exc
        self._where = where
        self._filters = FilterTranslator(self._models, self._distinct_strings)
        try:
            self._ensure_collection()
        except BaseException:
            self.close()
            raise

    @property
    def client(self) -> QdrantClient:
        """The open qdrant-client (for administration such as dropping the collection).

        Raises:
            StoreError: the store is closed.
        """
        if self._client is None:
            raise StoreError(f"the Qdrant store at {self._where} is closed")
        return self._client

    def _ensure_collection(self) -> None:
        m = self._models
        try:
            exists = self.client.collection_exists(self.collection)
            if exists:
                params = self.client.get_collection(self.collection).config.params
                vectors, sparse = params.vectors, dict(params.sparse_vectors or {})
            else:
                sparse = self._new_sparse_config()
                self.client.create_collection(
                    self.collection,
                    vectors_config=m.VectorParams(size=self.dimension, distance=m.Distance.COSINE),
                    sparse_vectors_config=sparse or None,
                    **self._distribution,
                )
                vectors = None
            if self.url is not None:  # idempotent on a server; local mode has no payload indexes
                for field in INDEXED_FIELDS:
                    self.client.create_payload_index(
                        self.collection, field_name=field, field_schema=m.PayloadSchemaType.KEYWORD
                    )
        except Exception as exc:  # qdrant-client raises transport- and response-specific types
            raise StoreError(
                f"cannot reach the Qdrant collection {self.collection!r} at {self._where}: {exc}; check "
                "store.url (RAG_STORE__URL), store.api_key and that the server is running"
            ) from exc
        if vectors is not None and not self._any_dimension:
            size = getattr(vectors, "size", None)
            distance = getattr(vectors, "distance", None)
            if size != self.dimension or distance not in (m.Distance.COSINE, m.Distance.DOT):
                raise IndexMismatchError(
                    f"the Qdrant collection {self.collection!r} at {self._where} holds "
                    f"{size if size is not None else 'named'}-dimensional vectors ({distance}) but "
                    f"{self.dimension}-dimensional cosine vectors were requested, e.g. after changing the "
                    f"embedding model; {REBUILD_HINT}, or choose another store.collection"
                )
        self._adopt_sparse(sparse)

    def _new_sparse_config(self) -> dict[str, Any]:
        """The sparse vectors of a collection this store creates: ours, if wanted and the engine can."""
        if not self._sparse_wanted:
            return {}
        if self.url is not None:
            version = self._read_server_version()
            if version is None or version < SPARSE_IDF_SINCE:
                found = ".".join(map(str, version)) if version else "of unknown version"
                self._sparse_missing = (
                    f"the Qdrant server at {self._where} is {found}, older than "
                    f"{'.'.join(map(str, SPARSE_IDF_SINCE))} (sparse vectors with the IDF modifier), so the "
                    f"collection {self.collection!r} was created without the sparse BM25 vector"
                )
                return {}
        return {self.bm25.vector_name: self._models.SparseVectorParams(modifier=self._models.Modifier.IDF)}

    def _adopt_sparse(self, sparse: dict[str, Any]) -> None:
        """Use the collection's sparse BM25 vector if it is ours (same BM25 settings, IDF modifier)."""
        name = self.bm25.vector_name
        params = sparse.get(name)
        if params is not None and params.modifier == self._models.Modifier.IDF:
            self._sparse_name, self._sparse_missing = name, None
            return
        self._sparse_name = None
        if self._sparse_missing is None:
            others = sorted(n for n in sparse if n.startswith(SPARSE_PREFIX))
            if others:
                why = f"it holds {others[0]!r}, written with other BM25 settings (analyzer, k1, b or avg_len)"
            elif not self._sparse_wanted:
                why = "the sparse BM25 vector is off (local mode needs [store.options] sparse = true)"
                if self.url is not None:
                    why = "the sparse BM25 vector is off (sparse = false)"
            else:
                why = "it predates the sparse BM25 vector"
            self._sparse_missing = f"the Qdrant collection {self.collection!r} at {self._where} has no {name!r}: {why}"
        if self._sparse_wanted and not self._any_dimension:  # any_dimension: opened only to be dropped
            warn_once(
                f"{self._sparse_missing}; keyword search (the local bm25s index) and hybrid fusion run locally "
                "until `rag ingest --rebuild` recreates the collection with it"
            )

    def _read_server_version(self) -> tuple[int, int] | None:
        """The server's ``(major, minor)``, asked once (``GET /``); ``None`` if it cannot be read."""
        if self._server_version is None:
            try:
                self._server_version = parse_version(self.client.info().version)
            except Exception as exc:  # noqa: BLE001 - qdrant-client raises transport- and response-specific types
                log.debug("cannot read the version of the Qdrant server at %s: %s", self._where, exc)
        return self._server_version

    def upsert(self, chunks: list[StoredChunk]) -> None:
        """Insert or replace chunks by id, in batches of 256 points (the last of repeated ids wins).

        Raises:
            IndexMismatchError: a vector has another dimension than the collection.
            StoreError: a vector is zero or not finite, metadata uses a reserved key, or the write failed.
        """
        batch = list({chunk.chunk_id: chunk for chunk in chunks}.values())
        if not batch:
            return
        vectors = unit_rows([c.vector for c in batch], self.dimension, "upsert")
        for chunk in batch:
            clash = [key for key in RESERVED_KEYS if key in chunk.metadata]
            if clash:
                raise StoreError(
                    f"metadata of chunk {chunk.chunk_id!r} uses the reserved key(s) {clash}; rename them"
                )
        m = self._models
        points = [
            m.PointStruct(
                id=point_id(chunk.chunk_id),
                vector=self._point_vectors(chunk.text, vector),
                payload={"chunk_id": chunk.chunk_id, "text": chunk.text, **chunk.metadata},
            )
            for chunk, vector in zip(batch, vectors)
        ]
        for start in range(0, len(points), UPSERT_BATCH):
            self._call("write to", self.client.upsert, self.collection, points=points[start : start + UPSERT_BATCH])

    def _point_vectors(self, text: str, vector: np.ndarray) -> Any:
        """The dense vector alone, or with the sparse BM25 vector of ``text`` when the collection has it.

        A text without indexable terms still gets its (empty) sparse vector: Qdrant's IDF counts every
        point holding the vector as a document, as ``bm25s`` counts every chunk.
        """
        if self._sparse_name is None:
            return vector.tolist()
        indices, values = self.bm25.document(text)
        return {DENSE: vector.tolist(), self._sparse_name: self._models.SparseVector(indices=indices, values=values)}

    def delete(self, chunk_ids: list[str]) -> None:
        """Remove chunks by id; unknown ids are ignored."""
        if not chunk_ids:
            return
        ids = [point_id(cid) for cid in chunk_ids]
        for start in range(0, len(ids), UPSERT_BATCH):
            selector = self._models.PointIdsList(points=ids[start : start + UPSERT_BATCH])
            self._call("delete from", self.client.delete, self.collection, points_selector=selector)

    def search(self, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` chunks with the highest cosine similarity to ``vector`` that satisfy ``filter``.

        Raises:
            ValueError: ``k`` is not positive.
            IndexMismatchError: ``vector`` has another dimension than the collection.
            FilterError: a filter value Qdrant cannot compare.
            StoreError: ``vector`` is zero or not finite, or the engine failed.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        query = unit_rows(vector, self.dimension, "the query")[0]
        try:
            native = self._filters.translate(filter) if filter else None
        except MatchesNothing:
            return []
        response = self._call(
            "search",
            self.client.query_points,
            self.collection,
            query=query.tolist(),
            limit=k,
            query_filter=native,
            with_payload=["chunk_id"],
        )
        return [ScoredId(point.payload["chunk_id"], float(point.score)) for point in response.points]

    def _distinct_strings(self, field: str) -> set[str]:
        """Distinct string values of ``field`` (list elements included), for glob expansion."""
        if self.url is not None:
            # A server answers from its payload index in one call; without an index on the field (or when
            # the values do not fit in one answer) it is read from the points instead.
            try:
                hits = self.client.facet(self.collection, key=field, limit=_FACET_LIMIT).hits
            except Exception as exc:  # noqa: BLE001 - the server's "index required" response, in any client type
                log.debug("facet on %r unavailable (%s); scrolling payloads", field, exc)
            else:
                if len(hits) < _FACET_LIMIT:
                    return {hit.value for hit in hits if isinstance(hit.value, str)}
        values: set[str] = set()
        for payload in self._scroll_payloads([field]):
            value = payload.get(field)
            for element in value if isinstance(value, list) else (value,):
                if isinstance(element, str):
                    values.add(element)
        return values

    def _scroll_payloads(self, keys: list[str]) -> Iterator[dict[str, Any]]:
        offset = None
        while True:
            points, offset = self._call(
                "read",
                self.client.scroll,
                self.collection,
                limit=SCROLL_BATCH,
                offset=offset,
                with_payload=keys,
                with_vectors=False,
            )
            for point in points:
                yield point.payload or {}
            if offset is None:
                return

    def get_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored (normalised) vectors of the given ids; unknown ids are left out."""
        by_point = {point_id(cid): cid for cid in chunk_ids}
        ids = list(by_point)
        found: dict[str, np.ndarray] = {}
        for start in range(0, len(ids), SCROLL_BATCH):
            points = self._call(
                "read",
                self.client.retrieve,
                self.collection,
                ids=ids[start : start + SCROLL_BATCH],
                with_vectors=True,
                with_payload=False,
            )
            for point in points:
                # A collection with the sparse vector answers with every named vector.
                vector = point.vector[DENSE] if isinstance(point.vector, dict) else point.vector
                found[by_point[str(point.id)]] = np.asarray(vector, dtype=np.float32)
        return found

    def ids(self) -> set[str]:
        """Every stored chunk id."""
        return {payload["chunk_id"] for payload in self._scroll_payloads(["chunk_id"])}

    def count(self) -> int:
        """Number of stored chunks (an exact count)."""
        return self._call("count", self.client.count, self.collection, exact=True).count

    def flush(self) -> None:
        """Nothing to do: every write has been acknowledged by the engine (``wait=True``) when it returns."""

    def close(self) -> None:
        """Close the client (releasing the local folder's lock); idempotent."""
        if self._client is not None:
            self._client.close()
            self._client = None

    def drop(self) -> None:
        """Delete the collection with every point in it, then close (``rag ingest --rebuild``)."""
        self._call("drop", self.client.delete_collection, self.collection)
        self.close()

    def __enter__(self) -> QdrantStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def size_bytes(self) -> int:
        """Bytes under the local folder; 0 for a server or an in-memory collection."""
        if self.path is None or not self.path.exists():
            return 0
        return sum(f.stat().st_size for f in self.path.rglob("*") if f.is_file())

    # -- keyword and hybrid search ----------------------------------------------------------------

    @property
    def sparse_vector_name(self) -> str | None:
        """The collection's sparse BM25 vector this store writes, or ``None`` when it has none of ours."""
        return self._sparse_name

    def keyword_index(self) -> QdrantKeywordIndex | None:
        """BM25 over the collection's sparse vector (the engine's keyword side of hybrid search), or
        ``None`` when the collection has no sparse vector of ours (or ``sparse=False``): the engine then
        builds its local ``bm25s`` index."""
        if self._sparse_name is None or not self._sparse_searched:
            return None
        return QdrantKeywordIndex(self)

    def sparse_query(self, text: str) -> Any | None:
        """The sparse query vector of ``text``, or ``None`` when it has no indexable term."""
        indices, values = self.bm25.query(text)
        return self._models.SparseVector(indices=indices, values=values) if indices else None

    def hybrid_search_unavailable(self) -> str | None:
        """Why :meth:`hybrid_search` cannot run (no sparse vector, a client or server without weighted
        RRF), or ``None``. The server's version is read once; the reason is logged once as a warning
        (see :func:`rag.stores.qdrant.hybrid.unavailable_reason`)."""
        return hybrid.unavailable_reason(self)

    def hybrid_request(
        self, query: str, vector: list[float], k: int, alpha: float, native: Any | None, candidates: int
    ) -> dict[str, Any] | None:
        """The keyword arguments of ``query_points`` for :meth:`hybrid_search`; ``None`` if no side can run
        (see :func:`rag.stores.qdrant.hybrid.hybrid_request`)."""
        return hybrid.hybrid_request(self, query, vector, k, alpha, native, candidates)

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
        """Hybrid search inside Qdrant: dense and sparse BM25 prefetches fused by weighted RRF in one
        Query API request. Scores are the RRF values, not cosine similarities. Arguments and errors as
        :func:`rag.stores.qdrant.hybrid.hybrid_search`."""
        return hybrid.hybrid_search(self, query, vector, k, alpha, filter, candidates=candidates)

    def _call(self, action: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the client, turning its transport and response errors into :class:`StoreError`."""
        try:
            return method(*args, **kwargs)
        except (StoreError, FilterError):
            raise
        except Exception as exc:  # qdrant-client has no common base class for its errors
            raise StoreError(
                f"cannot {action} the Qdrant collection {self.collection!r} at {self._where}: {exc}"
            ) from exc


def create_qdrant_store(
    *,
    data_dir: Path,
    dimension: int,
    options: StoreSettings,
    read_only: bool = False,
    analysis: KeywordAnalysis | None = None,
    any_dimension: bool = False,
) -> QdrantStore:
    """A factory for ``store.kind = "qdrant"`` that also reads ``[store.options]``.

    Reads ``store.url`` (unset: local mode under ``data_dir / "qdrant"``), ``store.api_key`` (never logged),
    ``store.collection``, and from ``[store.options]``: ``sparse`` (see :class:`QdrantStore`),
    ``bm25_avg_len``, ``rrf_k``, and ``shards`` and ``replication_factor`` (a new collection's
    ``shard_number`` and ``replication_factor`` on a cluster). The sparse vector's analyzer, ``k1`` and ``b``
    come from ``analysis`` (``retrieval.stemmer``, ``stopwords``, ``bm25_k1`` and ``bm25_b``, as the local
    index's); the ``[store.options]`` keys ``stemmer``, ``stopwords``, ``bm25_k1`` and ``bm25_b`` still
    override them, with a deprecation warning. ``read_only`` is not used: Qdrant has no read-only client, and
    readers never write through it. ``any_dimension`` opens a collection of another size, only to drop it.

    Raises:
        ConfigError: an unknown or malformed ``[store.options]`` key.
    """
    extra = store_options(options, _EXTRA_OPTIONS, "qdrant")
    sparse = extra.get("sparse")
    if isinstance(sparse, str):
        sparse = sparse.strip().lower() not in ("0", "false", "no", "off")
    try:
        analysis = _analysis(analysis or KeywordAnalysis(), extra)
        numbers = {"bm25_avg_len": float(extra["bm25_avg_len"])} if "bm25_avg_len" in extra else {}
        rrf_k = int(extra.get("rrf_k", 60))
        distribution = {key: int(extra[key]) for key in ("shards", "replication_factor") if key in extra}
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"qdrant store options must be numbers: {exc}") from exc
    return QdrantStore(
        dimension,
        path=None if options.url else data_dir / "qdrant",
        url=options.url,
        # The one place the secret is read; it goes straight to the client and is never logged.
        api_key=options.api_key.get_secret_value() if options.api_key else None,
        collection=options.collection,
        any_dimension=any_dimension,
        sparse=None if sparse is None else bool(sparse),
        analyzer=analysis.analyzer(),
        bm25_k1=analysis.k1,
        bm25_b=analysis.b,
        rrf_k=rrf_k,
        **numbers,
        **distribution,
    )


def _analysis(analysis: KeywordAnalysis, extra: dict[str, Any]) -> KeywordAnalysis:
    """``analysis`` with any deprecated ``[store.options]`` alias applied over it (and warned about once).

    Raises:
        ValueError: ``bm25_k1`` or ``bm25_b`` is not a number.
    """
    overrides: dict[str, Any] = {}
    for option, field in _DEPRECATED_ANALYSIS_OPTIONS.items():
        if option in extra:
            value = extra[option]
            overrides[field] = float(value) if field in ("k1", "b") else value
            warn_once(
                f"[store.options] {option} is deprecated: set retrieval.{option} instead (the local BM25 index and "
                "Qdrant's sparse vector share it)"
            )
    return replace(analysis, **overrides) if overrides else analysis
