"""Build a document's text and its sections in reading order, so parsers never compute offsets by hand.

A parser walks its format and calls :meth:`DocumentBuilder.heading`, :meth:`~DocumentBuilder.paragraph`
and :meth:`~DocumentBuilder.table`; :meth:`~DocumentBuilder.build` returns a
:class:`~rag.core.types.Document` whose sections tile the text: consecutive paragraphs under the same
heading path, page and location form one section, and every table is a section of its own (a
:class:`~rag.core.types.Table`), rendered as Markdown so that a row keeps its column names.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document, Section, Table

PARAGRAPH_BREAK = "\n\n"


def _cell(value: Any) -> str:
    """One table cell as Markdown: whitespace collapsed, pipes escaped, ``None`` empty."""
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return " ".join(str(value).split()).replace("|", "\\|")


def markdown_row(cells: Sequence[Any]) -> str:
    """``| a | b |`` for one row."""
    return "| " + " | ".join(_cell(c) for c in cells) + " |"


def markdown_header(columns: Sequence[Any]) -> str:
    """The header lines of a Markdown table: the column names and the ``|---|`` rule."""
    return markdown_row(columns) + "\n" + "|" + "---|" * max(len(columns), 1)


def normalise_rows(rows: Iterable[Sequence[Any]]) -> list[list[str]]:
    """Rows as cell strings, all padded to the widest row; rows and trailing columns that are all blank dropped."""
    cells = [[_cell(c) for c in row] for row in rows]
    cells = [row for row in cells if any(row)]
    if not cells:
        return []
    width = max(len(row) for row in cells)
    # Trailing columns empty in every row (a spreadsheet's formatted-but-empty columns) carry nothing.
    while width > 1 and all(len(row) < width or not row[width - 1] for row in cells):
        width -= 1
    return [(row + [""] * width)[:width] for row in cells]


class DocumentBuilder:
    """Accumulates text blocks in reading order and remembers the section each one belongs to.

    Args:
        headings: the heading path the document starts under (usually empty).
    """

    def __init__(self, headings: tuple[str, ...] = ()) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._sections: list[Section] = []
        self._stack: list[tuple[int, str]] = [(0, h) for h in headings]
        self._open: tuple[int, tuple[str, ...], int | None, tuple[tuple[str, Any], ...]] | None = None

    # -- structure ---------------------------------------------------------------------------------

    @property
    def headings(self) -> tuple[str, ...]:
        """The current heading path, outermost first."""
        return tuple(title for _, title in self._stack)

    def heading(self, level: int, title: str, *, emit: bool = True, page: int | None = None,
                location: Mapping[str, Any] | None = None) -> None:
        """Open a heading of ``level`` (1 outermost): later blocks lie under it until a heading of the same
        or a higher level. With ``emit`` the heading's text also starts the new section, as in the file."""
        title = " ".join(title.split())
        if not title:
            return
        while self._stack and self._stack[-1][0] >= level:
            self._stack.pop()
        self._stack.append((level, title))
        self._close()
        if emit:
            self.paragraph(title, page=page, location=location)

    def reset_headings(self, headings: tuple[str, ...] = ()) -> None:
        """Replace the heading path (a new slide, sheet or chapter starts its own)."""
        self._stack = [(index + 1, h) for index, h in enumerate(headings)]
        self._close()

    def break_section(self) -> None:
        """End the current section even though the heading path stays (e.g. a new page of a PDF)."""
        self._close()

    # -- content -----------------------------------------------------------------------------------

    def paragraph(self, text: str, *, page: int | None = None, location: Mapping[str, Any] | None = None) -> None:
        """Append a block of text (a paragraph, a list, a code block) with a blank line before it.

        Inner whitespace is kept (code stays code); leading and trailing blank lines are dropped, and a
        blank block adds nothing. A change of ``page`` or ``location`` starts a new section.
        """
        text = text.strip("\n").rstrip()
        if not text.strip():
            return
        key = (page, tuple(sorted((location or {}).items())))
        if self._open is None or (self._open[2], self._open[3]) != key or self._open[1] != self.headings:
            self._close()
            self._open = (self._start_block(), self.headings, page, key[1])
        else:
            self._write(PARAGRAPH_BREAK)
        self._write(text)

    def table(
        self,
        rows: Iterable[Sequence[Any]],
        *,
        header: Sequence[Any] | None = None,
        name: str | None = None,
        first_row: int = 1,
        page: int | None = None,
        location: Mapping[str, Any] | None = None,
    ) -> None:
        """Append a table as its own section, rendered as a Markdown table.

        Args:
            rows: data rows (cells of any type; ``None`` is blank). Without ``header``, the first row is
                taken as the header.
            header: the column names; blank names become ``column N``.
            name: the sheet or caption, stored as chunk ``table``.
            first_row: the source's number for the first data row (a spreadsheet row number).
            page: the page the table is on, if any.
            location: extra location keys (``{"sheet": "Sales"}``).
        """
        body = normalise_rows(rows) if header is None else [[_cell(c) for c in row] for row in rows]
        if header is None:
            if not body:
                return
            header, body = body[0], body[1:]
            first_row += 1
        columns = [_cell(c) or f"column {index + 1}" for index, c in enumerate(header)]
        width = max([len(columns), *(len(row) for row in body)])
        columns += [f"column {index + 1}" for index in range(len(columns), width)]
        body = [row + [""] * (width - len(row)) for row in body if any(row)]
        head = markdown_header(columns)
        text = head + "".join("\n" + markdown_row(row) for row in body)
        self._close()
        start = self._start_block()
        self._write(text)
        self._sections.append(
            Section(
                text=text,
                start=start,
                headings=self.headings,
                page=page,
                location=dict(location or {}),
                table=Table(header=head, name=name, first_row=first_row),
            )
        )

    # -- result ------------------------------------------------------------------------------------

    @property
    def text(self) -> str:
        return "".join(self._parts)

    @property
    def empty(self) -> bool:
        return not self._length

    def build(self, *, doc_id: str, source: str, title: str, metadata: dict[str, Any]) -> Document:
        """The document built so far.

        Raises:
            LoaderError: nothing but whitespace was added (``no text content``).
        """
        self._close()
        if not self._length:
            raise LoaderError("no text content")
        return Document(
            doc_id=doc_id, text=self.text, source=source, title=title or doc_id, sections=list(self._sections),
            metadata=metadata,
        )

    # -- internals ---------------------------------------------------------------------------------

    def _start_block(self) -> int:
        if self._length:
            self._write(PARAGRAPH_BREAK)
        return self._length

    def _write(self, text: str) -> None:
        self._parts.append(text)
        self._length += len(text)

    def _close(self) -> None:
        if self._open is None:
            return
        start, headings, page, location = self._open
        self._open = None
        text = self._tail(start)
        self._sections.append(Section(text=text, start=start, headings=headings, page=page, location=dict(location)))

    def _tail(self, start: int) -> str:
        # Join once and keep one part, so a long document is not re-joined at every section.
        joined = "".join(self._parts)
        self._parts = [joined]
        return joined[start:]
