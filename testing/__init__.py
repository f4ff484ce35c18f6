"""Test code shipped for plugin authors: run the same contract suite the built-ins pass.

``rag.testing.parsers.ParserContractTests`` checks a :class:`~rag.ingest.parsers.Parser`; see
docs/ingestion.md (Writing a parser plugin).
"""
