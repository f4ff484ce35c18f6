"""Gzip-compressed files: ``notes.md.gz`` is read as ``notes.md`` by the parser for ``.md``.

The content is decompressed within ``ingest.max_unpacked_mb`` (a gzip bomb stops at the limit) and handed
back to the registry under the name without ``.gz``; the resulting documents keep the file's id and are
exactly what the uncompressed file would give (their ``format`` is the inner parser's).
"""

from __future__ import annotations

from pathlib import PurePosixPath

from rag.core.errors import LoaderError, UnsupportedFileError
from rag.core.types import Document
from rag.ingest.parsers.archive import gunzip
from rag.ingest.parsers.base import BaseParser, ParseContext, sniff_magic

GZIP_MAGIC = b"\x1f\x8b"


class GzipParser(BaseParser):
    """Any supported file compressed with gzip, read by the parser that its inner name selects."""

    name = "gzip"
    suffixes = (".gz",)
    media_types = ("application/gzip",)
    description = ("any supported file compressed with gzip (notes.md.gz, data.csv.gz): read by the parser "
                   "for the name without .gz")

    def sniff(self, head: bytes) -> str | None:
        return sniff_magic(head, GZIP_MAGIC, "a gzip file")

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        inner_name = PurePosixPath(ctx.name).stem  # notes.md.gz -> notes.md
        if ctx.parse_child is None:
            raise LoaderError("compressed files need the parser registry (parse_child)")
        content = gunzip(data, ctx.limits)
        try:
            return ctx.parse_child(content, inner_name, ctx.doc_id)
        except UnsupportedFileError as exc:
            raise UnsupportedFileError(
                f"{exc} inside the .gz (a .gz file is read by the parser for its name without .gz)"
            ) from None
