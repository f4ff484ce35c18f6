"""The transport both retriever adapters share: a search over the local library or over ``rag serve``.

:func:`open_backend` gives one of two backends behind :class:`SearchBackend`; either returns hits in the
stable ``rag search --json`` shape (``doc_id``, ``chunk_id``, ``score``, ``dense_score``, ``bm25_score``,
``rerank_score``, ``metadata``, ``text``), which is also the REST API's ``HitOut``. The framework adapters
(:mod:`rag.integrations.langchain`, :mod:`rag.integrations.llamaindex`) turn that neutral hit into their own
document type with :func:`hit_metadata`, so the two never disagree about what a hit carries.

- :class:`LocalBackend`: a :class:`~rag.workspace.Workspace` over a data directory, as ``rag search`` opens
  it; the async search runs the blocking one in a worker thread.
- :class:`HttpBackend`: ``POST /v1/collections/{c}/search`` on a running ``rag serve`` with httpx; the async
  search is a real :class:`httpx.AsyncClient` request, not a thread.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

import httpx
from pydantic import SecretStr

from rag.core import errors
from rag.core.errors import ConfigError, RagError
from rag.core.filters import Filter
from rag.core.query import OPTIONS, QueryOptions
from rag.core.types import Chunk

DEFAULT_TIMEOUT = 120.0
"""Seconds an HTTP search may take: the LLM stages (HyDE, rewrite, ``rerank='llm'``) can be slow."""


class RemoteError(RagError):
    """``rag serve`` refused a search (401, 403, 5xx ...) or could not be reached.

    Attributes:
        status: the HTTP status, or ``None`` when no response came back.
        kind: the server's error type (``"forbidden"``, ``"unauthorized"`` ...), or ``None``.
    """

    def __init__(self, message: str, status: int | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.status, self.kind = status, kind


# The server's error types that have a class of their own in the library, so a caller catches the same
# error whichever backend it uses (a misspelt collection is a CollectionNotFoundError either way).
_ERROR_TYPES: dict[str, type[RagError]] = {
    "collection_not_found": errors.CollectionNotFoundError,
    "invalid_filter": errors.FilterError,
    "invalid_request": errors.ConfigError,
    "index_empty": errors.IndexNotFoundError,
    "index_mismatch": errors.IndexMismatchError,
    "busy": errors.IndexBusyError,
    "storage_error": errors.StorageError,
    "store_error": errors.StoreError,
}

# The request fields whose name on the wire differs from the option's (SearchRequest calls it ``filters``).
_WIRE_NAMES = {"filter": "filters"}


class SearchBackend(Protocol):
    """Where an adapter's searches go: the local library or a ``rag serve``."""

    collection: str

    def search(self, query: str, options: QueryOptions) -> list[dict[str, Any]]:
        """The hits for ``query``, best first, in the ``rag search --json`` shape."""
        ...

    async def asearch(self, query: str, options: QueryOptions) -> list[dict[str, Any]]:
        """:meth:`search` without blocking the event loop."""
        ...

    def check(self, options: QueryOptions) -> None:
        """Raise :class:`ConfigError` if this backend cannot run a search with ``options``."""
        ...

    def close(self) -> None:
        """Release what the backend holds (engines, connections); it cannot search afterwards."""
        ...


def build_options(
    options: QueryOptions | None, keywords: Mapping[str, Any], source: str, arguments: Iterable[str] = ()
) -> QueryOptions:
    """The query options of an adapter: ``options``, or one built from the keyword arguments.

    Args:
        options: a ready :class:`QueryOptions`, or ``None``.
        keywords: option name -> value as the caller passed them (``None`` values count as not given).
        source: who received them, for the error message (``"RagRetriever(...)"``).
        arguments: the receiver's own arguments, listed beside the options when a keyword is unknown.

    Raises:
        ConfigError: a keyword is not a query option (the message lists the arguments and options), a
            value is out of range, or both ``options`` and a keyword option were given.
    """
    unknown = sorted(set(keywords) - set(OPTIONS))
    if unknown:
        own = f"its arguments are {', '.join(arguments)}; " if arguments else ""
        raise ConfigError(
            f"{source}: unknown argument {', '.join(map(repr, unknown))}; {own}"
            f"the query options are {', '.join(OPTIONS)}"
        )
    given = {name: value for name, value in keywords.items() if value is not None}
    built = QueryOptions(**given)
    if options is None:
        return built
    if not isinstance(options, QueryOptions):
        raise ConfigError(f"options must be a rag.core.query.QueryOptions, got {type(options).__name__}")
    if given:
        raise ConfigError(
            f"give the query options either as options=QueryOptions(...) or as keyword arguments, not both "
            f"(got options and {', '.join(sorted(given))})"
        )
    return options


def open_backend(
    *,
    collection: str,
    url: str | None,
    api_key: SecretStr | str | None,
    data_dir: Path | str | None,
    config_file: Path | str | None,
    timeout: float,
) -> SearchBackend:
    """The backend the arguments ask for: over HTTP when ``url`` is given, else the local library.

    Raises:
        ConfigError: ``url`` with ``data_dir`` or ``config_file`` (which belong to the local library), an
            ``api_key`` without ``url``, a malformed ``url``, an unknown collection (local), or bad settings.
    """
    if not isinstance(collection, str) or not collection:
        raise ConfigError(f"collection must be a collection name, got {collection!r}")
    if url is None:
        if api_key is not None:
            raise ConfigError("api_key is for a running rag serve: give its url too (or drop api_key)")
        return LocalBackend(collection, data_dir=data_dir, config_file=config_file)
    if data_dir is not None or config_file is not None:
        raise ConfigError(
            "give url (a running rag serve) or data_dir/config_file (the local library), not both"
        )
    return HttpBackend(url, collection, api_key=api_key, timeout=timeout)


class LocalBackend:
    """Searches a collection of a local data directory, as ``rag search`` does.

    Args:
        collection: the collection to search.
        data_dir: the data directory; ``None`` resolves it as the CLI does (``$RAG_DATA_DIR``,
            ``rag.toml``, else ``./.rag``).
        config_file: the config file to read instead of ``$RAG_CONFIG`` / ``./rag.toml``.

    Raises:
        ConfigError: the settings are invalid or the collection does not exist
            (:class:`~rag.core.errors.CollectionNotFoundError`).
    """

    def __init__(
        self, collection: str, *, data_dir: Path | str | None = None, config_file: Path | str | None = None
    ) -> None:
        # Imported here: the HTTP backend must not pay for (or need) the engine's imports.
        from rag.core.settings import load_settings
        from rag.workspace import Workspace

        settings = load_settings(config=config_file, **({"data_dir": Path(data_dir)} if data_dir is not None else {}))
        if not settings.data_dir.is_absolute():  # a long-lived retriever keeps its index when the cwd changes
            settings = settings.model_copy(update={"data_dir": settings.data_dir.resolve()})
        self.collection = collection
        self._workspace = Workspace(settings)
        try:
            self._workspace.require(collection)
        except BaseException:
            self._workspace.close()
            raise

    def search(self, query: str, options: QueryOptions) -> list[dict[str, Any]]:
        engine = self._workspace.engine(self.collection)
        return [hit.to_dict() for hit in engine.search(query, options=options)]

    async def asearch(self, query: str, options: QueryOptions) -> list[dict[str, Any]]:
        # The engine is synchronous (and thread-safe): a worker thread keeps the event loop free.
        return await asyncio.to_thread(self.search, query, options)

    def check(self, options: QueryOptions) -> None:
        """Every option runs locally."""

    def close(self) -> None:
        self._workspace.close()


class HttpBackend:
    """Searches a collection of a running ``rag serve`` (``POST /v1/collections/{c}/search``).

    Args:
        url: the server's address (``http://127.0.0.1:8000``; a trailing ``/v1`` is accepted).
        collection: the collection to search.
        api_key: sent as ``Authorization: Bearer``; ``None`` for a server without keys.
        timeout: seconds one search may take.

    Raises:
        ConfigError: ``url`` is not an http(s) URL, or ``timeout`` is not positive.
    """

    def __init__(
        self, url: str, collection: str, *, api_key: SecretStr | str | None = None, timeout: float = DEFAULT_TIMEOUT
    ) -> None:
        parts = urlsplit(str(url))
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"url must be the http(s) address of a rag serve, got {url!r}")
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ConfigError(f"timeout must be a positive number of seconds, got {timeout!r}")
        base = str(url).rstrip("/")
        self.url = base.removesuffix("/v1")  # an OpenAI-style base URL names the same server
        self.collection = collection
        self._path = f"/v1/collections/{quote(collection, safe='')}/search"
        self._api_key = api_key if isinstance(api_key, SecretStr) or api_key is None else SecretStr(api_key)
        self._timeout = httpx.Timeout(timeout, connect=min(10.0, timeout))
        self._client: httpx.Client | None = None

    def _headers(self) -> dict[str, str]:
        if self._api_key is None:
            return {}
        return {"Authorization": f"Bearer {self._api_key.get_secret_value()}"}  # read where used, never kept

    def _body(self, query: str, options: QueryOptions) -> dict[str, Any]:
        self.check(options)
        fields = {
            _WIRE_NAMES.get(name, name): value.to_dict() if isinstance(value, Filter) else value
            for name, value in options.given().items()
        }
        return {"query": query, **fields}

    def check(self, options: QueryOptions) -> None:
        """The search endpoint takes every option but ``history`` (a conversation is ``/ask``'s)."""
        if options.history is not None:
            raise ConfigError(
                "history: rag serve's search endpoint takes no conversation; give a standalone question, "
                "or search the local library (data_dir) where history is supported"
            )

    def search(self, query: str, options: QueryOptions) -> list[dict[str, Any]]:
        body = self._body(query, options)
        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=self._timeout)
        try:
            response = self._client.post(self._path, json=body, headers=self._headers())
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return self._hits(response)

    async def asearch(self, query: str, options: QueryOptions) -> list[dict[str, Any]]:
        body = self._body(query, options)
        # A client per call: an AsyncClient belongs to the event loop that opened it, and an adapter is
        # called from whatever loop its caller runs (one asyncio.run after another, a server's loop ...).
        try:
            async with httpx.AsyncClient(base_url=self.url, timeout=self._timeout) as client:
                response = await client.post(self._path, json=body, headers=self._headers())
        except httpx.HTTPError as exc:
            raise self._unreachable(exc) from None
        return self._hits(response)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    def _unreachable(self, exc: httpx.HTTPError) -> RemoteError:
        reason = str(exc) or type(exc).__name__
        return RemoteError(f"cannot search rag serve at {self.url}: {reason}")

    def _hits(self, response: httpx.Response) -> list[dict[str, Any]]:
        """The hits of a 200 response; any other answer raised as the library error it stands for."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code == 200 and isinstance(body, dict) and isinstance(body.get("hits"), list):
            return list(body["hits"])
        error = body.get("error") if isinstance(body, dict) else None
        kind = error.get("type") if isinstance(error, dict) else None
        message = error.get("message") if isinstance(error, dict) else None
        text = f"rag serve at {self.url} answered {response.status_code}"
        text += f" ({kind}): {message}" if kind and message else f": {response.text[:200] or response.reason_phrase}"
        error_type = _ERROR_TYPES.get(str(kind))
        if error_type is not None:
            raise error_type(text)
        raise RemoteError(text, status=response.status_code, kind=kind)


def hit_metadata(hit: Mapping[str, Any], collection: str) -> dict[str, Any]:
    """The metadata a framework document carries for ``hit``: the chunk's own metadata (``source``,
    ``title``, ``section``, ``page``, ``start``/``end``, user metadata ...) plus ``doc_id``, ``chunk_id``,
    ``collection``, the scores (``score``, ``dense_score``, ``bm25_score``, ``rerank_score``) and ``citation``,
    the label a reader finds the passage by (``source § section (p. N)``)."""
    metadata = dict(hit.get("metadata") or {})
    chunk = Chunk(str(hit["chunk_id"]), str(hit["doc_id"]), str(hit["text"]), metadata)
    metadata.update(
        doc_id=chunk.doc_id, chunk_id=chunk.chunk_id, collection=collection, score=hit["score"],
        dense_score=hit.get("dense_score"), bm25_score=hit.get("bm25_score"),
        rerank_score=hit.get("rerank_score"), citation=chunk.citation_label(),
    )
    return metadata
