"""The library's error tree, translated at the edge into HTTP problem responses.

Every error body is ``{"error": {"type", "message"}}``; a failed answer also carries the retrieved
``hits``. Client mistakes are 4xx, never 500; a 500 means a bug and says nothing about internals.

Library messages are written for the operator at a terminal: they name files by absolute path, quote
endpoint URLs and append log tails. :func:`public_message` makes them fit for any client: paths in the
data directory become collection-relative, other paths their file name, URLs and log tails are dropped.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path, PurePosixPath
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.core import errors as e
from rag.core.answers import AnswerError, numbered_hits

log = logging.getLogger(__name__)

# Most specific first: the first class an error is an instance of decides.
_STATUS: list[tuple[type[e.RagError], int, str]] = [
    (e.CollectionNotFoundError, 404, "collection_not_found"),
    (e.CollectionExistsError, 409, "collection_exists"),
    (e.FilterError, 422, "invalid_filter"),
    (e.ConfigError, 422, "invalid_request"),
    (e.LoaderError, 422, "invalid_document"),
    (e.IngestError, 422, "invalid_document"),
    (e.IndexNotFoundError, 409, "index_empty"),
    (e.IndexMismatchError, 409, "index_mismatch"),
    (e.IndexBusyError, 409, "busy"),
    (e.StorageError, 503, "storage_error"),
    (e.StoreError, 503, "store_error"),
    (e.GenerationTimeout, 504, "llm_timeout"),
    (e.GenerationError, 502, "llm_error"),
    (e.RetrievalError, 500, "retrieval_error"),
]


class ApiError(Exception):
    """An HTTP error raised by the API layer itself (authentication, sizes, unknown jobs)."""

    def __init__(self, status: int, kind: str, message: str) -> None:
        super().__init__(message)
        self.status, self.kind, self.message = status, kind, message


# " at http://host:port/v1" (and any other URL): the address of an upstream is the operator's business.
_URL_AT = re.compile(r"\s+(?:at|from|to)\s+[a-z][a-z0-9+.-]*://\S+?(?=[\s:;,)]*(?:\s|$))", re.IGNORECASE)
_URL = re.compile(r"[a-z][a-z0-9+.-]*://\S+", re.IGNORECASE)
_ABSOLUTE_PATH = re.compile(r"(?<![\w.~/-])/[^\s'\"`:;,()]+")
_DATA_DIRS: set[str] = set()


def hide_paths_under(data_dir: Path) -> None:
    """Have :func:`public_message` show paths in ``data_dir`` relative to their collection."""
    _DATA_DIRS.update({str(data_dir), str(data_dir.resolve())})


def _relative(match: re.Match[str]) -> str:
    path = match.group(0).rstrip(".")
    tail = match.group(0)[len(path):]
    for root in sorted(_DATA_DIRS, key=len, reverse=True):
        if path == root or path.startswith(root + "/"):
            parts = PurePosixPath(path[len(root):].lstrip("/") or ".").parts
            if parts[:1] == ("collections",):
                parts = parts[2:]
            return ("/".join(p for p in parts if p != ".") or "this collection") + tail
    return PurePosixPath(path).name + tail


def public_message(message: str) -> str:
    """``message`` fit for a client: first line only, no URLs, no absolute paths (see the module doc)."""
    first = message.strip().split("\n", 1)[0].rstrip(":; ")
    first = _URL.sub("the endpoint", _URL_AT.sub("", first))
    return _ABSOLUTE_PATH.sub(_relative, first)


def classify(exc: e.RagError) -> tuple[int, str]:
    """The HTTP status and error type of a library error."""
    for cls, status, kind in _STATUS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "internal_error"


def problem(status: int, kind: str, message: str, **extra: Any) -> JSONResponse:
    return JSONResponse({"error": {"type": kind, "message": message}, **extra}, status_code=status)


def rag_error_response(exc: e.RagError) -> JSONResponse:
    status, kind = classify(exc)
    message = public_message(str(exc))
    if isinstance(exc, AnswerError):
        return problem(status, kind, message, hits=numbered_hits(exc.hits, "n"))
    return problem(status, kind, message)


def install(app: FastAPI, data_dir: Path) -> None:
    """Register the handlers that give every error the same shape; messages hide ``data_dir``."""
    hide_paths_under(data_dir)

    @app.exception_handler(e.RagError)
    async def _rag(_: Request, exc: e.RagError) -> JSONResponse:
        return rag_error_response(exc)

    @app.exception_handler(ApiError)
    async def _api(_: Request, exc: ApiError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        response = problem(exc.status, exc.kind, exc.message)
        if headers:
            response.headers.update(headers)
        return response

    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors()[:5]:
            where = ".".join(str(p) for p in err.get("loc", ()) if p != "body") or "body"
            parts.append(f"{where}: {err.get('msg')}")
        return problem(422, "validation_error", "; ".join(parts) or "invalid request")

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        kinds = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large"}
        return problem(exc.status_code, kinds.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(Exception)
    async def _bug(_: Request, exc: Exception) -> JSONResponse:
        log.error("unhandled error: %s", exc, exc_info=exc)
        return problem(500, "internal_error", "internal error; the server log has the details")
