"""Incremental ingest: files in, chunks embedded and committed, BM25 rebuilt.

Change detection is by content hash: a file whose bytes (and user metadata) hash as before is skipped
without loading the embedding model; a changed file is re-loaded and only its changed documents are
re-chunked and re-embedded; a file gone from an ingested folder loses its chunks.

Work is committed in batches of files, each in the order that keeps the index loadable if the
process dies at any instant:

1. upsert the batch's new vectors into the store and flush it;
2. commit the catalog transaction (documents, chunks, file hashes, generation);
3. delete the vectors the batch made stale and flush again.

A crash between 1 and 2 leaves orphan vectors (never returned: search hydrates from the catalog) and
the files still marked as changed, so the next run redoes them; a crash between 2 and 3 leaves orphans
only. Each run starts by deleting orphans. BM25 is rebuilt from the catalog at the end and stamped with
the catalog generation, so a run that died before that point is detected and repaired on the next open.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rag.core.catalog import Catalog, DocumentWrite, FileRecord
from rag.core.embeddings import SentenceEmbedder
from rag.core.errors import IngestError, LoaderError
from rag.core.types import Chunk, Document
from rag.ingest.chunking import ChunkSpan, SlidingWindowChunker
from rag.ingest.loaders import SUPPORTED_SUFFIXES, load_file
from rag.stores.base import StoredChunk, VectorStore

log = logging.getLogger(__name__)

# Folders never worth indexing; a data directory inside the tree must not index itself.
SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".rag", ".pytest_cache"}


@dataclass(slots=True)
class IngestReport:
    """What one ingest run did, for the end summary and ``--json``."""

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self) -> dict[str, Any]:
        return {
            "added": len(self.added),
            "updated": len(self.updated),
            "unchanged": len(self.unchanged),
            "removed": len(self.removed),
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
            "seconds": round(self.seconds, 3),
        }


Progress = Callable[[int, int, str], None]
"""``progress(files_done, files_total, current_path)``."""


@dataclass(slots=True)
class _Pending:
    """A changed file, loaded and chunked, waiting for its batch to be embedded and committed."""

    record: FileRecord
    is_new: bool
    docs: list[DocumentWrite]
    stale_doc_ids: set[str]


def chunk_id_for(doc_id: str, span: ChunkSpan) -> str:
    """A stable id: the same document text at the same offsets always gets the same id."""
    digest = hashlib.blake2b(f"{doc_id}\0{span.start}\0{span.end}\0{span.text}".encode(), digest_size=10)
    return digest.hexdigest()


def discover(paths: Iterable[Path]) -> Iterator[tuple[Path, Path]]:
    """Yield ``(file, root)`` for every supported file under ``paths``, sorted, skipping hidden folders."""
    for root in paths:
        if root.is_file():
            yield root, root.parent
            continue
        if not root.is_dir():
            raise IngestError(f"{root} does not exist")
        found: list[Path] = []
        for folder, dirs, files in os.walk(root):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            found.extend(Path(folder) / f for f in files if Path(f).suffix.lower() in SUPPORTED_SUFFIXES)
        yield from ((f, root) for f in sorted(found))


class Ingestor:
    """Runs incremental ingests into one catalog + store.

    Args:
        catalog: the source of truth for files, documents and chunks.
        store: the vector store to keep in step with the catalog.
        embedder: embeds chunk texts (loaded only if something changed).
        chunker: turns documents into token windows.
        project_root: file ids are paths relative to it where possible.
        batch_chunks: chunks embedded and committed per batch; larger is faster, smaller loses less
            work to an interruption.
    """

    def __init__(
        self,
        catalog: Catalog,
        store: VectorStore,
        embedder: SentenceEmbedder,
        chunker: Callable[[], SlidingWindowChunker],
        project_root: Path,
        batch_chunks: int = 2048,
    ) -> None:
        self.catalog, self.store, self.embedder = catalog, store, embedder
        self._make_chunker = chunker
        self._chunker: SlidingWindowChunker | None = None
        self.project_root = project_root.resolve()
        self.batch_chunks = batch_chunks

    @property
    def chunker(self) -> SlidingWindowChunker:
        if self._chunker is None:
            self._chunker = self._make_chunker()
        return self._chunker

    def file_id(self, path: Path) -> str:
        """The display path and id of a file: relative to the project root when inside it."""
        resolved = path.resolve()
        try:
            return resolved.relative_to(self.project_root).as_posix()
        except ValueError:
            return resolved.as_posix()

    def ingest(
        self, paths: list[Path], metadata: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> IngestReport:
        """Bring the index in step with ``paths``; returns what changed.

        Raises:
            IngestError: if a path does not exist. Unreadable files do not raise: they are reported in
                :attr:`IngestReport.failed` and skipped, and everything else is committed.
        """
        started = time.perf_counter()
        report = IngestReport()
        user_meta = dict(metadata or {})
        self._delete_orphans()
        found = list(discover(paths))
        known = self.catalog.files()
        seen: set[str] = set()
        pending: list[_Pending] = []
        pending_chunks = 0
        for done, (path, _root) in enumerate(found, start=1):
            fid = self.file_id(path)
            seen.add(fid)
            if progress:
                progress(done - 1, len(found), fid)
            try:
                item = self._prepare(path, fid, known.get(fid), user_meta)
            except LoaderError as exc:
                log.warning("skipped %s: %s", fid, exc)
                report.failed.append((fid, str(exc)))
                continue
            if item is None:
                report.unchanged.append(fid)
                continue
            pending.append(item)
            pending_chunks += sum(len(d.chunks) for d in item.docs)
            if pending_chunks >= self.batch_chunks:
                self._commit(pending, report)
                pending, pending_chunks = [], 0
        self._commit(pending, report)
        self._remove_missing(paths, seen, known, report)
        if progress:
            progress(len(found), len(found), "")
        report.seconds = time.perf_counter() - started
        return report

    # -- steps ------------------------------------------------------------------------------------

    def _prepare(
        self, path: Path, fid: str, known: FileRecord | None, user_meta: Mapping[str, Any]
    ) -> _Pending | None:
        """Hash the file; if it changed, load and chunk it. ``None`` means unchanged."""
        try:
            data = path.read_bytes()
            stat = path.stat()
        except OSError as exc:
            raise LoaderError(f"cannot read file: {exc.strerror or exc}") from None
        digest = hashlib.sha256(data)
        digest.update(json.dumps(user_meta, sort_keys=True, default=str).encode())
        record = FileRecord(fid, digest.hexdigest(), stat.st_size, stat.st_mtime)
        if known is not None and known.file_hash == record.file_hash:
            return None
        documents = load_file(path, doc_id=fid, source=fid, metadata=dict(user_meta))
        old_hashes = self.catalog.document_hashes(fid)
        hashes = {d.doc_id: _content_hash(d) for d in documents}
        changed = [d for d in documents if old_hashes.get(d.doc_id) != hashes[d.doc_id]]
        docs = [
            DocumentWrite(d.doc_id, fid, hashes[d.doc_id], d.title, self._chunks(d, spans, hashes[d.doc_id]))
            for d, spans in zip(changed, self.chunker.chunk_many(changed))
        ]
        return _Pending(record, known is None, docs, set(old_hashes) - hashes.keys())

    def _chunks(self, doc: Document, spans: list[ChunkSpan], content_hash: str) -> list[Chunk]:
        base = {
            **doc.metadata,
            "doc_id": doc.doc_id,
            "source": doc.source,
            "title": doc.title,
            "content_hash": content_hash,
        }
        return [
            Chunk(
                chunk_id_for(doc.doc_id, span),
                doc.doc_id,
                span.text,
                {
                    **base,
                    "headings": list(span.headings),
                    "section": " > ".join(span.headings),
                    "page": span.page,
                    "start": span.start,
                    "end": span.end,
                    "chunk_index": index,
                    "n_tokens": span.n_tokens,
                },
            )
            for index, span in enumerate(spans)
        ]

    def _commit(self, pending: list[_Pending], report: IngestReport) -> None:
        """Embed and commit a batch of changed files in crash-safe order (see module docstring)."""
        if not pending:
            return
        docs = [d for item in pending for d in item.docs]
        chunks = [c for d in docs for c in d.chunks]
        old_ids = self.catalog.chunk_ids_of(
            [d.doc_id for d in docs] + [doc_id for item in pending for doc_id in item.stale_doc_ids]
        )
        new_ids = {c.chunk_id for c in chunks}
        # A window whose text and offsets are unchanged keeps its id and its vector (no re-embedding),
        # but is upserted again all the same: its metadata (front-matter, --meta) may have changed.
        kept = self.store.get_vectors([c.chunk_id for c in chunks if c.chunk_id in old_ids])
        fresh = [c for c in chunks if c.chunk_id not in kept]
        vectors = dict(kept)
        if fresh:
            vectors.update(zip((c.chunk_id for c in fresh), self.embedder.encode([c.text for c in fresh])))
        if chunks:
            self.store.upsert([StoredChunk(c.chunk_id, vectors[c.chunk_id], c.text, c.metadata) for c in chunks])
        self.store.flush()
        now = _utc_now()
        with self.catalog.transaction() as db:
            for item in pending:
                self.catalog.delete_documents(db, item.stale_doc_ids)
                self.catalog.write_documents(db, item.docs)
                self.catalog.record_file(db, item.record, now)
            self.catalog.bump_generation(db)
        stale = sorted(old_ids - new_ids)
        if stale:
            self.store.delete(stale)
            self.store.flush()
        for item in pending:
            (report.added if item.is_new else report.updated).append(item.record.path)
        report.chunks_added += len(fresh)
        report.chunks_removed += len(stale)

    def _remove_missing(
        self, roots: list[Path], seen: set[str], known: dict[str, FileRecord], report: IngestReport
    ) -> None:
        """Forget files that were ingested from one of ``roots`` (folders) and are gone now."""
        folders = [self.file_id(r) for r in roots if r.is_dir()]
        gone = [
            fid for fid in known
            if fid not in seen and any(_inside(fid, folder) for folder in folders)
        ]
        if not gone:
            return
        removed: set[str] = set()
        with self.catalog.transaction() as db:
            for fid in gone:
                removed |= self.catalog.delete_file(db, fid)
            self.catalog.bump_generation(db)
        if removed:
            self.store.delete(sorted(removed))
            self.store.flush()
        report.removed.extend(gone)
        report.chunks_removed += len(removed)

    def _delete_orphans(self) -> None:
        """Drop vectors the catalog does not name (left by an interrupted run)."""
        orphans = self.store.ids() - self.catalog.all_chunk_ids()
        if orphans:
            log.info("removing %d orphan vectors left by an interrupted ingest", len(orphans))
            self.store.delete(sorted(orphans))
            self.store.flush()


def _content_hash(doc: Document) -> str:
    # The file's mtime is left out: touching a JSONL corpus must not re-embed its unchanged documents.
    meta = {k: v for k, v in doc.metadata.items() if k != "modified"}
    payload = json.dumps([doc.text, doc.title, meta], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _inside(fid: str, folder: str) -> bool:
    return folder in ("", ".") or fid == folder or fid.startswith(folder.rstrip("/") + "/")


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
