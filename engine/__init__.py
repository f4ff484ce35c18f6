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
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager, ExitStack
from pathlib import Path
from typing import Any

from rag.core.answers import Answer
from rag.core.catalog import Catalog
from rag.core.embeddings import SentenceEmbedder
from rag.core.filters import Filter
from rag.core.ingest_report import IngestReport, Progress
from rag.core.query import Fusion, QueryOptions, query_options
from rag.core.settings import Settings
from rag.core.types import Hit
from rag.engine.index import CATALOG_NAME, IndexFiles
from rag.engine.llm import LLMServices
from rag.engine.reading import ReadingService
from rag.engine.state import EmbedderProvider, ReadView
from rag.engine.writing import Writer, WritingService
from rag.ingest.pipeline import DocumentInput
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
        self._llm = LLMServices(settings, self._embedder.count_tokens, self._lock, llm_servers, embedder=self._embedder)
        self._reading = ReadingService(
            settings, self._index, self._view, embedder=self._embedder, transformer=self._llm.transformer,
            reranker=self._llm.reranker, generator=self._llm.generator, lock=self._lock,
            count_tokens=self._embedder.count_tokens,
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

    # The query methods keep their documented keyword arguments: a convenience that builds one
    # QueryOptions (give it as ``options`` instead, not both), which is all the reading service takes.

    def search(  # noqa: PLR0913 -- the documented keyword API; it builds one QueryOptions
        self,
        query: str,
        k: int | None = None,
        *,
        alpha: float | None = None,
        fusion: Fusion | None = None,
        filter: Filter | Mapping[str, Any] | str | list[str] | None = None,
        min_score: float | None = None,
        max_per_doc: int | None = None,
        hyde: bool | None = None,
        rewrite: bool | None = None,
        multi_query: int | None = None,
        rerank: bool | str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        options: QueryOptions | None = None,
    ) -> list[Hit]:
        """Hybrid search over the last committed state; unset options take the configured defaults.

        The options are those of :meth:`retrieve`, which returns the stage record as well.

        Raises:
            IndexNotFoundError: nothing has been ingested yet.
            IndexMismatchError: the index was built with another embedding model or store.
            FilterError / ConfigError: a malformed filter or argument.
        """
        return self._reading.search(query, query_options(
            options, k=k, alpha=alpha, fusion=fusion, filter=filter, min_score=min_score, max_per_doc=max_per_doc,
            hyde=hyde, rewrite=rewrite, multi_query=multi_query, rerank=rerank, history=history,
        ))

    def retrieve(  # noqa: PLR0913 -- the documented keyword API; it builds one QueryOptions
        self,
        query: str,
        k: int | None = None,
        *,
        alpha: float | None = None,
        fusion: Fusion | None = None,
        filter: Filter | Mapping[str, Any] | str | list[str] | None = None,
        min_score: float | None = None,
        max_per_doc: int | None = None,
        hyde: bool | None = None,
        rewrite: bool | None = None,
        multi_query: int | None = None,
        rerank: bool | str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        options: QueryOptions | None = None,
    ) -> Retrieval:
        """Search through the retrieval stages (see :mod:`rag.retrieve.pipeline`) and say what each did.

        Args:
            options: the query's options as one value (see :class:`~rag.core.query.QueryOptions`,
                which documents each); the keyword arguments are a convenience that builds it, so give
                one or the other. Among them:
            hyde, rewrite, multi_query: the query transforms (default: ``[retrieval]``); each asks the
                configured LLM and falls back to the plain query, with a warning, if it fails.
            rerank: ``True`` for the configured reranker (``[rerank] model``), a model id, local folder
                or ``"llm"`` for that one, ``False`` for none (default: ``rerank.enabled``).
            history: earlier turns (``{"role", "content"}``, oldest first); the query is then a
                follow-up, rewritten into a standalone question before anything else.

        Returns:
            The hits with the searched question, the per-stage ``explain`` record and any warnings.

        Raises:
            ConfigError: an option is out of range, both ``options`` and keyword options were given, or
                reranking was asked for but no model is configured or it cannot be loaded; plus what
                :meth:`search` raises.
        """
        return self._reading.retrieve(query, query_options(
            options, k=k, alpha=alpha, fusion=fusion, filter=filter, min_score=min_score, max_per_doc=max_per_doc,
            hyde=hyde, rewrite=rewrite, multi_query=multi_query, rerank=rerank, history=history,
        ))

    def ask(  # noqa: PLR0913 -- the documented keyword API; it builds one QueryOptions
        self,
        question: str,
        k: int | None = None,
        *,
        alpha: float | None = None,
        fusion: Fusion | None = None,
        filter: Filter | Mapping[str, Any] | str | list[str] | None = None,
        min_score: float | None = None,
        max_per_doc: int | None = None,
        hyde: bool | None = None,
        rewrite: bool | None = None,
        multi_query: int | None = None,
        rerank: bool | str | None = None,
        history: Sequence[Mapping[str, Any]] | None = None,
        on_sources: Callable[[list[Hit]], None] | None = None,
        on_token: Callable[[str], None] | None = None,
        options: QueryOptions | None = None,
    ) -> Answer:
        """Retrieve, then answer ``question`` from the hits with numbered citations.

        Args:
            question: the user's question; with ``history`` a follow-up, answered as its standalone form.
                The options (``options``, or the keyword arguments that build it) are those of
                :meth:`retrieve`.
            on_sources: called with the retrieved hits before generation starts (stream them first).
            on_token: called with each piece of answer text as it is generated.

        Returns:
            The answer; its ``retrieval`` says how the hits were found, and stage warnings lead its
            ``warnings``.

        Raises:
            AnswerError: the LLM endpoint failed; its ``hits`` are the retrieved sources.
            plus what :meth:`retrieve` raises.
        """
        options = query_options(
            options, k=k, alpha=alpha, fusion=fusion, filter=filter, min_score=min_score, max_per_doc=max_per_doc,
            hyde=hyde, rewrite=rewrite, multi_query=multi_query, rerank=rerank, history=history,
        )
        return self._reading.ask(question, options, on_sources=on_sources, on_token=on_token)

    def expand(self, hits: list[Hit], mode: str | None = None) -> list[Hit]:
        """``hits`` widened with neighbouring chunks or their section, as :meth:`ask` hands them to the
        generator (``mode`` defaults to ``generation.expand``); see :mod:`rag.engine.expand`.

        Raises:
            ConfigError: ``mode`` is not ``none``, ``neighbours`` or ``section``.
        """
        return self._reading.expand(hits, mode)

    def documents(
        self, *, offset: int = 0, limit: int = 50, filter: Filter | Mapping[str, Any] | str | list[str] | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """A page of the indexed documents (by id) whose first chunk's metadata matches ``filter``; see
        :meth:`ReadingService.documents <rag.engine.reading.ReadingService.documents>`."""
        return self._reading.documents(offset=offset, limit=limit, filter=filter)

    def document(self, doc_id: str) -> dict[str, Any] | None:
        """One document with its chunks, or ``None`` if unknown."""
        return self._reading.document(doc_id)

    def chunk(self, chunk_id: str, neighbours: int = 1) -> dict[str, Any] | None:
        """One chunk with its offsets and up to ``neighbours`` adjacent chunks on each side, or ``None`` if
        unknown; see :meth:`ReadingService.chunk <rag.engine.reading.ReadingService.chunk>`."""
        return self._reading.chunk(chunk_id, neighbours)

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

    def writing(
        self,
        *,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
        purpose: str = "ingest",
        rebuild: bool = False,
    ) -> AbstractContextManager[Writer]:
        """Hold the writer lock and the writable catalog and store for a write operation; see
        :meth:`WritingService.writing <rag.engine.writing.WritingService.writing>`."""
        return self._writing.writing(wait=wait, on_wait=on_wait, purpose=purpose, rebuild=rebuild)

    def ingest(
        self,
        paths: list[Path],
        metadata: Mapping[str, Any] | None = None,
        *,
        rebuild: bool = False,
        progress: Progress | None = None,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
        root: Path | None = None,
        ray: bool | str | Any = None,
    ) -> IngestReport:
        """Bring the index in step with ``paths``; see :meth:`WritingService.ingest
        <rag.engine.writing.WritingService.ingest>` for the arguments."""
        return self._writing.ingest(
            paths, metadata, rebuild=rebuild, progress=progress, wait=wait, on_wait=on_wait, root=root, ray=ray
        )

    def ingest_documents(
        self,
        documents: Iterable[DocumentInput | Mapping[str, Any]],
        metadata: Mapping[str, Any] | None = None,
        *,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
    ) -> IngestReport:
        """Ingest documents given in memory (``{"id", "text", "metadata"?, "title"?, "source"?}``); unchanged
        ones cost nothing. See :meth:`WritingService.ingest_documents
        <rag.engine.writing.WritingService.ingest_documents>`."""
        return self._writing.ingest_documents(documents, metadata, wait=wait, on_wait=on_wait)

    def delete_documents(
        self, doc_ids: Iterable[str], *, wait: bool = True, on_wait: Callable[[str], None] | None = None
    ) -> IngestReport:
        """Remove documents by id (unknown ids are ignored); ``report.removed`` lists the ones removed."""
        return self._writing.delete_documents(doc_ids, wait=wait, on_wait=on_wait)

    def _writer_lock(self, purpose: str, *, wait: bool, on_wait: Callable[[str], None] | None) -> ExitStack:
        # Kept for Workspace.delete, which wipes a collection under its writer lock.
        return self._writing.writer_lock(purpose, wait=wait, on_wait=on_wait)

    def _wipe(self) -> None:
        # Kept for Workspace.delete (see _writer_lock); the caller holds the writer lock.
        self._writing.wipe()

    # -- LLM services: see LLMServices ------------------------------------------------------------

    def generator(self) -> Any:
        """The answer generator ``generation.mode`` picks, made on first use: extractive (no LLM), or an
        :class:`OpenAIChatGenerator` for the configured endpoint; with no ``llm.base_url`` the latter starts
        the embedded llama.cpp server and keeps it until :meth:`close`."""
        return self._llm.generator()

    def completer(self) -> Any:
        """The :class:`~rag.generate.completion.ChatCompleter` the retrieval stages use, made on first use."""
        return self._llm.completer()

    def reranker(self, rerank: bool | str | None = None) -> Reranker | None:
        """The reranker ``rerank`` asks for (see :meth:`retrieve`), loaded once and kept; ``None`` for none."""
        return self._llm.reranker(rerank)
