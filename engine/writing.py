"""The engine's writing service: ingest, delete, and rebuild or wipe the index, under the writer lock.

A write takes the data directory's writer lock (and, with shared state, the collection's lock across
replicas) for its whole run, opens the catalog and store for writing, and releases both when done; the
reader's view is refreshed afterwards so the next search sees the commit.
"""

from __future__ import annotations

import shutil
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rag.core.catalog import Catalog
from rag.core.embeddings import SentenceEmbedder
from rag.core.errors import REBUILD_HINT, ConfigError, IngestError
from rag.core.lock import WriterLock
from rag.core.settings import Settings
from rag.core.shared_state import PostgresCatalog, PostgresWriterLock
from rag.engine.index import CATALOG_NAME, LOCAL_FOLDERS, IndexFiles
from rag.engine.state import ReadView
from rag.ingest.chunking import SlidingWindowChunker
from rag.ingest.context import ContextPrefixer
from rag.ingest.parsers import ParseLimits, ParserRegistry
from rag.ingest.pipeline import DocumentInput, Ingestor, IngestReport, Progress
from rag.stores import store_traits
from rag.stores.base import VectorStore


@dataclass(frozen=True, slots=True)
class Writer:
    """What a write operation works with: the writable catalog and store, under the writer lock."""

    catalog: Catalog
    store: VectorStore


class WritingService:
    """Writes to the index in ``settings.data_dir``; one write at a time across processes.

    Args:
        settings: the configuration in force (chunking, ingest limits, store).
        index: opens the writable catalog and store, and the keyword side kept in step with them.
        view: the reader's view, released around a wipe (and a local Qdrant write) and refreshed after a write.
        embedder: returns the embedding model (chunking counts its tokens; ingest embeds with it).
        project_root: file ids are paths relative to it unless a write names another root.
        lock: the engine's lock, held while the reader's view is replaced.
    """

    def __init__(
        self,
        settings: Settings,
        index: IndexFiles,
        view: ReadView,
        *,
        embedder: Callable[[], SentenceEmbedder],
        project_root: Path,
        lock: threading.RLock,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.project_root = project_root
        self._index = index
        self._view = view
        self._embedder = embedder
        self._lock = lock

    def writer_lock(
        self, purpose: str, *, wait: bool, on_wait: Callable[[str], None] | None
    ) -> ExitStack:
        """The data directory's writer lock and, with shared state, the collection's lock across replicas."""
        stack = ExitStack()
        try:
            stack.enter_context(WriterLock(self.data_dir, purpose, wait=wait, on_wait=on_wait))
            if self._index.shared_state is not None:
                stack.enter_context(PostgresWriterLock(
                    self._index.shared_state, self.settings.store.collection, purpose, wait=wait, on_wait=on_wait,
                ))
        except BaseException:
            stack.close()
            raise
        return stack

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
        searches text itself, keeping its keyword side in step with its rows), and the reader's view is
        refreshed. Raises what :class:`~rag.core.lock.WriterLock` raises (``IndexBusyError`` with
        ``wait=False``), and :class:`IndexMismatchError` if the index was built with other settings.
        """
        with self.writer_lock("rebuild" if rebuild else purpose, wait=wait, on_wait=on_wait):
            if rebuild:
                self.wipe()
            catalog = self._index.open_catalog(read_only=False)
            try:
                # A store whose files admit one client (Qdrant's local mode): let go of the reader's.
                if store_traits(self.settings.store.kind, self.settings.store).single_client:
                    self._view.drop_components()
                store = self._index.open_store(catalog, read_only=False)
                try:
                    generation = catalog.generation
                    yield Writer(catalog, store)
                    changed = catalog.generation != generation or not (self.data_dir / "bm25").exists()
                    # (A missing keyword side under retrieval.keyword = "store" is the reader's error to raise.)
                    if changed and self._index.store_keyword_index(store, strict=False) is None:
                        self._index.load_bm25(catalog, save=True)
                finally:
                    store.close()
            finally:
                catalog.close()
        self._view.refresh()

    def _chunker_factory(self) -> Callable[[], SlidingWindowChunker]:
        chunking = self.settings.chunking

        def make_chunker() -> SlidingWindowChunker:
            embedder = self._embedder()
            readable = embedder.max_tokens - 2  # the model adds [CLS] and [SEP], then truncates
            if chunking.size > readable:
                raise ConfigError(
                    f"chunking.size={chunking.size} exceeds what {self.settings.embedding.model} reads "
                    f"({readable} tokens); lower it or the end of every window is silently dropped"
                )
            return SlidingWindowChunker(embedder.tokenizer, chunking.size, chunking.overlap, chunking.min_tokens)

        return make_chunker

    def _prefixer_factory(self) -> Callable[[], ContextPrefixer] | None:
        """The context prefixer ``chunking.context_prefix`` asks for (made with the embedding model), or ``None``."""
        if not self.settings.chunking.context_prefix:
            return None

        def make_prefixer() -> ContextPrefixer:
            embedder = self._embedder()
            return ContextPrefixer(embedder.tokenizer, embedder.max_tokens - 2)  # the model adds [CLS] and [SEP]

        return make_prefixer

    def _ingestor(self, writer: Writer, root: Path | None = None) -> Ingestor:
        chunking = self.settings.chunking
        writer.catalog.check_identity(
            {
                "chunk_size": str(chunking.size), "chunk_overlap": str(chunking.overlap),
                "chunk_min_tokens": str(chunking.min_tokens),
                "chunk_context_prefix": str(chunking.context_prefix).lower(),
            },
            REBUILD_HINT,
            # An index from before the setting existed was embedded without a prefix.
            legacy={"chunk_context_prefix": "false"},
        )
        ingest = self.settings.ingest
        limits = ParseLimits(
            max_file_mb=ingest.max_file_mb, max_unpacked_mb=ingest.max_unpacked_mb, max_pages=ingest.max_pages,
            max_rows=ingest.max_rows, max_depth=ingest.max_depth, ocr=ingest.ocr,
        )
        return Ingestor(
            writer.catalog, writer.store, self._embedder(), self._chunker_factory(), root or self.project_root,
            batch_chunks=ingest.batch_chunks, limits=limits, registry=ParserRegistry(ingest.parsers),
            prefixer=self._prefixer_factory(),
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

    def wipe(self) -> None:
        """Forget everything indexed: catalog, local store files, BM25, and the configured store's
        collection (dropped, so that a remote one is recreated at the new dimension). The caller holds
        the writer lock.
        """
        with self._lock:
            self._view.close()
            if self._index.shared_state is not None:
                shared = PostgresCatalog(self._index.shared_state, self.settings.store.collection)
                try:
                    shared.drop()
                finally:
                    shared.close()
            for name in (CATALOG_NAME, f"{CATALOG_NAME}-wal", f"{CATALOG_NAME}-shm"):
                (self.data_dir / name).unlink(missing_ok=True)
            for folder in LOCAL_FOLDERS:
                shutil.rmtree(self.data_dir / folder, ignore_errors=True)
            self._view.reopen()
        # A remote collection (or a plugin's storage) is dropped whatever dimension it holds, so that
        # the next open recreates it at the new one.
        self._index.drop_configured_store()
