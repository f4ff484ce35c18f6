"""Text formats (issue 14): encodings, Markdown through a CommonMark parser, reStructuredText through docutils,
HTML main-content extraction. Each defect the issue names has a test here that fails on the old parsers."""

from __future__ import annotations

import codecs
from pathlib import Path

import pytest

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.loaders import load_file
from rag.ingest.parsers.encoding import DETECT_BYTES, declared_charset, decode_text
from rag.testing.parsers import assert_sections_tile

TEXT_SUFFIXES = ["txt", "md", "html", "rst"]


def load_one(path: Path) -> Document:
    docs = load_file(path, doc_id="doc-1", source=path.name)
    assert len(docs) == 1
    return docs[0]


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(content.encode("utf-8") if isinstance(content, str) else content)
    return path



# --- Encodings -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("suffix", TEXT_SUFFIXES)
def test_cp1252_file_is_decoded_not_rejected(tmp_path: Path, suffix: str) -> None:
    text = "Caf\u00e9 cr\u00e8me \u2014 \u201cna\u00efve\u201d fa\u00e7ade costs 5 \u20ac."
    doc = load_one(write(tmp_path, f"menu.{suffix}", text.encode("cp1252")))
    assert text in " ".join(doc.text.split())
    assert doc.metadata["encoding"] == "cp1252"


def test_short_latin1_text_is_read_as_western_not_a_rare_code_page(tmp_path: Path) -> None:
    # charset-normalizer alone calls these bytes cp1006 (Urdu): short Latin text needs the cp1252 preference.
    doc = load_one(write(tmp_path, "a.txt", "caf\u00e9 ok".encode("latin-1") + b" \xff"))
    assert doc.text == "caf\u00e9 ok \u00ff"


@pytest.mark.parametrize(
    ("text", "codec"),
    [
        ("\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u042d\u0442\u043e \u0442\u0435\u0441\u0442.", "cp1251"),
        ("\u041f\u0440\u0438\u0432\u0435\u0442, \u043c\u0438\u0440! \u042d\u0442\u043e \u0442\u0435\u0441\u0442.", "koi8-r"),
        ("Za\u017c\u00f3\u0142\u0107 g\u0119\u015bl\u0105 ja\u017a\u0144, pro\u015bba.", "cp1250"),
        ("\u65e5\u672c\u8a9e\u306e\u30c6\u30ad\u30b9\u30c8\u3067\u3059\u3002", "shift_jis"),
    ],
)
def test_legacy_code_pages_are_detected(text: str, codec: str) -> None:
    decoded, _ = decode_text(text.encode(codec))
    assert decoded == text


@pytest.mark.parametrize("codec", ["utf-16", "utf-16-be", "utf-32", "utf-32-be"])
def test_utf16_and_utf32_with_a_bom_are_text(tmp_path: Path, codec: str) -> None:
    text = "# Notes\n\nUnicode \u2713 text.\n"
    data = text.encode(codec)
    if not data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        bom = codecs.BOM_UTF16_BE if codec == "utf-16-be" else codecs.BOM_UTF32_BE
        data = bom + data
    doc = load_one(write(tmp_path, "notes.md", data))
    assert doc.text == text
    assert doc.metadata["encoding"].startswith(codec[:6])


def test_utf32_le_bom_is_not_mistaken_for_utf16() -> None:
    # FF FE 00 00 starts with the UTF-16-LE mark FF FE; read as UTF-16 it would gain a NUL character.
    text, encoding = decode_text(codecs.BOM_UTF32_LE + "hi".encode("utf-32-le"))
    assert (text, encoding) == ("hi", "utf-32-le")


def test_mostly_utf8_file_keeps_its_text_and_counts_replaced_bytes(tmp_path: Path) -> None:
    good = "Gr\u00fc\u00dfe aus K\u00f6ln, na\u00efve caf\u00e9 \u2014 ".encode()
    data = good + b"one stray Latin-1 byte: \xe9t\xe9.\n"
    doc = load_one(write(tmp_path, "mixed.txt", data))
    assert doc.text.startswith("Gr\u00fc\u00dfe aus K\u00f6ln")
    assert "\ufffdt\ufffd." in doc.text
    assert doc.metadata["encoding"] == "utf-8 (2 bytes replaced)"


def test_html_meta_charset_decides_over_detection(tmp_path: Path) -> None:
    # 0xA4 is the euro sign in ISO-8859-15 but a currency sign in cp1252 (what detection alone would pick).
    page = b'<html><head><meta charset="iso-8859-15"><title>Prix</title></head><body><p>Prix : 5 \xa4</p></body></html>'
    doc = load_one(write(tmp_path, "prix.html", page))
    assert "Prix : 5 \u20ac" in doc.text
    assert doc.metadata["encoding"] == "iso8859-15"


def test_html_latin1_label_reads_as_windows_1252(tmp_path: Path) -> None:
    page = '<meta http-equiv="Content-Type" content="text/html; charset=ISO-8859-1"><p>\u201cquoted\u201d</p>'
    doc = load_one(write(tmp_path, "q.html", page.encode("cp1252")))
    assert "\u201cquoted\u201d" in doc.text


@pytest.mark.parametrize(
    ("head", "charset"),
    [
        (b'<?xml version="1.0" encoding="ISO-8859-1"?><html/>', "ISO-8859-1"),
        (b"<html><head><meta charset=utf-8>", "utf-8"),
        (b'<meta http-equiv="content-type" content="text/html; charset=Shift_JIS">', "Shift_JIS"),
        (b"<html><body>no declaration</body></html>", None),
    ],
)
def test_declared_charset(head: bytes, charset: str | None) -> None:
    assert declared_charset(head) == charset


def test_unknown_declared_charset_is_ignored() -> None:
    assert decode_text("caf\u00e9".encode(), declared="no-such-charset") == ("caf\u00e9", "utf-8")


def test_nul_bytes_without_a_bom_are_binary() -> None:
    with pytest.raises(LoaderError, match=r"^binary file, not text$"):
        decode_text("text".encode("utf-16-le"))


def test_detection_examines_a_bounded_prefix(tmp_path: Path) -> None:
    # Past the detection window the file is still decoded whole with the encoding found in the window.
    data = "na\u00efve ".encode("cp1252") * (DETECT_BYTES // 4)
    doc = load_one(write(tmp_path, "big.txt", data))
    assert doc.text.endswith("na\u00efve ")
    assert len(doc.text) == len(data)


# --- Markdown ------------------------------------------------------------------------------------------


def test_markdown_leading_horizontal_rule_is_not_front_matter(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "rule.md", "---\n\nFirst paragraph, kept.\n\n---\n\nSecond paragraph.\n"))
    assert "First paragraph, kept." in doc.text
    assert set(doc.metadata) == {"format", "encoding", "modified"}


def test_markdown_toml_front_matter_is_metadata(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "hugo.md", '+++\ntitle = "Hugo page"\ntags = ["a", "b"]\ndate = 2024-01-02\n+++\n\nBody.\n'))
    assert doc.title == "Hugo page"
    assert doc.metadata["tags"] == ["a", "b"]
    assert doc.metadata["date"] == "2024-01-02"
    assert doc.text.strip() == "Body."


def test_markdown_front_matter_error_is_one_line(tmp_path: Path) -> None:
    with pytest.raises(LoaderError) as caught:
        load_one(write(tmp_path, "bad.md", "---\ntitle: ok\ntags: [unclosed\n---\nbody\n"))
    reason = str(caught.value)
    assert "\n" not in reason
    assert reason.startswith("invalid front-matter: YAML error at line 4: ")


def test_markdown_setext_headings_are_sections(tmp_path: Path) -> None:
    text = "Release History\n===============\n\n2.0 (2024)\n----------\n\n- fixes\n\n1.0\n---\n\n- first\n"
    doc = load_one(write(tmp_path, "HISTORY.md", text))
    assert doc.title == "Release History"
    assert [s.headings for s in doc.sections] == [
        ("Release History",), ("Release History", "2.0 (2024)"), ("Release History", "1.0"),
    ]
    assert doc.sections[1].text.startswith("2.0 (2024)\n----------")
    assert_sections_tile(doc)


@pytest.mark.parametrize(
    "block",
    [
        "<!--\n# commented out\n-->",
        "```\n# shell comment\n```",
        "~~~~\n# tilde fence\n~~~~",
        "    # indented code",
    ],
    ids=["html-comment", "backtick-fence", "tilde-fence", "indented-code"],
)
def test_markdown_hash_lines_in_comments_and_code_are_not_headings(tmp_path: Path, block: str) -> None:
    doc = load_one(write(tmp_path, "guide.md", f"# Guide\n\nIntro.\n\n{block}\n\n## Usage\n\nText.\n"))
    assert [s.headings for s in doc.sections] == [("Guide",), ("Guide", "Usage")]
    assert block in doc.text


def test_markdown_heading_in_a_block_quote_is_content(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "q.md", "# Doc\n\n> # Quoted heading\n> text\n\nAfter.\n"))
    assert [s.headings for s in doc.sections] == [("Doc",)]


def test_markdown_heading_text_loses_links_images_and_html(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "h.md", "## See [the *API*][api] ![logo](x.png) <span>now</span>\n\n[api]: http://x\n"))
    assert doc.sections[0].headings == ("See the API logo now",)


def test_markdown_text_is_the_source_without_front_matter(tmp_path: Path) -> None:
    body = "# T\n\n| a | b |\n|---|---|\n| 1 | 2 |\n\n*emphasis* kept as written\n"
    doc = load_one(write(tmp_path, "t.md", "---\nowner: me\n---\n" + body))
    assert doc.text == body
    assert doc.metadata["owner"] == "me"
    assert "".join(s.text for s in doc.sections) == body


# --- reStructuredText ----------------------------------------------------------------------------------

RST = """\
=================
 Platform Guide
=================

:Author: Docs Team
:Version: 2.1

Intro with *emphasis*, :func:`~rag.load_file` and :ref:`the CLI <cli>`.

.. contents::

Install
=======

Run this::

    pip install rag-platform
    rag ingest ./docs

.. code-block:: python

   import rag

.. toctree::
   :maxdepth: 2

   cli
   api

.. versionadded:: 2.0
   Hybrid search is on by default.

.. note:: Indexes live in ``~/.rag``.

Options
-------

- ``--k``: results per query
- ``--alpha``: dense weight

  - nested item

+---------+---------+-----------+
| Flag    | Default | Meaning   |
+=========+=========+===========+
| --k     | 5       | results   |
+---------+---------+-----------+
| --alpha | 0.5     | weight    |
+---------+---------+-----------+

=======  ========
Store    Backend
=======  ========
faiss    local
qdrant   server
=======  ========

Usage
=====

Ask questions.
"""


def test_rst_overlined_title_is_the_title_not_a_rule(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "guide.rst", RST))
    assert doc.title == "Platform Guide"
    assert "====" not in doc.text and "+----" not in doc.text
    assert doc.text.startswith("Platform Guide\n\nIntro with emphasis")
    assert doc.metadata["format"] == "rst"
    assert doc.metadata["author"] == "Docs Team" and doc.metadata["version"] == "2.1"


def test_rst_sections_follow_heading_paths(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "guide.rst", RST))
    paths = list(dict.fromkeys(s.headings for s in doc.sections))
    assert paths == [
        ("Platform Guide",),
        ("Platform Guide", "Install"),
        ("Platform Guide", "Install", "Options"),
        ("Platform Guide", "Usage"),
    ]
    assert_sections_tile(doc)


def test_rst_tables_are_table_sections(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "guide.rst", RST))
    tables = [s for s in doc.sections if s.table is not None]
    assert [s.text for s in tables] == [
        "| Flag | Default | Meaning |\n|---|---|---|\n| --k | 5 | results |\n| --alpha | 0.5 | weight |",
        "| Store | Backend |\n|---|---|\n| faiss | local |\n| qdrant | server |",
    ]
    assert tables[0].headings == ("Platform Guide", "Install", "Options")


def test_rst_code_lists_and_sphinx_markup(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "guide.rst", RST))
    assert "pip install rag-platform\nrag ingest ./docs" in doc.text  # literal block verbatim
    assert "import rag" in doc.text  # code-block directive
    assert "rag.load_file" in doc.text and "the CLI" in doc.text and ":func:" not in doc.text  # unknown roles
    assert "versionadded: 2.0\n\nHybrid search is on by default." in doc.text  # unknown directive kept
    assert "maxdepth" not in doc.text and "\ncli\n" not in doc.text  # toctree dropped
    assert "Note: Indexes live in ~/.rag." in doc.text
    assert "- --k: results per query\n- --alpha: dense weight\n  - nested item" in doc.text


def test_rst_include_and_raw_are_not_executed(tmp_path: Path) -> None:
    secret = write(tmp_path, "secret.txt", "TOP SECRET")
    text = f"Title\n=====\n\n.. include:: {secret}\n\n.. raw:: html\n\n   <b>RAW</b>\n\nVisible.\n"
    doc = load_one(write(tmp_path, "x.rst", text))
    assert "TOP SECRET" not in doc.text and "RAW" not in doc.text
    assert "Visible." in doc.text


def test_rst_markup_errors_do_not_fail_the_file(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "broken.rst", "Text with *unclosed emphasis and `bad role.\n\n.. unknown-thing::\n"))
    assert "unclosed emphasis" in doc.text
    assert doc.title == "broken"


def test_rst_without_title_uses_the_stem(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "notes.rst", "Just a paragraph.\n\nAnother one.\n"))
    assert doc.title == "notes"
    assert doc.text == "Just a paragraph.\n\nAnother one."


# --- HTML ----------------------------------------------------------------------------------------------

SIDEBAR = '<div role="navigation" class="sidebar"><ul>' + "".join(
    f'<li><a href="/api/{n}.html">{n}</a></li>' for n in ("Buffer", "Child processes", "Crypto", "Streams")
) + "</ul></div>"
COOKIE = '<div class="cookie-banner">We use cookies to improve your experience. Accept all cookies?</div>'
FOOTER = '<div class="footer">Copyright OpenJS Foundation and Node.js contributors.</div>'


def page(body: str, title: str = "Streams | Node.js") -> str:
    return f"<html><head><title>{title}</title></head><body>{SIDEBAR}{COOKIE}<div id='content'>{body}</div>{FOOTER}</body></html>"


STREAMS = (
    "<h1>Stream<a class='headerlink' href='#stream'>\u00b6</a></h1>"
    "<p>A stream is an abstract interface for working with streaming data in Node.js.</p>"
    "<h2 id='readable'>Readable streams <a href='#readable'>#</a></h2>"
    "<p>Readable streams are an abstraction for a source from which data is consumed.</p>"
    "<table><tr><th>Event</th><th>When</th></tr><tr><td>data</td><td>a chunk is ready</td></tr>"
    "<tr><td>end</td><td>no more data</td></tr></table>"
    "<pre>const s = fs.createReadStream('x');\n  s.pipe(out);</pre>"
    "<h2>Writable streams \U0001f517</h2><p>Writable streams are a destination to which data is written.</p>"
)


def test_html_div_sidebar_cookie_banner_and_footer_are_dropped(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "stream.html", page(STREAMS)))
    for boilerplate in ("Child processes", "cookies", "OpenJS"):
        assert boilerplate not in doc.text
    assert "A stream is an abstract interface for working with streaming data in Node.js." in doc.text
    assert doc.title == "Streams | Node.js"


def test_html_permalink_glyphs_leave_heading_paths(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "stream.html", page(STREAMS)))
    paths = list(dict.fromkeys(s.headings for s in doc.sections))
    assert paths == [("Stream",), ("Stream", "Readable streams"), ("Stream", "Writable streams")]
    assert "\u00b6" not in doc.text and "\U0001f517" not in doc.text
    assert_sections_tile(doc)


def test_html_tables_are_table_sections_and_pre_keeps_its_layout(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "stream.html", page(STREAMS)))
    tables = [s for s in doc.sections if s.table is not None]
    assert [s.text for s in tables] == ["| Event | When |\n|---|---|\n| data | a chunk is ready |\n| end | no more data |"]
    assert tables[0].headings == ("Stream", "Readable streams")
    assert "const s = fs.createReadStream('x');\n  s.pipe(out);" in doc.text


def test_html_hash_in_a_heading_is_kept_when_it_is_not_a_link(tmp_path: Path) -> None:
    doc = load_one(write(tmp_path, "cs.html", page("<h1>C#</h1><p>C# is a language with a long paragraph of text.</p>")))
    assert doc.sections[0].headings == ("C#",)


def test_html_pages_sharing_furniture_yield_no_furniture_blocks(tmp_path: Path) -> None:
    blocks = []
    for topic in ("Buffer", "Crypto", "Events"):
        body = f"<h1>{topic}</h1><p>The {topic} module documentation explains its API in detail here.</p>"
        blocks += load_one(write(tmp_path, f"{topic}.html", page(body, topic))).text.split("\n\n")
    assert not [b for b in blocks if "Child processes" in b or "cookies" in b or "OpenJS" in b]
