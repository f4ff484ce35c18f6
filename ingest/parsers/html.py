"""HTML: the main content without page furniture; the title element; headings as sections; tables as tables.

The main content is found by trafilatura (a measured main-content extractor: it drops navigation sidebars,
cookie banners, footers and "related" boxes even when they are plain ``<div>`` elements). Its XML output is
walked into a :class:`DocumentBuilder`: headings, paragraphs, lists, code and quotes as blocks, tables as
table sections. A page too small for the extractor (it returns nothing) falls back to a walk of the whole
body that drops the obvious furniture (``<nav>``, ``<header>``, ``<footer>``, ``role="navigation"`` ...).

Permalink anchors (Sphinx's ``¶``, GitHub's ``#`` and ``🔗``) are removed before either, so they never end
up in heading paths.
"""

from __future__ import annotations

import functools
import logging
import re
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, sniff_text
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.encoding import declared_charset, decode_text
from rag.ingest.parsers.sections import push_heading, sections_at

log = logging.getLogger(__name__)

# Page furniture, not content: navigation, banners, scripts. Dropped before extracting text.
_HTML_DROP = ("script", "style", "nav", "header", "footer", "aside", "noscript", "template", "head", "title")
# The same furniture marked by ARIA role instead of element name (``<div role="navigation">``).
_HTML_DROP_ROLES = frozenset({"navigation", "banner", "contentinfo", "complementary", "search", "dialog",
                              "alertdialog"})
# Furniture removed from the lxml tree before trafilatura sees it (it keeps <nav> text in recall mode).
_TREE_DROP = ("nav", "aside", "header", "footer", "noscript", "template")
# Permalink anchors next to headings: their whole text is one of these glyphs.
_PERMALINK_GLYPHS = frozenset({"#", "¶", "🔗", "§", "\U0001f517\ufe0f", "\U0001f517\ufe0e"})
# Glyphs never meant as the last character of a heading (``#`` is: "C#"), stripped when an anchor was not.
_TRAILING_GLYPHS = re.compile(r"\s*[¶🔗][\ufe0e\ufe0f]?$")
# trafilatura's settings: keep tables and headings, no comments or link targets, and no deduplication
# (a repeated sentence inside one page is still content). ``favor_recall`` keeps short main-text blocks.
_EXTRACT_OPTIONS: dict[str, Any] = {
    "output_format": "xml",
    "include_tables": True,
    "include_formatting": True,
    "include_comments": False,
    "include_links": False,
    "include_images": False,
    "with_metadata": False,
    "deduplicate": False,
    "favor_recall": True,
    "fast": True,
}
# trafilatura falls back to a crude whole-page text (banner, menu and all) when the main content is under
# MIN_EXTRACTED_SIZE (250 characters); a short page's main content is still its main content. Its timeout
# uses signals, which only work in the main thread, and ingestion parses in worker threads.
_EXTRACT_CONFIG = {"MIN_EXTRACTED_SIZE": "1", "EXTRACTION_TIMEOUT": "0"}


@functools.cache
def _trafilatura_config() -> Any:
    from trafilatura.settings import use_config

    config = use_config()
    for key, value in _EXTRACT_CONFIG.items():
        config.set("DEFAULT", key, value)
    return config
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
        if not closing and _is_furniture(node):
            continue
        if name in _HTML_HEADINGS:
            heading = _clean_heading(node.get_text(" "))
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



def _is_furniture(node: Any) -> bool:
    """A BeautifulSoup element that is page furniture: an ARIA navigation/banner role, or a permalink anchor."""
    attrs = node.attrs or {}
    if str(attrs.get("role", "")).lower() in _HTML_DROP_ROLES:
        return True
    return node.name == "a" and node.get_text().strip() in _PERMALINK_GLYPHS


def _clean_heading(text: str) -> str:
    return _TRAILING_GLYPHS.sub("", " ".join(text.split()))


def _inside_content(element: Any) -> bool:
    return any(parent.tag in ("article", "main") for parent in element.iterancestors())


def _prepare_tree(tree: Any) -> None:
    """Adjust an lxml page before extraction, so that trafilatura keeps structure it would otherwise lose.

    * page furniture the markup names (``<nav>``, ``<aside>``, a page-level ``<header>``/``<footer>``,
      ``role="navigation"``) is removed, as the fallback walk does;
    * permalink anchors (text ``¶``, ``#``, ``🔗``) are removed, keeping the text after them;
    * a ``<pre>`` without ``<code>`` gets one: trafilatura reads a bare ``<pre>`` as a quote and collapses
      its whitespace;
    * a page without ``<main>`` or ``<article>`` gets its body wrapped in an ``<article>``: without a content
      container trafilatura recovers paragraphs only, dropping every heading (measured on Debian's Texinfo
      pages). Its boilerplate rules (navigation, banners, footers, link-dense blocks) still apply inside.
    """
    from lxml import html

    for element in list(tree.iter(*_TREE_DROP)):
        if element.tag in ("header", "footer") and _inside_content(element):
            continue  # an article's own header holds its title and byline
        element.drop_tree()
    for element in tree.xpath("//*[@role]"):
        if str(element.get("role")).lower() in _HTML_DROP_ROLES and element.getparent() is not None:
            element.drop_tree()
    for anchor in list(tree.iter("a")):
        if (anchor.text_content() or "").strip() in _PERMALINK_GLYPHS:
            anchor.drop_tree()
    for pre in list(tree.iter("pre")):
        if pre.find(".//code") is None:
            code = html.Element("code")
            code.text, pre.text = pre.text, None
            code.extend(list(pre))
            pre.append(code)
    body = tree.find(".//body")
    if body is not None and tree.find(".//main") is None and tree.find(".//article") is None:
        article = html.Element("article")
        article.text, body.text = body.text, None
        article.extend(list(body))
        body.append(article)


def _xml_text(element: Any) -> str:
    """The text of a trafilatura XML element with ``<lb/>`` as a line break and whitespace collapsed per line."""
    parts: list[str] = []
    for node in element.iter():
        if node is not element and node.tag == "lb":
            parts.append("\n")
        if node.text and (node is element or node.tag != "lb"):
            parts.append(node.text)
        if node is not element and node.tail:
            parts.append(node.tail)
    lines = (" ".join(line.split()) for line in "".join(parts).split("\n"))
    return "\n".join(line for line in lines if line)


def _list_lines(element: Any, indent: str = "") -> list[str]:
    """A trafilatura ``<list>`` as lines: ``- item`` (``1. item`` when ordered), definitions indented."""
    lines: list[str] = []
    ordered = element.get("rend") == "ol"
    for number, item in enumerate(element.findall("item"), start=1):
        rend = item.get("rend", "")
        marker = "" if rend.startswith(("dt", "dd")) else (f"{number}. " if ordered else "- ")
        pad = indent + ("  " if rend.startswith("dd") else "")
        nested = item.findall("list")
        for sub in nested:
            item.remove(sub)  # rendered below, indented under the item's own text
        text = _xml_text(item)
        if text:
            lines.append(pad + marker + text.replace("\n", " "))
        for sub in nested:
            lines.extend(_list_lines(sub, pad + " " * len(marker)))
    return lines


def _xml_table(element: Any, builder: DocumentBuilder) -> None:
    """A trafilatura ``<table>`` as a table section; a first row of ``role="head"`` cells is the header."""
    rows = [[_xml_text(cell).replace("\n", " ") for cell in row.findall("cell")] for row in element.findall("row")]
    first = element.find("row")
    has_head = first is not None and any(cell.get("role") == "head" for cell in first.findall("cell"))
    if has_head and rows:
        builder.table(rows[1:], header=rows[0])
    else:
        builder.table(rows)


def _walk_extracted(main: Any, builder: DocumentBuilder) -> None:
    """Blocks of trafilatura's ``<main>`` into ``builder``, in reading order.

    trafilatura sometimes leaves a ``<div>``'s loose text directly in ``<main>`` (as element tails, around
    inline ``<code>``/``<hi>``); such runs are gathered into one paragraph rather than lost.
    """
    loose: list[str] = [main.text or ""]

    def flush() -> None:
        builder.paragraph(" ".join("".join(loose).split()))
        loose.clear()

    for element in main:
        tag = element.tag
        inline = tag in ("hi", "ref", "lb") or (
            tag == "code" and "\n" not in (element.text or "").strip("\n")
            and bool("".join(loose).strip() or (element.tail or "").strip())
        )
        if inline:
            loose.append("".join(element.itertext()))
        else:
            flush()
            _walk_block(element, builder)
        loose.append(element.tail or "")
    flush()


def _walk_block(element: Any, builder: DocumentBuilder) -> None:
    """One block element of trafilatura's output."""
    tag = element.tag
    if tag == "head":
        rend = element.get("rend", "")
        level = int(rend[1:]) if rend[1:].isdigit() else 2
        builder.heading(max(1, min(level, 6)), _clean_heading(_xml_text(element)))
    elif tag == "list":
        builder.paragraph("\n".join(_list_lines(element)))
    elif tag == "table":
        _xml_table(element, builder)
    elif tag == "code":
        builder.paragraph("".join(element.itertext()).strip("\n"))
    elif tag != "graphic":
        builder.paragraph(_xml_text(element))


def _extract_main(decoded: str) -> tuple[DocumentBuilder | None, str]:
    """``(builder with the main content, page title)``; the builder is ``None`` when the extractor finds nothing.

    Raises:
        LoaderError: the markup cannot be parsed at all.
    """
    import trafilatura
    from lxml import etree

    tree = trafilatura.load_html(decoded)
    if tree is None:
        return None, ""
    title_element = tree.find(".//title")
    title = " ".join(title_element.text_content().split()) if title_element is not None else ""
    _prepare_tree(tree)
    if not title:  # trafilatura may drop a lone h1 it takes for the page title
        h1 = tree.find(".//h1")
        title = _clean_heading(h1.text_content()) if h1 is not None else ""
    extracted = trafilatura.extract(tree, config=_trafilatura_config(), **_EXTRACT_OPTIONS)
    if not extracted:
        return None, title
    main = etree.fromstring(extracted.encode("utf-8")).find("main")
    if main is None or not len(main):
        return None, title
    builder = DocumentBuilder()
    _walk_extracted(main, builder)
    return (builder if not builder.empty else None), title


def _fallback(decoded: str, ctx: ParseContext) -> tuple[str, list[tuple[int, tuple[str, ...]]], str]:
    """The whole-body walk for pages the extractor returns nothing for: ``(text, section starts, title)``."""
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(decoded, "html.parser")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag else ""
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.find("body") or soup
    if not title:
        h1 = root.find("h1")
        title = _clean_heading(h1.get_text(" ")) if h1 else ""
    built = _html_to_text(root)
    return built.text(), built.starts, title


class HtmlParser(BaseParser):
    """HTML pages (``.html``, ``.htm``): main content via trafilatura, headings as sections, tables as tables."""

    name = "html"
    suffixes = (".html", ".htm")
    media_types = ("text/html",)
    description = "main content (trafilatura) without navigation or banners; title; headings; tables"

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Read one HTML page; the ``<meta charset>`` (or XML declaration) decides the encoding.

        Raises:
            LoaderError: not text, or no text content outside the page furniture.
        """
        decoded, encoding = decode_text(data, declared=declared_charset(data))
        metadata = ctx.merge_metadata(format=self.name, encoding=encoding)
        builder, title = _extract_main(decoded)
        if builder is not None:
            if not title:
                first = next((s.headings[0] for s in builder.build(doc_id=ctx.doc_id, source=ctx.source, title="",
                                                                     metadata={}).sections if s.headings), "")
                title = first
            return [builder.build(doc_id=ctx.doc_id, source=ctx.source, title=title or ctx.stem, metadata=metadata)]
        text, starts, fallback_title = _fallback(decoded, ctx)
        if not text.strip():
            raise LoaderError("no text content")
        return [
            Document(
                doc_id=ctx.doc_id,
                text=text,
                source=ctx.source,
                title=title or fallback_title or ctx.stem,
                sections=sections_at(text, starts),
                metadata=metadata,
            )
        ]
