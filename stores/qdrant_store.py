"""QdrantStore: the vector store on Qdrant, in local on-disk mode or against a server.

One API, two engines (as in qdrant-client itself): with no ``url`` the client runs Qdrant's local mode in
this process, storing points under ``path``; with a ``url`` it talks to a Qdrant server. Either way a
:class:`~rag.core.filters.Filter` is translated to a native Qdrant filter, so filtering happens inside the
engine's search, with the semantics of :meth:`Filter.matches <rag.core.filters.Filter.matches>`.

Known divergences from :meth:`Filter.matches`, inherent to Qdrant:

* an empty list value counts as missing, so ``!=`` / ``not in`` do not match it (``Filter.matches`` does);
* field names containing ``.`` are read by Qdrant as nested paths, so such flat metadata keys do not match;
* metadata keys ``chunk_id`` and ``text`` are reserved for the payload and refused at upsert.
"""

from __future__ import annotations

import fnmatch
import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.core.errors import ConfigError, FilterError, IndexMismatchError, StoreError
from rag.core.filters import Condition, Filter, parse_datetime
from rag.core.types import ScoredId
from rag.stores import REBUILD_HINT, unit_rows
from rag.stores.base import StoredChunk

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


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk id: a UUIDv5, stable across processes and machines."""
    return str(uuid.uuid5(_POINT_NAMESPACE, chunk_id))


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
    mode suits up to some tens of thousands of chunks).

    Args:
        dimension: vector length; must equal the existing collection's.
        path: folder for local on-disk mode (used when ``url`` is None); with neither, an in-memory
            collection that vanishes on close (tests).
        url: a Qdrant server, e.g. ``http://localhost:6333``.
        api_key: the server's key, if it needs one; never logged.
        collection: collection name; created on first use.
        any_dimension: open an existing collection whatever its vector size (only to :meth:`drop` it).

    Raises:
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
    ) -> None:
        if dimension <= 0:
            raise ConfigError(f"vector dimension must be positive, got {dimension}")
        if not collection:
            raise ConfigError("the Qdrant collection name must not be empty")
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
                vectors = self.client.get_collection(self.collection).config.params.vectors
            else:
                self.client.create_collection(
                    self.collection, vectors_config=m.VectorParams(size=self.dimension, distance=m.Distance.COSINE)
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
        if vectors is None or self._any_dimension:
            return
        size = getattr(vectors, "size", None)
        distance = getattr(vectors, "distance", None)
        if size != self.dimension or distance not in (m.Distance.COSINE, m.Distance.DOT):
            raise IndexMismatchError(
                f"the Qdrant collection {self.collection!r} at {self._where} holds "
                f"{size if size is not None else 'named'}-dimensional vectors ({distance}) but "
                f"{self.dimension}-dimensional cosine vectors were requested, e.g. after changing the "
                f"embedding model; {REBUILD_HINT}, or choose another store.collection"
            )

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
                vector=vector.tolist(),
                payload={"chunk_id": chunk.chunk_id, "text": chunk.text, **chunk.metadata},
            )
            for chunk, vector in zip(batch, vectors)
        ]
        for start in range(0, len(points), UPSERT_BATCH):
            self._call("write to", self.client.upsert, self.collection, points=points[start : start + UPSERT_BATCH])

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
                found[by_point[str(point.id)]] = np.asarray(point.vector, dtype=np.float32)
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
