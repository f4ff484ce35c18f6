"""The keyword side: :class:`PostgresKeywordIndex`, BM25 ranking on Postgres full-text search over the
store's ``tsv`` column (or its postings table), filtered by the same ``WHERE`` clause as vector search."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rag.core.errors import ConfigError
from rag.core.filters import Filter
from rag.core.types import ScoredId
from rag.stores.pgvector.filters import MatchesNothing

if TYPE_CHECKING:
    from rag.stores.pgvector.store import PgVectorStore


# The query's lexemes, as the column's text search config analyses them, OR-ed into a tsquery; NULL for a
# query with none (only stopwords), which matches nothing. Each lexeme goes in quoted, quotes and
# backslashes doubled, so no character of the query is read as a tsquery operator.
QUOTED_LEXEME = "'''' || replace(replace(lexeme, chr(92), chr(92) || chr(92)), '''', '''''') || ''''"
_OR_QUERY = f"SELECT string_agg({QUOTED_LEXEME}, ' | ')::tsquery AS query FROM unnest(to_tsvector(%s::regconfig, %s))"
# ts_rank_idf ranks each query lexeme on its own and weighs it by BM25's inverse document frequency over
# the whole table (counted through the GIN index for every query).
_IDF_TERMS = (
    f"SELECT term, ln(1 + (total.n - df.n + 0.5) / (df.n + 0.5)) AS idf FROM "
    f"(SELECT ({QUOTED_LEXEME})::tsquery AS term FROM unnest(to_tsvector(%s::regconfig, %s))) AS terms, "
    "(SELECT count(*) AS n FROM {table}) AS total, LATERAL (SELECT count(*) AS n FROM {table} WHERE tsv @@ term) AS df"
)
# The same ranking from the table's postings (PgVectorStore._add_postings): document frequencies counted on
# the postings' primary key, and each chunk's sum of idf * w over the query's lexemes, with no tsv read.
_POSTINGS_IDF = (
    "WITH idf AS MATERIALIZED (SELECT terms.lexeme, ln(1 + (total.n - df.n + 0.5) / (df.n + 0.5)) AS idf FROM "
    "unnest(to_tsvector(%s::regconfig, %s)) AS terms, (SELECT count(*) AS n FROM {table}) AS total, "
    "LATERAL (SELECT count(*) AS n FROM {postings} p WHERE p.lexeme = terms.lexeme) AS df)"
)
_POSTINGS_SUM = "SELECT p.chunk_id, sum(idf.idf * p.w) AS score FROM idf JOIN {postings} p ON p.lexeme = idf.lexeme"
# BM25 (Lucene's variant, as bm25s computes it by default): idf * tf / (tf + k1 * (1 - b + b * dl / avgdl)), with
# tf the lexeme's occurrences in the chunk and dl the chunk's length in lexeme occurrences (the tsvector's
# positions: stopwords are not counted, as bm25s does not count them). The postings hold tf and dl; each
# chunk also has one posting under the empty lexeme, which no tsvector holds, whose tf is its length, so the
# average length (and the row count) is read from the primary key for every query.
_BM25_TERM = "{idf} * {tf} / ({tf} + {k1} * (1 - {b} + {b} * {dl} / avgdl.n))"
# The length rows give the row count too, so BM25 counts nothing on the table itself.
_POSTINGS_BM25_WITH = (
    "WITH avgdl AS MATERIALIZED (SELECT count(*) AS rows, coalesce(avg(tf), 1) AS n FROM {postings} WHERE lexeme = ''), "
    "idf AS MATERIALIZED (SELECT terms.lexeme, ln(1 + (avgdl.rows - df.n + 0.5) / (df.n + 0.5)) AS idf FROM "
    "unnest(to_tsvector(%s::regconfig, %s)) AS terms, avgdl, "
    "LATERAL (SELECT count(*) AS n FROM {postings} p WHERE p.lexeme = terms.lexeme) AS df)"
)
# A lexeme's occurrences in a tsvector entry (a stripped tsvector has no positions: 1), and a chunk's length.
TF_SQL = "coalesce(array_length({}.positions, 1), 1)"
DL_SQL = f"(SELECT coalesce(sum({TF_SQL.format('v')}), 0) FROM unnest({{}}) v)"
BM25_K1, BM25_B = 1.2, 0.75  # RetrievalSettings' bm25_k1 and bm25_b defaults, which the local bm25s index uses
RANK_FUNCTIONS = ("bm25", "ts_rank", "ts_rank_cd", "ts_rank_idf")
DEFAULT_RANK, DEFAULT_NORMALIZATION = "bm25", 1


class PostgresKeywordIndex:
    """The keyword side of hybrid search on Postgres full-text search: a
    :class:`~rag.retrieve.keyword.KeywordIndex` over a :class:`PgVectorStore`'s table.

    * **Terms are OR-ed.** The query is analysed with the ``tsv`` column's text search config (the parser,
      stopwords and Snowball stemmer of ``english`` by default) and its lexemes are joined with ``|``.
      ``plainto_tsquery`` and ``websearch_to_tsquery`` join them with ``&``, which finds nothing for most
      natural-language questions; BM25 scores any chunk that shares a term, and so does this index.
    * **Ranked by BM25** (``bm25``, the default): the sum over the query's lexemes of
      ``idf * tf / (tf + k1 * (1 - b + b * dl / avgdl))``, the formula the local bm25s index uses (Lucene's),
      with ``k1 = 1.2`` and ``b = 0.75`` as there; ``tf`` is the lexeme's occurrences in the chunk, ``dl`` the
      chunk's length in lexeme occurrences, ``avgdl`` their mean over the table and ``idf`` is
      ``ln(1 + (N - df + 0.5) / (df + 0.5))``. Its scores have BM25's distribution, which hybrid search's
      confidence weighting was tuned on: ``ts_rank_idf`` (``idf * ts_rank(tsv, lexeme, 1)``, the earlier
      default) ranks as well alone but its flatter top scores took weight away from the keyword side, and
      fused with dense search it was significantly worse than bm25s (docs/pgvector.md has the measurements).
      Plain ``ts_rank`` and ``ts_rank_cd`` over the OR-ed query weigh a common term like a rare one.
    * **Filters** are the store's ``WHERE`` translation, inside the same query, as for vector search.
    * **Writes** are seen at once: ``tsv`` is a generated column with a GIN index, so nothing is rebuilt
      after an ingest, and this store's unflushed writes are seen as its vector search sees them.

    Args:
        store: the store whose table is searched (its connection and lock are shared).
        rank: ``bm25`` (above), ``ts_rank_idf`` (above), or Postgres' ``ts_rank`` or ``ts_rank_cd`` (cover
            density) of the OR-ed query, without IDF.
        normalization: the ``ts_rank*`` functions' length normalisation bit mask (``bm25`` has its own): 0
            none, 1 ``1 + log(length)``, 2 length, 4 mean harmonic distance of covers (``ts_rank_cd`` only),
            8 unique words, 16 ``1 + log(unique words)``, 32 ``rank / (rank + 1)``.

    Raises:
        ConfigError: an unknown rank function or normalisation.
    """

    name = "postgres-fts"

    def __init__(
        self, store: PgVectorStore, *, rank: str = DEFAULT_RANK, normalization: int = DEFAULT_NORMALIZATION
    ) -> None:
        if rank not in RANK_FUNCTIONS:
            raise ConfigError(f"rank must be one of {', '.join(RANK_FUNCTIONS)}, got {rank!r}")
        if isinstance(normalization, bool) or not isinstance(normalization, int) or not 0 <= normalization < 64:
            raise ConfigError(f"normalization must be a bit mask between 0 and 63, got {normalization!r}")
        self.store, self.rank, self.normalization = store, rank, normalization
        sql = store._sql
        self._avgdl: float | None = None  # the tsv path's average length (see _tsv_avgdl)
        if rank == "bm25":
            # The tsv path (a table whose writer has not added the postings yet): each row's own tf and dl;
            # the average length is bound as a parameter (_tsv_avgdl).
            self._with = sql.SQL(
                "WITH q AS MATERIALIZED ({}), terms AS MATERIALIZED ({}), avgdl AS (SELECT %s::float8 AS n)"
            ).format(sql.SQL(_OR_QUERY), sql.SQL(_IDF_TERMS.replace("SELECT term,", "SELECT lexeme, term,").replace(
                "AS term FROM unnest", "AS term, lexeme FROM unnest")).format(table=store._table))
            term = _BM25_TERM.format(idf="terms.idf", tf=TF_SQL.format("v"), dl=DL_SQL.format("tsv"),
                                     k1=BM25_K1, b=BM25_B)
            self._rank = sql.SQL(
                f"(SELECT sum({term}) FROM avgdl, unnest(tsv) v JOIN terms ON terms.lexeme = v.lexeme)"
            )
        elif rank == "ts_rank_idf":
            self._with = sql.SQL("WITH q AS MATERIALIZED ({}), terms AS MATERIALIZED ({})").format(
                sql.SQL(_OR_QUERY), sql.SQL(_IDF_TERMS).format(table=store._table)
            )
            self._rank = sql.SQL("(SELECT sum(idf * ts_rank(tsv, term, {})) FROM terms WHERE tsv @@ term)").format(
                sql.Literal(normalization)
            )
        else:
            self._with = sql.SQL("WITH q AS MATERIALIZED ({})").format(sql.SQL(_OR_QUERY))
            self._rank = sql.SQL("{}(tsv, q.query, {})").format(sql.Identifier(rank), sql.Literal(normalization))

    def _uses_postings(self) -> bool:
        """Whether to rank from the table's postings: they hold BM25's ``tf`` and ``dl``, and ``ts_rank_idf``'s
        term at the default normalisation (a reader of a table whose writer has not added them yet ranks from
        ``tsv``, with the same result)."""
        return self.store._postings and (
            self.rank == "bm25" or (self.rank == "ts_rank_idf" and self.normalization == DEFAULT_NORMALIZATION)
        )

    def _postings_sql(self) -> tuple[str, str]:
        """The postings path's ``WITH`` clause and per-chunk sum (``{table}``/``{postings}`` placeholders)."""
        if self.rank == "bm25":
            term = _BM25_TERM.format(idf="idf.idf", tf="p.tf", dl="p.dl", k1=BM25_K1, b=BM25_B)
            return _POSTINGS_BM25_WITH, (
                f"SELECT p.chunk_id, sum({term}) AS score FROM idf CROSS JOIN avgdl JOIN {{postings}} p "
                "ON p.lexeme = idf.lexeme"
            )
        return _POSTINGS_IDF, _POSTINGS_SUM

    def _tsv_avgdl(self, config: str) -> float:
        """The tsv path's average chunk length, counted over the table once per index (this path serves a
        reader of a table without postings, which sees no writes of its own; counting reads every row)."""
        if self._avgdl is None:
            store, sql = self.store, self.store._sql
            statement = sql.SQL(f"SELECT coalesce(avg({DL_SQL.format('tsv')}), 1) FROM {{}}").format(store._table)
            rows = store._keyword_rows("search", lambda _config: (statement, []))
            if not rows:  # no table (yet): nothing to rank, and nothing to remember
                return 1.0
            self._avgdl = float(rows[0][0])
        return self._avgdl

    def _query_params(self, config: str, query: str) -> list[object]:
        """The parameters of the ``WITH`` clause: the config and query for each CTE that analyses it (and
        the average length, for ``bm25``)."""
        if self.rank == "bm25":
            return [config, query, config, query, self._tsv_avgdl(config)]
        return [config, query] * (2 if self.rank == "ts_rank_idf" else 1)

    def search(self, query: str, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` best-ranked chunks sharing a term with ``query`` and satisfying ``filter``, best first
        (ties by chunk id).

        Raises:
            ValueError: ``k`` is not positive.
            StoreError: the server failed, or the table has no full-text search column yet.
        """
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        store, sql = self.store, self.store._sql
        try:
            where, params = store._filters.translate(filter) if filter else (sql.SQL("true"), [])
        except MatchesNothing:
            return []
        if self._uses_postings():
            names = {"table": store._table, "postings": store._postings_table}
            with_idf, summed = self._postings_sql()
            if filter:
                statement = sql.SQL(
                    f"{with_idf}, scored AS ({summed} GROUP BY p.chunk_id) "
                    "SELECT s.chunk_id, s.score FROM scored s JOIN {table} r ON r.chunk_id = s.chunk_id "
                    "WHERE {where} ORDER BY s.score DESC, s.chunk_id LIMIT %s"
                ).format(**names, where=where)
            else:
                statement = sql.SQL(
                    f"{with_idf} {summed} GROUP BY p.chunk_id ORDER BY score DESC, p.chunk_id LIMIT %s"
                ).format(**names)
            rows = store._keyword_rows("search", lambda config: (statement, [config, query, *params, k]))
            return [ScoredId(chunk_id, float(score)) for chunk_id, score in rows]
        statement = sql.SQL(
            "{} SELECT chunk_id, {} AS score FROM {}, q WHERE tsv @@ q.query AND {} "
            "ORDER BY score DESC, chunk_id LIMIT %s"
        ).format(self._with, self._rank, store._table, where)
        rows = store._keyword_rows(
            "search", lambda config: (statement, [*self._query_params(config, query), *params, k])
        )
        return [ScoredId(chunk_id, float(score)) for chunk_id, score in rows]

    def scores(self, query: str, chunk_ids: Sequence[str]) -> dict[str, float]:
        """The ranks of ``chunk_ids`` for ``query``, 0.0 for no shared term; ids not stored are left out.

        Raises:
            StoreError: the server failed, or the table has no full-text search column yet.
        """
        if not chunk_ids:
            return {}
        store, sql = self.store, self.store._sql
        if self._uses_postings():
            with_idf, summed = self._postings_sql()
            statement = sql.SQL(
                f"{with_idf} SELECT r.chunk_id, coalesce(s.score, 0) FROM {{table}} r LEFT JOIN "
                f"({summed} AND p.chunk_id = ANY(%s) GROUP BY p.chunk_id) s ON s.chunk_id = r.chunk_id "
                "WHERE r.chunk_id = ANY(%s)"
            ).format(table=store._table, postings=store._postings_table)
            ids = list(chunk_ids)
            rows = store._keyword_rows("search", lambda config: (statement, [config, query, ids, ids]))
            return {chunk_id: float(score) for chunk_id, score in rows}
        statement = sql.SQL(
            "{} SELECT chunk_id, CASE WHEN tsv @@ q.query THEN {} ELSE 0 END FROM {}, q WHERE chunk_id = ANY(%s)"
        ).format(self._with, self._rank, store._table)
        rows = store._keyword_rows(
            "search", lambda config: (statement, [*self._query_params(config, query), list(chunk_ids)])
        )
        return {chunk_id: float(score) for chunk_id, score in rows}
