"""Vector stores: the :class:`VectorStore` protocol, its backends, and the registry that picks one.

Built-in backends are registered here explicitly (``faiss``, the embedded default, ``qdrant``,
``pgvector`` and ``opensearch``);
third-party ones are found through the ``rag.vector_stores`` entry-point group, whose entry points are
factories with :func:`create_store`'s keyword signature::

    [project.entry-points."rag.vector_stores"]
    mystore = "my_package.store:create_my_store"   # (*, data_dir, dimension, options, read_only) -> VectorStore

``options`` is the ``[store]`` settings object; a plugin reads its own keys from ``options.options`` (the
free-form ``[store.options]`` table of ``rag.toml``, or ``RAG_STORE__OPTIONS='{"key": 1}'``). A factory
that takes no ``read_only`` keyword is called without it.

Backend modules are imported only when their store is created, so an optional backend's missing
dependency only matters to the user who selects it.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Callable, Sequence
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

import numpy as np

from rag.core.errors import REBUILD_HINT, ConfigError, IndexMismatchError, StoreError
from rag.core.settings import StoreSettings
from rag.stores.base import StoredChunk, VectorStore

__all__ = ["REBUILD_HINT", "StoredChunk", "VectorStore", "available_stores", "create_store", "unit_rows"]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "rag.vector_stores"

StoreFactory = Callable[..., VectorStore]


def unit_rows(vectors: np.ndarray | Sequence[np.ndarray], dimension: int, what: str) -> np.ndarray:
    """Validate and L2-normalise a ``(n, dimension)`` matrix, or one vector, as a contiguous float32 copy.

    Every store normalises on the way in, so scores are cosine similarities whatever the caller passed.

    Args:
        vectors: one vector, a matrix with one row per vector, or a sequence of vectors.
        dimension: the length the store expects.
        what: names the data in error messages (``"upsert"``, ``"the query"``).

    Returns:
        A ``(n, dimension)`` float32 array whose rows have unit L2 norm.

    Raises:
        IndexMismatchError: the vectors have another dimension than the store (another embedding model).
        StoreError: a vector is zero or not finite, so its cosine similarity is undefined.
    """
    try:
        matrix = np.array(vectors, dtype=np.float32, ndmin=2)
        shape = f"shape {matrix.shape[1:]}"
    except ValueError:  # a sequence of vectors of different lengths
        matrix, shape = np.empty((0, 0), dtype=np.float32), "different lengths"
    if matrix.ndim != 2 or matrix.shape[1] != dimension:
        raise IndexMismatchError(
            f"{what} has vectors of {shape} but the store holds {dimension}-dimensional ones; embed with the "
            f"model the index was built with, or {REBUILD_HINT}"
        )
    norms = np.linalg.norm(matrix, axis=1)
    bad = ~np.isfinite(norms) | (norms == 0)
    if bad.any():
        raise StoreError(f"{what} has a zero or non-finite vector (row {int(np.argmax(bad))}); cannot store it")
    matrix /= norms[:, None]
    return np.ascontiguousarray(matrix)


def _create_faiss(*, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool = False) -> VectorStore:
    from rag.stores.faiss_store import FaissStore

    return FaissStore(
        data_dir / "faiss",
        dimension,
        index=options.index,
        hnsw_m=options.hnsw_m,
        ef_search=options.hnsw_ef_search,
        read_only=read_only,
    )


def _create_qdrant(**kwargs: object) -> VectorStore:
    from rag.stores.qdrant import create_qdrant_store

    return create_qdrant_store(**kwargs)


def _create_pgvector(**kwargs: object) -> VectorStore:
    # Imported here: the module imports rag.stores, and psycopg is only needed by those who select it.
    from rag.stores.pgvector import create_pgvector_store

    return create_pgvector_store(**kwargs)


def _create_opensearch(**kwargs: object) -> VectorStore:
    from rag.stores.opensearch import create_opensearch_store

    return create_opensearch_store(**kwargs)


BUILTIN_STORES: dict[str, StoreFactory] = {
    "faiss": _create_faiss, "qdrant": _create_qdrant, "pgvector": _create_pgvector, "opensearch": _create_opensearch,
}


def _plugins() -> dict[str, EntryPoint]:
    """Installed third-party backends by name; a plugin cannot shadow a built-in."""
    found: dict[str, EntryPoint] = {}
    for entry_point in entry_points(group=ENTRY_POINT_GROUP):
        if entry_point.name in BUILTIN_STORES:
            log.warning("ignoring vector store plugin %r: the name is taken by a built-in store", entry_point.value)
            continue
        found[entry_point.name] = entry_point
    return found


def available_stores() -> list[str]:
    """Names ``create_store`` accepts: the built-ins, then installed plugins, sorted."""
    return sorted(BUILTIN_STORES) + sorted(_plugins())


def create_store(
    kind: str, *, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool = False
) -> VectorStore:
    """Open (creating if needed) the vector store ``kind`` for an index in ``data_dir``.

    Args:
        kind: ``"faiss"``, ``"qdrant"`` or the name of a ``rag.vector_stores`` entry point.
        data_dir: the index's data directory; local backends keep their files in a subfolder of it.
        dimension: the embedding dimension the store must hold.
        options: the ``[store]`` settings (index type, server URL, API key, collection, plugin options).
        read_only: the caller only searches; a local backend must then create and write no file.

    Returns:
        An open store; the caller closes it.

    Raises:
        ConfigError: ``kind`` names no known backend (the message lists the available ones).
        StoreError: a plugin failed to load or returned something that is not a ``VectorStore``, or the
            backend could not open its storage.
        IndexMismatchError: the existing index holds vectors of another dimension.
    """
    factory = BUILTIN_STORES.get(kind)
    if factory is None:
        plugin = _plugins().get(kind)
        if plugin is None:
            raise ConfigError(
                f"unknown vector store {kind!r}; available: {', '.join(available_stores())} "
                f"(set store.kind / RAG_STORE__KIND, or install a plugin for the {ENTRY_POINT_GROUP!r} group)"
            )
        try:
            factory = plugin.load()
        except Exception as exc:  # a broken plugin must not take the whole CLI down with a traceback
            raise StoreError(f"cannot load vector store plugin {kind!r} ({plugin.value}): {exc}") from exc
    kwargs = {"data_dir": Path(data_dir), "dimension": dimension, "options": options}
    if _accepts(factory, "read_only"):
        kwargs["read_only"] = read_only
    store = factory(**kwargs)
    if not isinstance(store, VectorStore):
        raise StoreError(f"vector store plugin {kind!r} returned {type(store).__name__}, not a VectorStore")
    log.debug("opened %s vector store (dimension %d) for %s", kind, dimension, data_dir)
    return store


def _accepts(factory: StoreFactory, name: str) -> bool:
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    return name in parameters or any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
