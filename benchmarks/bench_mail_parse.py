"""Parse speed of the e-mail, e-book, notebook and gzip parsers on files made in memory.

Cases: one e-mail with an HTML alternative and three attachments (notes.txt, a 10-page PDF, a .exe); an
mbox of ``--messages`` messages; an EPUB of ``--chapters`` chapters; a notebook of ``--cells`` cells;
a Markdown file of about 5 MB, plain and gzip-compressed (the gzip row minus the plain row is the cost of
decompressing). Each file is made with the real library (email, mailbox, reportlab, ebooklib, nbformat,
gzip) and parsed ``--repeat`` times through the parser registry exactly as ingest does (sniffing, limits,
attachments through ``parse_child``); the median and best time are reported as files/s and units/s.
Parsing only: no chunking or embedding. The 1-minute load average at start and end is recorded, since
timings on a shared machine move with its load.

    python -m benchmarks.bench_mail_parse [--messages 1000] [--chapters 50] [--cells 300] [--repeat 5]
"""

from __future__ import annotations

import argparse
import gzip
import io
import mailbox
import statistics
import tempfile
import time
from collections.abc import Callable
from email.message import EmailMessage
from pathlib import Path

from benchmarks.common import load_average, table, write_result
from rag.ingest.parsers import ParseContext, ParserRegistry

WORDS = ("supplier invoice widget delivery quarter region budget forecast margin shipment customer "
         "contract warehouse audit payroll pricing refund").split()


def _sentence(seed: int, words: int) -> str:
    return " ".join(WORDS[(seed * 7 + i * 3) % len(WORDS)] for i in range(words)).capitalize() + "."


def _paragraphs(seed: int, count: int) -> list[str]:
    return [" ".join(_sentence(seed + p + s, 12) for s in range(5)) for p in range(count)]


def make_pdf(pages: int) -> bytes:
    from reportlab.pdfgen import canvas

    out = io.BytesIO()
    pdf = canvas.Canvas(out)
    for page in range(pages):
        for line in range(40):
            pdf.drawString(72, 800 - 18 * line, _sentence(page * 40 + line, 10))
        pdf.showPage()
    pdf.save()
    return out.getvalue()


def make_message(n: int, pdf: bytes | None = None) -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"] = f"Weekly update {n}"
    msg["From"] = f"Sender {n % 17} <sender{n % 17}@example.com>"
    msg["To"] = "team@example.com, lead@example.com"
    msg["Date"] = f"Mon, {1 + n % 28:02d} Apr 2024 09:{n % 60:02d}:00 +0000"
    msg["Message-ID"] = f"<update-{n}@example.com>"
    body = _paragraphs(n, 6)
    msg.set_content("\n\n".join(body))
    msg.add_alternative("".join(f"<p>{p}</p>" for p in body), subtype="html")
    if pdf is not None:
        msg.add_attachment("\n\n".join(_paragraphs(n + 1, 20)), filename="notes.txt")
        msg.add_attachment(pdf, maintype="application", subtype="pdf", filename="report.pdf")
        msg.add_attachment(b"MZ\x90\x00" * 1000, maintype="application", subtype="octet-stream", filename="tool.exe")
    return msg


def make_mbox(messages: int) -> bytes:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "box.mbox"
        box = mailbox.mbox(path)
        for n in range(messages):
            box.add(make_message(n))
        box.flush()
        box.close()
        return path.read_bytes()


def make_epub(chapters: int) -> bytes:
    from ebooklib import epub

    book = epub.EpubBook()
    book.set_identifier("urn:bench:book")
    book.set_title("Benchmark Book")
    book.set_language("en")
    items = []
    for n in range(chapters):
        item = epub.EpubHtml(title=f"Chapter {n + 1}", file_name=f"ch{n + 1}.xhtml")
        item.content = f"<h1>Chapter {n + 1}</h1>" + "".join(
            (f"<h2>Part {p // 10 + 1}</h2>" if p % 10 == 0 else "") + f"<p>{text}</p>"
            for p, text in enumerate(_paragraphs(n, 30))
        )
        book.add_item(item)
        items.append(item)
    book.toc = [epub.Link(item.file_name, item.title, item.file_name) for item in items]
    book.add_item(epub.EpubNcx())
    book.add_item(epub.EpubNav())
    book.spine = ["nav", *items]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "book.epub"
        epub.write_epub(str(path), book)
        return path.read_bytes()


def make_notebook(cells: int) -> bytes:
    import nbformat
    from nbformat import v4

    notebook = v4.new_notebook(metadata={"kernelspec": {"name": "python3", "language": "python", "display_name": "Python 3"}})
    for n in range(cells // 2):
        heading = f"## Step {n}\n\n" if n % 5 == 0 else ""
        notebook.cells.append(v4.new_markdown_cell(heading + _paragraphs(n, 1)[0]))
        notebook.cells.append(v4.new_code_cell(
            f"result_{n} = compute({n})\nprint(result_{n})",
            outputs=[v4.new_output("stream", name="stdout", text=f"value {n}\n" * 20)],
        ))
    return nbformat.writes(notebook).encode("utf-8")


def make_markdown(megabytes: float) -> bytes:
    parts, size, n = [], 0, 0
    while size < megabytes * 2**20:
        block = (f"## Section {n}\n\n" if n % 20 == 0 else "") + _paragraphs(n, 1)[0] + "\n\n"
        parts.append(block)
        size += len(block)
        n += 1
    return ("# Benchmark notes\n\n" + "".join(parts)).encode("utf-8")


def timed(parse: Callable[[], object], repeat: int) -> list[float]:
    parse()  # warm up: imports and the first-use costs of the libraries
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        parse()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--chapters", type=int, default=50)
    parser.add_argument("--cells", type=int, default=300)
    parser.add_argument("--markdown-mb", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    registry = ParserRegistry(plugins=False)
    markdown = make_markdown(args.markdown_mb)
    cases = [
        ("eml, HTML alternative + 3 attachments (10-page PDF)", "update.eml",
         make_message(1, make_pdf(10)).as_bytes(), 1, "messages"),
        (f"mbox, {args.messages:,} messages", "box.mbox", make_mbox(args.messages), args.messages, "messages"),
        (f"epub, {args.chapters} chapters", "book.epub", make_epub(args.chapters), args.chapters, "chapters"),
        (f"ipynb, {args.cells} cells", "analysis.ipynb", make_notebook(args.cells), args.cells, "cells"),
        (f"md, {args.markdown_mb:g} MB (baseline)", "notes.md", markdown, len(markdown) / 2**20, "MB"),
        (f"md.gz, the same {args.markdown_mb:g} MB", "notes.md.gz", gzip.compress(markdown), len(markdown) / 2**20, "MB"),
    ]
    load_start = load_average()
    results = []
    for label, name, data, units, unit in cases:
        def parse(name: str = name, data: bytes = data) -> object:
            problems: list[tuple[str, str]] = []
            docs = registry.parse(data, ParseContext(name=name, doc_id=name, source=name, problems=problems))
            assert docs and not problems, problems
            return docs

        times = timed(parse, args.repeat)
        best, median = min(times), statistics.median(times)
        results.append({
            "file": label, "bytes": len(data), "units": units, "unit": unit, "best_s": round(best, 4),
            "median_s": round(median, 4), "files_per_s": round(1 / median, 2), "units_per_s": round(units / median, 1),
        })
    load_end = load_average()
    print(table(
        ["file", "size KiB", "median s", "best s", "files/s", "units/s"],
        [[r["file"], round(r["bytes"] / 1024), r["median_s"], r["best_s"], r["files_per_s"], f"{r['units_per_s']:,} {r['unit']}/s"]
         for r in results],
    ))
    print(f"load average at start {load_start}, at end {load_end}")
    path = write_result("mail_parse", {"repeat": args.repeat, "load_start": load_start, "load_end": load_end,
                                       "results": results})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
