"""PDF text layer and OCR, measured: the pypdf baseline against rag's PDF parser, in the same run.

Text layer: characters per second on real PDFs (pass their paths; Debian ships several under
/usr/share/doc), and accuracy on reportlab PDFs of known text (1 - character error rate, whitespace
collapsed). OCR: CER and CPU seconds per page of a scanned A4 page of known text at several dpi.

    python -m benchmarks.bench_pdf /usr/share/doc/libtasn1-doc/libtasn1.pdf --ocr-dpi 100 150 200

Prints a table and writes benchmarks/results/bench_pdf.json.
"""

from __future__ import annotations

import argparse
import io
import json
import random
import textwrap
import time
from collections.abc import Callable
from pathlib import Path

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
WORDS = "retrieval index chunk section parser table heading page column layout scanned invoice total".split()


def levenshtein(a: str, b: str) -> int:
    previous = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        current = [i]
        for j, y in enumerate(b, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (x != y)))
        previous = current
    return previous[-1]


def cer(got: str, want: str) -> float:
    got, want = " ".join(got.split()), " ".join(want.split())
    return levenshtein(got, want) / max(len(want), 1)


def known_text_pdf(seed: int) -> tuple[bytes, str]:
    """A three-page reportlab PDF of random sentences, and its text."""
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    rng = random.Random(seed)
    paragraphs = [" ".join(rng.choice(WORDS) for _ in range(60)).capitalize() + "." for _ in range(24)]
    buffer = io.BytesIO()
    style = getSampleStyleSheet()["BodyText"]
    SimpleDocTemplate(buffer).build([Paragraph(text, style) for text in paragraphs])
    return buffer.getvalue(), " ".join(paragraphs)


def pypdf_text(data: bytes) -> str:
    import pypdf

    return "\n\n".join(page.extract_text() or "" for page in pypdf.PdfReader(io.BytesIO(data)).pages)


def rag_text(data: bytes) -> str:
    from rag.ingest.parsers.base import ParseContext
    from rag.ingest.parsers.pdf import PdfParser

    return PdfParser().parse(data, ParseContext(name="x.pdf", doc_id="x", source="x"))[0].text


def timed(extract: Callable[[bytes], str], data: bytes) -> tuple[str, float]:
    start = time.perf_counter()
    text = extract(data)
    return text, time.perf_counter() - start


def scanned_page(dpi: int = 150) -> tuple[bytes, str]:
    """An A4 page image of known 11-point text at ``dpi``, embedded in a PDF without a text layer."""
    from PIL import Image, ImageDraw, ImageFont
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    rng = random.Random(11)
    text = " ".join(rng.choice(WORDS) for _ in range(160)).capitalize() + "."
    lines = textwrap.wrap(text, 80)
    font = ImageFont.truetype(FONT, round(11 * dpi / 72))
    image = Image.new("L", (round(8.27 * dpi), round(11.69 * dpi)), 255)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((dpi, dpi + number * round(16.5 * dpi / 72)), line, font=font, fill=0)
    buffer = io.BytesIO()
    pdf = canvas.Canvas(buffer, pagesize=(595.27, 841.89))
    pdf.drawImage(ImageReader(image), 0, 0, 595.27, 841.89)
    pdf.showPage()
    pdf.save()
    return buffer.getvalue(), "\n".join(lines)


def bench_ocr(dpis: list[int]) -> list[dict]:
    import pypdfium2 as pdfium

    from rag.ingest.parsers import ocr

    data, truth = scanned_page()
    page = pdfium.PdfDocument(data)[0]
    ocr._get_engine()  # model loading is not per page
    rows = []
    for dpi in dpis:
        cpu, wall = time.process_time(), time.perf_counter()
        scale = dpi / 72
        lines = ocr.recognise(page.render(scale=scale, grayscale=True).to_pil(), scale=scale)
        got = " ".join(line.text for line in lines)
        rows.append({"dpi": dpi, "cer": round(cer(got, truth), 4), "cpu_s_per_page": round(time.process_time() - cpu, 2),
                     "wall_s_per_page": round(time.perf_counter() - wall, 2)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pdfs", nargs="*", type=Path, help="real PDFs to time (text layer)")
    parser.add_argument("--ocr-dpi", nargs="*", type=int, default=[150], help="render resolutions to try for OCR")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "results" / "bench_pdf.json")
    args = parser.parse_args()

    speed = []
    for path in args.pdfs:
        data = path.read_bytes()
        row = {"file": path.name}
        for name, extract in (("pypdf", pypdf_text), ("rag", rag_text)):
            text, seconds = timed(extract, data)
            row[f"{name}_chars"] = len(text)
            row[f"{name}_chars_per_s"] = round(len(text) / seconds)
        speed.append(row)
        print(f"{path.name:32} pypdf {row['pypdf_chars_per_s']:>9,} chars/s   rag {row['rag_chars_per_s']:>9,} chars/s")

    accuracy = []
    for seed in range(3):
        data, truth = known_text_pdf(seed)
        row = {"seed": seed, "pypdf_accuracy": round(1 - cer(pypdf_text(data), truth), 4),
               "rag_accuracy": round(1 - cer(rag_text(data), truth), 4)}
        accuracy.append(row)
        print(f"known text #{seed}: accuracy pypdf {row['pypdf_accuracy']:.2%}   rag {row['rag_accuracy']:.2%}")

    ocr_rows = bench_ocr(args.ocr_dpi) if args.ocr_dpi else []
    for row in ocr_rows:
        print(f"OCR at {row['dpi']} dpi: CER {row['cer']:.2%}, {row['cpu_s_per_page']} CPU s/page, "
              f"{row['wall_s_per_page']} s/page wall")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"speed": speed, "accuracy": accuracy, "ocr": ocr_rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
