"""Deprecated module path: the OpenSearch backend is the subpackage :mod:`rag.stores.opensearch`.

Kept so that ``from rag.stores.opensearch_store import OpenSearchStore`` (and the other public names) goes on
working.
"""

from rag.stores.opensearch import (
    EXACT_SEARCH_MAX,
    INSTALL_HINT,
    KEYWORD_IGNORE_ABOVE,
    MAX_RESULTS,
    OpenSearchKeywordIndex,
    OpenSearchStore,
    cosine_from_score,
    create_opensearch_store,
    document_id,
    field_name,
    filter_clauses,
    filter_query,
    filterable_fields,
    glob_to_lucene_regexp,
    index_body,
    redact,
    score_from_cosine,
)

__all__ = [
    "EXACT_SEARCH_MAX",
    "INSTALL_HINT",
    "KEYWORD_IGNORE_ABOVE",
    "MAX_RESULTS",
    "OpenSearchKeywordIndex",
    "OpenSearchStore",
    "cosine_from_score",
    "create_opensearch_store",
    "document_id",
    "field_name",
    "filter_clauses",
    "filter_query",
    "filterable_fields",
    "glob_to_lucene_regexp",
    "index_body",
    "redact",
    "score_from_cosine",
]
