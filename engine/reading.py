"""The engine's reading service: search, retrieve and answer over the last committed state, and browse it.

A reader writes nothing: it opens every file read-only, so it works while another process ingests and on a
read-only data directory. Its components (store, keyword side, retriever, stage pipeline) are stamped with
the catalog generation they were loaded at, and reload when a commit moves it (:meth:`ReadingService.refresh`
runs before every search).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, cast

from rag.core.answers import Answer, AnswerError
from rag.core.embeddings import SentenceEmbedder
from rag.core.errors import (
    REBUILD_HINT,
    ConfigError,
    GenerationError,
    GenerationTimeout,
    IndexMismatchError,
    IndexNotFoundError,
)
from rag.core.filters import Filter, parse_filter
from rag.core.query import QueryOptions
from rag.core.settings import Settings
from rag.core.tracing import set_attributes, span
from rag.core.types import Chunk, Hit
from rag.engine.answerability import not_covered
from rag.engine.expand import EXPAND_MODES, ExpandMode, expand_hits
from rag.engine.index import CATALOG_NAME, LOCAL_FOLDERS, IndexFiles
from rag.engine.state import ReadComponents, ReadView
from rag.retrieve.bm25 import BM25Index
from rag.retrieve.hybrid import HybridRetriever, PostFilter
from rag.retrieve.pipeline import Reranker, Retrieval, RetrievalPipeline, StageOptions
from rag.retrieve.transforms import QueryTransformer
from rag.stores.base import VectorStore


class ReadingService:
    """Queries and browsing over the committed index in ``settings.data_dir``.

    Args:
        settings: the configuration in force; unset query arguments take its defaults.
        index: opens the store and keyword side.
        view: the read-only catalog and loaded components, shared with the writing service.
        embedder: returns the embedding model (queries are encoded with it).
        transformer: returns the query transformer the retrieval stages use (made only when a stage runs).
        reranker: the reranker for a ``rerank`` argument (see :meth:`retrieve`), ``None`` for none.
        generator: returns the answer generator :meth:`ask` uses.
        lock: the engine's lock, held while the components are (re)loaded.
        count_tokens: the prompt-packing token counter; widening hits (``generation.expand``) is budgeted
            in it. ``None``: the embedding tokenizer's.
    """

    def __init__(
        self,
        settings: Settings,
        index: IndexFiles,
        view: ReadView,
        *,
        embedder: Callable[[], SentenceEmbedder],
        transformer: Callable[[], QueryTransformer],
        reranker: Callable[[bool | str | None], Reranker | None],
        generator: Callable[[], Any],
        lock: threading.RLock,
        count_tokens: Callable[[str], int] | None = None,
    ) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self._index = index
        self._view = view
        self._embedder = embedder
        self._transformer = transformer
        self.reranker = reranker
        self.generator = generator
        self._lock = lock
        self._count_tokens = count_tokens or (lambda text: embedder().count_tokens(text))

    # -- read state -------------------------------------------------------------------------------

    def _read_state(self) -> ReadComponents:
        """The current read components, (re)loaded if the catalog moved on since they were loaded."""
        view = self._view
        with self._lock:
            view.reopen_catalog_if_created()
            generation = view.catalog.generation
            if view.components is not None and view.components.generation == generation:
                return view.components
            view.drop_components()
            if view.catalog.counts()["chunks"] == 0:
                raise IndexNotFoundError(
                    f"no index in {self.data_dir} yet (or it is empty); run `rag ingest PATH` first"
                )
            store = self._index.open_store(view.catalog, read_only=True)
            try:
                if store.count() == 0:
                    raise IndexMismatchError(
                        f"the {self.settings.store.kind} vector store holds no vectors, but the catalog in "
                        f"{self.data_dir} lists {view.catalog.counts()['chunks']} chunks: the store was deleted "
                        f"or replaced; {REBUILD_HINT}"
                    )
                keyword, bm25 = self._index.keyword_side(store, view.catalog, save=False)
            except BaseException:
                store.close()
                raise
            cfg = self.settings.retrieval
            encode_query = self._embedder().encode_query
            retriever = HybridRetriever(
                store, keyword, encode_query, view.catalog, cfg.candidates, cfg.rrf_k,
                cfg.confidence_power, native_hybrid=cfg.native_hybrid,
            )
            pipeline = RetrievalPipeline(retriever, encode_query, self._transformer)
            view.components = ReadComponents(generation, store, keyword, bm25, retriever, pipeline)
            return view.components

    def refresh(self) -> bool:
        """Pick up commits made since the read components were loaded, by any process.

        Returns:
            ``True`` if the catalog moved on (the components reload on next use), else ``False``.
        """
        return self._view.refresh()

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
        """The hybrid retriever of the current committed state."""
        return self._read_state().retriever

    # -- queries --------------------------------------------------------------------------------

    def search(self, query: str, options: QueryOptions | None = None) -> list[Hit]:
        """Hybrid search over the last committed state; unset options take the configured defaults.

        Raises:
            IndexNotFoundError: nothing has been ingested yet.
            IndexMismatchError: the index was built with another embedding model or store.
            ConfigError: reranking was asked for but no model is configured or it cannot be loaded.
        """
        return self.retrieve(query, options).hits

    def _condense_with_llm(self) -> bool:
        """Whether follow-ups are condensed by the LLM: yes with a configured endpoint or GGUF, or when
        ``generation.mode`` is ``llm``; otherwise the LLM would be the bundled SmolLM2-135M, whose
        standalone questions are wrong more often than not, so the previous question and the follow-up are
        searched together instead (and nothing is started)."""
        return self.settings.llm.chosen or self.settings.generation.mode == "llm"

    def retrieve(self, query: str, options: QueryOptions | None = None) -> Retrieval:
        """Search through the retrieval stages (see :mod:`rag.retrieve.pipeline`) and say what each did.

        Args:
            query: the question; with ``options.history`` a follow-up, rewritten into a standalone
                question before anything else.
            options: the query's options (:class:`~rag.core.query.QueryOptions`, which documents each);
                unset ones take the configured defaults.

        Returns:
            The hits with the searched question, the per-stage ``explain`` record and any warnings.

        Raises:
            ConfigError: reranking was asked for but no model is configured or it cannot be loaded;
                plus what :meth:`search` raises.
        """
        resolved = (options or QueryOptions()).resolve(self.settings)
        stages = StageOptions(
            hyde=resolved.hyde,
            hyde_weight=resolved.hyde_weight,
            rewrite=resolved.rewrite,
            multi_query=resolved.multi_query,
            condense=resolved.condense,
            condense_llm=self._condense_with_llm(),
            rerank_top_n=resolved.rerank_top_n,
            rerank_score=resolved.rerank_score,
            rerank_blend_weight=resolved.rerank_blend_weight,
        )
        with span("rag.retrieve", {"rag.k": resolved.k, "rag.alpha": resolved.alpha, "rag.fusion": resolved.fusion,
                                   "rag.store": self.settings.store.kind}) as current:
            reranker = self.reranker(resolved.rerank)
            self.refresh()
            retrieval = self._read_state().pipeline.run(
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
            set_attributes(current, {"rag.hits": len(retrieval.hits), "rag.answerable": retrieval.answerable,
                                     "rag.warnings": len(retrieval.warnings)})
        return retrieval

    def ask(
        self,
        question: str,
        options: QueryOptions | None = None,
        *,
        on_sources: Callable[[list[Hit]], None] | None = None,
        on_token: Callable[[str], None] | None = None,
    ) -> Answer:
        """Retrieve, then answer ``question`` from the hits with numbered citations.

        Args:
            question: the user's question (see :meth:`retrieve` for it and ``options``).
            on_sources: called with the retrieved hits before generation starts (stream them first).
            on_token: called with each piece of answer text as it is generated.

        With ``generation.expand`` set, the hits are widened with neighbouring chunks (or their section)
        before the generator sees them (:mod:`rag.engine.expand`); ``on_sources`` gets them as retrieved.

        Returns:
            The answer; its ``retrieval`` says how the hits were found, and stage warnings lead its
            ``warnings``. When the answerability probability is below ``retrieval.answerable_threshold``
            nothing is generated: the answer says the documents do not seem to cover the question, lists
            the nearest hits as its sources, and warns (see :mod:`rag.engine.answerability`).

        Raises:
            AnswerError: the LLM endpoint failed; its ``hits`` are the retrieved sources.
            plus what :meth:`retrieve` raises.
        """
        with span("rag.ask") as current:
            answer = self._ask(question, options, on_sources, on_token)
            set_attributes(current, {"rag.answer.model": answer.model, "rag.citations": len(answer.citations),
                                     "rag.answerable": answer.answerable, "rag.warnings": len(answer.warnings)})
        return answer

    def _ask(
        self,
        question: str,
        options: QueryOptions | None,
        on_sources: Callable[[list[Hit]], None] | None,
        on_token: Callable[[str], None] | None,
    ) -> Answer:
        retrieval = self.retrieve(question, options)
        hits = retrieval.hits
        if on_sources is not None:
            on_sources(hits)
        # Answerability (issue 17): below the threshold, say so rather than generate from unrelated passages.
        skipped = not_covered(retrieval, self.settings.retrieval.answerable_threshold)
        if skipped is not None:
            if on_token is not None:
                on_token(skipped.text)
            answer = skipped
        else:
            context = self.expand(hits)
            try:
                answer = self.generator().generate(retrieval.query, context, on_token=on_token)
            except GenerationError as exc:
                raise AnswerError(
                    str(exc), hits, timeout=isinstance(exc, GenerationTimeout), retrieval=retrieval
                ) from exc
        answer.retrieval = retrieval
        answer.answerable, answer.evidence = retrieval.answerable, retrieval.evidence
        answer.warnings = [*retrieval.warnings, *answer.warnings]
        return answer

    def expand(self, hits: list[Hit], mode: str | None = None) -> list[Hit]:
        """``hits`` widened as ``mode`` (default ``generation.expand``) says, within ``llm.context_tokens``;
        see :func:`rag.engine.expand.expand_hits`."""
        mode = mode or self.settings.generation.expand
        if mode not in EXPAND_MODES:
            raise ConfigError(f"expand must be one of {', '.join(EXPAND_MODES)}, got {mode!r}")
        if mode == "none" or not hits:
            return hits
        return expand_hits(
            hits, self._view.catalog, cast(ExpandMode, mode),
            budget_tokens=self.settings.llm.context_tokens, count_tokens=self._count_tokens,
        )

    # -- browsing ---------------------------------------------------------------------------------

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
        self._view.reopen_catalog_if_created()
        matching = [d for d in self._view.catalog.documents() if not parsed or parsed.matches(d["metadata"])]
        return len(matching), [_document_summary(d) for d in matching[offset : offset + limit]]

    def document(self, doc_id: str) -> dict[str, Any] | None:
        """One document with its chunks (``chunk_id``, ``text``, ``metadata``), or ``None`` if unknown."""
        self._view.reopen_catalog_if_created()
        chunks = self._view.catalog.document_chunks(doc_id)
        if not chunks:
            return None
        summary = _document_summary(
            {"doc_id": doc_id, "title": chunks[0].metadata.get("title", doc_id), "chunks": len(chunks),
             "metadata": chunks[0].metadata}
        )
        summary["chunk_list"] = [{"chunk_id": c.chunk_id, "text": c.text, "metadata": c.metadata} for c in chunks]
        return summary

    def chunk(self, chunk_id: str, neighbours: int = 1) -> dict[str, Any] | None:
        """One chunk with its place in its document, or ``None`` if the catalog does not hold it.

        Returns:
            ``chunk_id``, ``doc_id``, ``source``, ``title``, ``text``, ``metadata`` (the chunk's own, offsets
            included), ``start`` and ``end`` (character offsets in the document text, ``None`` when the
            parser gave none), ``page``, ``chunk_index``, ``document_chunks`` (how many the document has),
            and ``before`` / ``after``: up to ``neighbours`` adjacent chunks each (``chunk_id``, ``text``,
            ``metadata``), nearest last and first respectively.
        """
        if neighbours < 0:
            raise ConfigError(f"neighbours must be >= 0, got {neighbours}")
        self._view.reopen_catalog_if_created()
        catalog = self._view.catalog
        chunk = catalog.get_chunks([chunk_id]).get(chunk_id)
        if chunk is None:
            return None
        meta = chunk.metadata
        index = int(meta.get("chunk_index", 0))
        around = catalog.chunk_range(chunk.doc_id, max(0, index - neighbours), index + neighbours) if neighbours else []
        total = catalog.document_size(chunk.doc_id)

        def brief(c: Chunk) -> dict[str, Any]:
            return {"chunk_id": c.chunk_id, "text": c.text, "metadata": c.metadata}

        return {
            "chunk_id": chunk.chunk_id,
            "doc_id": chunk.doc_id,
            "source": chunk.source,
            "title": meta.get("title", chunk.doc_id),
            "text": chunk.text,
            "metadata": meta,
            "start": meta.get("start"),
            "end": meta.get("end"),
            "page": meta.get("page"),
            "chunk_index": index,
            "document_chunks": total,
            "before": [brief(c) for c in around if int(c.metadata.get("chunk_index", 0)) < index],
            "after": [brief(c) for c in around if int(c.metadata.get("chunk_index", 0)) > index],
        }

    def status(self) -> dict[str, Any]:
        """Documents, chunks, model, store and size on disk, from the last committed state."""
        with self._lock:
            self._view.reopen_catalog_if_created()
            catalog = self._view.catalog
            meta = catalog.get_meta()
            counts = catalog.counts()
            generation = catalog.generation
        # The index's own files only: a data directory also holds other collections and the API keys.
        size = sum(_folder_size(self.data_dir / name) for name in LOCAL_FOLDERS) + sum(
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
