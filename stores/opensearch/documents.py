"""Document identity: the OpenSearch ``_id`` a chunk is stored under (the store and its keyword side share it)."""

from __future__ import annotations

import hashlib

_ID_MAX_BYTES = 512  # OpenSearch's limit on a document _id


def document_id(chunk_id: str) -> str:
    """The OpenSearch ``_id`` of a chunk: the chunk id itself, or a SHA-256 of it past 512 bytes."""
    if len(chunk_id.encode("utf-8")) <= _ID_MAX_BYTES:
        return chunk_id
    return "sha256:" + hashlib.sha256(chunk_id.encode("utf-8")).hexdigest()
