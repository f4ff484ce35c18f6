"""Plain text: one section; the first line is the title when it looks like one."""

from __future__ import annotations

from rag.core.types import Document, Section
from rag.ingest.parsers.base import BaseParser, ParseContext, sniff_text
from rag.ingest.parsers.encoding import decode_text

# A plain-text file's first line becomes its title only when it looks like one.
_MAX_TITLE_LINE = 80


class TextParser(BaseParser):
    name = "text"
    suffixes = (".txt", ".text")
    media_types = ("text/plain",)
    description = "one section; the first short line is the title"

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        text, encoding = decode_text(data)
        first_line = next(line.strip() for line in text.splitlines() if line.strip())
        title = first_line if len(first_line) <= _MAX_TITLE_LINE else ctx.stem
        return [
            Document(
                doc_id=ctx.doc_id,
                text=text,
                source=ctx.source,
                title=title,
                sections=[Section(text=text, start=0)],
                metadata=ctx.merge_metadata(format=self.name, encoding=encoding),
            )
        ]
