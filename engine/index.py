"""How one data directory's index is opened: the catalog, the vector store, the keyword side.

:class:`IndexFiles` holds nothing open itself; the reading and writing services ask it for the pieces they
hold (read-only or writable) and close them themselves. Store construction lives here, in one place.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from rag.core.analysis import KeywordAnalysis
from rag.core.catalog import Catalog
from rag.core.embeddings import SentenceEmbedder
from rag.core.errors import REBUILD_HINT, ConfigError
from rag.core.settings import Settings
from rag.core.shared_state import PostgresCatalog, state_target
from rag.core.types import indexed_text
from rag.retrieve.bm25 import Analyzer, BM25Index
from rag.retrieve.keyword import KeywordIndex, LocalBM25
from rag.stores import create_store, drop_store, local_store_folders, store_traits
from rag.stores.base import ProvidesKeywordIndex, VectorStore

log = logging.getLogger(__name__)

CATALOG_NAME = "catalog.sqlite"
# Local store folders and derived files under the data directory, removed by a rebuild.
LOCAL_FOLDERS = (*local_store_folders(), "bm25")


class IndexFiles:
    """Opens the pieces of the index in ``settings.data_dir`` for the services that hold them.

    Args:
        settings: the configuration in force.
        embedder: returns the embedding model; called only when a dimension is not yet recorded in the
            catalog (so opening an existing index loads no model).
    """

    def __init__(self, settings: Settings, embedder: Callable[[], SentenceEmbedder]) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self._embedder = embedder
        #: The shared database holding the catalog and writer lock, or None for files in ``data_dir``.
        self.shared_state = state_target(settings)

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / CATALOG_NAME

    def open_catalog(self, *, read_only: bool) -> Catalog:
        """The catalog in the shared database when one is configured, else the SQLite file in ``data_dir``."""
        if self.shared_state is not None:
            return PostgresCatalog(self.shared_state, self.settings.store.collection, read_only=read_only)
        return Catalog(self.catalog_path, read_only=read_only)

    def dimension(self, catalog: Catalog) -> int:
        """From the catalog when an index exists (no model load), else from the model."""
        recorded = catalog.get_meta().get("dimension")
        return int(recorded) if recorded else self._embedder().dimension

    def identity(self, dimension: int) -> dict[str, str]:
        """What an index is built with; a query or ingest with other values is refused.

        The store's server URL and collection are part of it: a catalog never describes another
        collection's vectors, so pointing at a new, empty collection is an error, not empty results.
        """
        store = self.settings.store
        return {
            "embedding_model": self.settings.embedding.model,
            "dimension": str(dimension),
            "store": store.kind,
            "store_url": store.url or "",
            "store_collection": store.collection if store_traits(store.kind, store).uses_collection else "",
        }

    def open_store(self, catalog: Catalog, *, read_only: bool) -> VectorStore:
        """The configured store, after checking ``catalog`` was built with these settings (a writer adopts them).

        Raises:
            IndexMismatchError: the index was built with another model, dimension or store.
        """
        dimension = self.dimension(catalog)
        catalog.check_identity(self.identity(dimension), REBUILD_HINT, adopt=not read_only)
        return create_store(
            self.settings.store.kind,
            data_dir=self.data_dir,
            dimension=dimension,
            options=self.settings.store,
            read_only=read_only,
            analysis=KeywordAnalysis.from_settings(self.settings.retrieval),
        )

    def drop_configured_store(self) -> None:
        """Drop the configured store (a remote collection or a plugin's storage), whatever dimension it holds,
        so that the next open recreates it at the new one."""
        drop_store(
            self.settings.store.kind, data_dir=self.data_dir, dimension=self._embedder().dimension,
            options=self.settings.store, analysis=KeywordAnalysis.from_settings(self.settings.retrieval),
        )

    def analyzer(self) -> Analyzer:
        """The BM25 text analysis ``[retrieval]`` configures."""
        cfg = self.settings.retrieval
        return Analyzer(stemmer=cfg.stemmer, stopwords=cfg.stopwords)

    def load_bm25(self, catalog: Catalog, *, save: bool) -> BM25Index:
        """The persisted BM25 index, or one built from ``catalog`` when it is missing, stale or unreadable.

        Only a writer (``save``) stores what it built; a reader keeps it in memory.
        """
        cfg = self.settings.retrieval
        folder = self.data_dir / "bm25"
        index = BM25Index.load(folder, self.analyzer(), cfg.bm25_method, cfg.bm25_k1, cfg.bm25_b)
        if index is not None and index.generation == catalog.generation:
            return index
        rows = catalog.chunk_rows()
        index = BM25Index(cfg.bm25_method, cfg.bm25_k1, cfg.bm25_b, self.analyzer())
        log.info("building BM25 over %d chunks (generation %d)", len(rows.ids), rows.generation)
        # The indexed text: a chunk's context prefix (chunking.context_prefix) is searchable, as it is embedded.
        index.build(rows.ids, [indexed_text(t, m) for t, m in zip(rows.texts, rows.metadata)], rows.metadata)
        index.generation = rows.generation
        if save:
            index.save(folder, rows.generation)
        return index

    def store_keyword_index(self, store: VectorStore, *, strict: bool = True) -> KeywordIndex | None:
        """The store's own keyword search when ``retrieval.keyword`` lets it be used, else ``None`` (local BM25).

        ``auto`` (the default) takes the store's when it offers one (see
        :class:`~rag.stores.base.ProvidesKeywordIndex`), ``local`` never does, ``store`` insists on it.

        Raises:
            ConfigError: ``retrieval.keyword`` is unknown, or (``strict``) it is ``store`` and the store
                offers no keyword search.
        """
        mode = self.settings.retrieval.keyword
        if mode == "local":
            return None
        provided = store.keyword_index() if isinstance(store, ProvidesKeywordIndex) else None
        if provided is None and mode == "store" and strict:
            raise ConfigError(
                f"retrieval.keyword = 'store', but the {self.settings.store.kind} store offers no keyword search "
                "(or its table predates it and no ingest has run since); use 'auto' or 'local'"
            )
        return provided

    def keyword_side(
        self, store: VectorStore, catalog: Catalog, *, save: bool
    ) -> tuple[KeywordIndex, BM25Index | None]:
        """The keyword index hybrid search uses, and the local BM25 index behind it (``None`` if the store's).

        The local index is loaded, or built from ``catalog`` and (``save``) persisted, as :meth:`load_bm25` says.
        """
        provided = self.store_keyword_index(store)
        if provided is not None:
            return provided, None
        bm25 = self.load_bm25(catalog, save=save)
        return LocalBM25(bm25), bm25
