"""Deprecated module path: the pgvector backend is the subpackage :mod:`rag.stores.pgvector`.

Kept so that ``from rag.stores.pgvector_store import PgVectorStore`` (and the other public names) goes on working.
"""

from rag.stores import pgvector as _package
from rag.stores.pgvector import *  # noqa: F403 - this old path re-exports exactly the package's public names

__all__ = _package.__all__
