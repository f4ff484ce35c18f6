"""FaissStore: the embedded default vector store, FAISS in memory over SQLite on disk.

The store folder holds::

    store.sqlite3     one row per chunk: FAISS id, chunk id, float32 vector, text, metadata JSON (WAL mode)
    hnsw-<N>.npz      hnsw only: the built graph for data generation N, a cache that can always be rebuilt

SQLite is the only durable truth. Every write runs inside one open transaction that :meth:`FaissStore.flush`
commits together with a bumped generation number, so a process killed at any instant leaves the last
flushed state, whole. The FAISS index lives in memory and is rebuilt from SQLite at open, except that an
HNSW graph (slow to build) is cached in a file named after the generation it reflects and reused when that
generation is still current.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np

from rag.core.errors import REBUILD_HINT, ConfigError, IndexMismatchError, StorageError, StoreError
from rag.core.filters import Filter
from rag.core.metadata_index import MetadataIndex
from rag.core.storage import describe_sqlite_error, open_sqlite, sqlite_errors
from rag.core.types import ScoredId
from rag.stores.base import StoredChunk, unit_rows

log = logging.getLogger(__name__)

DB_NAME = "store.sqlite3"
# Bumped when the SQLite layout changes; a folder in another format is refused with the rebuild hint.
FORMAT_VERSION = "1"

_MASK_63 = (1 << 63) - 1
# Up to this many allowed chunks, exact numpy dot products over just those vectors beat a FAISS scan.
_EXACT_MAX_FLAT = 2048
# HNSW filtered search with a selector degrades when few nodes pass; below this, search exactly instead.
_EXACT_MAX_HNSW = 16384
# Compact the HNSW graph once this share of its nodes are tombstones (HNSW cannot remove nodes).
_COMPACT_RATIO = 0.2
_FILTER_CACHE_SIZE = 64

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS chunks (
    id INTEGER PRIMARY KEY,
    chunk_id TEXT NOT NULL UNIQUE,
    vector BLOB NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
"""


def faiss_id(chunk_id: str) -> int:
    """The FAISS id of a chunk id: the first 8 bytes of its blake2b digest, masked to 63 bits.

    Deterministic across processes and machines; 63 bits keep it non-negative (FAISS uses -1 for "none").
    """
    digest = hashlib.blake2b(chunk_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "little") & _MASK_63


@contextmanager
def _one_omp_thread() -> Iterator[None]:
    """Run FAISS single-threaded in the calling thread while the block runs.

    One query gains nothing from OpenMP splitting the scan over a few cores and loses a lot when those
    cores are busy (100k x 384 flat on 2 loaded cores: ~12 ms with one thread, ~50 ms with two). The
    thread count is an OpenMP per-thread setting, so other threads (and index builds) keep theirs.
    """
    previous = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(previous)


class _Selection:
    """The index positions a filter allows, in the two forms the search paths use.

    Positions shift with every write (and compaction), so selections are dropped whenever that happens.
    """

    def __init__(self, mask: np.ndarray) -> None:
        self.positions = np.flatnonzero(mask)
        # Bit i of byte i // 8, least significant first: the layout IDSelectorBitmap reads. A bitmap
        # lookup per scanned vector is far cheaper than IDSelectorBatch's id translation and hash probe.
        self.selector = faiss.IDSelectorBitmap(np.packbits(mask, bitorder="little"))

    def __len__(self) -> int:
        return len(self.positions)


def _exact_top_k(
    query: np.ndarray, k: int, positions: np.ndarray, vectors: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Exact top ``k`` of ``positions`` by inner product of their ``vectors`` with ``query``, best first."""
    scores = vectors @ query
    top = np.argpartition(-scores, k - 1)[:k] if k < len(scores) else np.arange(len(scores))
    order = top[np.argsort(-scores[top], kind="stable")]
    return positions[order], scores[order]


class _Slot:
    """One query waiting in a :class:`_SearchBatcher`."""

    __slots__ = ("done", "error", "k", "keys", "query", "scores")

    def __init__(self, query: np.ndarray, k: int) -> None:
        self.query, self.k = query, k
        self.keys: np.ndarray | None = None
        self.scores: np.ndarray | None = None
        self.error: BaseException | None = None
        self.done = False


class _SearchBatcher:
    """Combines concurrent unfiltered searches into one FAISS call, without ever waiting for company.

    An exact search over 100k vectors is bound by memory bandwidth: the scan costs the same for one query
    as for several (28.6 ms for 1, 29.0 ms for 4 on this project's 2-core machine), so queries that arrive
    while a scan runs are answered by the next scan together. The first query in runs at once (no
    latency added at one client); the queries that queued behind it form the next batch, and so on.
    """

    def __init__(self, run: Callable[[np.ndarray, int], tuple[np.ndarray, np.ndarray]]) -> None:
        self._run = run
        self._cond = threading.Condition()
        self._pending: list[_Slot] = []
        self._busy = False

    def search(self, query: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        slot = _Slot(query, k)
        with self._cond:
            self._pending.append(slot)
            while self._busy and not slot.done:
                self._cond.wait()
            if not slot.done:  # the scanner is free: take every query waiting, this one included
                self._busy = True
                batch, self._pending = self._pending, []
        if not slot.done:
            self._scan(batch)
        if slot.error is not None:
            raise slot.error
        assert slot.keys is not None and slot.scores is not None
        return slot.keys, slot.scores

    def _scan(self, batch: list[_Slot]) -> None:
        try:
            k = max(s.k for s in batch)
            keys, scores = self._run(np.stack([s.query for s in batch]), k)
            for row, item in enumerate(batch):
                found = keys[row][: item.k] >= 0
                item.keys, item.scores = keys[row][: item.k][found], scores[row][: item.k][found]
        except BaseException as exc:  # noqa: BLE001 - every query of the batch fails with it, re-raised in each caller
            for item in batch:
                item.error = exc
        finally:
            with self._cond:
                for item in batch:
                    item.done = True
                self._busy = False
                self._cond.notify_all()


class _FlatIndex:
    """Exact search: ``IndexIDMap2(IndexFlatIP)``. Removals are real, so positions shift on delete."""

    def __init__(self, dimension: int) -> None:
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dimension))
        self.batcher = _SearchBatcher(self._search_many)

    def _search_many(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        with _one_omp_thread():
            scores, keys = self._index.search(queries, min(k, self.size))
        return keys, scores

    @property
    def size(self) -> int:
        return int(self._index.ntotal)

    def labels(self) -> np.ndarray:
        """The FAISS id stored at each position of the inner flat index."""
        return faiss.vector_to_array(self._index.id_map)

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        self._index.add_with_ids(vectors, keys)

    def remove(self, keys: np.ndarray) -> None:
        self._index.remove_ids(keys)

    def reconstruct(self, keys: np.ndarray) -> np.ndarray:
        return self._index.reconstruct_batch(keys)

    def search(self, query: np.ndarray, k: int, allowed: _Selection | None) -> tuple[np.ndarray, np.ndarray]:
        if allowed is None:  # the hot path: one plain FAISS search, nothing else
            scores, keys = self._index.search(query[None, :], min(k, self.size))
            found = keys[0] >= 0
            return keys[0][found], scores[0][found]
        inner = self._index.index
        if len(allowed) <= _EXACT_MAX_FLAT:
            positions, top = _exact_top_k(query, k, allowed.positions, inner.reconstruct_batch(allowed.positions))
        else:
            params = faiss.SearchParameters(sel=allowed.selector)
            scores, found_positions = inner.search(query[None, :], min(k, len(allowed)), params=params)
            found = found_positions[0] >= 0
            positions, top = found_positions[0][found], scores[0][found]
        return self.labels()[positions], top


class _HnswIndex:
    """Approximate search: ``IndexHNSWFlat`` (inner product) with tombstones for removed nodes.

    HNSW cannot remove nodes, so a removed or replaced chunk's node stays in the graph as a tombstone that
    searches exclude through an ``IDSelector``; :meth:`compact` rebuilds without them. Graph labels are
    node positions; ``_labels[position]`` is the node's FAISS id, or -1 for a tombstone.
    """

    def __init__(self, dimension: int, m: int, ef_search: int) -> None:
        self.dimension, self.m, self.ef_search = dimension, m, ef_search
        self._reset()

    def _reset(self) -> None:
        self._index = faiss.IndexHNSWFlat(self.dimension, self.m, faiss.METRIC_INNER_PRODUCT)
        self._labels = np.empty(0, dtype=np.int64)
        self._positions: dict[int, int] = {}
        self._tombstones = 0
        self._live: _Selection | None = None  # the non-tombstone positions, built on first need

    @property
    def size(self) -> int:
        return len(self._positions)

    @property
    def needs_compaction(self) -> bool:
        return self._tombstones > _COMPACT_RATIO * max(len(self._labels), 1)

    def labels(self) -> np.ndarray:
        """The FAISS id of each graph node, -1 for tombstones."""
        return self._labels

    def add(self, keys: np.ndarray, vectors: np.ndarray) -> None:
        start = len(self._labels)
        self._index.add(vectors)
        self._labels = np.concatenate([self._labels, keys])
        self._positions.update((key, start + i) for i, key in enumerate(keys.tolist()))
        self._live = None

    def remove(self, keys: np.ndarray) -> None:
        for key in keys.tolist():
            position = self._positions.pop(key, None)
            if position is not None:
                self._labels[position] = -1
                self._tombstones += 1
        self._live = None

    def _positions_of(self, keys: np.ndarray) -> np.ndarray:
        return np.fromiter((self._positions[key] for key in keys.tolist()), dtype=np.int64, count=len(keys))

    def reconstruct(self, keys: np.ndarray) -> np.ndarray:
        return self._index.reconstruct_batch(self._positions_of(keys))

    def search(self, query: np.ndarray, k: int, allowed: _Selection | None) -> tuple[np.ndarray, np.ndarray]:
        if allowed is not None and len(allowed) <= _EXACT_MAX_HNSW:
            positions, scores = _exact_top_k(
                query, k, allowed.positions, self._index.reconstruct_batch(allowed.positions)
            )
            return self._labels[positions], scores
        if allowed is None and self._tombstones:
            if self._live is None:
                self._live = _Selection(self._labels >= 0)
            allowed = self._live
        wanted = min(k, self.size if allowed is None else len(allowed))
        params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, k))
        if allowed is not None:
            params.sel = allowed.selector
        scores, positions = self._index.search(query[None, :], wanted, params=params)
        found = positions[0] >= 0
        if found.sum() < wanted:
            # The graph walk ran out of reachable allowed nodes; exactness beats returning too few.
            candidates = allowed.positions if allowed is not None else np.arange(len(self._labels))
            positions, scores = _exact_top_k(query, k, candidates, self._index.reconstruct_batch(candidates))
            return self._labels[positions], scores
        return self._labels[positions[0][found]], scores[0][found]

    def compact(self) -> None:
        """Rebuild the graph from the live nodes only."""
        keys = self._labels[self._labels >= 0]
        log.info("compacting the HNSW graph: %d live nodes, %d tombstones", len(keys), self._tombstones)
        vectors = self.reconstruct(keys)
        self._reset()
        if len(keys):
            self.add(keys, vectors)

    def save(self, file: Path) -> None:
        """Write the graph and its labels to ``file`` atomically (temporary file, then rename)."""
        tmp = file.with_name(file.name + ".tmp")
        with open(tmp, "wb") as out:
            np.savez(out, index=faiss.serialize_index(self._index), labels=self._labels, m=np.int64(self.m))
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, file)

    def load(self, file: Path, expected_keys: np.ndarray) -> bool:
        """Adopt the graph cached in ``file`` if it was built with these settings over exactly these ids."""
        try:
            with np.load(file) as data:
                m, labels = int(data["m"]), data["labels"]
                index = faiss.deserialize_index(data["index"])
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            log.warning("ignoring unreadable HNSW cache %s: %s", file, exc)
            return False
        live = labels[labels >= 0]
        if (
            m != self.m
            or not isinstance(index, faiss.IndexHNSWFlat)
            or index.d != self.dimension
            or index.ntotal != len(labels)
            or not np.array_equal(np.sort(live), np.sort(expected_keys))
        ):
            log.info("HNSW cache %s does not match the stored chunks or settings; rebuilding", file)
            return False
        self._reset()
        self._index, self._labels = index, labels
        self._positions = dict(zip(live.tolist(), np.flatnonzero(labels >= 0).tolist()))
        self._tombstones = len(labels) - len(live)
        return True


class FaissStore:
    """The embedded default :class:`~rag.stores.base.VectorStore`: FAISS in memory, SQLite on disk.

    Scores are inner products of L2-normalised vectors (cosine); vectors are normalised on the way in.
    Writes are visible to this instance's searches at once and durable after :meth:`flush`. One process
    writes at a time (SQLite's write lock); another instance reading the same folder sees the state that
    was flushed when it opened.

    Args:
        path: the store folder; created if missing.
        dimension: vector length; must equal the one the folder was built with.
        index: ``"flat"`` for exact search, ``"hnsw"`` for an approximate graph (large corpora).
        hnsw_m: HNSW links per node (build-time; changing it rebuilds the graph at open).
        ef_search: HNSW search breadth; higher is better recall and slower.
        read_only: open for searching only: no file is created or written (not even the HNSW cache), a
            missing folder reads as an empty store, and a read-only folder works.

    Raises:
        ConfigError: a parameter is out of range.
        IndexMismatchError: the folder holds vectors of another dimension or another storage format.
        StoreError: the folder cannot be opened (unreadable, corrupt, locked by a writer).
    """

    def __init__(
        self,
        path: Path,
        dimension: int,
        index: Literal["flat", "hnsw"] = "flat",
        hnsw_m: int = 32,
        ef_search: int = 128,
        read_only: bool = False,
    ) -> None:
        if dimension <= 0:
            raise ConfigError(f"vector dimension must be positive, got {dimension}")
        if index not in ("flat", "hnsw"):
            raise ConfigError(f"unknown FAISS index type {index!r}; use 'flat' or 'hnsw'")
        if hnsw_m < 2 or ef_search < 1:
            raise ConfigError(f"hnsw_m must be >= 2 and ef_search >= 1, got {hnsw_m} and {ef_search}")
        self.path = Path(path)
        self.dimension = dimension
        self.index_kind = index
        self.read_only = read_only
        self._lock = threading.RLock()
        self._index: _FlatIndex | _HnswIndex = (
            _FlatIndex(dimension) if index == "flat" else _HnswIndex(dimension, hnsw_m, ef_search)
        )
        self._chunk_ids: dict[int, str] = {}
        self._metadata: dict[int, dict[str, Any]] = {}
        # Filter evaluation over index positions; both depend on positions, so every write drops them.
        self._filter_rows: MetadataIndex | None = None
        self._selections: OrderedDict[str, _Selection] = OrderedDict()
        self._in_transaction = False
        # The data generation the in-memory index reflects (None once another process's commit is mixed
        # in), and the one the HNSW cache file on disk reflects.
        self._generation: int | None = None
        self._cached_generation: int | None = None
        if not read_only:
            self.path.mkdir(parents=True, exist_ok=True)
        self._conn: sqlite3.Connection | None = self._connect()
        try:
            with sqlite_errors(self.path / DB_NAME, derived=True):
                self._load()
        except ValueError as exc:  # unreadable metadata JSON
            self._conn.close()
            raise StoreError(f"cannot read the vector store at {self.path}: {exc}; {REBUILD_HINT}") from exc
        except BaseException:
            self._conn.close()
            raise

    # -- opening ------------------------------------------------------------------------------------

    def _connect(self) -> sqlite3.Connection:
        file = self.path / DB_NAME
        # Autocommit mode: transactions are opened and committed explicitly (see _write and flush).
        conn = open_sqlite(file, read_only=self.read_only, derived=True)
        if conn is None:  # a reader before anything was stored: empty, and nothing written to disk
            conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False)
        with sqlite_errors(file, derived=True):
            if not self.read_only:
                # FULL costs one extra fsync per commit; commits happen once per flush, so durability is cheap.
                conn.execute("PRAGMA synchronous=FULL")
            if conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'meta'").fetchone() is None:
                conn.execute("BEGIN IMMEDIATE")
                for statement in filter(None, (s.strip() for s in _SCHEMA.split(";"))):
                    conn.execute(statement)
                conn.executemany(
                    "INSERT OR IGNORE INTO meta VALUES (?, ?)",
                    [("dimension", str(self.dimension)), ("format", FORMAT_VERSION), ("generation", "0")],
                )
                conn.execute("COMMIT")
            meta = dict(conn.execute("SELECT key, value FROM meta"))
        if meta.get("format") != FORMAT_VERSION or meta.get("dimension") != str(self.dimension):
            conn.close()
            raise IndexMismatchError(
                f"the vector store at {self.path} holds {meta.get('dimension')}-dimensional vectors (format "
                f"{meta.get('format')}) but {self.dimension}-dimensional ones (format {FORMAT_VERSION}) were "
                f"requested, e.g. after changing the embedding model; {REBUILD_HINT}"
            )
        return conn

    def _load(self) -> None:
        """Read the flushed state (one consistent snapshot) and build or adopt the FAISS index."""
        assert self._conn is not None
        self._conn.execute("BEGIN")  # a read transaction: every query below sees the same commit
        try:
            generation = self._generation = self._stored_generation()
            for key, chunk_id, metadata in self._conn.execute(
                "SELECT id, chunk_id, metadata FROM chunks ORDER BY id"
            ):
                self._chunk_ids[key] = chunk_id
                self._metadata[key] = json.loads(metadata)
            keys = np.fromiter(self._chunk_ids, dtype=np.int64, count=len(self._chunk_ids))
            cache = self._cache_file(generation)
            if isinstance(self._index, _HnswIndex) and cache.exists() and self._index.load(cache, keys):
                self._cached_generation = generation
            elif len(keys):
                log.info("building the %s index over %d vectors in %s", self.index_kind, len(keys), self.path)
                self._index.add(keys, self._read_vectors(len(keys)))
        finally:
            self._conn.execute("COMMIT")
        self._save_hnsw_cache()

    def _read_vectors(self, count: int) -> np.ndarray:
        assert self._conn is not None
        blob = b"".join(row[0] for row in self._conn.execute("SELECT vector FROM chunks ORDER BY id"))
        if len(blob) != count * self.dimension * 4:
            raise StoreError(f"the vector store at {self.path} has malformed vector rows; {REBUILD_HINT}")
        return np.frombuffer(blob, dtype=np.float32).reshape(count, self.dimension)

    def _stored_generation(self) -> int:
        assert self._conn is not None
        return int(self._conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0])

    def _cache_file(self, generation: int) -> Path:
        return self.path / f"hnsw-{generation}.npz"

    def _save_hnsw_cache(self) -> None:
        """Write the HNSW graph for the current generation if the cache is stale, and drop older caches.

        Skipped when the in-memory graph is not exactly the stored state (another process committed since
        this one opened, or writes are pending): a cache must never claim a generation it does not hold.
        """
        if not isinstance(self._index, _HnswIndex) or self._in_transaction or self.read_only:
            return
        generation = self._stored_generation()
        if self._generation != generation:
            return
        if self._cached_generation != generation:
            self._index.save(self._cache_file(generation))
            self._cached_generation = generation
        current = self._cache_file(generation).name
        for old in self.path.glob("hnsw-*.npz*"):
            if old.name != current:
                old.unlink(missing_ok=True)

    # -- writing ------------------------------------------------------------------------------------

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """Run one call's statements inside the open transaction, all or nothing (a savepoint)."""
        if self._conn is None:
            raise StoreError(f"the vector store at {self.path} is closed")
        if self.read_only:
            raise StoreError(f"the vector store at {self.path} was opened read-only")
        with sqlite_errors(self.path / DB_NAME, derived=True):
            if not self._in_transaction:
                self._conn.execute("BEGIN IMMEDIATE")
                self._in_transaction = True
            self._conn.execute("SAVEPOINT write_call")
            try:
                yield self._conn
            except BaseException:
                self._undo_call()
                raise
            self._conn.execute("RELEASE write_call")
        self._forget_selections()

    def _undo_call(self) -> None:
        """Roll back the failed call's statements; if SQLite already aborted the transaction (disk full),
        the in-memory index no longer matches the database, so it is reloaded from the last flush."""
        assert self._conn is not None
        try:
            self._conn.execute("ROLLBACK TO write_call")
            self._conn.execute("RELEASE write_call")
            return
        except sqlite3.Error:
            pass
        try:
            self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass
        self._in_transaction = False
        self._reload()

    def _reload(self) -> None:
        """Drop the in-memory state and read the last flushed state again."""
        self._chunk_ids.clear()
        self._metadata.clear()
        self._index = _FlatIndex(self.dimension) if self.index_kind == "flat" else _HnswIndex(
            self.dimension, self._index.m, self._index.ef_search  # type: ignore[union-attr]
        )
        self._forget_selections()
        self._load()

    def _forget_selections(self) -> None:
        self._filter_rows = None
        self._selections.clear()

    def upsert(self, chunks: list[StoredChunk]) -> None:
        """Insert or replace chunks by id (the last of repeated ids in one call wins).

        Raises:
            IndexMismatchError: a vector has another dimension than the store.
            StoreError: a vector is zero or not finite, metadata is not JSON-serialisable, two chunk ids
                collide on their 63-bit FAISS id, or the database cannot be written.
        """
        batch = list({chunk.chunk_id: chunk for chunk in chunks}.values())
        if not batch:
            return
        vectors = unit_rows([c.vector for c in batch], self.dimension, "upsert")
        keys = np.fromiter((faiss_id(c.chunk_id) for c in batch), dtype=np.int64, count=len(batch))
        metadata_json = [self._metadata_json(c) for c in batch]
        with self._lock:
            if len(np.unique(keys)) != len(keys):
                raise StoreError("two chunk ids in one upsert share a FAISS id; rename one of them")
            for key, chunk in zip(keys.tolist(), batch):
                known = self._chunk_ids.get(key)
                if known is not None and known != chunk.chunk_id:
                    raise StoreError(f"chunk ids {known!r} and {chunk.chunk_id!r} share a FAISS id; rename one")
            rows = [
                (key, c.chunk_id, vec.tobytes(), c.text, meta)
                for key, c, vec, meta in zip(keys.tolist(), batch, vectors, metadata_json)
            ]
            with self._write() as db:
                db.executemany(
                    "INSERT OR REPLACE INTO chunks (id, chunk_id, vector, text, metadata) VALUES (?, ?, ?, ?, ?)", rows
                )
            replaced = np.fromiter((k for k in keys.tolist() if k in self._chunk_ids), dtype=np.int64)
            if len(replaced):
                self._index.remove(replaced)
            self._index.add(keys, vectors)
            for key, chunk, meta in zip(keys.tolist(), batch, metadata_json):
                self._chunk_ids[key] = chunk.chunk_id
                # Parsed back from JSON so that searches see exactly what a reopened store will see.
                self._metadata[key] = json.loads(meta)

    @staticmethod
    def _metadata_json(chunk: StoredChunk) -> str:
        try:
            return json.dumps(chunk.metadata, ensure_ascii=False, sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"metadata of chunk {chunk.chunk_id!r} cannot be stored as JSON: {exc}; use strings, numbers, "
                "booleans, lists and ISO-8601 date strings"
            ) from exc

    def delete(self, chunk_ids: list[str]) -> None:
        """Remove chunks by id; unknown ids are ignored."""
        with self._lock:
            keys = [k for cid in dict.fromkeys(chunk_ids) if self._chunk_ids.get(k := faiss_id(cid)) == cid]
            if not keys:
                return
            with self._write() as db:
                db.executemany("DELETE FROM chunks WHERE id = ?", [(k,) for k in keys])
            self._index.remove(np.asarray(keys, dtype=np.int64))
            for key in keys:
                del self._chunk_ids[key]
                del self._metadata[key]

    def flush(self) -> None:
        """Commit every write since the last flush in one transaction, with a new generation number.

        Also compacts the HNSW graph once tombstones pass 20% of its nodes (in memory; the graph file is
        written at :meth:`close`, so frequent flushes stay cheap).

        Raises:
            StoreError: the commit failed (the previous flushed state stays intact on disk).
        """
        with self._lock:
            if self._conn is None or not self._in_transaction:
                return
            try:
                stored = self._stored_generation()
                self._conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(stored + 1),))
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                # The flushed state on disk is intact; this instance's unflushed writes are dropped with it.
                try:
                    self._conn.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                self._in_transaction = False
                with sqlite_errors(self.path / DB_NAME, derived=True):
                    self._reload()
                raise StorageError(describe_sqlite_error(self.path / DB_NAME, exc, derived=True)) from exc
            self._in_transaction = False
            if stored != self._generation:
                log.warning(
                    "another process wrote to the vector store at %s since it was opened here; this instance "
                    "does not see those writes until it is reopened",
                    self.path,
                )
            self._generation = stored + 1 if stored == self._generation else None
            if isinstance(self._index, _HnswIndex) and self._index.needs_compaction:
                self._index.compact()
                self._forget_selections()

    def close(self) -> None:
        """Flush, write the HNSW graph cache if it is stale, and close the database; idempotent."""
        with self._lock:
            if self._conn is None:
                return
            try:
                self.flush()
                try:
                    self._save_hnsw_cache()
                except OSError as exc:  # only a cache: the next open rebuilds it
                    log.warning("could not write the HNSW cache in %s: %s", self.path, exc)
            finally:
                self._conn.close()
                self._conn = None

    def drop(self) -> None:
        """Delete every stored chunk and the store's files, then close (for ``rag ingest --rebuild``)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
            if self.read_only:
                raise StoreError(f"the vector store at {self.path} was opened read-only")
            for file in list(self.path.glob(f"{DB_NAME}*")) + list(self.path.glob("hnsw-*.npz*")):
                file.unlink(missing_ok=True)
            self._chunk_ids.clear()
            self._metadata.clear()

    def __enter__(self) -> FaissStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------

    def search(self, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` chunks with the highest cosine similarity to ``vector`` that satisfy ``filter``.

        The filter is evaluated over the cached metadata first and the search then runs over the matching
        chunks only, so a selective filter still yields ``k`` results when ``k`` chunks match.

        Raises:
            ValueError: ``k`` is not positive.
            IndexMismatchError: ``vector`` has another dimension than the store.
            StoreError: ``vector`` is zero or not finite.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        query = unit_rows(vector, self.dimension, "the query")[0]
        with self._lock:
            if not self._chunk_ids:
                return []
            allowed = self._allowed(filter) if filter else None
            if allowed is not None and not len(allowed):
                return []
            if not self.read_only:  # a writable index may change under a search: one at a time
                with _one_omp_thread():
                    keys, scores = self._index.search(query, k, allowed)
                return [ScoredId(self._chunk_ids[int(key)], float(score)) for key, score in zip(keys, scores)]
        # A read-only index never changes, and FAISS searches a constant index from many threads at once
        # (it releases the GIL): concurrent API requests run in parallel instead of queueing here, and
        # concurrent unfiltered exact searches share one scan.
        if allowed is None and isinstance(self._index, _FlatIndex):
            keys, scores = self._index.batcher.search(query, k)
        else:
            with _one_omp_thread():
                keys, scores = self._index.search(query, k, allowed)
        return [ScoredId(self._chunk_ids[int(key)], float(score)) for key, score in zip(keys, scores)]

    def _allowed(self, filter: Filter) -> _Selection:
        """The index positions whose metadata satisfies ``filter``, memoised until the next write."""
        # Keyed by repr, not by the Filter: dataclass equality has True == 1, which match different values.
        key = repr(filter)
        selection = self._selections.get(key)
        if selection is None:
            if self._filter_rows is None:
                # Tombstones get no metadata: a condition on a missing field never matches.
                self._filter_rows = MetadataIndex([self._metadata.get(k, {}) for k in self._index.labels().tolist()])
            selection = self._selections[key] = _Selection(self._filter_rows.mask(filter))
            if len(self._selections) > _FILTER_CACHE_SIZE:
                self._selections.popitem(last=False)
        else:
            self._selections.move_to_end(key)
        return selection

    def get_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored (normalised) vectors of the given ids; unknown ids are left out."""
        with self._lock:
            found = {cid: key for cid in chunk_ids if self._chunk_ids.get(key := faiss_id(cid)) == cid}
            if not found:
                return {}
            vectors = self._index.reconstruct(np.fromiter(found.values(), dtype=np.int64, count=len(found)))
            return {cid: vectors[i].copy() for i, cid in enumerate(found)}

    def ids(self) -> set[str]:
        """Every stored chunk id, flushed or not."""
        with self._lock:
            return set(self._chunk_ids.values())

    def count(self) -> int:
        """Number of stored chunks, flushed or not."""
        return len(self._chunk_ids)

    def size_bytes(self) -> int:
        """Bytes of the files in the store folder (database, its WAL, and the HNSW cache)."""
        return sum(f.stat().st_size for f in self.path.iterdir() if f.is_file())
