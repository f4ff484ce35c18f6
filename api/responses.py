"""The error responses each route documents in OpenAPI (so clients and schemathesis know every status)."""

from __future__ import annotations

from typing import Any

from rag.api.schemas import AnswerErrorResponse, ErrorResponse

_DESCRIPTIONS = {
    401: "No API key, or an unknown or revoked one (only when the server has keys).",
    403: "The key does not grant this collection or role.",
    404: "Unknown collection, document or job.",
    409: "Conflict: the collection exists, is empty, is being written, or was built with other settings.",
    413: "The body is larger than api.max_upload_mb (uploads) or api.max_json_mb (anything else).",
    415: "The body is neither multipart/form-data nor application/json.",
    422: "Invalid request: a bad field, filter, alpha or collection name; the message says which.",
    502: "The LLM endpoint failed; the retrieved sources are in `hits`.",
    503: "The index storage failed (disk full, locked, corrupt); the message names the file.",
    504: "The LLM endpoint timed out; the retrieved sources are in `hits`.",
}


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """``responses=`` for a route: each status with its description and the error body's schema."""
    return {
        status: {
            "model": AnswerErrorResponse if status in (502, 504) else ErrorResponse,
            "description": _DESCRIPTIONS[status],
        }
        for status in statuses
    }
