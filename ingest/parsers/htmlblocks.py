"""HTML fragments (an e-book chapter, an e-mail's HTML body) fed into a :class:`DocumentBuilder`.

The page-level HTML parser (``html.py``) decides what the main content of a web page is; a chapter or a
mail body has no page furniture to drop, but it has headings, paragraphs, lists and tables that should
become the builder's heading path, paragraphs and table sections. :func:`add_html` walks the tree
iteratively (a deeply nested fragment must not overflow recursion) and calls the builder as it goes.
"""

from __future__ import annotations

from typing import Any

from rag.ingest.parsers.builder import DocumentBuilder

# Never text: scripts, styles, the <head> of a full document.
_DROP = ("script", "style", "noscript", "template", "head", "title", "svg", "math")
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
# Elements whose start and end break the running text into separate paragraphs.
_BLOCKS = frozenset(
    {"p", "div", "section", "article", "main", "aside", "nav", "header", "footer", "blockquote", "ul", "ol",
     "dl", "li", "dt", "dd", "figure", "figcaption", "form", "fieldset", "address", "details", "summary",
     "hr", "body", "center", "caption", "table", "tbody", "thead", "tfoot", "tr", "td", "th"}
)


def _flat(node: Any) -> str:
    """The text of ``node`` with whitespace collapsed to single spaces."""
    return " ".join(node.get_text(" ").split())


def _table_rows(table: Any) -> list[list[str]]:
    """The cell texts of ``table``'s own rows (a nested table's rows stay inside their cell's text)."""
    rows = []
    for row in table.find_all("tr"):
        if row.find_parent("table") is not table:
            continue
        rows.append([_flat(cell) for cell in row.find_all(("td", "th")) if cell.find_parent("tr") is row])
    return rows


def _data_table(table: Any) -> list[list[str]] | None:
    """The rows of a data table, or ``None`` for a layout table (nested tables, one row or one column),
    whose cells are read as ordinary blocks instead: HTML mail lays whole messages out in tables."""
    if table.find("table") is not None:
        return None
    rows = _table_rows(table)
    if len(rows) < 2 or max(len(row) for row in rows) < 2:
        return None
    return rows


def add_html(builder: DocumentBuilder, markup: str | bytes, *, level_offset: int = 0,
             skip_heading: str | None = None) -> None:
    """Append the text of an HTML document or fragment to ``builder``.

    Args:
        builder: receives headings, paragraphs and tables in reading order.
        markup: the HTML (bytes are decoded by BeautifulSoup from their declared or detected charset).
        level_offset: added to every heading level, so that ``<h1>`` inside a chapter nests under the
            chapter's own heading (``level_offset=1``).
        skip_heading: a heading with this text (whitespace-insensitive) is not repeated when it is the
            first heading of the fragment, because the caller already opened it (a chapter title).
    """
    from bs4 import BeautifulSoup, NavigableString
    from bs4.element import PreformattedString

    soup = BeautifulSoup(markup, "html.parser")
    for tag in soup.find_all(_DROP):
        tag.decompose()
    root = soup.find("body") or soup
    inline: list[str] = []
    skip = " ".join(skip_heading.split()) if skip_heading else None
    seen_heading = False

    def flush() -> None:
        text = " ".join("".join(inline).split())
        inline.clear()
        builder.paragraph(text)

    stack: list[tuple[Any, bool]] = [(root, False)]
    while stack:
        node, closing = stack.pop()
        if isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctypes, CDATA
                inline.append(str(node))
            continue
        name = node.name
        if closing:
            if name in _BLOCKS:
                flush()
            continue
        if name in _HEADINGS:
            flush()
            title = _flat(node)
            if title and not (not seen_heading and skip is not None and title == skip):
                builder.heading(min(_HEADINGS[name] + level_offset, 9), title)
            seen_heading = seen_heading or bool(title)
            continue
        if name == "pre":
            flush()
            builder.paragraph(node.get_text())  # code and poetry keep their lines
            continue
        if name == "table" and (rows := _data_table(node)) is not None:
            flush()
            builder.table(rows)
            continue
        if name == "br":
            inline.append("\n")  # collapsed later, but keeps words on either side apart
            continue
        if name in _BLOCKS:
            flush()
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.contents))
    flush()
