"""The catalog: the transactional record of what is indexed, and the source of truth for chunks.

One SQLite file (``<data_dir>/catalog.sqlite``) holds the ingested files with their content hashes, the
documents they yielded and every chunk's text and metadata, plus the index's identity (embedding model,
dimension, store, chunking). Vector stores and BM25 are derived from it: ingest writes vectors first and
commits the catalog second, so after a crash the catalog never names a chunk the store lacks; vectors
the catalog does not name are orphans, ignored by search. The catalog journals them (``pending``) so that
the next ingest can reuse or delete exactly those, and nothing else.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.errors import IndexMismatchError, StorageError
from rag.core.storage import open_sqlite, sqlite_errors
from rag.core.types import Chunk

SCHEMA_VERSION = "1"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, file_hash TEXT NOT NULL, size INTEGER NOT NULL, mtime REAL NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, path TEXT NOT NULL, content_hash TEXT NOT NULL, title TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_path ON documents(path);
CREATE TABLE IF NOT EXISTS chunks (
    chunk_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, ord INTEGER NOT NULL, text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS pending (chunk_id TEXT PRIMARY KEY);
"""


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An ingested file as last seen."""

    path: str
    file_hash: str
    size: int
    mtime: float


INCOMPLETE = "incomplete"
"""The content hash of a document, and the file hash of a file, whose chunks are being committed in several
batches and whose last batch is not committed yet: it matches no real hash, so the next ingest reloads
them, and a kill between batches never leaves a document looking complete."""


@dataclass(slots=True)
class DocumentWrite:
    """A document's new state: its chunks replace whatever the catalog held for ``doc_id``.

    A document too large for one batch is written in parts: the first part replaces (``replace=True``),
    each later one appends its chunks after ``first_ord`` earlier ones (``replace=False``).
    """

    doc_id: str
    path: str
    content_hash: str
    title: str
    chunks: list[Chunk]
    replace: bool = True
    first_ord: int = 0


@dataclass(frozen=True, slots=True)
class ChunkRows:
    """Every chunk of one committed state, in a stable order: what BM25 is built from."""

    generation: int
    ids: list[str]
    texts: list[str]
    metadata: list[dict[str, Any]]


class Catalog:
    """SQLite-backed record of files, documents and chunks; safe to share between threads.

    Writes also keep a *journal* of vectors written to the store but not yet recorded here (and of
    vectors the catalog stopped naming but the store may still hold), so that only vectors a dead run
    left behind are ever swept, never those of a writer at work (see :mod:`rag.ingest.pipeline`).

    Args:
        path: the SQLite file; created with its folder if missing, unless ``read_only``.
        read_only: open for reading only (searches, status): nothing is written, a missing file reads as
            an empty catalog, and a read-only folder works.

    Raises:
        StorageError: the file is corrupt, locked for too long, or cannot be created.
    """

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self.path = path
        self.read_only = read_only
        self._lock = threading.RLock()
        conn = open_sqlite(path, read_only=read_only)
        with self._errors():
            if conn is not None and read_only and not _has_schema(conn):
                conn.close()  # a writer has just created the file and not yet its tables
                conn = None
            #: ``True`` for a reader's stand-in before the first ingest: empty, in memory, writes nothing.
            self.is_placeholder = conn is None
            if conn is None:
                conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
                conn.executescript(_SCHEMA)
            elif not read_only:
                conn.execute("PRAGMA synchronous=NORMAL")
                # One transaction, so a reader sees every table or none.
                conn.executescript(f"BEGIN IMMEDIATE;{_SCHEMA}COMMIT;")
        self._db = conn

    @property
    def where(self) -> str:
        """Where the catalog lives, for messages."""
        return str(self.path.parent)

    def _errors(self) -> AbstractContextManager[None]:
        return sqlite_errors(self.path)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together, or not at all.

        Raises:
            StorageError: the catalog is read-only, locked, or the disk is full (nothing is committed).
        """
        if self.read_only:
            raise StorageError(f"{self.path} was opened read-only")
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._rollback()
                raise
            try:
                self._db.execute("COMMIT")
            except BaseException:
                self._rollback()
                raise

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:  # already rolled back by SQLite itself (e.g. after SQLITE_FULL)
            pass

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._errors():
            return self._db.execute(sql, params).fetchall()

    # -- identity ---------------------------------------------------------------------------------

    def get_meta(self) -> dict[str, str]:
        return dict(self._read("SELECT key, value FROM meta"))

    def set_meta(self, values: dict[str, Any], db: sqlite3.Connection | None = None) -> None:
        rows = [(k, str(v)) for k, v in values.items()]
        sql = "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value"
        if db is not None:
            db.executemany(sql, rows)
            return
        with self.transaction() as tx:
            tx.executemany(sql, rows)

    @property
    def generation(self) -> int:
        """Bumped by every commit that changes the chunk set; derived indexes record the one they saw."""
        rows = self._read("SELECT value FROM meta WHERE key = 'generation'")
        return int(rows[0][0]) if rows else 0

    def check_identity(
        self, expected: dict[str, str], rebuild_hint: str, *, adopt: bool = True, legacy: dict[str, str] | None = None
    ) -> None:
        """Raise :class:`IndexMismatchError` if the catalog was built with different ``expected`` values.

        Values not recorded yet (a new index, or one from an older version) are adopted when ``adopt``
        is true (writers); readers only compare what is recorded. ``legacy`` names the value an index that
        holds chunks but predates a key was built with: such an index is compared as if it had recorded it.
        """
        meta = self.get_meta()
        missing_legacy = {key: value for key, value in (legacy or {}).items() if key in expected and key not in meta}
        if missing_legacy and self.counts()["chunks"]:
            meta.update(missing_legacy)
        for key, value in expected.items():
            if key in meta and meta[key] != value:
                raise IndexMismatchError(
                    f"the index in {self.where} was built with {key}={meta.get(key)!r} but "
                    f"{key}={value!r} is configured; {rebuild_hint}"
                )
        missing = {key: value for key, value in expected.items() if key not in meta or key in missing_legacy}
        if missing and adopt and not self.read_only:
            self.set_meta({**missing, "schema_version": SCHEMA_VERSION})

    # -- files and documents ----------------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        rows = self._read("SELECT path, file_hash, size, mtime FROM files")
        return {r[0]: FileRecord(*r) for r in rows}

    def document_hashes(self, path: str) -> dict[str, str]:
        """``doc_id -> content_hash`` of the documents a file yielded."""
        return dict(self._read("SELECT doc_id, content_hash FROM documents WHERE path = ?", (path,)))

    def document_info(self, doc_ids: Iterable[str]) -> dict[str, tuple[str, str]]:
        """``doc_id -> (path, content_hash)`` for the known ids; ``path`` is the file, or the source of an
        in-memory document."""
        out: dict[str, tuple[str, str]] = {}
        for batch in _batched(list(doc_ids), 500):
            marks = ",".join("?" * len(batch))
            for doc_id, path, content_hash in self._read(
                f"SELECT doc_id, path, content_hash FROM documents WHERE doc_id IN ({marks})", batch
            ):
                out[doc_id] = (path, content_hash)
        return out

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> set[str]:
        ids: set[str] = set()
        for batch in _batched(list(doc_ids), 500):
            marks = ",".join("?" * len(batch))
            ids.update(r[0] for r in self._read(f"SELECT chunk_id FROM chunks WHERE doc_id IN ({marks})", batch))
        return ids

    def write_documents(self, db: sqlite3.Connection, docs: Sequence[DocumentWrite]) -> None:
        """Replace each document's row and chunks, or append a later part's (call inside :meth:`transaction`)."""
        for doc in docs:
            if doc.replace:
                db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc.doc_id,))
            db.execute(
                "INSERT INTO documents(doc_id, path, content_hash, title) VALUES (?, ?, ?, ?) ON CONFLICT(doc_id) "
                "DO UPDATE SET path = excluded.path, content_hash = excluded.content_hash, title = excluded.title",
                (doc.doc_id, doc.path, doc.content_hash, doc.title),
            )
            db.executemany(
                "INSERT INTO chunks(chunk_id, doc_id, ord, text, metadata) VALUES (?, ?, ?, ?, ?) ON CONFLICT(chunk_id) "
                "DO UPDATE SET doc_id = excluded.doc_id, ord = excluded.ord, text = excluded.text, "
                "metadata = excluded.metadata",
                [
                    (c.chunk_id, c.doc_id, i, c.text, json.dumps(c.metadata, ensure_ascii=False))
                    for i, c in enumerate(doc.chunks, start=doc.first_ord)
                ],
            )

    def delete_documents(self, db: sqlite3.Connection, doc_ids: Iterable[str]) -> set[str]:
        """Forget documents and their chunks (inside :meth:`transaction`); returns the removed chunk ids."""
        removed: set[str] = set()
        for batch in _batched(list(doc_ids), 500):
            marks = ",".join("?" * len(batch))
            removed.update(r[0] for r in db.execute(f"SELECT chunk_id FROM chunks WHERE doc_id IN ({marks})", batch))
            db.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", batch)
            db.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", batch)
        return removed

    def record_file(self, db: sqlite3.Connection, record: FileRecord, ingested_at: str) -> None:
        db.execute(
            "INSERT INTO files(path, file_hash, size, mtime, ingested_at) VALUES (?, ?, ?, ?, ?) ON CONFLICT(path) "
            "DO UPDATE SET file_hash = excluded.file_hash, size = excluded.size, mtime = excluded.mtime, "
            "ingested_at = excluded.ingested_at",
            (record.path, record.file_hash, record.size, record.mtime, ingested_at),
        )

    def delete_file(self, db: sqlite3.Connection, path: str) -> set[str]:
        """Forget a file and its documents; returns the chunk ids that were removed."""
        doc_ids = [r[0] for r in db.execute("SELECT doc_id FROM documents WHERE path = ?", (path,))]
        removed = self.delete_documents(db, doc_ids)
        db.execute("DELETE FROM files WHERE path = ?", (path,))
        return removed

    def bump_generation(self, db: sqlite3.Connection) -> int:
        row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
        generation = (int(row[0]) if row else 0) + 1
        self.set_meta({"generation": generation}, db)
        return generation

    # -- the journal of vectors the catalog does not (yet, or any more) name ----------------------

    def journal(self, chunk_ids: Iterable[str], db: sqlite3.Connection | None = None) -> None:
        """Record chunk ids whose vectors are about to be written to, or left in, the store."""
        rows = [(cid,) for cid in chunk_ids]
        if not rows:
            return
        sql = "INSERT INTO pending(chunk_id) VALUES (?) ON CONFLICT(chunk_id) DO NOTHING"
        if db is not None:
            db.executemany(sql, rows)
            return
        with self.transaction() as tx:
            tx.executemany(sql, rows)

    def journaled(self) -> set[str]:
        return {r[0] for r in self._read("SELECT chunk_id FROM pending")}

    def unjournal(self, db: sqlite3.Connection, chunk_ids: Iterable[str]) -> None:
        for batch in _batched(list(chunk_ids), 500):
            db.execute(f"DELETE FROM pending WHERE chunk_id IN ({','.join('?' * len(batch))})", batch)

    def documents(self) -> list[dict[str, Any]]:
        """Every document with its path, title, chunk count and the metadata of its first chunk, by id."""
        rows = self._read(
            "SELECT d.doc_id, d.path, d.title, d.content_hash, "
            "(SELECT COUNT(*) FROM chunks c WHERE c.doc_id = d.doc_id), "
            "(SELECT metadata FROM chunks c WHERE c.doc_id = d.doc_id ORDER BY ord LIMIT 1) "
            "FROM documents d ORDER BY d.doc_id"
        )
        return [
            {"doc_id": doc_id, "path": path, "title": title, "content_hash": content_hash, "chunks": n,
             "metadata": json.loads(meta) if meta else {}}
            for doc_id, path, title, content_hash, n, meta in rows
        ]

    def document_chunks(self, doc_id: str) -> list[Chunk]:
        """The chunks of one document in order (empty if the document is unknown)."""
        rows = self._read("SELECT chunk_id, text, metadata FROM chunks WHERE doc_id = ? ORDER BY ord", (doc_id,))
        return [Chunk(cid, doc_id, text, json.loads(meta)) for cid, text, meta in rows]

    def document_size(self, doc_id: str) -> int:
        """How many chunks one document has (0 if the document is unknown)."""
        return int(self._read("SELECT COUNT(*) FROM chunks WHERE doc_id = ?", (doc_id,))[0][0])

    def chunk_range(self, doc_id: str, first: int, last: int) -> list[Chunk]:
        """The chunks of one document at positions ``first`` to ``last`` (``chunk_index``, both included), in order."""
        rows = self._read(
            "SELECT chunk_id, text, metadata FROM chunks WHERE doc_id = ? AND ord >= ? AND ord <= ? ORDER BY ord",
            (doc_id, first, last),
        )
        return [Chunk(cid, doc_id, text, json.loads(meta)) for cid, text, meta in rows]

    # -- chunks -----------------------------------------------------------------------------------

    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        """Chunks by id; ids the catalog does not hold (orphan vectors) are left out."""
        out: dict[str, Chunk] = {}
        for batch in _batched(list(chunk_ids), 500):
            marks = ",".join("?" * len(batch))
            for cid, doc_id, text, meta in self._read(
                f"SELECT chunk_id, doc_id, text, metadata FROM chunks WHERE chunk_id IN ({marks})", batch
            ):
                out[cid] = Chunk(cid, doc_id, text, json.loads(meta))
        return out

    def chunk_rows(self) -> ChunkRows:
        """Every chunk and the generation they belong to, read in one transaction (one committed state)."""
        with self._snapshot() as db:
            row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
            ids, texts, metadata = [], [], []
            for cid, text, meta in db.execute(
                f"SELECT chunk_id, text, metadata FROM chunks ORDER BY {self._write_order}"
            ):
                ids.append(cid)
                texts.append(text)
                metadata.append(json.loads(meta))
        return ChunkRows(int(row[0]) if row else 0, ids, texts, metadata)

    #: The column that orders chunks as they were written: SQLite's rowid (a sequence in Postgres).
    _write_order = "rowid"

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        """The connection inside a read transaction: every read sees one committed state."""
        with self._lock, self._errors():
            self._db.execute("BEGIN")
            try:
                yield self._db
            finally:
                self._db.execute("COMMIT")

    def iter_chunks(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(chunk_id, text, metadata)`` of every chunk, in a stable order."""
        rows = self.chunk_rows()
        yield from zip(rows.ids, rows.texts, rows.metadata)

    def all_chunk_ids(self) -> set[str]:
        return {r[0] for r in self._read("SELECT chunk_id FROM chunks")}

    def counts(self) -> dict[str, int]:
        rows = self._read(
            "SELECT (SELECT COUNT(*) FROM files), (SELECT COUNT(*) FROM documents), (SELECT COUNT(*) FROM chunks)"
        )
        files, documents, chunks = rows[0] if rows else (0, 0, 0)
        return {"files": files, "documents": documents, "chunks": chunks}


def _has_schema(conn: sqlite3.Connection) -> bool:
    """Whether the catalog's tables exist (raises for a file that is not a database at all)."""
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'").fetchone() is not None


def _batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
