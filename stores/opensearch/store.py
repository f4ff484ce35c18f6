"""The OpenSearch store's lifecycle and :class:`~rag.stores.base.VectorStore` side, and its registry factory.

Filter translation is in :mod:`~rag.stores.opensearch.filters`, the BM25 keyword side in
:mod:`~rag.stores.opensearch.keyword` and the server-side hybrid query in :mod:`~rag.stores.opensearch.hybrid`;
:mod:`rag.stores.opensearch` describes the whole backend.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from rag.core.errors import REBUILD_HINT, ConfigError, IndexMismatchError, StoreError
from rag.core.filters import Filter
from rag.core.settings import StoreSettings
from rag.core.types import ScoredId
from rag.stores.base import StoredChunk, store_options, unit_rows
from rag.stores.opensearch import hybrid
from rag.stores.opensearch.documents import document_id
from rag.stores.opensearch.filters import MatchesNothing, filter_query, filterable_fields
from rag.stores.opensearch.keyword import MAX_RESULTS, SCORE_SORT, OpenSearchKeywordIndex

if TYPE_CHECKING:
    from opensearchpy import OpenSearch

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rag-platform[opensearch]'"
ENGINES = ("lucene", "faiss")  # the two engines whose filtered k-NN search takes the filter inside `knn`
SPACE_TYPE = "innerproduct"
# Candidate sets up to this size are searched exactly (FaissStore's HNSW mode uses 16,384).
EXACT_SEARCH_MAX = 10_000
BULK_CHUNK = 500
KEYWORD_IGNORE_ABOVE = 8191  # Lucene's 32,766-byte term limit, in 4-byte characters
_PAGE = 1_000
_COUNT_TTL = 5.0
_INDEX_RE = re.compile(r"^[a-z0-9][a-z0-9_\-.]{0,199}$")
_EXTRA_OPTIONS = (
    "username", "verify_certs", "ca_certs", "timeout", "engine", "ef_construction", "exact_search_max",
    "shards", "replicas", "analyzer",
)


def _opensearch() -> Any:
    """Import opensearch-py on first use, so the package works without it."""
    try:
        import opensearchpy
    except ImportError as exc:
        raise StoreError(f"the opensearch vector store needs opensearch-py: {INSTALL_HINT}") from exc
    return opensearchpy


def redact(url: str) -> str:
    """``url`` without the password of any ``user:password@`` part (for messages and logs)."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{host}"))


def score_from_cosine(ip: float) -> float:
    """OpenSearch's ``_score`` for an inner product ``ip`` in the ``innerproduct`` space (every engine, and
    the exact scoring script): ``ip + 1`` above 0, ``1 / (1 - ip)`` otherwise; always positive."""
    return ip + 1.0 if ip > 0 else 1.0 / (1.0 - ip)


def cosine_from_score(score: float) -> float:
    """The exact inverse of :func:`score_from_cosine`: the cosine similarity of unit vectors."""
    return score - 1.0 if score >= 1.0 else 1.0 - 1.0 / score


def index_body(
    dimension: int,
    *,
    engine: str = "lucene",
    m: int = 16,
    ef_construction: int = 128,
    analyzer: str = "english",
    shards: int | None = 1,
    replicas: int | None = None,
) -> dict[str, Any]:
    """The body of the index-creation request: settings, fixed properties and the dynamic templates."""
    index: dict[str, Any] = {"knn": True}
    if shards is not None:
        index["number_of_shards"] = shards
    if replicas is not None:
        index["number_of_replicas"] = replicas
    typed = {
        "keyword": {"type": "keyword", "ignore_above": KEYWORD_IGNORE_ABOVE},
        "number": {"type": "double"},
        "boolean": {"type": "boolean"},
        "date": {"type": "long"},  # microseconds since the epoch, UTC
    }
    return {
        "settings": {"index": index},
        "mappings": {
            "dynamic": "strict",  # only `filterable` grows, through the templates below
            "dynamic_templates": [
                {f"filterable_{kind}": {"path_match": f"filterable.{kind}.*", "mapping": mapping}}
                for kind, mapping in typed.items()
            ],
            "properties": {
                "chunk_id": {"type": "keyword"},
                "text": {"type": "text", "analyzer": analyzer},
                "vector": {
                    "type": "knn_vector",
                    "dimension": dimension,
                    "method": {
                        "name": "hnsw",
                        "engine": engine,
                        "space_type": SPACE_TYPE,
                        "parameters": {"m": m, "ef_construction": ef_construction},
                    },
                },
                "metadata": {"type": "object", "enabled": False},
                "filterable": {
                    "type": "object",
                    "dynamic": True,
                    "properties": {
                        **{kind: {"type": "object", "dynamic": True} for kind in typed},
                        "present": {"type": "keyword"},
                    },
                },
            },
        },
    }


class OpenSearchStore:
    """A :class:`~rag.stores.base.VectorStore` on one OpenSearch index, with keyword and hybrid search.

    Args:
        dimension: vector length; must equal the existing index's.
        url: the cluster, e.g. ``http://localhost:9200``; ``user:password@`` in it is used and redacted.
        collection: the index name (lowercase letters, digits, ``_``, ``-``, ``.``); created on first use.
        username, password: basic authentication (the password is never logged).
        verify_certs, ca_certs, timeout: TLS verification, a CA bundle, the request timeout in seconds.
        read_only: search only: create nothing (a missing index reads as empty), refuse writes. Hybrid
            search still creates its search pipelines, which are cluster settings, not data.
        engine: ``"lucene"`` (default) or ``"faiss"``: both take the filter inside the ``knn`` query.
        hnsw_m, ef_construction: HNSW build parameters (used when the index is created).
        ef_search: graph candidates per search (``k`` of the ``knn`` query, at least the results wanted).
        exact_search_max: candidate sets up to this many documents are searched exactly; 0: always the graph.
        shards, replicas: the new index's shard and replica counts (``None``: the cluster's default).
            One shard (the default) keeps BM25 statistics exact; with more, term statistics are per shard.
        analyzer: the ``text`` field's analyzer (``english``: stemming and stop words, like the local BM25).
        client: an ``opensearchpy.OpenSearch`` to use instead of building one from ``url`` (custom
            authentication such as AWS SigV4, or tests); the store closes it.
        any_dimension: open an existing index whatever its dimension (only to :meth:`drop` it).

    Raises:
        ConfigError: an argument is out of range or the collection cannot name an index.
        StoreError: opensearch-py is missing, or the cluster is unreachable or refuses the request.
        IndexMismatchError: the index exists with another dimension or space, or is not one of ours.
    """

    def __init__(  # noqa: PLR0913 - one keyword per store option, as the registry's factory passes them
        self,
        dimension: int,
        *,
        url: str | None = None,
        collection: str = "rag",
        username: str | None = None,
        password: str | None = None,
        verify_certs: bool = True,
        ca_certs: str | None = None,
        timeout: float = 30.0,
        read_only: bool = False,
        engine: str = "lucene",
        hnsw_m: int = 16,
        ef_construction: int = 128,
        ef_search: int = 100,
        exact_search_max: int = EXACT_SEARCH_MAX,
        shards: int | None = 1,
        replicas: int | None = None,
        analyzer: str = "english",
        client: OpenSearch | None = None,
        any_dimension: bool = False,
    ) -> None:
        if dimension <= 0:
            raise ConfigError(f"vector dimension must be positive, got {dimension}")
        if not isinstance(collection, str) or not _INDEX_RE.match(collection):
            raise ConfigError(
                f"collection {collection!r} cannot name an OpenSearch index; use 1-200 lowercase letters, digits, "
                "'_', '-' or '.', starting with a letter or digit"
            )
        if engine not in ENGINES:
            raise ConfigError(
                f"OpenSearch engine must be one of {', '.join(ENGINES)} (efficient filtering), got {engine!r}"
            )
        if not 2 <= hnsw_m <= 512:
            raise ConfigError(f"hnsw_m must be between 2 and 512, got {hnsw_m}")
        if not 2 <= ef_construction <= 3200:
            raise ConfigError(f"ef_construction must be between 2 and 3200 (Lucene's limit), got {ef_construction}")
        if not 1 <= ef_search <= MAX_RESULTS:
            raise ConfigError(f"ef_search must be between 1 and {MAX_RESULTS}, got {ef_search}")
        if exact_search_max < 0:
            raise ConfigError(f"exact_search_max must be >= 0, got {exact_search_max}")
        if (shards is not None and shards < 1) or (replicas is not None and replicas < 0):
            raise ConfigError(f"shards must be >= 1 and replicas >= 0, got {shards} and {replicas}")
        if client is None and not url:
            raise ConfigError(
                "the opensearch store needs a server: set store.url (RAG_STORE__URL), e.g. http://localhost:9200"
            )
        self._os = _opensearch()
        self.dimension = dimension
        self.collection = self.index = collection
        self.read_only = read_only
        self.url = url
        self.engine = engine
        self.ef_search = ef_search
        self.exact_search_max = exact_search_max
        self._where = redact(url) if url else "the given client"
        self._index_body = index_body(
            dimension, engine=engine, m=hnsw_m, ef_construction=ef_construction, analyzer=analyzer,
            shards=shards, replicas=replicas,
        )
        if client is None:
            auth = (username or "admin", password) if password is not None else None
            client = self._os.OpenSearch(
                hosts=[url], http_auth=auth, verify_certs=verify_certs, ca_certs=ca_certs, timeout=timeout
            )
        self._client: OpenSearch | None = client
        self._lock = threading.RLock()
        self._exists = False
        self._dirty = False
        self._counts: dict[str, tuple[int, float]] = {}
        self._pipelines: set[str] = set()
        self._any_dimension = any_dimension
        try:
            self._open()
        except BaseException:
            self.close()
            raise

    @property
    def client(self) -> OpenSearch:
        """The open opensearch-py client.

        Raises:
            StoreError: the store is closed.
        """
        if self._client is None:
            raise StoreError(f"the OpenSearch store {self.index!r} at {self._where} is closed")
        return self._client

    # -- opening -----------------------------------------------------------------------------------

    def _open(self) -> None:
        if self._call("reach", self.client.indices.exists, index=self.index):
            self._exists = True
            self._check_mapping()
        elif not self.read_only:
            self._create()

    def _create(self) -> None:
        try:
            self.client.indices.create(index=self.index, body=self._index_body)
        except self._os.exceptions.RequestError as exc:
            if exc.error != "resource_already_exists_exception":  # another process created it just now
                raise self._error("create", exc) from exc
        except self._os.exceptions.OpenSearchException as exc:
            raise self._error("create", exc) from exc
        self._exists = True
        self._check_mapping()

    def _check_mapping(self) -> None:
        response = self._call("read the mapping of", self.client.indices.get_mapping, index=self.index)
        mapping = next(iter(response.values()), {}).get("mappings", {}) if response else {}
        properties = mapping.get("properties", {})
        vector = properties.get("vector", {})
        if vector.get("type") != "knn_vector" or "filterable" not in properties or "chunk_id" not in properties:
            raise IndexMismatchError(
                f"the OpenSearch index {self.index!r} at {self._where} was not created by rag-platform (no "
                f"knn_vector field 'vector' and 'filterable' object); choose another store.collection"
            )
        if self._any_dimension:
            return
        dimension = vector.get("dimension")
        space = vector.get("space_type") or vector.get("method", {}).get("space_type")
        if dimension != self.dimension or space != SPACE_TYPE:
            raise IndexMismatchError(
                f"the OpenSearch index {self.index!r} at {self._where} holds {dimension}-dimensional vectors "
                f"({space}) but {self.dimension}-dimensional {SPACE_TYPE} vectors were requested, e.g. after "
                f"changing the embedding model; {REBUILD_HINT}, or choose another store.collection"
            )

    def _readable(self) -> bool:
        """Whether the index exists; a reader looks again each time until a writer has created it."""
        if not self._exists:
            if not self._call("reach", self.client.indices.exists, index=self.index):
                return False
            self._check_mapping()
            self._exists = True
        return True

    def _writable(self) -> None:
        if self.read_only:
            raise StoreError(f"the OpenSearch store {self.index!r} at {self._where} was opened read-only")
        if not self._exists:  # dropped and reopened by this instance's caller: create it again
            self._create()

    def _visible(self) -> bool:
        """Make this instance's writes searchable before it reads them; ``False`` if there is no index."""
        with self._lock:
            if not self._readable():
                return False
            if self._dirty:
                self._call("refresh", self.client.indices.refresh, index=self.index)
                self._dirty = False
            return True

    # -- writing -----------------------------------------------------------------------------------

    def upsert(self, chunks: list[StoredChunk]) -> None:
        """Insert or replace chunks by id with bulk requests of 500 (the last of repeated ids wins).

        Raises:
            IndexMismatchError: a vector has another dimension than the index.
            StoreError: a vector is zero or not finite, metadata is not JSON (or holds NaN), the store is
                read-only, or OpenSearch refused a document.
        """
        batch = list({chunk.chunk_id: chunk for chunk in chunks}.values())
        if not batch:
            return
        vectors = unit_rows([c.vector for c in batch], self.dimension, "upsert")
        actions = [
            {"_op_type": "index", "_index": self.index, "_id": document_id(c.chunk_id), "_source": self._source(c, v)}
            for c, v in zip(batch, vectors)
        ]
        with self._lock:
            self._writable()
            self._bulk("write to", actions)

    @staticmethod
    def _source(chunk: StoredChunk, vector: np.ndarray) -> dict[str, Any]:
        try:
            metadata = json.loads(json.dumps(chunk.metadata, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"metadata of chunk {chunk.chunk_id!r} cannot be stored as JSON: {exc}; use strings, finite "
                "numbers, booleans, lists and ISO-8601 date strings"
            ) from exc
        return {
            "chunk_id": chunk.chunk_id,
            "text": chunk.text,
            "vector": vector.tolist(),
            "metadata": metadata,
            "filterable": filterable_fields(metadata),
        }

    def delete(self, chunk_ids: list[str]) -> None:
        """Remove chunks by id; unknown ids are ignored."""
        if not chunk_ids:
            return
        unique = dict.fromkeys(map(document_id, chunk_ids))
        actions = [{"_op_type": "delete", "_index": self.index, "_id": doc} for doc in unique]
        with self._lock:
            self._writable()
            self._bulk("delete from", actions, ignore_status=(404,))  # 404: an unknown id

    def _bulk(self, action: str, actions: list[dict[str, Any]], ignore_status: tuple[int, ...] = ()) -> None:
        try:
            self._os.helpers.bulk(self.client, actions, chunk_size=BULK_CHUNK, ignore_status=ignore_status)
        except self._os.helpers.BulkIndexError as exc:
            # Quote the first failure's reason only: the error items also carry whole documents.
            first = next(iter(exc.errors[0].values()), {}) if exc.errors else {}
            reason = first.get("error", {})
            reason = reason.get("reason", reason) if isinstance(reason, dict) else reason
            raise StoreError(
                f"cannot {action} the OpenSearch index {self.index!r} at {self._where}: {len(exc.errors)} document(s) "
                f"refused; the first ({first.get('_id')!r}): {reason}"
            ) from None
        except self._os.exceptions.OpenSearchException as exc:
            raise self._error(action, exc) from exc
        finally:
            self._dirty = True
            self._counts.clear()

    def flush(self) -> None:
        """Refresh the index, so every write so far is searchable by every reader.

        Each bulk request was already durable when acknowledged (the translog is fsynced per request).
        """
        with self._lock:
            if self._client is not None and self._dirty and self._exists:
                self._call("refresh", self.client.indices.refresh, index=self.index)
                self._dirty = False

    def close(self) -> None:
        """Flush and close the client; idempotent."""
        with self._lock:
            if self._client is None:
                return
            try:
                self.flush()
            finally:
                self._client.close()
                self._client = None

    def drop(self) -> None:
        """Delete the index with every chunk in it, then close (``rag ingest --rebuild``).

        Raises:
            StoreError: the store is read-only, or the index could not be deleted.
        """
        with self._lock:
            if self.read_only:
                raise StoreError(f"the OpenSearch store {self.index!r} at {self._where} was opened read-only")
            self._call("drop", self.client.indices.delete, index=self.index, ignore_unavailable=True)
            self._exists = self._dirty = False
            self.close()

    def __enter__(self) -> OpenSearchStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading -----------------------------------------------------------------------------------

    def search(self, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` chunks (at most 10,000) with the highest cosine similarity to ``vector`` that satisfy
        ``filter``; exact up to ``exact_search_max`` candidates, the HNSW graph with the filter inside beyond.

        Raises:
            ValueError: ``k`` is not positive.
            IndexMismatchError: ``vector`` has another dimension than the index.
            FilterError: a filter value OpenSearch cannot compare.
            StoreError: ``vector`` is zero or not finite, or OpenSearch failed.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        query = unit_rows(vector, self.dimension, "the query")[0].tolist()
        try:
            allowed = filter_query(filter)
        except MatchesNothing:
            return []
        if not self._visible():
            return []
        size = min(k, MAX_RESULTS)
        candidates = self._candidates(filter, allowed)
        if candidates == 0:
            return []
        if candidates <= self.exact_search_max:
            return self._search(self.exact_body(query, size, allowed))
        hits = self._search(self.knn_body(query, size, allowed))
        if len(hits) < min(size, candidates):
            # The graph walk ran out of reachable documents that pass: exactness beats too few.
            log.debug("knn search of %r returned %d of %d; redoing it exactly", self.index, len(hits), size)
            hits = self._search(self.exact_body(query, size, allowed))
        return hits

    def _search(self, body: dict[str, Any], **kwargs: Any) -> list[ScoredId]:
        """Send a vector search; scores converted back to cosine similarities."""
        return self._hits(self._call("search", self.client.search, index=self.index, body=body, **kwargs))

    def exact_body(self, query: list[float], size: int, allowed: dict[str, Any]) -> dict[str, Any]:
        """The exact search: the k-NN plugin's scoring script over the documents the filter allows."""
        script = {
            "lang": "knn",
            "source": "knn_score",
            "params": {"field": "vector", "query_value": query, "space_type": SPACE_TYPE},
        }
        return {
            "size": size,
            "_source": ["chunk_id"],
            "track_scores": True,
            "sort": SCORE_SORT,
            "query": {"script_score": {"query": allowed, "script": script}},
        }

    def knn_body(self, query: list[float], size: int, allowed: dict[str, Any]) -> dict[str, Any]:
        """The approximate search: a ``knn`` query with the filter inside it (efficient filtering)."""
        knn: dict[str, Any] = {"vector": query, "k": min(max(size, self.ef_search), MAX_RESULTS)}
        if "bool" in allowed:
            knn["filter"] = allowed
        return {
            "size": size,
            "_source": ["chunk_id"],
            "track_scores": True,
            "sort": SCORE_SORT,
            "query": {"knn": {"vector": knn}},
        }

    def _candidates(self, filter: Filter | None, allowed: dict[str, Any]) -> int:
        """How many documents the filter allows; cached for a few seconds and until this instance writes."""
        key = repr(filter) if filter else ""
        with self._lock:
            cached = self._counts.get(key)
            if cached is not None and time.monotonic() - cached[1] < _COUNT_TTL:
                return cached[0]
        count = int(self._call("count", self.client.count, index=self.index, body={"query": allowed})["count"])
        with self._lock:
            if len(self._counts) > 64:
                self._counts.clear()
            self._counts[key] = (count, time.monotonic())
        return count

    @staticmethod
    def _hits(response: dict[str, Any], convert: Callable[[float], float] = cosine_from_score) -> list[ScoredId]:
        found = []
        for hit in response["hits"]["hits"]:
            score = hit.get("_score")
            if score is None:  # sorted searches carry the score in the sort values
                score = hit["sort"][0]
            found.append(ScoredId(hit["_source"]["chunk_id"], convert(float(score))))
        return found

    def get_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored (normalised) vectors of the given ids; unknown ids are left out."""
        wanted = {document_id(cid): cid for cid in chunk_ids}
        if not wanted or not self._visible():
            return {}
        found: dict[str, np.ndarray] = {}
        ids = list(wanted)
        for start in range(0, len(ids), _PAGE):
            response = self._call(
                "read", self.client.mget, index=self.index, body={"ids": ids[start : start + _PAGE]},
                params={"_source_includes": "chunk_id,vector"},
            )
            for doc in response["docs"]:
                if doc.get("found"):
                    found[doc["_source"]["chunk_id"]] = np.asarray(doc["_source"]["vector"], dtype=np.float32)
        return found

    def ids(self) -> set[str]:
        """Every stored chunk id (paged by ``search_after`` on the ``chunk_id`` keyword)."""
        if not self._visible():
            return set()
        found: set[str] = set()
        after: list[Any] | None = None
        while True:
            body: dict[str, Any] = {"size": _PAGE, "_source": ["chunk_id"], "sort": [{"chunk_id": "asc"}],
                                    "query": {"match_all": {}}}
            if after is not None:
                body["search_after"] = after
            hits = self._call("read", self.client.search, index=self.index, body=body)["hits"]["hits"]
            found.update(hit["_source"]["chunk_id"] for hit in hits)
            if len(hits) < _PAGE:
                return found
            after = hits[-1]["sort"]

    def count(self) -> int:
        """Number of stored chunks (this instance's writes included)."""
        if not self._visible():
            return 0
        return int(self._call("count", self.client.count, index=self.index)["count"])

    def size_bytes(self) -> int:
        """0: the data lives on the cluster, not on this machine's disk."""
        return 0

    # -- keyword and hybrid search ----------------------------------------------------------------

    def keyword_index(self) -> OpenSearchKeywordIndex:
        """BM25 over the ``text`` field of the same index (the engine's keyword side of hybrid search)."""
        return OpenSearchKeywordIndex(self)

    # The hybrid query's pieces, kept on the class where callers (and tests) find them.
    pipeline_name = staticmethod(hybrid.pipeline_name)
    pipeline_body = staticmethod(hybrid.pipeline_body)

    def hybrid_body(
        self, query: str, vector: list[float], size: int, depth: int, filter: Filter | None
    ) -> dict[str, Any]:
        """The ``hybrid`` query (see :func:`rag.stores.opensearch.hybrid.hybrid_body`)."""
        return hybrid.hybrid_body(query, vector, size, depth, filter)

    def hybrid_search_unavailable(self) -> str | None:
        """``None``: the ``hybrid`` query and the normalization processor come with the neural-search
        plugin of the default distribution (OpenSearch 2.10 and later; this store needs 2.13), so no request
        is spent asking. A cluster without the plugin fails :meth:`hybrid_search` with a
        :class:`StoreError`; ``retrieval.native_hybrid = "off"`` then keeps the fusion local."""
        return None

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
        """Hybrid search inside OpenSearch: a ``hybrid`` query whose sub-query scores a search pipeline
        min-max normalises and combines as ``(1 - α) · keyword + α · dense``. Arguments, scores and errors
        as :func:`rag.stores.opensearch.hybrid.hybrid_search`."""
        return hybrid.hybrid_search(self, query, vector, k, alpha, filter, candidates=candidates)

    # -- errors ------------------------------------------------------------------------------------

    def _call(self, action: str, method: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call the client, turning its transport and response errors into :class:`StoreError`."""
        try:
            return method(*args, **kwargs)
        except self._os.exceptions.OpenSearchException as exc:
            raise self._error(action, exc) from exc

    def _error(self, action: str, exc: Exception) -> StoreError:
        hint = ""
        if isinstance(exc, self._os.exceptions.ConnectionError):
            hint = "; check store.url (RAG_STORE__URL) and that the server is running"
        elif isinstance(exc, self._os.exceptions.AuthenticationException):
            hint = "; check the credentials (store.api_key, [store.options] username)"
        return StoreError(f"cannot {action} the OpenSearch index {self.index!r} at {self._where}: {exc}{hint}")


def create_opensearch_store(
    *, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool = False, any_dimension: bool = False
) -> OpenSearchStore:
    """The registry's factory for ``store.kind = "opensearch"``.

    Reads ``store.url`` (required), ``store.api_key`` (the basic-auth password; never logged),
    ``store.collection`` (the index), ``store.hnsw_m`` and ``store.hnsw_ef_search``, and from
    ``[store.options]``: ``username`` (default ``admin``), ``verify_certs`` (default true), ``ca_certs``,
    ``timeout`` (seconds, default 30), ``engine`` (``lucene`` or ``faiss``), ``ef_construction`` (default
    ``max(128, 2 * hnsw_m)``), ``exact_search_max`` (default 10,000), ``shards`` (default 1), ``replicas``
    (default: the cluster's) and ``analyzer`` (default ``english``). ``data_dir`` is not used: the data
    lives on the cluster. ``any_dimension`` opens an index of another dimension, only to drop it.

    Raises:
        ConfigError: ``store.url`` is unset, or an unknown or malformed ``[store.options]`` key.
    """
    extra = store_options(options, _EXTRA_OPTIONS, "opensearch")
    if not options.url:
        raise ConfigError("store.kind = 'opensearch' needs store.url (RAG_STORE__URL), e.g. http://localhost:9200")
    try:
        ef_construction = int(extra.get("ef_construction", max(128, 2 * options.hnsw_m)))
        exact_search_max = int(extra.get("exact_search_max", EXACT_SEARCH_MAX))
        shards = int(extra["shards"]) if extra.get("shards") is not None else 1
        replicas = int(extra["replicas"]) if extra.get("replicas") is not None else None
        timeout = float(extra.get("timeout", 30.0))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"opensearch store options must be numbers: {exc}") from exc
    verify = extra.get("verify_certs", True)
    if isinstance(verify, str):
        verify = verify.strip().lower() not in ("0", "false", "no", "off")
    return OpenSearchStore(
        dimension,
        url=options.url,
        collection=options.collection,
        username=str(extra["username"]) if extra.get("username") else None,
        # The one place the secret is read; it goes straight to the client and is never logged.
        password=options.api_key.get_secret_value() if options.api_key else None,
        verify_certs=bool(verify),
        ca_certs=str(extra["ca_certs"]) if extra.get("ca_certs") else None,
        timeout=timeout,
        read_only=read_only,
        any_dimension=any_dimension,
        engine=str(extra.get("engine", "lucene")),
        hnsw_m=options.hnsw_m,
        ef_construction=ef_construction,
        ef_search=options.hnsw_ef_search,
        exact_search_max=exact_search_max,
        shards=shards,
        replicas=replicas,
        analyzer=str(extra.get("analyzer", "english")),
    )
