"""EPUB e-books (written with ebooklib) and Jupyter notebooks (written with nbformat)."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.loaders import load_file
from rag.ingest.parsers import ParseLimits, ParserRegistry
from rag.ingest.parsers.notebook import MAX_OUTPUT_CHARS
from rag.testing.parsers import ParserContractTests


def load(path: Path, **kwargs: object) -> Document:
    docs = load_file(path, doc_id=f"docs/{path.name}", source=f"docs/{path.name}", **kwargs)
    assert len(docs) == 1
    return docs[0]


# -- EPUB -----------------------------------------------------------------------------------------------


def write_epub(path: Path, chapters: list[tuple[str, str, str | None]], *, spine: list[str] | None = None,
               title: str | None = "The Sea Book", authors: tuple[str, ...] = ("Jane Roe",)) -> Path:
    """An EPUB 3 written by ebooklib: ``chapters`` are ``(file name, body HTML, TOC title or None)``;
    ``spine`` lists file names in reading order (default: the order given), after the navigation page."""
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("urn:test:sea-book")
    if title:
        book.set_title(title)
    book.set_language("en")
    for author in authors:
        book.add_author(author)
    items = {}
    for file_name, body, _toc in chapters:
        item = epub.EpubHtml(title=file_name, file_name=file_name, lang="en")
        item.content = body
        book.add_item(item)
        items[file_name] = item
    book.toc = [epub.Link(name, toc, name) for name, _, toc in chapters if toc]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *(items[name] for name in (spine or [c[0] for c in chapters]))]
    epub.write_epub(str(path), book)
    return path


SEA_BOOK = [
    ("ch1.xhtml", "<h1>Chapter One</h1><p>The ship left port at dawn.</p><h2>The storm</h2>"
                  "<p>Waves rose over the deck.</p><table><tr><th>Day</th><th>Miles</th></tr>"
                  "<tr><td>1</td><td>40</td></tr><tr><td>2</td><td>12</td></tr></table>", "Chapter One"),
    ("ch2.xhtml", "<h1>Landfall</h1><p>Land was sighted to the west.</p>", "Chapter Two"),
    ("ch2-cont.xhtml", "<p>They anchored in a quiet bay.</p>", None),  # a file split for size
]


def test_epub_chapters_in_spine_order_with_their_headings(tmp_path: Path) -> None:
    doc = load(write_epub(tmp_path / "sea.epub", SEA_BOOK, authors=("Jane Roe", "John Doe")))
    assert doc.title == "The Sea Book"
    assert (doc.metadata["author"], doc.metadata["language"], doc.metadata["format"]) == (
        ["Jane Roe", "John Doe"], "en", "epub")
    assert doc.text.index("left port") < doc.text.index("Land was sighted") < doc.text.index("quiet bay")
    assert "Table of contents" not in doc.text and "Chapter One\n\nThe ship" in doc.text  # title not repeated
    by_text = {section.text.split("\n")[0]: section for section in doc.sections}
    assert by_text["Chapter One"].headings == ("Chapter One",)
    assert by_text["The storm"].headings == ("Chapter One", "The storm")
    table = next(section for section in doc.sections if section.table is not None)
    assert table.headings == ("Chapter One", "The storm") and table.text.endswith("| 2 | 12 |")
    # Chapter two: the TOC title, the file's own heading nested under it, the continuation file inside it.
    assert {s.headings for s in doc.sections if "Land was sighted" in s.text or "quiet bay" in s.text} == {
        ("Chapter Two", "Landfall")}


def test_epub_reading_order_is_the_spine_not_the_manifest(tmp_path: Path) -> None:
    doc = load(write_epub(tmp_path / "sea.epub", SEA_BOOK[:2], spine=["ch2.xhtml", "ch1.xhtml"]))
    assert doc.text.index("Land was sighted") < doc.text.index("left port")


def test_epub_without_title_falls_back_to_the_file_name(tmp_path: Path) -> None:
    doc = load(write_epub(tmp_path / "untitled-book.epub", SEA_BOOK[:1], title=None, authors=()))
    assert doc.title == "untitled-book" and "author" not in doc.metadata


def test_epub_corrupt_or_not_an_epub(tmp_path: Path) -> None:
    data = write_epub(tmp_path / "sea.epub", SEA_BOOK).read_bytes()
    (tmp_path / "cut.epub").write_bytes(data[: len(data) // 2])
    with pytest.raises(LoaderError, match=r"^corrupt EPUB: "):
        load(tmp_path / "cut.epub")
    plain_zip = io.BytesIO()
    with zipfile.ZipFile(plain_zip, "w") as archive:
        archive.writestr("readme.txt", "not a book")
    (tmp_path / "plain.epub").write_bytes(plain_zip.getvalue())
    with pytest.raises(LoaderError, match=r"^corrupt EPUB: "):
        load(tmp_path / "plain.epub")
    (tmp_path / "text.epub").write_text("just text")
    with pytest.raises(LoaderError, match="not an EPUB"):
        load(tmp_path / "text.epub")


def test_epub_past_the_unpacked_limit_is_refused_before_ebooklib_reads_it(tmp_path: Path) -> None:
    huge = [("ch1.xhtml", "<p>" + "All work and no play. " * 60_000 + "</p>", "One")]  # about 1.3 MB inflated
    path = write_epub(tmp_path / "big.epub", huge)
    assert path.stat().st_size < 100_000  # compresses well: the bomb shape
    with pytest.raises(LoaderError, match=r"^EPUB unpacks to more than ingest.max_unpacked_mb \(1 MiB\)$"):
        load(path, limits=ParseLimits(max_unpacked_mb=1))
    assert "All work" in load(path).text


def test_drm_protected_epub_is_refused(tmp_path: Path) -> None:
    path = write_epub(tmp_path / "drm.epub", SEA_BOOK[:1])
    with zipfile.ZipFile(path, "a") as archive:
        archive.writestr(
            "META-INF/encryption.xml",
            '<encryption xmlns="urn:oasis:names:tc:opendocument:xmlns:container" '
            'xmlns:enc="http://www.w3.org/2001/04/xmlenc#"><enc:EncryptedData>'
            '<enc:EncryptionMethod Algorithm="http://www.w3.org/2001/04/xmlenc#aes128-cbc"/>'
            '<enc:CipherData><enc:CipherReference URI="EPUB/ch1.xhtml"/></enc:CipherData>'
            "</enc:EncryptedData></encryption>",
        )
    with pytest.raises(LoaderError, match=r"^DRM-protected EPUB"):
        load(path)


# -- notebooks ------------------------------------------------------------------------------------------


def write_notebook(path: Path, cells: list, **metadata: object) -> Path:
    import nbformat
    from nbformat import v4

    notebook = v4.new_notebook(metadata={
        "kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"},
        "language_info": {"name": "python"}, **metadata,
    })
    notebook.cells = cells
    nbformat.write(notebook, str(path))
    return path


def test_notebook_headings_code_and_outputs(tmp_path: Path) -> None:
    from nbformat import v4

    path = write_notebook(tmp_path / "analysis.ipynb", [
        v4.new_markdown_cell("# Sales analysis\n\nWe load the data.\n\n```\n# a comment, not a heading\n```"),
        v4.new_code_cell("import pandas as pd\n# also not a heading\ndf = pd.read_csv('sales.csv')"),
        v4.new_markdown_cell("## Cleaning *the* data\nDrop rows without a region."),
        v4.new_code_cell("df = df.dropna()\ndf.shape", outputs=[
            v4.new_output("stream", name="stdout", text="\x1b[32mdropped 12 rows\x1b[0m\n"),
            v4.new_output("execute_result", data={"text/plain": "(988, 7)", "text/html": "<b>988</b>"}),
        ]),
        v4.new_code_cell("1/0", outputs=[v4.new_output("error", ename="ZeroDivisionError",
                                                       evalue="division by zero", traceback=["\x1b[31m..."])]),
    ])
    doc = load(path)
    assert doc.title == "Sales analysis"
    assert (doc.metadata["kernel"], doc.metadata["kernel_language"], doc.metadata["format"]) == ("python3", "python", "ipynb")
    assert "```python\nimport pandas as pd\n# also not a heading\ndf = pd.read_csv('sales.csv')\n```" in doc.text
    assert "```output\ndropped 12 rows\n(988, 7)\n```" in doc.text  # colour codes gone, HTML output skipped
    assert "ZeroDivisionError: division by zero" in doc.text and "<b>" not in doc.text
    headings = {section.headings for section in doc.sections}
    assert headings == {("Sales analysis",), ("Sales analysis", "Cleaning the data")}
    code = next(section for section in doc.sections if "dropna" in section.text)
    assert code.headings == ("Sales analysis", "Cleaning the data")


def test_notebook_long_output_is_capped(tmp_path: Path) -> None:
    from nbformat import v4

    noisy = "".join(f"step {n}: loss 0.{n:04d}\n" for n in range(5000))
    doc = load(write_notebook(tmp_path / "train.ipynb", [
        v4.new_code_cell("train()", outputs=[v4.new_output("stream", name="stdout", text=noisy)])]))
    assert "step 0: loss" in doc.text and "step 4999" not in doc.text
    assert len(doc.text) < MAX_OUTPUT_CHARS + 200 and "more characters of output)" in doc.text
    assert doc.title == "train"  # no heading: the file name


def test_old_notebook_format_is_upgraded(tmp_path: Path) -> None:
    import nbformat
    from nbformat import v4

    notebook = v4.new_notebook(cells=[v4.new_markdown_cell("# Legacy\n\nStill readable."), v4.new_code_cell("x = 1")])
    (tmp_path / "old.ipynb").write_text(nbformat.writes(nbformat.convert(notebook, 3), version=3))
    doc = load(tmp_path / "old.ipynb")
    assert doc.title == "Legacy" and "Still readable." in doc.text and "x = 1" in doc.text


@pytest.mark.parametrize(("content", "reason"), [
    ('{"cells": [', "NotJSONError: Notebook does not appear to be JSON"),
    ('["a", "list"]', "the JSON is not a Jupyter notebook"),
    ('{"nbformat": 4, "cells": 7}', "the JSON is not a Jupyter notebook"),
])
def test_invalid_notebook_is_refused_with_a_reason(tmp_path: Path, content: str, reason: str) -> None:
    (tmp_path / "bad.ipynb").write_text(content)
    with pytest.raises(LoaderError, match=f"^invalid notebook: {reason}"):
        load(tmp_path / "bad.ipynb")


def test_schema_drift_is_tolerated_quietly(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    import json

    cell = {"cell_type": "markdown", "id": "a1", "metadata": {}, "source": "# Drift\n\nAn extra key.", "x-tool": 1}
    (tmp_path / "drift.ipynb").write_text(json.dumps({"nbformat": 4, "nbformat_minor": 5, "metadata": {}, "cells": [cell]}))
    with caplog.at_level("WARNING"):
        doc = load(tmp_path / "drift.ipynb")
    assert doc.title == "Drift" and caplog.records == []


def test_empty_notebook_has_no_text_content(tmp_path: Path) -> None:
    from nbformat import v4

    with pytest.raises(LoaderError, match=r"^no text content$"):
        load(write_notebook(tmp_path / "empty.ipynb", [v4.new_code_cell(""), v4.new_markdown_cell("  ")]))


# -- the shipped parser contract ------------------------------------------------------------------------


class TestEpubContract(ParserContractTests):
    @pytest.fixture
    def parser(self):
        return ParserRegistry(plugins=False).get("epub")

    @pytest.fixture
    def sample(self, tmp_path: Path):
        return "sea.epub", write_epub(tmp_path / "sea.epub", SEA_BOOK).read_bytes()


class TestNotebookContract(ParserContractTests):
    @pytest.fixture
    def parser(self):
        return ParserRegistry(plugins=False).get("ipynb")

    @pytest.fixture
    def sample(self, tmp_path: Path):
        from nbformat import v4

        cells = [v4.new_markdown_cell("# Title\n\nText."), v4.new_code_cell("print(1)", outputs=[
            v4.new_output("stream", name="stdout", text="1\n")])]
        return "nb.ipynb", write_notebook(tmp_path / "nb.ipynb", cells).read_bytes()
