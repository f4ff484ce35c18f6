"""Deprecated module path: the embedded Postgres server is :mod:`rag.stores.pgvector.server`.

Kept so that ``from rag.stores.postgres_server import EmbeddedPostgres`` goes on working.
"""

from rag.stores.pgvector.server import INSTALL_HINT, EmbeddedPostgres, postgres_bin_dir

__all__ = ["INSTALL_HINT", "EmbeddedPostgres", "postgres_bin_dir"]
