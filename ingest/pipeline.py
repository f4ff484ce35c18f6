"""Incremental ingest: files (or in-memory documents) in, chunks embedded and committed.

Change detection is by content hash: a file whose bytes (and user metadata) hash as before is skipped
without loading the embedding model; a changed file is re-loaded and only its changed documents are
re-chunked and re-embedded; a file that no longer exists under an ingested folder loses its chunks.

Files are chunked as a stream and work is committed in batches of about ``batch_chunks`` chunks, so a
large JSONL corpus is committed many times over and a killed run keeps every batch before the kill. A
batch is cut at a document boundary, except inside a document that alone reaches ``batch_chunks``
chunks: that one is committed in parts, its content hash (and its file's hash) recorded as
:data:`~rag.core.catalog.INCOMPLETE` until its last part, so memory stays bounded by the batch size and
a kill inside a huge document keeps its committed parts without ever leaving it looking complete. Each
batch goes in the order that keeps the index loadable if the process dies at any instant:

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

Every file the walk sees is accounted for: added, updated, unchanged, failed with a reason, or skipped
with a reason (no parser for its type, a link to a file ingested anyway, a link to a folder). Hidden
files that no parser reads and the tool folders of :data:`SKIP_DIRS` (and hidden folders) are left out
silently. A symbolic link is cited by its own path, the path the user ingested, never by its target's.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.core.catalog import INCOMPLETE, Catalog, DocumentWrite, FileRecord
from rag.core.embeddings import SentenceEmbedder
from rag.core.errors import ConfigError, IngestError, LoaderError
from rag.core.ingest_report import IngestReport, Progress
from rag.core.types import Chunk, Document, Section, reserved_keys_in
from rag.ingest.chunking import ChunkSpan, SlidingWindowChunker
from rag.ingest.context import ContextPrefixer
from rag.ingest.loaders import check_file, default_registry, load_file
from rag.ingest.parsers import ParseLimits, ParserRegistry
from rag.stores.base import StoredChunk, VectorStore

log = logging.getLogger(__name__)

# Folders never worth indexing; a data directory inside the tree must not index itself.
SKIP_DIRS = {".git", ".hg", ".svn", ".venv", "venv", "node_modules", "__pycache__", ".rag", ".pytest_cache"}


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
class _Part:
    """The chunks of one document queued for the next commit; ``done`` once the document's last one is in.

    A part that is committed before it is done gets the content hash :data:`INCOMPLETE`.
    """

    write: DocumentWrite
    done: bool = False


def chunk_id_for(doc_id: str, span: ChunkSpan, context: str = "") -> str:
    """A stable id: the same document text at the same offsets (and with the same context prefix, see
    :mod:`rag.ingest.context`) always gets the same id, so a stored vector is reused only for what it embeds."""
    key = f"{doc_id}\0{span.start}\0{span.end}\0{span.text}" + (f"\0{context}" if context else "")
    return hashlib.blake2b(key.encode(), digest_size=10).hexdigest()


@dataclass(slots=True)
class Discovery:
    """What a walk of the ingested paths found.

    Attributes:
        files: the files some parser reads (by suffix), and every file named directly; sorted per path.
        unsupported: visible files no parser reads (reported as skipped).
        folder_links: symbolic links to folders, which the walk does not follow (reported as skipped).
        unreadable_dirs: ``(folder, reason)`` for folders that could not be listed.
    """

    files: list[Path] = field(default_factory=list)
    unsupported: list[Path] = field(default_factory=list)
    folder_links: list[Path] = field(default_factory=list)
    unreadable_dirs: list[tuple[Path, str]] = field(default_factory=list)


def discover(paths: Iterable[Path], suffixes: frozenset[str] | None = None) -> Discovery:
    """Every file under ``paths``, sorted, skipping hidden and tool folders (:data:`SKIP_DIRS`).

    Hidden files (``.name``) that no parser reads, such as ``.DS_Store`` or ``.gitignore``, are left out
    silently; a hidden file of a supported type is ingested, as it always was.

    Args:
        paths: files and folders; folders are walked recursively without following links to folders.
        suffixes: the suffixes parsers read; the installed parsers' when ``None``.

    Raises:
        IngestError: a path does not exist.
    """
    wanted = suffixes if suffixes is not None else default_registry().suffixes()
    found = Discovery()
    for root in paths:
        if root.is_file():
            found.files.append(root)
            continue
        if not root.is_dir():
            raise IngestError(f"{root} does not exist")

        def failed(exc: OSError) -> None:
            found.unreadable_dirs.append((Path(exc.filename or root), exc.strerror or str(exc)))  # noqa: B023 - os.walk calls it in this iteration only

        files: list[Path] = []
        unsupported: list[Path] = []
        for folder, dirs, names in os.walk(root, onerror=failed):
            kept = sorted(d for d in dirs if d not in SKIP_DIRS and not d.startswith("."))
            found.folder_links.extend(Path(folder) / d for d in kept if os.path.islink(os.path.join(folder, d)))
            dirs[:] = kept
            for name in names:
                if Path(name).suffix.lower() in wanted:
                    files.append(Path(folder) / name)
                elif not name.startswith("."):
                    unsupported.append(Path(folder) / name)
        found.files.extend(sorted(files))
        found.unsupported.extend(sorted(unsupported))
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
        prefixer: makes each chunk's context prefix (``chunking.context_prefix``); ``None``: no prefix.
            Called once, when the first document is chunked.
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
        prefixer: Callable[[], ContextPrefixer] | None = None,
    ) -> None:
        if batch_chunks <= 0:
            raise ConfigError(f"ingest.batch_chunks must be positive, got {batch_chunks}")
        self.catalog, self.store, self.embedder = catalog, store, embedder
        self._make_chunker = chunker
        self._chunker: SlidingWindowChunker | None = None
        self._make_prefixer = prefixer
        self._prefixer: ContextPrefixer | None = None
        self.project_root = project_root.resolve()
        self.batch_chunks = batch_chunks
        self.limits = limits or ParseLimits()
        self.registry = registry or default_registry()
        # The next commit: document parts, finished files, documents that left their file, outcomes.
        self._parts: list[_Part] = []
        self._queued_chunks = 0
        self._records: list[FileRecord] = []
        self._stale_doc_ids: set[str] = set()
        self._outcomes: list[tuple[str, str]] = []
        # The file being chunked, with the INCOMPLETE hash recorded if a commit lands inside it.
        self._open_file: FileRecord | None = None
        # Chunk ids a document held before this run, not yet written again: for a document committed in
        # several parts, deleted at its last part (or reused, if a later part has the same window).
        self._carried: dict[str, set[str]] = {}
        # Document ids this run has claimed (doc id -> path) or released (stale in their old file).
        self._claimed: dict[str, str] = {}
        self._released: set[str] = set()

    @property
    def chunker(self) -> SlidingWindowChunker:
        if self._chunker is None:
            self._chunker = self._make_chunker()
        return self._chunker

    def file_id(self, path: Path) -> str:
        """The display path and id of a file: the path it was found at, relative to the project root when
        inside it.

        Links among the folders above the file are resolved, as they always were (so ids of ordinary
        files never change); a file that is itself a symbolic link keeps its own name: a link is cited by
        the path the user ingested, not by its target's.
        """
        absolute = Path(os.path.abspath(path))
        try:
            located = absolute.parent.resolve() / absolute.name
        except (OSError, RuntimeError):  # a link loop among the folders above: cite the path as given
            located = absolute
        try:
            return located.relative_to(self.project_root).as_posix()
        except ValueError:
            return located.as_posix()

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
                committed. Files no parser reads, and links to files ingested anyway, are listed in
                :attr:`IngestReport.skipped`.
        """
        started = time.perf_counter()
        report = IngestReport()
        user_meta = dict(metadata or {})
        check_user_metadata(user_meta)
        found = discover(paths, self.registry.suffixes())
        for folder, reason in found.unreadable_dirs:
            report.failed.append((self.file_id(folder), f"cannot list folder: {reason}; its files are kept as they are"))
        for path in found.unsupported:
            report.skipped.append((self.file_id(path), self.registry.unsupported_reason(path.name) or "unsupported file type"))
        for path in found.folder_links:
            report.skipped.append((self.file_id(path), "link to a folder (links to folders are not followed)"))
        known = self.catalog.files()
        plan, retired = self._plan(found.files, known, report)
        seen = {fid for _, fid in plan}
        total = len(plan)
        for done, (path, fid) in enumerate(plan):
            if progress:
                progress(done, total, fid)
            try:
                self._prepare_file(path, fid, known.get(fid), user_meta, report)
            except LoaderError as exc:
                log.info("failed %s: %s", fid, exc)  # reported in IngestReport.failed; the caller shows it
                report.failed.append((fid, str(exc)))
            finally:
                self._open_file = None
        self._commit(report)
        self._remove_missing(paths, seen, known, found, report, retired)
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
            self._queue_documents([doc], {doc.doc_id: content_hash}, doc.source, report)
            self._outcomes.append((item.id, "updated" if item.id in info else "added"))
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

    def _plan(
        self, files: list[Path], known: Mapping[str, FileRecord], report: IngestReport
    ) -> tuple[list[tuple[Path, str]], list[str]]:
        """The files to ingest with their ids, each file once.

        A symbolic link whose file is ingested anyway (it is under the ingested folders too, or an earlier
        link leads to it) is skipped, so one file gives one document; a broken link or a link loop is a
        failure, reported under the link's own path.

        Returns:
            ``(plan, retired)``: ``(path, file id)`` in walk order, and the ids of files ingested before
            that are now skipped as such links (their documents are removed).
        """
        entries: list[tuple[Path, str, bool]] = []
        ids: set[str] = set()
        for path in files:
            fid = self.file_id(path)
            if fid not in ids:  # a file named twice (a folder and a file in it) is read once
                ids.add(fid)
                entries.append((path, fid, path.is_symlink()))
        if not any(is_link for _, _, is_link in entries):
            return [(path, fid) for path, fid, _ in entries], []
        # Which file a link leads to, by device and inode: ordinary files first, so a link never wins
        # over its target, whatever their order.
        owners: dict[tuple[int, int], tuple[str, bool]] = {}
        for path, fid, is_link in entries:
            identity = None if is_link else _identity(path)
            if identity is not None:
                owners.setdefault(identity, (fid, False))
        plan: list[tuple[Path, str]] = []
        retired: list[str] = []
        for path, fid, is_link in entries:
            if not is_link:
                plan.append((path, fid))
                continue
            try:
                target = os.stat(path)
            except FileNotFoundError:
                report.failed.append((fid, f"broken symbolic link (its target {os.readlink(path)} does not exist)"))
                continue
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    report.failed.append((fid, "symlink loop (the link leads back to itself)"))
                else:
                    plan.append((path, fid))  # reading it reports the error
                continue
            owner = owners.setdefault((target.st_dev, target.st_ino), (fid, True))
            if owner[0] == fid:
                plan.append((path, fid))
                continue
            other = f"the same file as {owner[0]}" if owner[1] else owner[0]
            report.skipped.append((fid, f"link to {other}, which is ingested too"))
            if fid in known:
                retired.append(fid)
        return plan, retired

    def _prepare_file(
        self, path: Path, fid: str, known: FileRecord | None, user_meta: Mapping[str, Any], report: IngestReport
    ) -> None:
        """Hash the file; if it changed, load it and queue its documents' chunks as they are cut."""
        stat = check_file(path, self.limits, self.registry)  # before reading: size and type
        try:
            data = path.read_bytes()
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
        del data  # the documents hold the text now; the bytes of a large file need not stay too
        documents = self._claim(fid, documents, problems)
        for label, reason in problems:
            report.failed.append((f"{fid}: {label}", reason))
        old_hashes = self.catalog.document_hashes(fid)
        hashes = {d.doc_id: _content_hash(d) for d in documents}
        stale = set(old_hashes) - hashes.keys()
        self._released.update(stale)
        changed = [d for d in documents if old_hashes.get(d.doc_id) != hashes[d.doc_id]]
        self._open_file = replace(record, file_hash=INCOMPLETE)
        self._queue_documents(changed, hashes, fid, report)
        self._open_file = None
        # Committed with (or after) the file's last chunks, never before them.
        self._stale_doc_ids |= stale
        # A file with skipped records is not marked as done: the next run looks at it (and reports) again.
        if not problems:
            self._records.append(record)
        self._outcomes.append((fid, "added" if known is None else "updated"))

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

    def _queue_documents(self, docs: list[Document], hashes: Mapping[str, str], path: str, report: IngestReport) -> None:
        """Chunk ``docs`` as a stream into the queue, committing each time a batch is full.

        A batch is cut before a document once it holds ``batch_chunks`` chunks; inside a document only
        when that document's own part reaches ``batch_chunks``, so a document smaller than a batch is
        always committed whole, and a queue never holds much more than two batches of chunks.
        """
        if not docs:
            return
        stream = self.chunker.iter_spans(docs)
        if self._make_prefixer is not None and self._prefixer is None:
            self._prefixer = self._make_prefixer()
        upcoming = next(stream, None)
        for index, doc in enumerate(docs):
            if self._queued_chunks >= self.batch_chunks:
                self._commit(report)
            content_hash = hashes[doc.doc_id]
            base = _chunk_base(doc, content_hash)
            part = _Part(DocumentWrite(doc.doc_id, path, content_hash, doc.title, []))
            self._parts.append(part)
            n = 0
            while upcoming is not None and upcoming[0] == index:
                if len(part.write.chunks) >= self.batch_chunks:
                    self._commit(report)
                    part = _Part(DocumentWrite(doc.doc_id, path, content_hash, doc.title, [], replace=False, first_ord=n))
                    self._parts.append(part)
                span = upcoming[1]
                context = self._context(doc, span)
                part.write.chunks.append(_chunk(base, doc.doc_id, span, n, context))
                self._queued_chunks += 1
                n += 1
                upcoming = next(stream, None)
            part.done = True

    def _context(self, doc: Document, span: ChunkSpan) -> str:
        """The context prefix of one window ("" without ``chunking.context_prefix``). A title that is only the
        document's id (a JSONL record without a title) names nothing, so it is left out."""
        if self._prefixer is None:
            return ""
        title = "" if doc.title == doc.doc_id else doc.title
        return self._prefixer.prefix(title, span.headings, span.text, span.n_tokens)

    # -- committing -------------------------------------------------------------------------------

    def _commit(self, report: IngestReport) -> None:
        """Embed and commit the queue in crash-safe order (see the module docstring)."""
        parts, self._parts, self._queued_chunks = self._parts, [], 0
        records, self._records = self._records, []
        stale_docs, self._stale_doc_ids = self._stale_doc_ids, set()
        outcomes, self._outcomes = self._outcomes, []
        if not (parts or records or stale_docs or outcomes):
            return
        chunks = [c for part in parts for c in part.write.chunks]
        new_ids = {c.chunk_id for c in chunks}
        old_ids = self.catalog.chunk_ids_of(
            [p.write.doc_id for p in parts if p.write.replace] + sorted(stale_docs)
        )
        # Every vector the store already holds for these ids is reused: unchanged windows of an updated
        # document, and what a killed run flushed but never committed. They are upserted again all the
        # same, since their metadata (front-matter, --meta) may have changed.
        vectors = self.store.get_vectors([c.chunk_id for c in chunks]) if chunks else {}
        reused = [c for c in chunks if c.chunk_id in vectors]
        fresh = [c for c in chunks if c.chunk_id not in vectors]
        if reused:
            self._write_vectors(reused, vectors)
        for start in range(0, len(fresh), self.batch_chunks):
            part_chunks = fresh[start : start + self.batch_chunks]
            vectors.update(zip((c.chunk_id for c in part_chunks), self.embedder.encode([c.indexed_text for c in part_chunks])))
            self._write_vectors(part_chunks, vectors)
        stale, carried = self._stale_ids(parts, old_ids, new_ids)
        writes = [p.write if p.done else replace(p.write, content_hash=INCOMPLETE) for p in parts]
        now = _utc_now()
        with self.catalog.transaction() as db:
            self.catalog.delete_documents(db, stale_docs)
            self.catalog.write_documents(db, writes)
            for record in records:
                self.catalog.record_file(db, record, now)
            if self._open_file is not None and any(p.write.path == self._open_file.path for p in parts):
                self.catalog.record_file(db, self._open_file, now)  # the file is not done: INCOMPLETE
            self.catalog.unjournal(db, new_ids)
            # Carried ids are no longer named by the catalog: journaled, so that a kill leaves them
            # to the sweep, but deleted only at the document's last part (which may reuse them).
            self.catalog.journal(sorted(stale | carried), db)
            self.catalog.bump_generation(db)
        self._delete_vectors(stale)
        for label, outcome in outcomes:
            (report.added if outcome == "added" else report.updated).append(label)
        report.chunks_added += len(fresh)
        report.chunks_removed += len(stale)

    def _stale_ids(self, parts: list[_Part], old_ids: set[str], new_ids: set[str]) -> tuple[set[str], set[str]]:
        """``(stale, carried)``: chunk ids to delete after this commit, and ids of the document still open
        (committed in parts) that it held before this run and no part has written again yet."""
        stale = old_ids - new_ids
        carried: set[str] = set()
        for part in parts:
            doc_id = part.write.doc_id
            if part.write.replace and not part.done:
                carried = self.catalog.chunk_ids_of([doc_id]) - new_ids
                stale -= carried
                self._carried[doc_id] = carried
            elif not part.write.replace:
                left = self._carried.pop(doc_id, set()) - new_ids
                if part.done:
                    stale |= left
                else:
                    self._carried[doc_id] = carried = left
        return stale, carried

    def _write_vectors(self, chunks: Sequence[Chunk], vectors: Mapping[str, Any]) -> None:
        """Journal, upsert and flush: after this, a crash leaves vectors the next run can find and reuse.

        The store keeps the indexed text (context prefix and chunk text), which a store with its own keyword
        search ranks, as local BM25 does; what is shown and cited is always read from the catalog.
        """
        self.catalog.journal(c.chunk_id for c in chunks)
        self.store.upsert([StoredChunk(c.chunk_id, vectors[c.chunk_id], c.indexed_text, c.metadata) for c in chunks])
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
        retired: Sequence[str] = (),
    ) -> None:
        """Forget files ingested from under one of the folders in ``roots`` that no longer exist, and the
        ``retired`` ones (links now skipped because their file is ingested anyway)."""
        folders = [r.resolve() for r in roots if r.is_dir()]
        blind = [d.resolve() for d, _ in found.unreadable_dirs]
        gone = list(retired)
        for fid in known:
            if fid in seen or fid in retired:
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


def _chunk_base(doc: Document, content_hash: str) -> dict[str, Any]:
    """The metadata every chunk of ``doc`` shares."""
    return {**doc.metadata, "doc_id": doc.doc_id, "source": doc.source, "title": doc.title, "content_hash": content_hash}


def _chunk(base: Mapping[str, Any], doc_id: str, span: ChunkSpan, index: int, context: str = "") -> Chunk:
    """The chunk of one window: ``base`` metadata plus where the window lies (and its context prefix)."""
    return Chunk(
        chunk_id_for(doc_id, span, context),
        doc_id,
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
            **({"context_prefix": context} if context else {}),
        },
    )


def _identity(path: Path) -> tuple[int, int] | None:
    """``(device, inode)`` of the file ``path`` leads to, or ``None`` when it cannot be looked at."""
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino


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
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "SKIP_DIRS", "Discovery", "DocumentInput", "IngestReport", "Ingestor", "Progress", "check_user_metadata",
    "chunk_id_for", "discover",
]
