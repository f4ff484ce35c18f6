"""Grids of cells (an Excel sheet, a CSV file) as table sections that keep the source's row numbers.

The header is the first row with two or more non-empty cells (the first non-empty row when every row has
one cell); single-cell rows above it (a sheet title, a note) become text. Below the header, each run of
non-blank rows becomes one table section carrying the header, so a blank separator row never shifts the
row numbers chunks report: ``Table.first_row`` is always the source's own number of the run's first row.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rag.ingest.parsers.builder import DocumentBuilder

GridRow = tuple[int, Sequence[str]]
"""One row: its number as the source counts rows (1-based), and its cells as text."""


def _span(rows: Sequence[GridRow]) -> tuple[int, int]:
    """``(first, end)``: the columns from the first to the last that hold a value in some row, so that a
    table placed at C5, or formatted-but-empty columns on its right, add no empty columns."""
    first, end = None, 0
    for _, cells in rows:
        filled = [index for index, cell in enumerate(cells) if cell.strip()]
        if filled:
            first = filled[0] if first is None else min(first, filled[0])
            end = max(end, filled[-1] + 1)
    return (first or 0), end


def _filled(cells: Sequence[str]) -> int:
    return sum(1 for cell in cells if cell.strip())


def add_grid(builder: DocumentBuilder, rows: Sequence[GridRow], *, name: str | None,
             location: Mapping[str, Any] | None = None) -> bool:
    """Add a grid's text and tables to ``builder``; returns whether it held any value.

    Args:
        builder: the document under construction (its heading path is kept).
        rows: the rows in order, blank rows included (they split tables, not row numbers).
        name: the table's name (the sheet name), stored as chunk ``table``.
        location: location keys for every section (``{"sheet": "Sales"}``).
    """
    first, end = _span(rows)
    if not end:
        return False
    width = end - first
    grid = [(number, [*cells[first:end], *[""] * (width - len(cells[first:end]))]) for number, cells in rows]
    header_at = next((i for i, (_, cells) in enumerate(grid) if _filled(cells) >= 2), None)
    if header_at is None:
        header_at = next(i for i, (_, cells) in enumerate(grid) if _filled(cells))
    for _, cells in grid[:header_at]:
        if _filled(cells):  # a title or note above the header
            builder.paragraph(" ".join(cell.strip() for cell in cells if cell.strip()), location=location)
    header_number, header = grid[header_at]
    runs: list[tuple[int, list[Sequence[str]]]] = []
    for number, cells in grid[header_at + 1:]:
        if not _filled(cells):
            continue
        if runs and runs[-1][0] + len(runs[-1][1]) == number:
            runs[-1][1].append(cells)
        else:
            runs.append((number, [cells]))
    if not runs:  # a header without data still says what the sheet is about
        runs.append((header_number + 1, []))
    for first_row, body in runs:
        builder.table(body, header=header, name=name, first_row=first_row, location=location)
    return True
