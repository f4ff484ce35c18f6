"""PDF: the text layer in reading order, tables as tables, headings, and OCR for scanned pages.

pypdfium2 (PDFium) reads the text layer character by character with positions and font sizes; this
module turns the characters into lines, orders them column by column, drops running headers and
footers and table-of-contents dot leaders, takes headings from the outline (bookmarks) or from font
size, and builds one section per page and heading. Pages with ruling lines go through pdfplumber's
table finder; a table found becomes its own Markdown-table section and leaves the running text.
Pages without a text layer are rendered and read by OCR (:mod:`rag.ingest.parsers.ocr`) as
``ingest.ocr`` says; such sections carry ``ocr: true``.
"""

from __future__ import annotations

import io
import logging
import math
import re
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers.base import PDF_MAGIC, BaseParser, ParseContext, sniff_magic
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.layout import Line, is_dot_leader, reading_order, running_lines

log = logging.getLogger(__name__)

# Generators (reportlab, some office suites) write these when the author set no title.
_PLACEHOLDER_TITLES = frozenset({"", "untitled", "untitled document", "anonymous"})

# PDFium is not thread-safe: one document at a time per process.
_PDFIUM_LOCK = threading.Lock()

# Characters: a gap wider than this many font sizes splits a line (two columns written row by row).
_SPLIT_GAP_EMS = 1.5
# A change of height by this share of the font size starts a new line.
_NEW_LINE_SHIFT = 0.6
# Soft hyphens as PDFium reports them, and control characters that are never text.
_SOFT_HYPHENS = frozenset({"\x02", "\ufffe", "\u00ad"})

# Paragraphs: a vertical gap larger than this share of the font size separates two.
_PARAGRAPH_GAP = 0.6

# Headings by font size: clearly larger than the body text, short, and not most of the document.
_HEADING_RATIO = 1.15
_HEADING_MIN_POINTS = 1.0
_HEADING_MAX_CHARS = 150
_HEADING_MAX_SHARE = 0.3
_HEADING_MAX_LEVELS = 4

# OCR: pages with fewer visible characters than this count as having no text layer (a stamped page
# number on a scan), if they show something (an image or vector paths) to read.
_MIN_TEXT_CHARS = 16
# Render resolution for OCR: at 150 dpi, 11-point scans read at under 3 % CER (tests/ingest/test_ocr.py);
# more pixels cost detector time, and RapidOCR shrinks pages past 2,000 pixels (about 170 dpi for A4) anyway.
OCR_DPI = 150
# The most pixels one rendered page may have (a poster-sized page is rendered at a lower dpi).
_MAX_RENDER_PIXELS = 25_000_000

# Tables: only pages with ruling lines are searched, and not vector drawings (thousands of paths).
_TABLE_MAX_PATHS = 3000
_MAX_OBJECTS_COUNTED = 5000


@dataclass(slots=True)
class _Page:
    """One page's content on its way into the document."""

    number: int
    lines: list[Line] = field(default_factory=list)
    ocr: bool = False


@dataclass(slots=True)
class _OcrState:
    """Why pages went unread, for the message when no page has text."""

    needed: int = 0
    unavailable: str | None = None
    ran: int = 0


class PdfParser(BaseParser):
    """PDF files: the text layer (or OCR of scanned pages), tables, headings and page numbers."""

    name = "pdf"
    suffixes = (".pdf",)
    media_types = ("application/pdf",)
    description = "text in reading order per page; tables; headings from bookmarks or font size; OCR of scanned pages"

    def sniff(self, head: bytes) -> str | None:
        # Some writers put junk before the header; readers accept it within the first KiB.
        return None if PDF_MAGIC in head[:1024] else sniff_magic(head, PDF_MAGIC, "a PDF")

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Read a PDF into one document; each page (and heading) its own section with ``page`` set.

        Raises:
            LoaderError: encrypted, corrupt, more pages than ``ingest.max_pages``, or no text at all.
        """
        with _PDFIUM_LOCK:
            pdf = _open_document(data)
            try:
                return [self._parse_open(pdf, data, ctx)]
            finally:
                pdf.close()

    def _parse_open(self, pdf: Any, data: bytes, ctx: ParseContext) -> Document:
        count = len(pdf)
        if count > ctx.limits.max_pages:
            raise LoaderError(f"{count} pages, more than ingest.max_pages ({ctx.limits.max_pages})")
        ocr = _OcrState()
        with _TableFinder(data) as tables:
            pages = [_read_page(pdf, index, ctx.limits.ocr, ocr, tables) for index in range(count)]
        drop = running_lines([page.lines for page in pages if not page.ocr])
        for page in pages:
            page.lines = [line for line in page.lines if id(line) not in drop and not _is_toc_line(line)]
        if not any(page.lines for page in pages):
            raise LoaderError(_no_text_reason(ocr, ctx.limits.ocr))
        size_title = _mark_size_headings(pages, apply=not _mark_outline_headings(pdf, pages))
        builder = DocumentBuilder()
        for page in pages:
            _add_page(builder, page)
        title = _metadata_title(pdf) or size_title or ctx.stem
        return builder.build(
            doc_id=ctx.doc_id, source=ctx.source, title=title,
            metadata=ctx.merge_metadata(format=self.name),
        )


# -- opening -----------------------------------------------------------------------------------------


def _open_document(data: bytes) -> Any:
    import pypdfium2 as pdfium
    import pypdfium2.raw as pdfium_c

    try:
        return pdfium.PdfDocument(data)
    except pdfium.PdfiumError as exc:
        if getattr(exc, "err_code", None) == pdfium_c.FPDF_ERR_PASSWORD:
            raise LoaderError("encrypted PDF (password required)") from None
        reason = str(exc).removeprefix("Failed to load document ").strip("(). ") or "unreadable"
        raise LoaderError(f"corrupt PDF: {reason}") from None


def _metadata_title(pdf: Any) -> str:
    try:
        title = " ".join(str(pdf.get_metadata_dict().get("Title") or "").split())
    except Exception:  # noqa: BLE001 - a malformed Info dictionary is no reason to lose the text
        return ""
    return "" if title.lower() in _PLACEHOLDER_TITLES else title


# -- one page ----------------------------------------------------------------------------------------


def _read_page(pdf: Any, index: int, mode: str, ocr: _OcrState, tables: _TableFinder) -> _Page:
    """Page ``index``: its text layer or OCR text, and its tables, in reading order."""
    page = pdf[index]
    try:
        height = page.get_mediabox()[3]
        images, paths, ruled = _count_objects(page)
        found = tables.find(index) if ruled and paths <= _TABLE_MAX_PATHS else []
        textpage = page.get_textpage()
        try:
            lines = _text_lines(textpage, height, found)
        finally:
            textpage.close()
        visible = sum(len(line.text.replace(" ", "")) for line in lines)
        wants_ocr = mode == "always" or (mode == "auto" and visible < _MIN_TEXT_CHARS and (images or paths))
        if wants_ocr:
            ocr_lines = _ocr_page(page, ocr)
            if ocr_lines is not None:
                return _Page(index + 1, ocr_lines, ocr=True)
        elif mode == "never" and visible < _MIN_TEXT_CHARS and images:
            ocr.needed += 1
        return _Page(index + 1, reading_order(_place_tables(lines, found)))
    finally:
        page.close()


def _place_tables(lines: list[Line], tables: list[Line]) -> list[Line]:
    """``lines`` with each table put before the first line below its top (the file's order is by position)."""
    placed = list(lines)
    for table in sorted(tables, key=lambda block: block.top):
        at = next((index for index, line in enumerate(placed) if line.rows is None and line.top > table.top), len(placed))
        placed.insert(at, table)
    return placed


def _count_objects(page: Any) -> tuple[int, int, bool]:
    """How many image and path objects the page draws, and whether its paths could rule a table.

    A ruled table needs horizontal rules at three heights and vertical rules at three places at least
    (a 2 x 2 grid); a frame or a shaded box around a code listing, or a rule under a header, has fewer
    and is not worth pdfplumber's time. Counting stops at a few thousand objects.
    """
    import pypdfium2.raw as pdfium_c

    images = paths = 0
    heights: set[int] = set()
    places: set[int] = set()
    for number, obj in enumerate(page.get_objects(max_depth=3)):
        if number >= _MAX_OBJECTS_COUNTED:
            break
        if obj.type == pdfium_c.FPDF_PAGEOBJ_IMAGE:
            images += 1
        elif obj.type == pdfium_c.FPDF_PAGEOBJ_PATH:
            paths += 1
            if paths <= _TABLE_MAX_PATHS:
                _collect_rules(obj.raw, heights, places)
    return images, paths, len(heights) >= 3 and len(places) >= 3


def _collect_rules(path: Any, heights: set[int], places: set[int]) -> None:
    """Add the page heights of a path's horizontal straight segments and the places of its vertical ones."""
    import ctypes

    import pypdfium2.raw as pdfium_c

    matrix = pdfium_c.FS_MATRIX()
    if not pdfium_c.FPDFPageObj_GetMatrix(path, matrix):
        return
    x, y = ctypes.c_float(), ctypes.c_float()
    start = last = None
    for index in range(min(pdfium_c.FPDFPath_CountSegments(path), 400)):
        segment = pdfium_c.FPDFPath_GetPathSegment(path, index)
        if not pdfium_c.FPDFPathSegment_GetPoint(segment, x, y):
            continue
        # Segment points are in the path's own space; the matrix places them on the page.
        point = (matrix.a * x.value + matrix.c * y.value + matrix.e, matrix.b * x.value + matrix.d * y.value + matrix.f)
        kind = pdfium_c.FPDFPathSegment_GetType(segment)
        if kind == pdfium_c.FPDF_SEGMENT_LINETO and last is not None:
            _add_rule(last, point, heights, places)
        if kind == pdfium_c.FPDF_SEGMENT_MOVETO:
            start = point
        last = point
        if pdfium_c.FPDFPathSegment_GetClose(segment) and start is not None:
            _add_rule(point, start, heights, places)


def _add_rule(a: tuple[float, float], b: tuple[float, float], heights: set[int], places: set[int]) -> None:
    dx, dy = abs(a[0] - b[0]), abs(a[1] - b[1])
    if dx > 3 and dx > 50 * dy:
        heights.add(round(a[1]))
    elif dy > 3 and dy > 50 * dx:
        places.add(round(a[0]))


def _text_lines(textpage: Any, page_top: float, tables: Sequence[Line]) -> list[Line]:  # noqa: C901 - one hot loop, its state in locals
    """The page's characters as lines (top-left coordinates), in the file's order; table cells left out.

    This loop runs once per character of every PDF, so it calls PDFium's C functions directly and keeps
    its state in locals; the font size is read once per word.
    """
    import pypdfium2.raw as pdfium_c

    handle = textpage.raw
    count = pdfium_c.FPDFText_CountChars(handle)
    if count <= 0:
        return []
    text = textpage.get_text_range()
    if len(text) != count:  # PDFium excluded or inserted characters: read them one by one
        text = "".join(chr(pdfium_c.FPDFText_GetUnicode(handle, i)) for i in range(count))
    char_box, font_size = pdfium_c.FPDFText_GetLooseCharBox, pdfium_c.FPDFText_GetFontSize
    rect = pdfium_c.FS_RECTF()
    lines: list[Line] = []
    chars: list[str] = []
    sizes: list[float] = []
    x0 = top = x1 = bottom = middle = 0.0  # the line's box so far; its first character's vertical middle
    size = em = 1.0
    word_start = True

    def finish() -> None:
        line_text = "".join(chars).strip()
        if line_text:
            sizes.sort()
            lines.append(Line(line_text, x0, top, x1, bottom, sizes[len(sizes) // 2]))
        chars.clear()
        sizes.clear()

    for index, char in enumerate(text):
        if char in "\r\n":
            finish()
            word_start = True
            continue
        if char.isspace():
            word_start = True
            continue
        if char in _SOFT_HYPHENS:
            char = "-"
        elif char < " ":
            continue
        if not char_box(handle, index, rect):
            continue
        c_x0, c_x1, c_top, c_bottom = rect.left, rect.right, page_top - rect.top, page_top - rect.bottom
        if word_start:
            size = font_size(handle, index)
            if size < 1:  # a font size PDFium cannot tell: the box is the best measure
                size = max(c_bottom - c_top, 1.0)
        centre_y = (c_top + c_bottom) / 2
        if tables:
            centre_x = (c_x0 + c_x1) / 2
            if any(t.x0 <= centre_x <= t.x1 and t.top <= centre_y <= t.bottom for t in tables):
                continue
        if chars:
            em = size if size > sizes[0] else sizes[0]
            if abs(centre_y - middle) > _NEW_LINE_SHIFT * em or c_x0 - x1 > _SPLIT_GAP_EMS * em:
                finish()
        if not chars:
            x0, top, x1, bottom, middle = c_x0, c_top, c_x1, c_bottom, centre_y
        else:
            if word_start:
                chars.append(" ")
            x0 = c_x0 if c_x0 < x0 else x0
            top = c_top if c_top < top else top
            x1 = c_x1 if c_x1 > x1 else x1
            bottom = c_bottom if c_bottom > bottom else bottom
        if word_start or not sizes:
            sizes.append(size)
        word_start = False
        chars.append(char)
    finish()
    return lines


def _ocr_page(page: Any, state: _OcrState) -> list[Line] | None:
    """The page read by OCR, or ``None`` when OCR is not installed (the reason kept in ``state``)."""
    from rag.ingest.parsers.ocr import ocr_unavailable, recognise

    state.needed += 1
    missing = ocr_unavailable()
    if missing:
        state.unavailable = missing
        return None
    width, height = page.get_size()
    scale = min(OCR_DPI / 72, math.sqrt(_MAX_RENDER_PIXELS / max(width * height, 1.0)))
    bitmap = page.render(scale=scale, grayscale=True)
    try:
        image = bitmap.to_pil()
        lines = recognise(image, scale=scale)
    finally:
        bitmap.close()
    state.ran += 1
    return lines


def _no_text_reason(ocr: _OcrState, mode: str) -> str:
    if ocr.needed and mode == "never":
        return "no extractable text (scanned PDF; ingest.ocr is never)"
    if ocr.needed and ocr.unavailable:
        return f"no extractable text (scanned PDF; OCR {ocr.unavailable})"
    if ocr.ran:
        return "no extractable text (scanned PDF; OCR found no text)"
    return "no extractable text (the pages are blank)"


def _is_toc_line(line: Line) -> bool:
    return line.rows is None and is_dot_leader(line.text)


# -- tables ------------------------------------------------------------------------------------------


class _TableFinder:
    """pdfplumber's ruled-table finder, opened on the first page that may hold a table."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._pdf: Any = None
        self._failed = False

    def __enter__(self) -> _TableFinder:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pdf is not None:
            self._pdf.close()

    def find(self, index: int) -> list[Line]:
        """The tables on page ``index`` as table blocks (``rows`` set), or none if pdfplumber fails."""
        if self._failed:
            return []
        try:
            if self._pdf is None:
                import pdfplumber

                self._pdf = pdfplumber.open(io.BytesIO(self._data))
            page = self._pdf.pages[index]
            try:
                return [block for table in page.find_tables() if (block := _table_block(table)) is not None]
            finally:
                page.close()
        except Exception as exc:  # noqa: BLE001 - tables are a bonus: a file pdfminer cannot read still has its text
            log.debug("no table detection for this PDF: %s", exc)
            self._failed = True
            return []


def _table_block(table: Any) -> Line | None:
    rows = [[" ".join((cell or "").split()) for cell in row] for row in table.extract()]
    rows = [row for row in rows if any(row)]
    if len(rows) < 2 or max(len(row) for row in rows) < 2:
        return None  # a box around a paragraph, not a table
    x0, top, x1, bottom = table.bbox
    text = " ".join(cell for row in rows for cell in row)
    return Line(text=text, x0=x0, top=top, x1=x1, bottom=bottom, size=max(bottom - top, 1.0), rows=rows)


# -- headings ----------------------------------------------------------------------------------------


def _key(text: str) -> str:
    return re.sub(r"[\W_]+", "", text.lower())


def _outline(pdf: Any) -> Iterator[tuple[int, int, str]]:
    """``(page index, level, title)`` of each bookmark that points at a page (at most 10,000)."""
    for number, bookmark in enumerate(pdf.get_toc(max_depth=_HEADING_MAX_LEVELS + 2)):
        if number >= 10_000:
            break
        title = " ".join(bookmark.get_title().split())
        dest = bookmark.get_dest()
        index = dest.get_index() if dest is not None else None
        if title and index is not None:
            yield index, bookmark.level + 1, title


def _mark_outline_headings(pdf: Any, pages: list[_Page]) -> bool:
    """Mark the lines the PDF's bookmarks point at as headings; ``False`` when it has no usable outline.

    A bookmark's title is looked for on its page after the previous one's line; when the page has no
    such line (a bookmark to a figure, a title drawn as an image), the heading opens at the page's top.
    """
    try:
        entries = list(_outline(pdf))
    except Exception as exc:  # noqa: BLE001 - a malformed outline: fall back to font sizes
        log.debug("unreadable PDF outline: %s", exc)
        return False
    by_number = {page.number: page for page in pages}
    cursor: dict[int, int] = {}
    marked = False
    for index, level, title in entries:
        page = by_number.get(index + 1)
        if page is None:
            continue
        want = _key(title)
        start = cursor.get(page.number, 0)
        for position in range(start, len(page.lines)):
            line = page.lines[position]
            have = _key(line.text)
            if line.rows is None and want and (have.endswith(want) or (len(have) >= 8 and want.startswith(have))):  # noqa: SIM102 - the length test below has its own reason
                if len(have) <= len(want) + 12:  # the title with its number, not a sentence citing it
                    line.heading, line.title = min(level, 6), title
                    cursor[page.number] = position + 1
                    break
        else:
            page.lines.insert(start, Line("", 0, 0, 0, 0, 1, heading=min(level, 6), title=title))
            cursor[page.number] = start + 1
        marked = True
    return marked


def _mark_size_headings(pages: list[_Page], *, apply: bool) -> str:
    """Mark lines set clearly larger than the body text as headings (largest = level 1).

    Args:
        pages: the document's pages; OCR pages are left alone (their heights are not font sizes).
        apply: mark the lines (``False`` when the outline gave the headings: only the title is wanted).

    Returns:
        The first such heading on the first page with text, as a title candidate (``""`` if none).
    """
    lines = [line for page in pages if not page.ocr for line in page.lines if line.rows is None and line.text]
    weights: Counter[float] = Counter()
    for line in lines:
        weights[round(line.size * 2) / 2] += len(line.text)
    if not weights:
        return ""
    body = weights.most_common(1)[0][0]
    threshold = max(body * _HEADING_RATIO, body + _HEADING_MIN_POINTS)
    candidates = [line for line in lines if line.size >= threshold and _looks_like_heading(line.text)]
    if sum(len(line.text) for line in candidates) > _HEADING_MAX_SHARE * sum(weights.values()):
        return ""  # "headings" that are most of the text: large print, not structure
    levels = sorted({round(line.size * 2) / 2 for line in candidates}, reverse=True)[:_HEADING_MAX_LEVELS]
    first = next((page for page in pages if page.lines and not page.ocr), None)
    title = ""
    if first is not None:
        chosen = {id(line) for line in candidates}
        title = next((line.text for line in first.lines if id(line) in chosen), "")
    if apply:
        for line in candidates:
            size = round(line.size * 2) / 2
            line.heading = levels.index(size) + 1 if size in levels else len(levels)
    return title


def _looks_like_heading(text: str) -> bool:
    return len(text) <= _HEADING_MAX_CHARS and any(char.isalpha() for char in text)


# -- building ----------------------------------------------------------------------------------------


def _add_page(builder: DocumentBuilder, page: _Page) -> None:
    """Add a page's blocks: headings open sections, tables are sections, lines join into paragraphs."""
    location = {"ocr": True} if page.ocr else None
    paragraph: list[str] = []
    previous: Line | None = None

    def flush() -> None:
        if paragraph:
            builder.paragraph("\n".join(paragraph), page=page.number, location=location)
            paragraph.clear()

    builder.break_section()
    index = 0
    lines = page.lines
    while index < len(lines):
        line = lines[index]
        if line.rows is not None:
            flush()
            builder.table(line.rows, page=page.number, location=location)
            previous = None
        elif line.heading:
            flush()
            # A heading set on two lines: the following lines of the same size and level join it.
            text = line.text
            while (index + 1 < len(lines) and not line.title and lines[index + 1].heading == line.heading
                   and lines[index + 1].rows is None and abs(lines[index + 1].size - line.size) < 0.5):
                index += 1
                text = f"{text} {lines[index].text}"
            builder.heading(line.heading, line.title or text, emit=False, page=page.number, location=location)
            if text:
                builder.paragraph(text, page=page.number, location=location)
            previous = None
        else:
            if previous is not None and _same_row(previous, line):
                paragraph[-1] = f"{paragraph[-1]} {line.text}"
            else:
                if previous is not None and _new_paragraph(previous, line):
                    flush()
                paragraph.append(line.text)
            previous = line
        index += 1
    flush()


def _same_row(previous: Line, line: Line) -> bool:
    return line.x0 >= previous.x1 and abs(line.top - previous.top) < 0.5 * min(line.size, previous.size)


def _new_paragraph(previous: Line, line: Line) -> bool:
    gap = line.top - previous.bottom
    # Above the previous line: the next column or a new region of the page.
    return gap > _PARAGRAPH_GAP * max(previous.size, line.size) or line.bottom <= previous.top

