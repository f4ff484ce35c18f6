"""Page geometry shared by the PDF and image parsers: reading order, running headers and footers, TOC lines.

Both a PDF's text layer and OCR give positioned lines of text (:class:`Line`); this module decides the
order they are read in (columns kept together), which of them are page furniture repeated on most
pages, and which are table-of-contents dot-leader lines. Coordinates have a top-left origin (``top``
grows downwards) in any unit, as long as one page uses one unit.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

# A line's text made comparable across pages: lower case, runs of digits masked ("Page 3 of 9" ~ "Page 4 of 9").
_DIGITS = re.compile(r"\d+")
# "Introduction ........ 3", "2.1 Setup . . . . . 17", "Preface ………… iv": a table-of-contents entry.
_DOT_LEADER = re.compile(r"(?:[.·…‥_]\s*){4,}\s*(?:\d+|[ivxlcdm]+)?\s*$", re.IGNORECASE)

# Column detection: a gutter is a vertical strip crossed by at most this share of a region's lines ...
_GUTTER_MAX_CROSSING = 0.15
# ... at least this many font sizes wide (LaTeX's two-column gutter is one em) ...
_GUTTER_MIN_EMS = 0.8
# ... with at least this many lines and this share of the characters on each side ...
_COLUMN_MIN_LINES = 3
_COLUMN_MIN_SHARE = 0.15
# ... whose lines fill their column (a column of labels beside values is a form, not two columns).
_COLUMN_MIN_FILL = 0.4
_MAX_COLUMN_DEPTH = 3  # three nested splits: up to eight columns

# Running headers and footers: the first and last rows of a page, repeated at the same height on pages.
_MARGIN_ROWS = 2
_RUNNING_MIN_PAGES = 3
_RUNNING_POSITION = 3.0  # points: a running line sits at the same height on every page
# A page number at either end of a header or footer row ("17", "- iv -", "Chapter 2 ... 17").
_PAGE_NUMBER = re.compile(r"(?:^|\s)[-–(\[]?\s*(?:\d{1,4}|[ivxlc]{1,6})\s*[-–)\]]?$", re.IGNORECASE)


@dataclass(slots=True)
class Line:
    """A run of text on one baseline (or a table), with its box on the page.

    Attributes:
        text: the text (for a table, its cells joined, used only to measure it).
        x0, top, x1, bottom: the box, top-left origin.
        size: the font size (or the text height for OCR); gaps are judged in multiples of it.
        rows: set when the block is a table: its rows of cell text.
        heading: the heading level (1 outermost) when the line is a heading, else 0.
        title: the heading's title when it differs from ``text`` (an outline entry's).
    """

    text: str
    x0: float
    top: float
    x1: float
    bottom: float
    size: float
    rows: list[list[str]] | None = None
    heading: int = 0
    title: str = ""

    @property
    def width(self) -> float:
        return self.x1 - self.x0


def normalise(text: str) -> str:
    """``text`` for comparison across pages: lower case, digits masked, whitespace collapsed."""
    return " ".join(_DIGITS.sub("#", text.lower()).split())


def is_dot_leader(text: str) -> bool:
    """Whether ``text`` is a table-of-contents entry with a dot leader (``Introduction ....... 3``)."""
    return bool(_DOT_LEADER.search(text))


def rows_of(lines: Sequence[Line]) -> list[list[Line]]:
    """``lines`` grouped into visual rows (boxes at the same height), top to bottom, each left to right."""
    rows: list[list[Line]] = []
    for line in sorted(lines, key=lambda item: item.top):
        row = rows[-1] if rows else None
        if row is not None and line.top < row[0].top + 0.5 * min(row[0].size, line.size):
            row.append(line)
        else:
            rows.append([line])
    return [sorted(row, key=lambda item: item.x0) for row in rows]


def reading_order(lines: Sequence[Line], depth: int = 0) -> list[Line]:
    """The order a person reads ``lines`` in: column by column where the page has columns.

    Where a vertical gutter separates columns, a column's lines stay together (left column, then right)
    between the full-width lines that cross the gutter (a title, a wide figure); inside a column, lines
    are read top to bottom. Without columns the given order (the file's own) is kept, since a content
    stream written in reading order is the best guess for irregular layouts.
    """
    if len(lines) < 2 * _COLUMN_MIN_LINES or depth >= _MAX_COLUMN_DEPTH:
        return list(lines)
    gutter = _find_gutter(lines)
    if gutter is None:
        return list(lines)
    middle = sum(gutter) / 2
    ordered: list[Line] = []
    left: list[Line] = []
    right: list[Line] = []

    def flush() -> None:
        for column in (left, right):
            ordered.extend(reading_order(_by_rows(column), depth + 1))
            column.clear()

    for line in _by_rows(lines):
        if line.x1 <= middle:
            left.append(line)
        elif line.x0 >= middle:
            right.append(line)
        else:  # crosses the gutter: it ends the columns above it
            flush()
            ordered.append(line)
    flush()
    return ordered


def _by_rows(lines: Sequence[Line]) -> list[Line]:
    return [line for row in rows_of(lines) for line in row]


def _find_gutter(lines: Sequence[Line]) -> tuple[float, float] | None:
    """The widest vertical strip that splits ``lines`` into two columns of text, or ``None``.

    Lines that cross the strip's middle are full-width lines (a title, a page number); lines on
    either side must look like columns of running text.
    """
    left_edge = min(line.x0 for line in lines)
    right_edge = max(line.x1 for line in lines)
    span = right_edge - left_edge
    if span <= 0:
        return None
    sizes = sorted(line.size for line in lines)
    min_width = _GUTTER_MIN_EMS * sizes[len(sizes) // 2]
    # Coverage of the x axis in about 500 bins: how many lines cross each.
    bins = 500
    step = span / bins
    crossing = [0] * (bins + 1)
    for line in lines:
        first = int((line.x0 - left_edge) / step)
        last = min(int((line.x1 - left_edge) / step), bins)
        crossing[first] += 1
        if last + 1 <= bins:
            crossing[last + 1] -= 1
    allowed = _GUTTER_MAX_CROSSING * len(lines)
    runs: list[tuple[float, float]] = []
    count = 0
    run_start: int | None = None
    for index in range(bins + 1):
        count += crossing[index]
        if count <= allowed and 0 < index < bins:
            run_start = index if run_start is None else run_start
        elif run_start is not None:
            runs.append((left_edge + run_start * step, left_edge + index * step))
            run_start = None
    total = sum(len(line.text) for line in lines) or 1
    for start, end in sorted(runs, key=lambda run: run[0] - run[1]):  # widest first
        if end - start < min_width:
            break
        # The strip may reach into a column's ragged edge (a few long lines cross it): its middle divides.
        middle = (start + end) / 2
        left = [line for line in lines if line.x1 <= middle]
        right = [line for line in lines if line.x0 >= middle]
        if _is_column(left, start - left_edge, total) and _is_column(right, right_edge - end, total):
            return start, end
    return None


def _is_column(lines: list[Line], width: float, total_chars: int) -> bool:
    """Whether ``lines`` look like a column of running text ``width`` wide (not labels, not a stray word)."""
    if len(lines) < _COLUMN_MIN_LINES or width <= 0:
        return False
    if sum(len(line.text) for line in lines) < _COLUMN_MIN_SHARE * total_chars:
        return False
    widths = sorted(line.width for line in lines)
    return widths[len(widths) // 2] >= _COLUMN_MIN_FILL * width


def running_lines(pages: Sequence[Sequence[Line]]) -> set[int]:
    """Running headers and footers: ``id()`` of the lines to drop from ``pages``.

    A line counts when it lies in the first or last rows of its page and either the same text (digits
    masked, so page numbers match) appears at the same height in the first or last rows of at least 3
    pages (a part's or chapter's header counts, not only the document's), or its row carries a page
    number at a height where at least 3 pages carry one (a book's per-chapter header "Chapter 2:
    Parsing ... 17"). Body text does neither: its first and last lines differ from page to page.
    """
    if len(pages) < _RUNNING_MIN_PAGES:
        return set()
    by_text: dict[tuple[str, str, int], list[Line]] = defaultdict(list)
    numbered: dict[tuple[str, int], list[tuple[int, Line]]] = defaultdict(list)
    for number, lines in enumerate(pages):
        rows = rows_of([line for line in lines if line.rows is None])
        zones = [("top", row) for row in rows[:_MARGIN_ROWS]]
        zones += [("bottom", row) for row in rows[max(_MARGIN_ROWS, len(rows) - _MARGIN_ROWS):]]
        seen_here: set[tuple[str, str, int]] = set()
        for zone, row in zones:
            height = round(row[0].top / _RUNNING_POSITION)
            if any(_PAGE_NUMBER.search(line.text) for line in row):
                numbered[(zone, height)].extend((number, line) for line in row)
            for line in row:
                key = (zone, normalise(line.text), height)
                if key not in seen_here:
                    seen_here.add(key)
                    by_text[key].append(line)
    needed = _RUNNING_MIN_PAGES
    drop = {id(line) for found in by_text.values() if len(found) >= needed for line in found}
    for placed in numbered.values():
        if len({number for number, _ in placed}) >= needed:
            drop.update(id(line) for _, line in placed)
    return drop
