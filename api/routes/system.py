"""Liveness, readiness, metrics and jobs."""

from __future__ import annotations

from typing import Any

import httpx
from fastapi import APIRouter
from fastapi.responses import JSONResponse, Response

from rag.api.deps import CallerDep, Services, ServicesDep
from rag.api.errors import ApiError, public_message
from rag.api.metrics import CONTENT_TYPE
from rag.api.responses import errors
from rag.api.schemas import HealthResponse, JobResponse, ReadyResponse

router = APIRouter(tags=["system"])


@router.get("/healthz", response_model=HealthResponse)
async def healthz() -> dict[str, str]:
    """The process is alive."""
    return {"status": "ok"}


@router.get("/readyz", response_model=ReadyResponse, response_model_exclude_none=True,
            responses={503: {"model": ReadyResponse, "description": "Not ready."}})
async def readyz(services: ServicesDep, caller: CallerDep) -> JSONResponse:
    """Every collection opens, and the LLM endpoint answers (or the embedded model is installed).

    Anyone may ask; the per-collection and LLM details are shown to an admin key for all collections
    (or to everyone with ``api.public_details``)."""
    body = await services.run(_readiness, services)
    if not (caller.admin or services.settings.api.public_details):
        body = {"status": body["status"]}
    return JSONResponse(body, status_code=200 if body["status"] == "ready" else 503)


def _readiness(services: Services) -> dict[str, Any]:
    collections: dict[str, str] = {}
    for name in services.workspace.names():
        try:
            services.workspace.engine(name).status()
            collections[name] = "ok"
        except Exception as exc:  # noqa: BLE001 - readiness reports, it does not fail
            collections[name] = f"error: {public_message(str(exc))}"
    llm = _llm_check(services)
    ready = llm["ok"] and all(state == "ok" for state in collections.values())
    return {"status": "ready" if ready else "not_ready", "collections": collections, "llm": llm}


def _llm_check(services: Services) -> dict[str, Any]:
    cfg = services.settings.llm
    if not cfg.base_url:
        try:
            model = services.workspace.embedded_llm_model()
        except Exception as exc:  # noqa: BLE001 - readiness reports a missing or broken model, it does not fail
            return {"ok": False, "endpoint": "embedded", "detail": public_message(str(exc))}
        return {"ok": True, "endpoint": "embedded", "detail": f"llama.cpp with {model}, started on the first question"}
    url = cfg.base_url.rstrip("/") + "/models"
    headers = {"Authorization": f"Bearer {cfg.api_key.get_secret_value()}"} if cfg.api_key else {}
    try:
        response = httpx.get(url, headers=headers, timeout=3.0)
    except httpx.HTTPError as exc:
        return {"ok": False, "endpoint": "remote", "detail": f"unreachable: {type(exc).__name__}"}
    ok = response.status_code < 400
    return {"ok": ok, "endpoint": "remote", "detail": f"HTTP {response.status_code}"}


@router.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE: {}}, "description": "Prometheus text format."}})
async def metrics(services: ServicesDep, caller: CallerDep) -> Response:
    """Prometheus metrics: requests, latencies, errors, cancelled requests and ingests. Anyone may scrape
    the aggregate counters; per-collection ones need an admin key for all collections (or
    ``api.public_details``)."""
    detailed = caller.admin or services.settings.api.public_details
    return Response(services.metrics.render(detailed=detailed), media_type=CONTENT_TYPE)


@router.get("/v1/jobs/{job_id}", response_model=JobResponse, responses=errors(401, 403, 404))
async def get_job(job_id: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """Progress of a background upload, and its ingest report once it has finished."""
    job = services.jobs.get(job_id)
    if job is None:
        raise ApiError(404, "job_not_found", f"no job {job_id!r}")
    caller.require(job.collection, "read")  # a job id is unguessable; the key still needs its collection
    return job.to_dict()
