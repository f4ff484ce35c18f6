"""SlidingWindowChunker with the real all-MiniLM-L6-v2 tokenizer: limits, offsets, structure, overlap."""

from __future__ import annotations

import random
import re
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag.core.errors import ConfigError
from rag.core.types import Document, Section
from rag.ingest.chunking import ChunkSpan, SlidingWindowChunker
from rag.ingest.loaders import load_file

WORDS = (
    "retrieval hybrid search vector index embedding token window overlap section heading page "
    "document citation ranking fusion dense sparse lexical semantic query answer model corpus"
).split()


def make_doc(text: str, sections: list[Section] | None = None) -> Document:
    return Document(doc_id="d", text=text, source="d.txt", title="d", sections=sections or [])


def prose(rng: random.Random, sentences: int, words: tuple[int, int] = (4, 12)) -> str:
    """Short sentences of known words, each ending with a period."""
    return " ".join(
        " ".join(rng.choices(WORDS, k=rng.randint(*words))).capitalize() + "." for _ in range(sentences)
    )


def section_ranges(doc: Document) -> list[tuple[int, int, Section]]:
    sections = doc.sections or [Section(text=doc.text, start=0)]
    return [(section.start, section.start + len(section.text), section) for section in sections]


def check_spans(doc: Document, spans: list[ChunkSpan], chunker: SlidingWindowChunker, count_tokens) -> None:
    """The invariants every chunking must hold."""
    ranges = section_ranges(doc)
    covered = bytearray(len(doc.text))
    for span in spans:
        assert span.text, "empty span"
        assert span.text == doc.text[span.start : span.end]
        assert span.text == span.text.strip()
        tokens = count_tokens(span.text)
        assert tokens <= chunker.size
        assert span.n_tokens == tokens
        # Never crosses a section boundary, and carries that section's heading path and page.
        (section,) = [section for start, end, section in ranges if start <= span.start and span.end <= end]
        assert (span.headings, span.page) == (section.headings, section.page)
        covered[span.start : span.end] = b"\x01" * (span.end - span.start)
    for start, end, _ in ranges:
        missed = [i for i in range(start, end) if not covered[i] and not doc.text[i].isspace()]
        assert not missed, f"uncovered characters at {missed[:5]}: {doc.text[missed[0]:missed[0] + 20]!r}"
    for previous, current in zip(spans, spans[1:]):
        assert current.start > previous.start and current.end > previous.end, "windows must move forward"
        if current.start < previous.end:
            assert count_tokens(doc.text[current.start : previous.end]) <= chunker.overlap


# --- Configuration -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size", "overlap", "named"),
    [(0, 0, "0"), (-5, 0, "-5"), (10, -1, "-1"), (10, 10, "10"), (10, 12, "12"), (600, 40, "600")],
)
def test_invalid_size_or_overlap_raises_config_error(tokenizer, size: int, overlap: int, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        SlidingWindowChunker(tokenizer, size=size, overlap=overlap)


def test_slow_tokenizer_is_rejected() -> None:
    with pytest.raises(ConfigError, match="fast tokenizer"):
        SlidingWindowChunker(SimpleNamespace(is_fast=False))


def test_defaults_fit_minilm(tokenizer) -> None:
    chunker = SlidingWindowChunker(tokenizer)
    assert (chunker.size, chunker.overlap) == (200, 40)


# --- Basic behaviour -----------------------------------------------------------------------------------


def test_short_document_is_one_trimmed_span(tokenizer, count_tokens) -> None:
    doc = make_doc("\n  Hybrid search combines BM25 with dense vectors.  \n")
    (span,) = SlidingWindowChunker(tokenizer, size=50, overlap=10).chunk(doc)
    assert span.text == "Hybrid search combines BM25 with dense vectors."
    assert (span.start, span.headings, span.page) == (3, (), None)
    assert span.n_tokens == count_tokens(span.text)


def test_empty_and_whitespace_sections_produce_no_spans(tokenizer) -> None:
    chunker = SlidingWindowChunker(tokenizer, size=50, overlap=10)
    text = "   \n\t\nReal content.\n\n  "
    sections = [Section(text="   \n\t\n", start=0), Section(text="Real content.\n\n  ", start=6, headings=("A",))]
    doc = make_doc(text, sections)
    assert [(span.text, span.headings) for span in chunker.chunk(doc)] == [("Real content.", ("A",))]
    assert chunker.chunk(make_doc(" \n\n ")) == []
    assert chunker.chunk_many([]) == []


def test_document_without_sections_is_one_section(tokenizer, count_tokens) -> None:
    doc = make_doc(prose(random.Random(1), 60))
    chunker = SlidingWindowChunker(tokenizer, size=40, overlap=10)
    spans = chunker.chunk(doc)
    assert len(spans) > 5
    check_spans(doc, spans, chunker, count_tokens)


def test_windows_never_cross_sections(tokenizer, count_tokens) -> None:
    rng = random.Random(2)
    parts = [prose(rng, 25), prose(rng, 3), prose(rng, 40)]
    text, sections, offset = "", [], 0
    for number, part in enumerate(parts, start=1):
        sections.append(Section(text=part, start=offset, headings=("Guide", f"Part {number}"), page=number))
        text += part + "\n\n"
        offset = len(text)
    doc = make_doc(text, sections)
    chunker = SlidingWindowChunker(tokenizer, size=60, overlap=15)
    spans = chunker.chunk(doc)
    check_spans(doc, spans, chunker, count_tokens)
    assert {span.page for span in spans} == {1, 2, 3}


def test_consecutive_windows_overlap_within_the_limit(tokenizer, count_tokens) -> None:
    doc = make_doc(prose(random.Random(3), 80))
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=20)
    spans = chunker.chunk(doc)
    assert len(spans) > 5
    check_spans(doc, spans, chunker, count_tokens)
    for previous, current in zip(spans, spans[1:]):
        assert current.start < previous.end, "consecutive windows must share text"


def test_no_overlap_when_overlap_is_zero(tokenizer, count_tokens) -> None:
    doc = make_doc(prose(random.Random(4), 80))
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=0)
    spans = chunker.chunk(doc)
    check_spans(doc, spans, chunker, count_tokens)
    assert all(current.start >= previous.end for previous, current in zip(spans, spans[1:]))


# --- Natural boundaries --------------------------------------------------------------------------------


def test_windows_start_and_end_at_sentences(tokenizer, count_tokens) -> None:
    text = prose(random.Random(5), 60, words=(3, 8))
    doc = make_doc(text)
    sentence_starts = {0} | {match.end() for match in re.finditer(r"\. ", text)}
    chunker = SlidingWindowChunker(tokenizer, size=48, overlap=16)
    spans = chunker.chunk(doc)
    check_spans(doc, spans, chunker, count_tokens)
    assert all(span.start in sentence_starts for span in spans)
    assert all(span.text.endswith(".") for span in spans)
    assert all(current.start < previous.end for previous, current in zip(spans, spans[1:]))


def test_windows_keep_whole_paragraphs(tokenizer, count_tokens) -> None:
    rng = random.Random(6)
    paragraphs = [prose(rng, 3, words=(4, 7)) for _ in range(20)]
    text = "\n\n".join(paragraphs)
    paragraph_starts = {0} | {match.end() for match in re.finditer(r"\n\n", text)}
    paragraph_ends = {match.start() for match in re.finditer(r"\n\n", text)} | {len(text)}
    chunker = SlidingWindowChunker(tokenizer, size=100, overlap=0)
    spans = chunker.chunk(make_doc(text))
    check_spans(make_doc(text), spans, chunker, count_tokens)
    assert all(span.start in paragraph_starts and span.end in paragraph_ends for span in spans)


def test_overlap_starts_at_a_sentence_inside_a_long_paragraph(tokenizer, count_tokens) -> None:
    # Paragraphs fit a window whole, so no whole paragraph fits the overlap: the tail starts at a sentence.
    rng = random.Random(7)
    text = "\n\n".join(prose(rng, 6, words=(3, 6)) for _ in range(8))
    sentence_starts = {0} | {match.end() for match in re.finditer(r"\.\s+", text)}
    chunker = SlidingWindowChunker(tokenizer, size=80, overlap=20)
    spans = chunker.chunk(make_doc(text))
    check_spans(make_doc(text), spans, chunker, count_tokens)
    assert all(span.start in sentence_starts for span in spans)
    assert all(current.start < previous.end for previous, current in zip(spans, spans[1:]))


def test_giant_sentence_without_punctuation_splits_under_the_limit(tokenizer, count_tokens) -> None:
    text = " ".join(random.Random(8).choices(WORDS, k=3000))
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=16)
    spans = chunker.chunk(make_doc(text))
    assert len(spans) > 40
    check_spans(make_doc(text), spans, chunker, count_tokens)
    assert all(current.start < previous.end for previous, current in zip(spans, spans[1:]))
    # Cuts fall between words, never inside one.
    assert all(span.start == 0 or text[span.start - 1] == " " for span in spans)


@pytest.mark.parametrize(("size", "overlap"), [(16, 4), (6, 0), (3, 0)])
def test_runs_without_spaces_are_cut_inside_and_still_fit(tokenizer, count_tokens, size: int, overlap: int) -> None:
    # CJK characters are one token each with no space between them, so every cut is inside the run; a
    # piece of a long word re-tokenizes differently on its own (it loses its "##" context) and must shrink.
    rng = random.Random(size)
    long_words = " ".join("".join(rng.choices("bcdfghjkaeiou", k=90)) for _ in range(5))
    text = "检索增强生成系统" * 20 + "\n\n" + long_words
    chunker = SlidingWindowChunker(tokenizer, size=size, overlap=overlap)
    spans = chunker.chunk(make_doc(text))
    assert len(spans) > 20
    check_spans(make_doc(text), spans, chunker, count_tokens)


def test_markdown_file_chunks_carry_heading_paths(tmp_path: Path, tokenizer, count_tokens) -> None:
    rng = random.Random(9)
    path = tmp_path / "guide.md"
    path.write_text(f"# CLI\n\n{prose(rng, 4)}\n\n## rag ingest\n\n{prose(rng, 40)}\n\n# API\n\n{prose(rng, 2)}\n")
    (doc,) = load_file(path, doc_id="guide", source="guide.md")
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=16)
    spans = chunker.chunk(doc)
    check_spans(doc, spans, chunker, count_tokens)
    assert [spans[0].headings, spans[-1].headings] == [("CLI",), ("API",)]
    assert sum(span.headings == ("CLI", "rag ingest") for span in spans) > 3
    assert spans[1].text.startswith("## rag ingest")


# --- Determinism, batching, speed ----------------------------------------------------------------------


def test_chunking_is_deterministic_and_batching_changes_nothing(tokenizer) -> None:
    rng = random.Random(10)
    docs = [make_doc(prose(rng, rng.randint(1, 40))) for _ in range(30)]
    chunker = SlidingWindowChunker(tokenizer, size=50, overlap=12)
    batched = chunker.chunk_many(docs)
    assert batched == chunker.chunk_many(docs)
    assert batched == [chunker.chunk(doc) for doc in docs]


def test_many_short_documents_are_one_window_each(tokenizer) -> None:
    """Batch tokenization across documents keeps each document's spans apart (speed: benchmarks/)."""
    rng = random.Random(11)
    docs = [make_doc(prose(rng, 3)) for _ in range(2000)]
    spans = SlidingWindowChunker(tokenizer).chunk_many(docs)
    assert [len(s) for s in spans] == [1] * 2000
    assert all(s[0].text == doc.text.strip() for s, doc in zip(spans, docs))


# --- Property test over random documents ---------------------------------------------------------------


def random_text(rng: random.Random) -> str:
    """Messy text: prose, lists, blank lines, long words, CJK, accents, odd whitespace."""
    pieces = []
    for _ in range(rng.randint(1, 25)):
        kind = rng.random()
        if kind < 0.5:
            pieces.append(prose(rng, rng.randint(1, 8), words=(1, 30)))
        elif kind < 0.6:
            pieces.append("\n".join(f"- {' '.join(rng.choices(WORDS, k=rng.randint(1, 6)))}" for _ in range(5)))
        elif kind < 0.7:
            pieces.append("".join(rng.choices("bcdfghjklmnpqrstvwxz", k=rng.randint(20, 99))))
        elif kind < 0.8:
            pieces.append("".join(rng.choices("检索增强生成模型", k=rng.randint(5, 120))))
        elif kind < 0.9:
            odd = ["café", "naïve", "Zürich", "e.g.", "(see", "below)", "x=1;y=2"]
            pieces.append(" ".join(rng.choices(odd, k=20)))
        else:
            pieces.append(" ".join(rng.choices(WORDS, k=rng.randint(50, 300))))
        pieces.append(rng.choice([" ", "\n", "\n\n", "\n \n\t", "  "]))
    return "".join(pieces)


@pytest.mark.parametrize("seed", range(40))
def test_random_documents_hold_every_invariant(tokenizer, count_tokens, seed: int) -> None:
    rng = random.Random(seed)
    texts = [random_text(rng) for _ in range(rng.randint(1, 3))]
    text, sections = "", []
    for number, part in enumerate(texts, start=1):
        sections.append(Section(text=part, start=len(text), headings=(f"H{number}",), page=number))
        text += part
    doc = make_doc(text, sections)
    size = rng.randint(16, 120)
    chunker = SlidingWindowChunker(tokenizer, size=size, overlap=rng.randint(0, size - 1))
    spans = chunker.chunk(doc)
    check_spans(doc, spans, chunker, count_tokens)
    assert spans == chunker.chunk(doc)
