"""The Qdrant backend: :class:`QdrantStore`, the vector store on Qdrant, in local on-disk mode or against a server.

Modules: :mod:`~rag.stores.qdrant.store` (the store's lifecycle and vector side, and the registry's factory
:func:`create_qdrant_store`), :mod:`~rag.stores.qdrant.filters` (filter translation),
:mod:`~rag.stores.qdrant.keyword` (the sparse BM25 keyword side), :mod:`~rag.stores.qdrant.hybrid` (the
server-side hybrid query) and :mod:`~rag.stores.qdrant.client` (the client import, point ids, versions).

One API, two engines (as in qdrant-client itself): with no ``url`` the client runs Qdrant's local mode in
this process, storing points under ``path``; with a ``url`` it talks to a Qdrant server. Either way a
:class:`~rag.core.filters.Filter` is translated to a native Qdrant filter, so filtering happens inside the
engine's search, with the semantics of :meth:`Filter.matches <rag.core.filters.Filter.matches>`.

Known divergences from :meth:`Filter.matches`, inherent to Qdrant:

* an empty list value counts as missing, so ``!=`` / ``not in`` do not match it (``Filter.matches`` does);
* field names containing ``.`` are read by Qdrant as nested paths, so such flat metadata keys do not match;
* metadata keys ``chunk_id`` and ``text`` are reserved for the payload and refused at upsert.

Keyword and hybrid search (docs/qdrant.md). Beside the unnamed dense vector a collection can hold a sparse
BM25 vector, ``bm25-<fingerprint>``, with Qdrant's IDF modifier. It is computed here from the chunk text
with the local BM25's :class:`~rag.core.analysis.Analyzer`, configured by the same ``[retrieval]`` settings
(:class:`~rag.core.analysis.KeywordAnalysis`: both sides must index the same terms), terms hashed to 32-bit ids. A document holds BM25's saturated term frequency
``tf / (tf + k1 · (1 - b + b · dl / avg_len))`` per term, a query its term counts, and the engine multiplies
each query term by ``ln(1 + (N - df + 0.5) / (df + 0.5))``, Lucene's IDF. Their dot product is BM25
exactly (``bm25s``' ``lucene`` variant), except that the average length is the fixed ``avg_len``, since
vectors written earlier cannot follow a corpus average that moves. The fingerprint names the analyzer,
``k1``, ``b`` and ``avg_len``, so vectors written with other settings are never mixed with these.

With it the store offers :class:`QdrantKeywordIndex` (the optional ``keyword_index()`` capability) and
:meth:`QdrantStore.hybrid_search`, one Query API request whose dense and sparse prefetches are fused by
weighted RRF inside the engine (server 1.17 or later). A collection without the sparse vector (created
before it existed, or by a server older than 1.10) keeps working: the engine then uses its local BM25
index and local fusion, with a warning, until ``rag ingest --rebuild`` recreates the collection.
"""


from rag.stores.qdrant.client import INSTALL_HINT, parse_version, point_id
from rag.stores.qdrant.keyword import DEFAULT_AVG_LEN, SPARSE_PREFIX, QdrantKeywordIndex, SparseBM25, term_id
from rag.stores.qdrant.store import QdrantStore, create_qdrant_store

__all__ = [
    "DEFAULT_AVG_LEN", "INSTALL_HINT", "SPARSE_PREFIX", "QdrantKeywordIndex", "QdrantStore", "SparseBM25",
    "create_qdrant_store", "parse_version", "point_id", "term_id",
]
