"""Shared state in Postgres: what API replicas with separate data directories must agree on.

With a server store, the vectors (and, with ``retrieval.keyword = "auto"``, the keyword side) already live
in the engine. What a replica otherwise keeps in its ``data_dir`` moves here, so that any number of
``rag serve`` processes on any machines serve the same collections consistently:

* each collection's **catalog** (files and content hashes, documents, chunks, the generation, the journal)
  in a schema of its own, ``rag_catalog_<store.collection>``, with the same tables as ``catalog.sqlite``;
* the **writer lock**, a session-level advisory lock (the server releases it when the holder dies);
* the **collections**, **API keys** and **ingest job records**, in the schema ``rag_state``.

Which database: :func:`state_target` reads ``[state]``. Only *derived* files stay local to a replica (a
local BM25 index under ``retrieval.keyword = "local"``, upload staging, the embedded LLM), and they are
stamped with the catalog generation, so they are rebuilt when another replica commits.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.catalog import Catalog, ChunkRows
from rag.core.errors import ConfigError, StorageError
from rag.core.lock import wait_for_lock
from rag.core.settings import Settings

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rag-platform[pgvector]'"
STATE_SCHEMA = "rag_state"
# Serialises schema creation: two replicas starting at once would race on CREATE ... IF NOT EXISTS.
_DDL_LOCK = 0x7261675F646464  # "rag_ddd"

_CATALOG_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, file_hash TEXT NOT NULL, size BIGINT NOT NULL, mtime DOUBLE PRECISION NOT NULL,
    ingested_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY, path TEXT NOT NULL, content_hash TEXT NOT NULL, title TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_path ON documents(path);
CREATE TABLE IF NOT EXISTS chunks (
    seq BIGSERIAL, chunk_id TEXT PRIMARY KEY, doc_id TEXT NOT NULL, ord INTEGER NOT NULL, text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS chunks_doc ON chunks(doc_id);
CREATE TABLE IF NOT EXISTS pending (chunk_id TEXT PRIMARY KEY);
"""

_STATE_DDL = f"""
CREATE SCHEMA IF NOT EXISTS {STATE_SCHEMA};
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.collections (
    name TEXT PRIMARY KEY, settings TEXT NOT NULL, created TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.keys (
    id TEXT PRIMARY KEY, hash TEXT NOT NULL, collection TEXT NOT NULL, role TEXT NOT NULL,
    name TEXT NOT NULL, created TEXT NOT NULL, revoked TEXT
);
CREATE TABLE IF NOT EXISTS {STATE_SCHEMA}.jobs (
    id TEXT PRIMARY KEY, collection TEXT NOT NULL, record TEXT NOT NULL, updated TEXT NOT NULL
);
"""


@dataclass(frozen=True, slots=True)
class StateTarget:
    """The shared database: its URL and password (never logged)."""

    url: str
    password: str | None = None

    @property
    def where(self) -> str:
        """The URL with any password hidden, for messages."""
        url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", self.url)
        return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


def state_target(settings: Settings) -> StateTarget | None:
    """The shared database ``settings`` name, or ``None`` for local files in ``data_dir``.

    ``state.backend = "auto"`` shares state when ``state.url`` is set, or when the pgvector store has a
    ``store.url`` (the same server then holds both); a private embedded Postgres is not shared.

    Raises:
        ConfigError: ``postgres`` with no URL to use, or shared state with a store whose vectors are local
            to one machine (FAISS, Qdrant on disk, pgvector's embedded server).
    """
    state, store = settings.state, settings.store
    if state.backend == "local":
        return None
    url = state.url or None  # an empty RAG_STATE__URL (compose's default) means unset
    password = None
    if url is None and store.kind == "pgvector" and store.url:
        url = store.url
    if url is not None and url == store.url and store.api_key is not None:
        password = store.api_key.get_secret_value()
    if url is None:
        if state.backend == "postgres":
            raise ConfigError(
                "state.backend = 'postgres' needs a database: set state.url (RAG_STATE__URL) to a Postgres URL, "
                "or use the pgvector store with a store.url"
            )
        return None
    if not url.startswith(("postgresql://", "postgres://")):
        raise ConfigError(f"state.url must be a postgresql:// URL, got {StateTarget(url).where!r}")
    if not store.url:
        raise ConfigError(
            f"shared state (state.url) needs a server store, but the {store.kind} store keeps its vectors on this "
            "machine; set store.url to a server (pgvector, qdrant, opensearch), or state.backend = 'local'"
        )
    return StateTarget(url, password)


def _psycopg():  # noqa: ANN202 - the module, imported on first use
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(f"shared state in Postgres needs psycopg: {INSTALL_HINT}") from exc
    return psycopg


def connect(target: StateTarget, *, schema: str | None = None, application: str = "rag") -> Any:
    """An autocommit psycopg connection to ``target`` (``search_path`` set to ``schema`` if given).

    Raises:
        StorageError: the server cannot be reached or refuses the connection.
    """
    psycopg = _psycopg()
    options = f"-c search_path={schema}" if schema else None
    try:
        return psycopg.connect(
            target.url, autocommit=True, password=target.password, options=options, application_name=application,
        )
    except psycopg.Error as exc:
        raise StorageError(
            f"cannot connect to the shared state database at {target.where}: {exc}; check state.url "
            "(RAG_STATE__URL) or store.url and that the server is running"
        ) from exc


@contextmanager
def pg_errors(where: str) -> Iterator[None]:
    """Turn any psycopg error raised inside into a :class:`StorageError` naming ``where``."""
    psycopg = _psycopg()
    try:
        yield
    except psycopg.Error as exc:
        raise StorageError(f"the shared state database at {where} failed: {exc}") from exc


class PgDb:
    """A psycopg connection that takes the catalog's SQL (``?`` placeholders), as ``sqlite3`` would."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.conn.execute(sql.replace("?", "%s"), tuple(params))

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        rows = list(rows)
        if rows:
            with self.conn.cursor() as cur:
                cur.executemany(sql.replace("?", "%s"), rows)


def ensure_schema(conn: Any, ddl: str) -> None:
    """Run ``ddl`` (idempotent) in one transaction, serialised with every other process doing the same."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_DDL_LOCK,))
        for statement in filter(str.strip, ddl.split(";")):
            conn.execute(statement)


def catalog_schema(namespace: str) -> str:
    """The Postgres schema of the catalog of store collection ``namespace`` (a valid identifier)."""
    clean = re.sub(r"[^a-z0-9_]", "_", namespace.lower())
    if clean != namespace or len(clean) > 40:
        clean = f"{clean[:30]}_{hashlib.sha256(namespace.encode()).hexdigest()[:8]}"
    return f"rag_catalog_{clean}"


class PostgresCatalog(Catalog):
    """The :class:`~rag.core.catalog.Catalog` of one collection, in a shared Postgres database.

    Same tables, same SQL and same guarantees as ``catalog.sqlite`` (writes commit together or not at all;
    :meth:`chunk_rows` reads one committed state), in the schema :func:`catalog_schema` names. Readers do
    not create anything: before the first ingest they read an empty catalog.

    Args:
        target: the shared database.
        namespace: the collection's ``store.collection``.
        read_only: open for reading only.

    Raises:
        StorageError: the database cannot be reached.
    """

    _write_order = "seq"

    def __init__(self, target: StateTarget, namespace: str, *, read_only: bool = False) -> None:
        self.target, self.namespace, self.read_only = target, namespace, read_only
        self.schema = catalog_schema(namespace)
        self.path = Path(self.schema)  # not a file: kept for code that names the catalog
        self.is_placeholder = False
        self._lock = threading.RLock()
        self._psycopg = _psycopg()
        self._conn = connect(target, schema=self.schema, application=f"rag catalog {namespace}")
        self._db = PgDb(self._conn)
        if not read_only:
            with self._errors():
                ensure_schema(self._conn, f"CREATE SCHEMA IF NOT EXISTS {self.schema};{_CATALOG_DDL}")

    @property
    def where(self) -> str:
        return f"the shared catalog {self.schema} at {self.target.where}"

    def _live(self) -> PgDb:
        """The connection, opened again if the server dropped it (a restart, a failover): a long-lived
        API replica must not fail every request after the database came back."""
        if self._conn.broken:
            log.warning("the connection to %s was lost; connecting again", self.where)
            self._conn = connect(self.target, schema=self.schema, application=f"rag catalog {self.namespace}")
            self._db = PgDb(self._conn)
        return self._db

    def _errors(self) -> AbstractContextManager[None]:
        return pg_errors(self.target.where)

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[Any]:
        if self.read_only:
            raise StorageError(f"{self.where} was opened read-only")
        with self._lock, self._errors():
            db = self._live()
            with db.conn.transaction():
                yield db

    def _read(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        with self._lock, self._errors():
            for attempt in (1, 2):
                try:
                    return self._live().execute(sql, params).fetchall()
                except self._psycopg.errors.UndefinedTable:
                    return []  # no ingest has created the schema yet: an empty catalog
                except self._psycopg.OperationalError:
                    if attempt == 2 or not self._conn.broken:
                        raise
                    # the server dropped the session (restart, failover): a read is safe to repeat
            raise AssertionError("unreachable")

    @contextmanager
    def _snapshot(self) -> Iterator[Any]:
        with self._lock, self._errors():
            db = self._live()
            db.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
            try:
                yield db
            finally:
                if not db.conn.broken:
                    db.execute("COMMIT")

    def chunk_rows(self) -> ChunkRows:
        try:
            return super().chunk_rows()
        except StorageError as exc:
            if isinstance(exc.__cause__, self._psycopg.errors.UndefinedTable):
                return ChunkRows(0, [], [], [])  # no ingest has created the schema yet
            raise

    def drop(self) -> None:
        """Forget the whole catalog (a rebuild, or the collection's deletion); the caller holds the lock."""
        with self._lock, self._errors():
            self._conn.execute(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE")


class PostgresWriterLock:
    """The writer lock of one collection across replicas: a session-level advisory lock.

    Held on a connection of its own for the whole write; the server releases it when that connection
    closes, so a writer killed with ``SIGKILL`` never leaves it behind. Same interface and messages as
    :class:`~rag.core.lock.WriterLock`.

    Raises:
        IndexBusyError: another replica holds it and ``wait`` is false, or ``timeout`` ran out.
        StorageError: the database cannot be reached.
    """

    def __init__(
        self,
        target: StateTarget,
        namespace: str,
        purpose: str = "ingest",
        *,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.target, self.namespace, self.purpose = target, namespace, purpose
        self.wait, self.on_wait, self.timeout = wait, on_wait, timeout
        digest = hashlib.sha256(f"rag writer {namespace}".encode()).digest()
        self.key = int.from_bytes(digest[:8], "big", signed=True)
        self._conn: Any = None

    def __enter__(self) -> PostgresWriterLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._conn is not None

    def acquire(self) -> None:
        if self._conn is not None:
            return
        label = f"rag writer {os.getpid()}@{os.uname().nodename} {self.purpose}"
        conn = connect(self.target, application=label[:63])
        try:
            with pg_errors(self.target.where):
                self._lock(conn)
        except BaseException:
            conn.close()
            raise
        self._conn = conn

    def _try(self, conn: Any) -> bool:
        return bool(conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()[0])

    def _lock(self, conn: Any) -> None:
        if self._try(conn):
            return
        message = f"another process ({self.holder(conn)}) is writing to collection {self.namespace!r}"
        wait_for_lock(lambda: self._try(conn), message, wait=self.wait, on_wait=self.on_wait, timeout=self.timeout)

    def holder(self, conn: Any) -> str:
        """``pid N@host, ingest`` as the holder's connection names itself, or ``unknown``."""
        row = conn.execute(
            "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
            "WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s LIMIT 1",
            ((self.key >> 32) & 0xFFFFFFFF, self.key & 0xFFFFFFFF),
        ).fetchone()
        if row is None or not row[0].startswith("rag writer "):
            return "unknown"
        who, _, purpose = row[0].removeprefix("rag writer ").partition(" ")
        return f"pid {who}, {purpose}"

    def release(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        conn.close()  # ends the session, and with it the lock


class SharedRecords:
    """The ``rag_state`` tables (collections, API keys, job records) of one shared database.

    One connection, opened on first use and shared by the threads of a process.
    """

    def __init__(self, target: StateTarget) -> None:
        self.target = target
        self._lock = threading.RLock()
        self._conn: Any = None

    def _connection(self) -> Any:
        if self._conn is None or self._conn.broken:  # not yet, or dropped by the server: (re)connect
            conn = connect(self.target, application="rag state")
            with pg_errors(self.target.where):
                ensure_schema(conn, _STATE_DDL)
            self._conn = conn
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement (``?`` placeholders) in its own transaction; the rows it returns, if any."""
        with self._lock, pg_errors(self.target.where):
            cur = PgDb(self._connection()).execute(sql.replace("{state}", STATE_SCHEMA), params)
            return cur.fetchall() if cur.description is not None else [(cur.rowcount,)]

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    # -- collections --------------------------------------------------------------------------------

    def collection_names(self) -> list[str]:
        return [r[0] for r in self.execute("SELECT name FROM {state}.collections ORDER BY name")]

    def collection_settings(self, name: str) -> dict[str, Any] | None:
        rows = self.execute("SELECT settings FROM {state}.collections WHERE name = ?", (name,))
        return json.loads(rows[0][0]) if rows else None

    def add_collection(self, name: str, settings: dict[str, Any], created: str) -> bool:
        """Record a collection; ``False`` if one of that name exists already."""
        rows = self.execute(
            "INSERT INTO {state}.collections(name, settings, created) VALUES (?, ?, ?) "
            "ON CONFLICT(name) DO NOTHING",
            (name, json.dumps(settings, sort_keys=True), created),
        )
        return rows[0][0] == 1

    def remove_collection(self, name: str) -> None:
        self.execute("DELETE FROM {state}.collections WHERE name = ?", (name,))

    # -- job records --------------------------------------------------------------------------------

    def save_job(self, record: dict[str, Any], updated: str) -> None:
        self.execute(
            "INSERT INTO {state}.jobs(id, collection, record, updated) VALUES (?, ?, ?, ?) "
            "ON CONFLICT(id) DO UPDATE SET record = excluded.record, updated = excluded.updated",
            (record["id"], record["collection"], json.dumps(record), updated),
        )

    def load_job(self, job_id: str) -> dict[str, Any] | None:
        rows = self.execute("SELECT record FROM {state}.jobs WHERE id = ?", (job_id,))
        return json.loads(rows[0][0]) if rows else None
