"""Orchestration lives in the library: in-memory documents, deletions, ``ask``, ``refresh`` across processes,
thread safety, plugin store options, and no environment mutation."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest

import rag.stores
from rag.core.errors import ConfigError
from rag.core.query import QueryOptions
from rag.core.settings import StoreSettings, load_settings
from rag.generate.answer import AnswerError
from rag.stores import create_store
from rag.stores.faiss_store import FaissStore

pytestmark = pytest.mark.slow

DOCS = [
    {"id": "kb-1", "text": "The vacuum robot docks itself when the battery runs low.", "metadata": {"team": "hw"}},
    {"id": "kb-2", "text": "Invoices are sent on the first working day of each month.", "metadata": {"team": "billing"}},
]


def test_in_memory_documents_are_incremental_and_filterable(make_engine) -> None:
    engine = make_engine()
    first = engine.ingest_documents(DOCS)
    assert (first.added, first.failed) == (["kb-1", "kb-2"], [])
    hit = engine.search("when are invoices sent", 1, filter={"team": "billing"})[0]
    assert hit.chunk.doc_id == "kb-2" and hit.chunk.source == "kb-2"

    again = engine.ingest_documents(DOCS)
    assert (again.unchanged, again.chunks_added) == (["kb-1", "kb-2"], 0)  # the same bytes: unchanged

    edited = [{**DOCS[0], "text": "The vacuum robot returns to its dock at ten percent battery."}, DOCS[1]]
    update = engine.ingest_documents(edited)
    assert update.updated == ["kb-1"] and update.unchanged == ["kb-2"]
    assert "ten percent" in engine.search("vacuum battery dock", 1)[0].chunk.text

    gone = engine.delete_documents(["kb-1", "unknown"])
    assert gone.removed == ["kb-1"] and gone.chunks_removed >= 1
    assert all(h.chunk.doc_id != "kb-1" for h in engine.search("vacuum robot", 5))


def test_a_chunk_comes_with_its_offsets_and_neighbours(make_engine) -> None:
    engine = make_engine(chunking={"size": 24, "overlap": 0})
    words = " ".join(f"word{i}" for i in range(200))
    engine.ingest_documents([{"id": "long", "text": words, "metadata": {"team": "hw"}}])
    chunks = engine.document("long")["chunk_list"]
    assert len(chunks) >= 4

    middle = engine.chunk(chunks[2]["chunk_id"], neighbours=1)
    assert (middle["doc_id"], middle["chunk_index"], middle["document_chunks"]) == ("long", 2, len(chunks))
    assert middle["text"] == chunks[2]["text"] and middle["metadata"]["team"] == "hw"
    assert words[middle["start"] : middle["end"]].strip() == middle["text"].strip()
    assert [c["chunk_id"] for c in middle["before"]] == [chunks[1]["chunk_id"]]
    assert [c["chunk_id"] for c in middle["after"]] == [chunks[3]["chunk_id"]]

    first = engine.chunk(chunks[0]["chunk_id"], neighbours=2)
    assert first["before"] == [] and len(first["after"]) == 2
    assert engine.chunk(chunks[0]["chunk_id"], neighbours=0)["after"] == []
    assert engine.chunk("no-such-chunk") is None
    with pytest.raises(ConfigError, match="neighbours"):
        engine.chunk(chunks[0]["chunk_id"], neighbours=-1)


def test_in_memory_documents_are_validated(make_engine, corpus: Path) -> None:
    engine = make_engine()
    engine.ingest([corpus])
    report = engine.ingest_documents([
        {"id": "docs/web/pricing.html", "text": "not allowed to replace a file's document"},
        {"id": "x", "text": "fine text", "metadata": {"page": 3}},
        {"id": "y", "text": "   "},
    ])
    assert dict(report.failed).keys() == {"docs/web/pricing.html", "x", "y"}
    hit = engine.search("refunds granted", 1)[0]  # the file's document is intact
    assert hit.chunk.doc_id == "docs/web/pricing.html" and "within 30 days" in hit.chunk.text
    for bad in ([{"text": "no id"}], [{"id": "a", "text": 3}], [{"id": "a", "text": "t", "colour": "red"}],
                [{"id": "a", "text": "t"}, {"id": "a", "text": "u"}]):
        with pytest.raises(ConfigError):
            engine.ingest_documents(bad)


def test_deleting_a_file_document_lets_the_next_ingest_restore_it(make_engine, corpus: Path) -> None:
    engine = make_engine()
    engine.ingest([corpus])
    engine.delete_documents(["docs/notes/history.txt"])
    assert all(h.chunk.doc_id != "docs/notes/history.txt" for h in engine.search("Helsinki founded", 5))
    report = engine.ingest([corpus])
    assert report.added == ["docs/notes/history.txt"]
    assert engine.search("founded in Helsinki", 1)[0].chunk.doc_id == "docs/notes/history.txt"


def test_a_long_lived_engine_sees_another_process_commit(make_engine, tmp_path: Path, corpus: Path) -> None:
    engine = make_engine()
    engine.ingest([corpus])
    assert engine.search("zeppelin hangar", 1, alpha=0.0) == []
    (corpus / "zeppelin.md").write_text("# Zeppelin\n\nThe zeppelin hangar opens at dawn.\n")
    cli = subprocess.run(
        [sys.executable, "-m", "rag.cli", "--data-dir", str(tmp_path / ".rag"), "ingest", "docs"],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )
    assert cli.returncode == 0, cli.stderr
    hits = engine.search("zeppelin hangar", 1, alpha=0.0)  # no restart, no explicit refresh
    assert hits and hits[0].chunk.doc_id == "docs/zeppelin.md"
    assert engine.refresh() is False  # already current


def test_threads_search_while_one_ingests(make_engine, corpus: Path) -> None:
    engine = make_engine()
    engine.ingest([corpus])
    errors: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            try:
                assert engine.search("widget", 3)
                engine.status()
            except BaseException as exc:  # noqa: BLE001 - collected and asserted below
                errors.append(exc)
                return

    threads = [threading.Thread(target=reader) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for round_ in range(3):
            engine.ingest_documents([{"id": f"t{round_}-{i}", "text": f"thread note {round_} {i} about widgets"} for i in range(8)])
    finally:
        stop.set()
        for thread in threads:
            thread.join()
    assert errors == [], "".join(__import__("traceback").format_exception(errors[0]))
    assert engine.status()["documents"] == 4 + 24
    assert engine.store.ids() == engine.catalog.all_chunk_ids()


def test_ask_gives_sources_first_and_keeps_them_when_the_llm_fails(make_engine, corpus: Path) -> None:
    engine = make_engine(llm={"base_url": "http://127.0.0.1:9/v1", "max_retries": 0, "timeout": 5})
    engine.ingest([corpus])
    seen: list[list] = []
    with pytest.raises(AnswerError) as failure:
        engine.ask("How much is the team plan?", 2, on_sources=seen.append)
    assert [h.chunk.doc_id for h in failure.value.hits] == [h.chunk.doc_id for h in seen[0]]
    assert failure.value.hits[0].chunk.doc_id == "docs/web/pricing.html"
    assert failure.value.exit_code == 3 and "127.0.0.1:9" in str(failure.value)


def test_query_options_and_keyword_arguments_are_the_same_query(make_engine, corpus: Path) -> None:
    """``options=QueryOptions(...)`` is what the keyword arguments build; giving both is refused, not merged."""
    engine = make_engine()
    engine.ingest([corpus])
    options = QueryOptions(k=4, alpha=0.0, max_per_doc=1)
    by_value = engine.retrieve("widget cache", options=options).hits
    by_keywords = engine.retrieve("widget cache", 4, alpha=0.0, max_per_doc=1).hits
    assert by_value and [h.chunk.chunk_id for h in by_value] == [h.chunk.chunk_id for h in by_keywords]
    assert all(h.dense_score is None for h in by_value) and len({h.chunk.doc_id for h in by_value}) == len(by_value)
    assert [h.chunk.chunk_id for h in engine.search("widget cache", options=options)] == [h.chunk.chunk_id for h in by_value]
    with pytest.raises(ConfigError, match=r"not both .*got options and alpha, k"):
        engine.search("widget", 3, alpha=0.5, options=options)
    with pytest.raises(ConfigError, match="k must be positive, got 0"):
        engine.search("widget", 0)


def test_plugin_stores_receive_their_options_and_read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    received = {}

    def factory(*, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool) -> FaissStore:
        received.update(options=options.options, read_only=read_only)
        return FaissStore(data_dir / "mine", dimension, read_only=read_only)

    entry = type("EntryPoint", (), {"name": "mine", "value": "x:y", "load": staticmethod(lambda: factory)})
    monkeypatch.setattr(rag.stores, "entry_points", lambda group: [entry])
    monkeypatch.setenv("RAG_STORE__OPTIONS", '{"shards": 3, "region": "eu"}')
    settings = load_settings(data_dir=tmp_path / ".rag", store={"kind": "mine"})
    create_store("mine", data_dir=tmp_path, dimension=4, options=settings.store, read_only=True).close()
    assert received == {"options": {"shards": 3, "region": "eu"}, "read_only": True}


def test_the_library_leaves_the_environment_alone(tmp_path: Path, corpus: Path) -> None:
    config = tmp_path / "custom.toml"
    config.write_text("[retrieval]\nk = 2\n")
    script = textwrap.dedent(f"""
        import json, os
        before = dict(os.environ)
        from rag.core.settings import load_settings
        from rag.engine import RagEngine
        settings = load_settings(config={str(config)!r}, data_dir={str(tmp_path / '.rag')!r})
        with RagEngine(settings, project_root={str(tmp_path)!r}) as engine:
            engine.ingest([engine.project_root / "docs"])
            hits = engine.search("refund")
        changed = sorted(k for k in set(os.environ) | set(before) if os.environ.get(k) != before.get(k))
        print(json.dumps({{"k": settings.retrieval.k, "hits": len(hits), "changed": changed}}))
    """)
    env = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "RAG_CONFIG")}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout.strip().splitlines()[-1])
    # The config file given to load_settings was read, offline loading needed no HF_HUB_OFFLINE, and
    # nothing in os.environ changed (no HF_HUB_OFFLINE, no RAG_CONFIG).
    assert out == {"k": 2, "hits": 2, "changed": []}
