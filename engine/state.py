"""What the engine's services share: the embedding model and the reader's view of the committed index.

Reading loads its components into the :class:`ReadView`; writing drops them (and the read-only catalog)
around a write or a wipe and refreshes the view when done. Both hold the engine's one lock while they
touch it, so a search never sees a half-replaced view.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from rag.core.catalog import Catalog
from rag.core.embeddings import SentenceEmbedder
from rag.core.settings import EmbeddingSettings
from rag.engine.index import IndexFiles
from rag.retrieve.bm25 import BM25Index
from rag.retrieve.hybrid import HybridRetriever
from rag.retrieve.keyword import KeywordIndex
from rag.retrieve.pipeline import RetrievalPipeline
from rag.stores.base import VectorStore


class EmbedderProvider:
    """The embedding model ``[embedding]`` configures, loaded on first call (seconds) and kept.

    Services take it as a plain ``Callable[[], SentenceEmbedder]``; :meth:`replace` puts another loaded
    model in its place (benchmarks share one model between engines).
    """

    def __init__(self, settings: EmbeddingSettings) -> None:
        self._settings = settings
        self._embedder: SentenceEmbedder | None = None

    def __call__(self) -> SentenceEmbedder:
        if self._embedder is None:
            cfg = self._settings
            self._embedder = SentenceEmbedder(
                cfg.model, batch_size=cfg.batch_size, device=cfg.device, onnx_queries=cfg.onnx_queries
            )
        return self._embedder

    def replace(self, embedder: SentenceEmbedder) -> None:
        """Use ``embedder`` from now on (components loaded before keep the one they were made with)."""
        self._embedder = embedder

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the embedding tokenizer: the budget unit for prompt packing (torch-free
        when the query encoder is; see :meth:`SentenceEmbedder.count_tokens`)."""
        return self().count_tokens(text)


@dataclass(frozen=True, slots=True)
class ReadComponents:
    """The read components of one committed state, loaded together and replaced together."""

    generation: int
    store: VectorStore
    keyword: KeywordIndex
    bm25: BM25Index | None  # the local index behind ``keyword``; None when the store searches text itself
    retriever: HybridRetriever
    pipeline: RetrievalPipeline


class ReadView:
    """The read-only catalog and the components loaded at its generation (``None`` until loaded).

    Args:
        index: opens the catalog.
        lock: the engine's lock; every method takes it, so callers may hold it around several calls.
    """

    def __init__(self, index: IndexFiles, lock: threading.RLock) -> None:
        self._index = index
        self._lock = lock
        self.catalog: Catalog = index.open_catalog(read_only=True)
        self.components: ReadComponents | None = None

    def reopen_catalog_if_created(self) -> None:
        # An engine made before the first ingest holds an empty in-memory catalog; open the file once it exists.
        with self._lock:
            if self.catalog.is_placeholder and self._index.catalog_path.exists():
                self.catalog.close()
                self.catalog = self._index.open_catalog(read_only=True)

    def drop_components(self) -> None:
        """Close the loaded components' store and forget them; they reload on next use."""
        with self._lock:
            if self.components is not None:
                self.components.store.close()
                self.components = None

    def refresh(self) -> bool:
        """Pick up commits made since the components were loaded, by any process.

        Returns:
            ``True`` if the catalog moved on (the components reload on next use), else ``False``.
        """
        with self._lock:
            self.reopen_catalog_if_created()
            if self.components is None or self.components.generation == self.catalog.generation:
                return False
            self.drop_components()
            return True

    def close(self) -> None:
        """Release the components and the catalog (a wipe then calls :meth:`reopen`)."""
        with self._lock:
            self.drop_components()
            self.catalog.close()

    def reopen(self) -> None:
        """Open the catalog afresh after :meth:`close` (a wipe removed the files under it)."""
        with self._lock:
            self.catalog = self._index.open_catalog(read_only=True)
