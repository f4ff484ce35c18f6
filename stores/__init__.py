"""Vector stores: the :class:`VectorStore` protocol, its backends, and the registry that picks one.

Built-in backends are registered here explicitly (``faiss``, the embedded default, ``qdrant``,
``pgvector`` and ``opensearch``);
third-party ones are found through the ``rag.vector_stores`` entry-point group, whose entry points are
factories with :func:`create_store`'s keyword signature::

    [project.entry-points."rag.vector_stores"]
    mystore = "my_package.store:create_my_store"   # (*, data_dir, dimension, options, read_only) -> VectorStore

``options`` is the ``[store]`` settings object; a plugin reads its own keys from ``options.options`` (the
free-form ``[store.options]`` table of ``rag.toml``, or ``RAG_STORE__OPTIONS='{"key": 1}'``). The optional
keywords are passed only to a factory that takes them: ``read_only`` (the caller only searches),
``analysis`` (a :class:`~rag.core.analysis.KeywordAnalysis`, for a store that indexes keywords itself) and
``any_dimension`` (open existing data whatever its dimension, only to drop it: see :func:`drop_store`).

The registry is the only code that names a backend: the engine creates a store with :func:`create_store`,
drops one with :func:`drop_store`, and asks :func:`store_traits` what it must know about where the data lives.
The server backends are subpackages (:mod:`rag.stores.qdrant`, :mod:`rag.stores.pgvector`,
:mod:`rag.stores.opensearch`) imported only when their store is created, so an optional backend's missing
dependency only matters to the user who selects it. A plugin's author checks their store with the contract
suite in :mod:`rag.testing.stores`.
"""

from __future__ import annotations

import inspect
import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path

from rag.core.analysis import KeywordAnalysis
from rag.core.errors import REBUILD_HINT, ConfigError, StoreError
from rag.core.settings import StoreSettings
from rag.stores.base import StoredChunk, VectorStore, unit_rows

__all__ = [
    "REBUILD_HINT", "StoreTraits", "StoredChunk", "VectorStore", "available_stores", "create_store", "drop_store",
    "local_store_folders", "store_traits", "unit_rows",
]

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "rag.vector_stores"

StoreFactory = Callable[..., VectorStore]



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


def _create_qdrant(
    *, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool = False,
    analysis: KeywordAnalysis | None = None, any_dimension: bool = False,
) -> VectorStore:
    from rag.stores.qdrant import create_qdrant_store

    return create_qdrant_store(
        data_dir=data_dir, dimension=dimension, options=options, read_only=read_only, analysis=analysis,
        any_dimension=any_dimension,
    )


def _create_pgvector(
    *, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool = False, any_dimension: bool = False
) -> VectorStore:
    # Imported here: the module imports rag.stores, and psycopg is only needed by those who select it.
    from rag.stores.pgvector import create_pgvector_store

    return create_pgvector_store(
        data_dir=data_dir, dimension=dimension, options=options, read_only=read_only, any_dimension=any_dimension
    )


def _create_opensearch(
    *, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool = False, any_dimension: bool = False
) -> VectorStore:
    from rag.stores.opensearch import create_opensearch_store

    return create_opensearch_store(
        data_dir=data_dir, dimension=dimension, options=options, read_only=read_only, any_dimension=any_dimension
    )


BUILTIN_STORES: dict[str, StoreFactory] = {
    "faiss": _create_faiss, "qdrant": _create_qdrant, "pgvector": _create_pgvector, "opensearch": _create_opensearch,
}


@dataclass(frozen=True, slots=True)
class StoreTraits:
    """What the engine must know about a configured store without naming its backend.

    Attributes:
        local_folder: the subfolder of the data directory that holds all of the store's data, when it keeps
            its data there (FAISS; Qdrant's local mode), so that deleting the folder drops the store; ``None``
            when the data lives elsewhere (a server, an embedded Postgres, a plugin's storage) and dropping it
            means opening the store.
        single_client: the data admits one open client at a time (Qdrant's local mode locks its folder), so
            a writer closes the readers' store before it opens its own.
        uses_collection: ``store.collection`` names the store's data, so it is part of the index identity.
    """

    local_folder: str | None = None
    single_client: bool = False
    uses_collection: bool = True


# The data-directory subfolders of the built-in backends that can keep their data there.
_LOCAL_FOLDERS = {"faiss": "faiss", "qdrant": "qdrant"}


def store_traits(kind: str, options: StoreSettings) -> StoreTraits:
    """The :class:`StoreTraits` of store ``kind`` configured by ``options`` (a plugin's are the defaults:
    its data lives elsewhere and is named by ``store.collection``)."""
    if kind == "faiss":
        return StoreTraits(local_folder=_LOCAL_FOLDERS["faiss"], uses_collection=False)
    if kind == "qdrant" and not options.url:
        return StoreTraits(local_folder=_LOCAL_FOLDERS["qdrant"], single_client=True)
    return StoreTraits()


def local_store_folders() -> tuple[str, ...]:
    """Every data-directory subfolder a built-in backend may keep its data in (a rebuild removes them all,
    so that the files of a store used before a change of ``store.kind`` do not linger)."""
    return tuple(sorted(set(_LOCAL_FOLDERS.values())))


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
    kind: str,
    *,
    data_dir: Path,
    dimension: int,
    options: StoreSettings,
    read_only: bool = False,
    analysis: KeywordAnalysis | None = None,
) -> VectorStore:
    """Open (creating if needed) the vector store ``kind`` for an index in ``data_dir``.

    Args:
        kind: ``"faiss"``, ``"qdrant"``, ``"pgvector"``, ``"opensearch"`` or the name of a
            ``rag.vector_stores`` entry point.
        data_dir: the index's data directory; local backends keep their files in a subfolder of it.
        dimension: the embedding dimension the store must hold.
        options: the ``[store]`` settings (index type, server URL, API key, collection, plugin options).
        read_only: the caller only searches; a local backend must then create and write no file.
        analysis: how keyword search analyses and scores text (``[retrieval]``), for a store that indexes
            keywords itself; ``None``: the defaults.

    Returns:
        An open store; the caller closes it.

    Raises:
        ConfigError: ``kind`` names no known backend (the message lists the available ones).
        StoreError: a plugin failed to load or returned something that is not a ``VectorStore``, or the
            backend could not open its storage.
        IndexMismatchError: the existing index holds vectors of another dimension.
    """
    store = _open(kind, data_dir, dimension, options, read_only=read_only, analysis=analysis)
    log.debug("opened %s vector store (dimension %d) for %s", kind, dimension, data_dir)
    return store


def drop_store(
    kind: str, *, data_dir: Path, dimension: int, options: StoreSettings, analysis: KeywordAnalysis | None = None
) -> None:
    """Delete the data of store ``kind`` whatever dimension it holds (``rag ingest --rebuild``), so that the
    next :func:`create_store` starts empty, at ``dimension``.

    A store whose data lies in a data-directory subfolder (:attr:`StoreTraits.local_folder`) is dropped by
    deleting the folder. Any other is opened and :meth:`~rag.stores.base.VectorStore.drop`-ped; a factory
    that takes ``any_dimension`` is asked to open a collection of another size (after a model change) too.

    Args:
        kind, data_dir, dimension, options, analysis: as for :func:`create_store`.

    Raises:
        ConfigError: ``kind`` names no known backend.
        StoreError: the store could not be opened or dropped.
        IndexMismatchError: the store holds vectors of another dimension and its factory cannot open it anyway.
    """
    folder = store_traits(kind, options).local_folder
    if folder is not None:
        shutil.rmtree(Path(data_dir) / folder, ignore_errors=True)
        return
    store = _open(kind, data_dir, dimension, options, analysis=analysis, any_dimension=True)
    store.drop()  # and closes it
    log.info("dropped the %s vector store of %s", kind, data_dir)


def _factory(kind: str) -> StoreFactory:
    factory = BUILTIN_STORES.get(kind)
    if factory is not None:
        return factory
    plugin = _plugins().get(kind)
    if plugin is None:
        raise ConfigError(
            f"unknown vector store {kind!r}; available: {', '.join(available_stores())} "
            f"(set store.kind / RAG_STORE__KIND, or install a plugin for the {ENTRY_POINT_GROUP!r} group)"
        )
    try:
        return plugin.load()
    except Exception as exc:  # a broken plugin must not take the whole CLI down with a traceback
        raise StoreError(f"cannot load vector store plugin {kind!r} ({plugin.value}): {exc}") from exc


def _open(kind: str, data_dir: Path, dimension: int, options: StoreSettings, **optional: object) -> VectorStore:
    """Call ``kind``'s factory, passing each of the ``optional`` keywords only if it takes it.

    A ``None`` one is left out. ``read_only`` also goes to a factory that takes ``**kwargs``, as it always
    has; the later keywords only to one that names them, so that a plugin forwarding ``**kwargs`` to a
    stricter constructor keeps working. A factory that lacks ``any_dimension`` opens the store at
    ``dimension`` (and may raise IndexMismatchError).
    """
    factory = _factory(kind)
    kwargs: dict[str, object] = {"data_dir": Path(data_dir), "dimension": dimension, "options": options}
    for name, value in optional.items():
        if value is not None and _accepts(factory, name, var_keyword=name == "read_only"):
            kwargs[name] = value
    store = factory(**kwargs)
    if not isinstance(store, VectorStore):
        raise StoreError(f"vector store plugin {kind!r} returned {type(store).__name__}, not a VectorStore")
    return store


def _accepts(factory: StoreFactory, name: str, *, var_keyword: bool = True) -> bool:
    """Whether ``factory`` takes the keyword ``name`` (or, with ``var_keyword``, any keyword)."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return False
    if name in parameters:
        return True
    return var_keyword and any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values())
