"""Word (.docx): headings as the heading path, paragraphs, lists and tables in document order, and the
document properties (author, dates) as metadata.

Read with python-docx after :func:`~rag.ingest.parsers.ooxml.open_package` has checked the package. The
body's paragraphs and tables are walked in the order they appear. A paragraph is a heading when its
style is ``Title`` or ``Heading 1``..``Heading 9`` (or a style based on one), or when it or its style
carries an outline level; list paragraphs are written ``- item`` (bullets) or ``1. item`` (numbered),
indented two spaces per level. Headers, footers, footnotes, comments and text boxes are not read.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, missing_module
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.ooxml import core_metadata, library_error, open_package, sniff_package

log = logging.getLogger(__name__)

WHAT = "Word document"
_HEADING_STYLE = re.compile(r"^heading\s*([1-9])$", re.IGNORECASE)
# "List Bullet 2", "List Number 3": the built-in list styles name their nesting level.
_LIST_STYLE_LEVEL = re.compile(r"^list\b.*?\s([2-9])$", re.IGNORECASE)
# Word's outline levels are 0..8 for headings; 9 means body text.
_BODY_OUTLINE_LEVEL = 9
# How far up a chain of based-on styles to look (Word allows cycles in corrupt files).
_MAX_STYLE_DEPTH = 10
_INDENT = "  "


@dataclass(frozen=True, slots=True)
class _StyleInfo:
    """What a paragraph style says about its paragraphs: heading level (0 for Title), list numbering."""

    heading: int | None = None
    num_id: int | None = None
    list_level: int = 0


@dataclass(slots=True)
class _Lists:
    """Numbering formats of the document's lists and the running counters of numbered items."""

    numbering: Any  # the numbering part's root element, or None when the document has no lists
    formats: dict[tuple[int, int], bool] = field(default_factory=dict)  # (numId, ilvl) -> is bullet
    counters: dict[tuple[int, int], int] = field(default_factory=dict)

    def is_bullet(self, num_id: int, level: int) -> bool:
        key = (num_id, level)
        if key not in self.formats:
            self.formats[key] = self._lookup_bullet(num_id, level)
        return self.formats[key]

    def _lookup_bullet(self, num_id: int, level: int) -> bool:
        if self.numbering is None:
            return True
        abstract = self.numbering.xpath(f'./w:num[@w:numId="{num_id}"]/w:abstractNumId/@w:val')
        if not abstract:
            return True
        fmt = self.numbering.xpath(
            f'./w:abstractNum[@w:abstractNumId="{abstract[0]}"]/w:lvl[@w:ilvl="{level}"]/w:numFmt/@w:val'
        )
        return not fmt or fmt[0] in ("bullet", "none")

    def marker(self, num_id: int, level: int) -> str:
        """``-`` for a bullet, ``N.`` for the next number of this list at this level."""
        if self.is_bullet(num_id, level):
            return "-"
        count = self.counters.get((num_id, level), 0) + 1
        self.counters[(num_id, level)] = count
        # A new item restarts the numbering of the levels nested below it.
        for key in [k for k in self.counters if k[0] == num_id and k[1] > level]:
            del self.counters[key]
        return f"{count}."


def _outline_level(ppr: Any) -> int | None:
    """The heading level (1-based) an ``outlineLvl`` in paragraph properties gives, or ``None``."""
    if ppr is None:
        return None
    values = ppr.xpath("./w:outlineLvl/@w:val")
    if not values or not values[0].isdigit() or int(values[0]) >= _BODY_OUTLINE_LEVEL:
        return None
    return int(values[0]) + 1


def _num_pr(ppr: Any) -> tuple[int | None, int | None]:
    """``(numId, ilvl)`` of the numbering in paragraph properties (each ``None`` when absent)."""
    if ppr is None or ppr.numPr is None:
        return None, None
    num_pr = ppr.numPr
    num_id = num_pr.numId.val if num_pr.numId is not None else None
    level = num_pr.ilvl.val if num_pr.ilvl is not None else None
    return num_id, level


def _style_info(style: Any) -> _StyleInfo:
    """Heading level and list numbering of a paragraph style, following its based-on chain."""
    heading: int | None = None
    num_id: int | None = None
    list_level = 0
    for _ in range(_MAX_STYLE_DEPTH):
        if style is None:
            break
        name = (style.name or "").strip()
        if heading is None:
            match = _HEADING_STYLE.match(name)
            heading = 0 if name.lower() == "title" else int(match.group(1)) if match else None
            if heading is None:
                heading = _outline_level(style.element.pPr)
        if num_id is None:
            found, level = _num_pr(style.element.pPr)
            if found is not None:
                num_id = found
                level_match = _LIST_STYLE_LEVEL.match(name)
                list_level = level if level is not None else int(level_match.group(1)) - 1 if level_match else 0
        style = style.base_style
    return _StyleInfo(heading=heading, num_id=num_id or None, list_level=list_level)


def _blocks(container: Any, parent: Any) -> Iterator[Any]:
    """The paragraphs and tables under a body (or cell) element in order, including those inside
    block-level content controls (``w:sdt``: cover pages, tables of contents, template fields), which
    python-docx's own iteration skips."""
    from docx.oxml.ns import qn
    from docx.table import Table
    from docx.text.paragraph import Paragraph

    for child in container.iterchildren():
        if child.tag == qn("w:p"):
            yield Paragraph(child, parent)
        elif child.tag == qn("w:tbl"):
            yield Table(child, parent)
        elif child.tag == qn("w:sdt"):
            content = child.find(qn("w:sdtContent"))
            if content is not None:
                yield from _blocks(content, parent)


def _cell_text(cell: Any) -> str:
    """A table cell's text: its paragraphs and any nested table's cells, joined with spaces."""
    parts: list[str] = []
    from docx.table import Table

    for block in _blocks(cell._tc, cell):  # the cell's own element: python-docx has no public accessor
        if isinstance(block, Table):
            parts.extend(_cell_text(inner) for row in block.rows for inner in row.cells)
        else:
            parts.append(block.text)
    return " ".join(" ".join(parts).split())


def _table_rows(table: Any) -> list[list[str]]:
    # A merged cell repeats its text in every row and column it spans, so each row reads on its own.
    return [[_cell_text(cell) for cell in row.cells] for row in table.rows]


class _Walker:
    """Turns the body's blocks into builder calls, keeping consecutive list items in one block."""

    def __init__(self, document: Any) -> None:
        self.builder = DocumentBuilder()
        self.first_heading: str | None = None
        self._styles: dict[str | None, _StyleInfo] = {}
        self._lists = _Lists(numbering=self._numbering_root(document))
        self._list_lines: list[str] = []

    @staticmethod
    def _numbering_root(document: Any) -> Any:
        from docx.opc.constants import RELATIONSHIP_TYPE as RT

        # Look the part up instead of using DocumentPart.numbering_part, which adds one when missing.
        try:
            return document.part.part_related_by(RT.NUMBERING).element
        except KeyError:
            return None

    def _info(self, paragraph: Any) -> _StyleInfo:
        style_id = paragraph._p.style  # the style id; python-docx resolves the style object slowly
        if style_id not in self._styles:
            self._styles[style_id] = _style_info(paragraph.style)
        return self._styles[style_id]

    def walk(self, blocks: Iterator[Any]) -> None:
        from docx.table import Table

        for block in blocks:
            if isinstance(block, Table):
                self._flush_list()
                self.builder.table(_table_rows(block))
            else:
                self._paragraph(block)
        self._flush_list()

    def _paragraph(self, paragraph: Any) -> None:
        text = paragraph.text
        if not text.strip():
            return
        info = self._info(paragraph)
        ppr = paragraph._p.pPr
        heading = _outline_level(ppr) or info.heading
        if heading is not None:
            self._flush_list()
            if self.first_heading is None:
                self.first_heading = " ".join(text.split())
            self.builder.heading(heading, text)
            return
        num_id, level = _num_pr(ppr)
        if num_id is None:
            num_id, level = info.num_id, info.list_level
        elif level is None:
            level = 0
        if num_id:  # numId 0 switches numbering off for this paragraph
            marker = self._lists.marker(num_id, level or 0)
            self._list_lines.append(f"{_INDENT * (level or 0)}{marker} {' '.join(text.split())}")
            return
        self._flush_list()
        self.builder.paragraph(text)

    def _flush_list(self) -> None:
        if self._list_lines:
            self.builder.paragraph("\n".join(self._list_lines))
            self._list_lines = []


class DocxParser(BaseParser):
    """Word documents: headings, paragraphs, lists and tables in order; title, author and dates as metadata."""

    name = "docx"
    suffixes = (".docx",)
    media_types = ("application/vnd.openxmlformats-officedocument.wordprocessingml.document",)
    description = "headings as sections, paragraphs, lists and tables in order; author and dates as metadata"

    def available(self) -> str | None:
        return missing_module("docx", None, "python-docx")

    def sniff(self, head: bytes) -> str | None:
        return sniff_package(head, WHAT)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Read one .docx file.

        Raises:
            LoaderError: encrypted, legacy, corrupt or oversized package, or no text.
        """
        import docx

        stream = open_package(data, ctx.limits, WHAT, ".docx")
        try:
            document = docx.Document(stream)
            walker = _Walker(document)
            walker.walk(_blocks(document.element.body, document))
            props = document.core_properties
            metadata = core_metadata(author=props.author, created=props.created, modified=props.modified,
                                     subject=props.subject, keywords=props.keywords)
            core_title = (props.title or "").strip()
        except Exception as exc:  # python-docx and lxml raise many types for a malformed package
            log.debug("python-docx failed on %s", ctx.name, exc_info=True)
            raise library_error(WHAT, exc) from None
        title = core_title or walker.first_heading or ctx.stem
        doc = walker.builder.build(
            doc_id=ctx.doc_id, source=ctx.source, title=title,
            metadata=ctx.merge_metadata(metadata, format=self.name),
        )
        return [doc]
