"""Markdown: YAML front-matter as metadata, headings as sections."""

from __future__ import annotations

import re
from collections.abc import Iterator

from rag.core.errors import LoaderError
from rag.core.types import Document, Section
from rag.ingest.parsers.base import BaseParser, ParseContext, sniff_text
from rag.ingest.parsers.encoding import decode_text
from rag.ingest.parsers.sections import push_heading, sections_at

# ATX headings: up to 3 spaces of indent, 1-6 '#', a space, the text, an optional closing '#' run.
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def _clean_heading(raw: str) -> str:
    """Heading text without inline markup (links, code ticks, emphasis), for readable heading paths."""
    text = _MD_LINK.sub(r"\1", raw).replace("`", "")
    text = re.sub(r"(\*\*|__|\*)(.+?)\1", r"\2", text)
    return " ".join(text.split())


def _markdown_headings(text: str) -> Iterator[tuple[int, int, str]]:
    """``(offset, level, title)`` of each ATX heading in ``text``, skipping fenced code blocks."""
    fence: str | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\n")
        fence_match = _FENCE.match(stripped)
        if fence is not None:
            # A fence closes with the same character, at least as long, and nothing else on the line.
            if fence_match and fence_match.group(1)[0] == fence[0] and len(fence_match.group(1)) >= len(fence):
                if not stripped.strip().strip(fence[0]):
                    fence = None
        elif fence_match:
            fence = fence_match.group(1)
        else:
            heading = _ATX_HEADING.match(stripped)
            if heading and _clean_heading(heading.group(2)):
                yield offset, len(heading.group(1)), _clean_heading(heading.group(2))
        offset += len(line)



class MarkdownParser(BaseParser):
    name = "markdown"
    suffixes = (".md", ".markdown")
    media_types = ("text/markdown",)
    description = "front-matter as metadata; headings as sections"

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        import frontmatter

        text, encoding = decode_text(data)
        try:
            front, body = frontmatter.parse(text)
        except Exception as exc:  # the YAML/TOML handlers raise their own exception types
            raise LoaderError(f"invalid front-matter: {exc}") from None
        if not body.strip():
            raise LoaderError("empty file (front-matter only)")
        fmt = dict(front)
        fm_title = fmt.pop("title", None)
        starts: list[tuple[int, tuple[str, ...]]] = [(0, ())]
        stack: list[tuple[int, str]] = []
        first_h1: str | None = None
        for offset, level, heading in _markdown_headings(body):
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
