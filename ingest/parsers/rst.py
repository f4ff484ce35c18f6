"""reStructuredText: parsed with docutils into rendered text, sections, code blocks, lists and tables.

The document text is what a reader sees, not the source: an overlined title is its words, not a row of
``=``; a grid or simple table is a table section (Markdown rows with their header), so it no longer spends
the chunk budget on ``+----+`` borders. Parsing is safe for untrusted files: no file insertion
(``.. include::``), no ``.. raw::``, no configuration files read, and reports silenced.

Sphinx-only markup is not an error: an unknown role keeps its text (``:func:`load``` reads ``load``), and an
unknown directive keeps its argument and content as text (``.. versionadded:: 2.0`` and its paragraph),
except directives that only steer a Sphinx build (``toctree``, ``automodule`` ...), which are dropped.
"""

from __future__ import annotations

import io
import logging
import re
import textwrap
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document, reserved_keys_in
from rag.ingest.parsers.base import BaseParser, ParseContext, sniff_text
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.encoding import decode_text

log = logging.getLogger(__name__)

# docutils settings for untrusted input: nothing read from disk or passed through raw, nothing printed.
_DOCUTILS_SETTINGS: dict[str, Any] = {
    "report_level": 5,
    "halt_level": 5,
    "file_insertion_enabled": False,
    "raw_enabled": False,
    "syntax_highlight": "none",
    "input_encoding": "unicode",
    "_disable_config": True,
    "doctitle_xform": True,
    "docinfo_xform": True,
}

# Unknown directives that only steer a Sphinx build; their content (document names, module paths) is not text.
_BUILD_DIRECTIVES = re.compile(
    r"^(?:toctree|auto\w*|highlight|index|currentmodule|module|literalinclude|tabularcolumns|"
    r"only|ifconfig|graphviz|inheritance-diagram|plot|jinja|spelling:\w+)$"
)
_UNKNOWN_DIRECTIVE = re.compile(r'^Unknown directive type "([^"]+)"')
# A directive's first line (``.. name:: argument``) and its option lines (``:maxdepth: 2``).
_DIRECTIVE_HEAD = re.compile(r"^\.\.\s+[^\s:]+(?::[^\s:]+)*::[ \t]*(.*)$")
_DIRECTIVE_OPTION = re.compile(r"^\s+:[^:\s][^:]*:")
# An unknown role as docutils leaves it: ``:role:`text <target>```; the reader sees ``text``.
_ROLE = re.compile(r"^:[\w.+:-]+:`(.*)`$", re.DOTALL)
_ROLE_TARGET = re.compile(r"^(.*?)\s*<[^<>]*>$", re.DOTALL)

# Docinfo fields kept as metadata (other fields stay out: a ``:page:`` field would clash with chunk keys).
_DOCINFO_FIELDS = frozenset(
    {"author", "authors", "organization", "contact", "version", "revision", "status", "date", "copyright"}
)


def _collapse(text: str) -> str:
    return " ".join(text.split())


class _RstRenderer:
    """Walks a docutils doctree into a :class:`DocumentBuilder`: sections as headings, blocks as paragraphs."""

    def __init__(self, builder: DocumentBuilder) -> None:
        from docutils import nodes

        self.nodes = nodes
        self.builder = builder
        self.lists = (nodes.bullet_list, nodes.enumerated_list, nodes.definition_list, nodes.field_list,
                      nodes.option_list)

    # -- blocks --------------------------------------------------------------------------------------

    def body(self, parent: Any, depth: int) -> None:
        """Render the block children of ``parent``; ``depth`` is the heading level of its sections."""
        for child in parent.children:
            self.block(child, depth)

    def block(self, node: Any, depth: int) -> None:  # noqa: C901 - one dispatch table over node kinds
        nodes = self.nodes
        if isinstance(node, nodes.section):
            title = node.next_node(nodes.title)
            self.builder.heading(depth, _collapse(self.inline(title)) if title is not None else "")
            self.body(node, depth + 1)
        elif isinstance(node, (nodes.title, nodes.subtitle, nodes.rubric)):
            if isinstance(node, nodes.title) and isinstance(node.parent, (nodes.section, nodes.document)):
                return  # the section's heading or the document title, emitted as a heading
            self.builder.paragraph(_collapse(self.inline(node)))
        elif isinstance(node, (nodes.literal_block, nodes.doctest_block, nodes.math_block)):
            self.builder.paragraph(node.astext())
        elif isinstance(node, nodes.line_block):
            self.builder.paragraph("\n".join(_collapse(self.inline(line)) for line in node.findall(nodes.line)))
        elif isinstance(node, nodes.paragraph):
            self.builder.paragraph(_collapse(self.inline(node)))
        elif isinstance(node, self.lists):
            self.builder.paragraph("\n".join(self.list_lines(node)))
        elif isinstance(node, nodes.table):
            self.table(node)
        elif isinstance(node, nodes.Admonition):
            self.admonition(node, depth)
        elif isinstance(node, (nodes.footnote, nodes.citation)):
            label = node.next_node(nodes.label)
            text = _collapse(" ".join(self.inline(p) for p in node.children if not isinstance(p, nodes.label)))
            self.builder.paragraph(f"[{label.astext()}] {text}" if label is not None else text)
        elif isinstance(node, nodes.system_message):
            self.unknown_directive(node, depth)
        elif isinstance(node, nodes.image):
            self.builder.paragraph(_collapse(node.get("alt", "")))
        elif isinstance(node, nodes.topic) and "contents" in node.get("classes", ()):
            return  # a generated table of contents repeats the headings
        elif isinstance(node, (nodes.comment, nodes.substitution_definition, nodes.target, nodes.raw,
                               nodes.pending, nodes.transition, nodes.docinfo, nodes.decoration)):
            return
        elif isinstance(node, nodes.TextElement):
            self.builder.paragraph(_collapse(self.inline(node)))
        elif isinstance(node, nodes.Element):
            self.body(node, depth)

    def admonition(self, node: Any, depth: int) -> None:
        """A note or warning: its label starts its first paragraph (``Note: ...``)."""
        nodes = self.nodes
        title = node.next_node(nodes.title)
        label = _collapse(self.inline(title)) if title is not None else node.tagname.capitalize()
        body = [child for child in node.children if not isinstance(child, nodes.title)]
        if body and isinstance(body[0], nodes.paragraph):
            self.builder.paragraph(f"{label}: {_collapse(self.inline(body[0]))}")
            body = body[1:]
        else:
            self.builder.paragraph(f"{label}:")
        for child in body:
            self.block(child, depth)

    def unknown_directive(self, message: Any, depth: int) -> None:
        """Keep an unknown (Sphinx) directive as text: ``name: argument``, then its content rendered as RST.

        Other reports (a disabled ``include``, a markup error) are dropped.
        """
        nodes = self.nodes
        reason = message.next_node(nodes.paragraph)
        match = _UNKNOWN_DIRECTIVE.match(reason.astext()) if reason is not None else None
        source = message.next_node(nodes.literal_block)
        if match is None or source is None or _BUILD_DIRECTIVES.match(match.group(1)):
            return
        lines = source.astext().split("\n")
        head = _DIRECTIVE_HEAD.match(lines[0])
        argument = _collapse(head.group(1)) if head else ""
        self.builder.paragraph(f"{match.group(1)}: {argument}" if argument else "")
        body = [line for line in lines[1:] if not _DIRECTIVE_OPTION.match(line)]
        content = textwrap.dedent("\n".join(body)).strip("\n")
        if content.strip():
            # The content is RST too (and shorter than the file, so nesting ends).
            self.body(parse_rst(content, doctitle=False), depth)

    # -- lists and tables ----------------------------------------------------------------------------

    def list_lines(self, node: Any, indent: str = "") -> list[str]:
        """Lines of a list, nested lists indented: ``- item``, ``1. item``, ``term`` then ``  definition``."""
        nodes = self.nodes
        lines: list[str] = []
        for number, item in enumerate(node.children, start=node.get("start", 1)):
            if isinstance(node, nodes.bullet_list):
                marker = "- "
            elif isinstance(node, nodes.enumerated_list):
                marker = f"{number}. "
            else:
                marker = ""
            lines.extend(self.item_lines(item, indent, marker))
        return lines

    def item_lines(self, item: Any, indent: str, marker: str) -> list[str]:
        """One list item (or definition, field, option) as lines: the first after ``marker``, the rest under it."""
        nodes = self.nodes
        lines: list[str] = []
        prefix, inner = indent + marker, indent + " " * len(marker)
        label = ""
        for child in self._item_parts(item):
            if isinstance(child, nodes.classifier) and lines:
                lines[-1] += f" ({_collapse(child.astext())})"
                continue
            if isinstance(child, self.lists):
                lines.extend(self.list_lines(child, inner))
                continue
            if isinstance(child, nodes.field_name):
                label = _collapse(self.inline(child)) + ": "  # "name: value" on one line
                continue
            if isinstance(child, (nodes.literal_block, nodes.doctest_block)):
                block = child.astext().split("\n")
            elif isinstance(child, nodes.option_group):
                block = [", ".join(_collapse(option.astext()) for option in child.children)]
            else:
                block = [_collapse(self.inline(child))]
            for line in block:
                if line.strip():
                    lines.append(prefix + label + line)
                    prefix, label = inner, ""
            if isinstance(child, (nodes.term, nodes.option_group)):
                prefix = inner = indent + "  "  # the definition goes under its term
        return lines

    def _item_parts(self, item: Any) -> list[Any]:
        """The term-like and body children of an item, with definition/field-body wrappers opened."""
        nodes = self.nodes
        parts: list[Any] = []
        for child in item.children:
            if isinstance(child, (nodes.definition, nodes.field_body, nodes.description)):
                parts.extend(child.children)
            else:
                parts.append(child)
        return parts

    def table(self, node: Any) -> None:
        """A grid, simple or list table as a table section; the caption, if any, names it."""
        nodes = self.nodes
        title = node.next_node(nodes.title)
        name = _collapse(self.inline(title)) if title is not None else None
        header: list[str] | None = None
        rows: list[list[str]] = []
        for group in node.findall(nodes.tgroup):
            for part in group.children:
                if isinstance(part, nodes.thead) and header is None:
                    head_rows = [self.row(row) for row in part.children]
                    header = [" ".join(filter(None, cells)) for cells in zip(*head_rows)] if head_rows else None
                elif isinstance(part, (nodes.thead, nodes.tbody)):
                    rows.extend(self.row(row) for row in part.children)
            break  # one tgroup per table in practice; nested tables are flattened into their cell text
        self.builder.table(rows, header=header, name=name)

    def row(self, row: Any) -> list[str]:
        """A table row's cells; a cell spanning columns is followed by blank cells, so columns line up."""
        cells: list[str] = []
        for entry in row.children:
            cells.append(_collapse(" ".join(self.inline(child) for child in entry.children)))
            cells.extend([""] * int(entry.get("morecols", 0)))
        return cells

    # -- inline --------------------------------------------------------------------------------------

    def inline(self, node: Any) -> str:
        """The text of an inline subtree; an unknown role reads as its text, without the role markup."""
        nodes = self.nodes
        if isinstance(node, nodes.Text):
            return str(node)
        if isinstance(node, nodes.problematic):
            return _role_text(node.astext())
        if isinstance(node, (nodes.footnote_reference, nodes.citation_reference)):
            return f"[{node.astext()}]"
        if isinstance(node, (nodes.system_message, nodes.comment, nodes.target, nodes.raw)):
            return ""
        if isinstance(node, self.lists):
            return " ".join(self.list_lines(node))
        return "".join(self.inline(child) for child in node.children)


def _role_text(raw: str) -> str:
    """``:func:`~pkg.load``` → ``pkg.load``; ``:ref:`the guide <guide>``` → ``the guide``; other text as is."""
    match = _ROLE.match(raw)
    if not match:
        return raw
    text = match.group(1)
    target = _ROLE_TARGET.match(text)
    if target and target.group(1):
        text = target.group(1)
    return text.lstrip("~!")


def _docinfo(doctree: Any) -> dict[str, Any]:
    """Bibliographic fields (``:Author:``, ``:Version:`` ...) as metadata, lower-case keys."""
    from docutils import nodes

    info: dict[str, Any] = {}
    for docinfo in doctree.findall(nodes.docinfo):
        for field in docinfo.children:
            if isinstance(field, nodes.field):
                key, value = field.children[0].astext(), field.children[1].astext()
            else:
                key, value = field.tagname, field.astext()
            key = key.strip().lower()
            if key in _DOCINFO_FIELDS:
                info[key] = _collapse(value)
    for clash in reserved_keys_in(info):
        info.pop(clash)
    return info


def parse_rst(text: str, *, doctitle: bool = True) -> Any:
    """The docutils doctree of ``text``, parsed with the safe settings above.

    Args:
        text: reStructuredText source.
        doctitle: promote a lone top-level section title to the document title (off for directive content).

    Raises:
        LoaderError: docutils fails outright (a one-line reason).
    """
    from docutils.core import publish_doctree

    settings = {**_DOCUTILS_SETTINGS, "warning_stream": io.StringIO(), "doctitle_xform": doctitle}
    try:
        return publish_doctree(text, settings_overrides=settings)
    except RecursionError:
        raise LoaderError("invalid reStructuredText: nested too deeply") from None
    except Exception as exc:  # noqa: BLE001 - docutils raises many types (SystemMessage, ApplicationError, ValueError)
        raise LoaderError(f"invalid reStructuredText: {_collapse(str(exc))[:200]}") from None


class RstParser(BaseParser):
    """reStructuredText (``.rst``) through docutils: title, sections, code, lists and tables."""

    name = "rst"
    suffixes = (".rst", ".rest")
    media_types = ("text/x-rst",)
    description = "rendered text; title and sections as headings; code, lists; grid/simple tables as tables"

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Read one reStructuredText file.

        Raises:
            LoaderError: not text, docutils fails, or nothing renders to text.
        """
        text, encoding = decode_text(data)
        doctree = parse_rst(text)
        title = _collapse(doctree.get("title", ""))
        builder = DocumentBuilder()
        renderer = _RstRenderer(builder)
        if title:
            builder.heading(1, title)
        renderer.body(doctree, 2 if title else 1)
        if not title:
            first = next(iter(doctree.findall(renderer.nodes.title)), None)
            title = _collapse(first.astext()) if first is not None else ctx.stem
        metadata = ctx.merge_metadata(_docinfo(doctree), format=self.name, encoding=encoding)
        return [builder.build(doc_id=ctx.doc_id, source=ctx.source, title=title, metadata=metadata)]
