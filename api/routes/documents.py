"""``/v1/collections/{name}/documents``: upload (files or JSON), list, read and delete documents."""

from __future__ import annotations

import json
import os
import uuid
from pathlib import Path, PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile

from rag.api.deps import CallerDep, Services, ServicesDep
from rag.api.errors import ApiError
from rag.api.jobs import report_dict
from rag.api.responses import errors
from rag.api.schemas import (
    DocumentListResponse, DocumentResponse, DocumentsRequest, IngestReportResponse, JobResponse,
)
from rag.core.errors import StorageError
from rag.core.storage import describe_os_error
from rag.ingest.loaders import supported_suffixes
from rag.ingest.pipeline import IngestReport, Progress

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"])

UPLOADS = "uploads"
_MB = 1024 * 1024
# File systems take 255 bytes a name; the temporary name an upload is written under adds 15.
_MAX_NAME_BYTES = 240

_UPLOAD_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["files"],
                    "properties": {
                        "files": {"type": "array", "items": {"type": "string", "format": "binary"}},
                        "metadata": {"type": "string", "description": "A JSON object attached to every file's chunks."},
                    },
                }
            },
            "application/json": {"schema": {"$ref": "#/components/schemas/DocumentsRequest"}},
        },
    }
}


@router.post(
    "",
    response_model=IngestReportResponse,
    responses={
        202: {"model": JobResponse, "description": "A large upload: it runs as a job; poll GET /v1/jobs/{id}."},
        **errors(401, 403, 404, 409, 413, 415, 422, 503),
    },
    openapi_extra=_UPLOAD_BODY,
)
async def add_documents(name: str, request: Request, services: ServicesDep, caller: CallerDep) -> Any:
    """Add or update documents: multipart ``files`` (any format ``rag ingest`` reads) or JSON
    ``{"documents": [{"id", "text", "metadata"}]}``. Sending the same bytes again reports them unchanged.
    Uploads over ``api.job_threshold_kb`` run as a background job (202)."""
    caller.require(name, "write")
    services.workspace.require(name)
    limit = int(services.settings.api.max_upload_mb * _MB)
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"the upload is {int(declared)} bytes; the limit is {limit} (api.max_upload_mb)")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        size, work, files = await _file_upload(name, request, services, limit)
    elif kind == "application/json":
        size, work, files = await _json_upload(name, request, services, limit)
    else:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with 'files', or application/json")
    if size > services.settings.api.job_threshold_kb * 1024:
        job = services.jobs.submit(name, work, files_total=files)
        return JSONResponse(job.to_dict(), status_code=202)
    try:
        report = await services.run(work, None)
    except Exception:
        services.metrics.ingests.labels(name, "failed").inc()
        raise
    services.metrics.ingests.labels(name, "succeeded").inc()
    return report_dict(report)


async def _json_upload(name: str, request: Request, services: Services, limit: int) -> tuple[int, Any, int]:
    body = await request.body()
    if len(body) > limit:
        raise ApiError(413, "payload_too_large", f"the upload is {len(body)} bytes; the limit is {limit} (api.max_upload_mb)")
    try:
        parsed = DocumentsRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(422, "validation_error", f"{where}: {first.get('msg')}") from None
    documents = [d.model_dump() for d in parsed.documents]
    engine = services.workspace.engine(name)

    def work(progress: Progress | None) -> IngestReport:
        return engine.ingest_documents(documents)

    return len(body), work, len(documents)


async def _file_upload(name: str, request: Request, services: Services, limit: int) -> tuple[int, Any, int]:
    try:
        form = await request.form(max_files=1000, max_fields=20)
    except Exception as exc:  # noqa: BLE001 - a malformed multipart body is the client's mistake
        raise ApiError(422, "validation_error", f"cannot read the multipart body: {exc}") from None
    files = [item for item in form.getlist("files") if isinstance(item, UploadFile)]
    if not files:
        raise ApiError(422, "validation_error", "the multipart body needs one or more 'files' parts")
    metadata: dict[str, Any] = {}
    raw_meta = form.get("metadata")
    if isinstance(raw_meta, str) and raw_meta.strip():
        try:
            metadata = json.loads(raw_meta)
        except ValueError:
            metadata = None  # type: ignore[assignment]
        if not isinstance(metadata, dict):
            raise ApiError(422, "validation_error", "'metadata' must be a JSON object")
    folder = services.workspace.path(name) / UPLOADS
    saved: list[Path] = []
    refused: list[tuple[str, str]] = []
    total = 0
    for upload in files:
        data = await upload.read()
        total += len(data)
        if total > limit:
            raise ApiError(413, "payload_too_large", f"the upload is over {limit} bytes (api.max_upload_mb)")
        filename, problem = _safe_name(upload.filename)
        if problem:
            refused.append((filename or "(no name)", problem))
            continue
        saved.append(await services.run(_store, folder, filename, data))
    engine = services.workspace.engine(name)

    def work(progress: Progress | None) -> IngestReport:
        report = engine.ingest(saved, metadata, progress=progress, root=folder) if saved else IngestReport()
        report.failed[:0] = refused
        return report

    return total, work, len(files)


def _safe_name(filename: str | None) -> tuple[str, str | None]:
    """A plain file name from an upload, or a reason to refuse it (reported per file, not an error)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    if not name or name in (".", "..") or name.startswith(".") or "\x00" in name:
        return name, "a file needs a plain, visible file name"
    if len(name.encode()) > _MAX_NAME_BYTES:
        return name, f"the file name is longer than {_MAX_NAME_BYTES} bytes"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in supported_suffixes():
        return name, f"unsupported file type {suffix or '(no suffix)'}; supported: {', '.join(sorted(supported_suffixes()))}"
    return name, None


def _store(folder: Path, filename: str, data: bytes) -> Path:
    """Write an upload atomically; identical bytes leave the file (and so its index entry) untouched."""
    target = folder / filename
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if target.is_file() and target.read_bytes() == data:
            return target
        tmp = folder / f".{filename}.{uuid.uuid4().hex[:8]}.part"
        tmp.write_bytes(data)
        os.replace(tmp, target)
    except OSError as exc:  # disk full, read-only: a storage problem (503), not a bug (500)
        raise StorageError(describe_os_error(exc, target)) from exc
    return target


@router.get("", response_model=DocumentListResponse, responses=errors(401, 403, 404, 422))
async def list_documents(
    name: str,
    services: ServicesDep,
    caller: CallerDep,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(gt=0, le=1000)] = 50,
    filter: Annotated[list[str], Query(description="Metadata filter (JSON object or 'field=value'), repeatable.")] = [],  # noqa: B006
) -> dict[str, Any]:
    """A page of the collection's documents, by id, optionally filtered on document metadata."""
    caller.require(name, "read")
    engine = services.workspace.engine(name)
    total, page = await services.run(lambda: engine.documents(offset=offset, limit=limit, filter=filter or None))
    return {"total": total, "offset": offset, "limit": limit, "documents": page}


@router.get("/{doc_id:path}", response_model=DocumentResponse, responses=errors(401, 403, 404, 422))
async def get_document(name: str, doc_id: str, services: ServicesDep, caller: CallerDep) -> dict[str, Any]:
    """One document with its chunks."""
    caller.require(name, "read")
    document = await services.run(services.workspace.engine(name).document, doc_id)
    if document is None:
        raise ApiError(404, "document_not_found", f"no document {doc_id!r} in collection {name!r}")
    return document


@router.delete("/{doc_id:path}", status_code=204, responses=errors(401, 403, 404, 409, 422, 503))
async def delete_document(name: str, doc_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    """Remove a document and its chunks."""
    caller.require(name, "write")
    report = await services.run(services.workspace.engine(name).delete_documents, [doc_id])
    if not report.removed:
        raise ApiError(404, "document_not_found", f"no document {doc_id!r} in collection {name!r}")
    return Response(status_code=204)
