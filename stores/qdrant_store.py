"""Deprecated module path: the Qdrant backend is the subpackage :mod:`rag.stores.qdrant`.

Kept so that ``from rag.stores.qdrant_store import QdrantStore`` (and the other public names) goes on working.
"""

from rag.stores.qdrant import (
    DEFAULT_AVG_LEN,
    INSTALL_HINT,
    SPARSE_PREFIX,
    QdrantKeywordIndex,
    QdrantStore,
    SparseBM25,
    create_qdrant_store,
    parse_version,
    point_id,
    term_id,
)

__all__ = [
    "DEFAULT_AVG_LEN", "INSTALL_HINT", "SPARSE_PREFIX", "QdrantKeywordIndex", "QdrantStore", "SparseBM25",
    "create_qdrant_store", "parse_version", "point_id", "term_id",
]
