"""Dependencies shared by the routers: the app's services, the caller's key, and access checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request

from rag.api.errors import ApiError
from rag.api.jobs import JobManager
from rag.api.keys import ApiKey, KeyStore, Role
from rag.api.metrics import Metrics
from rag.core.settings import Settings
from rag.workspace import Workspace

T = TypeVar("T")


@dataclass
class Services:
    """Everything a request may use; one per app, made by :func:`rag.api.app.create_app`."""

    settings: Settings
    workspace: Workspace
    keys: KeyStore
    jobs: JobManager
    metrics: Metrics
    limiter: anyio.CapacityLimiter

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking library work off the event loop, at most ``api.concurrency`` calls at once."""
        return await anyio.to_thread.run_sync(fn, *args, limiter=self.limiter)


def get_services(request: Request) -> Services:
    return request.app.state.services


ServicesDep = Annotated[Services, Depends(get_services)]


@dataclass(frozen=True)
class Caller:
    """Who is calling: a verified key, or anyone when the server has no keys (local use)."""

    key: ApiKey | None
    open: bool

    def allows(self, collection: str | None, role: Role) -> bool:
        return self.open or (self.key is not None and self.key.allows(collection, role))

    def require(self, collection: str | None, role: Role) -> None:
        """Raise 403 unless this caller may act with ``role`` on ``collection`` (``None``: the server)."""
        if not self.allows(collection, role):
            where = f"collection {collection!r}" if collection else "this server"
            raise ApiError(403, "forbidden", f"this key may not {role} {where}")


def _presented_key(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.headers.get("x-api-key") or None


def get_caller(request: Request, services: ServicesDep) -> Caller:
    """The caller's key; 401 if the server has keys and none (or an unknown or revoked one) was sent."""
    if not services.keys.enforced():
        return Caller(None, open=True)
    presented = _presented_key(request)
    if presented is None:
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    key = services.keys.verify(presented)
    if key is None:
        raise ApiError(401, "unauthorized", "unknown or revoked API key")
    return Caller(key, open=False)


CallerDep = Annotated[Caller, Depends(get_caller)]
