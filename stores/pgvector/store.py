"""The pgvector store's lifecycle (schema, migrations, transactions) and :class:`~rag.stores.base.VectorStore`
side, and its registry factory.

Filter translation is in :mod:`~rag.stores.pgvector.filters`, the full-text keyword side in
:mod:`~rag.stores.pgvector.keyword` and the embedded server in :mod:`~rag.stores.pgvector.server`;
:mod:`rag.stores.pgvector` describes the whole backend.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from rag.core.errors import REBUILD_HINT, ConfigError, IndexMismatchError, StoreError
from rag.core.filters import Filter
from rag.core.settings import StoreSettings
from rag.core.types import ScoredId
from rag.stores.base import StoredChunk, store_options, unit_rows
from rag.stores.pgvector.filters import FilterSql, MatchesNothing, date_index
from rag.stores.pgvector.keyword import DEFAULT_NORMALIZATION, DL_SQL, QUOTED_LEXEME, TF_SQL, PostgresKeywordIndex
from rag.stores.pgvector.server import INSTALL_HINT, EmbeddedPostgres

if TYPE_CHECKING:
    import psycopg

log = logging.getLogger(__name__)

# A collection becomes a (quoted) table name; 48 characters leave room for the index name's suffix.
_COLLECTION_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_\-]{0,47}$")
# pgvector's HNSW index takes vectors of up to 2,000 dimensions.
MAX_DIMENSION = 2000
# Candidate sets up to this size are scanned exactly (FaissStore's HNSW mode uses 16,384).
EXACT_SEARCH_MAX = 10_000
# Row counts used to choose between an exact scan and the graph are re-read after this many seconds
# (and after every write of this instance), so other processes' writes are seen.
_COUNT_TTL = 5.0
_UPSERT_BATCH = 500
# A writer that changed at least this many rows vacuums the postings when it closes: index-only scans need
# the visibility map; until autovacuum gets there, keyword search reads table pages too and is slower.
VACUUM_AFTER_ROWS = 1000
_EXTRA_OPTIONS = ("ef_construction", "exact_search_max", "database", "text_search_config")
DEFAULT_TEXT_SEARCH_CONFIG = "english"
# The text search config a tsv column was generated with, from its expression (pg_get_expr).
_TSV_CONFIG_RE = re.compile(r"to_tsvector\('((?:[^']|'')+)'::regconfig")


def _psycopg() -> tuple[Any, Any]:
    """Import psycopg on first use, so the package works without it."""
    try:
        import psycopg
        from psycopg import sql
    except ImportError as exc:
        raise StoreError(f"the pgvector store needs psycopg: {INSTALL_HINT}") from exc
    return psycopg, sql


def redact(url: str) -> str:
    """``url`` with any password replaced by ``***`` (for messages and logs)."""
    url = re.sub(r"(://[^/@:]*:)[^/@]*@", r"\1***@", url)
    return re.sub(r"(?i)(password=)[^&\s]*", r"\1***", url)


class PgVectorStore:
    """A :class:`~rag.stores.base.VectorStore` on one Postgres table with pgvector's HNSW index.

    Args:
        dimension: vector length (at most 2,000, pgvector's HNSW limit); must equal the table's.
        url: a Postgres server (``postgresql://user@host/db``); with ``None``, an embedded server in
            ``data_dir / "postgres"`` that the store starts and lets go of at :meth:`close`.
        data_dir: the index's data directory (needed when ``url`` is None).
        collection: the table's name; created on first use.
        read_only: search only: create nothing (a missing cluster or table reads as an empty store), and
            refuse writes.
        hnsw_m, ef_construction: the HNSW index's build parameters (used when it is created).
        ef_search: ``hnsw.ef_search`` for this store's searches (raised to ``k`` for larger ``k``).
        exact_search_max: candidate sets up to this many rows are searched exactly; 0 always uses the graph.
        password: the server's password, if not in ``url``; never logged.
        database: the embedded server's database name.
        text_search_config: the Postgres text search configuration (``english``, ``simple``, ``german``,
            ...) that analyses chunk text and queries for :meth:`keyword_index`, used when the ``tsv``
            column is made; searches always use the column's own.
        any_dimension: open an existing table whatever its dimension (only to :meth:`drop` it).

    Raises:
        ConfigError: an argument is out of range or the collection name is not usable as a table name.
        StoreError: psycopg or the embedded server is missing, or the server is unreachable.
        IndexMismatchError: the table exists with another dimension.
    """

    def __init__(  # noqa: PLR0913 - one keyword per store option, as the registry's factory passes them
        self,
        dimension: int,
        *,
        url: str | None = None,
        data_dir: Path | str | None = None,
        collection: str = "rag",
        read_only: bool = False,
        hnsw_m: int = 16,
        ef_construction: int = 64,
        ef_search: int = 100,
        exact_search_max: int = EXACT_SEARCH_MAX,
        password: str | None = None,
        database: str = "rag",
        text_search_config: str = DEFAULT_TEXT_SEARCH_CONFIG,
        any_dimension: bool = False,
    ) -> None:
        if not 0 < dimension <= MAX_DIMENSION:
            raise ConfigError(f"vector dimension must be between 1 and {MAX_DIMENSION} for pgvector, got {dimension}")
        if not isinstance(collection, str) or not _COLLECTION_RE.match(collection):
            raise ConfigError(
                f"collection {collection!r} cannot name a Postgres table; use 1-48 letters, digits, '_' or '-'"
            )
        if not 2 <= hnsw_m <= 100:
            raise ConfigError(f"hnsw_m must be between 2 and 100 (pgvector's limits), got {hnsw_m}")
        if not 4 <= ef_construction <= 1000 or ef_construction < 2 * hnsw_m:
            raise ConfigError(f"ef_construction must be between 4 and 1000 and at least 2 * hnsw_m, got {ef_construction}")
        if not 1 <= ef_search <= 1000:
            raise ConfigError(f"ef_search must be between 1 and 1000, got {ef_search}")
        if exact_search_max < 0:
            raise ConfigError(f"exact_search_max must not be negative, got {exact_search_max}")
        if url is None and data_dir is None:
            raise ConfigError("PgVectorStore needs a url or a data_dir for its embedded server")
        if not isinstance(text_search_config, str) or not text_search_config.strip():
            raise ConfigError(f"text_search_config must name a text search configuration, got {text_search_config!r}")
        self._psycopg, self._sql = _psycopg()
        self.dimension = dimension
        self.collection = collection
        self.read_only = read_only
        self.hnsw_m, self.ef_construction, self.ef_search = hnsw_m, ef_construction, ef_search
        self.exact_search_max = exact_search_max
        self._any_dimension = any_dimension
        self.text_search_config = text_search_config
        self._tsv_config: str | None = None  # the config the table's tsv column uses; None: no column (yet)
        self._postings = False  # whether the table has its term postings (kept by a trigger; see _add_postings)
        self._postings_table = self._sql.Identifier(f"{collection}_postings")
        self._keyword: PostgresKeywordIndex | None = None
        self._filters = FilterSql(self._sql)
        self._table = self._sql.Identifier(collection)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._server: EmbeddedPostgres | None = None
        self._exists = False  # whether the table exists (a read-only store may find none)
        self._dirty = False  # writes since the last flush
        self._rows_written = 0  # rows upserted or deleted by this store object (see VACUUM_AFTER_ROWS)
        self._counts: dict[str, tuple[int, float]] = {}
        self._session_ef = ef_search
        self._vector_ready = False
        self._no_cluster = False  # read-only, and no embedded cluster exists yet: an empty store
        self.path = Path(data_dir) / "postgres" if url is None and data_dir is not None else None
        if url is None:
            assert self.path is not None
            self._server = EmbeddedPostgres(self.path, database=database, create=not read_only)
            if read_only and not EmbeddedPostgres.cluster_exists(self.path):
                self._server, self._no_cluster = None, True  # nothing indexed yet, and nothing created
                self.url, self._where = "", str(self.path)
                return
            self._server.start()
            url = self._server.url
            self._where = f"the embedded server in {self.path}"
        else:
            self._where = redact(url)
        self.url = url
        try:
            self._connect(url, password)
            self._prepare()
        except BaseException:
            self.close()
            raise

    # -- connection and schema ----------------------------------------------------------------------

    def _connect(self, url: str, password: str | None) -> None:
        psycopg = self._psycopg
        kwargs: dict[str, Any] = {"autocommit": False}
        if password is not None:
            kwargs["password"] = password
        try:
            self._conn = psycopg.connect(url, **kwargs)
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot connect to Postgres at {self._where}: {exc}; check store.url (RAG_STORE__URL) and that "
                "the server is running"
            ) from exc
        with self._errors("configure"):
            conn = self._conn
            if self.read_only:
                conn.execute("SET default_transaction_read_only = on")
            self._setup_vector()
            conn.commit()

    def _setup_vector(self) -> bool:
        """Once the ``vector`` type exists: register its adapters and set this session's HNSW settings."""
        if self._vector_ready:
            return True
        assert self._conn is not None
        conn = self._conn
        row = conn.execute("SELECT oid FROM pg_type WHERE typname = 'vector'").fetchone()
        if row is None:
            return False
        self._register_vector(row[0])
        conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(self.ef_search),))
        version = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
        if version and tuple(int(p) for p in re.findall(r"\d+", version[0])[:2]) >= (0, 8):
            # pgvector >= 0.8: a filtered graph walk goes on until it has k rows that pass.
            conn.execute("SET hnsw.iterative_scan = relaxed_order")
        self._vector_ready = True
        return True

    def _register_vector(self, oid: int) -> None:
        """Binary dumper (numpy array -> vector) and loader (vector -> float32 array) for this connection."""
        from psycopg.adapt import Dumper, Loader
        from psycopg.pq import Format

        class VectorDumper(Dumper):
            format = Format.BINARY

            def dump(self, obj: np.ndarray) -> bytes:
                array = np.asarray(obj, dtype=">f4")
                return struct.pack(">HH", array.shape[0], 0) + array.tobytes()

        VectorDumper.oid = oid

        class VectorLoader(Loader):
            format = Format.BINARY

            def load(self, data: Any) -> np.ndarray:
                dim = struct.unpack_from(">H", data)[0]
                return np.frombuffer(bytes(data), dtype=">f4", count=dim, offset=4).astype(np.float32)

        assert self._conn is not None
        self._conn.adapters.register_dumper(np.ndarray, VectorDumper)
        self._conn.adapters.register_loader(oid, VectorLoader)

    def _prepare(self) -> None:
        """Check (and unless read-only, create) the table and its index; refuse another dimension."""
        sql = self._sql
        with self._errors("open"):
            assert self._conn is not None
            conn = self._conn
            dimension = self._stored_dimension()
            if dimension is None and not self.read_only:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
                self._setup_vector()
                conn.execute(
                    sql.SQL(
                        "CREATE TABLE IF NOT EXISTS {} (chunk_id text PRIMARY KEY, embedding vector({}) NOT NULL, "
                        "text text NOT NULL, metadata jsonb NOT NULL, dates jsonb NOT NULL DEFAULT '{{}}')"
                    ).format(self._table, sql.Literal(self.dimension))
                )
                conn.execute(
                    sql.SQL(
                        "CREATE INDEX IF NOT EXISTS {} ON {} USING hnsw (embedding vector_cosine_ops) "
                        "WITH (m = {}, ef_construction = {})"
                    ).format(
                        sql.Identifier(f"{self.collection}_hnsw"), self._table,
                        sql.Literal(self.hnsw_m), sql.Literal(self.ef_construction),
                    )
                )
                conn.commit()
                dimension = self.dimension
                log.info("created the pgvector table %r (%d dimensions) at %s", self.collection, dimension, self._where)
            if dimension is not None:
                self._setup_vector()
                self._tsv_config = self._text_search_column()
                self._postings = self._has_postings()
            conn.commit()
        self._exists = dimension is not None
        if dimension is not None and dimension != self.dimension and not self._any_dimension:
            raise IndexMismatchError(
                f"the pgvector table {self.collection!r} at {self._where} holds {dimension}-dimensional vectors but "
                f"{self.dimension}-dimensional ones were requested, e.g. after changing the embedding model; "
                f"{REBUILD_HINT}, or choose another store.collection"
            )
        if self._exists and not self.read_only and not self._any_dimension:
            self._add_text_search()
            self._add_postings()

    def _text_search_column(self) -> str | None:
        """The text search config the table's ``tsv`` column is generated with; ``None`` if it has none
        (a table made before keyword search), ``""`` if ``tsv`` is not a column this store made."""
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT pg_get_expr(d.adbin, d.adrelid) FROM pg_attribute a LEFT JOIN pg_attrdef d "
            "ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
            "WHERE a.attrelid = to_regclass(%s) AND a.attname = 'tsv' AND NOT a.attisdropped",
            (self._table.as_string(self._conn),),
        ).fetchone()
        if row is None:
            return None
        found = _TSV_CONFIG_RE.search(row[0] or "")
        return found.group(1).replace("''", "'") if found else ""

    def _add_text_search(self) -> None:
        """(Writers only.) Give a table made before keyword search its ``tsv`` column and GIN index,
        generated with ``text_search_config``; Postgres computes the column for every row (a table
        rewrite). Like the HNSW parameters, the config takes effect when the column is made: a table whose
        column has another one keeps it (with a warning) until ``rag ingest --rebuild``.

        Raises:
            ConfigError: the server has no text search configuration of that name.
        """
        assert self._conn is not None
        conn, sql = self._conn, self._sql
        with self._errors("add full-text search to"):
            try:
                with conn.transaction():
                    config = conn.execute("SELECT %s::regconfig::text", (self.text_search_config,)).fetchone()[0]
            except self._psycopg.errors.UndefinedObject:
                known = [row[0] for row in conn.execute("SELECT cfgname FROM pg_ts_config ORDER BY 1")]
                conn.rollback()
                raise ConfigError(
                    f"Postgres at {self._where} has no text search configuration {self.text_search_config!r} "
                    f"([store.options] text_search_config); it has {', '.join(known)}"
                ) from None
            if self._tsv_config is not None:
                conn.commit()
                if self._tsv_config != config:
                    log.warning(
                        "the pgvector table %r at %s searches text with the %r configuration, not %r; it takes "
                        "effect when the table is made: %s", self.collection, self._where, self._tsv_config,
                        config, REBUILD_HINT,
                    )
                return
            started = time.monotonic()
            conn.execute(
                sql.SQL(
                    "ALTER TABLE {} ADD COLUMN tsv tsvector "
                    "GENERATED ALWAYS AS (to_tsvector({}::regconfig, text)) STORED"
                ).format(self._table, sql.Literal(config))
            )
            conn.execute(
                sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING gin (tsv)").format(
                    sql.Identifier(f"{self.collection}_tsv"), self._table
                )
            )
            conn.commit()
        self._tsv_config = config
        log.info(
            "added full-text search (%s) to the pgvector table %r at %s in %.1f s", config, self.collection,
            self._where, time.monotonic() - started,
        )

    def _has_postings(self) -> bool:
        """Whether the table has its postings table, in the current layout (with BM25's ``tf`` and ``dl``),
        and the trigger that keeps it (see :meth:`_add_postings`)."""
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT to_regclass(%s) IS NOT NULL AND EXISTS (SELECT FROM pg_trigger WHERE tgrelid = to_regclass(%s) "
            "AND tgname = %s) AND EXISTS (SELECT FROM pg_attribute WHERE attrelid = to_regclass(%s) "
            "AND attname = 'dl' AND NOT attisdropped)",
            (self._postings_table.as_string(self._conn), self._table.as_string(self._conn),
             f"{self.collection}_postings_sync", self._postings_table.as_string(self._conn)),
        ).fetchone()
        return bool(row and row[0])

    def _add_postings(self) -> None:
        """(Writers only.) Give the table its postings, ``<collection>_postings (lexeme, chunk_id, w, tf, dl)``:
        one row per lexeme of each chunk's ``tsv``, with the lexeme's occurrences ``tf`` and the chunk's length
        ``dl`` (BM25's inputs) and ``w = ts_rank(tsv, lexeme, 1)`` (the lexeme's term in ``ts_rank_idf``), plus
        one row per chunk under the empty lexeme, whose ``tf`` is the chunk's length (so the average length is
        an index-only scan). A row trigger keeps them in step with every insert, update and delete, in the
        writing transaction; an existing table's rows are copied in once (about 25 s per 100,000 chunks).
        Postings of an earlier layout (without ``tf`` and ``dl``) are dropped and made again.

        With them, :class:`PostgresKeywordIndex` ranks by summing postings through their primary key
        instead of decompressing and ranking the ``tsv`` of every row that shares a query word, and counts
        document frequencies on the same index (docs/pgvector.md has the measurements).
        """
        if self._postings or not self._tsv_config:
            return
        assert self._conn is not None
        conn, sql = self._conn, self._sql
        function = sql.Identifier(f"{self.collection}_postings_sync")
        names = {"postings": self._postings_table, "function": function, "table": self._table,
                 "trigger": sql.Identifier(f"{self.collection}_postings_sync"),
                 "norm": sql.Literal(DEFAULT_NORMALIZATION)}
        started = time.monotonic()
        # One chunk's postings: a row per lexeme and the length row under the empty lexeme.
        rows = (
            f"SELECT u.lexeme, {{id}}, ts_rank({{tsv}}, ({QUOTED_LEXEME})::tsquery, {{norm}}), {TF_SQL.format('u')}, "
            f"d.dl FROM unnest({{tsv}}) u, LATERAL (SELECT {DL_SQL.format('{tsv}')} AS dl) d "
            "UNION ALL SELECT '', {id}, 0, d.dl, d.dl FROM LATERAL (SELECT "
            f"{DL_SQL.format('{tsv}')} AS dl) d"
        )
        with self._errors("add keyword postings to"):
            conn.execute(sql.SQL("DROP TABLE IF EXISTS {postings}").format(**names))  # an earlier layout's
            conn.execute(sql.SQL(
                "CREATE TABLE {postings} (lexeme text NOT NULL, chunk_id text NOT NULL, w real NOT NULL, "
                "tf real NOT NULL, dl real NOT NULL, "
                "PRIMARY KEY (lexeme, chunk_id) INCLUDE (w, tf, dl))"  # a covering index: ranking reads no heap
            ).format(**names))
            conn.execute(sql.SQL(
                "CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $body$ BEGIN "
                "IF TG_OP <> 'INSERT' THEN DELETE FROM {postings} p "
                "WHERE p.lexeme = ANY(tsvector_to_array(OLD.tsv) || ''::text) AND p.chunk_id = OLD.chunk_id; END IF; "
                "IF TG_OP <> 'DELETE' THEN INSERT INTO {postings} (lexeme, chunk_id, w, tf, dl) "
                f"{rows.format(id='NEW.chunk_id', tsv='NEW.tsv', norm='{norm}')}; END IF; RETURN NULL; END $body$"
            ).format(**names))
            # Creating the triggers locks out other writers until the copy below is committed with them.
            conn.execute(sql.SQL(
                "CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR DELETE ON {table} FOR EACH ROW "
                "EXECUTE FUNCTION {function}()"
            ).format(**names))
            conn.execute(sql.SQL(
                "CREATE OR REPLACE TRIGGER {trigger_update} AFTER UPDATE ON {table} FOR EACH ROW "
                "WHEN (OLD.tsv IS DISTINCT FROM NEW.tsv OR OLD.chunk_id IS DISTINCT FROM NEW.chunk_id) "
                "EXECUTE FUNCTION {function}()"
            ).format(**names, trigger_update=sql.Identifier(f"{self.collection}_postings_update")))
            conn.execute(sql.SQL(
                "INSERT INTO {postings} (lexeme, chunk_id, w, tf, dl) SELECT c.* FROM {table} r, LATERAL ("
                f"{rows.format(id='r.chunk_id', tsv='r.tsv', norm='{norm}')}) c"
            ).format(**names))
            conn.execute(sql.SQL("ANALYZE {postings}").format(**names))  # the planner's row estimates, at once
            conn.commit()
        self._postings = True
        log.info("added keyword postings to the pgvector table %r at %s in %.1f s", self.collection, self._where,
                 time.monotonic() - started)

    def _stored_dimension(self) -> int | None:
        """The table's vector dimension, or ``None`` if there is no such table.

        Raises:
            StoreError: a table of that name exists but is not a pgvector store table.
        """
        assert self._conn is not None
        row = self._conn.execute(
            "SELECT a.atttypmod, t.typname FROM pg_attribute a JOIN pg_type t ON t.oid = a.atttypid "
            "WHERE a.attrelid = to_regclass(%s) AND a.attname = 'embedding' AND NOT a.attisdropped",
            (self._sql.Identifier(self.collection).as_string(self._conn),),
        ).fetchone()
        exists = self._conn.execute("SELECT to_regclass(%s) IS NOT NULL", (self._table.as_string(self._conn),)).fetchone()
        if not exists or not exists[0]:
            return None
        if row is None or row[1] != "vector":
            raise StoreError(
                f"the table {self.collection!r} at {self._where} is not a pgvector store table; choose another "
                "store.collection"
            )
        return int(row[0])

    def _errors(self, action: str) -> Any:
        """A context manager turning psycopg errors into :class:`StoreError` naming the action and server."""
        store = self

        class _Translate:
            def __enter__(self) -> None:
                if store._conn is None:
                    raise StoreError(f"the pgvector store at {store._where} is closed")

            def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> bool:
                if exc is not None and isinstance(exc, store._psycopg.Error):
                    raise StoreError(
                        f"cannot {action} the pgvector table {store.collection!r} at {store._where}: "
                        f"{str(exc).strip()}"
                    ) from exc
                return False

        return _Translate()

    def _end_read(self) -> None:
        """End the transaction a read opened, unless it holds unflushed writes (it must stay open)."""
        assert self._conn is not None
        if not self._dirty:
            self._conn.commit()

    # -- writing ------------------------------------------------------------------------------------

    def _writable(self) -> psycopg.Connection[Any]:
        if self._conn is None:
            raise StoreError(f"the pgvector store at {self._where} is closed")
        if self.read_only:
            raise StoreError(f"the pgvector store at {self._where} was opened read-only")
        if self._conn.info.transaction_status == self._psycopg.pq.TransactionStatus.IDLE:
            # Open the transaction that flush() commits; conn.transaction() would otherwise commit each call
            # on its own (it only nests as a savepoint inside a transaction already in progress).
            with self._errors("write to"):
                self._conn.execute("SELECT")
        return self._conn

    def upsert(self, chunks: list[StoredChunk]) -> None:
        """Insert or replace chunks by id (the last of repeated ids in one call wins), in one savepoint.

        Raises:
            IndexMismatchError: a vector has another dimension than the store.
            StoreError: a vector is zero or not finite, text or metadata cannot be stored (not JSON, NaN,
                NUL characters), or the database refused the write.
        """
        batch = list({chunk.chunk_id: chunk for chunk in chunks}.values())
        if not batch:
            return
        vectors = unit_rows([c.vector for c in batch], self.dimension, "upsert")
        rows = [
            (c.chunk_id, vector, c.text, *self._metadata_json(c))
            for c, vector in zip(batch, vectors)
        ]
        query = self._sql.SQL(
            "INSERT INTO {} (chunk_id, embedding, text, metadata, dates) VALUES (%s, %s, %s, %s::jsonb, %s::jsonb) "
            "ON CONFLICT (chunk_id) DO UPDATE SET embedding = EXCLUDED.embedding, text = EXCLUDED.text, "
            "metadata = EXCLUDED.metadata, dates = EXCLUDED.dates"
        ).format(self._table)
        with self._lock:
            conn = self._writable()
            # conn.transaction() is a savepoint inside the open transaction
            with self._errors("write to"), conn.transaction(), conn.cursor() as cursor:
                for start in range(0, len(rows), _UPSERT_BATCH):
                    cursor.executemany(query, rows[start : start + _UPSERT_BATCH])
            self._wrote(len(rows))

    @staticmethod
    def _metadata_json(chunk: StoredChunk) -> tuple[str, str]:
        if "\x00" in chunk.chunk_id or "\x00" in chunk.text:
            raise StoreError(f"chunk {chunk.chunk_id!r} has a NUL character in its id or text; Postgres cannot store it")
        try:
            metadata = json.dumps(chunk.metadata, ensure_ascii=False, sort_keys=True, allow_nan=False)
            dates = json.dumps(date_index(json.loads(metadata)), sort_keys=True)
        except (TypeError, ValueError) as exc:
            raise StoreError(
                f"metadata of chunk {chunk.chunk_id!r} cannot be stored as JSON: {exc}; use strings, finite numbers, "
                "booleans, lists and ISO-8601 date strings"
            ) from exc
        if "\\u0000" in metadata:
            raise StoreError(f"metadata of chunk {chunk.chunk_id!r} has a NUL character; Postgres cannot store it")
        return metadata, dates

    def delete(self, chunk_ids: list[str]) -> None:
        """Remove chunks by id; unknown ids are ignored."""
        if not chunk_ids:
            return
        with self._lock:
            conn = self._writable()
            with self._errors("delete from"), conn.transaction():
                conn.execute(
                    self._sql.SQL("DELETE FROM {} WHERE chunk_id = ANY(%s)").format(self._table), (list(chunk_ids),)
                )
            self._wrote(len(chunk_ids))

    def _wrote(self, rows: int) -> None:
        self._dirty = True
        self._rows_written += rows
        self._counts.clear()

    def flush(self) -> None:
        """Commit every write since the last flush, in one transaction.

        Raises:
            StoreError: the commit failed (the previous flushed state stays intact).
        """
        with self._lock:
            if self._conn is None or not self._dirty:
                return
            with self._errors("commit to"):
                self._conn.commit()
            self._dirty = False

    def close(self) -> None:
        """Flush, close the connection and let go of the embedded server (stopping it if this was its last
        user); idempotent."""
        with self._lock:
            try:
                if self._conn is not None:
                    try:
                        self.flush()
                        self._vacuum_postings()
                    finally:
                        self._conn.close()
                        self._conn = None
            finally:
                if self._server is not None:
                    self._server.stop()
                    self._server = None

    def _vacuum_postings(self) -> None:
        """After a large write, ``VACUUM (ANALYZE)`` the postings so that keyword search gets index-only scans
        at once rather than after autovacuum. A failure is logged, never raised: the data are committed."""
        if self.read_only or not self._postings or self._rows_written < VACUUM_AFTER_ROWS:
            return
        started = time.perf_counter()
        try:
            self._conn.autocommit = True  # VACUUM cannot run inside a transaction
            self._conn.execute(self._sql.SQL("VACUUM (ANALYZE) {}").format(self._postings_table))
        except self._psycopg.Error as exc:
            log.warning("could not vacuum the keyword postings of %r at %s: %s", self.collection, self._where, exc)
            return
        self._rows_written = 0
        log.info("vacuumed the keyword postings of %r in %.1f s", self.collection, time.perf_counter() - started)

    def drop(self) -> None:
        """Drop the table with every chunk in it, then close (``rag ingest --rebuild``).

        Raises:
            StoreError: the store is read-only, or the table could not be dropped.
        """
        with self._lock:
            if self.read_only:
                raise StoreError(f"the pgvector store at {self._where} was opened read-only")
            if self._conn is not None:
                with self._errors("drop"):
                    self._conn.rollback()  # unflushed writes go with the table
                    self._dirty = False
                    self._conn.execute(self._sql.SQL("DROP TABLE IF EXISTS {}").format(self._table))
                    self._conn.execute(self._sql.SQL("DROP TABLE IF EXISTS {}").format(self._postings_table))
                    self._conn.execute(
                        self._sql.SQL("DROP FUNCTION IF EXISTS {}()").format(
                            self._sql.Identifier(f"{self.collection}_postings_sync")
                        )
                    )
                    self._conn.commit()
                self._exists = False
            self.close()

    def __enter__(self) -> PgVectorStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- reading ------------------------------------------------------------------------------------

    def search(self, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` chunks with the highest cosine similarity to ``vector`` that satisfy ``filter``.

        Raises:
            ValueError: ``k`` is not positive.
            IndexMismatchError: ``vector`` has another dimension than the store.
            StoreError: ``vector`` is zero or not finite, or the server failed.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        query = unit_rows(vector, self.dimension, "the query")[0]
        sql = self._sql
        try:
            where, params = self._filters.translate(filter) if filter else (sql.SQL("true"), [])
        except MatchesNothing:
            return []
        with self._lock:
            if not self._readable():
                return []
            assert self._conn is not None
            # With unflushed writes pending, a failing search must not abort their transaction: a savepoint.
            guard = self._conn.transaction() if self._dirty else contextlib.nullcontext()
            with self._errors("search"), guard:
                try:
                    candidates = self._candidates(filter, where, params)
                    if candidates == 0:
                        return []
                    if candidates <= self.exact_search_max:
                        rows = self._exact(query, k, where, params)
                    else:
                        rows = self._graph(query, k, where, params)
                        if len(rows) < min(k, candidates):
                            # The graph walk ran out of reachable rows that pass: exactness beats too few.
                            rows = self._exact(query, k, where, params)
                finally:
                    self._end_read()
        return [ScoredId(chunk_id, float(score)) for chunk_id, score in rows]

    def _readable(self) -> bool:
        """Whether there is a table to read; a reader looks again each time until a writer has made one."""
        if self._no_cluster:
            return False
        if self._conn is None:
            raise StoreError(f"the pgvector store at {self._where} is closed")
        if not self._exists:
            with self._errors("open"):
                try:
                    self._exists = self._stored_dimension() is not None
                finally:
                    self._end_read()
            if self._exists:
                self._prepare()  # registers the vector type and checks the dimension
        return self._exists

    def _candidates(self, filter: Filter | None, where: Any, params: list[Any]) -> int:
        """How many rows the filter allows, counted up to ``exact_search_max + 1`` (that is enough to choose
        exact or graph search); cached for a few seconds and until this instance writes."""
        key = repr(filter) if filter else ""
        cached = self._counts.get(key)
        if cached is not None and time.monotonic() - cached[1] < _COUNT_TTL:
            return cached[0]
        assert self._conn is not None
        query = self._sql.SQL("SELECT count(*) FROM (SELECT FROM {} WHERE {} LIMIT %s) AS allowed").format(
            self._table, where
        )
        count = int(self._conn.execute(query, [*params, self.exact_search_max + 1]).fetchone()[0])
        if len(self._counts) > 64:
            self._counts.clear()
        self._counts[key] = (count, time.monotonic())
        return count

    def _exact(self, query: np.ndarray, k: int, where: Any, params: list[Any]) -> list[tuple[str, float]]:
        """A sequential scan: the function form ``cosine_distance`` is not an index ordering operator, so the
        planner cannot use the graph."""
        assert self._conn is not None
        statement = self._sql.SQL(
            "SELECT chunk_id, 1 - cosine_distance(embedding, %s) AS score FROM {} WHERE {} "
            "ORDER BY cosine_distance(embedding, %s), chunk_id LIMIT %s"
        ).format(self._table, where)
        return self._conn.execute(statement, [query, *params, query, k]).fetchall()

    def _graph(self, query: np.ndarray, k: int, where: Any, params: list[Any]) -> list[tuple[str, float]]:
        """The HNSW walk, ``ORDER BY embedding <=> q LIMIT k`` with the filter inside; the outer sort puts
        iterative scanning's relaxed order right."""
        assert self._conn is not None
        ef = min(max(self.ef_search, k), 1000)
        if ef != self._session_ef:
            self._conn.execute("SELECT set_config('hnsw.ef_search', %s, false)", (str(ef),))
            self._session_ef = ef
        statement = self._sql.SQL(
            "WITH nearest AS MATERIALIZED (SELECT chunk_id, embedding <=> %s AS distance FROM {} WHERE {} "
            "ORDER BY embedding <=> %s LIMIT %s) "
            "SELECT chunk_id, 1 - distance FROM nearest ORDER BY distance, chunk_id"
        ).format(self._table, where)
        # The candidate count already chose the graph; the planner's guess at a JSONB filter's selectivity
        # (a fixed fraction) must not turn it into a sequential scan of the whole table. Session-level and
        # reset at once, since an open write transaction would keep a SET LOCAL until the next flush.
        self._conn.execute("SET enable_seqscan = off")
        try:
            return self._conn.execute(statement, [query, *params, query, k]).fetchall()
        finally:
            if self._conn.info.transaction_status != self._psycopg.pq.TransactionStatus.INERROR:
                self._conn.execute("RESET enable_seqscan")  # (a failed transaction's rollback resets it)

    def keyword_index(self) -> PostgresKeywordIndex | None:
        """Postgres full-text search over this table, as the keyword side of hybrid search
        (:class:`~rag.stores.base.ProvidesKeywordIndex`).

        Returns:
            The index (one per store, living as long as it), or ``None`` while the table lacks the ``tsv``
            column: a table made before keyword search, opened read-only before a writer migrated it.
        """
        with self._lock:
            if self._exists and not self._tsv_config:
                return None
            if self._keyword is None:
                self._keyword = PostgresKeywordIndex(self)
            return self._keyword

    def _keyword_rows(self, action: str, build: Callable[[str], tuple[Any, list[Any]]]) -> list[tuple[Any, ...]]:
        """Run the statement ``build(config)`` makes (``config``: the ``tsv`` column's text search config) as
        a read, the way :meth:`search` does; nothing while there is no table."""
        with self._lock:
            if not self._readable():
                return []
            if not self._tsv_config:
                raise StoreError(
                    f"the pgvector table {self.collection!r} at {self._where} has no full-text search column yet; "
                    "run an ingest (a writer adds it), or set retrieval.keyword = 'local'"
                )
            statement, params = build(self._tsv_config)
            assert self._conn is not None
            guard = self._conn.transaction() if self._dirty else contextlib.nullcontext()
            with self._errors(action), guard:
                try:
                    return self._conn.execute(statement, params).fetchall()
                finally:
                    self._end_read()

    def get_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        """The stored (normalised) vectors of the given ids; unknown ids are left out."""
        if not chunk_ids:
            return {}
        with self._lock:
            if not self._readable():
                return {}
            with self._errors("read"):
                try:
                    assert self._conn is not None
                    with self._conn.cursor(binary=True) as cursor:
                        rows = cursor.execute(
                            self._sql.SQL("SELECT chunk_id, embedding FROM {} WHERE chunk_id = ANY(%s)").format(self._table),
                            (list(chunk_ids),),
                        ).fetchall()
                finally:
                    self._end_read()
        return dict(rows)

    def ids(self) -> set[str]:
        """Every stored chunk id (this instance's unflushed writes included)."""
        return {row[0] for row in self._read_all("SELECT chunk_id FROM {}")}

    def count(self) -> int:
        """Number of stored chunks (this instance's unflushed writes included)."""
        rows = self._read_all("SELECT count(*) FROM {}")
        return int(rows[0][0]) if rows else 0

    def _read_all(self, statement: str) -> list[tuple[Any, ...]]:
        with self._lock:
            if not self._readable():
                return []
            with self._errors("read"):
                assert self._conn is not None
                try:
                    return self._conn.execute(self._sql.SQL(statement).format(self._table)).fetchall()
                finally:
                    self._end_read()

    def size_bytes(self) -> int:
        """Bytes of the embedded server's folder (cluster, log); 0 for a server given by ``url``."""
        if self.path is None or not self.path.exists():
            return 0
        total = 0
        for file in self.path.rglob("*"):
            try:
                if file.is_file():
                    total += file.stat().st_size
            except OSError:  # a server's temporary file went away while we looked
                continue
        return total


def create_pgvector_store(
    *, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool = False, any_dimension: bool = False
) -> PgVectorStore:
    """The registry's factory for ``store.kind = "pgvector"``.

    Reads ``store.url`` (unset: the embedded server under ``data_dir/postgres``), ``store.api_key`` (the
    password, if not in the URL), ``store.collection`` (the table), ``store.hnsw_m`` and
    ``store.hnsw_ef_search``, and from ``[store.options]``: ``ef_construction`` (default 64),
    ``exact_search_max`` (default 10,000), ``database`` (the embedded server's, default ``rag``) and
    ``text_search_config`` (the keyword side's Postgres text search configuration, default ``english``).
    ``any_dimension`` opens a table of another dimension, only to drop it.

    Raises:
        ConfigError: an unknown or malformed ``[store.options]`` key.
    """
    extra = store_options(options, _EXTRA_OPTIONS, "pgvector")
    try:
        ef_construction = int(extra.get("ef_construction", max(64, 2 * options.hnsw_m)))
        exact_search_max = int(extra.get("exact_search_max", EXACT_SEARCH_MAX))
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"pgvector store options must be integers: {exc}") from exc
    return PgVectorStore(
        dimension,
        url=options.url,
        data_dir=data_dir,
        collection=options.collection,
        read_only=read_only,
        any_dimension=any_dimension,
        hnsw_m=options.hnsw_m,
        ef_construction=ef_construction,
        ef_search=options.hnsw_ef_search,
        exact_search_max=exact_search_max,
        # The one place the secret is read; it goes straight to the driver and is never logged.
        password=options.api_key.get_secret_value() if options.api_key else None,
        database=str(extra.get("database", "rag")),
        text_search_config=str(extra.get("text_search_config", DEFAULT_TEXT_SEARCH_CONFIG)),
    )
