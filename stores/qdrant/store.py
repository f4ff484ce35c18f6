"""QdrantStore: the vector store on Qdrant, in local on-disk mode or against a server.

One API, two engines (as in qdrant-client itself): with no ``url`` the client runs Qdrant's local mode in
this process, storing points under ``path``; with a ``url`` it talks to a Qdrant server. Either way a
:class:`~rag.core.filters.Filter` is translated to a native Qdrant filter, so filtering happens inside the
engine's search, with the semantics of :meth:`Filter.matches <rag.core.filters.Filter.matches>`.

Known divergences from :meth:`Filter.matches`, inherent to Qdrant:

* an empty list value counts as missing, so ``!=`` / ``not in`` do not match it (``Filter.matches`` does);
* field names containing ``.`` are read by Qdrant as nested paths, so such flat metadata keys do not match;
* metadata keys ``chunk_id`` and ``text`` are reserved for the payload and refused at upsert.

Keyword and hybrid search (docs/qdrant.md). Beside the unnamed dense vector a collection can hold a sparse
BM25 vector, ``bm25-<fingerprint>``, with Qdrant's IDF modifier. It is computed here from the chunk text
with the local BM25's :class:`~rag.retrieve.bm25.Analyzer` (the one import from ``retrieve``: both sides
must index the same terms), terms hashed to 32-bit ids. A document holds BM25's saturated term frequency
``tf / (tf + k1 · (1 - b + b · dl / avg_len))`` per term, a query its term counts, and the engine multiplies
each query term by ``ln(1 + (N - df + 0.5) / (df + 0.5))``, Lucene's IDF. Their dot product is BM25
exactly (``bm25s``' ``lucene`` variant), except that the average length is the fixed ``avg_len``, since
vectors written earlier cannot follow a corpus average that moves. The fingerprint names the analyzer,
``k1``, ``b`` and ``avg_len``, so vectors written with other settings are never mixed with these.

With it the store offers :class:`QdrantKeywordIndex` (the optional ``keyword_index()`` capability) and
:meth:`QdrantStore.hybrid_search`, one Query API request whose dense and sparse prefetches are fused by
weighted RRF inside the engine (server 1.17 or later). A collection without the sparse vector (created
before it existed, or by a server older than 1.10) keeps working: the engine then uses its local BM25
index and local fusion, with a warning, until ``rag ingest --rebuild`` recreates the collection.
"""

from __future__ import annotations

import fnmatch
import hashlib
import importlib.metadata
import json
import logging
import re
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.core.errors import ConfigError, FilterError, IndexMismatchError, StoreError
from rag.core.filters import Condition, Filter, parse_datetime
from rag.core.settings import StoreSettings
from rag.core.types import ScoredId
from rag.retrieve.bm25 import Analyzer
from rag.stores import REBUILD_HINT, unit_rows
from rag.stores.base import StoredChunk, store_options

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client.http import models

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rag-platform[qdrant]'"
# Payload keys the store itself writes; metadata may not use them.
RESERVED_KEYS = ("chunk_id", "text")
# Keyword fields most filters name; a server indexes them (local mode has no payload indexes).
INDEXED_FIELDS = ("source", "doc_id")
UPSERT_BATCH = 256
_SCROLL_BATCH = 1024
_FACET_LIMIT = 10_000
# Point ids are UUIDs derived from chunk ids, so the same chunk always lands on the same point.
_POINT_NAMESPACE = uuid.UUID("5b0a6f3e-8f4e-4b8c-9a57-2f1c3d9e7a10")
DENSE = ""  # Qdrant's name for the unnamed (default) vector, beside the named sparse one
SPARSE_PREFIX = "bm25-"
# Server features used, by the release that brought them: sparse vectors with the IDF modifier and the
# Query API (prefetch + fusion) in 1.10; RRF with a chosen k in 1.16 and with per-prefetch weights in 1.17.
SPARSE_IDF_SINCE = (1, 10)
WEIGHTED_RRF_SINCE = (1, 17)
# The fixed average document length of the saturated term frequency: 200-token windows (the default
# chunking.size) of this project's docs hold 78 analyzer tokens on average (stop words gone).
DEFAULT_AVG_LEN = 80.0
_RECHECK_SECONDS = 60.0
_EXTRA_OPTIONS = (
    "sparse", "stemmer", "stopwords", "bm25_k1", "bm25_b", "bm25_avg_len", "rrf_k", "shards", "replication_factor",
)
# Warnings about a collection or server are logged once per process, not once per store object.
_warned: set[str] = set()
_warned_lock = threading.Lock()


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk id: a UUIDv5, stable across processes and machines."""
    return str(uuid.uuid5(_POINT_NAMESPACE, chunk_id))


def _warn_once(message: str) -> None:
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning("%s", message)


def parse_version(text: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string such as ``"1.17.0"`` or ``"v1.16.3-dev"``; ``None`` if unreadable."""
    match = re.match(r"v?(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None


def term_id(term: str) -> int:
    """The sparse-vector index of an analysed term: the first 32 bits of its BLAKE2b hash.

    Stable across processes and machines (Python's ``hash`` is not). Qdrant indices are 32-bit: in a
    100,000-term vocabulary about one pair of terms shares an id (a given term clashes with a chance of about
    1 in 43,000), and such a pair counts as one term.
    """
    return int.from_bytes(hashlib.blake2b(term.encode("utf-8"), digest_size=4).digest(), "little")


class SparseBM25:
    """Encodes text as the sparse vectors of BM25 under Qdrant's IDF modifier (see the module docstring).

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


def _client_version() -> str:
    try:
        return importlib.metadata.version("qdrant-client")
    except importlib.metadata.PackageNotFoundError:
        return "(unknown version)"


def _client_has_weighted_rrf(models: Any) -> bool:
    """Whether the installed qdrant-client can send RRF with per-prefetch weights (``Rrf.weights``)."""
    rrf = getattr(models, "Rrf", None)
    return hasattr(models, "RrfQuery") and rrf is not None and "weights" in getattr(rrf, "model_fields", {})


def _qdrant() -> tuple[type[QdrantClient], Any]:
    """Import qdrant-client on first use, so the package works without it."""
    try:
        from qdrant_client import QdrantClient
        from qdrant_client.http import models
    except ImportError as exc:
        raise StoreError(f"the qdrant vector store needs qdrant-client: {INSTALL_HINT}") from exc
    return QdrantClient, models


class _MatchesNothing(Exception):
    """A filter no stored point can satisfy (a glob with no matching value, a reserved field)."""


class _FilterTranslator:
    """Translates a :class:`Filter` into a native ``models.Filter`` with ``Filter.matches`` semantics.

    Args:
        models: the ``qdrant_client.http.models`` module.
        distinct_strings: returns the distinct string values (list elements included) stored under a
            field; globs are expanded against them, since Qdrant has no glob match.
    """

    def __init__(self, models: Any, distinct_strings: Callable[[str], set[str]]) -> None:
        self._m = models
        self._distinct_strings = distinct_strings

    def translate(self, filter: Filter) -> models.Filter:
        """The native filter: a ``must`` of one clause per condition.

        Raises:
            _MatchesNothing: no point can match (the caller returns no results without searching).
            FilterError: a value Qdrant cannot compare (neither string, number nor boolean).
        """
        return self._m.Filter(must=[self._condition(c) for c in filter.conditions])

    def _condition(self, c: Condition) -> Any:
        m = self._m
        if c.field in RESERVED_KEYS:  # never metadata (refused at upsert), so never matched
            raise _MatchesNothing
        if c.op == "eq":
            return self._equals(c.field, c.value)
        if c.op == "in":
            return m.Filter(should=self._any_of(c.field, c.value))
        # Qdrant's must_not alone would also accept points without the field; Filter.matches does not,
        # so the field must also be non-empty (present and not null).
        not_empty = m.IsEmptyCondition(is_empty=m.PayloadField(key=c.field))
        if c.op == "ne":
            return m.Filter(must_not=[self._equals(c.field, c.value), not_empty])
        if c.op == "nin":
            return m.Filter(must_not=[*self._any_of(c.field, c.value), not_empty])
        if c.op == "glob":
            values = sorted(v for v in self._distinct_strings(c.field) if fnmatch.fnmatchcase(v, c.value))
            if not values:
                raise _MatchesNothing
            return m.FieldCondition(key=c.field, match=m.MatchAny(any=values))
        if c.is_date_range:
            return m.FieldCondition(key=c.field, range=m.DatetimeRange(**{c.op: parse_datetime(c.value)}))
        return m.FieldCondition(key=c.field, range=m.Range(**{c.op: c.value}))

    def _equals(self, field: str, value: Any) -> Any:
        m = self._m
        if isinstance(value, (str, bool)):
            return m.FieldCondition(key=field, match=m.MatchValue(value=value))
        if isinstance(value, (int, float)):
            # A point range, not MatchValue: Filter.matches has 2 == 2.0 while Qdrant's exact match keeps
            # integers and floats apart (and cannot take a float at all).
            return m.FieldCondition(key=field, range=m.Range(gte=value, lte=value))
        raise FilterError(f"filter {field!r}: cannot compare {value!r} in Qdrant; use a string, number or boolean")

    def _any_of(self, field: str, values: tuple[Any, ...]) -> list[Any]:
        strings = [v for v in values if isinstance(v, str)]
        clauses = [self._m.FieldCondition(key=field, match=self._m.MatchAny(any=strings))] if strings else []
        return clauses + [self._equals(field, v) for v in values if not isinstance(v, str)]


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

    def __init__(
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
        client_class, self._models = _qdrant()
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
        self._filters = _FilterTranslator(self._models, self._distinct_strings)
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
            _warn_once(
                f"{self._sparse_missing}; keyword search (the local bm25s index) and hybrid fusion run locally "
                "until `rag ingest --rebuild` recreates the collection with it"
            )

    def _read_server_version(self) -> tuple[int, int] | None:
        """The server's ``(major, minor)``, asked once (``GET /``); ``None`` if it cannot be read."""
        if self._server_version is None:
            try:
                self._server_version = parse_version(self.client.info().version)
            except Exception as exc:  # qdrant-client raises transport- and response-specific types
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
        except _MatchesNothing:
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
            except Exception as exc:  # the server's "index required" response
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
                limit=_SCROLL_BATCH,
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
        for start in range(0, len(ids), _SCROLL_BATCH):
            points = self._call(
                "read",
                self.client.retrieve,
                self.collection,
                ids=ids[start : start + _SCROLL_BATCH],
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
        RRF), or ``None``. The server's version is read once; the reason is logged once as a warning."""
        checked = self._native_checked_at
        if checked is not None and time.monotonic() - checked < _RECHECK_SECONDS:
            return self._native_reason
        reason, final = None, True
        if self.keyword_index() is None:
            reason = self._sparse_missing or "the sparse BM25 vector is switched off (sparse=False)"
        elif not _client_has_weighted_rrf(self._models):
            reason = (
                f"qdrant-client {_client_version()} cannot send RRF with weights (models.Rrf.weights); install "
                "qdrant-client 1.17 or later"
            )
        elif self.url is not None:
            version = self._read_server_version()
            if version is None:
                reason, final = f"the version of the Qdrant server at {self._where} cannot be read", False
            elif version < WEIGHTED_RRF_SINCE:
                reason = (
                    f"the Qdrant server at {self._where} is {version[0]}.{version[1]}, older than "
                    f"{'.'.join(map(str, WEIGHTED_RRF_SINCE))} (RRF with weights)"
                )
        if reason is not None and self._sparse_name is not None:
            _warn_once(f"native hybrid search is unavailable: {reason}; fusing locally")
        # An unreadable version may be a passing network failure: ask again a minute later.
        self._native_reason = reason
        self._native_checked_at = float("inf") if final else time.monotonic()
        return reason

    def hybrid_request(
        self, query: str, vector: list[float], k: int, alpha: float, native: Any | None, candidates: int
    ) -> dict[str, Any] | None:
        """The keyword arguments of ``query_points`` for :meth:`hybrid_search`; ``None`` if no side can run.

        A dense and a sparse prefetch, each with the filter and ``limit = max(k, candidates)``, fused by
        ``RrfQuery`` with weights ``[alpha, 1 - alpha]`` (dense first) and ``k = 2 * rrf_k + 1``. Qdrant
        scores a point at 0-based rank ``r`` of a list with weight ``w`` as ``1 / ((r + 1) / w + k - 1)``,
        so at ``alpha = 0.5`` a chunk at 1-based rank ``R`` gets ``1 / (2R + 2 * rrf_k)``, half of local
        RRF's ``1 / (R + rrf_k)``: the same ranking. An endpoint ``alpha`` (or a query without indexable
        terms) sends one prefetch, so Qdrant never sees a zero weight.
        """
        m = self._models
        depth = max(k, candidates)
        prefetch, weights = [], []
        if alpha > 0:
            prefetch.append(m.Prefetch(query=vector, filter=native, limit=depth))
            weights.append(alpha)
        sparse = self.sparse_query(query) if alpha < 1 else None
        if sparse is not None:
            prefetch.append(m.Prefetch(query=sparse, using=self._sparse_name, filter=native, limit=depth))
            weights.append(1.0 - alpha)
        if not prefetch:
            return None
        return {
            "prefetch": prefetch,
            "query": m.RrfQuery(rrf=m.Rrf(k=2 * self.rrf_k + 1, weights=weights)),
            "limit": k,
            "with_payload": ["chunk_id"],
        }

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
        """Hybrid search inside Qdrant: dense and sparse BM25 prefetches fused by weighted RRF (one
        Query API request; see :meth:`hybrid_request`). Scores are the RRF values, not cosine similarities.

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
            StoreError: native hybrid search is unavailable (:meth:`hybrid_search_unavailable` says why), or
                the engine failed.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        if not 0.0 <= alpha <= 1.0:
            raise ConfigError(f"alpha must be between 0 and 1, got {alpha}")
        dense = unit_rows(vector, self.dimension, "the query")[0].tolist()
        reason = self.hybrid_search_unavailable()
        if reason is not None:
            raise StoreError(f"native hybrid search is unavailable: {reason}; set retrieval.native_hybrid = 'off'")
        try:
            native = self._filters.translate(filter) if filter else None
        except _MatchesNothing:
            return []
        request = self.hybrid_request(query, dense, k, alpha, native, candidates)
        if request is None:
            return []
        response = self._call("search", self.client.query_points, self.collection, **request)
        return [ScoredId(point.payload["chunk_id"], float(point.score)) for point in response.points]

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
        except _MatchesNothing:
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
        for start in range(0, len(ids), _SCROLL_BATCH):
            batch = ids[start : start + _SCROLL_BATCH]
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


def create_qdrant_store(
    *, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool = False
) -> QdrantStore:
    """A factory for ``store.kind = "qdrant"`` that also reads ``[store.options]``.

    Reads ``store.url`` (unset: local mode under ``data_dir / "qdrant"``), ``store.api_key`` (never logged),
    ``store.collection``, and from ``[store.options]``: ``sparse`` (see :class:`QdrantStore`), ``stemmer``
    and ``stopwords`` (the sparse vector's analyzer; set them as ``retrieval.stemmer`` / ``stopwords`` if
    those were changed), ``bm25_k1``, ``bm25_b``, ``bm25_avg_len``, ``rrf_k``, and ``shards`` and
    ``replication_factor`` (a new collection's ``shard_number`` and ``replication_factor`` on a cluster). ``read_only`` is not
    used: Qdrant has no read-only client, and readers never write through it.

    Raises:
        ConfigError: an unknown or malformed ``[store.options]`` key.
    """
    extra = store_options(options, _EXTRA_OPTIONS, "qdrant")
    sparse = extra.get("sparse")
    if isinstance(sparse, str):
        sparse = sparse.strip().lower() not in ("0", "false", "no", "off")
    try:
        analyzer = Analyzer(extra.get("stemmer", "english"), extra.get("stopwords", "en"))
        numbers = {key: float(extra[key]) for key in ("bm25_k1", "bm25_b", "bm25_avg_len") if key in extra}
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
        sparse=None if sparse is None else bool(sparse),
        analyzer=analyzer,
        rrf_k=rrf_k,
        **numbers,
        **distribution,
    )
