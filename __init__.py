"""rag-platform: retrieval-augmented generation over a folder of documents.

The repository root is this package; stages live in ``rag.ingest``, ``rag.retrieve``, ``rag.generate``,
``rag.evaluate`` and ``rag.api``, shared contracts in ``rag.core`` and vector stores in ``rag.stores``.
"""

__version__ = "0.1.0"
