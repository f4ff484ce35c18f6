"""OpenSearchStore: the vector store on an OpenSearch index, with its own BM25 and native hybrid search.

Modules: :mod:`~rag.stores.opensearch.store` (the store's lifecycle and vector side, the index mapping and the
registry's factory :func:`create_opensearch_store`), :mod:`~rag.stores.opensearch.filters` (filterable fields
and filter translation), :mod:`~rag.stores.opensearch.keyword` (the BM25 keyword side),
:mod:`~rag.stores.opensearch.hybrid` (the server-side hybrid query) and :mod:`~rag.stores.opensearch.documents`
(document ids).

It provides the optional :class:`~rag.stores.base.ProvidesKeywordIndex` and
:class:`~rag.stores.base.ProvidesHybridSearch` capabilities: the engine's hybrid search uses its BM25 as the
keyword side and, for linear fusion, lets OpenSearch fuse (see docs/opensearch.md).

One index per collection, holding per chunk::

    chunk_id   keyword            the caller's id (also the document ``_id`` when it fits in 512 bytes)
    text       text               analysed (``english`` by default): the keyword side of hybrid search
    vector     knn_vector         HNSW (Lucene engine by default), ``innerproduct`` on L2-normalised vectors
    metadata   object, not indexed the metadata as given, kept in ``_source`` for inspection
    filterable object             the metadata again, split by value type for filtering (below)

Metadata is schemaless here: one field may hold a string in one chunk, a number or a list in the next.
An OpenSearch field has one type per index, so a value of another type would be coerced (``2`` matching
``"2"``) or would make the whole bulk item fail. Each metadata value therefore goes to the typed
sub-object for its type, mapped by dynamic templates whatever the key: ``filterable.keyword.K`` (strings),
``filterable.number.K`` (``double``: ``3 == 3.0``), ``filterable.boolean.K``, ``filterable.date.K``
(date-like strings, parsed by the same :func:`~rag.core.filters.parse_datetime` the filters use, as
microseconds since the epoch in a ``long``), plus ``filterable.present``, the keys whose value is not null.
List elements are spread over the same fields, and OpenSearch matches a term against any element of an
array, so a :class:`~rag.core.filters.Filter` becomes query DSL with the semantics of :meth:`Filter.matches
<rag.core.filters.Filter.matches>`: any element of a list, a missing or null field never matches (not
even ``!=``, which needs the key in ``present``), ``True != 1``, ranges on numbers or instants only, and
globs as ``fnmatch.fnmatchcase`` (translated to an anchored Lucene ``regexp``).

Scores: OpenSearch turns the inner product ``ip`` of two unit vectors (their cosine similarity) into
``_score = ip + 1`` for ``ip > 0`` and ``1 / (1 - ip)`` otherwise, for the approximate query of every engine
and for the exact scoring script alike. :func:`cosine_from_score` inverts that exactly, so scores equal
:class:`~rag.stores.faiss_store.FaissStore`'s. (``innerproduct`` rather than ``cosinesimil``: the latter's
score transform differed between engines and changed in OpenSearch 2.19.)

Exactness follows FaissStore's HNSW mode: a search over at most ``exact_search_max`` candidate documents
(the index, or those the filter allows) runs the k-NN plugin's exact scoring script under the filter; a
larger one is a ``knn`` query with the filter *inside* it (efficient filtering: the engine pre-filters,
searching the graph only for allowed documents and exactly when few are), and a graph walk that comes
back short is redone exactly.

Writes are bulk requests; each is durable when acknowledged (OpenSearch fsyncs its translog per request).
They become searchable at a refresh: :meth:`OpenSearchStore.flush` refreshes, and this instance refreshes
before reading its own unflushed writes. There are no transactions: a process killed before ``flush``
leaves the writes it made (which rag's ingest journal sweeps), as with Qdrant.

Known divergences from :meth:`Filter.matches`, inherent to OpenSearch:

* strings longer than 8,191 characters are stored but not indexed (Lucene's term limit), so no equality,
  membership or glob condition matches them;
* numbers are compared as doubles: integers beyond 2**53 may compare equal to their neighbours;
* metadata holding NaN or infinite numbers is refused at upsert (JSON cannot carry them);
* an index holds at most ``index.mapping.total_fields.limit`` fields (1,000 by default): up to four per
  distinct metadata key, so corpora with hundreds of distinct keys need a higher limit.
"""


from rag.stores.opensearch.documents import document_id
from rag.stores.opensearch.filters import (
    field_name,
    filter_clauses,
    filter_query,
    filterable_fields,
    glob_to_lucene_regexp,
)
from rag.stores.opensearch.keyword import MAX_RESULTS, OpenSearchKeywordIndex
from rag.stores.opensearch.store import (
    EXACT_SEARCH_MAX,
    INSTALL_HINT,
    KEYWORD_IGNORE_ABOVE,
    OpenSearchStore,
    cosine_from_score,
    create_opensearch_store,
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
