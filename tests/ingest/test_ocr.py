"""OCR: scanned PDF pages and images read by RapidOCR, and the images that must be refused.

Scans are made here: known text drawn with Pillow in DejaVu Sans at 150 dpi, embedded in a PDF by
reportlab's ``drawImage`` (no text layer) or saved as PNG, JPEG or TIFF. OCR takes seconds per page
on a small machine, so the images are a few lines each and the tests that run OCR are marked slow.
"""

from __future__ import annotations

import io
import random
import textwrap
from pathlib import Path

import pytest

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.loaders import load_file
from rag.ingest.parsers.base import ParseLimits

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"
DPI = 150
TEXT = (
    "Scanned pages have no text layer, so they are rendered and read by OCR. "
    "Invoice 2024-117 lists 3 items for a total of 1,245.50 euros, due on 15 March 2025."
)

pytestmark = pytest.mark.skipif(not Path(FONT).exists(), reason="needs the DejaVu Sans font (fonts-dejavu-core)")


def load(path: Path, **limits: object) -> Document:
    docs = load_file(path, doc_id="doc-1", source=f"docs/{path.name}", limits=ParseLimits(**limits))
    assert len(docs) == 1
    return docs[0]


def scan(text: str, *, width_px: int = 1100, points: float = 11) -> object:
    """Known text as a grey-level image, as a 150-dpi scanner would give it."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.truetype(FONT, round(points * DPI / 72))
    lines = textwrap.wrap(text, 72)
    step = round(points * 1.6 * DPI / 72)
    image = Image.new("L", (width_px, step * (len(lines) + 2)), 255)
    draw = ImageDraw.Draw(image)
    for number, line in enumerate(lines):
        draw.text((40, step * (number + 1)), line, font=font, fill=0)
    return image


def cer(got: str, want: str) -> float:
    """Character error rate: Levenshtein distance over the reference length (whitespace collapsed)."""
    got, want = " ".join(got.split()), " ".join(want.split())
    previous = list(range(len(want) + 1))
    for i, a in enumerate(got, 1):
        current = [i]
        for j, b in enumerate(want, 1):
            current.append(min(previous[j] + 1, current[j - 1] + 1, previous[j - 1] + (a != b)))
        previous = current
    return previous[-1] / len(want)


def image_bytes(image, fmt: str, **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


# --- scanned PDF pages ---------------------------------------------------------------------------------


@pytest.mark.slow
def test_scanned_page_is_read_by_ocr_next_to_a_text_page(tmp_path: Path) -> None:
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    image = scan(TEXT)
    path = tmp_path / "mixed.pdf"
    pdf = canvas.Canvas(str(path), pagesize=(595.27, 841.89))
    pdf.drawString(72, 780, "A page with a text layer.")
    pdf.showPage()
    width, height = image.size[0] * 72 / DPI, image.size[1] * 72 / DPI
    pdf.drawImage(ImageReader(image), 36, 800 - height, width, height)
    pdf.showPage()
    pdf.save()

    doc = load(path)
    assert [(section.page, dict(section.location)) for section in doc.sections] == [(1, {}), (2, {"ocr": True})]
    assert doc.sections[0].text == "A page with a text layer."
    assert cer(doc.sections[1].text, TEXT) <= 0.03


# --- images --------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize(("fmt", "name"), [("PNG", "note.png"), ("JPEG", "note.jpg")])
def test_image_text_is_read_by_ocr(tmp_path: Path, fmt: str, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(image_bytes(scan(TEXT), fmt, **({"quality": 90} if fmt == "JPEG" else {})))
    doc = load(path)
    assert cer(doc.text, TEXT) <= 0.03
    assert doc.title == "note"
    assert doc.metadata["format"] == "image"
    assert [dict(section.location) for section in doc.sections] == [{"ocr": True}]


@pytest.mark.slow
def test_multi_frame_tiff_is_one_page_per_frame(tmp_path: Path) -> None:
    first, second = scan("First frame of the fax."), scan("Second frame, the signature page.")
    path = tmp_path / "fax.tiff"
    path.write_bytes(image_bytes(first, "TIFF", save_all=True, append_images=[second]))
    doc = load(path)
    assert [section.page for section in doc.sections] == [1, 2]
    assert cer(doc.sections[0].text, "First frame of the fax.") <= 0.05
    assert cer(doc.sections[1].text, "Second frame, the signature page.") <= 0.05
    assert doc.metadata["frames"] == 2


@pytest.mark.slow
def test_image_of_noise_has_no_text(tmp_path: Path) -> None:
    from PIL import Image

    rng = random.Random(5)
    noise = Image.frombytes("L", (400, 300), bytes(rng.randrange(256) for _ in range(400 * 300)))
    path = tmp_path / "noise.png"
    path.write_bytes(image_bytes(noise, "PNG"))
    with pytest.raises(LoaderError, match=r"^no text found in the image \(OCR\)$"):
        load(path)


def test_tiff_with_more_frames_than_max_pages_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    frames = [Image.new("L", (32, 32), 255) for _ in range(3)]
    path = tmp_path / "many.tif"
    path.write_bytes(image_bytes(frames[0], "TIFF", save_all=True, append_images=frames[1:]))
    with pytest.raises(LoaderError, match=r"^3 frames, more than ingest.max_pages \(2\)$"):
        load(path, max_pages=2)


def test_huge_image_is_refused_before_decoding(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "poster.png"
    path.write_bytes(image_bytes(Image.new("1", (9000, 9000), 1), "PNG"))  # 81 MP, a few KiB compressed
    with pytest.raises(LoaderError, match=r"^image too large: 9000 x 9000 pixels \(more than 60 megapixels\)$"):
        load(path)


def test_decompression_bomb_is_refused(tmp_path: Path) -> None:
    from PIL import Image

    path = tmp_path / "bomb.png"
    path.write_bytes(image_bytes(Image.new("1", (14000, 14000), 1), "PNG"))  # past Pillow's own guard
    with pytest.raises(LoaderError, match=r"^image too large"):
        load(path)


def test_image_with_ocr_never_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "note.png"
    path.write_bytes(image_bytes(scan("text"), "PNG"))
    with pytest.raises(LoaderError, match=r"^images are read by OCR, and ingest.ocr is never$"):
        load(path, ocr="never")


def test_corrupt_image_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(random.Random(1).randrange(256) for _ in range(512)))
    with pytest.raises(LoaderError, match=r"^corrupt image: "):
        load(path)


def test_text_named_as_image_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.png"
    path.write_text("just some text", encoding="utf-8")
    with pytest.raises(LoaderError, match=r"^not a PNG, JPEG or TIFF image \(unrecognised content\)$"):
        load(path)
