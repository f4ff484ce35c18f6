"""The engine's services stand alone: each works with only what its constructor is given, and the facade
``RagEngine`` hands them the same embedding model and sees what they write."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fake_endpoint import Reply, ScriptedEndpoint

from rag.core.errors import ConfigError, IndexNotFoundError
from rag.core.query import QueryOptions
from rag.core.settings import load_settings
from rag.engine import RagEngine, Writer
from rag.engine.index import IndexFiles
from rag.engine.llm import LLMServices
from rag.engine.reading import ReadingService
from rag.engine.state import EmbedderProvider, ReadView
from rag.engine.writing import WritingService


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint() as server:
        yield server


def scripted_llm(endpoint: ScriptedEndpoint) -> dict[str, Any]:
    return {"base_url": endpoint.base_url, "model": endpoint.model, "max_retries": 0}


@pytest.mark.slow
def test_reading_service_alone_searches_browses_and_answers_over_the_facades_index(
    make_engine, corpus: Path, tmp_path: Path, endpoint: ScriptedEndpoint
) -> None:
    with make_engine() as engine:
        engine.ingest([corpus])
        expected = [h.chunk.chunk_id for h in engine.search("refunds granted", 3)]
        expected_status = {k: v for k, v in engine.status().items() if k != "size_bytes"}

    settings = load_settings(data_dir=tmp_path / ".rag", llm=scripted_llm(endpoint))
    lock = threading.RLock()
    embedder = EmbedderProvider(settings.embedding)
    index = IndexFiles(settings, embedder)
    view = ReadView(index, lock)
    llm = LLMServices(settings, embedder.count_tokens, lock)
    reading = ReadingService(
        settings, index, view, embedder=embedder, transformer=llm.transformer, reranker=llm.reranker,
        generator=llm.generator, lock=lock,
    )
    try:
        assert [h.chunk.chunk_id for h in reading.search("refunds granted", QueryOptions(k=3))] == expected
        status = reading.status()
        assert {k: v for k, v in status.items() if k != "size_bytes"} == expected_status and status["size_bytes"] > 0
        total, page = reading.documents(limit=2)
        assert total == 4 and len(page) == 2
        assert reading.document("docs/web/pricing.html")["title"] == "Pricing"

        endpoint.reply(Reply(pieces=["Within 30 days [1]."]))
        answer = reading.ask("How long are refunds granted?", QueryOptions(k=2))
        assert answer.text.startswith("Within 30 days") and answer.retrieval is not None
        assert len(endpoint.requests) == 1  # the answer came from the generator it was given
    finally:
        llm.close()
        view.close()


@pytest.mark.slow
def test_writing_service_alone_ingests_and_wipes_and_the_facade_reads_its_commits(
    make_engine, corpus: Path, tmp_path: Path
) -> None:
    settings = load_settings(data_dir=tmp_path / ".rag")
    lock = threading.RLock()
    embedder = EmbedderProvider(settings.embedding)
    index = IndexFiles(settings, embedder)
    view = ReadView(index, lock)
    writing = WritingService(settings, index, view, embedder=embedder, project_root=tmp_path, lock=lock)
    try:
        report = writing.ingest([corpus])
        assert len(report.added) == 4 and report.ok
        assert view.catalog.counts()["documents"] == 4  # the view it was given sees the commit
        assert (tmp_path / ".rag" / "bm25").exists()  # the keyword side was saved in step

        with make_engine() as engine:
            assert engine.search("refunds granted", 1)[0].chunk.source == "docs/web/pricing.html"

        with writing.writer_lock("delete", wait=True, on_wait=None):
            writing.wipe()
        assert view.catalog.counts()["chunks"] == 0
        with make_engine() as engine, pytest.raises(IndexNotFoundError):
            engine.search("refunds granted", 1)
    finally:
        view.close()


def test_llm_services_alone_make_each_component_once(tmp_path: Path, endpoint: ScriptedEndpoint) -> None:
    # No stage cache: it would write to the user cache folder.
    settings = load_settings(data_dir=tmp_path / ".rag", llm=scripted_llm(endpoint), retrieval={"stage_cache": False})
    llm = LLMServices(settings, len, threading.RLock())  # no embedding model needed to count tokens here
    try:
        assert llm.reranker(False) is None and llm.reranker(None) is None  # rerank.enabled is off by default
        with pytest.raises(ConfigError, match="reranking needs a model"):
            llm.reranker(True)
        generator = llm.generator()
        assert llm.generator() is generator and llm.completer() is llm.completer()
        assert llm.transformer() is llm.transformer()
        assert llm.reranker("llm") is llm.reranker("llm")
        llm.close()
        assert llm.generator() is not generator  # closing forgets them; the next use makes new ones
    finally:
        llm.close()
    assert endpoint.requests == []  # making the components asks the endpoint nothing


class CountingEmbedder:
    """Another engine's loaded model, counting the queries it encodes."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.queries: list[str] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def encode_query(self, text: str) -> Any:
        self.queries.append(text)
        return self.inner.encode_query(text)


@pytest.mark.slow
def test_a_model_assigned_to_the_facade_is_the_one_its_services_use(make_engine, corpus: Path) -> None:
    first = make_engine()
    second = make_engine()
    counting = CountingEmbedder(first.embedder)
    second.embedder = counting  # as the benchmarks share one loaded model between engines
    assert second.embedder is counting
    second.ingest([corpus])
    assert second.search("refunds granted", 1)[0].chunk.source == "docs/web/pricing.html"
    assert "refunds granted" in counting.queries
    assert second.count_tokens("refunds granted") == first.count_tokens("refunds granted")
    with second.writing(purpose="delete") as writer:
        assert isinstance(writer, Writer)
    assert isinstance(second, RagEngine)
