"""Loaders: one test group per format, then every bad-input case raising LoaderError with its reason."""

from __future__ import annotations

import json
import os
import random
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.loaders import SUPPORTED_SUFFIXES, load_file
from rag.testing.parsers import assert_sections_tile as assert_sections_consistent

# 2024-03-05T06:07:08Z
MTIME = datetime(2024, 3, 5, 6, 7, 8, tzinfo=UTC).timestamp()


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    os.utime(path, (MTIME, MTIME))
    return path


def load_one(path: Path, **metadata: object) -> Document:
    docs = load_file(path, doc_id="doc-1", source=f"docs/{path.name}", metadata=metadata or None)
    assert len(docs) == 1
    return docs[0]



def test_supported_suffixes_cover_every_format() -> None:
    assert {".md", ".markdown", ".txt", ".text", ".rst", ".html", ".htm", ".pdf", ".jsonl"} <= SUPPORTED_SUFFIXES


def test_document_identity_and_modified_timestamp(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "notes.txt", "Notes\n\nbody"))
    assert (doc.doc_id, doc.source) == ("doc-1", "docs/notes.txt")
    assert doc.metadata["modified"] == "2024-03-05T06:07:08Z"


def test_suffix_is_case_insensitive(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "README.MD", "# Readme\n\ntext"))
    assert doc.title == "Readme"


# --- Markdown ------------------------------------------------------------------------------------------

MARKDOWN = """\
---
title: Platform guide
tags: [cli, ops]
published: 2024-01-02
reviewed: 2024-01-03 10:20:30
owner: docs-team
---
Intro before any heading.

# CLI

The command line.

## rag ingest

Loads files.

```bash
# not a heading: inside a fence
rag ingest docs/
```

### Options

Flags.

## rag search

Finds chunks.

# API

HTTP endpoints.
"""


def test_markdown_front_matter_becomes_json_metadata(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "guide.md", MARKDOWN))
    assert doc.title == "Platform guide"
    assert doc.metadata["tags"] == ["cli", "ops"]
    assert doc.metadata["published"] == "2024-01-02"
    assert doc.metadata["reviewed"] == "2024-01-03T10:20:30"
    assert "title" not in doc.metadata  # it is Document.title
    json.dumps(doc.metadata)
    assert doc.text.startswith("Intro before any heading.")
    assert "owner: docs-team" not in doc.text


def test_user_metadata_overrides_front_matter_but_not_modified(tmp_path: Path) -> None:
    path = write(tmp_path, "guide.md", MARKDOWN)
    doc = load_one(path, owner="me", team="search", modified="yesterday")
    assert doc.metadata["owner"] == "me"
    assert doc.metadata["team"] == "search"
    assert doc.metadata["modified"] == "2024-03-05T06:07:08Z"


def test_markdown_sections_follow_heading_paths(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "guide.md", MARKDOWN))
    assert [section.headings for section in doc.sections] == [
        (),
        ("CLI",),
        ("CLI", "rag ingest"),
        ("CLI", "rag ingest", "Options"),
        ("CLI", "rag search"),
        ("API",),
    ]
    assert_sections_consistent(doc)
    assert doc.sections[0].text.startswith("Intro before any heading.")
    assert doc.sections[2].text.startswith("## rag ingest\n")
    assert "# not a heading: inside a fence" in doc.sections[2].text
    assert doc.sections[-1].text.startswith("# API")
    assert "".join(section.text for section in doc.sections) == doc.text


def test_markdown_heading_text_loses_inline_markup(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "cli.md", "# The `rag` **CLI** ##\n\nSee [docs](http://x).\n"))
    assert doc.sections[0].headings == ("The rag CLI",)
    assert doc.title == "The rag CLI"


@pytest.mark.parametrize(
    ("content", "title"),
    [
        ("Preamble\n\n## Sub\n\n# First H1\n\ntext\n", "First H1"),
        ("no headings at all\n", "intro"),
        ("#hashtag is not a heading\n", "intro"),
    ],
)
def test_markdown_title_falls_back_to_first_h1_then_stem(tmp_path: Path, content: str, title: str) -> None:
    assert load_one(write(tmp_path, "intro.md", content)).title == title


def test_markdown_without_front_matter_keeps_its_text(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "plain.markdown", "# Title\n\nBody text.\n\n---\n\nAfter a rule.\n"))
    assert doc.metadata == {"format": "markdown", "encoding": "utf-8", "modified": "2024-03-05T06:07:08Z"}
    assert "After a rule." in doc.text


# --- Plain text ----------------------------------------------------------------------------------------


def test_plain_text_is_one_section_titled_by_first_line(tmp_path: Path) -> None:
    text = "\n\nRelease notes\n\nVersion 2 adds hybrid search.\r\nAnd more.\n"
    doc = load_one(write(tmp_path, "notes.txt", text))
    assert doc.title == "Release notes"
    assert doc.text == text.replace("\r\n", "\n")
    assert len(doc.sections) == 1
    assert doc.sections[0].start == 0 and doc.sections[0].text == doc.text


def test_plain_text_with_long_first_line_is_titled_by_stem(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "essay.text", "word " * 40 + "\n\nmore"))
    assert doc.title == "essay"


def test_rst_is_rendered_by_docutils(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "index.rst", "Overview\n========\n\nBody.\n"))
    assert doc.title == "Overview"
    assert doc.text == "Overview\n\nBody."  # the underline is markup, not text
    assert doc.metadata["format"] == "rst"


def test_utf8_bom_is_dropped(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "bom.txt", "\ufeffHello".encode()))
    assert doc.text == "Hello"


# --- HTML ----------------------------------------------------------------------------------------------

HTML = """\
<!DOCTYPE html>
<html><head><title>Hybrid search | Docs</title><style>body { color: red }</style>
<script>var tracking = 1;</script></head>
<body>
<header>Site banner</header>
<nav><a href="/">Home</a> <a href="/docs">Docs</a></nav>
<main>
  <h1>Hybrid   search</h1>
  <p>Combines <b>BM25</b> and dense vectors.</p>
  <!-- a comment -->
  <h2>Fusion</h2>
  <p>Linear or RRF.</p>
  <ul><li>alpha</li><li>rrf_k</li></ul>
  <h3>Weights</h3><p>Alpha weighs dense.</p>
  <h2>Filters</h2>
  <p>Metadata filters.<br>Second line.</p>
  <noscript>Enable JavaScript</noscript>
</main>
<aside>Related links</aside>
<footer>Copyright</footer>
</body></html>
"""


def test_html_drops_boilerplate_and_keeps_main_content(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "search.html", HTML))
    assert doc.title == "Hybrid search | Docs"
    for boilerplate in ("Site banner", "Home", "tracking", "color", "Related", "Copyright", "JavaScript", "comment"):
        assert boilerplate not in doc.text
    assert "Combines BM25 and dense vectors." in doc.text


def test_html_blocks_are_on_their_own_lines(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "search.html", HTML))
    lines = doc.text.split("\n")
    # List items are Markdown-style bullets since issue 14, so a list chunk still reads as a list.
    for line in ("Hybrid search", "Fusion", "Linear or RRF.", "- alpha", "- rrf_k", "Metadata filters.", "Second line."):
        assert line in lines
    assert "Combines BM25 and dense vectors.\n\nFusion" in doc.text  # paragraphs separated by a blank line


def test_html_sections_follow_heading_paths(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "search.html", HTML))
    assert [section.headings for section in doc.sections] == [
        ("Hybrid search",),
        ("Hybrid search", "Fusion"),
        ("Hybrid search", "Fusion", "Weights"),
        ("Hybrid search", "Filters"),
    ]
    assert_sections_consistent(doc)
    assert doc.sections[1].text.startswith("Fusion\n\nLinear or RRF.")


def test_html_preformatted_text_and_tables(tmp_path: Path) -> None:
    html = (
        "<body><pre>rag ingest docs/\n  --meta team=search</pre>"
        "<table><tr><th>flag</th><th>default</th></tr><tr><td>--k</td><td>5</td></tr></table></body>"
    )
    doc = load_one(write(tmp_path, "cli.html", html))
    # Since issue 14 an HTML table is a table section (Markdown rows under their header), as in DOCX or XLSX.
    assert doc.text == "rag ingest docs/\n  --meta team=search\n\n| flag | default |\n|---|---|\n| --k | 5 |"
    assert doc.sections[-1].table is not None and doc.sections[-1].table.header == "| flag | default |\n|---|---|"


def test_html_title_falls_back_to_h1_then_stem(tmp_path: Path) -> None:
    assert load_one(write(tmp_path, "a.htm", "<body><h1>Only heading</h1><p>x</p></body>")).title == "Only heading"
    assert load_one(write(tmp_path, "fragment.html", "<p>just a paragraph</p>")).title == "fragment"


def test_html_uses_article_when_there_is_no_main(tmp_path: Path) -> None:
    html = "<body><div>Sidebar text</div><article><p>Article body</p></article></body>"
    doc = load_one(write(tmp_path, "post.html", html))
    assert doc.text == "Article body"


def test_html_with_only_boilerplate_has_no_text(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match="no text content"):
        load_one(write(tmp_path, "nav.html", "<html><body><nav>Home</nav><script>x()</script></body></html>"))


def test_deeply_nested_html_does_not_overflow(tmp_path: Path) -> None:
    html = "<div>" * 3000 + "deep text" + "</div>" * 3000
    assert load_one(write(tmp_path, "deep.html", html)).text == "deep text"


# --- JSONL ---------------------------------------------------------------------------------------------


def jsonl(*records: object) -> str:
    return "\n".join(record if isinstance(record, str) else json.dumps(record) for record in records) + "\n"


def test_jsonl_yields_one_document_per_line(tmp_path: Path) -> None:
    content = jsonl(
        {"_id": "MED-1", "title": "Statins", "text": "statin breast cancer", "metadata": {"year": 2012}},
        "",
        {"_id": 42, "title": "", "text": "untitled body"},
    )
    path = write(tmp_path, "corpus.jsonl", content)
    docs = load_file(path, doc_id="ignored", source="corpus.jsonl", metadata={"set": "nf"})
    assert [doc.doc_id for doc in docs] == ["MED-1", "42"]
    first, second = docs
    assert first.title == "Statins"
    assert first.text == "Statins\n\nstatin breast cancer"
    assert first.sections[0].text == first.text and first.sections[0].start == 0
    assert first.metadata == {"year": 2012, "set": "nf", "format": "jsonl", "modified": "2024-03-05T06:07:08Z"}
    assert (second.title, second.text, second.source) == ("42", "untitled body", "corpus.jsonl")


def test_jsonl_user_metadata_overrides_line_metadata(tmp_path: Path) -> None:
    path = write(tmp_path, "c.jsonl", jsonl({"_id": "a", "text": "t", "metadata": {"lang": "de"}}))
    (doc,) = load_file(path, doc_id="x", source="c.jsonl", metadata={"lang": "en"})
    assert doc.metadata["lang"] == "en"


@pytest.mark.parametrize(
    ("bad_line", "reason"),
    [
        ('{"_id": "b", "text": ', r"line 2: invalid JSON"),
        ('["not", "an", "object"]', r"line 2: expected a JSON object"),
        ('{"text": "no id"}', r'line 2: missing "_id"'),
        ('{"_id": "b", "title": "no text"}', r'line 2: missing "text"'),
        ('{"_id": "b", "text": "x", "metadata": [1]}', r'line 2: "metadata" must be an object'),
        ('{"_id": "a", "text": "again"}', r"line 2: duplicate _id 'a'"),
    ],
)
def test_jsonl_bad_line_names_its_number(tmp_path: Path, bad_line: str, reason: str) -> None:
    path = write(tmp_path, "c.jsonl", jsonl({"_id": "a", "text": "fine"}, bad_line))
    with pytest.raises(LoaderError, match=reason):
        load_file(path, doc_id="x", source="c.jsonl")


def test_jsonl_loads_a_large_corpus(tmp_path: Path) -> None:
    words = "statin breast cancer survival cohort study finland abstract".split()
    rng = random.Random(0)
    records = [{"_id": f"D{i}", "title": "", "text": " ".join(rng.choices(words, k=180))} for i in range(5000)]
    path = write(tmp_path, "big.jsonl", jsonl(*records))
    docs = load_file(path, doc_id="x", source="big.jsonl")
    assert [d.doc_id for d in docs] == [f"D{i}" for i in range(5000)]


# --- Bad input -----------------------------------------------------------------------------------------

TEXT_FORMATS = ["a.md", "a.txt", "a.html", "a.jsonl", "a.rst"]


@pytest.mark.parametrize("name", [*TEXT_FORMATS, "a.pdf"])
@pytest.mark.parametrize("content", [b"", b"  \n\t\n"], ids=["zero-bytes", "whitespace"])
def test_empty_file(tmp_path: Path, name: str, content: bytes) -> None:
    with pytest.raises(LoaderError, match=r"^empty file$"):
        load_one(write(tmp_path, name, content))


@pytest.mark.parametrize("name", TEXT_FORMATS)
@pytest.mark.parametrize("content", ["\ufeff", "\u00a0\u2003\n"], ids=["bom-only", "unicode-whitespace"])
def test_text_that_decodes_to_nothing_is_empty(tmp_path: Path, name: str, content: str) -> None:
    with pytest.raises(LoaderError, match=r"^empty file$"):
        load_one(write(tmp_path, name, content))


@pytest.mark.parametrize("name", TEXT_FORMATS)
def test_binary_file(tmp_path: Path, name: str) -> None:
    with pytest.raises(LoaderError, match=r"^binary file, not text \(the content is a PNG image\)$"):
        load_one(write(tmp_path, name, b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"))
    with pytest.raises(LoaderError, match=r"^binary file, not text$"):
        load_one(write(tmp_path, name, b"ab\x00\x01cd" * 40))


@pytest.mark.parametrize("name", [name for name in TEXT_FORMATS if name != "a.jsonl"])
def test_latin1_text_is_decoded_not_rejected(tmp_path: Path, name: str) -> None:
    # Until issue 14 this was "invalid UTF-8 at byte 3"; legacy encodings are now detected (cp1252 here).
    doc = load_one(write(tmp_path, name, "café".encode("latin-1") + b" ok \xff"))
    assert "café ok ÿ" in doc.text
    assert doc.metadata["encoding"] == "cp1252"


def test_unsupported_suffix(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=r"^unsupported file type \.xyz$"):
        load_one(write(tmp_path, "data.xyz", "text"))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=r"^cannot read file"):
        load_one(tmp_path / "gone.md")


def test_invalid_front_matter(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=r"^invalid front-matter"):
        load_one(write(tmp_path, "bad.md", "---\ntitle: [unclosed\n---\nbody\n"))


def test_front_matter_only_is_empty(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=r"^empty file"):
        load_one(write(tmp_path, "meta.md", "---\ntitle: x\n---\n"))
