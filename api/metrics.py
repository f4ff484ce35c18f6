"""Prometheus metrics of one API app: requests, latencies, errors, ingests (``GET /metrics``)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The app's own registry (two apps in one process, as in tests, never share counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "rag_http_requests", "HTTP requests by route template, method and status.",
            ["method", "route", "status"], registry=self.registry,
        )
        self.latency = Histogram(
            "rag_http_request_seconds", "Time to the response head by route template and method.",
            ["method", "route"], registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.errors = Counter(
            "rag_http_errors", "Responses with status >= 400, by route template and status.",
            ["route", "status"], registry=self.registry,
        )
        self.ingests = Counter(
            "rag_ingests", "Document ingests by collection and outcome (succeeded, failed).",
            ["collection", "outcome"], registry=self.registry,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)

    async def middleware(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        started = time.perf_counter()
        status = 500  # an exception leaving the app becomes a 500 outside this middleware (rag.api.errors)
        try:
            response = await call_next(request)
            status = response.status_code
            return response
        finally:
            route = _route_template(request)
            self.latency.labels(request.method, route).observe(time.perf_counter() - started)
            self.requests.labels(request.method, route, str(status)).inc()
            if status >= 400:
                self.errors.labels(route, str(status)).inc()


def _route_template(request: Request) -> str:
    """``/v1/collections/{name}/search``, not the concrete path: bounded label values.

    Read after the call from the route the router picked (``scope["route"]``): FastAPI keeps included
    routers as nested routes, so matching the app's own route list finds a router without a path.
    """
    path = getattr(request.scope.get("route"), "path", None)
    if isinstance(path, str):
        return path
    for route in request.app.router.routes:  # mounts (static files) are not recorded there
        if isinstance(route, Mount) and request.url.path.startswith(f"{route.path}/"):
            return route.path
    return "unmatched"
