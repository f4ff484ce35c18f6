"""Prometheus metrics of one API app: requests, latencies, errors, cancellations, ingests (``GET /metrics``).

Two registries: the aggregate one anyone may scrape (route templates and counts, no collection names),
and the detailed one (ingests per collection) shown to an admin key or with ``api.public_details``.
The counters are updated by :class:`rag.api.guard.RequestGuard`.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from starlette.routing import Mount
from starlette.types import Scope

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """The app's own registries (two apps in one process, as in tests, never share counters)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.detailed = CollectorRegistry()
        self.requests = Counter(
            "rag_http_requests", "HTTP requests by route template, method and status (499: the client left).",
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
        self.cancelled = Counter(
            "rag_http_cancelled", "Requests whose client went away before the answer was complete, by route.",
            ["route"], registry=self.registry,
        )
        self._ingests = Counter(
            "rag_ingest_results", "Document ingests by outcome (succeeded, failed).", ["outcome"],
            registry=self.registry,
        )
        self._collection_ingests = Counter(
            "rag_ingests", "Document ingests by collection and outcome (succeeded, failed).",
            ["collection", "outcome"], registry=self.detailed,
        )

    def ingested(self, collection: str, outcome: str) -> None:
        """Count one ingest (an upload or a job) that ended with ``outcome``."""
        self._ingests.labels(outcome).inc()
        self._collection_ingests.labels(collection, outcome).inc()

    def render(self, *, detailed: bool = False) -> bytes:
        """The Prometheus text: the aggregate counters, plus the per-collection ones if ``detailed``."""
        text = generate_latest(self.registry)
        return text + generate_latest(self.detailed) if detailed else text

    @staticmethod
    def route_template(scope: Scope) -> str:
        """``/v1/collections/{name}/search``, not the concrete path: bounded label values.

        Read after the call from the route the router picked (``scope["route"]``): FastAPI keeps included
        routers as nested routes, so matching the app's own route list finds a router without a path.
        """
        path = getattr(scope.get("route"), "path", None)
        if isinstance(path, str):
            return path
        app = scope.get("app")
        for route in getattr(getattr(app, "router", None), "routes", []):  # mounts (static files)
            if isinstance(route, Mount) and scope["path"].startswith(f"{route.path}/"):
                return route.path
        return "unmatched"
