"""The library facade: one data directory, one configuration, the whole pipeline.

The CLI (and the REST API) are thin layers over :class:`RagEngine`; a Python user calls the same
methods::

    from rag.core.settings import load_settings
    from rag.engine import RagEngine

    with RagEngine(load_settings(data_dir="./.rag")) as engine:
        engine.ingest([Path("docs")])
        for hit in engine.search("how does incremental ingest work?", k=3):
            print(hit.score, hit.chunk.citation_label())
        print(engine.ask("How do I rebuild the index?").text)

An engine is a *reader* until it writes: searching, answering and ``status`` open every file read-only and
write nothing, so they work while another process ingests, and on a read-only data directory. Writes
(:meth:`RagEngine.ingest`, :meth:`~RagEngine.ingest_documents`, :meth:`~RagEngine.delete_documents`) take
the data directory's writer lock for their whole run, open the files for writing, and release both when
done. Every read component (store, keyword index, retriever) is stamped with the catalog generation it was
loaded at; :meth:`RagEngine.refresh` (run before every search) reloads them when another process, or this
one, has committed since. The engine is safe to share between threads.

The facade is small: it builds the services below once, over one lock, and each public method delegates
to one of them:

- :class:`~rag.engine.reading.ReadingService` (``engine/reading.py``): search, retrieve, ask, documents,
  status, and the read components (store, keyword side, retriever) of the last committed state;
- :class:`~rag.engine.writing.WritingService` (``engine/writing.py``): ingest, delete, rebuild and wipe
  under the writer lock;
- :class:`~rag.engine.llm.LLMServices` (``engine/llm.py``): the generator, the stage completer, the query
  transformer and the rerankers;
- what they share (``engine/index.py``, ``engine/state.py``): :class:`~rag.engine.index.IndexFiles` opens
  the catalog, store and keyword side; :class:`~rag.engine.state.ReadView` holds the reader's catalog and
  components; :class:`~rag.engine.state.EmbedderProvider` loads the embedding model once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

from rag.core.catalog import Catalog
from rag.core.embeddings import SentenceEmbedder
from rag.core.settings import Settings
from rag.core.types import Hit
from rag.engine.index import CATALOG_NAME, IndexFiles
from rag.engine.llm import LLMServices
from rag.engine.reading import ReadingService
from rag.engine.state import EmbedderProvider, ReadView
from rag.engine.writing import Writer, WritingService
from rag.generate.answer import Answer
from rag.ingest.pipeline import DocumentInput, IngestReport
from rag.retrieve.bm25 import BM25Index
from rag.retrieve.hybrid import HybridRetriever
from rag.retrieve.pipeline import Reranker, Retrieval
from rag.stores.base import VectorStore

__all__ = ["CATALOG_NAME", "RagEngine", "Writer"]


class RagEngine:
    """Ingest, search and answer over the index in ``settings.data_dir``.

    Args:
        settings: the configuration in force.
        project_root: file ids are paths relative to it; defaults to the data directory's parent.
        llm_servers: embedded LLM servers shared with other engines (a workspace's); ``None``: this
            engine starts its own when it first needs one.
    """

    def __init__(
        self, settings: Settings, project_root: Path | str | None = None, *, llm_servers: Any = None
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.project_root = Path(project_root or self.data_dir.resolve().parent).resolve()
        # One lock over the services' made-once and reloadable components, as one engine had it.
        self._lock = threading.RLock()
        self._embedder = EmbedderProvider(settings.embedding)
        self._index = IndexFiles(settings, self._embedder)
        #: The shared database holding the catalog and writer lock, or None for files in ``data_dir``.
        self.shared_state = self._index.shared_state
        self._view = ReadView(self._index, self._lock)
        self._llm = LLMServices(settings, self._embedder.count_tokens, self._lock, llm_servers)
        self._reading = ReadingService(
            settings, self._index, self._view, embedder=self._embedder, transformer=self._llm.transformer,
            reranker=self._llm.reranker, generator=self._llm.generator, lock=self._lock,
        )
        self._writing = WritingService(
            settings, self._index, self._view, embedder=self._embedder, project_root=self.project_root,
            lock=self._lock,
        )

    def __enter__(self) -> RagEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the embedded LLM server if this engine started one, and release the store and catalog."""
        with self._lock:
            self._llm.close()
            self._view.close()

    # -- shared components ------------------------------------------------------------------------

    @property
    def catalog_path(self) -> Path:
        return self._index.catalog_path

    @property
    def catalog(self) -> Catalog:
        """The catalog, opened read-only (writes go through :meth:`writing`)."""
        return self._view.catalog

    @property
    def embedder(self) -> SentenceEmbedder:
        """The embedding model, loaded on first use; assigning another loaded model makes the engine use it."""
        return self._embedder()

    @embedder.setter
    def embedder(self, embedder: SentenceEmbedder) -> None:
        self._embedder.replace(embedder)

    def identity(self, dimension: int) -> dict[str, str]:
        """What an index is built with (see :meth:`IndexFiles.identity <rag.engine.index.IndexFiles.identity>`)."""
        return self._index.identity(dimension)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the embedding tokenizer: the budget unit for prompt packing."""
        return self._embedder.count_tokens(text)

    # -- reading: see ReadingService --------------------------------------------------------------

    def search(self, query: str, k: int | None = None, **options: Any) -> list[Hit]:
        """Hybrid search over the last committed state; the options are :meth:`ReadingService.search
        <rag.engine.reading.ReadingService.search>`'s (unset ones take the configured defaults)."""
        return self._reading.search(query, k, **options)

    def retrieve(self, query: str, k: int | None = None, **options: Any) -> Retrieval:
        """Search through the retrieval stages and say what each did; the options are
        :meth:`ReadingService.retrieve <rag.engine.reading.ReadingService.retrieve>`'s."""
        return self._reading.retrieve(query, k, **options)

    def ask(self, question: str, k: int | None = None, **options: Any) -> Answer:
        """Retrieve, then answer ``question`` from the hits with numbered citations; the options
        (``on_sources`` and ``on_token`` included) are :meth:`ReadingService.ask
        <rag.engine.reading.ReadingService.ask>`'s."""
        return self._reading.ask(question, k, **options)

    def documents(self, **page: Any) -> tuple[int, list[dict[str, Any]]]:
        """A page of the indexed documents (``offset``, ``limit``, ``filter``); see
        :meth:`ReadingService.documents <rag.engine.reading.ReadingService.documents>`."""
        return self._reading.documents(**page)

    def document(self, doc_id: str) -> dict[str, Any] | None:
        """One document with its chunks, or ``None`` if unknown."""
        return self._reading.document(doc_id)

    def status(self) -> dict[str, Any]:
        """Documents, chunks, model, store and size on disk, from the last committed state."""
        return self._reading.status()

    def refresh(self) -> bool:
        """Pick up commits made since the read components were loaded, by any process.

        Returns:
            ``True`` if the catalog moved on (the components reload on next use), else ``False``.
        """
        return self._reading.refresh()

    @property
    def store(self) -> VectorStore:
        """The vector store of the current committed state (read-only)."""
        return self._reading.store

    @property
    def bm25(self) -> BM25Index | None:
        """The local BM25 index of the current committed state; ``None`` when the store's own keyword
        search is used instead (``retriever.keyword`` is the keyword side either way)."""
        return self._reading.bm25

    @property
    def retriever(self) -> HybridRetriever:
        """The hybrid retriever of the current committed state."""
        return self._reading.retriever

    # -- writing: see WritingService --------------------------------------------------------------

    def writing(self, **options: Any) -> AbstractContextManager[Writer]:
        """Hold the writer lock and the writable catalog and store for a write operation (``wait``,
        ``on_wait``, ``purpose``, ``rebuild``); see :meth:`WritingService.writing
        <rag.engine.writing.WritingService.writing>`."""
        return self._writing.writing(**options)

    def ingest(self, paths: list[Path], metadata: Mapping[str, Any] | None = None, **options: Any) -> IngestReport:
        """Bring the index in step with ``paths``; the options (``rebuild``, ``progress``, ``wait``,
        ``on_wait``, ``root``, ``ray``) are :meth:`WritingService.ingest <rag.engine.writing.WritingService.ingest>`'s."""
        return self._writing.ingest(paths, metadata, **options)

    def ingest_documents(
        self, documents: Iterable[DocumentInput | Mapping[str, Any]], metadata: Mapping[str, Any] | None = None,
        **options: Any,
    ) -> IngestReport:
        """Ingest documents given in memory (``{"id", "text", "metadata"?, "title"?, "source"?}``); the
        options (``wait``, ``on_wait``) are :meth:`WritingService.ingest_documents
        <rag.engine.writing.WritingService.ingest_documents>`'s."""
        return self._writing.ingest_documents(documents, metadata, **options)

    def delete_documents(self, doc_ids: Iterable[str], **options: Any) -> IngestReport:
        """Remove documents by id (unknown ids are ignored); ``report.removed`` lists the ones removed."""
        return self._writing.delete_documents(doc_ids, **options)

    def _writer_lock(self, purpose: str, *, wait: bool, on_wait: Callable[[str], None] | None) -> ExitStack:
        # Kept for Workspace.delete, which wipes a collection under its writer lock.
        return self._writing.writer_lock(purpose, wait=wait, on_wait=on_wait)

    def _wipe(self) -> None:
        # Kept for Workspace.delete (see _writer_lock); the caller holds the writer lock.
        self._writing.wipe()

    # -- LLM services: see LLMServices ------------------------------------------------------------

    def generator(self) -> Any:
        """The :class:`OpenAIChatGenerator` for the configured endpoint, made on first use; with no
        ``llm.base_url`` the embedded llama.cpp server is started and kept until :meth:`close`."""
        return self._llm.generator()

    def completer(self) -> Any:
        """The :class:`~rag.generate.completion.ChatCompleter` the retrieval stages use, made on first use."""
        return self._llm.completer()

    def reranker(self, rerank: bool | str | None = None) -> Reranker | None:
        """The reranker ``rerank`` asks for (see :meth:`retrieve`), loaded once and kept; ``None`` for none."""
        return self._llm.reranker(rerank)
