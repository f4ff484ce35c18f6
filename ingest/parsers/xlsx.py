"""Excel (.xlsx): each visible, non-empty sheet as tables that keep the spreadsheet's row numbers.

Read with openpyxl in read-only, values-only mode (formulas give the value Excel last computed and
saved) after :func:`~rag.ingest.parsers.ooxml.open_package` has checked the package. Rows stream from
the file, and a sheet past ``ingest.max_rows`` fails the file as soon as the limit is passed, so a
million-row sheet costs bounded time and memory. See :mod:`~rag.ingest.parsers.grid` for how the header
and the tables are found. Hidden sheets are skipped: they hold lookup lists and intermediate
calculations far more often than content meant for readers. Charts and images are ignored.
"""

from __future__ import annotations

import logging
from datetime import date, datetime, time, timedelta
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, missing_module
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.grid import GridRow, add_grid
from rag.ingest.parsers.ooxml import core_metadata, library_error, open_package, sniff_package

log = logging.getLogger(__name__)

WHAT = "Excel workbook"
# Excel keeps 15 significant digits; more are binary noise (0.1 + 0.2 is stored as 0.30000000000000004).
_NUMBER_FORMAT = ".15g"


def cell_text(value: Any) -> str:
    """A cell value as a reader sees it: numbers without a spurious ``.0``, dates as ISO-8601.

    A date-time at midnight is a date (``2024-03-05``); booleans are ``TRUE``/``FALSE`` as Excel shows them.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() and abs(value) < 1e15 else format(value, _NUMBER_FORMAT)
    if isinstance(value, datetime):
        return value.date().isoformat() if value.time() == time() else value.isoformat()
    if isinstance(value, (date, time)):
        return value.isoformat()
    if isinstance(value, timedelta):  # a duration-formatted cell
        return str(value)
    return str(value)


def _sheet_rows(sheet: Any, limit: int) -> list[GridRow]:
    """The sheet's rows with their numbers, read until the data ends or the limit is passed.

    Raises:
        LoaderError: the sheet has more than ``limit`` rows.
    """
    # Read-only mode trusts the sheet's declared dimension: a stale one hides rows, and a bogus
    # "A1:XFD1048576" pads every row to 16,384 cells. Without it, each row is as wide as its last cell.
    sheet.reset_dimensions()
    rows: list[GridRow] = []
    for number, values in enumerate(sheet.iter_rows(values_only=True), start=1):
        if number > limit:
            raise LoaderError(f"sheet {sheet.title!r} has more than {limit} rows (ingest.max_rows)")
        rows.append((number, [cell_text(value) if value is not None else "" for value in values]))
    return rows


class XlsxParser(BaseParser):
    """Excel workbooks: each visible sheet's rows as tables (``sheet`` and row numbers in metadata)."""

    name = "xlsx"
    suffixes = (".xlsx",)
    media_types = ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",)
    description = "each visible sheet as tables with a header row (sheet and row numbers in metadata)"

    def available(self) -> str | None:
        return missing_module("openpyxl", None)

    def sniff(self, head: bytes) -> str | None:
        return sniff_package(head, WHAT)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Read one .xlsx file.

        Raises:
            LoaderError: encrypted, legacy, corrupt or oversized package, a sheet past ``max_rows``, or no
                values in any visible sheet (``no text content``).
        """
        import openpyxl

        stream = open_package(data, ctx.limits, WHAT, ".xlsx")
        builder = DocumentBuilder()
        try:
            workbook = openpyxl.load_workbook(stream, read_only=True, data_only=True)
        except Exception as exc:  # openpyxl raises many types (KeyError, InvalidFileException, lxml errors)
            log.debug("openpyxl failed on %s", ctx.name, exc_info=True)
            raise library_error(WHAT, exc) from None
        try:
            for sheet in workbook.worksheets:
                if sheet.sheet_state != "visible":
                    log.info("%s: skipping hidden sheet %r", ctx.name, sheet.title)
                    continue
                builder.reset_headings((sheet.title,))
                add_grid(builder, _sheet_rows(sheet, ctx.limits.max_rows), name=sheet.title,
                         location={"sheet": sheet.title})
            props = workbook.properties
            metadata = core_metadata(author=props.creator, created=props.created, modified=props.modified,
                                     subject=props.subject, keywords=props.keywords)
            core_title = (props.title or "").strip()
        except LoaderError:
            raise
        except Exception as exc:  # read-only mode parses each sheet's XML while its rows are read
            log.debug("openpyxl failed on %s", ctx.name, exc_info=True)
            raise library_error(WHAT, exc) from None
        finally:
            workbook.close()  # read-only workbooks keep the archive open until closed
        doc = builder.build(
            doc_id=ctx.doc_id, source=ctx.source, title=core_title or ctx.stem,
            metadata=ctx.merge_metadata(metadata, format=self.name),
        )
        return [doc]
