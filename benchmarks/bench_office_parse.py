"""Parse speed of the Office parsers: a 10,000-row workbook, a 50-page Word document, a 10,000-row CSV.

Each file is made in memory with the real library (openpyxl, python-docx, the csv module), then parsed
``--repeat`` times through the parser registry exactly as ingest does (sniffing, the zip-bomb check, the
parse); the median wall time is reported as files/s and rows/s (paragraphs/s for the DOCX), and the
median CPU time beside it. Parsing only: no chunking or embedding. The 1-minute load average at start and
end is recorded, since wall times on a shared machine move with its load.

    python -m benchmarks.bench_office_parse [--rows 10000] [--pages 50] [--repeat 5]
"""

from __future__ import annotations

import argparse
import csv
import io
import statistics
import time
from collections.abc import Callable
from datetime import datetime, timedelta

from benchmarks.common import load_average, table, write_result
from rag.ingest.parsers import ParseContext, ParserRegistry

WORDS = ("supplier invoice widget delivery quarter region budget forecast margin shipment customer "
         "contract warehouse audit payroll pricing refund").split()
# A page of a report in 11-point type holds about this many words.
_WORDS_PER_PAGE = 450


def _sentence(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(words)).capitalize() + "."


def make_xlsx(rows: int) -> bytes:
    import openpyxl

    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Orders"
    sheet.append(["Order", "Customer", "Region", "Amount", "Ratio", "Date"])
    start = datetime(2024, 1, 1)
    for n in range(rows):
        sheet.append([n, f"Customer {n % 977}", WORDS[n % len(WORDS)], n * 3.5, n / 7, start + timedelta(days=n % 365)])
    out = io.BytesIO()
    workbook.save(out)
    return out.getvalue()


def make_docx(pages: int) -> tuple[bytes, int]:
    """A report of about ``pages`` pages: a heading, paragraphs and a list per page, a table every 5 pages."""
    import docx

    document = docx.Document()
    paragraphs = 0
    for page in range(pages):
        document.add_heading(f"Section {page + 1}", 1 if page % 5 == 0 else 2)
        for p in range(6):
            document.add_paragraph(" ".join(_sentence(page * 10 + p + s, 12) for s in range(6)))
        for item in range(4):
            document.add_paragraph(_sentence(page + item, 6), style="List Bullet")
        paragraphs += 11
        if page % 5 == 4:
            grid = document.add_table(rows=8, cols=4)
            for r, row in enumerate(grid.rows):
                for c, cell in enumerate(row.cells):
                    cell.text = WORDS[(r + c) % len(WORDS)] if r == 0 else str(r * c)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue(), paragraphs


def make_csv(rows: int) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, delimiter=";")
    writer.writerow(["Order", "Customer", "Region", "Amount"])
    for n in range(rows):
        writer.writerow([n, f"Customer {n % 977}", WORDS[n % len(WORDS)], f"{n * 3.5:.2f}"])
    return out.getvalue().encode("utf-8")


def timed(parse: Callable[[], object], repeat: int) -> tuple[list[float], list[float]]:
    """Wall-clock and CPU seconds of each of ``repeat`` parses, after one warm-up parse.

    CPU time is what the parse itself consumed: on a busy machine it moves far less than wall time.
    """
    parse()  # warm up: imports and the first-use costs of the libraries
    wall, cpu = [], []
    for _ in range(repeat):
        start, start_cpu = time.perf_counter(), time.process_time()
        parse()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return wall, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10_000)
    parser.add_argument("--pages", type=int, default=50)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    registry = ParserRegistry(plugins=False)
    docx_bytes, paragraphs = make_docx(args.pages)
    cases = [
        (f"xlsx, {args.rows:,} rows x 6 columns", "report.xlsx", make_xlsx(args.rows), args.rows, "rows"),
        (f"docx, {args.pages} pages", "report.docx", docx_bytes, paragraphs, "paragraphs"),
        (f"csv, {args.rows:,} rows x 4 columns", "orders.csv", make_csv(args.rows), args.rows, "rows"),
    ]
    load_start = load_average()
    results = []
    for label, name, data, units, unit in cases:
        def parse(name: str = name, data: bytes = data) -> object:
            return registry.parse(data, ParseContext(name=name, doc_id=name, source=name))

        wall, cpu = timed(parse, args.repeat)
        median, cpu_median = statistics.median(wall), statistics.median(cpu)
        results.append({
            "file": label, "bytes": len(data), "units": units, "unit": unit, "best_s": round(min(wall), 4),
            "median_s": round(median, 4), "cpu_median_s": round(cpu_median, 4),
            "files_per_s": round(1 / median, 2), "units_per_s": round(units / median),
            "files_per_cpu_s": round(1 / cpu_median, 2), "units_per_cpu_s": round(units / cpu_median),
        })
    load_end = load_average()
    print(table(
        ["file", "size KiB", "median s", "best s", "files/s", "per s", "CPU s", "per CPU s"],
        [[r["file"], round(r["bytes"] / 1024), r["median_s"], r["best_s"], r["files_per_s"],
          f"{r['units_per_s']:,} {r['unit']}", r["cpu_median_s"], f"{r['units_per_cpu_s']:,} {r['unit']}"]
         for r in results],
    ))
    print(f"load average at start {load_start}, at end {load_end}")
    path = write_result("office_parse", {"repeat": args.repeat, "load_start": load_start, "load_end": load_end,
                                         "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
