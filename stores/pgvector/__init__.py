"""PgVectorStore: the vector store on Postgres with pgvector, on an embedded server or your own.

Modules: :mod:`~rag.stores.pgvector.store` (the store's schema, lifecycle and vector side, and the registry's
factory :func:`create_pgvector_store`), :mod:`~rag.stores.pgvector.filters` (filter translation),
:mod:`~rag.stores.pgvector.keyword` (the full-text keyword side) and :mod:`~rag.stores.pgvector.server` (the
embedded Postgres server).

With no ``url`` the store runs an :class:`~rag.stores.pgvector.server.EmbeddedPostgres` in
``data_dir/postgres`` (initialised on first use, shared by every process using that folder, stopped when
the last one closes); with a ``url`` it uses that server. One table per collection::

    chunk_id text PRIMARY KEY, embedding vector(d), text text, metadata jsonb, dates jsonb,
    tsv tsvector GENERATED ALWAYS AS (to_tsvector(<config>, text)) STORED

with an HNSW index (``vector_cosine_ops``) on ``embedding`` and a GIN index on ``tsv``. Vectors are
L2-normalised on the way in and scores are ``1 - cosine distance``, so they equal
:class:`~rag.stores.faiss_store.FaissStore`'s. A
:class:`~rag.core.filters.Filter` becomes a ``WHERE`` clause over the JSONB metadata inside the same query
as the ``ORDER BY embedding <=> q LIMIT k``, with the semantics of :meth:`Filter.matches
<rag.core.filters.Filter.matches>` (any element of a list, a missing field never matches, ``2 == 2.0``,
``True != 1``, globs as ``fnmatch.fnmatchcase``). Date-like strings are parsed once at upsert by the same
parser the filters use and kept, as microseconds since the epoch, in ``dates``; date ranges compare those.

Exactness follows FaissStore's HNSW mode: a search over at most ``exact_search_max`` candidate rows (the
whole table, or the rows a filter allows) is an exact scan, a larger one walks the HNSW graph (with
pgvector's iterative scan, so a filter still yields ``k`` rows), and a graph walk that comes back short is
redone exactly.

Writes go into one open transaction that :meth:`PgVectorStore.flush` commits, so a killed process leaves
the last flushed state; this instance's searches see its unflushed writes, other connections do not.

The store is also the keyword side of hybrid search (:meth:`PgVectorStore.keyword_index`, a
:class:`PostgresKeywordIndex`): Postgres full-text search over the ``tsv`` column, with the query's terms
OR-ed (BM25's semantics: any shared term counts), ranked by BM25 computed in SQL (Lucene's formula, as
bm25s uses, over the lexemes' occurrences and the chunks' lengths kept in a postings table), and filtered by
the same ``WHERE`` clause as the vector search. A table made before
the column existed gains it (and its index) when a writer opens it; a reader never alters a table, and
offers no keyword index until a writer has.

Known divergences from :meth:`Filter.matches`, inherent to Postgres:

* metadata holding NaN or infinite numbers, or text with NUL characters, is refused at upsert (JSONB and
  ``text`` cannot hold them);
* number comparisons are exact decimal ones on the JSON spelling (Python compares the binary floats): the
  two differ only for integers beyond 2**53 compared with floats.
"""


from rag.stores.pgvector.filters import date_index, glob_to_regex
from rag.stores.pgvector.keyword import DEFAULT_NORMALIZATION, DEFAULT_RANK, RANK_FUNCTIONS, PostgresKeywordIndex
from rag.stores.pgvector.server import INSTALL_HINT, EmbeddedPostgres
from rag.stores.pgvector.store import (
    DEFAULT_TEXT_SEARCH_CONFIG,
    EXACT_SEARCH_MAX,
    MAX_DIMENSION,
    PgVectorStore,
    create_pgvector_store,
    redact,
)

__all__ = [
    "DEFAULT_NORMALIZATION",
    "DEFAULT_RANK",
    "DEFAULT_TEXT_SEARCH_CONFIG",
    "EXACT_SEARCH_MAX",
    "INSTALL_HINT",
    "MAX_DIMENSION",
    "RANK_FUNCTIONS",
    "EmbeddedPostgres",
    "PgVectorStore",
    "PostgresKeywordIndex",
    "create_pgvector_store",
    "date_index",
    "glob_to_regex",
    "redact",
]
