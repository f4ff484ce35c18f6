"""Deprecated module path: the Qdrant backend is the subpackage :mod:`rag.stores.qdrant`.

Kept so that ``from rag.stores.qdrant_store import QdrantStore`` (and the other public names) goes on working.
"""

from rag.stores import qdrant as _package
from rag.stores.qdrant import *  # noqa: F403 - this old path re-exports exactly the package's public names

__all__ = _package.__all__
