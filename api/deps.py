"""Dependencies shared by the routers: the app's services, the caller's key, and access checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import anyio
from fastapi import Depends, Request
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.datastructures import Headers

from rag.api.errors import ApiError
from rag.api.jobs import JobManager
from rag.api.keys import ApiKey, KeyStore, Role
from rag.api.metrics import Metrics
from rag.api.uploads import UploadRunner
from rag.core.settings import Settings
from rag.workspace import Workspace

T = TypeVar("T")

CALLER_KEY = "rag.caller"
"""Where :class:`rag.api.guard.RequestGuard` leaves the caller it identified, in the request scope's state."""


@dataclass
class Services:
    """Everything a request may use; one per app, made by :func:`rag.api.app.create_app`."""

    settings: Settings
    workspace: Workspace
    keys: KeyStore
    jobs: JobManager
    metrics: Metrics
    limiter: anyio.CapacityLimiter
    runner: UploadRunner

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

    @property
    def admin(self) -> bool:
        """May see the server's details (every collection, per-collection counters)."""
        return self.allows(None, "admin")

    def require(self, collection: str | None, role: Role) -> None:
        """Raise 403 unless this caller may act with ``role`` on ``collection`` (``None``: the server)."""
        if not self.allows(collection, role):
            where = f"collection {collection!r}" if collection else "this server"
            raise ApiError(403, "forbidden", f"this key may not {role} {where}")


def _presented_key(headers: Headers) -> str | None:
    header = headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return headers.get("x-api-key") or None


def identify(services: Services, headers: Headers, public: bool = False) -> Caller:
    """The caller of a request, from its headers alone (run before any of the body is read).

    Args:
        services: the app's services (its key store).
        headers: the request's headers.
        public: the route needs no key; a key sent anyway is used if valid (it unlocks detailed views).

    Raises:
        ApiError: 401, the server has keys, the route is not public, and no valid key was sent.
    """
    if not services.keys.enforced():
        return Caller(None, open=True)
    presented = _presented_key(headers)
    key = services.keys.verify(presented) if presented is not None else None
    if key is not None or public:
        return Caller(key, open=False)
    if presented is None:
        raise ApiError(401, "unauthorized", "send an API key as 'Authorization: Bearer KEY' or 'X-API-Key: KEY'")
    raise ApiError(401, "unauthorized", "unknown or revoked API key")


# Declared for OpenAPI (``securitySchemes``, so /docs can authorize); the key itself was already checked
# from the headers by rag.api.guard.RequestGuard before the body was read.
_bearer = HTTPBearer(auto_error=False, description="An API key made with `rag keys create`.")
_api_key_header = APIKeyHeader(name="X-API-Key", auto_error=False, description="The same key, in a header.")


def get_caller(
    request: Request,
    services: ServicesDep,
    _bearer_key: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)] = None,
    _header_key: Annotated[str | None, Depends(_api_key_header)] = None,
) -> Caller:
    """The caller the guard identified; 401 if the server has keys and none (or an unknown or revoked
    one) was sent."""
    caller = request.scope.get("state", {}).get(CALLER_KEY)
    if caller is None:  # an app mounted without its guard: check here
        caller = identify(services, request.headers)
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]
