"""The library facade: one data directory, one configuration, the whole pipeline.

The CLI (and the REST API) are thin layers over :class:`RagEngine`; a Python user calls the same
methods::

    from rag.core.settings import load_settings
    from rag.engine import RagEngine

    with RagEngine(load_settings(data_dir="./.rag")) as engine:
        engine.ingest([Path("docs")])
        for hit in engine.search("how does incremental ingest work?", k=3):
            print(hit.score, hit.chunk.citation_label())

Heavy parts (the embedding model, the vector store, BM25) load on first use, so ``rag status`` and
a re-ingest of an unchanged folder stay fast.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path
from typing import Any

from rag.core.catalog import Catalog
from rag.core.embeddings import SentenceEmbedder
from rag.core.errors import REBUILD_HINT, ConfigError, IndexNotFoundError
from rag.core.filters import Filter, parse_filter
from rag.core.settings import Settings
from rag.core.types import Hit
from rag.ingest.chunking import SlidingWindowChunker
from rag.ingest.pipeline import Ingestor, IngestReport, Progress
from rag.retrieve.bm25 import Analyzer, BM25Index
from rag.retrieve.hybrid import Fusion, HybridRetriever, PostFilter
from rag.stores import create_store
from rag.stores.base import VectorStore

log = logging.getLogger(__name__)



class RagEngine:
    """Ingest, search and answer over the index in ``settings.data_dir``.

    Args:
        settings: the configuration in force.
        project_root: file ids are paths relative to it; defaults to the data directory's parent.
    """

    def __init__(self, settings: Settings, project_root: Path | None = None) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.project_root = (project_root or self.data_dir.resolve().parent).resolve()
        self.catalog = Catalog(self.data_dir / "catalog.sqlite")

    def __enter__(self) -> RagEngine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Flush and release the store and the catalog."""
        if "store" in self.__dict__:
            self.store.close()
        self.catalog.close()

    # -- components -------------------------------------------------------------------------------

    @cached_property
    def embedder(self) -> SentenceEmbedder:
        cfg = self.settings.embedding
        return SentenceEmbedder(cfg.model, batch_size=cfg.batch_size, device=cfg.device, onnx_queries=cfg.onnx_queries)

    @property
    def dimension(self) -> int:
        """From the catalog when an index exists (no model load), else from the model."""
        recorded = self.catalog.get_meta().get("dimension")
        return int(recorded) if recorded else self.embedder.dimension

    def identity(self, dimension: int) -> dict[str, str]:
        """What an index is built with; a query or ingest with other values is refused."""
        return {
            "embedding_model": self.settings.embedding.model,
            "dimension": str(dimension),
            "store": self.settings.store.kind,
        }

    @cached_property
    def store(self) -> VectorStore:
        dimension = self.dimension
        self.catalog.check_identity(self.identity(dimension), REBUILD_HINT)
        return create_store(
            self.settings.store.kind, data_dir=self.data_dir, dimension=dimension, options=self.settings.store
        )

    def _analyzer(self) -> Analyzer:
        cfg = self.settings.retrieval
        return Analyzer(stemmer=cfg.stemmer, stopwords=cfg.stopwords)

    @cached_property
    def bm25(self) -> BM25Index:
        """The persisted BM25 index, rebuilt from the catalog if missing or stale."""
        cfg = self.settings.retrieval
        folder = self.data_dir / "bm25"
        index = BM25Index.load(folder, self._analyzer(), cfg.bm25_method, cfg.bm25_k1, cfg.bm25_b)
        generation = self.catalog.generation
        if index is None or index.generation != generation:
            index = self._build_bm25(folder, generation)
        return index

    def _build_bm25(self, folder: Path, generation: int) -> BM25Index:
        cfg = self.settings.retrieval
        index = BM25Index(cfg.bm25_method, cfg.bm25_k1, cfg.bm25_b, self._analyzer())
        ids, texts, metadata = [], [], []
        for cid, text, meta in self.catalog.iter_chunks():
            ids.append(cid)
            texts.append(text)
            metadata.append(meta)
        log.info("building BM25 over %d chunks", len(ids))
        index.build(ids, texts, metadata)
        index.save(folder, generation)
        return index

    @cached_property
    def retriever(self) -> HybridRetriever:
        self._require_index()
        cfg = self.settings.retrieval
        return HybridRetriever(
            self.store, self.bm25, self.embedder.encode_query, self.catalog, cfg.candidates, cfg.rrf_k,
            cfg.confidence_power,
        )

    def _require_index(self) -> None:
        if self.catalog.counts()["chunks"] == 0:
            raise IndexNotFoundError(
                f"no index in {self.data_dir} yet (or it is empty); run `rag ingest PATH` first"
            )

    # -- operations -------------------------------------------------------------------------------

    def ingest(
        self,
        paths: list[Path],
        metadata: Mapping[str, Any] | None = None,
        *,
        rebuild: bool = False,
        progress: Progress | None = None,
    ) -> IngestReport:
        """Bring the index in step with ``paths`` (see :mod:`rag.ingest.pipeline`).

        Args:
            paths: files and folders; folders are walked recursively.
            metadata: user metadata attached to every chunk of these files (``--meta``).
            rebuild: drop the whole index first (after a model or chunking change).
            progress: called as files are processed.
        """
        if rebuild:
            self._wipe()
        store = self.store
        chunking = self.settings.chunking
        self.catalog.check_identity(
            {"chunk_size": str(chunking.size), "chunk_overlap": str(chunking.overlap)}, REBUILD_HINT
        )

        def make_chunker() -> SlidingWindowChunker:
            readable = self.embedder.max_tokens - 2  # the model adds [CLS] and [SEP], then truncates
            if chunking.size > readable:
                raise ConfigError(
                    f"chunking.size={chunking.size} exceeds what {self.settings.embedding.model} reads "
                    f"({readable} tokens); lower it or the end of every window is silently dropped"
                )
            return SlidingWindowChunker(self.embedder.tokenizer, chunking.size, chunking.overlap)

        ingestor = Ingestor(
            self.catalog, store, self.embedder, make_chunker, self.project_root,
            batch_chunks=self.settings.ingest.batch_chunks,
        )
        generation = self.catalog.generation
        report = ingestor.ingest(paths, metadata, progress)
        if self.catalog.generation != generation:
            self._forget("bm25", "retriever")
        _ = self.bm25  # (re)build now if stale, so the first query after an ingest is fast
        return report

    def _forget(self, *names: str) -> None:
        """Drop cached components so their next use rebuilds them from the current catalog."""
        for name in names:
            self.__dict__.pop(name, None)

    def _wipe(self) -> None:
        """Forget everything indexed: catalog rows, vectors (local files or remote points), BM25."""
        if self.settings.store.url:
            store = self.store
            store.delete(sorted(store.ids()))
            store.flush()
        if "store" in self.__dict__:
            self.store.close()
        self._forget("store", "bm25", "retriever")
        self.catalog.close()
        for name in ("catalog.sqlite", "catalog.sqlite-wal", "catalog.sqlite-shm"):
            (self.data_dir / name).unlink(missing_ok=True)
        for folder in ("faiss", "qdrant", "bm25"):
            shutil.rmtree(self.data_dir / folder, ignore_errors=True)
        self.catalog = Catalog(self.data_dir / "catalog.sqlite")

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
    ) -> list[Hit]:
        """Hybrid search; unset arguments take the configured defaults.

        Raises:
            IndexNotFoundError: nothing has been ingested yet.
            IndexMismatchError: the index was built with another embedding model or store.
            FilterError / ConfigError: a malformed filter or argument.
        """
        cfg = self.settings.retrieval
        parsed = parse_filter(filter)
        return self.retriever.search(
            query,
            k if k is not None else cfg.k,
            alpha=cfg.alpha if alpha is None else alpha,
            fusion=fusion or cfg.fusion,
            filter=parsed,
            post=PostFilter(min_score, max_per_doc),
        )

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the embedding tokenizer: the budget unit for prompt packing."""
        return len(self.embedder.tokenizer.encode(text, add_special_tokens=False))

    @contextmanager
    def generator(self) -> Iterator[Any]:
        """An :class:`OpenAIChatGenerator` for the configured endpoint.

        With no ``llm.base_url`` the embedded llama.cpp server is started for the duration of the
        ``with`` block and stopped afterwards.
        """
        from rag.generate import LlamaCppServer, OpenAIChatGenerator

        cfg = self.settings.llm
        api_key = cfg.api_key.get_secret_value() if cfg.api_key else None

        def build(base_url: str, model: str, structured: bool) -> OpenAIChatGenerator:
            return OpenAIChatGenerator(
                base_url, model, api_key=api_key, timeout=cfg.timeout, max_retries=cfg.max_retries,
                temperature=cfg.temperature, max_tokens=cfg.max_tokens, context_tokens=cfg.context_tokens,
                structured=structured, count_tokens=self.count_tokens,
            )

        if cfg.base_url:
            yield build(cfg.base_url, cfg.model, bool(cfg.structured))
            return
        self.data_dir.mkdir(parents=True, exist_ok=True)
        gguf = Path(cfg.gguf) if cfg.gguf else None
        with LlamaCppServer(
            gguf=gguf, n_ctx=cfg.n_ctx, threads=cfg.threads, log_path=self.data_dir / "llm-server.log"
        ) as server:
            yield build(server.base_url, server.model, cfg.structured is not False)

    def status(self) -> dict[str, Any]:
        """Documents, chunks, model, store and size on disk."""
        meta = self.catalog.get_meta()
        size = sum(f.stat().st_size for f in self.data_dir.rglob("*") if f.is_file()) if self.data_dir.exists() else 0
        return {
            "data_dir": str(self.data_dir),
            **self.catalog.counts(),
            "embedding_model": meta.get("embedding_model") or self.settings.embedding.model,
            "dimension": int(meta["dimension"]) if meta.get("dimension") else None,
            "store": meta.get("store") or self.settings.store.kind,
            "store_url": self.settings.store.url,
            "chunk_size": int(meta.get("chunk_size", self.settings.chunking.size)),
            "chunk_overlap": int(meta.get("chunk_overlap", self.settings.chunking.overlap)),
            "generation": self.catalog.generation,
            "size_bytes": size,
        }

