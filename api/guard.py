"""The ASGI middleware every request passes first: the key from the headers, a capped body, metrics.

Order matters for a service facing a network. FastAPI reads a route's body before it resolves the
route's dependencies, so a key checked in a dependency comes after the whole body is in memory. Here the
key is checked from the headers alone, before the app sees the request, and the body reaches the app
through a counter that answers 413 the moment a route's cap is passed (with or without a
``Content-Length``). A response sent before the body was read closes the connection, so the rest of an
oversized or unauthenticated body is never read.

The same place records the metrics, including requests whose client went away (``cancelled``, not an
error), and swallows the exceptions a hang-up raises, which are no bug.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import anyio
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from rag.api.deps import CALLER_KEY, identify
from rag.api.errors import ApiError, problem
from rag.api.streaming import ClientGone

if TYPE_CHECKING:
    from rag.api.deps import Caller, Services

log = logging.getLogger(__name__)

_MB = 1024 * 1024
# Routes anyone may call: liveness and readiness probes, metrics scrapers, the docs and the chat page.
# A key sent to them is still read (it unlocks the detailed views of /readyz and /metrics).
_PUBLIC = re.compile(r"\A(/healthz|/readyz|/metrics|/openapi\.json|/docs(/.*)?|/|/static/.*|/favicon\.ico)\Z")
_UPLOAD = re.compile(r"\A/v1/collections/[^/]+/documents/?\Z")


class BodyTooLarge(HTTPException):
    """The body passed its route's cap; an HTTPException so FastAPI's body reader passes it on as is."""

    def __init__(self, limit: int, setting: str) -> None:
        super().__init__(413, f"the request body is over {limit} bytes ({setting})")


@dataclass
class _Exchange:
    """What the middleware saw of one request."""

    status: int = 500
    started: bool = False
    body_done: bool = False
    disconnected: bool = False
    head_at: float | None = None


class RequestGuard:
    """Authenticate from the headers, cap the body while it streams, record metrics (see the module doc).

    Args:
        app: the application to guard.
        services: the app's services (keys, settings, metrics).
    """

    def __init__(self, app: ASGIApp, services: Services) -> None:
        self.app = app
        self.services = services

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        exchange = _Exchange()
        started = time.perf_counter()
        limit, setting = self._cap(scope)

        async def capped_receive() -> Message:
            message = await receive()
            if message["type"] == "http.disconnect":
                exchange.disconnected = True
            elif message["type"] == "http.request":
                counted[0] += len(message.get("body", b""))
                if counted[0] > limit:
                    raise BodyTooLarge(limit, setting)
                exchange.body_done = not message.get("more_body", False)
            return message

        async def watched_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                exchange.started, exchange.status = True, message["status"]
                exchange.head_at = time.perf_counter()
                if not exchange.body_done:
                    # The rest of the body is not wanted: close rather than read it to keep the connection.
                    message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            try:
                await send(message)
            except OSError:  # the client went away while we were answering
                exchange.disconnected = True
                raise ClientGone() from None

        counted = [0]
        headers = Headers(scope=scope)
        exchange.body_done = "transfer-encoding" not in headers and headers.get("content-length", "0") == "0"
        try:
            scope.setdefault("state", {})[CALLER_KEY] = await self._identify(scope, headers)
            declared = headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise BodyTooLarge(limit, setting)
            await self.app(scope, capped_receive, watched_send)
        except (ClientGone, ClientDisconnect):
            exchange.disconnected = True
        except (ApiError, HTTPException) as exc:  # refused before the app ran, or a cap nobody caught
            if exchange.started:
                raise
            status = exc.status if isinstance(exc, ApiError) else exc.status_code
            await self._refuse(scope, receive, watched_send, status, exc)
        finally:
            self._record(scope, exchange, (exchange.head_at or time.perf_counter()) - started)

    def _cap(self, scope: Scope) -> tuple[int, str]:
        """The largest body the route may receive, and the setting that says so."""
        api = self.services.settings.api
        if scope["method"] == "POST" and _UPLOAD.match(scope["path"]):
            return int(api.max_upload_mb * _MB), "api.max_upload_mb"
        return int(api.max_json_mb * _MB), "api.max_json_mb"

    async def _identify(self, scope: Scope, headers: Headers) -> Caller:
        """The caller, from the headers only; 401 unless the route is public or the key is valid."""
        public = _PUBLIC.match(scope["path"]) is not None or scope["method"] == "OPTIONS"
        # The key store is a database: read it off the event loop.
        return await anyio.to_thread.run_sync(identify, self.services, headers, public)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int, exc: Exception) -> None:
        if isinstance(exc, ApiError):
            response: JSONResponse = problem(status, exc.kind, exc.message)
        else:
            response = problem(status, "payload_too_large" if status == 413 else "http_error", str(exc.detail))
        if status == 401:
            response.headers["WWW-Authenticate"] = "Bearer"
        await response(scope, receive, send)

    def _record(self, scope: Scope, exchange: _Exchange, seconds: float) -> None:
        metrics = self.services.metrics
        route = metrics.route_template(scope)
        method = scope["method"]
        metrics.latency.labels(method, route).observe(seconds)
        if exchange.disconnected:
            # Nginx's "client closed request": the client left; the server did nothing wrong.
            metrics.requests.labels(method, route, "499").inc()
            metrics.cancelled.labels(route).inc()
            return
        metrics.requests.labels(method, route, str(exchange.status)).inc()
        if exchange.status >= 400:
            metrics.errors.labels(route, str(exchange.status)).inc()
