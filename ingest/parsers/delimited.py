"""CSV and TSV: one table whose header is the first row, with the file's row numbers in every chunk.

The bytes are decoded with :func:`~rag.ingest.parsers.encoding.decode_text` (the ``encoding`` key says
how). A ``.tsv`` file is split on tabs; for ``.csv`` the delimiter is sniffed among ``,`` ``;`` ``|`` and
tab (a first line ``sep=;``, as Excel writes it, decides it outright). Ragged rows are padded. More than
``ingest.max_rows`` rows fail the file once the limit is passed.
"""

from __future__ import annotations

import csv
import io
import re

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, sniff_text
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.encoding import decode_text
from rag.ingest.parsers.grid import GridRow, add_grid

CANDIDATE_DELIMITERS = ",;|\t"
# The sniffer reads whole lines from the start of the file, up to this many characters.
_SNIFF_CHARS = 16_384
# Excel's "sep=;" line, which states the delimiter of the rows after it.
_SEP_LINE = re.compile(r"^sep=(.)\n")


def sniff_delimiter(text: str) -> str:
    """The delimiter of CSV ``text``: the one :class:`csv.Sniffer` finds consistent across the first lines,
    else the candidate most frequent in the first line, else a comma."""
    sample = text[:_SNIFF_CHARS]
    if len(text) > _SNIFF_CHARS and "\n" in sample:
        sample = sample[: sample.rindex("\n")]  # whole lines only: a cut row would look inconsistent
    try:
        return csv.Sniffer().sniff(sample, delimiters=CANDIDATE_DELIMITERS).delimiter
    except csv.Error:
        first_line = sample.split("\n", 1)[0]
        counts = {delimiter: first_line.count(delimiter) for delimiter in CANDIDATE_DELIMITERS}
        best = max(counts, key=lambda delimiter: counts[delimiter])
        return best if counts[best] else ","


def read_rows(text: str, delimiter: str, limit: int) -> list[GridRow]:
    """The records of ``text`` with their 1-based numbers (blank lines count, as a spreadsheet shows them).

    Raises:
        LoaderError: more than ``limit`` rows, or a malformed record (e.g. a field past the csv module's
            size limit).
    """
    rows: list[GridRow] = []
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter)
    try:
        for number, cells in enumerate(reader, start=1):
            if number > limit:
                raise LoaderError(f"more than {limit} rows (ingest.max_rows)")
            rows.append((number, cells))
    except csv.Error as exc:
        raise LoaderError(f"malformed CSV at row {reader.line_num}: {exc}") from None
    return rows


class CsvParser(BaseParser):
    """Delimited text (``.csv``, ``.tsv``): one table, first row the header, row numbers in metadata."""

    name = "csv"
    suffixes = (".csv", ".tsv")
    media_types = ("text/csv", "text/tab-separated-values")
    description = "one table, first row the header; delimiter sniffed (row numbers in metadata)"

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Read one CSV or TSV file.

        Raises:
            LoaderError: undecodable or binary content, a malformed record, more than ``max_rows`` rows,
                or no values.
        """
        text, encoding = decode_text(data)
        declared = _SEP_LINE.match(text)
        if declared:
            delimiter, text = declared.group(1), text[declared.end():]
        else:
            delimiter = "\t" if ctx.suffix == ".tsv" else sniff_delimiter(text)
        builder = DocumentBuilder()
        add_grid(builder, read_rows(text, delimiter, ctx.limits.max_rows), name=None)
        doc = builder.build(
            doc_id=ctx.doc_id, source=ctx.source, title=ctx.stem,
            metadata=ctx.merge_metadata(format=self.name, encoding=encoding),
        )
        return [doc]
