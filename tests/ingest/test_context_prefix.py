"""chunking.context_prefix: the title and heading path embedded and BM25-indexed with a chunk, never shown."""

from __future__ import annotations

import sqlite3
import textwrap
from pathlib import Path

import numpy as np
import pytest

from rag.core.errors import IndexMismatchError
from rag.ingest.context import ContextPrefixer

# The title and headings name the subject; the body never does.
DOC = textwrap.dedent(
    """\
    ---
    title: Quokka husbandry handbook
    ---
    # Feeding schedule

    Give each animal fresh leaves twice a day and keep the water bowl full. Remove food that was not
    eaten by the evening, because it spoils quickly in warm weather.
    """
)


def test_path_names_title_and_headings_once():
    path = ContextPrefixer.path
    assert path("Guide", ("Install", "Steps"), "Download it.") == "Guide > Install > Steps"
    # A first heading that repeats the title (Markdown titled by its first heading) appears once.
    assert path("Install", ("Install", "Steps"), "Download it.") == "Install > Steps"
    # A JSONL record's text starts with its title already: it is not repeated.
    assert path("Vitamin D", (), "Vitamin D\n\nlevels in winter") == ""
    assert path("  ", ("", "Only"), "text") == "Only"


def test_prefix_fits_what_the_model_reads(tokenizer):
    prefixer = ContextPrefixer(tokenizer, max_tokens=254)
    count = lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])  # noqa: E731
    title = " ".join(f"word{i}" for i in range(80))
    # Capped at max_prefix_tokens, cut at a word boundary.
    capped = prefixer.prefix(title, (), "body", n_tokens=10)
    assert 0 < count(capped) <= prefixer.max_prefix_tokens and title.startswith(capped) and not capped.endswith("word")
    # A chunk that fills the model leaves no room: no prefix rather than a truncated chunk end.
    assert prefixer.prefix("Short title", (), "body", n_tokens=252) == ""
    room = 254 - 240
    assert 0 < count(prefixer.prefix(title, (), "body", n_tokens=240)) <= room


@pytest.mark.slow
def test_prefix_is_embedded_and_keyword_indexed_but_not_shown(tmp_path: Path, make_engine):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "quokka.md").write_text(DOC, encoding="utf-8")

    plain = make_engine(data_dir=tmp_path / "plain")
    plain.ingest([tmp_path / "docs"])
    assert not plain.bm25.search("quokka handbook", 5)  # the words are only in the title

    engine = make_engine(data_dir=tmp_path / "prefixed", chunking={"context_prefix": True})
    engine.ingest([tmp_path / "docs"])
    [hit] = engine.search("quokka husbandry handbook", k=1, alpha=0.0)  # keyword side only
    chunk = hit.chunk
    assert chunk.metadata["context_prefix"] == "Quokka husbandry handbook > Feeding schedule"
    assert "Quokka" not in chunk.text and chunk.text.startswith("# Feeding schedule")
    assert engine.bm25.search("quokka handbook", 5)[0].chunk_id == chunk.chunk_id
    # The stored vector is the embedding of prefix + text, not of the text alone.
    stored = engine.store.get_vectors([chunk.chunk_id])[chunk.chunk_id]
    prefixed, bare = engine.embedder.encode([chunk.indexed_text, chunk.text])
    assert chunk.indexed_text == f"{chunk.metadata['context_prefix']}\n\n{chunk.text}"
    assert np.dot(stored, prefixed) > 0.999 > np.dot(stored, bare)
    # Answers and search output show the chunk's own text.
    assert hit.to_dict()["text"] == chunk.text and hit.context_text == chunk.text


@pytest.mark.slow
def test_a_new_title_re_embeds_an_unchanged_text(make_engine):
    engine = make_engine(chunking={"context_prefix": True})
    engine.ingest_documents([{"id": "a", "text": "Feed the animals twice a day.", "title": "Quokka care"}])
    before = engine.catalog.document_chunks("a")[0]
    report = engine.ingest_documents([{"id": "a", "text": "Feed the animals twice a day.", "title": "Wombat care"}])
    after = engine.catalog.document_chunks("a")[0]
    assert report.chunks_added == 1 and after.chunk_id != before.chunk_id
    assert after.metadata["context_prefix"] == "Wombat care"


@pytest.mark.slow
def test_a_document_without_a_title_gets_no_prefix(make_engine):
    engine = make_engine(chunking={"context_prefix": True})
    engine.ingest_documents([{"id": "MED-10", "text": "Statins and breast cancer survival."}])  # title: the id
    assert "context_prefix" not in engine.catalog.document_chunks("MED-10")[0].metadata


@pytest.mark.slow
def test_changing_the_setting_needs_a_rebuild(tmp_path: Path, make_engine):
    docs = [{"id": "a", "text": "Feed the animals twice a day.", "title": "Quokka care"}]
    make_engine(chunking={"context_prefix": True}).ingest_documents(docs)
    with pytest.raises(IndexMismatchError, match=r"chunk_context_prefix='true'.*--rebuild"):
        make_engine().ingest_documents(docs)
    # An index from before the setting existed holds chunks embedded without a prefix.
    legacy = tmp_path / "legacy"
    make_engine(data_dir=legacy).ingest_documents(docs)
    with sqlite3.connect(legacy / "catalog.sqlite") as db:
        db.execute("DELETE FROM meta WHERE key = 'chunk_context_prefix'")
    with pytest.raises(IndexMismatchError, match="chunk_context_prefix='false'"):
        make_engine(data_dir=legacy, chunking={"context_prefix": True}).ingest_documents(docs)
    make_engine(data_dir=legacy).ingest_documents(docs)  # the value it was built with is fine
    # A rebuild under the new setting works.
    rebuilt = make_engine(data_dir=legacy, chunking={"context_prefix": True})
    rebuilt.ingest([], rebuild=True)
    rebuilt.ingest_documents(docs)
    assert rebuilt.catalog.document_chunks("a")[0].metadata["context_prefix"] == "Quokka care"
