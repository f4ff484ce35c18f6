"""Deprecated module path: the OpenSearch backend is the subpackage :mod:`rag.stores.opensearch`.

Kept so that ``from rag.stores.opensearch_store import OpenSearchStore`` (and the other public names) goes on
working.
"""

from rag.stores import opensearch as _package
from rag.stores.opensearch import *  # noqa: F403 - this old path re-exports exactly the package's public names

__all__ = _package.__all__
