"""SlidingWindowChunker with the real all-MiniLM-L6-v2 tokenizer: limits, offsets, structure, overlap."""

from __future__ import annotations

import random
import re
from itertools import pairwise
from pathlib import Path
from types import SimpleNamespace

import pytest

from rag.core.errors import ConfigError
from rag.core.types import Document, Section
from rag.ingest.chunking import ChunkSpan, SlidingWindowChunker
from rag.ingest.loaders import load_file
from rag.ingest.parsers.builder import DocumentBuilder, markdown_row

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
    for previous, current in pairwise(spans):
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
    for previous, current in pairwise(spans):
        assert current.start < previous.end, "consecutive windows must share text"


def test_no_overlap_when_overlap_is_zero(tokenizer, count_tokens) -> None:
    doc = make_doc(prose(random.Random(4), 80))
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=0)
    spans = chunker.chunk(doc)
    check_spans(doc, spans, chunker, count_tokens)
    assert all(current.start >= previous.end for previous, current in pairwise(spans))


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
    assert all(current.start < previous.end for previous, current in pairwise(spans))


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
    assert all(current.start < previous.end for previous, current in pairwise(spans))


def test_giant_sentence_without_punctuation_splits_under_the_limit(tokenizer, count_tokens) -> None:
    text = " ".join(random.Random(8).choices(WORDS, k=3000))
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=16)
    spans = chunker.chunk(make_doc(text))
    assert len(spans) > 40
    check_spans(make_doc(text), spans, chunker, count_tokens)
    assert all(current.start < previous.end for previous, current in pairwise(spans))
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



# --- Plain documents chunk exactly as before the structure rules ------------------------------------------

ABSTRACT = (
    "Background: Dietary fibre intake is associated with lower cardiovascular risk, yet few trials have "
    "measured its effect on blood pressure directly. Methods: We randomised 212 adults with stage 1 "
    "hypertension to 12 weeks of oat-bran supplementation (30 g/day) or a matched placebo; the primary "
    "outcome was 24-hour ambulatory systolic pressure.\n\nResults: Systolic pressure fell by 4.1 mmHg "
    "(95% CI 2.0-6.2) more with oat bran than with placebo, and LDL cholesterol by 0.3 mmol/L. Adverse "
    "events, mostly bloating, were mild... Adherence exceeded 90% in both arms! Conclusions: A modest daily "
    "dose of soluble fibre lowers blood pressure in early hypertension; longer trials should test whether "
    "the effect persists and translates into fewer cardiovascular events (see www.example.org/trial-42)."
)


def paragraphs(seed: int, count: int = 6) -> str:
    rng = random.Random(seed)
    return "\n\n".join(prose(rng, rng.randint(2, 9), words=(3, 14)) for _ in range(count))


@pytest.mark.parametrize(
    ("text", "size", "overlap", "expected"),
    [
        # (start, end, n_tokens) exactly as `git show main:ingest/chunking.py` chunked these texts, before
        # tables, code blocks and tiny sections had rules: a corpus like nfcorpus (one plain section per
        # document) must keep every span, so every chunk id and every retrieval benchmark figure stays.
        (ABSTRACT, 48, 12, [(0, 146, 24), (79, 291, 48), (251, 341, 25), (300, 445, 48), (402, 559, 47),
                            (549, 788, 48)]),
        (ABSTRACT, 32, 0, [(0, 146, 24), (147, 270, 31), (271, 341, 18), (343, 432, 32), (433, 522, 31),
                           (523, 559, 8), (560, 756, 32), (757, 788, 13)]),
        (paragraphs(2024), 40, 10, [
            (0, 174, 31), (131, 311, 36), (265, 452, 34), (386, 577, 33), (532, 704, 31), (648, 855, 33),
            (813, 1017, 32), (1009, 1260, 40), (1229, 1433, 34), (1376, 1606, 39), (1564, 1758, 39),
            (1720, 1893, 31), (1862, 2078, 39), (2011, 2262, 38), (2195, 2344, 22),
        ]),
    ],
)
def test_plain_documents_chunk_exactly_as_before(tokenizer, text: str, size: int, overlap: int, expected) -> None:
    spans = SlidingWindowChunker(tokenizer, size=size, overlap=overlap).chunk(make_doc(text))
    assert [(span.start, span.end, span.n_tokens) for span in spans] == expected


# --- Tables: whole rows, the header in every window, row ranges in metadata -------------------------------

REGIONS = ["North", "South", "East", "West", "Central"]


def sales_rows(count: int) -> list[list[object]]:
    return [[REGIONS[n % 5], f"Q{n % 4 + 1}", 2000 + n // 20, 1000 + 37 * n] for n in range(count)]


def table_doc(rows: list[list[object]], *, first_row: int = 2) -> Document:
    """A document as a spreadsheet parser builds it: a short intro, then the sheet as a table section."""
    builder = DocumentBuilder()
    builder.heading(1, "Sales report")
    builder.table(rows, header=["Region", "Quarter", "Year", "Revenue"], name="Sales", first_row=first_row,
                  location={"sheet": "Sales"})
    return builder.build(doc_id="d", source="sales.xlsx", title="Sales report", metadata={})


def table_spans(spans: list[ChunkSpan]) -> list[ChunkSpan]:
    return [span for span in spans if span.location.get("table") == "Sales"]


def test_table_is_chunked_by_whole_rows_with_the_header_in_every_chunk(tokenizer, count_tokens) -> None:
    rows = sales_rows(300)
    doc = table_doc(rows, first_row=5)
    (table_section,) = [section for section in doc.sections if section.table]
    header = table_section.table.header
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=16)
    spans = table_spans(chunker.chunk(doc))
    assert len(spans) > 20
    rendered = {5 + index: markdown_row(row) for index, row in enumerate(rows)}
    next_row = 5
    for number, span in enumerate(spans):
        assert span.text.startswith(header + "\n")
        assert span.n_tokens == count_tokens(span.text) <= chunker.size
        assert span.location == {"sheet": "Sales", "table": "Sales", "row_start": next_row,
                                 "row_end": span.location["row_end"]}
        # Whole rows only, the ones row_start..row_end name, in order.
        lines = span.text.split("\n")[2:]
        assert lines == [rendered[row] for row in range(span.location["row_start"], span.location["row_end"] + 1)]
        # Offsets cite the rows in the document; only the first window is a plain slice (it has the header).
        if number == 0:
            assert span.text == doc.text[span.start : span.end]
        else:
            assert span.text == header + "\n" + doc.text[span.start : span.end]
            assert span.start > spans[number - 1].end, "table windows do not overlap"
        next_row = span.location["row_end"] + 1
    assert next_row == 5 + 300, "every row is in a chunk"


def test_a_row_longer_than_a_window_is_split_by_words_with_the_header(tokenizer, count_tokens) -> None:
    rows = sales_rows(6)
    rows[3][0] = " ".join(random.Random(12).choices(WORDS, k=400))  # a huge cell
    doc = table_doc(rows)
    (table_section,) = [section for section in doc.sections if section.table]
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=16)
    spans = table_spans(chunker.chunk(doc))
    huge = [span for span in spans if span.location["row_start"] == span.location["row_end"] == 5]
    assert len(huge) > 5
    for span in spans:
        assert span.text.startswith(table_section.table.header + "\n")
        assert span.n_tokens == count_tokens(span.text) <= chunker.size
    # The pieces follow each other and together hold the whole row, cut between words.
    pieces = [span.text.split("\n", 2)[2] for span in huge]
    assert " ".join(pieces).split() == markdown_row(rows[3]).split()
    # The other rows stay whole, in order, before and after it.
    ranges = [(span.location["row_start"], span.location["row_end"]) for span in spans if span not in huge]
    assert ranges[0][0] == 2 and ranges[-1][1] == 7
    assert [row for start, end in ranges for row in range(start, end + 1)] == [2, 3, 4, 6, 7]


def test_table_without_a_name_and_an_empty_table(tokenizer) -> None:
    builder = DocumentBuilder()
    builder.table([["a", "b"], ["1", "2"]])
    builder.table([["only", "a header"]])
    doc = builder.build(doc_id="d", source="d.html", title="d", metadata={})
    spans = SlidingWindowChunker(tokenizer, size=64, overlap=8).chunk(doc)
    assert [(span.text, dict(span.location)) for span in spans] == [
        ("| a | b |\n|---|---|\n| 1 | 2 |", {"row_start": 2, "row_end": 2}),
        ("| only | a header |\n|---|---|", {}),
    ]


# --- Fenced code blocks ------------------------------------------------------------------------------------

FENCED_CODE = [
    ("```python", "```"),
    ("~~~", "~~~"),
    ("````markdown", "````"),  # a longer fence may hold a shorter one
]


def inside(fence: tuple[int, int], position: int) -> bool:
    return fence[0] < position < fence[1]


@pytest.mark.parametrize(("opening", "closing"), FENCED_CODE)
def test_fenced_code_with_blank_lines_stays_in_one_chunk(tokenizer, count_tokens, opening: str, closing: str) -> None:
    rng = random.Random(13)
    code = "\n\n".join(f"def step_{n}(corpus):\n    return rank(corpus, k={n})" for n in range(2))
    if closing == "````":
        code += "\n\n```\nnested example\n```"
    fence_text = f"{opening}\n{code}\n{closing}"
    text = "\n\n".join([prose(rng, 3, (6, 9)), prose(rng, 3, (6, 9)), fence_text, prose(rng, 6, (6, 9))])
    doc = make_doc(text)
    fence = (text.index(fence_text), text.index(fence_text) + len(fence_text))
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=16)
    assert count_tokens(fence_text) <= chunker.size < count_tokens(text)
    spans = chunker.chunk(doc)
    check_spans(doc, spans, chunker, count_tokens)
    assert any(span.start <= fence[0] and fence[1] <= span.end for span in spans), "the block is whole in a chunk"
    assert not [span for span in spans if inside(fence, span.start) or inside(fence, span.end)]


def test_a_fence_longer_than_a_window_is_split_at_lines(tokenizer, count_tokens) -> None:
    # Code lines that look like sentences ("done. next") must not be cut there either.
    lines = [f'    log.info("step {n} done. next is {n + 1}!")  # ok? yes.' for n in range(60)]
    fence_text = "```python\ndef run():\n" + "\n".join(lines) + "\n```"
    text = f"Intro paragraph before the code.\n\n{fence_text}\n\nA closing remark after it."
    fence = (text.index("```"), text.index(fence_text) + len(fence_text))
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=16)
    spans = chunker.chunk(make_doc(text))
    check_spans(make_doc(text), spans, chunker, count_tokens)
    assert len(spans) > 8
    for span in spans:
        if inside(fence, span.start):
            assert not text[text.rindex("\n", 0, span.start) : span.start].strip(), "starts at a line start"
        if inside(fence, span.end):
            assert text[span.end] == "\n", "ends at a line end"


def test_text_without_fences_ignores_a_fence_mark_inside_a_line(tokenizer, count_tokens) -> None:
    # ``` in the middle of a line opens nothing: the paragraphs are cut as plain text.
    rng = random.Random(14)
    text = "\n\n".join(f"Use ``` marks {prose(rng, 2, (4, 8))}" for _ in range(12))
    chunker = SlidingWindowChunker(tokenizer, size=40, overlap=0)
    spans = chunker.chunk(make_doc(text))
    check_spans(make_doc(text), spans, chunker, count_tokens)
    assert all(span.text.startswith("Use ```") for span in spans)


# --- Tiny sections -----------------------------------------------------------------------------------------


def markdown_doc(tmp_path: Path, text: str) -> Document:
    path = tmp_path / "doc.md"
    path.write_text(text, encoding="utf-8")
    (doc,) = load_file(path, doc_id="doc", source="doc.md")
    return doc


def test_a_heading_only_section_leads_the_next_sections_first_chunk(tmp_path: Path, tokenizer, count_tokens) -> None:
    body = prose(random.Random(15), 12)
    doc = markdown_doc(tmp_path, f"# Guide\n\n## Install\n\n### On Linux\n\n{body}\n")
    assert len(doc.sections) == 3
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=16)
    spans = chunker.chunk(doc)
    assert spans[0].text.startswith("# Guide\n\n## Install\n\n### On Linux\n\n")
    assert {span.headings for span in spans} == {("Guide", "Install", "On Linux")}
    assert all(span.text == doc.text[span.start : span.end] and span.n_tokens == count_tokens(span.text)
               <= chunker.size for span in spans)
    # min_tokens=0 keeps every section apart, as before.
    apart = SlidingWindowChunker(tokenizer, size=64, overlap=16, min_tokens=0).chunk(doc)
    assert [span.text for span in apart[:2]] == ["# Guide", "## Install"]


def test_a_tiny_last_section_joins_the_previous_one_it_lies_under(tmp_path: Path, tokenizer) -> None:
    body = prose(random.Random(16), 4)
    doc = markdown_doc(tmp_path, f"# Guide\n\n{body}\n\n## Note\n\nSee the FAQ.\n")
    spans = SlidingWindowChunker(tokenizer, size=200, overlap=16).chunk(doc)
    assert [(span.text, span.headings) for span in spans] == [
        (f"# Guide\n\n{body}\n\n## Note\n\nSee the FAQ.", ("Guide",)),
    ]


def test_tiny_siblings_keep_an_honest_heading_path(tmp_path: Path, tokenizer) -> None:
    body = prose(random.Random(17), 4)
    chunker = SlidingWindowChunker(tokenizer, size=200, overlap=16)
    # "Licence" is no part of its sibling "Usage": joined, one of them would carry the other's path.
    doc = markdown_doc(tmp_path, f"# Guide\n\n{body}\n\n## Licence\n\nMIT.\n\n## Usage\n\n{body}\n")
    assert [(span.text.split("\n")[0], span.headings) for span in chunker.chunk(doc)] == [
        ("# Guide", ("Guide",)), ("## Licence", ("Guide", "Licence")), ("## Usage", ("Guide", "Usage")),
    ]
    # The last section, "Help", is no part of "Usage": it stays apart rather than give the chunk before
    # it a wrong or wider heading path.
    doc = markdown_doc(tmp_path, f"# Guide\n\n{body}\n\n## Usage\n\n{body}\n\n## Help\n\nAsk us.\n")
    assert [(span.text.split("\n")[0], span.headings) for span in chunker.chunk(doc)] == [
        ("# Guide", ("Guide",)), ("## Usage", ("Guide", "Usage")), ("## Help", ("Guide", "Help")),
    ]


def test_no_merge_across_pages_slides_or_tables(tokenizer) -> None:
    body = prose(random.Random(18), 6)
    text = f"Title\n\n{body}\n\nSlide two\n\n{body}"
    starts = [0, 7, 9 + len(body), 20 + len(body)]
    pages = [
        Section(text="Title", start=starts[0], page=1),
        Section(text=body, start=starts[1], page=2),
        Section(text="Slide two", start=starts[2], page=2, location={"slide": 2}),
        Section(text=body, start=starts[3], page=2, location={"slide": 3}),
    ]
    doc = make_doc(text, pages)
    assert [doc.text[s.start : s.start + len(s.text)] for s in pages] == [s.text for s in pages]
    spans = SlidingWindowChunker(tokenizer, size=200, overlap=16).chunk(doc)
    assert [span.text for span in spans] == ["Title", body, "Slide two", body]
    # A tiny section is never merged into or out of a table.
    builder = DocumentBuilder()
    builder.heading(1, "Sales")
    builder.table(sales_rows(2), header=["Region", "Quarter", "Year", "Revenue"], name="Sales")
    builder.paragraph("Source: finance.")
    doc = builder.build(doc_id="d", source="d.docx", title="d", metadata={})
    spans = SlidingWindowChunker(tokenizer, size=200, overlap=16).chunk(doc)
    assert [span.text.split("\n")[0] for span in spans] == ["Sales", "| Region | Quarter | Year | Revenue |",
                                                              "Source: finance."]


def test_negative_min_tokens_is_a_config_error(tokenizer) -> None:
    with pytest.raises(ConfigError, match="-1"):
        SlidingWindowChunker(tokenizer, min_tokens=-1)
