"""Where OCR time goes: text detection vs line recognition on a dense 150-dpi page, by thread count.

Renders a US-letter page of 45 known text lines at 150 dpi (DejaVu Sans, matplotlib's bundled copy), then
runs the RapidOCR engine the parsers use (PP-OCRv4 detection and recognition from the
``rapidocr-onnxruntime`` wheel, angle classifier off) with 1 and 2 ONNX Runtime threads, and times the
recognition model on one long line whole and cut in two halves (its cost grows faster than the line's
width). Prints a table and writes ``benchmarks/results/ocr.json``.

    python -m benchmarks.bench_ocr [--threads 1 2] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import table, write_result

LINES = 45
WORDS = "The quarterly report shows revenue growth in the western region while costs stayed flat across".split()


def _font(size: int) -> Any:  # a PIL FreeTypeFont; PIL is imported on first use
    import matplotlib
    from PIL import ImageFont

    return ImageFont.truetype(str(Path(matplotlib.__file__).parent / "mpl-data/fonts/ttf/DejaVuSans.ttf"), size)


def dense_page() -> np.ndarray:
    """A 150-dpi letter page (1275 x 1650 px) of 45 lines of 11 words, as grey levels."""
    from PIL import Image, ImageDraw

    page = Image.new("L", (1275, 1650), 255)
    draw = ImageDraw.Draw(page)
    for index in range(LINES):
        line = " ".join(WORDS[(index * 3 + j) % len(WORDS)] for j in range(11))
        draw.text((90, 70 + index * 34), line, fill=0, font=_font(20))
    return np.asarray(page)


def one_line() -> np.ndarray:
    from PIL import Image, ImageDraw

    image = Image.new("L", (1100, 30), 255)
    ImageDraw.Draw(image).text((5, 3), " ".join(WORDS[:14]), fill=0, font=_font(20))
    return np.asarray(image.convert("RGB"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    from rapidocr_onnxruntime import RapidOCR

    page, line = dense_page(), one_line()
    rows, results = [], []
    for threads in args.threads:
        engine = RapidOCR(use_cls=False, intra_op_num_threads=threads, inter_op_num_threads=1)
        engine(page[:200])  # load and warm both models
        best = None
        for _ in range(args.repeat):
            wall, cpu = time.perf_counter(), time.process_time()
            found, (detect, _, recognise) = engine(page)
            run = (time.perf_counter() - wall, time.process_time() - cpu, detect, recognise, len(found or ()))
            best = run if best is None or run[0] < best[0] else best
        halves = [line[:, : line.shape[1] // 2], line[:, line.shape[1] // 2 :]]
        timings = {}
        for label, pieces in (("whole line", [line]), ("two halves", halves)):
            start = time.perf_counter()
            for _ in range(3):
                engine.text_rec(pieces)
            timings[label] = (time.perf_counter() - start) / 3 * 1000
        result = {
            "threads": threads, "page_wall_s": round(best[0], 2), "page_cpu_s": round(best[1], 2),
            "detect_s": round(best[2], 2), "recognise_s": round(best[3], 2), "lines_found": best[4],
            "line_ms_whole": round(timings["whole line"]), "line_ms_halves": round(timings["two halves"]),
        }
        results.append(result)
        rows.append([threads, result["page_wall_s"], result["page_cpu_s"], result["detect_s"], result["recognise_s"],
                     result["lines_found"], result["line_ms_whole"], result["line_ms_halves"]])
    print(table(["threads", "page wall s", "page CPU s", "detect s", "recognise s", "lines", "line ms", "halves ms"], rows))
    write_result("ocr", {"page": "150 dpi letter, 45 lines of 11 words", "load": os.getloadavg(), "results": results})


if __name__ == "__main__":
    main()
