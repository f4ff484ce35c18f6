"""Markdown: front-matter as metadata, headings (found by a CommonMark parser) as sections.

The document text is the Markdown source itself (without its front-matter): Markdown is already readable
text, and code, tables and lists keep their layout. Headings come from markdown-it-py's block parse, so
setext headings (``Title`` over ``=====``) count, and a ``#`` line inside a code fence, an indented code
block or an HTML comment does not.

Front-matter is a block at the very top of the file:

* YAML between ``---`` lines (the closing line may also be ``...``), used only when it parses as a mapping:
  a file that merely starts with a ``---`` horizontal rule keeps its first paragraph. A block that looks
  like front-matter (its first line is ``key: ...``) but is not valid YAML fails the file with a one-line
  reason (``invalid front-matter: YAML error at line 3: ...``);
* TOML between ``+++`` lines (Hugo), parsed with :mod:`tomllib`.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterator
from itertools import accumulate
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, sniff_text
from rag.ingest.parsers.encoding import decode_text
from rag.ingest.parsers.sections import push_heading, sections_at

# Front-matter: an opening fence on the first line, the block, a closing fence on a line of its own.
_YAML_BLOCK = re.compile(r"\A---[ \t]*\n(.*?\n)?(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_TOML_BLOCK = re.compile(r"\A\+\+\+[ \t]*\n(.*?\n)?\+\+\+[ \t]*(?:\n|\Z)", re.DOTALL)
# A YAML block whose first line is "key:" was meant as front-matter, so a syntax error in it is reported
# rather than the block being indexed as text.
_YAML_KEY_LINE = re.compile(r"\A\s*[\w\"'][^\n:]*:(?:\s|$)")


class _Markdown:
    """Two CommonMark parsers: a block-only one for structure (fast: no inline parsing of paragraphs),
    and a full one for the few heading lines whose inline markup must be cleaned."""

    _blocks: Any = None
    _inline: Any = None

    @classmethod
    def blocks(cls) -> Any:
        if cls._blocks is None:
            from markdown_it import MarkdownIt

            cls._blocks = MarkdownIt("commonmark").disable("inline")
        return cls._blocks

    @classmethod
    def inline(cls) -> Any:
        if cls._inline is None:
            from markdown_it import MarkdownIt

            cls._inline = MarkdownIt("commonmark")
        return cls._inline


def split_front_matter(text: str) -> tuple[dict[str, Any], str]:
    """``(front-matter mapping, body)``; the mapping is empty and the body is ``text`` when there is none.

    Raises:
        LoaderError: a block meant as front-matter does not parse (one line: ``invalid front-matter: ...``).
    """
    toml_block = _TOML_BLOCK.match(text)
    if toml_block:
        try:
            return tomllib.loads(toml_block.group(1) or ""), text[toml_block.end():]
        except tomllib.TOMLDecodeError as exc:
            raise LoaderError(f"invalid front-matter: TOML error: {_one_line(str(exc))}") from None
    yaml_block = _YAML_BLOCK.match(text)
    if not yaml_block:
        return {}, text
    import yaml

    block = yaml_block.group(1) or ""
    try:
        front = yaml.safe_load(block)
    except yaml.YAMLError as exc:
        if not _YAML_KEY_LINE.match(block):
            return {}, text  # a horizontal rule, then text that is not YAML: no front-matter
        raise LoaderError(f"invalid front-matter: {_yaml_reason(exc)}") from None
    if front is None and not block.strip():
        return {}, text[yaml_block.end():]  # an empty block ("---\n---") is empty front-matter
    if not isinstance(front, dict):
        return {}, text  # "---", a paragraph, "---": two horizontal rules, not metadata
    return front, text[yaml_block.end():]


def _yaml_reason(exc: Exception) -> str:
    """``YAML error at line N: problem``, N counted in the file (the opening ``---`` is line 1)."""
    mark = getattr(exc, "problem_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    where = f" at line {mark.line + 2}" if mark is not None else ""
    return f"YAML error{where}: {_one_line(problem)}"


def _one_line(message: str) -> str:
    return " ".join(message.split())


def _heading_text(source: str, env: dict[str, Any]) -> str:
    """A heading's text without inline markup: emphasis, code ticks and links reduced to their words."""
    parts: list[str] = []
    for token in _Markdown.inline().parseInline(source, env):
        for child in token.children or ():
            if child.type in ("text", "code_inline"):
                parts.append(child.content)
            elif child.type in ("softbreak", "hardbreak"):
                parts.append(" ")
            elif child.type == "image":
                parts.append(" ".join(grand.content for grand in child.children or ()))
    return " ".join("".join(parts).split())


def markdown_headings(text: str) -> Iterator[tuple[int, int, str]]:
    """``(offset, level, title)`` of each top-level heading (ATX or setext) of the Markdown ``text``.

    Headings inside block quotes and lists are content, not document structure, and are skipped.
    """
    env: dict[str, Any] = {}
    tokens = _Markdown.blocks().parse(text, env)
    # markdown-it numbers lines split at "\n" only (decode_text has normalised the other line ends).
    line_starts = [0, *accumulate(len(line) + 1 for line in text.split("\n"))]
    for index, token in enumerate(tokens):
        if token.type != "heading_open" or token.level != 0 or token.map is None:
            continue
        title = _heading_text(tokens[index + 1].content, env)
        if title:
            yield line_starts[min(token.map[0], len(line_starts) - 1)], int(token.tag[1]), title


class MarkdownParser(BaseParser):
    """CommonMark Markdown (``.md``, ``.markdown``): YAML/TOML front-matter as metadata, headings as sections."""

    name = "markdown"
    suffixes = (".md", ".markdown")
    media_types = ("text/markdown",)
    description = "front-matter (YAML/TOML) as metadata; ATX and setext headings as sections"

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Read one Markdown file.

        Raises:
            LoaderError: not text, invalid front-matter, or nothing but front-matter.
        """
        text, encoding = decode_text(data)
        front, body = split_front_matter(text)
        if not body.strip():
            raise LoaderError("empty file (front-matter only)")
        fmt = dict(front)
        fm_title = fmt.pop("title", None)
        starts: list[tuple[int, tuple[str, ...]]] = [(0, ())]
        stack: list[tuple[int, str]] = []
        first_h1: str | None = None
        for offset, level, heading in markdown_headings(body):
            if level == 1 and first_h1 is None:
                first_h1 = heading
            starts.append((offset, push_heading(stack, level, heading)))
        title = str(fm_title).strip() if fm_title not in (None, "") else (first_h1 or ctx.stem)
        return [
            Document(
                doc_id=ctx.doc_id,
                text=body,
                source=ctx.source,
                title=title,
                sections=sections_at(body, starts),
                metadata=ctx.merge_metadata(fmt, format=self.name, encoding=encoding),
            )
        ]

