"""Deprecated module path: the pgvector backend is the subpackage :mod:`rag.stores.pgvector`.

Kept so that ``from rag.stores.pgvector_store import PgVectorStore`` (and the other public names) goes on working.
"""

from rag.stores.pgvector import (
    DEFAULT_NORMALIZATION,
    DEFAULT_RANK,
    DEFAULT_TEXT_SEARCH_CONFIG,
    EXACT_SEARCH_MAX,
    INSTALL_HINT,
    MAX_DIMENSION,
    RANK_FUNCTIONS,
    EmbeddedPostgres,
    PgVectorStore,
    PostgresKeywordIndex,
    create_pgvector_store,
    date_index,
    glob_to_regex,
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
