"""HTML: the main text without page furniture; the title element; headings as sections."""

from __future__ import annotations

from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, sniff_text
from rag.ingest.parsers.encoding import decode_text
from rag.ingest.parsers.sections import push_heading, sections_at

# Page furniture, not content: navigation, banners, scripts. Dropped before extracting text.
_HTML_DROP = ("script", "style", "nav", "header", "footer", "aside", "noscript", "template", "head", "title")
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
# Blocks separated by a blank line, so the chunker sees them as paragraphs.
_HTML_PARAGRAPHS = frozenset(
    {"p", "div", "section", "article", "main", "blockquote", "pre", "ul", "ol", "dl", "table", "figure",
     "form", "fieldset", "address", "details", "hr"}
)
# Blocks on their own line, without a blank line between siblings (list items, table rows).
_HTML_LINES = frozenset({"li", "dt", "dd", "tr", "br", "caption", "figcaption", "summary", "legend"})
_HTML_CELLS = frozenset({"td", "th"})


class _HtmlText:
    """Plain text built line by line from an HTML tree, remembering where each heading's section starts."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.line: list[str] = []
        self.pending_break = 0  # newlines owed before the next written line
        self.pending_section: tuple[str, ...] | None = None
        self.starts: list[tuple[int, tuple[str, ...]]] = [(0, ())]

    def inline(self, text: str) -> None:
        self.line.append(text)

    def block(self, newlines: int) -> None:
        """End the current line; ask for ``newlines`` line breaks (1 or 2) before the next one."""
        self.flush()
        self.pending_break = max(self.pending_break, newlines)

    def section(self, headings: tuple[str, ...]) -> None:
        """The next written line (a heading) opens a section with this heading path."""
        self.pending_section = headings

    def flush(self, raw: str | None = None) -> None:
        """Write the buffered inline text as one line (whitespace collapsed), or ``raw`` verbatim."""
        line = raw if raw is not None else " ".join("".join(self.line).split())
        self.line = []
        if not line.strip():
            return
        if self.length:
            self._write("\n" * max(self.pending_break, 1))
        self.pending_break = 0
        if self.pending_section is not None:
            self.starts.append((self.length, self.pending_section))
            self.pending_section = None
        self._write(line)

    def _write(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def text(self) -> str:
        self.flush()
        return "".join(self.parts)


def _html_to_text(root: Any) -> _HtmlText:
    """Walk ``root`` iteratively (deeply nested pages would overflow recursion) into an :class:`_HtmlText`."""
    from bs4 import NavigableString
    from bs4.element import PreformattedString

    out = _HtmlText()
    stack: list[tuple[Any, bool]] = [(root, False)]
    open_headings: list[tuple[int, str]] = []
    while stack:
        node, closing = stack.pop()
        if isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctypes, CDATA
                out.inline(str(node))
            continue
        name = node.name
        if name in _HTML_HEADINGS:
            heading = " ".join(node.get_text(" ").split())
            if heading:
                out.block(2)
                out.section(push_heading(open_headings, _HTML_HEADINGS[name], heading))
                out.flush(heading)
                out.block(2)
            continue
        if name == "pre":
            out.block(2)
            out.flush(node.get_text().strip("\n"))
            out.block(2)
            continue
        if closing:
            if name in _HTML_PARAGRAPHS:
                out.block(2)
            elif name in _HTML_LINES:
                out.block(1)
            elif name in _HTML_CELLS:
                out.inline(" ")
            continue
        if name in _HTML_PARAGRAPHS:
            out.block(2)
        elif name in _HTML_LINES:
            out.block(1)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.contents))
    return out



class HtmlParser(BaseParser):
    name = "html"
    suffixes = (".html", ".htm")
    media_types = ("text/html",)
    description = "main text without navigation; title; headings as sections"

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        from bs4 import BeautifulSoup

        decoded, encoding = decode_text(data)
        soup = BeautifulSoup(decoded, "html.parser")
        title_tag = soup.find("title")
        title = " ".join(title_tag.get_text(" ").split()) if title_tag else ""
        for tag in soup.find_all(_HTML_DROP):
            tag.decompose()
        root = soup.find("main") or soup.find("article") or soup.find("body") or soup
        if not title:
            h1 = root.find("h1")
            title = (" ".join(h1.get_text(" ").split()) if h1 else "") or ctx.stem
        built = _html_to_text(root)
        text = built.text()
        if not text.strip():
            raise LoaderError("no text content")
        return [
            Document(
                doc_id=ctx.doc_id,
                text=text,
                source=ctx.source,
                title=title,
                sections=sections_at(text, built.starts),
                metadata=ctx.merge_metadata(format=self.name, encoding=encoding),
            )
        ]
