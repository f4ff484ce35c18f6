"""``/v1/collections/{name}/documents``: upload (files or JSON), list, read and delete documents."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import ValidationError
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from rag.api.deps import CallerDep, Services, ServicesDep
from rag.api.errors import ApiError
from rag.api.jobs import report_dict
from rag.api.responses import errors
from rag.api.schemas import (
    ChunkResponse,
    DocumentListResponse,
    DocumentResponse,
    DocumentsRequest,
    IngestReportResponse,
    JobResponse,
    hidden_characters,
)
from rag.api.uploads import UPLOADS, remove_upload, settle, store_file

router = APIRouter(prefix="/v1/collections/{name}/documents", tags=["documents"])

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
    Uploads over ``api.job_threshold_kb`` run as a background job (202): the job and its files are on disk
    before the 202, and a restarted server finishes it."""
    caller.require(name, "write")
    services.workspace.require(name)
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind == "multipart/form-data":
        size, spec, files = await _file_upload(name, request, services)
    elif kind == "application/json":
        size, spec, files = await _json_upload(request)
    else:
        raise ApiError(415, "unsupported_media_type", "send multipart/form-data with 'files', or application/json")
    if size > services.settings.api.job_threshold_kb * 1024:
        try:
            job = await services.run(lambda: services.jobs.submit(name, spec, files_total=files))
        except BaseException:
            _discard(services, name, spec)
            raise
        return JSONResponse(job.to_dict(), status_code=202)
    try:
        report = await services.run(services.runner, name, spec, None)
    except Exception:
        services.metrics.ingested(name, "failed")
        raise
    services.metrics.ingested(name, "succeeded")
    return report_dict(report)


def _discard(services: Services, name: str, spec: dict[str, Any]) -> None:
    """Undo the files of an upload that was not accepted."""
    if spec["kind"] == "files":
        folder = services.workspace.path(name) / UPLOADS
        settle(folder, spec["files"], spec["backups"], set(spec["files"]))


async def _json_upload(request: Request) -> tuple[int, dict[str, Any], int]:
    body = await request.body()  # within api.max_upload_mb: the guard counts it as it arrives
    try:
        parsed = DocumentsRequest.model_validate_json(body)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "body"
        raise ApiError(422, "validation_error", f"{where}: {first.get('msg')}") from None
    documents = [d.model_dump() for d in parsed.documents]
    return len(body), {"kind": "documents", "documents": documents}, len(documents)


async def _file_upload(name: str, request: Request, services: Services) -> tuple[int, dict[str, Any], int]:
    try:
        form = await request.form(max_files=1000, max_fields=20)
    except HTTPException:
        raise  # over api.max_upload_mb (rag.api.guard)
    except ClientDisconnect:
        raise
    except Exception as exc:  # noqa: BLE001 - a malformed multipart body is the client's mistake
        raise ApiError(422, "validation_error", f"cannot read the multipart body: {exc}") from None
    files = [item for item in form.getlist("files") if isinstance(item, UploadFile)]
    if not files:
        raise ApiError(422, "validation_error", "the multipart body needs one or more 'files' parts")
    metadata: dict[str, Any] = {}
    raw_meta = form.get("metadata")
    if isinstance(raw_meta, str) and raw_meta.strip():
        try:
            metadata = json.loads(raw_meta, parse_constant=_no_constant)
        except ValueError:
            metadata = None  # type: ignore[assignment]
        if not isinstance(metadata, dict):
            raise ApiError(422, "validation_error", "'metadata' must be a JSON object (NaN and infinities refused)")
    suffixes = services.workspace.supported_suffixes()
    accepted: list[tuple[str, UploadFile]] = []
    refused: list[tuple[str, str]] = []
    for upload in files:
        filename, problem = _safe_name(upload.filename, suffixes)
        if problem:
            refused.append((filename or "(no name)", problem))
        elif any(filename == seen for seen, _ in accepted):
            # One document per name: keeping either silently would report both as added.
            raise ApiError(422, "validation_error", f"two files are named {filename!r}; send each name once")
        else:
            accepted.append((filename, upload))
    folder = services.workspace.path(name) / UPLOADS
    names: list[str] = []
    backups: dict[str, str] = {}
    total = 0
    try:
        for filename, upload in accepted:
            data = await upload.read()
            total += len(data)
            backup = await services.run(store_file, folder, filename, data)
            names.append(filename)
            if backup is not None:
                backups[filename] = backup
    except BaseException:
        settle(folder, names, backups, set(names))
        raise
    spec = {"kind": "files", "files": names, "backups": backups, "metadata": metadata, "refused": refused}
    return total, spec, len(files)


def _no_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not a number JSON allows")


def _safe_name(filename: str | None, suffixes: frozenset[str]) -> tuple[str, str | None]:
    """A plain file name from an upload whose type is one of ``suffixes``, or a reason to refuse it
    (reported per file, not an error)."""
    name = PurePosixPath((filename or "").replace("\\", "/")).name
    if not name or name in (".", "..") or name.startswith("."):
        return name, "a file needs a plain, visible file name"
    if (hidden := hidden_characters(name)) is not None:
        return name.encode("unicode_escape").decode("ascii"), f"the file name {hidden}"
    if len(name.encode()) > _MAX_NAME_BYTES:
        return name, f"the file name is longer than {_MAX_NAME_BYTES} bytes"
    suffix = PurePosixPath(name).suffix.lower()
    if suffix not in suffixes:
        return name, f"unsupported file type {suffix or '(no suffix)'}; supported: {', '.join(sorted(suffixes))}"
    return name, None


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


@router.get(
    "/{doc_id:path}",
    response_model=DocumentResponse | ChunkResponse,
    responses={200: {"description": "The document with its chunks; with `chunk`, that chunk (ChunkResponse)."},
               **errors(401, 403, 404, 422)},
)
async def get_document(
    name: str,
    doc_id: str,
    services: ServicesDep,
    caller: CallerDep,
    chunk: Annotated[str | None, Query(
        min_length=1, max_length=200,
        description="A chunk of this document (a `chunk_id`): return that chunk with its character offsets "
        "in the document, its page and its neighbours, instead of the whole document. Citation URLs "
        "(`sources[].url`, `annotations[].url_citation.url`) point here.",
    )] = None,
    neighbours: Annotated[int | None, Query(
        ge=0, le=10, description="With `chunk`: how many adjacent chunks to include on each side [default: 1].",
    )] = None,
) -> dict[str, Any]:
    """One document with its chunks; with ``?chunk=ID``, one chunk of it with its offsets and neighbours."""
    caller.require(name, "read")
    _check_id(doc_id)
    engine = services.workspace.engine(name)
    if chunk is None:
        if neighbours is not None:
            raise ApiError(422, "validation_error", "neighbours: applies to a chunk; add ?chunk=CHUNK_ID")
        document = await services.run(engine.document, doc_id)
        if document is None:
            raise ApiError(404, "document_not_found", f"no document {doc_id!r} in collection {name!r}")
        return document
    if (problem := hidden_characters(chunk)) is not None:
        raise ApiError(422, "validation_error", f"chunk: {problem}")
    found = await services.run(engine.chunk, chunk, 1 if neighbours is None else neighbours)
    if found is None or found["doc_id"] != doc_id:
        raise ApiError(404, "chunk_not_found", f"no chunk {chunk!r} in document {doc_id!r} of collection {name!r}")
    return {**found, "title": str(found["title"])}  # a title from user metadata may be any JSON value


@router.delete("/{doc_id:path}", status_code=204, responses=errors(401, 403, 404, 409, 422, 503))
async def delete_document(name: str, doc_id: str, services: ServicesDep, caller: CallerDep) -> Response:
    """Remove a document, its chunks and its uploaded file."""
    caller.require(name, "write")
    _check_id(doc_id)
    report = await services.run(services.workspace.engine(name).delete_documents, [doc_id])
    if not report.removed:
        raise ApiError(404, "document_not_found", f"no document {doc_id!r} in collection {name!r}")
    await services.run(remove_upload, services.workspace, name, doc_id)
    return Response(status_code=204)


def _check_id(doc_id: str) -> None:
    if (problem := hidden_characters(doc_id)) is not None:
        raise ApiError(422, "validation_error", f"doc_id: {problem}")
