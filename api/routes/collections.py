"""``/v1/collections``: create, list, inspect and delete named collections."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from rag.api.deps import CallerDep, ServicesDep
from rag.api.responses import errors
from rag.api.schemas import CollectionCreateRequest, CollectionListResponse, CollectionResponse
from rag.workspace import check_name

router = APIRouter(prefix="/v1/collections", tags=["collections"])


def collection_info(services: Any, name: str) -> dict[str, Any]:
    """``rag status --json`` of a collection, with its settings overrides."""
    status = services.workspace.engine(name).status()
    status.pop("data_dir", None)
    status.pop("store_url", None)  # server addresses are the operator's business, not every reader's
    return {"name": name, **status, "settings": _public(services.workspace.overrides(name))}


def _public(overrides: dict[str, Any]) -> dict[str, Any]:
    """Overrides without secrets (an api_key set for a collection's store or LLM)."""
    return {
        group: ({k: ("***" if k == "api_key" else v) for k, v in value.items()} if isinstance(value, dict) else value)
        for group, value in overrides.items()
    }


@router.post("", status_code=201, response_model=CollectionResponse, responses=errors(401, 403, 409, 413, 422))
async def create_collection(body: CollectionCreateRequest, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """Create a collection, optionally with settings overrides (chunking, store, alpha ...). Needs an admin
    key for all collections (``*``)."""
    caller.require(None, "admin")
    check_name(body.name)
    await services.run(services.workspace.create, body.name, body.settings)
    return await services.run(collection_info, services, body.name)


@router.get("", response_model=CollectionListResponse, responses=errors(401))
async def list_collections(services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """The collections this key may read, with their status."""
    names = [n for n in services.workspace.names() if caller.allows(n, "read")]
    return {"collections": [await services.run(collection_info, services, n) for n in names]}


@router.get("/{name}", response_model=CollectionResponse, responses=errors(401, 403, 404, 422))
async def get_collection(name: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """Documents, chunks, model, store and size of one collection (as ``rag status --json``)."""
    caller.require(name, "read")
    return await services.run(collection_info, services, name)


@router.delete("/{name}", status_code=204, responses=errors(401, 403, 404, 409, 422, 503))
async def delete_collection(name: str, services: ServicesDep, caller: CallerDep) -> Response:
    """Delete a collection and everything indexed in it (``default`` is emptied, not removed)."""
    caller.require(name, "admin")
    services.workspace.require(name)
    await services.run(lambda: services.workspace.delete(name, wait=False))
    return Response(status_code=204)
