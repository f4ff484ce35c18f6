"""OCR of page images with RapidOCR (PP-OCRv4 models shipped in the ``rapidocr-onnxruntime`` wheel, offline).

The engine loads its ONNX models once per process, on first use (about a second), and is shared by
the PDF parser (pages without a text layer) and the image parser. Recognised lines come back as
:class:`~rag.ingest.parsers.layout.Line` values in page units, so OCR text goes through the same
reading-order logic as a PDF's text layer.
"""

from __future__ import annotations

import logging
import os
import threading
from typing import TYPE_CHECKING, Any

from rag.ingest.parsers.base import missing_module
from rag.ingest.parsers.layout import Line, reading_order, rows_of

if TYPE_CHECKING:
    from PIL.Image import Image

log = logging.getLogger(__name__)

OCR_MODULE = "rapidocr_onnxruntime"
OCR_EXTRA = "ocr"
# Recognised text below this confidence is mostly noise read into texture or pictures.
MIN_SCORE = 0.5
# ONNX Runtime threads per model: its default (every core) oversubscribes a machine that is also
# embedding; four is where RapidOCR's detector stops getting faster.
_MAX_THREADS = 4

_engine: Any = None
_engine_lock = threading.Lock()
# One recognition at a time: a second would only compete for the same cores.
_run_lock = threading.Lock()


def ocr_unavailable() -> str | None:
    """``None`` when OCR can run here, else why not, with the install hint."""
    return missing_module(OCR_MODULE, OCR_EXTRA, "rapidocr-onnxruntime")


def _get_engine() -> Any:
    """The process's RapidOCR engine, created on first use."""
    global _engine  # noqa: PLW0603 - one engine per process, built on first use under the lock
    with _engine_lock:
        if _engine is None:
            from rapidocr_onnxruntime import RapidOCR

            threads = max(1, min(os.cpu_count() or 1, _MAX_THREADS))
            # The angle classifier only fixes upside-down lines, and costs a fifth of the time.
            _engine = RapidOCR(use_cls=False, intra_op_num_threads=threads, inter_op_num_threads=1)
            log.debug("RapidOCR engine loaded (%d threads)", threads)
        return _engine


def recognise(image: Image, scale: float = 1.0) -> list[Line]:
    """The text lines of ``image`` in reading order.

    Args:
        image: a Pillow image (any mode; it is read as grey levels).
        scale: pixels per page unit, so boxes come back in page units (``dpi / 72`` for a PDF page
            rendered at ``dpi``, 1 for an image file).

    Returns:
        The recognised lines, each with its box; empty when the image holds no legible text.
    """
    import numpy as np

    pixels = np.asarray(image.convert("L"))
    engine = _get_engine()
    with _run_lock:
        result, _ = engine(pixels, return_word_box=True)
    lines = []
    for box, text, score, *chars in result or ():
        if float(score) < MIN_SCORE:
            continue
        xs = [point[0] for point in box]
        ys = [point[1] for point in box]
        if len(chars) >= 2 and len(chars[0]) == len(chars[1]):
            text = _with_spaces(pixels, (min(xs), min(ys), max(xs), max(ys)), chars[1], chars[0]) or text
        text = " ".join(str(text).split())
        if text:
            top, bottom = min(ys) / scale, max(ys) / scale
            lines.append(Line(text=text, x0=min(xs) / scale, top=top, x1=max(xs) / scale, bottom=bottom, size=bottom - top))
    # Rows top to bottom, each left to right; then columns kept together, as for a text layer.
    return reading_order([line for row in rows_of(lines) for line in row])


def _with_spaces(pixels: Any, box: tuple[float, float, float, float], chars: list[str], boxes: list[Any]) -> str:
    """A line's characters with the word spaces the recogniser dropped put back.

    PP-OCR's recognition model, trained mostly on Chinese, often omits the spaces of Latin text
    ("Theparserlayer"). The line's own pixels tell where they were: a blank vertical strip wider than
    the letter gaps is a word space (see :func:`_word_gap`). A space goes between two characters whose
    estimated centres lie on either side of such a strip.

    Returns:
        The text with spaces, or ``""`` when the line cannot be measured (the caller keeps its text).
    """
    import numpy as np

    x0, y0, x1, y1 = (max(int(value), 0) for value in box)
    crop = pixels[y0:y1 + 1, x0:x1 + 1]
    if crop.size == 0 or int(crop.max()) - int(crop.min()) < 48:
        return ""
    ink = crop < (int(crop.max()) + int(crop.min())) / 2
    rows = np.flatnonzero(ink.any(axis=1))
    if not len(rows):
        return ""
    height = rows[-1] - rows[0] + 1
    runs: list[tuple[int, int]] = []  # (width, end column) of each blank strip between inked columns
    run = 0
    for index, inked in enumerate(ink.any(axis=0)):
        if not inked:
            run += 1
            continue
        if run and index - run > 0:
            runs.append((run, index))
        run = 0
    threshold = _word_gap(sorted(width for width, _ in runs), height)
    gaps = [x0 + end - width / 2 for width, end in runs if width >= threshold]
    centres = [sum(point[0] for point in char_box) / len(char_box) for char_box in boxes]
    out: list[str] = []
    for index, char in enumerate(chars):
        if index and char != " " and out and out[-1] != " ":
            left, right = centres[index - 1], centres[index]
            if any(left < gap < right for gap in gaps):
                out.append(" ")
        out.append(char)
    return "".join(out)


def _word_gap(widths: list[int], height: int) -> float:
    """The narrowest blank strip that is a word space, given a line's blank-strip widths (sorted).

    The widths fall into two groups, letter gaps and word spaces; the split that best separates them
    (largest between-group variance, as Otsu's threshold) is taken when the groups clearly differ,
    else a third of the ink height (a space is about a third of an em).
    """
    fallback = max(2.0, height / 3)
    if len(widths) < 4:
        return fallback
    best, split = 0.0, 0
    total = sum(widths)
    for index in range(1, len(widths)):
        low = sum(widths[:index]) / index
        high = (total - low * index) / (len(widths) - index)
        score = index * (len(widths) - index) * (high - low) ** 2
        if score > best:
            best, split = score, index
    low_mean = sum(widths[:split]) / split
    high_mean = (total - low_mean * split) / (len(widths) - split)
    if high_mean < 1.8 * max(low_mean, 1.0):
        return fallback
    return max(2.0, (widths[split - 1] + widths[split]) / 2)
