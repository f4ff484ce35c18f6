"""PDF parser: text layer, reading order, tables, headings, page furniture, limits and bad input.

Every PDF is written by reportlab (or pypdf, for encryption) with known text; OCR cases live in
test_ocr.py.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.loaders import load_file
from rag.ingest.parsers.base import ParseLimits
from rag.testing.parsers import assert_sections_tile as assert_sections_consistent

A4 = (595.27, 841.89)


def load(path: Path, **limits: object) -> Document:
    docs = load_file(path, doc_id="doc-1", source=f"docs/{path.name}", limits=ParseLimits(**limits))
    assert len(docs) == 1
    return docs[0]


def flat(text: str) -> str:
    return " ".join(text.split())



def canvas_pdf(path: Path, draw, pages: int = 1, **options):
    """A PDF whose page ``n`` (1-based) is drawn by ``draw(canvas, n)``."""
    from reportlab.pdfgen import canvas

    pdf = canvas.Canvas(str(path), pagesize=A4, **options)
    for number in range(1, pages + 1):
        draw(pdf, number)
        pdf.showPage()
    pdf.save()
    return path


WORDS = "alpha beta gamma delta epsilon zeta theta kappa lambda sigma omega river stone cloud".split()


def sentence(seed: int, words: int = 12) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)).capitalize() + "."


# --- text layer ----------------------------------------------------------------------------------------


def test_pages_are_sections_and_blank_pages_are_skipped(make_pdf) -> None:
    doc = load(make_pdf(["First page text\nsecond line", "", "Third page text"], title="Annual report"))
    assert doc.title == "Annual report"
    assert [section.page for section in doc.sections] == [1, 3]
    assert doc.text == "First page text\nsecond line\n\nThird page text"
    assert doc.metadata["format"] == "pdf"
    assert_sections_consistent(doc)


def test_untitled_pdf_is_titled_by_stem(make_pdf) -> None:
    assert load(make_pdf(["text"], name="scan-2024.pdf")).title == "scan-2024"


def test_text_layer_is_exact_for_known_text(tmp_path: Path) -> None:
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate

    paragraphs = [sentence(seed, 40) for seed in range(6)]
    path = tmp_path / "known.pdf"
    style = getSampleStyleSheet()["BodyText"]
    SimpleDocTemplate(str(path), pagesize=A4).build([Paragraph(text, style) for text in paragraphs])
    doc = load(path)
    assert flat(doc.text) == flat(" ".join(paragraphs))
    # Wrapped lines of one paragraph stay one paragraph; paragraphs are separated by a blank line.
    assert [flat(part) for part in doc.text.split("\n\n")] == paragraphs


def test_two_columns_are_read_column_by_column(tmp_path: Path) -> None:
    """Lines written row by row across both columns (as some generators do) still read column-wise."""
    left = [sentence(seed, 6) for seed in range(20)]
    right = [sentence(100 + seed, 6) for seed in range(20)]

    def draw(pdf, _):
        pdf.setFont("Helvetica-Bold", 10)
        pdf.drawString(72, 790, "A full-width title above both columns of this page")
        pdf.setFont("Helvetica", 10)
        for row, (one, two) in enumerate(zip(left, right)):
            y = 760 - 13 * row
            pdf.drawString(72, y, one)  # the left column's line, then the right column's on the same row
            pdf.drawString(320, y, two)

    doc = load(canvas_pdf(tmp_path / "columns.pdf", draw))
    text = flat(doc.text)
    assert text.startswith("A full-width title above both columns")
    assert flat(" ".join(left)) in text and flat(" ".join(right)) in text
    assert text.index(right[0]) > text.index(left[-1])


def test_two_frame_layout_keeps_columns_together(tmp_path: Path) -> None:
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph

    path = tmp_path / "frames.pdf"
    width, height = A4
    frames = [Frame(50, 50, (width - 130) / 2, height - 100), Frame(80 + (width - 130) / 2, 50, (width - 130) / 2, height - 100)]
    template = BaseDocTemplate(str(path), pagesize=A4, pageTemplates=[PageTemplate(frames=frames)])
    style = getSampleStyleSheet()["BodyText"]
    paragraphs = [sentence(seed, 60) for seed in range(12)]
    template.build([Paragraph(text, style) for text in paragraphs])
    doc = load(path)
    # Sorting lines by height alone would interleave the two columns' lines.
    assert flat(doc.text) == flat(" ".join(paragraphs))


# --- tables --------------------------------------------------------------------------------------------


def test_ruled_table_becomes_a_table_section_and_leaves_the_text(tmp_path: Path) -> None:
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.platypus import Paragraph, SimpleDocTemplate, Table, TableStyle

    path = tmp_path / "table.pdf"
    style = getSampleStyleSheet()["BodyText"]
    rows = [["Product", "Region", "Units"], ["Widget", "North", "120"], ["Gadget", "South", "75"], ["Gizmo", "East", "9"]]
    table = Table(rows)
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, "black")]))
    SimpleDocTemplate(str(path), pagesize=A4).build(
        [Paragraph("Sales before the table.", style), table, Paragraph("Notes after the table.", style)]
    )
    doc = load(path)
    tables = [section for section in doc.sections if section.table is not None]
    assert len(tables) == 1
    assert tables[0].page == 1
    assert tables[0].text.splitlines() == [
        "| Product | Region | Units |", "|---|---|---|", "| Widget | North | 120 |", "| Gadget | South | 75 |",
        "| Gizmo | East | 9 |",
    ]
    running = " ".join(section.text for section in doc.sections if section.table is None)
    assert "Sales before the table." in running and "Notes after the table." in running
    assert "Widget" not in running and "Gadget" not in running  # not duplicated in the running text
    assert doc.text.index("Sales before") < doc.text.index("| Product") < doc.text.index("Notes after")
    assert_sections_consistent(doc)


def test_a_framed_paragraph_is_not_a_table(tmp_path: Path) -> None:
    def draw(pdf, _):
        pdf.rect(60, 700, 300, 60)
        pdf.drawString(72, 730, "A note inside a box.")

    doc = load(canvas_pdf(tmp_path / "box.pdf", draw))
    assert doc.text == "A note inside a box."
    assert all(section.table is None for section in doc.sections)


# --- page furniture ------------------------------------------------------------------------------------


def test_running_header_and_footer_are_dropped(tmp_path: Path) -> None:
    bodies = {number: [sentence(number * 10 + line) for line in range(5)] for number in range(1, 6)}

    def draw(pdf, number):
        pdf.setFont("Helvetica", 9)
        pdf.drawString(72, 810, "ACME Corporation - Annual Report 2024")
        pdf.drawString(480, 30, f"Page {number} of 5")
        pdf.setFont("Helvetica", 11)
        for line, text in enumerate(bodies[number]):
            pdf.drawString(72, 760 - 14 * line, text)
            if line == 2:
                pdf.drawString(72, 753 - 14 * line, "Summary")  # on every page, but in the body: kept

    doc = load(canvas_pdf(tmp_path / "report.pdf", draw, pages=5))
    assert "ACME Corporation" not in doc.text
    assert "Page " not in doc.text
    assert doc.text.count("Summary") == 5
    for number, lines in bodies.items():
        page_text = next(section.text for section in doc.sections if section.page == number)
        assert [line for line in page_text.splitlines() if line != "Summary"] == lines
    assert [section.page for section in doc.sections] == [1, 2, 3, 4, 5]


def test_dot_leaders_of_a_table_of_contents_are_dropped(tmp_path: Path) -> None:
    def draw(pdf, number):
        if number == 1:
            pdf.drawString(72, 780, "Contents")
            for row, (name, page) in enumerate([("Introduction", 2), ("Installation", 2), ("Usage", 2)]):
                pdf.drawString(72, 750 - 16 * row, f"{name} {'.' * 60} {page}")
            pdf.drawString(72, 690, "Appendix . . . . . . . . . . . . . . . . iv")
        else:
            pdf.drawString(72, 780, "Introduction to the tool and its installation.")

    doc = load(canvas_pdf(tmp_path / "toc.pdf", draw, pages=2))
    assert "...." not in doc.text and ". . . ." not in doc.text
    assert doc.text == "Contents\n\nIntroduction to the tool and its installation."


# --- headings ------------------------------------------------------------------------------------------


def test_headings_come_from_the_outline(tmp_path: Path) -> None:
    outline = [(1, 0, "Getting started"), (1, 1, "Installing"), (2, 0, "Configuration")]

    def draw(pdf, number):
        y = 780
        for page, level, title in outline:
            if page != number:
                continue
            key = f"{page}-{title}"
            pdf.bookmarkHorizontal(key, 0, y + 12)
            pdf.addOutlineEntry(title, key, level=level)
            pdf.drawString(72, y, title)  # the same size as the body: only the outline says it is a heading
            pdf.drawString(72, y - 16, f"Body text about {title.lower()}.")
            y -= 60

    doc = load(canvas_pdf(tmp_path / "outline.pdf", draw, pages=2))
    by_text = {flat(section.text): section for section in doc.sections}
    assert by_text["Getting started Body text about getting started."].headings == ("Getting started",)
    assert by_text["Installing Body text about installing."].headings == ("Getting started", "Installing")
    assert by_text["Configuration Body text about configuration."].headings == ("Configuration",)
    assert by_text["Configuration Body text about configuration."].page == 2


def test_headings_come_from_font_size_without_an_outline(tmp_path: Path) -> None:
    def draw(pdf, _):
        pdf.setFont("Helvetica-Bold", 20)
        pdf.drawString(72, 780, "User Guide")
        pdf.setFont("Helvetica-Bold", 14)
        pdf.drawString(72, 740, "Installation")
        pdf.setFont("Helvetica", 10)
        for line in range(4):
            pdf.drawString(72, 720 - 12 * line, sentence(line))
        pdf.setFont("Helvetica-Bold", 14)
        pdf.drawString(72, 650, "Upgrading")
        pdf.setFont("Helvetica", 10)
        pdf.drawString(72, 630, sentence(9))

    doc = load(canvas_pdf(tmp_path / "guide.pdf", draw))
    assert doc.title == "User Guide"
    paths = {section.headings for section in doc.sections}
    assert ("User Guide", "Installation") in paths and ("User Guide", "Upgrading") in paths
    upgrading = next(section for section in doc.sections if section.headings == ("User Guide", "Upgrading"))
    assert flat(upgrading.text) == f"Upgrading {sentence(9)}"


# --- limits and bad input ------------------------------------------------------------------------------


def test_more_pages_than_max_pages_is_refused(make_pdf) -> None:
    with pytest.raises(LoaderError, match=r"^3 pages, more than ingest.max_pages \(2\)$"):
        load(make_pdf(["one", "two", "three"]), max_pages=2)


def test_blank_pages_have_no_text(make_pdf) -> None:
    with pytest.raises(LoaderError, match=r"^no extractable text \(the pages are blank\)$"):
        load(make_pdf(["", ""]))


def test_encrypted_pdf_needs_a_password(tmp_path: Path) -> None:
    def draw(pdf, _):
        pdf.drawString(72, 800, "hidden")

    with pytest.raises(LoaderError, match=r"^encrypted PDF \(password required\)$"):
        load(canvas_pdf(tmp_path / "secret.pdf", draw, encrypt="user-password"))


def test_pdf_encrypted_by_pypdf_with_a_user_password_is_refused_and_owner_only_is_read(make_pdf, tmp_path: Path) -> None:
    import pypdf

    source = make_pdf(["Quarterly figures"])
    for name, user in (("locked.pdf", "secret"), ("owner-only.pdf", "")):
        writer = pypdf.PdfWriter(clone_from=str(source))
        writer.encrypt(user_password=user, owner_password="owner", algorithm="AES-128")
        with open(tmp_path / name, "wb") as handle:
            writer.write(handle)
    with pytest.raises(LoaderError, match=r"^encrypted PDF \(password required\)$"):
        load(tmp_path / "locked.pdf")
    assert load(tmp_path / "owner-only.pdf").text == "Quarterly figures"


def test_random_bytes_are_not_a_pdf(tmp_path: Path) -> None:
    path = tmp_path / "noise.pdf"
    path.write_bytes(bytes(random.Random(7).randrange(1, 256) for _ in range(4096)))
    with pytest.raises(LoaderError, match=r"^not a PDF \(unrecognised content\)$"):
        load(path)


def test_corrupt_pdf_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "broken.pdf"
    path.write_bytes(b"%PDF-1.7\n" + bytes(random.Random(3).randrange(0, 256) for _ in range(2048)))
    with pytest.raises(LoaderError, match=r"^corrupt PDF: "):
        load(path)


def test_scanned_pdf_with_ocr_never_is_reported(tmp_path: Path) -> None:
    with pytest.raises(LoaderError, match=r"^no extractable text \(scanned PDF; ingest.ocr is never\)$"):
        load(image_only_pdf(tmp_path / "scan.pdf"), ocr="never")


def test_scanned_pdf_without_ocr_installed_says_how_to_install_it(tmp_path: Path, monkeypatch) -> None:
    """A fake: OCR reported missing, as on an installation without the ``ocr`` extra."""
    from rag.ingest.parsers import ocr

    monkeypatch.setattr(ocr, "ocr_unavailable", lambda: "needs rapidocr-onnxruntime: pip install 'rag-platform[ocr]'")
    with pytest.raises(LoaderError, match=r"^no extractable text \(scanned PDF; OCR needs rapidocr-onnxruntime: "
                                          r"pip install 'rag-platform\[ocr\]'\)$"):
        load(image_only_pdf(tmp_path / "scan.pdf"))


def image_only_pdf(path: Path) -> Path:
    """A page with a picture and no text layer (a grey gradient: nothing for OCR to read either)."""
    from PIL import Image
    from reportlab.lib.utils import ImageReader

    picture = Image.linear_gradient("L").resize((64, 64))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")

    def draw(pdf, _):
        pdf.drawImage(ImageReader(io.BytesIO(buffer.getvalue())), 72, 600, 200, 200)

    return canvas_pdf(path, draw)
