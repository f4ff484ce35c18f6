"""The MCP server: the collections as tools an agent can call (``rag mcp``, and ``/mcp`` in ``rag serve``).

Built with the official Model Context Protocol SDK (:class:`mcp.server.mcpserver.MCPServer`). The tools
are thin, as the REST routes are: each checks the caller's access, validates its arguments with the REST
API's own request schemas (:mod:`rag.api.schemas`), runs the same engine call in a worker thread, and
returns the same JSON shapes as structured content (with an ``outputSchema``):

- ``search``: hybrid search, the hits and the answerability probability (``POST .../search``);
- ``ask``: a cited answer, its citations and the cited passages (``POST .../ask``);
- ``list_collections``, ``list_documents``, ``get_document``: what there is to read;
- ``get_chunk``: one chunk with its neighbours and offsets (:meth:`rag.engine.RagEngine.chunk`).

Two transports serve the same tools:

- stdio (:func:`serve_stdio`, ``rag mcp``) for desktop agents: the local user owns the data directory, so
  every collection is readable, ``--collection`` is the default one;
- streamable HTTP at ``/mcp`` of the API (:class:`McpEndpoint`), stateless and with JSON responses, so any
  replica answers any request. The API's :class:`~rag.api.guard.RequestGuard` checks the key from the
  headers first (401 without a valid one once keys exist) and the tools apply the key's collection scope
  through :meth:`rag.api.deps.Caller.require`, exactly as the routes do.

A user mistake (unknown collection, forbidden collection, bad filter, empty query, unknown id) is a tool
error (``isError``) whose text starts with the REST API's error type, e.g. ``invalid_filter: ...``; it
never ends the session.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

import anyio
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
from mcp.server.transport_security import TransportSecuritySettings
from mcp_types import ToolAnnotations
from pydantic import BaseModel, Field, ValidationError
from starlette.datastructures import Headers
from starlette.types import Receive, Scope, Send

from rag import __version__
from rag.api.deps import CALLER_KEY, Caller, Services, identify
from rag.api.errors import ApiError, classify, hide_paths_under, problem, public_message
from rag.api.keys import ALL_COLLECTIONS
from rag.api.routes.collections import collection_info
from rag.api.routes.query import answer_body
from rag.api.schemas import (
    FILTERS_DOC,
    AskRequest,
    ChunkOut,
    CitationOut,
    CollectionResponse,
    DocumentSummary,
    Filters,
    HitOut,
    NumberedHit,
    SearchRequest,
    hidden_characters,
)
from rag.core.errors import RagError
from rag.core.settings import Settings
from rag.workspace import DEFAULT_COLLECTION, Workspace

log = logging.getLogger(__name__)

MAX_K = 50
"""The most passages one tool call returns: an agent's context is small, and ``k`` above this is a mistake."""
MAX_NEIGHBOURS = 5
MAX_PAGE = 200

INSTRUCTIONS = """\
Search and question the user's document collections (rag-platform). Start with `search` to find passages \
(each hit has a chunk_id, doc_id, source, metadata and text, plus `answerable`: the probability that the \
collection answers the question at all), or `ask` for an answer written from the documents with [n] \
citations and the cited passages. Widen a passage with `get_chunk` (its neighbours) or `get_document`. \
`list_collections` names the collections you may read; tools use the default collection when none is given. \
Filters narrow a search by metadata: "lang=en", "page>=2", "tags in a,b", "source~docs/*.md", or JSON such \
as {"lang": "en"}. Quote sources by their `source` and `section`."""

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

_COLLECTION = Field(
    description="The collection to read (see list_collections); omitted: the server's default collection.",
    max_length=63,
)
Collection = Annotated[str | None, _COLLECTION]
FiltersArg = Annotated[Filters, Field(description=FILTERS_DOC)]
K = Annotated[
    int | None,
    Field(ge=1, le=MAX_K, description="How many passages to return (1-50); omitted: the configured retrieval.k."),
]
_ANSWERABLE = Field(
    None, ge=0.0, le=1.0,
    description="Calibrated probability that the collection holds an answer to the query (null when it cannot be "
    "computed). Below about 0.5 the documents probably do not cover it: say so rather than guess.",
)


# -- tool results -------------------------------------------------------------------------------------


class SearchResult(BaseModel):
    """What ``search`` returns: the hits of ``POST /v1/collections/{c}/search`` and where they came from."""

    collection: str
    hits: list[HitOut] = Field(description="Best first; `metadata` has source, title, section, page.")
    answerable: float | None = _ANSWERABLE


class AskResult(BaseModel):
    """What ``ask`` returns: the answer, its citations and the passages they point at."""

    collection: str
    answer: str = Field(description="The answer, with [n] markers; n is a passage's `n`.")
    citations: list[CitationOut] = Field(description="The passages the answer cites, by number.")
    passages: list[NumberedHit] = Field(
        description="The cited passages in full, each with its number `n`; when the answer cites none (the "
        "documents do not seem to cover the question), the nearest passages."
    )
    answerable: float | None = _ANSWERABLE
    model: str = Field(description="What wrote the answer: an LLM, or the extractive answerer (no LLM).")
    warnings: list[str] = Field(description="What went wrong without failing the answer; tell the user.")


class CollectionsResult(BaseModel):
    collections: list[CollectionResponse] = Field(description="The collections this caller may read.")
    default: str = Field(description="The collection the tools read when none is given.")


class DocumentsResult(BaseModel):
    collection: str
    total: int = Field(description="Documents matching the filter.")
    offset: int
    documents: list[DocumentSummary]


class DocumentResult(DocumentSummary):
    collection: str
    chunk_offset: int = Field(description="Index of the first chunk in chunk_list; `chunks` is the total.")
    chunk_list: list[ChunkOut] = Field(description="The document's chunks in order, from chunk_offset.")


class ChunkResult(BaseModel):
    collection: str
    chunk_id: str
    doc_id: str
    source: str
    title: str
    text: str
    metadata: dict[str, Any]
    start: int | None = Field(description="Character offset of the chunk in the document text (null: unknown).")
    end: int | None = Field(description="Character offset just past the chunk (null: unknown).")
    page: int | str | None = Field(description="Page or slide, for paged formats.")
    chunk_index: int = Field(description="Position of the chunk in its document, from 0.")
    document_chunks: int = Field(description="How many chunks the document has.")
    before: list[ChunkOut] = Field(description="Preceding chunks, nearest last.")
    after: list[ChunkOut] = Field(description="Following chunks, nearest first.")


# -- the tools ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class McpBackend:
    """What the tools need from the process that serves them.

    Attributes:
        workspace: the collections.
        run: runs a blocking call (``fn, *args``) off the event loop and returns its result.
        caller: who is calling, from a tool call's context (a local stdio user: anyone).
        default_collection: the collection read when a call names none; ``None``: the key's own
            collection if it is scoped to one, else ``default``.
    """

    workspace: Workspace
    run: Callable[..., Awaitable[Any]]
    caller: Callable[[Context], Awaitable[Caller]]
    default_collection: str | None = None

    def default_for(self, caller: Caller) -> str:
        if self.default_collection is not None:
            return self.default_collection
        if caller.key is not None and caller.key.collection != ALL_COLLECTIONS:
            return caller.key.collection
        return DEFAULT_COLLECTION

    async def readable(self, ctx: Context, collection: str | None) -> str:
        """The collection a call reads, once the caller may read it (403 as the REST API says it)."""
        caller = await self.caller(ctx)
        name = collection.strip() if collection and collection.strip() else self.default_for(caller)
        caller.require(name, "read")
        return name


@contextmanager
def _tool_errors() -> Iterator[None]:
    """Library and API errors as tool errors, worded as the REST API words them (``type: message``)."""
    try:
        yield
    except ToolError:
        raise
    except ApiError as exc:
        raise ToolError(f"{exc.kind}: {exc.message}") from None
    except RagError as exc:
        raise ToolError(f"{classify(exc)[1]}: {public_message(str(exc))}") from None
    except ValidationError as exc:
        parts = [f"{'.'.join(str(p) for p in err.get('loc', ())) or 'arguments'}: {err.get('msg')}"
                 for err in exc.errors()[:5]]
        raise ToolError(f"invalid_request: {'; '.join(parts)}") from None


def _text(value: str, name: str) -> str:
    if not value.strip():
        raise ToolError(f"invalid_request: {name} is empty; give the words or question to look for")
    return value


def _check_id(value: str, name: str) -> None:
    if not value.strip():
        raise ToolError(f"invalid_request: {name} is empty")
    if (problem_text := hidden_characters(value)) is not None:
        raise ToolError(f"invalid_request: {name} {problem_text}")


def build_server(backend: McpBackend) -> MCPServer:
    """The MCP server with rag-platform's tools over ``backend`` (no transport yet)."""
    server = _quiet(lambda: MCPServer(
        "rag-platform", title="rag-platform", version=__version__, instructions=INSTRUCTIONS, log_level="WARNING",
    ))
    run, workspace = backend.run, backend.workspace

    def tool(title: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """Register a read-only tool; its docstring, dedented, is the description the model reads."""

        def register(fn: Callable[..., Any]) -> Callable[..., Any]:
            server.add_tool(fn, title=title, description=inspect.cleandoc(fn.__doc__ or ""), annotations=READ_ONLY)
            return fn

        return register

    @tool("Search documents")
    async def search(
        ctx: Context,
        query: Annotated[str, Field(description="A question or keywords, in the documents' language.")],
        collection: Collection = None,
        k: K = None,
        filters: FiltersArg = None,
    ) -> SearchResult:
        """Find the passages of a document collection that match a query (hybrid keyword and semantic search).

        Returns the best chunks with their text, source, section and metadata, and `answerable`: the
        calibrated probability that the collection holds an answer at all. Use it to gather evidence and
        quote sources yourself; use `ask` for an answer written from the documents with citations.
        """
        with _tool_errors():
            name = await backend.readable(ctx, collection)
            body = SearchRequest.model_validate({"query": _text(query, "query"), "k": k, "filters": filters})
            engine = await run(workspace.engine, name)
            found = await run(partial(engine.retrieve, body.query, options=body.query_options()))
        return SearchResult(
            collection=name, hits=[hit.to_dict() for hit in found.hits], answerable=found.answerable,
        )

    @tool("Answer from documents")
    async def ask(
        ctx: Context,
        question: Annotated[str, Field(description="The question, standing alone (no 'it' or 'that' from earlier turns).")],
        collection: Collection = None,
        k: K = None,
        filters: FiltersArg = None,
    ) -> AskResult:
        """Answer a question from a document collection, with [n] citations of the passages it used.

        Returns the answer, its citations (chunk, document, source, section) and the cited passages in full.
        When the documents do not seem to cover the question, the answer says so, lists the nearest
        passages and `answerable` is low: tell the user rather than answer from your own knowledge.
        """
        with _tool_errors():
            name = await backend.readable(ctx, collection)
            body = AskRequest.model_validate({"question": _text(question, "question"), "k": k, "filters": filters})
            engine = await run(workspace.engine, name)
            answer = await run(partial(engine.ask, body.question, options=body.query_options()))
        result = answer_body(answer, name)
        cited = {c["n"] for c in result["citations"]}
        passages = [hit for hit in result["hits"] if hit["n"] in cited] if cited else result["hits"]
        return AskResult(
            collection=name, answer=result["answer"], citations=result["citations"], passages=passages,
            answerable=result["answerable"], model=result["model"], warnings=result["warnings"],
        )

    @tool("List collections")
    async def list_collections(ctx: Context) -> CollectionsResult:
        """List the document collections you may read, with their document and chunk counts and embedding model.

        Call it first when you do not know which collection holds what; the other tools take its `name`
        as `collection`.
        """
        with _tool_errors():
            caller = await backend.caller(ctx)
            names = [n for n in await run(workspace.names) if caller.allows(n, "read")]
            infos = [await run(collection_info, backend, n) for n in names]
        return CollectionsResult(collections=infos, default=backend.default_for(caller))

    @tool("List documents")
    async def list_documents(
        ctx: Context,
        collection: Collection = None,
        filters: Annotated[Filters, Field(description="Only documents whose metadata matches, e.g. 'lang=en'.")] = None,
        offset: Annotated[int, Field(ge=0, description="Documents to skip (for paging).")] = 0,
        limit: Annotated[int, Field(ge=1, le=MAX_PAGE, description="Documents to return (1-200).")] = 50,
    ) -> DocumentsResult:
        """List the documents of a collection by id, with title, source, chunk count and metadata."""
        with _tool_errors():
            name = await backend.readable(ctx, collection)
            engine = await run(workspace.engine, name)
            total, page = await run(partial(engine.documents, offset=offset, limit=limit, filter=filters))
        return DocumentsResult(collection=name, total=total, offset=offset, documents=page)

    @tool("Read a document")
    async def get_document(
        ctx: Context,
        doc_id: Annotated[str, Field(description="The document's id: a hit's or citation's `doc_id`.")],
        collection: Collection = None,
        offset: Annotated[int, Field(ge=0, description="First chunk to return (for paging long documents).")] = 0,
        limit: Annotated[int, Field(ge=1, le=MAX_PAGE, description="Chunks to return (1-200).")] = 50,
    ) -> DocumentResult:
        """Read a document: its title, source and metadata, and its chunks in order (paged by offset and limit)."""
        with _tool_errors():
            _check_id(doc_id, "doc_id")
            name = await backend.readable(ctx, collection)
            engine = await run(workspace.engine, name)
            document = await run(engine.document, doc_id)
        if document is None:
            raise ToolError(f"document_not_found: no document {doc_id!r} in collection {name!r}")
        chunks = document.pop("chunk_list")
        return DocumentResult(
            collection=name, **document, chunk_offset=offset, chunk_list=chunks[offset : offset + limit],
        )

    @tool("Read a chunk in context")
    async def get_chunk(
        ctx: Context,
        chunk_id: Annotated[str, Field(description="The chunk's id: a hit's or citation's `chunk_id`.")],
        collection: Collection = None,
        neighbours: Annotated[
            int, Field(ge=0, le=MAX_NEIGHBOURS, description="Adjacent chunks to include on each side (0-5).")
        ] = 1,
    ) -> ChunkResult:
        """Read one chunk with the chunks around it, its character offsets in the document and its page.

        Use it to see the context of a search hit or citation before quoting it.
        """
        with _tool_errors():
            _check_id(chunk_id, "chunk_id")
            name = await backend.readable(ctx, collection)
            engine = await run(workspace.engine, name)
            chunk = await run(engine.chunk, chunk_id, neighbours)
        if chunk is None:
            raise ToolError(f"chunk_not_found: no chunk {chunk_id!r} in collection {name!r}")
        return ChunkResult(collection=name, **chunk)

    return server


def _quiet(make: Callable[[], MCPServer]) -> MCPServer:
    """``make()`` without the SDK's ``logging.basicConfig`` taking over an unconfigured root logger.

    :class:`MCPServer` configures logging when it is made; ``basicConfig`` does nothing when the root logger
    has a handler, so one is lent for the call: the process that serves us decides where logs go.
    """
    root = logging.getLogger()
    lent = logging.NullHandler()
    root.addHandler(lent)
    try:
        return make()
    finally:
        root.removeHandler(lent)


# -- stdio: rag mcp ---------------------------------------------------------------------------------------


async def _anyone(_: Context) -> Caller:
    return Caller(None, open=True)


def serve_stdio(settings: Settings, collection: str = DEFAULT_COLLECTION) -> None:
    """Serve the tools over stdin/stdout until the client closes them (``rag mcp``).

    Only protocol goes to stdout: the SDK points file descriptor 1 at stderr while it serves, so a stray
    print or a library's progress bar cannot corrupt the stream.

    Raises:
        ConfigError / CollectionNotFoundError: ``collection`` is invalid or does not exist (before any
            protocol is spoken).
    """
    hide_paths_under(settings.data_dir)
    with Workspace(settings) as workspace:
        workspace.require(collection)

        async def main() -> None:
            limiter = anyio.CapacityLimiter(settings.api.concurrency)

            async def run(fn: Callable[..., Any], *args: Any) -> Any:
                return await anyio.to_thread.run_sync(fn, *args, limiter=limiter)

            server = build_server(McpBackend(workspace, run, _anyone, default_collection=collection))
            await server.run_stdio_async()

        anyio.run(main)


# -- streamable HTTP: /mcp in rag serve -------------------------------------------------------------------

# Browser pages may call /mcp only from this machine or from the origins the API allows (api.cors_origins):
# a page elsewhere that re-points its DNS name at this server (DNS rebinding) must not reach an open server.
_LOOPBACK_ORIGINS = ("http://localhost", "http://127.0.0.1", "http://[::1]", "https://localhost", "https://127.0.0.1")


class McpEndpoint:
    """The ASGI app at ``/mcp``: MCP's streamable HTTP transport over the app's services.

    Stateless, with JSON responses: every POST carries a whole exchange, so no session ties a client to one
    replica. The caller is the one :class:`~rag.api.guard.RequestGuard` identified from the request's
    headers (401 before this app runs when keys exist and none valid was sent). :meth:`running` must
    wrap the app's lifespan (the SDK's request handling needs a task group).

    Args:
        services: the app's services (workspace, key store, worker threads).
    """

    def __init__(self, services: Services) -> None:
        self.services = services
        self.origins = (*_LOOPBACK_ORIGINS, *services.settings.api.cors_origins)
        self.server = build_server(McpBackend(services.workspace, services.run, self._caller))
        self._manager: StreamableHTTPSessionManager | None = None

    async def _caller(self, ctx: Context) -> Caller:
        request = ctx.request_context.request
        caller = request.scope.get("state", {}).get(CALLER_KEY) if request is not None else None
        if caller is None:  # mounted without the guard: check the headers here
            headers = request.headers if request is not None else Headers()
            caller = await anyio.to_thread.run_sync(identify, self.services, headers)
        return caller

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Serve MCP requests while the context is open (a fresh SDK session manager each time)."""
        self.server.streamable_http_app(
            stateless_http=True, json_response=True,
            # Origins are checked in __call__ (the API's CORS list); the Host header is not, so that a
            # server behind a proxy or on a LAN name works as the REST API does.
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        manager = self.server.session_manager
        async with manager.run():
            self._manager = manager
            try:
                yield
            finally:
                self._manager = None

    def _origin_allowed(self, origin: str) -> bool:
        # "*" in api.cors_origins lets every page call the API, and so /mcp as well.
        return any(allowed == "*" or origin == allowed or origin.startswith(f"{allowed}:") for allowed in self.origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        origin = Headers(scope=scope).get("origin")
        if origin and origin != "null" and not self._origin_allowed(origin):
            response = problem(403, "forbidden", f"origin {origin!r} may not call /mcp; add it to api.cors_origins")
        elif origin == "null":
            response = problem(403, "forbidden", "pages without an origin may not call /mcp")
        elif self._manager is None:
            response = problem(503, "unavailable", "the MCP endpoint is not running (the app's lifespan has not started)")
        else:
            await self._manager.handle_request(scope, receive, send)
            return
        await response(scope, receive, send)
