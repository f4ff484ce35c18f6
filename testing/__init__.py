"""Test code shipped for plugin authors: run the same contract suite the built-ins pass.

``rag.testing.parsers.ParserContractTests`` checks a :class:`~rag.ingest.parsers.Parser`; see
docs/ingestion.md (Writing a parser plugin). ``rag.testing.stores.VectorStoreContract`` (and
``KeywordHybridContract``) checks a :class:`~rag.stores.base.VectorStore`; see docs/vector-stores.md
(Testing your store with the contract suite).
"""
