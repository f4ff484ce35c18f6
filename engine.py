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
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

from rag.core.analysis import KeywordAnalysis
from rag.core.catalog import Catalog
from rag.core.embeddings import SentenceEmbedder
from rag.core.errors import (
    REBUILD_HINT, ConfigError, GenerationError, GenerationTimeout, IndexMismatchError, IndexNotFoundError, IngestError,
)
from rag.core.filters import Filter, parse_filter
from rag.core.query import Fusion, QueryOptions, query_options
from rag.core.lock import WriterLock
from rag.core.settings import Settings
from rag.core.shared_state import PostgresCatalog, PostgresWriterLock, state_target
from rag.core.types import Hit
from rag.generate.answer import Answer, AnswerError
from rag.ingest.chunking import SlidingWindowChunker
from rag.ingest.parsers import ParseLimits, ParserRegistry
from rag.ingest.pipeline import DocumentInput, Ingestor, IngestReport, Progress
from rag.retrieve.bm25 import Analyzer, BM25Index
from rag.retrieve.hybrid import HybridRetriever, PostFilter
from rag.retrieve.keyword import KeywordIndex, LocalBM25
from rag.retrieve.pipeline import Reranker, Retrieval, RetrievalPipeline, StageOptions
from rag.retrieve.transforms import QueryTransformer
from rag.stores import create_store, drop_store, local_store_folders, store_traits
from rag.stores.base import ProvidesKeywordIndex, VectorStore

log = logging.getLogger(__name__)

CATALOG_NAME = "catalog.sqlite"
# Local store folders and derived files under the data directory, removed by a rebuild.
_LOCAL_FOLDERS = (*local_store_folders(), "bm25")


@dataclass(frozen=True, slots=True)
class _ReadState:
    """The read components of one committed state, loaded together and replaced together."""

    generation: int
    store: VectorStore
    keyword: KeywordIndex
    bm25: BM25Index | None  # the local index behind ``keyword``; None when the store searches text itself
    retriever: HybridRetriever
    pipeline: RetrievalPipeline


@dataclass(frozen=True, slots=True)
class Writer:
    """What a write operation works with: the writable catalog and store, under the writer lock."""

    catalog: Catalog
    store: VectorStore


class RagEngine:
    """Ingest, search and answer over the index in ``settings.data_dir``.

    Args:
        settings: the configuration in force.
        project_root: file ids are paths relative to it; defaults to the data directory's parent.
    """

    def __init__(
        self, settings: Settings, project_root: Path | str | None = None, *, llm_servers: Any = None
    ) -> None:
        self.settings = settings
        #: Embedded LLM servers shared with other engines (a workspace's); ``None``: this engine's own.
        self._llm_servers = llm_servers
        self._llm_start = threading.Lock()  # not ``_lock``: searches must not wait for an LLM to start
        self.data_dir = settings.data_dir
        self.project_root = Path(project_root or self.data_dir.resolve().parent).resolve()
        self._lock = threading.RLock()
        #: The shared database holding the catalog and writer lock, or None for files in ``data_dir``.
        self.shared_state = state_target(settings)
        self._catalog = self._open_catalog(read_only=True)
        self._state: _ReadState | None = None
        self._llm = ExitStack()
        self._generator: Any = None
        self._endpoint: tuple[str, str, bool] | None = None
        self._transformer_instance: QueryTransformer | None = None
        self._completer: Any = None
        self._rerankers: dict[str, Reranker] = {}

    @property
    def catalog_path(self) -> Path:
        return self.data_dir / CATALOG_NAME

    def _open_catalog(self, *, read_only: bool) -> Catalog:
        if self.shared_state is not None:
            return PostgresCatalog(self.shared_state, self.settings.store.collection, read_only=read_only)
        return Catalog(self.catalog_path, read_only=read_only)

    def _writer_lock(
        self, purpose: str, *, wait: bool, on_wait: Callable[[str], None] | None
    ) -> ExitStack:
        """The data directory's writer lock and, with shared state, the collection's lock across replicas."""
        stack = ExitStack()
        try:
            stack.enter_context(WriterLock(self.data_dir, purpose, wait=wait, on_wait=on_wait))
            if self.shared_state is not None:
                stack.enter_context(PostgresWriterLock(
                    self.shared_state, self.settings.store.collection, purpose, wait=wait, on_wait=on_wait,
                ))
        except BaseException:
            stack.close()
            raise
        return stack

    @property
    def catalog(self) -> Catalog:
        """The catalog, opened read-only (writes go through :meth:`writing`)."""
        return self._catalog

    def __enter__(self) -> RagEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Stop the embedded LLM server if this engine started one, and release the store and catalog."""
        with self._lock:
            self._llm.close()
            self._generator = self._endpoint = self._transformer_instance = None
            if self._completer is not None and self._completer.cache is not None:
                self._completer.cache.close()
            self._completer = None
            self._rerankers.clear()
            self._drop_state()
            self._catalog.close()

    # -- components -------------------------------------------------------------------------------

    @cached_property
    def embedder(self) -> SentenceEmbedder:
        cfg = self.settings.embedding
        return SentenceEmbedder(cfg.model, batch_size=cfg.batch_size, device=cfg.device, onnx_queries=cfg.onnx_queries)

    def _dimension(self, catalog: Catalog) -> int:
        """From the catalog when an index exists (no model load), else from the model."""
        recorded = catalog.get_meta().get("dimension")
        return int(recorded) if recorded else self.embedder.dimension

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

    def _open_store(self, catalog: Catalog, *, read_only: bool) -> VectorStore:
        dimension = self._dimension(catalog)
        catalog.check_identity(self.identity(dimension), REBUILD_HINT, adopt=not read_only)
        return create_store(
            self.settings.store.kind,
            data_dir=self.data_dir,
            dimension=dimension,
            options=self.settings.store,
            read_only=read_only,
            analysis=KeywordAnalysis.from_settings(self.settings.retrieval),
        )

    def _analyzer(self) -> Analyzer:
        cfg = self.settings.retrieval
        return Analyzer(stemmer=cfg.stemmer, stopwords=cfg.stopwords)

    def _load_bm25(self, catalog: Catalog, *, save: bool) -> BM25Index:
        """The persisted BM25 index, or one built from ``catalog`` when it is missing, stale or unreadable.

        Only a writer (``save``) stores what it built; a reader keeps it in memory.
        """
        cfg = self.settings.retrieval
        folder = self.data_dir / "bm25"
        index = BM25Index.load(folder, self._analyzer(), cfg.bm25_method, cfg.bm25_k1, cfg.bm25_b)
        if index is not None and index.generation == catalog.generation:
            return index
        rows = catalog.chunk_rows()
        index = BM25Index(cfg.bm25_method, cfg.bm25_k1, cfg.bm25_b, self._analyzer())
        log.info("building BM25 over %d chunks (generation %d)", len(rows.ids), rows.generation)
        index.build(rows.ids, rows.texts, rows.metadata)
        index.generation = rows.generation
        if save:
            index.save(folder, rows.generation)
        return index

    def _store_keyword_index(self, store: VectorStore, *, strict: bool = True) -> KeywordIndex | None:
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

    def _keyword_side(
        self, store: VectorStore, catalog: Catalog, *, save: bool
    ) -> tuple[KeywordIndex, BM25Index | None]:
        """The keyword index hybrid search uses, and the local BM25 index behind it (``None`` if the store's).

        The local index is loaded, or built from ``catalog`` and (``save``) persisted, as :meth:`_load_bm25` says.
        """
        provided = self._store_keyword_index(store)
        if provided is not None:
            return provided, None
        bm25 = self._load_bm25(catalog, save=save)
        return LocalBM25(bm25), bm25

    def _read_state(self) -> _ReadState:
        """The current read components, (re)loaded if the catalog moved on since they were loaded."""
        with self._lock:
            self._reopen_catalog_if_created()
            generation = self._catalog.generation
            if self._state is not None and self._state.generation == generation:
                return self._state
            self._drop_state()
            if self._catalog.counts()["chunks"] == 0:
                raise IndexNotFoundError(
                    f"no index in {self.data_dir} yet (or it is empty); run `rag ingest PATH` first"
                )
            store = self._open_store(self._catalog, read_only=True)
            try:
                if store.count() == 0:
                    raise IndexMismatchError(
                        f"the {self.settings.store.kind} vector store holds no vectors, but the catalog in "
                        f"{self.data_dir} lists {self._catalog.counts()['chunks']} chunks: the store was deleted "
                        f"or replaced; {REBUILD_HINT}"
                    )
                keyword, bm25 = self._keyword_side(store, self._catalog, save=False)
            except BaseException:
                store.close()
                raise
            cfg = self.settings.retrieval
            retriever = HybridRetriever(
                store, keyword, self.embedder.encode_query, self._catalog, cfg.candidates, cfg.rrf_k,
                cfg.confidence_power, native_hybrid=cfg.native_hybrid,
            )
            pipeline = RetrievalPipeline(retriever, self.embedder.encode_query, self._transformer)
            self._state = _ReadState(generation, store, keyword, bm25, retriever, pipeline)
            return self._state

    def _reopen_catalog_if_created(self) -> None:
        # An engine made before the first ingest holds an empty in-memory catalog; open the file once it exists.
        if self._catalog.is_placeholder and self.catalog_path.exists():
            self._catalog.close()
            self._catalog = self._open_catalog(read_only=True)

    def _drop_state(self) -> None:
        if self._state is not None:
            self._state.store.close()
            self._state = None

    def refresh(self) -> bool:
        """Pick up commits made since the read components were loaded, by any process.

        Returns:
            ``True`` if the catalog moved on (the components reload on next use), else ``False``.
        """
        with self._lock:
            self._reopen_catalog_if_created()
            if self._state is None or self._state.generation == self._catalog.generation:
                return False
            self._drop_state()
            return True

    @property
    def store(self) -> VectorStore:
        """The vector store of the current committed state (read-only)."""
        return self._read_state().store

    @property
    def bm25(self) -> BM25Index | None:
        """The local BM25 index of the current committed state; ``None`` when the store's own keyword
        search is used instead (``retriever.keyword`` is the keyword side either way)."""
        return self._read_state().bm25

    @property
    def retriever(self) -> HybridRetriever:
        return self._read_state().retriever

    # -- writing ----------------------------------------------------------------------------------

    @contextmanager
    def writing(
        self,
        *,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
        purpose: str = "ingest",
        rebuild: bool = False,
    ) -> Iterator[Writer]:
        """Hold the writer lock and the writable catalog and store for a write operation.

        With ``rebuild``, everything indexed is dropped first, under the same lock (see :meth:`ingest`).
        On leaving, the local BM25 index is rebuilt and saved if the catalog changed (unless the store
        searches text itself, keeping its keyword side in step with its rows), and this engine's read
        components are refreshed. Raises what :class:`~rag.core.lock.WriterLock` raises
        (``IndexBusyError`` with ``wait=False``), and :class:`IndexMismatchError` if the index was built
        with other settings.
        """
        with self._writer_lock("rebuild" if rebuild else purpose, wait=wait, on_wait=on_wait):
            if rebuild:
                self._wipe()
            catalog = self._open_catalog(read_only=False)
            try:
                # A store whose files admit one client (Qdrant's local mode): let go of the reader's.
                if store_traits(self.settings.store.kind, self.settings.store).single_client:
                    with self._lock:
                        self._drop_state()
                store = self._open_store(catalog, read_only=False)
                try:
                    generation = catalog.generation
                    yield Writer(catalog, store)
                    changed = catalog.generation != generation or not (self.data_dir / "bm25").exists()
                    # (A missing keyword side under retrieval.keyword = "store" is the reader's error to raise.)
                    if changed and self._store_keyword_index(store, strict=False) is None:
                        self._load_bm25(catalog, save=True)
                finally:
                    store.close()
            finally:
                catalog.close()
        self.refresh()

    def _chunker_factory(self) -> Callable[[], SlidingWindowChunker]:
        chunking = self.settings.chunking

        def make_chunker() -> SlidingWindowChunker:
            readable = self.embedder.max_tokens - 2  # the model adds [CLS] and [SEP], then truncates
            if chunking.size > readable:
                raise ConfigError(
                    f"chunking.size={chunking.size} exceeds what {self.settings.embedding.model} reads "
                    f"({readable} tokens); lower it or the end of every window is silently dropped"
                )
            return SlidingWindowChunker(self.embedder.tokenizer, chunking.size, chunking.overlap, chunking.min_tokens)

        return make_chunker

    def _ingestor(self, writer: Writer, root: Path | None = None) -> Ingestor:
        chunking = self.settings.chunking
        writer.catalog.check_identity(
            {
                "chunk_size": str(chunking.size), "chunk_overlap": str(chunking.overlap),
                "chunk_min_tokens": str(chunking.min_tokens),
            },
            REBUILD_HINT,
        )
        ingest = self.settings.ingest
        limits = ParseLimits(
            max_file_mb=ingest.max_file_mb, max_unpacked_mb=ingest.max_unpacked_mb, max_pages=ingest.max_pages,
            max_rows=ingest.max_rows, max_depth=ingest.max_depth, ocr=ingest.ocr,
        )
        return Ingestor(
            writer.catalog, writer.store, self.embedder, self._chunker_factory(), root or self.project_root,
            batch_chunks=ingest.batch_chunks, limits=limits, registry=ParserRegistry(ingest.parsers),
        )

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
        """Bring the index in step with ``paths`` (see :mod:`rag.ingest.pipeline`).

        Args:
            paths: files and folders; folders are walked recursively.
            metadata: user metadata attached to every chunk of these files (``--meta``).
            rebuild: drop the whole index first (after a model, dimension, chunking or store change); the
                identity check that would refuse the new settings is what this bypasses.
            progress: called as files are processed.
            wait: queue behind another writer; ``False`` raises ``IndexBusyError`` instead.
            on_wait: called once with a message when the run has to wait for another writer.
            root: file ids are relative to this folder for this run (default: the project root); the API
                uses its upload folder, so an uploaded ``report.pdf`` has the id ``report.pdf``.
            ray: embed on Ray (:mod:`rag.ingest.ray_embed`); loading, chunking and writing stay here.
                ``None``: as ``ingest.ray_address`` says (unset: in this process); ``True``: at
                ``ingest.ray_address``, or a new local instance; an address (``local``, ``auto``,
                ``ray://HOST:10001``): there; ``False``: in this process whatever the settings say; a
                :class:`~rag.ingest.ray_embed.RayEmbedder`: that one, left open.

        Raises:
            IndexBusyError: another process is writing and ``wait`` is false.
            IndexMismatchError: the index was built with other settings and ``rebuild`` is false.
            ConfigError, IngestError, StorageError: as their docstrings say; nothing half-done is left.
                A Ray failure is an ``IngestError`` that leaves the index as a killed run would: the
                next run resumes.
        """
        missing = [str(p) for p in paths if not Path(p).exists()]
        if missing:  # before anything is locked or wiped
            raise IngestError(f"{', '.join(missing)} does not exist")
        remote, owned = self._ray_embedder(ray)  # also before: a missing Ray must not cost a --rebuild's wipe
        try:
            with self.writing(wait=wait, on_wait=on_wait, rebuild=rebuild) as writer:
                ingestor = self._ingestor(writer, Path(root) if root else None)
                if remote is not None:
                    ingestor.embedder = remote  # only the embedding call moves; the model stays local for chunking
                return ingestor.ingest(list(paths), metadata, progress)
        finally:
            if owned:
                remote.close()

    def _ray_embedder(self, ray: bool | str | Any) -> tuple[Any, bool]:
        """The :class:`~rag.ingest.ray_embed.RayEmbedder` :meth:`ingest` embeds with (``None`` for this
        process) and whether it is this call's to close. Ray itself is only imported here, and connected
        to at the first batch that needs embedding."""
        from rag.ingest.ray_embed import LOCAL, RayEmbedder

        if isinstance(ray, RayEmbedder):
            return ray, False
        cfg = self.settings.ingest
        if ray is False or (ray is None and cfg.ray_address is None):
            return None, False
        address = ray if isinstance(ray, str) else cfg.ray_address or LOCAL
        embedding = self.settings.embedding
        remote = RayEmbedder(embedding.model, address=address, workers=cfg.ray_workers, batch_size=embedding.batch_size)
        return remote, True

    def ingest_documents(
        self,
        documents: Iterable[DocumentInput | Mapping[str, Any]],
        metadata: Mapping[str, Any] | None = None,
        *,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
    ) -> IngestReport:
        """Ingest documents given in memory (``{"id", "text", "metadata"?, "title"?, "source"?}``).

        Unchanged documents (same text, title and metadata) are reported as unchanged and cost nothing.
        """
        with self.writing(wait=wait, on_wait=on_wait) as writer:
            return self._ingestor(writer).ingest_documents(documents, metadata)

    def delete_documents(
        self, doc_ids: Iterable[str], *, wait: bool = True, on_wait: Callable[[str], None] | None = None
    ) -> IngestReport:
        """Remove documents by id (unknown ids are ignored); ``report.removed`` lists the ones removed."""
        with self.writing(wait=wait, on_wait=on_wait, purpose="delete") as writer:
            return self._ingestor(writer).delete_documents(doc_ids)

    def _wipe(self) -> None:
        """Forget everything indexed: catalog, local store files, BM25, and the configured store's
        collection (dropped, so that a remote one is recreated at the new dimension). The caller holds
        the writer lock.
        """
        with self._lock:
            self._drop_state()
            self._catalog.close()
            if self.shared_state is not None:
                shared = PostgresCatalog(self.shared_state, self.settings.store.collection)
                try:
                    shared.drop()
                finally:
                    shared.close()
            for name in (CATALOG_NAME, f"{CATALOG_NAME}-wal", f"{CATALOG_NAME}-shm"):
                (self.data_dir / name).unlink(missing_ok=True)
            for folder in _LOCAL_FOLDERS:
                shutil.rmtree(self.data_dir / folder, ignore_errors=True)
            self._catalog = self._open_catalog(read_only=True)
        # A remote collection (or a plugin's storage) is dropped whatever dimension it holds, so that
        # the next open recreates it at the new one.
        drop_store(
            self.settings.store.kind, data_dir=self.data_dir, dimension=self.embedder.dimension,
            options=self.settings.store, analysis=KeywordAnalysis.from_settings(self.settings.retrieval),
        )

    # -- reading ----------------------------------------------------------------------------------

    def search(
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
        return self.retrieve(query, options=query_options(
            options, k=k, alpha=alpha, fusion=fusion, filter=filter, min_score=min_score, max_per_doc=max_per_doc,
            hyde=hyde, rewrite=rewrite, multi_query=multi_query, rerank=rerank, history=history,
        )).hits

    def retrieve(
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
        resolved = query_options(
            options, k=k, alpha=alpha, fusion=fusion, filter=filter, min_score=min_score, max_per_doc=max_per_doc,
            hyde=hyde, rewrite=rewrite, multi_query=multi_query, rerank=rerank, history=history,
        ).resolve(self.settings)
        stages = StageOptions(
            hyde=resolved.hyde,
            hyde_weight=resolved.hyde_weight,
            rewrite=resolved.rewrite,
            multi_query=resolved.multi_query,
            condense=resolved.condense,
            rerank_top_n=resolved.rerank_top_n,
            rerank_score=resolved.rerank_score,
            rerank_blend_weight=resolved.rerank_blend_weight,
        )
        reranker = self.reranker(resolved.rerank)
        self.refresh()
        return self._read_state().pipeline.run(
            query,
            resolved.k,
            alpha=resolved.alpha,
            fusion=resolved.fusion,
            filter=resolved.filter,
            post=PostFilter(resolved.min_score, resolved.max_per_doc),
            options=stages,
            history=resolved.history,
            reranker=reranker,
        )

    def ask(
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
        retrieval = self.retrieve(question, options=query_options(
            options, k=k, alpha=alpha, fusion=fusion, filter=filter, min_score=min_score, max_per_doc=max_per_doc,
            hyde=hyde, rewrite=rewrite, multi_query=multi_query, rerank=rerank, history=history,
        ))
        hits = retrieval.hits
        if on_sources is not None:
            on_sources(hits)
        try:
            answer = self.generator().generate(retrieval.query, hits, on_token=on_token)
        except GenerationError as exc:
            raise AnswerError(
                str(exc), hits, timeout=isinstance(exc, GenerationTimeout), retrieval=retrieval
            ) from exc
        answer.retrieval = retrieval
        answer.warnings = [*retrieval.warnings, *answer.warnings]
        return answer

    def documents(
        self, *, offset: int = 0, limit: int = 50, filter: Filter | Mapping[str, Any] | str | list[str] | None = None
    ) -> tuple[int, list[dict[str, Any]]]:
        """A page of the indexed documents (by id) whose first chunk's metadata matches ``filter``.

        Returns:
            ``(total matching, page)``; each entry has ``doc_id``, ``source``, ``title``, ``chunks`` and
            ``metadata`` (the document-level fields, chunk-position fields left out).
        """
        if offset < 0 or limit <= 0:
            raise ConfigError(f"offset must be >= 0 and limit > 0, got offset={offset}, limit={limit}")
        parsed = parse_filter(filter)
        self._reopen_catalog_if_created()
        matching = [d for d in self._catalog.documents() if not parsed or parsed.matches(d["metadata"])]
        return len(matching), [_document_summary(d) for d in matching[offset : offset + limit]]

    def document(self, doc_id: str) -> dict[str, Any] | None:
        """One document with its chunks (``chunk_id``, ``text``, ``metadata``), or ``None`` if unknown."""
        self._reopen_catalog_if_created()
        chunks = self._catalog.document_chunks(doc_id)
        if not chunks:
            return None
        summary = _document_summary(
            {"doc_id": doc_id, "title": chunks[0].metadata.get("title", doc_id), "chunks": len(chunks),
             "metadata": chunks[0].metadata}
        )
        summary["chunk_list"] = [{"chunk_id": c.chunk_id, "text": c.text, "metadata": c.metadata} for c in chunks]
        return summary

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the embedding tokenizer: the budget unit for prompt packing."""
        return len(self.embedder.tokenizer.encode(text, add_special_tokens=False))

    def generator(self) -> Any:
        """The :class:`OpenAIChatGenerator` for the configured endpoint, made on first use.

        With no ``llm.base_url`` the embedded llama.cpp server is started (its log goes to the user cache
        folder, never into the data directory) and kept until :meth:`close`.

        Raises:
            GenerationError / ConfigError: the embedded server cannot start.
        """
        from rag.generate import OpenAIChatGenerator

        if self._generator is None:
            base_url, model, structured = self._llm_endpoint()  # may start the LLM: outside ``_lock``
            with self._lock:
                if self._generator is None:
                    cfg = self.settings.llm
                    self._generator = OpenAIChatGenerator(
                        base_url, model, api_key=cfg.api_key, timeout=cfg.timeout, max_retries=cfg.max_retries,
                        temperature=cfg.temperature, max_tokens=cfg.max_tokens, context_tokens=cfg.context_tokens,
                        structured=structured, count_tokens=self.count_tokens,
                    )
        return self._generator

    def _llm_endpoint(self) -> tuple[str, str, bool]:
        """``(base_url, model, structured)`` of the configured endpoint, starting the embedded server once.

        The start (seconds) holds only ``_llm_start``, never ``_lock``, so searches go on meanwhile; with
        shared servers (an API's workspace) every collection with the same model uses one process.
        """
        with self._llm_start:
            if self._endpoint is None:
                cfg = self.settings.llm
                if cfg.base_url:
                    self._endpoint = (cfg.base_url, cfg.model, bool(cfg.structured))
                elif self._llm_servers is not None:
                    base_url, model = self._llm_servers.endpoint(cfg.gguf, cfg.n_ctx, cfg.threads)
                    self._endpoint = (base_url, model, cfg.structured is not False)
                else:
                    from rag.core.onnx_query import cache_dir
                    from rag.generate import LlamaCppServer

                    server = self._llm.enter_context(LlamaCppServer(
                        gguf=Path(cfg.gguf) if cfg.gguf else None, n_ctx=cfg.n_ctx, threads=cfg.threads,
                        log_path=cache_dir() / "llm-server.log",
                    ))
                    self._endpoint = (server.base_url, server.model, cfg.structured is not False)
            return self._endpoint

    def completer(self) -> Any:
        """The :class:`~rag.generate.completion.ChatCompleter` the retrieval stages use (transforms and LLM
        reranking share it): the configured LLM, bounded by ``retrieval.stage_timeout``, its replies cached
        in the user cache folder. Made on first use and kept until :meth:`close`.

        Raises:
            GenerationError: the embedded server cannot start.
        """
        from rag.core.onnx_query import cache_dir
        from rag.generate.completion import ChatCompleter, CompletionCache

        base_url, model, _ = self._llm_endpoint()  # may start the LLM: outside ``_lock``
        with self._lock:
            if self._completer is None:
                cfg = self.settings.retrieval
                cache = CompletionCache(cache_dir() / "llm-stage-cache.sqlite") if cfg.stage_cache else None
                self._completer = ChatCompleter(
                    base_url, model, api_key=self.settings.llm.api_key, timeout=cfg.stage_timeout, cache=cache
                )
            return self._completer

    def _transformer(self) -> QueryTransformer:
        with self._lock:
            if self._transformer_instance is None:
                self._transformer_instance = QueryTransformer(
                    self.completer(), self.settings.retrieval.stage_max_tokens
                )
            return self._transformer_instance

    def reranker(self, rerank: bool | str | None = None) -> Reranker | None:
        """The reranker ``rerank`` asks for (see :meth:`retrieve`), loaded once and kept; ``None`` for none.

        Raises:
            ConfigError: reranking is on but no model is configured, or the model cannot be loaded.
        """
        cfg = self.settings.rerank
        if rerank is None:
            rerank = cfg.enabled
        if rerank is False:
            return None
        model = cfg.model if rerank is True else rerank
        if not model or not str(model).strip():
            raise ConfigError(
                "reranking needs a model, and none ships with rag-platform: set rerank.model in rag.toml "
                "(or RAG_RERANK__MODEL, or --rerank-model) to a sentence-transformers CrossEncoder id such as "
                "cross-encoder/ms-marco-MiniLM-L-6-v2 (downloaded once) or a local folder, or to 'llm' to "
                "rerank with the configured LLM"
            )
        model = str(model).strip()
        with self._lock:
            if model not in self._rerankers:
                from rag.retrieve.rerank import CrossEncoderReranker, LLMReranker

                if model == "llm":
                    self._rerankers[model] = LLMReranker(self.completer(), cfg.llm_mode)
                else:
                    self._rerankers[model] = CrossEncoderReranker(
                        model, batch_size=cfg.batch_size, max_length=cfg.max_length, device=cfg.device
                    )
            return self._rerankers[model]

    def status(self) -> dict[str, Any]:
        """Documents, chunks, model, store and size on disk, from the last committed state."""
        with self._lock:
            self._reopen_catalog_if_created()
            meta = self._catalog.get_meta()
            counts = self._catalog.counts()
            generation = self._catalog.generation
        # The index's own files only: a data directory also holds other collections and the API keys.
        size = sum(_folder_size(self.data_dir / name) for name in _LOCAL_FOLDERS) + sum(
            _folder_size(p) for p in self.data_dir.glob(f"{CATALOG_NAME}*")
        )
        return {
            "data_dir": str(self.data_dir),
            **counts,
            "embedding_model": meta.get("embedding_model") or self.settings.embedding.model,
            "dimension": int(meta["dimension"]) if meta.get("dimension") else None,
            "store": meta.get("store") or self.settings.store.kind,
            "store_url": self.settings.store.url,
            "chunk_size": int(meta.get("chunk_size", self.settings.chunking.size)),
            "chunk_overlap": int(meta.get("chunk_overlap", self.settings.chunking.overlap)),
            "generation": generation,
            "size_bytes": size,
        }


def _folder_size(folder: Path) -> int:
    """Bytes of the file ``folder`` or of the files under it; what a writer removes meanwhile is skipped."""
    if folder.is_file():
        try:
            return folder.stat().st_size
        except OSError:
            return 0
    total = 0
    for parent, _, names in os.walk(folder):  # os.walk ignores folders that vanish under it
        for name in names:
            try:
                total += os.stat(os.path.join(parent, name)).st_size
            except OSError:
                continue
    return total


# Chunk-position fields: they describe one chunk, not the document.
_CHUNK_FIELDS = frozenset({"chunk_index", "start", "end", "n_tokens", "headings", "section", "page"})


def _document_summary(row: Mapping[str, Any]) -> dict[str, Any]:
    meta = {k: v for k, v in row["metadata"].items() if k not in _CHUNK_FIELDS}
    return {
        "doc_id": row["doc_id"],
        "source": meta.get("source", row["doc_id"]),
        "title": row["title"],
        "chunks": row["chunks"],
        "metadata": meta,
    }

