"""What every part of the Qdrant backend shares: the client import, point ids, server versions, warnings."""

from __future__ import annotations

import logging
import re
import threading
import uuid
from typing import TYPE_CHECKING, Any

from rag.core.errors import StoreError

if TYPE_CHECKING:
    from qdrant_client import QdrantClient

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rag-platform[qdrant]'"
# Points read or written per request.
SCROLL_BATCH = 1024
# Point ids are UUIDs derived from chunk ids, so the same chunk always lands on the same point.
_POINT_NAMESPACE = uuid.UUID("5b0a6f3e-8f4e-4b8c-9a57-2f1c3d9e7a10")
# Warnings about a collection or server are logged once per process, not once per store object.
_warned: set[str] = set()
_warned_lock = threading.Lock()


def import_qdrant() -> tuple[type[QdrantClient], Any]:
    """Import qdrant-client on first use, so the package works without it."""
    try:
        from qdrant_client import QdrantClient
        from qdrant_client.http import models
    except ImportError as exc:
        raise StoreError(f"the qdrant vector store needs qdrant-client: {INSTALL_HINT}") from exc
    return QdrantClient, models


def point_id(chunk_id: str) -> str:
    """The Qdrant point id of a chunk id: a UUIDv5, stable across processes and machines."""
    return str(uuid.uuid5(_POINT_NAMESPACE, chunk_id))


def warn_once(message: str) -> None:
    """Log ``message`` as a warning the first time this process sees it."""
    with _warned_lock:
        if message in _warned:
            return
        _warned.add(message)
    log.warning("%s", message)


def parse_version(text: str | None) -> tuple[int, int] | None:
    """``(major, minor)`` of a version string such as ``"1.17.0"`` or ``"v1.16.3-dev"``; ``None`` if unreadable."""
    match = re.match(r"v?(\d+)\.(\d+)", text or "")
    return (int(match.group(1)), int(match.group(2))) if match else None
