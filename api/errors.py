"""The library's error tree, translated at the edge into HTTP problem responses.

Every error body is ``{"error": {"type", "message"}}``; a failed answer also carries the retrieved
``hits``. Client mistakes are 4xx, never 500; a 500 means a bug and says nothing about internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from rag.core import errors as e
from rag.generate.answer import AnswerError, numbered_hits

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
    if isinstance(exc, AnswerError):
        return problem(status, kind, str(exc), hits=numbered_hits(exc.hits, "n"))
    return problem(status, kind, str(exc))


def install(app: FastAPI) -> None:
    """Register the handlers that give every error the same shape."""

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
        log.exception("unhandled error: %s", exc)
        return problem(500, "internal_error", "internal error; the server log has the details")
