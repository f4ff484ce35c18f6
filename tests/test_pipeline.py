"""Ingest and search through the engine with the real model, real FAISS and real Qdrant (local mode)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from rag.core.errors import ConfigError, FilterError, IndexMismatchError, IndexNotFoundError, IngestError

pytestmark = pytest.mark.slow

REQUIRED_FIELDS = {
    "doc_id", "source", "title", "headings", "section", "page", "start", "end",
    "modified", "content_hash", "chunk_index", "n_tokens",
}


def consistent(engine) -> None:
    """Catalog, vector store and BM25 hold exactly the same chunks, once each."""
    catalog_ids = engine.catalog.all_chunk_ids()
    assert engine.store.ids() == catalog_ids
    assert engine.store.count() == len(catalog_ids) == engine.catalog.counts()["chunks"]
    assert sorted(engine.bm25.chunk_ids) == sorted(catalog_ids)


def test_ingest_is_incremental_and_idempotent(make_engine, corpus: Path) -> None:
    engine = make_engine()
    first = engine.ingest([corpus])
    assert (len(first.added), len(first.failed)) == (4, 0)
    assert first.chunks_added == engine.catalog.counts()["chunks"] > 4
    consistent(engine)
    before = engine.catalog.all_chunk_ids()

    again = engine.ingest([corpus])
    assert (len(again.unchanged), again.chunks_added, again.chunks_removed) == (4, 0, 0)
    assert engine.catalog.all_chunk_ids() == before
    consistent(engine)

    (corpus / "notes/history.txt").write_text("Company history\n\nThe company now builds gadgets on the moon.\n")
    (corpus / "web/pricing.html").unlink()
    changed = engine.ingest([corpus])
    assert (changed.updated, changed.removed, len(changed.unchanged)) == (
        ["docs/notes/history.txt"], ["docs/web/pricing.html"], 2,
    )
    consistent(engine)
    assert engine.search("gadgets on the moon", 1)[0].chunk.source == "docs/notes/history.txt"
    assert all(h.chunk.source != "docs/web/pricing.html" for h in engine.search("refund plan euros", 10))


def test_every_chunk_carries_its_metadata(make_engine, corpus: Path) -> None:
    engine = make_engine()
    engine.ingest([corpus], {"team": "docs", "year": 2026})
    rows = list(engine.catalog.iter_chunks())
    for chunk_id, text, meta in rows:
        assert meta.keys() >= REQUIRED_FIELDS, chunk_id
        assert (meta["team"], meta["year"]) == ("docs", 2026)
        assert meta["end"] - meta["start"] >= len(text.strip()) > 0
        assert meta["modified"].endswith("Z")
    install = [m for _, _, m in rows if m["source"] == "docs/guide/install.md"]
    assert {m["title"] for m in install} == {"Installing the widget"}
    assert {m["audience"] for m in install} == {"admin"} and install[0]["tags"] == ["setup", "install"]
    assert ["Installing the widget", "Steps"] in [m["headings"] for m in install]
    pricing = [m for _, _, m in rows if m["source"] == "docs/web/pricing.html"]
    assert pricing[0]["title"] == "Pricing" and "Refunds" in {m["section"].split(" > ")[-1] for m in pricing}
    hit = engine.search("admin password installer", 1)[0]
    assert hit.chunk.metadata["section"] == "Installing the widget > Steps"
    assert hit.chunk.citation_label() == "docs/guide/install.md § Installing the widget > Steps"


def test_metadata_only_change_reaches_the_store(make_engine, corpus: Path) -> None:
    engine = make_engine()
    engine.ingest([corpus], {"release": "v1"})
    second = engine.ingest([corpus], {"release": "v2"})
    assert len(second.updated) == 4 and second.chunks_added == 0  # vectors reused, nothing re-embedded
    consistent(engine)
    for alpha in (1.0, 0.0):  # dense side (store metadata) and BM25 side agree
        assert engine.search("widget", 3, alpha=alpha, filter="release=v1") == []
        assert len(engine.search("widget", 3, alpha=alpha, filter="release=v2")) == 3


def test_prefilters_run_inside_both_searches(make_engine, tmp_path: Path) -> None:
    """A filter matching 6 of 150 documents still yields k=5 hits, all matching, on either side."""
    lines = [
        {"_id": f"d{i}", "title": f"Note {i}", "text": f"Observation {i} about river water quality and fish.",
         "metadata": {"region": "north" if i % 25 == 0 else "south", "year": 2000 + i % 20}}
        for i in range(150)
    ]
    (tmp_path / "notes.jsonl").write_text("\n".join(json.dumps(line) for line in lines))
    engine = make_engine()
    engine.ingest([tmp_path / "notes.jsonl"])
    for alpha in (0.0, 0.5, 1.0):
        hits = engine.search("river fish", 5, alpha=alpha, filter={"region": "north"})
        assert len(hits) == 5 and {h.chunk.metadata["region"] for h in hits} == {"north"}
    ranged = engine.search("water", 50, filter=["year>=2015", "year<2017"])
    assert ranged and {h.chunk.metadata["year"] for h in ranged} == {2015, 2016}
    assert {h.chunk.doc_id for h in engine.search("water", 200, filter="source~*.jsonl")} == {line["_id"] for line in lines}
    assert engine.search("water", 5, filter="source~*.md") == []
    capped = engine.search("observation", 10, max_per_doc=1)
    assert len({h.chunk.doc_id for h in capped}) == 10
    with pytest.raises(FilterError, match="unknown filter operator"):
        engine.search("water", 5, filter={"year": {"around": 2010}})


def test_alpha_endpoints_equal_single_retrievers(make_engine, corpus: Path) -> None:
    engine = make_engine()
    engine.ingest([corpus])
    query = "why is the widget slow"
    dense = [s.chunk_id for s in engine.store.search(engine.embedder.encode_query(query), 4)]
    bm25 = [s.chunk_id for s in engine.bm25.search(query, 4)]
    assert [h.chunk.chunk_id for h in engine.search(query, 4, alpha=1.0)] == dense
    assert [h.chunk.chunk_id for h in engine.search(query, 4, alpha=0.0)] == bm25
    assert engine.search(query, 1, fusion="rrf")[0].chunk.section.endswith("The widget is slow")


def test_qdrant_backend_gives_the_same_results(make_engine, corpus: Path, tmp_path: Path) -> None:
    faiss = make_engine()
    qdrant = make_engine(data_dir=tmp_path / ".rag-qdrant", store={"kind": "qdrant"})
    faiss.ingest([corpus])
    qdrant.ingest([corpus])
    consistent(qdrant)
    for query, flt in [("refunds", None), ("widget install", {"tags": "install"}), ("history", "source~*.txt")]:
        ours = [(h.chunk.chunk_id, round(h.score, 4)) for h in faiss.search(query, 5, filter=flt)]
        theirs = [(h.chunk.chunk_id, round(h.score, 4)) for h in qdrant.search(query, 5, filter=flt)]
        assert ours == theirs and ours


def test_bad_files_are_reported_and_the_rest_committed(make_engine, corpus: Path) -> None:
    (corpus / "broken.pdf").write_bytes(b"%PDF-1.4\n\x00\x01garbage that is no PDF\n")
    (corpus / "blob.txt").write_bytes(b"\x00\x01\x02\x03binary\x00")
    (corpus / "empty.md").write_text("")
    (corpus / "minutes.docx").write_bytes(b"PK\x03\x04 a zip cut short")
    # Latin-1 used to be refused; it is decoded now, and the encoding recorded.
    (corpus / "latin1.txt").write_bytes("Caf\xe9 menu\n\nThe cr\xe8me br\xfbl\xe9e costs four euros.".encode("latin-1"))
    engine = make_engine()
    report = engine.ingest([corpus])
    reasons = dict(report.failed)
    assert set(reasons) == {"docs/broken.pdf", "docs/blob.txt", "docs/empty.md", "docs/minutes.docx"}
    assert "PDF" in reasons["docs/broken.pdf"] and "binary" in reasons["docs/blob.txt"]
    assert "empty" in reasons["docs/empty.md"] and reasons["docs/minutes.docx"].startswith("corrupt Word document")
    (hit,) = engine.search("crème brûlée", 1)
    assert hit.chunk.source == "docs/latin1.txt" and "crème brûlée" in hit.chunk.text
    assert hit.chunk.metadata["encoding"] == "cp1252"
    assert len(report.added) == 5 and not report.ok
    consistent(engine)
    # Fixed later, the file is picked up; the good files are not touched again.
    import docx

    minutes = docx.Document()
    minutes.add_paragraph("café crème is served at the widget launch party")
    minutes.save(corpus / "minutes.docx")
    fixed = engine.ingest([corpus])
    assert fixed.added == ["docs/minutes.docx"] and len(fixed.unchanged) == 5


def test_mismatched_model_is_refused_with_a_rebuild_hint(make_engine, corpus: Path) -> None:
    from rag.core.embeddings import resolve_model_path

    make_engine().ingest([corpus])
    other = make_engine(embedding={"model": resolve_model_path("all-MiniLM-L6-v2")})
    with pytest.raises(IndexMismatchError, match=r"rag ingest --rebuild"):
        other.search("widget", 3)
    report = other.ingest([corpus], rebuild=True)
    assert len(report.added) == 4 and other.search("widget", 3)
    rechunked = make_engine(embedding={"model": resolve_model_path("all-MiniLM-L6-v2")}, chunking={"size": 64, "overlap": 8})
    with pytest.raises(IndexMismatchError, match="chunk_size"):
        rechunked.ingest([corpus])


def test_clear_errors_for_missing_index_paths_and_sizes(make_engine, tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="rag ingest"):
        make_engine().search("anything", 3)
    with pytest.raises(IngestError, match="does not exist"):
        make_engine().ingest([tmp_path / "nowhere"])
    docs = write_small(tmp_path)
    with pytest.raises(ConfigError, match="exceeds what"):
        make_engine(data_dir=tmp_path / ".big", chunking={"size": 400, "overlap": 10}).ingest([docs])


def write_small(root: Path) -> Path:
    folder = root / "small"
    folder.mkdir()
    (folder / "a.txt").write_text("A small file about nothing in particular.")
    return folder
