"""The catalog: the transactional record of what is indexed, and the source of truth for chunks.

One SQLite file (``<data_dir>/catalog.sqlite``) holds the ingested files with their content hashes, the
documents they yielded and every chunk's text and metadata, plus the index's identity (embedding model,
dimension, store, chunking). Vector stores and BM25 are derived from it: ingest writes vectors first and
commits the catalog second, so after a crash the catalog never names a chunk the store lacks; vectors
the catalog does not name are orphans, ignored by search and deleted by the next ingest.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.errors import REBUILD_HINT, IndexMismatchError, StoreError
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
"""


@dataclass(frozen=True, slots=True)
class FileRecord:
    """An ingested file as last seen."""

    path: str
    file_hash: str
    size: int
    mtime: float


@dataclass(slots=True)
class DocumentWrite:
    """A document's new state: its chunks replace whatever the catalog held for ``doc_id``."""

    doc_id: str
    path: str
    content_hash: str
    title: str
    chunks: list[Chunk]


class Catalog:
    """SQLite-backed record of files, documents and chunks.

    Args:
        path: the SQLite file; created with its folder if missing.
    """

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"catalog {path} is unreadable ({exc}); move it away and {REBUILD_HINT}") from None

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All writes inside commit together, or not at all."""
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    # -- identity ---------------------------------------------------------------------------------

    def get_meta(self) -> dict[str, str]:
        return dict(self._db.execute("SELECT key, value FROM meta"))

    def set_meta(self, values: dict[str, Any], db: sqlite3.Connection | None = None) -> None:
        (db or self._db).executemany(
            "INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value",
            [(k, str(v)) for k, v in values.items()],
        )

    @property
    def generation(self) -> int:
        """Bumped by every commit that changes the chunk set; derived indexes record the one they saw."""
        return int(self.get_meta().get("generation", "0"))

    def check_identity(self, expected: dict[str, str], rebuild_hint: str) -> None:
        """Raise :class:`IndexMismatchError` if the catalog was built with different ``expected`` values.

        Values not recorded yet (a new index) are adopted.
        """
        meta = self.get_meta()
        missing = {key: value for key, value in expected.items() if key not in meta}
        if missing:
            self.set_meta({**missing, "schema_version": SCHEMA_VERSION})
        for key, value in expected.items():
            if key in meta and meta[key] != value:
                raise IndexMismatchError(
                    f"the index in {self.path.parent} was built with {key}={meta.get(key)!r} but "
                    f"{key}={value!r} is configured; {rebuild_hint}"
                )

    # -- files and documents ----------------------------------------------------------------------

    def files(self) -> dict[str, FileRecord]:
        rows = self._db.execute("SELECT path, file_hash, size, mtime FROM files")
        return {r[0]: FileRecord(*r) for r in rows}

    def document_hashes(self, path: str) -> dict[str, str]:
        """``doc_id -> content_hash`` of the documents a file yielded."""
        return dict(self._db.execute("SELECT doc_id, content_hash FROM documents WHERE path = ?", (path,)))

    def chunk_ids_of(self, doc_ids: Iterable[str]) -> set[str]:
        ids: set[str] = set()
        for batch in _batched(list(doc_ids), 500):
            marks = ",".join("?" * len(batch))
            ids.update(r[0] for r in self._db.execute(f"SELECT chunk_id FROM chunks WHERE doc_id IN ({marks})", batch))
        return ids

    def write_documents(self, db: sqlite3.Connection, docs: Sequence[DocumentWrite]) -> None:
        """Replace each document's row and chunks (call inside :meth:`transaction`)."""
        for doc in docs:
            db.execute("DELETE FROM chunks WHERE doc_id = ?", (doc.doc_id,))
            db.execute(
                "INSERT OR REPLACE INTO documents(doc_id, path, content_hash, title) VALUES (?, ?, ?, ?)",
                (doc.doc_id, doc.path, doc.content_hash, doc.title),
            )
            db.executemany(
                "INSERT OR REPLACE INTO chunks(chunk_id, doc_id, ord, text, metadata) VALUES (?, ?, ?, ?, ?)",
                [
                    (c.chunk_id, c.doc_id, i, c.text, json.dumps(c.metadata, ensure_ascii=False))
                    for i, c in enumerate(doc.chunks)
                ],
            )

    def delete_documents(self, db: sqlite3.Connection, doc_ids: Iterable[str]) -> None:
        for batch in _batched(list(doc_ids), 500):
            marks = ",".join("?" * len(batch))
            db.execute(f"DELETE FROM chunks WHERE doc_id IN ({marks})", batch)
            db.execute(f"DELETE FROM documents WHERE doc_id IN ({marks})", batch)

    def record_file(self, db: sqlite3.Connection, record: FileRecord, ingested_at: str) -> None:
        db.execute(
            "INSERT OR REPLACE INTO files(path, file_hash, size, mtime, ingested_at) VALUES (?, ?, ?, ?, ?)",
            (record.path, record.file_hash, record.size, record.mtime, ingested_at),
        )

    def delete_file(self, db: sqlite3.Connection, path: str) -> set[str]:
        """Forget a file and its documents; returns the chunk ids that were removed."""
        doc_ids = [r[0] for r in db.execute("SELECT doc_id FROM documents WHERE path = ?", (path,))]
        removed = self.chunk_ids_of(doc_ids)
        self.delete_documents(db, doc_ids)
        db.execute("DELETE FROM files WHERE path = ?", (path,))
        return removed

    def bump_generation(self, db: sqlite3.Connection) -> int:
        generation = self.generation + 1
        self.set_meta({"generation": generation}, db)
        return generation

    # -- chunks -----------------------------------------------------------------------------------

    def get_chunks(self, chunk_ids: Sequence[str]) -> dict[str, Chunk]:
        """Chunks by id; ids the catalog does not hold (orphan vectors) are left out."""
        out: dict[str, Chunk] = {}
        for batch in _batched(list(chunk_ids), 500):
            marks = ",".join("?" * len(batch))
            for cid, doc_id, text, meta in self._db.execute(
                f"SELECT chunk_id, doc_id, text, metadata FROM chunks WHERE chunk_id IN ({marks})", batch
            ):
                out[cid] = Chunk(cid, doc_id, text, json.loads(meta))
        return out

    def iter_chunks(self) -> Iterator[tuple[str, str, dict[str, Any]]]:
        """``(chunk_id, text, metadata)`` of every chunk, in a stable order."""
        for cid, text, meta in self._db.execute("SELECT chunk_id, text, metadata FROM chunks ORDER BY rowid"):
            yield cid, text, json.loads(meta)

    def all_chunk_ids(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT chunk_id FROM chunks")}

    def counts(self) -> dict[str, int]:
        one = self._db.execute
        return {
            "files": one("SELECT COUNT(*) FROM files").fetchone()[0],
            "documents": one("SELECT COUNT(*) FROM documents").fetchone()[0],
            "chunks": one("SELECT COUNT(*) FROM chunks").fetchone()[0],
        }


def _batched(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
