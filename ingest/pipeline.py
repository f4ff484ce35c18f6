"""Incremental ingest: files (or in-memory documents) in, chunks embedded and committed.

Change detection is by content hash: a file whose bytes (and user metadata) hash as before is skipped
without loading the embedding model; a changed file is re-loaded and only its changed documents are
re-chunked and re-embedded; a file that no longer exists under an ingested folder loses its chunks.

Work is committed in batches of about ``batch_chunks`` chunks, cut at document boundaries, so a large
JSONL corpus is committed many times over and a killed run keeps every batch before the kill. Each batch
goes in the order that keeps the index loadable if the process dies at any instant:

1. journal the chunk ids about to be written (catalog ``pending`` table), embed them in slices of
   ``batch_chunks`` and upsert + flush each slice into the store;
2. commit the catalog transaction (documents, chunks, file hashes, generation), which also journals the
   vectors the batch made stale and clears the journal entries of what it recorded;
3. delete the stale vectors, flush, and clear their journal entries.

A vector is a function of its chunk id (the id hashes the document id, offsets and text; the model is
fixed by the index identity), so a re-run after a crash takes every vector the store already holds for
the chunks it needs, and embeds only the rest: work flushed before the kill is not redone, even inside
one huge document. At the end of a run, journaled vectors the catalog does not name are deleted: the
run holds the data directory's writer lock, so they can only be leftovers of a dead run. Vectors the
journal does not name are never swept, so a writer that flushed but has not committed yet is safe.

Nothing is deleted on a guess: a file counts as gone only when it no longer exists on disk (a folder
that cannot be listed is reported and its files are kept), and only files ingested from under one of the
folders being ingested are considered.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rag.core.catalog import Catalog, DocumentWrite, FileRecord
from rag.core.embeddings import SentenceEmbedder
from rag.core.errors import ConfigError, IngestError, LoaderError
from rag.core.types import Chunk, Document, Section, reserved_keys_in
from rag.ingest.chunking import ChunkSpan, SlidingWindowChunker
from rag.ingest.loaders import default_registry, load_file
from rag.ingest.parsers import ParseLimits, ParserRegistry
from rag.stores.base import StoredChunk, VectorStore

log = logging.getLogger(__name__)

# Folders never worth indexing; a data directory inside the tree must not index itself.
SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".rag", ".pytest_cache"}


@dataclass(slots=True)
class IngestReport:
    """What one ingest run did, for the end summary and ``--json``.

    ``added``, ``updated``, ``unchanged`` and ``removed`` list files (or document ids, for in-memory
    documents); ``failed`` lists ``(what, reason)`` for files, folders and single records that were skipped.
    """

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

    def to_dict(self, *, names: bool = False) -> dict[str, Any]:
        """The report as JSON: counts of added/updated/unchanged/removed (``rag ingest --json``), or with
        ``names`` the lists of files or document ids themselves (the API)."""
        shown = list if names else len
        return {
            "added": shown(self.added),
            "updated": shown(self.updated),
            "unchanged": shown(self.unchanged),
            "removed": shown(self.removed),
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
            "seconds": round(self.seconds, 3),
        }


Progress = Callable[[int, int, str], None]
"""``progress(files_done, files_total, current_path)``."""


@dataclass(frozen=True, slots=True)
class DocumentInput:
    """A document handed over in memory (the API's JSON upload, a Python caller), not read from a file.

    Attributes:
        id: the document id; ingesting the same id again replaces it (or leaves it alone if unchanged).
        text: the full text; chunked like a plain-text file.
        metadata: user metadata (reserved keys such as ``source`` or ``page`` are refused).
        title: defaults to the id.
        source: shown in citations; defaults to the id.
    """

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)
    title: str | None = None
    source: str | None = None

    @classmethod
    def parse(cls, value: DocumentInput | Mapping[str, Any]) -> DocumentInput:
        """Accept an instance or a mapping with ``id``, ``text`` and optional ``metadata``/``title``/``source``.

        Raises:
            ConfigError: a required field is missing or of the wrong type.
        """
        if isinstance(value, DocumentInput):
            return value
        if not isinstance(value, Mapping):
            raise ConfigError(f"a document must be an object with id and text, got {type(value).__name__}")
        unknown = set(value) - {"id", "text", "metadata", "title", "source"}
        if unknown:
            raise ConfigError(f"unknown document field(s): {', '.join(sorted(unknown))}")
        doc_id, text, metadata = value.get("id"), value.get("text"), value.get("metadata") or {}
        if not isinstance(doc_id, str) or not doc_id.strip():
            raise ConfigError("every document needs a non-empty string 'id'")
        if not isinstance(text, str):
            raise ConfigError(f"document {doc_id!r}: 'text' must be a string")
        if not isinstance(metadata, Mapping):
            raise ConfigError(f"document {doc_id!r}: 'metadata' must be an object")
        for key in ("title", "source"):
            if value.get(key) is not None and not isinstance(value[key], str):
                raise ConfigError(f"document {doc_id!r}: {key!r} must be a string")
        return cls(doc_id, text, dict(metadata), value.get("title"), value.get("source"))


@dataclass(slots=True)
class _Unit:
    """Documents committed together; the last unit of a file also records the file and drops its stale docs."""

    label: str
    docs: list[DocumentWrite]
    stale_doc_ids: set[str] = field(default_factory=set)
    record: FileRecord | None = None
    outcome: str | None = None  # "added" or "updated", reported once this unit is committed

    @property
    def n_chunks(self) -> int:
        return sum(len(d.chunks) for d in self.docs)


def chunk_id_for(doc_id: str, span: ChunkSpan) -> str:
    """A stable id: the same document text at the same offsets always gets the same id."""
    digest = hashlib.blake2b(f"{doc_id}\0{span.start}\0{span.end}\0{span.text}".encode(), digest_size=10)
    return digest.hexdigest()


@dataclass(slots=True)
class Discovery:
    """The files found under the ingested paths, and the folders that could not be listed."""

    files: list[Path] = field(default_factory=list)
    unreadable_dirs: list[tuple[Path, str]] = field(default_factory=list)


def discover(paths: Iterable[Path], suffixes: frozenset[str] | None = None) -> Discovery:
    """Every supported file under ``paths``, sorted, skipping hidden and tool folders.

    Raises:
        IngestError: a path does not exist.
    """
    found = Discovery()
    for root in paths:
        if root.is_file():
            found.files.append(root)
            continue
        if not root.is_dir():
            raise IngestError(f"{root} does not exist")

        def failed(exc: OSError) -> None:
            found.unreadable_dirs.append((Path(exc.filename or root), exc.strerror or str(exc)))

        files: list[Path] = []
        for folder, dirs, names in os.walk(root, onerror=failed):
            dirs[:] = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            wanted = suffixes if suffixes is not None else default_registry().suffixes()
            files.extend(Path(folder) / f for f in names if Path(f).suffix.lower() in wanted)
        found.files.extend(sorted(files))
    return found


def check_user_metadata(metadata: Mapping[str, Any]) -> None:
    """Refuse user metadata (``--meta``) that would override a field the platform sets.

    Raises:
        ConfigError: naming the reserved keys.
    """
    clash = reserved_keys_in(dict(metadata))
    if clash:
        raise ConfigError(
            f"metadata key(s) {', '.join(clash)} are reserved (every chunk gets them from the platform); "
            "choose other names"
        )


class Ingestor:
    """Runs incremental ingests into one catalog + store. The caller holds the data directory's writer lock.

    Args:
        catalog: the source of truth for files, documents and chunks.
        store: the vector store to keep in step with the catalog.
        embedder: embeds chunk texts (loaded only if something changed).
        chunker: turns documents into token windows.
        project_root: file ids are paths relative to it where possible.
        batch_chunks: chunks embedded and committed per batch; larger is a little faster, smaller loses
            less work to an interruption.
        limits: bounds on what one file may cost to parse (``[ingest]`` settings); defaults when ``None``.
        registry: the parsers to read files with; the installed ones when ``None``.
    """

    def __init__(
        self,
        catalog: Catalog,
        store: VectorStore,
        embedder: SentenceEmbedder,
        chunker: Callable[[], SlidingWindowChunker],
        project_root: Path,
        batch_chunks: int = 256,
        limits: ParseLimits | None = None,
        registry: ParserRegistry | None = None,
    ) -> None:
        if batch_chunks <= 0:
            raise ConfigError(f"ingest.batch_chunks must be positive, got {batch_chunks}")
        self.catalog, self.store, self.embedder = catalog, store, embedder
        self._make_chunker = chunker
        self._chunker: SlidingWindowChunker | None = None
        self.project_root = project_root.resolve()
        self.batch_chunks = batch_chunks
        self.limits = limits or ParseLimits()
        self.registry = registry or default_registry()
        self._queue: list[_Unit] = []
        self._queued_chunks = 0
        # Document ids this run has claimed (doc id -> path) or released (stale in their old file).
        self._claimed: dict[str, str] = {}
        self._released: set[str] = set()

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

    def _absolute(self, fid: str) -> Path:
        return Path(fid) if Path(fid).is_absolute() else self.project_root / fid

    # -- entry points -----------------------------------------------------------------------------

    def ingest(
        self, paths: list[Path], metadata: Mapping[str, Any] | None = None, progress: Progress | None = None
    ) -> IngestReport:
        """Bring the index in step with ``paths``; returns what changed.

        Raises:
            ConfigError: ``metadata`` uses a reserved key (nothing is changed).
            IngestError: if a path does not exist. Unreadable files, folders and records do not raise:
                they are reported in :attr:`IngestReport.failed` and skipped, and everything else is
                committed.
        """
        started = time.perf_counter()
        report = IngestReport()
        user_meta = dict(metadata or {})
        check_user_metadata(user_meta)
        found = discover(paths, self.registry.suffixes())
        for folder, reason in found.unreadable_dirs:
            report.failed.append((self.file_id(folder), f"cannot list folder: {reason}; its files are kept as they are"))
        known = self.catalog.files()
        seen: set[str] = set()
        total = len(found.files)
        for done, path in enumerate(found.files):
            fid = self.file_id(path)
            seen.add(fid)
            if progress:
                progress(done, total, fid)
            try:
                self._prepare_file(path, fid, known.get(fid), user_meta, report)
            except LoaderError as exc:
                log.info("skipped %s: %s", fid, exc)  # reported in IngestReport.failed; the caller shows it
                report.failed.append((fid, str(exc)))
        self._commit(report)
        self._remove_missing(paths, seen, known, found, report)
        self._sweep_journal()
        if progress:
            progress(total, total, "")
        report.seconds = time.perf_counter() - started
        return report

    def ingest_documents(
        self, documents: Iterable[DocumentInput | Mapping[str, Any]], metadata: Mapping[str, Any] | None = None
    ) -> IngestReport:
        """Ingest documents given in memory; an id seen before is updated, or left alone if unchanged.

        Documents are never removed implicitly here (there is no folder to compare with); use
        :meth:`delete_documents`. An id that belongs to an ingested *file* is refused for that document.

        Raises:
            ConfigError: a document is malformed or ``metadata`` uses a reserved key (nothing is changed).
        """
        started = time.perf_counter()
        report = IngestReport()
        user_meta = dict(metadata or {})
        check_user_metadata(user_meta)
        inputs = [DocumentInput.parse(d) for d in documents]
        ids = [d.id for d in inputs]
        if len(set(ids)) != len(ids):
            repeated = sorted({i for i in ids if ids.count(i) > 1})
            raise ConfigError(f"document id(s) given more than once: {', '.join(repeated[:5])}")
        info = self.catalog.document_info(ids)
        files = self.catalog.files()
        now = _utc_now()
        for item in inputs:
            owner = info.get(item.id, (None, None))[0]
            if owner is not None and owner in files:
                report.failed.append((item.id, f"id already belongs to the ingested file {owner}; choose another id"))
                continue
            clash = reserved_keys_in(dict(item.metadata))
            if clash:
                report.failed.append((item.id, f"metadata key(s) {', '.join(clash)} are reserved; rename them"))
                continue
            if not item.text.strip():
                report.failed.append((item.id, "empty text"))
                continue
            doc = Document(
                doc_id=item.id,
                text=item.text,
                source=item.source or item.id,
                title=item.title or item.id,
                sections=[Section(text=item.text, start=0)],
                metadata={**item.metadata, **user_meta, "modified": now},
            )
            content_hash = _content_hash(doc)
            if info.get(item.id, (None, None))[1] == content_hash:
                report.unchanged.append(item.id)
                continue
            spans = self.chunker.chunk_many([doc])[0]
            write = DocumentWrite(doc.doc_id, doc.source, content_hash, doc.title, self._chunks(doc, spans, content_hash))
            outcome = "updated" if item.id in info else "added"
            self._enqueue(_Unit(item.id, [write], outcome=outcome), report)
        self._commit(report)
        self._sweep_journal()
        report.seconds = time.perf_counter() - started
        return report

    def delete_documents(self, doc_ids: Iterable[str]) -> IngestReport:
        """Remove documents by id. A document read from a file also forgets the file's hash, so the next
        ingest of its folder looks at the file again."""
        report = IngestReport()
        info = self.catalog.document_info(list(doc_ids))
        if not info:
            return report
        files = self.catalog.files()
        with self.catalog.transaction() as db:
            removed = self.catalog.delete_documents(db, info)
            for path in {path for path, _ in info.values() if path in files}:
                db.execute("DELETE FROM files WHERE path = ?", (path,))
            self.catalog.journal(removed, db)
            self.catalog.bump_generation(db)
        self._delete_vectors(removed)
        report.removed.extend(sorted(info))
        report.chunks_removed = len(removed)
        return report

    # -- preparing --------------------------------------------------------------------------------

    def _prepare_file(
        self, path: Path, fid: str, known: FileRecord | None, user_meta: Mapping[str, Any], report: IngestReport
    ) -> None:
        """Hash the file; if it changed, load and chunk it and queue its documents for committing."""
        try:
            data = path.read_bytes()
            stat = path.stat()
        except OSError as exc:
            raise LoaderError(f"cannot read file: {exc.strerror or exc}") from None
        digest = hashlib.sha256(data)
        digest.update(json.dumps(user_meta, sort_keys=True, default=str).encode())
        record = FileRecord(fid, digest.hexdigest(), stat.st_size, stat.st_mtime)
        if known is not None and known.file_hash == record.file_hash:
            report.unchanged.append(fid)
            return
        problems: list[tuple[str, str]] = []
        documents = load_file(
            path, doc_id=fid, source=fid, metadata=dict(user_meta), problems=problems, limits=self.limits,
            registry=self.registry, data=data,
        )
        documents = self._claim(fid, documents, problems)
        for label, reason in problems:
            report.failed.append((f"{fid}: {label}", reason))
        old_hashes = self.catalog.document_hashes(fid)
        hashes = {d.doc_id: _content_hash(d) for d in documents}
        stale = set(old_hashes) - hashes.keys()
        self._released.update(stale)
        changed = [d for d in documents if old_hashes.get(d.doc_id) != hashes[d.doc_id]]
        units: list[_Unit] = []
        unit = _Unit(fid, [])
        # Cut at document boundaries so that each commit stays near batch_chunks.
        for doc, spans in zip(changed, self.chunker.chunk_many(changed)):
            unit.docs.append(DocumentWrite(doc.doc_id, fid, hashes[doc.doc_id], doc.title, self._chunks(doc, spans, hashes[doc.doc_id])))
            if unit.n_chunks >= self.batch_chunks:
                units.append(unit)
                unit = _Unit(fid, [])
        units.append(unit)
        last = units[-1]
        last.stale_doc_ids = stale
        # A file with skipped records is not marked as done: the next run looks at it (and reports) again.
        last.record = record if not problems else None
        last.outcome = "added" if known is None else "updated"
        for item in units:
            self._enqueue(item, report)

    def _claim(self, fid: str, documents: list[Document], problems: list[tuple[str, str]]) -> list[Document]:
        """Drop (as problems) documents whose id already belongs to another file or document source."""
        owners = {doc_id: path for doc_id, (path, _) in self.catalog.document_info([d.doc_id for d in documents]).items()}
        kept = []
        for doc in documents:
            owner = self._claimed.get(doc.doc_id) or owners.get(doc.doc_id)
            if owner is not None and owner != fid and doc.doc_id not in self._released:
                problems.append(
                    (f"_id {doc.doc_id!r}", f"already ingested from {owner}; document ids must be unique across files (record skipped)")
                )
                continue
            self._claimed[doc.doc_id] = fid
            kept.append(doc)
        return kept

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
                    **span.location,
                },
            )
            for index, span in enumerate(spans)
        ]

    # -- committing -------------------------------------------------------------------------------

    def _enqueue(self, unit: _Unit, report: IngestReport) -> None:
        self._queue.append(unit)
        self._queued_chunks += unit.n_chunks
        if self._queued_chunks >= self.batch_chunks:
            self._commit(report)

    def _commit(self, report: IngestReport) -> None:
        """Embed and commit the queued units in crash-safe order (see the module docstring)."""
        units, self._queue, self._queued_chunks = self._queue, [], 0
        if not units:
            return
        docs = [d for unit in units for d in unit.docs]
        chunks = [c for d in docs for c in d.chunks]
        old_ids = self.catalog.chunk_ids_of(
            [d.doc_id for d in docs] + [doc_id for unit in units for doc_id in unit.stale_doc_ids]
        )
        new_ids = {c.chunk_id for c in chunks}
        # Every vector the store already holds for these ids is reused: unchanged windows of an updated
        # document, and what a killed run flushed but never committed. They are upserted again all the
        # same, since their metadata (front-matter, --meta) may have changed.
        vectors = self.store.get_vectors([c.chunk_id for c in chunks]) if chunks else {}
        reused = [c for c in chunks if c.chunk_id in vectors]
        fresh = [c for c in chunks if c.chunk_id not in vectors]
        if reused:
            self._write_vectors(reused, vectors)
        for start in range(0, len(fresh), self.batch_chunks):
            part = fresh[start : start + self.batch_chunks]
            vectors.update(zip((c.chunk_id for c in part), self.embedder.encode([c.text for c in part])))
            self._write_vectors(part, vectors)
        stale = sorted(old_ids - new_ids)
        now = _utc_now()
        with self.catalog.transaction() as db:
            for unit in units:
                self.catalog.delete_documents(db, unit.stale_doc_ids)
                self.catalog.write_documents(db, unit.docs)
                if unit.record is not None:
                    self.catalog.record_file(db, unit.record, now)
            self.catalog.unjournal(db, new_ids)
            self.catalog.journal(stale, db)
            self.catalog.bump_generation(db)
        self._delete_vectors(stale)
        for unit in units:
            if unit.outcome == "added":
                report.added.append(unit.label)
            elif unit.outcome == "updated":
                report.updated.append(unit.label)
        report.chunks_added += len(fresh)
        report.chunks_removed += len(stale)

    def _write_vectors(self, chunks: Sequence[Chunk], vectors: Mapping[str, Any]) -> None:
        """Journal, upsert and flush: after this, a crash leaves vectors the next run can find and reuse."""
        self.catalog.journal(c.chunk_id for c in chunks)
        self.store.upsert([StoredChunk(c.chunk_id, vectors[c.chunk_id], c.text, c.metadata) for c in chunks])
        self.store.flush()

    def _delete_vectors(self, chunk_ids: Sequence[str] | set[str]) -> None:
        """Delete vectors the catalog no longer names (already journaled), then clear their entries."""
        if not chunk_ids:
            return
        self.store.delete(sorted(chunk_ids))
        self.store.flush()
        with self.catalog.transaction() as db:
            self.catalog.unjournal(db, chunk_ids)

    # -- removing ---------------------------------------------------------------------------------

    def _remove_missing(
        self,
        roots: list[Path],
        seen: set[str],
        known: dict[str, FileRecord],
        found: Discovery,
        report: IngestReport,
    ) -> None:
        """Forget files ingested from under one of the folders in ``roots`` that no longer exist."""
        folders = [r.resolve() for r in roots if r.is_dir()]
        blind = [d.resolve() for d, _ in found.unreadable_dirs]
        gone = []
        for fid in known:
            if fid in seen:
                continue
            path = self._absolute(fid)
            if not any(path.is_relative_to(f) for f in folders) or any(path.is_relative_to(b) for b in blind):
                continue
            if _missing(path):
                gone.append(fid)
        if not gone:
            return
        removed: set[str] = set()
        with self.catalog.transaction() as db:
            for fid in gone:
                removed |= self.catalog.delete_file(db, fid)
            self.catalog.journal(removed, db)
            self.catalog.bump_generation(db)
        self._delete_vectors(removed)
        report.removed.extend(gone)
        report.chunks_removed += len(removed)

    def _sweep_journal(self) -> None:
        """Delete journaled vectors the catalog does not name: leftovers of a run that died."""
        journaled = self.catalog.journaled()
        if not journaled:
            return
        orphans = journaled - self.catalog.all_chunk_ids()
        if orphans:
            log.info("removing %d vectors left by an interrupted ingest", len(orphans))
            self.store.delete(sorted(orphans))
            self.store.flush()
        with self.catalog.transaction() as db:
            self.catalog.unjournal(db, journaled)


def _missing(path: Path) -> bool:
    """True only when ``path`` certainly does not exist (not when it merely cannot be looked at)."""
    try:
        os.lstat(path)
    except FileNotFoundError:
        return True
    except OSError as exc:
        return exc.errno == errno.ENOTDIR
    return False


def _content_hash(doc: Document) -> str:
    # The file's mtime is left out: touching a JSONL corpus must not re-embed its unchanged documents.
    meta = {k: v for k, v in doc.metadata.items() if k != "modified"}
    payload = json.dumps([doc.text, doc.title, meta], sort_keys=True, default=str, ensure_ascii=False)
    return hashlib.sha256(payload.encode()).hexdigest()


def _utc_now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "DocumentInput", "Discovery", "IngestReport", "Ingestor", "Progress", "SKIP_DIRS", "check_user_metadata",
    "chunk_id_for", "discover",
]
