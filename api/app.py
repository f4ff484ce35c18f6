"""The REST API app: ``create_app(settings)``, served by ``rag serve``.

It is a thin layer over :class:`~rag.workspace.Workspace` and :class:`~rag.engine.RagEngine`: routers
translate requests into the same library calls the CLI makes, and library errors into problem responses
(:mod:`rag.api.errors`). Blocking work runs in worker threads, at most ``api.concurrency`` at a time.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import resources
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from rag import __version__
from rag.api import errors
from rag.api.deps import Services
from rag.api.guard import RequestGuard
from rag.api.jobs import JOBS_FOLDER, JobManager, JobStore
from rag.api.keys import key_store
from rag.api.mcp import McpEndpoint
from rag.api.metrics import Metrics
from rag.api.routes import collections, documents, openai_compat, query, system
from rag.api.uploads import UploadRunner
from rag.core.settings import Settings, load_settings
from rag.core.tracing import enabled as tracing_enabled
from rag.core.tracing_setup import configure_tracing
from rag.workspace import Workspace

STATIC = Path(str(resources.files("rag.api") / "static"))

DESCRIPTION = """Question a folder of documents over HTTP: named collections, hybrid search, cited answers
(JSON or Server-Sent Events), an OpenAI-compatible chat endpoint whose models are collections, and a web
chat page at `/`. Agents connect to the MCP server at `/mcp` (streamable HTTP, the same keys and scopes).

Authentication: when the server has API keys (`rag keys create`), send one as `Authorization: Bearer KEY`
or `X-API-Key: KEY` (the key is checked before any of the body is read). Bodies are capped
(`api.max_upload_mb` for uploads, `api.max_json_mb` for the rest: 413 as soon as the cap is passed).
Every error is `{"error": {"type", "message"}}`."""


def create_app(settings: Settings | None = None, *, project_root: Path | None = None) -> FastAPI:
    """Build the app over the data directory in ``settings`` (default: the environment's settings)."""
    settings = settings or load_settings()
    configure_tracing(__version__)  # only when OTEL_* variables ask for traces (docs/integrations.md)
    metrics = Metrics()
    workspace = Workspace(settings, project_root=project_root)
    runner = UploadRunner(workspace)
    services = Services(
        settings=settings,
        workspace=workspace,
        keys=key_store(settings, read_only=True, records=workspace.records),
        jobs=JobManager(
            runner,
            JobStore(settings.data_dir / JOBS_FOLDER),
            classify=errors.classify,
            describe=errors.public_message,
            on_finish=metrics.ingested,
            records=workspace.records,
        ),
        metrics=metrics,
        limiter=anyio.CapacityLimiter(settings.api.concurrency),
        runner=runner,
    )
    services.jobs.resume()  # uploads accepted before a restart (or a crash) finish now
    mcp = McpEndpoint(services)  # the MCP server at /mcp (rag.api.mcp)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        async with mcp.running():
            yield
        services.jobs.shutdown()
        services.workspace.close()

    app = FastAPI(
        title="rag-platform",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        openapi_url="/openapi.json",
        docs_url="/docs",
        redoc_url=None,
    )
    app.state.services = services
    errors.install(app, settings.data_dir)
    # Before anything reads a body: the key from the headers, the body's cap, metrics (rag.api.guard).
    app.add_middleware(RequestGuard, services=services)
    if settings.api.cors_origins:  # added last, so outermost: a preflight needs no key
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.api.cors_origins,
            allow_methods=["GET", "POST", "DELETE"],
            # The MCP headers let a browser-based MCP client on an allowed origin use /mcp.
            allow_headers=["Authorization", "X-API-Key", "Content-Type", "Mcp-Protocol-Version", "Mcp-Session-Id",
                           "Last-Event-ID"],
            expose_headers=["Mcp-Session-Id"],
        )
    for module in (system, collections, documents, query, openai_compat):
        app.include_router(module.router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_route("/mcp", mcp, include_in_schema=False)  # behind the same guard: keys and scopes apply
    if tracing_enabled():
        # A server span per request, parent of the engine's stage spans; not one per ASGI message sent
        # (a streamed answer would make one per event).
        from opentelemetry.instrumentation.fastapi import FastAPIInstrumentor

        FastAPIInstrumentor.instrument_app(app, exclude_spans=["receive", "send"])

    @app.get("/", include_in_schema=False)
    async def chat_page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    return app
