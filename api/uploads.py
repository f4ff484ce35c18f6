"""Uploaded files on disk: written before an upload is accepted, kept only while a document needs them.

Uploads go into the collection's ``uploads/`` folder under their file name, which is also the document
id. A new version of a file moves the old one aside (``.<name>.<hex>.prev``) until the ingest has
decided: a file that is indexed keeps its new bytes and loses the old ones; a file that fails (a corrupt
PDF, or the whole request refused, e.g. for a reserved metadata key) is removed, or its old version put
back, so the folder holds exactly what the index holds. The same steps run for a job resumed after a
restart, from the names its spec recorded.
"""

from __future__ import annotations

import logging
import os
import uuid
from pathlib import Path
from typing import Any

from rag.core.errors import StorageError
from rag.core.ingest_report import IngestReport, Progress
from rag.core.storage import describe_os_error
from rag.workspace import Workspace

log = logging.getLogger(__name__)

UPLOADS = "uploads"


def store_file(folder: Path, filename: str, data: bytes) -> str | None:
    """Write an upload atomically; returns the name its previous version was moved to, if it had one.

    Identical bytes leave the file (and so its index entry) untouched.

    Raises:
        StorageError: the disk refused (full, read-only): a 503, not a bug.
    """
    target = folder / filename
    backup: str | None = None
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if target.is_file():
            if target.read_bytes() == data:
                return None
            backup = f".{filename}.{uuid.uuid4().hex[:8]}.prev"
        tmp = folder / f".{filename}.{uuid.uuid4().hex[:8]}.part"
        with tmp.open("wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())  # on disk before the upload is acknowledged
        if backup is not None:
            os.replace(target, folder / backup)
        os.replace(tmp, target)
    except OSError as exc:
        raise StorageError(describe_os_error(exc, target)) from exc
    return backup


def settle(folder: Path, names: list[str], backups: dict[str, str], failed: set[str]) -> None:
    """After an ingest: drop the old versions of indexed files; remove (or restore) the failed ones."""
    for name in names:
        backup = folder / backups[name] if name in backups else None
        try:
            if name in failed:
                if backup is not None and backup.is_file():
                    os.replace(backup, folder / name)
                elif backup is None:
                    (folder / name).unlink(missing_ok=True)
            elif backup is not None:
                backup.unlink(missing_ok=True)
        except OSError as exc:  # the index is right either way; a stray file is only disk space
            log.warning("cannot tidy the upload %s: %s", name, exc)


def remove_upload(workspace: Workspace, collection: str, doc_id: str) -> None:
    """Remove the uploaded file behind document ``doc_id``, if it came from an upload."""
    folder = workspace.path(collection) / UPLOADS
    target = folder / doc_id
    # A document id is a plain file name for uploads; anything with a folder in it is not one of ours.
    if "/" in doc_id or "\\" in doc_id or doc_id in (".", "..") or not target.is_file():
        return
    try:
        target.unlink()
    except OSError as exc:
        log.warning("cannot remove the upload behind %s: %s", doc_id, exc)


class UploadRunner:
    """Runs an upload from its spec (see :mod:`rag.api.jobs`): ``runner(collection, spec, progress)``.

    A spec is ``{"kind": "files", "files": [names], "backups": {name: old version}, "metadata": {...},
    "refused": [[name, reason]]}`` or ``{"kind": "documents", "documents": [...]}``.
    """

    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace

    def __call__(self, collection: str, spec: dict[str, Any], progress: Progress | None) -> IngestReport:
        engine = self.workspace.engine(collection)
        if spec["kind"] == "documents":
            return engine.ingest_documents(spec["documents"])
        folder = self.workspace.path(collection) / UPLOADS
        names: list[str] = spec["files"]
        backups: dict[str, str] = spec.get("backups", {})
        try:
            paths = [folder / name for name in names]
            report = engine.ingest(paths, spec.get("metadata") or {}, progress=progress, root=folder) if paths else IngestReport()
        except BaseException:
            settle(folder, names, backups, set(names))
            raise
        settle(folder, names, backups, {Path(path).name for path, _ in report.failed})
        report.failed[:0] = [(name, reason) for name, reason in spec.get("refused", [])]
        return report
