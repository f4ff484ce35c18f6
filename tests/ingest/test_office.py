"""Office documents, spreadsheets and CSV: every input file is made here by the real library
(python-docx, python-pptx, openpyxl, msoffcrypto-tool, the csv module), then read through the parsers."""

from __future__ import annotations

import io
import json
import zipfile
from datetime import UTC, datetime
from pathlib import Path

import pytest

from rag.core.errors import LoaderError
from rag.core.types import Document, Section
from rag.ingest.loaders import load_file
from rag.ingest.parsers import ParseContext, ParseLimits, Parser, ParserRegistry
from rag.testing.parsers import ParserContractTests, assert_sections_tile

CREATED = datetime(2023, 4, 5, 6, 7, 8, tzinfo=UTC)
SAVED = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)


def parse(path: Path, limits: ParseLimits | None = None) -> Document:
    """The one document the registry's parser for ``path`` makes of it."""
    ctx = ParseContext(name=path.name, doc_id="doc-1", source=f"docs/{path.name}", limits=limits or ParseLimits())
    docs = ParserRegistry(plugins=False).parse(path.read_bytes(), ctx)
    assert len(docs) == 1
    assert_sections_tile(docs[0])
    return docs[0]



def tables(doc: Document) -> list[Section]:
    return [section for section in doc.sections if section.table is not None]


def section_with(doc: Document, text: str) -> Section:
    return next(section for section in doc.sections if text in section.text)


# --------------------------------------------------------------------------------------------------
# DOCX


def make_docx(path: Path, *, title: str = "Quarterly plan") -> Path:
    import docx

    document = docx.Document()
    props = document.core_properties
    props.title, props.author, props.created, props.modified = title, "Ada Lovelace", CREATED, SAVED
    document.add_heading("Plan 2024", 0)  # the Title style
    document.add_heading("Introduction", 1)
    document.add_paragraph("We ship the widget in spring.")
    document.add_paragraph("Design", style="List Bullet")
    document.add_paragraph("Build", style="List Bullet")
    document.add_paragraph("Prototype", style="List Bullet 2")
    document.add_heading("Budget", 2)
    document.add_paragraph("Costs by team:")
    table = document.add_table(rows=3, cols=2)
    for row, cells in zip(table.rows, [("Team", "Cost"), ("Design", "1200"), ("Build", "3400")]):
        for cell, value in zip(row.cells, cells):
            cell.text = value
    document.add_paragraph("Order of work:")
    document.add_paragraph("Hire", style="List Number")
    document.add_paragraph("Train", style="List Number")
    document.add_heading("Risks", 1)
    document.add_paragraph("Suppliers may be late.")
    document.save(path)
    return path


def test_docx_reads_headings_lists_and_tables_in_document_order(tmp_path: Path) -> None:
    doc = parse(make_docx(tmp_path / "plan.docx"))
    text = doc.text
    assert text.index("Costs by team:") < text.index("| Team | Cost |") < text.index("Order of work:")
    assert "- Design\n- Build\n  - Prototype" in text
    assert "1. Hire\n2. Train" in text
    assert section_with(doc, "We ship the widget").headings == ("Plan 2024", "Introduction")
    assert section_with(doc, "Order of work:").headings == ("Plan 2024", "Introduction", "Budget")
    assert section_with(doc, "Suppliers may be late").headings == ("Plan 2024", "Risks")
    [table] = tables(doc)
    assert table.text == "| Team | Cost |\n|---|---|\n| Design | 1200 |\n| Build | 3400 |"
    assert table.headings == ("Plan 2024", "Introduction", "Budget")
    assert table.table is not None and table.table.first_row == 2


def test_docx_core_properties_become_title_and_metadata(tmp_path: Path) -> None:
    doc = parse(make_docx(tmp_path / "plan.docx"))
    assert doc.title == "Quarterly plan"
    assert doc.metadata["format"] == "docx"
    assert doc.metadata["author"] == "Ada Lovelace"
    assert doc.metadata["created"] == "2023-04-05T06:07:08Z"
    assert doc.metadata["last_modified"] == "2024-01-02T03:04:05Z"


def test_docx_title_falls_back_to_first_heading_then_stem(tmp_path: Path) -> None:
    import docx

    assert parse(make_docx(tmp_path / "plan.docx", title="")).title == "Plan 2024"
    document = docx.Document()
    document.add_paragraph("Just a note.")
    document.save(tmp_path / "note.docx")
    assert parse(tmp_path / "note.docx").title == "note"


def test_docx_heading_from_a_derived_style_and_from_an_outline_level(tmp_path: Path) -> None:
    import docx
    from docx.enum.style import WD_STYLE_TYPE
    from docx.oxml import OxmlElement
    from docx.oxml.ns import qn

    document = docx.Document()
    chapter = document.styles.add_style("Chapter", WD_STYLE_TYPE.PARAGRAPH)
    chapter.base_style = document.styles["Heading 1"]
    document.add_paragraph("Getting started", style="Chapter")
    document.add_paragraph("Install it.")
    outlined = document.add_paragraph("Requirements")  # Normal style, outline level 2 set on the paragraph
    level = OxmlElement("w:outlineLvl")
    level.set(qn("w:val"), "1")
    outlined._p.get_or_add_pPr().append(level)
    document.add_paragraph("Python 3.11.")
    document.save(tmp_path / "guide.docx")
    doc = parse(tmp_path / "guide.docx")
    assert section_with(doc, "Install it.").headings == ("Getting started",)
    assert section_with(doc, "Python 3.11.").headings == ("Getting started", "Requirements")
    assert doc.title == "Getting started"


def test_docx_nested_table_text_stays_in_its_cell(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    outer = document.add_table(rows=2, cols=2)
    outer.cell(0, 0).text, outer.cell(0, 1).text, outer.cell(1, 0).text = "Item", "Details", "Pump"
    inner = outer.cell(1, 1).add_table(rows=1, cols=2)
    inner.cell(0, 0).text, inner.cell(0, 1).text = "flow 40 l/min", "spare seal kit"
    document.save(tmp_path / "parts.docx")
    [table] = tables(parse(tmp_path / "parts.docx"))
    assert table.text == "| Item | Details |\n|---|---|\n| Pump | flow 40 l/min spare seal kit |"


def test_docx_reads_text_inside_block_content_controls(tmp_path: Path) -> None:
    import docx
    from docx.oxml import OxmlElement

    document = docx.Document()
    document.add_paragraph("Before the control.")
    cover = document.add_paragraph("Cover page abstract")
    document.add_paragraph("After the control.")
    # python-docx cannot add a content control (w:sdt), so wrap its own paragraph in one, as Word's cover
    # pages and templates do; python-docx's iter_inner_content() would skip it.
    control, content = OxmlElement("w:sdt"), OxmlElement("w:sdtContent")
    cover._p.addprevious(control)
    control.append(content)
    content.append(cover._p)
    document.save(tmp_path / "cover.docx")
    text = parse(tmp_path / "cover.docx").text
    assert text == "Before the control.\n\nCover page abstract\n\nAfter the control."


# --------------------------------------------------------------------------------------------------
# PPTX


def make_pptx(path: Path) -> Path:
    import pptx
    from pptx.util import Inches

    presentation = pptx.Presentation()
    presentation.core_properties.author = "Grace Hopper"
    cover = presentation.slides.add_slide(presentation.slide_layouts[0])
    cover.shapes.title.text = "Launch review"
    cover.placeholders[1].text = "March 2024"

    body = presentation.slides.add_slide(presentation.slide_layouts[1])
    body.shapes.title.text = "Results"
    body.placeholders[1].text_frame.text = "Sales grew 12%"
    group = body.shapes.add_group_shape()
    group.shapes.add_textbox(Inches(1), Inches(5), Inches(3), Inches(1)).text_frame.text = "Grouped remark"
    grid = body.shapes.add_table(3, 2, Inches(5), Inches(5), Inches(4), Inches(1)).table
    for r, cells in enumerate([("Region", "Units"), ("North", "40"), ("South", "25")]):
        for c, value in enumerate(cells):
            grid.cell(r, c).text = value
    body.notes_slide.notes_text_frame.text = "Mention the supplier delay."

    blank = presentation.slides.add_slide(presentation.slide_layouts[6])
    blank.shapes.add_textbox(Inches(1), Inches(1), Inches(4), Inches(1)).text_frame.text = "Questions welcome"
    presentation.save(path)
    return path


def test_pptx_one_section_per_slide_with_title_text_tables_and_notes(tmp_path: Path) -> None:
    doc = parse(make_pptx(tmp_path / "review.pptx"))
    assert doc.title == "Launch review"  # no core title: the first slide's
    assert doc.metadata["author"] == "Grace Hopper"
    assert all(section.location.get("slide") in (1, 2, 3) for section in doc.sections)
    cover = section_with(doc, "March 2024")
    assert cover.location == {"slide": 1} and cover.headings == ("Launch review",)
    assert cover.text.startswith("Launch review")
    results = [section for section in doc.sections if section.location == {"slide": 2}]
    text = "\n".join(section.text for section in results)
    assert "Sales grew 12%" in text and "Grouped remark" in text and "Notes: Mention the supplier delay." in text
    [table] = tables(doc)
    assert table.location == {"slide": 2} and table.headings == ("Results",)
    assert table.text == "| Region | Units |\n|---|---|\n| North | 40 |\n| South | 25 |"
    untitled = section_with(doc, "Questions welcome")
    assert untitled.location == {"slide": 3} and untitled.headings == ()


def test_pptx_every_chunk_carries_its_slide(tmp_path: Path, tokenizer) -> None:
    from rag.ingest.chunking import SlidingWindowChunker

    path = make_pptx(tmp_path / "review.pptx")
    [doc] = load_file(path, doc_id="review", source="review.pptx")
    spans = SlidingWindowChunker(tokenizer).chunk(doc)
    assert {span.location["slide"] for span in spans} == {1, 2, 3}
    assert next(span for span in spans if "Notes:" in span.text).location["slide"] == 2


# --------------------------------------------------------------------------------------------------
# XLSX


def make_xlsx(path: Path) -> Path:
    import openpyxl

    workbook = openpyxl.Workbook()
    workbook.properties.creator = "Edsger Dijkstra"
    sales = workbook.active
    sales.title = "Sales"
    sales.append(["Q1 report"])  # row 1: a title above the table
    sales.append([])  # row 2
    sales.append(["Region", "Amount", "Ratio", "Day", "Shipped"])  # row 3: the header
    sales.append(["North", 1200.0, 0.1 + 0.2, datetime(2024, 3, 5), datetime(2024, 3, 5, 14, 30)])  # row 4
    sales.append(["South", 75, 0.25, datetime(2024, 3, 6), True])  # row 5
    sales.append([])  # row 6: a blank separator
    sales.append(["West", 10, None, None, False])  # row 7
    workbook.create_sheet("Empty")
    lookup = workbook.create_sheet("Lookup")
    lookup.append(["code", "label"])
    lookup.append(["x1", "internal only"])
    lookup.sheet_state = "hidden"
    notes = workbook.create_sheet("Notes")
    notes["B3"], notes["B4"] = "Remarks", "Figures are provisional"  # a table that starts at B3
    workbook.save(path)
    return path


def test_xlsx_sheets_become_tables_with_spreadsheet_row_numbers(tmp_path: Path) -> None:
    doc = parse(make_xlsx(tmp_path / "sales.xlsx"))
    assert doc.title == "sales" and doc.metadata["author"] == "Edsger Dijkstra"
    sales = [section for section in tables(doc) if section.location == {"sheet": "Sales"}]
    assert [(s.table.name, s.table.first_row) for s in sales] == [("Sales", 4), ("Sales", 7)]
    header = "| Region | Amount | Ratio | Day | Shipped |\n|---|---|---|---|---|\n"
    assert sales[0].text == header + (
        "| North | 1200 | 0.3 | 2024-03-05 | 2024-03-05T14:30:00 |\n| South | 75 | 0.25 | 2024-03-06 | TRUE |"
    )
    assert sales[1].text == header + "| West | 10 |  |  | FALSE |"
    assert all(s.headings == ("Sales",) for s in sales)
    title = section_with(doc, "Q1 report")
    assert title.table is None and title.location == {"sheet": "Sales"}
    [notes] = [section for section in tables(doc) if section.location == {"sheet": "Notes"}]
    assert notes.text == "| Remarks |\n|---|\n| Figures are provisional |" and notes.table.first_row == 4
    assert "internal only" not in doc.text  # the hidden sheet


def test_xlsx_sheet_past_max_rows_stops_reading_at_the_limit(tmp_path: Path, monkeypatch) -> None:
    import openpyxl

    from rag.ingest.parsers import xlsx

    workbook = openpyxl.Workbook()
    workbook.active.title = "Big"
    for number in range(5000):
        workbook.active.append([number, f"item {number}"])
    workbook.save(tmp_path / "big.xlsx")
    converted: list[object] = []

    def counting_cell_text(value: object) -> str:
        """A spy, not a fake: counts the cells converted, then converts them as the parser does."""
        converted.append(value)
        return original(value)

    original = xlsx.cell_text
    monkeypatch.setattr(xlsx, "cell_text", counting_cell_text)
    with pytest.raises(LoaderError, match=r"^sheet 'Big' has more than 100 rows \(ingest\.max_rows\)$"):
        parse(tmp_path / "big.xlsx", ParseLimits(max_rows=100))
    assert len(converted) == 100 * 2  # the rows past the limit were never read


def test_empty_workbook_has_no_text_content(tmp_path: Path) -> None:
    import openpyxl

    openpyxl.Workbook().save(tmp_path / "empty.xlsx")
    with pytest.raises(LoaderError, match=r"^no text content$"):
        parse(tmp_path / "empty.xlsx")


# --------------------------------------------------------------------------------------------------
# CSV / TSV


def write_csv(path: Path, rows: list[list[object]], *, delimiter: str = ",", encoding: str = "utf-8") -> Path:
    import csv

    with path.open("w", encoding=encoding, newline="") as handle:
        csv.writer(handle, delimiter=delimiter).writerows(rows)
    return path


def test_csv_semicolon_delimiter_is_sniffed_and_rows_keep_their_numbers(tmp_path: Path) -> None:
    path = write_csv(
        tmp_path / "prices.csv",
        [["product", "price", "note"], ["tea", "3,50", "loose; green"], ["coffee", "4,20"], [], ["cocoa", "2,10", ""]],
        delimiter=";",
    )
    doc = parse(path)
    assert doc.metadata["format"] == "csv" and doc.title == "prices"
    first, second = tables(doc)
    assert first.text == "| product | price | note |\n|---|---|---|\n| tea | 3,50 | loose; green |\n| coffee | 4,20 |  |"
    assert (first.table.first_row, second.table.first_row) == (2, 5)
    assert second.text.endswith("| cocoa | 2,10 |  |")


def test_tsv_splits_on_tabs(tmp_path: Path) -> None:
    doc = parse(write_csv(tmp_path / "people.tsv", [["name", "city"], ["Ann, Jr.", "Oslo"]], delimiter="\t"))
    assert tables(doc)[0].text == "| name | city |\n|---|---|\n| Ann, Jr. | Oslo |"


def test_csv_excel_sep_line_sets_the_delimiter(tmp_path: Path) -> None:
    path = tmp_path / "export.csv"
    path.write_text("sep=|\nname|score\nAnn|3\n", encoding="utf-8")
    [table] = tables(parse(path))
    assert table.text == "| name | score |\n|---|---|\n| Ann | 3 |" and table.table.first_row == 2


def test_latin1_csv_is_decoded(tmp_path: Path) -> None:
    dishes = [["plat", "prix", "remarque"], ["crème brûlée", "7", "préparée à la maison"], ["café", "2", "très serré"],
              ["thé glacé", "3", "pêche ou citron"], ["gâteau à l'orange", "5", "servi tiède, crème fraîche"]]
    path = write_csv(tmp_path / "menu.csv", dishes, encoding="latin-1")
    doc = parse(path)
    assert "| crème brûlée | 7 | préparée à la maison |" in doc.text and "| café | 2 | très serré |" in doc.text
    assert doc.metadata["encoding"] != "utf-8"


def test_csv_past_max_rows_fails(tmp_path: Path) -> None:
    path = write_csv(tmp_path / "log.csv", [["n"], *([i] for i in range(500))])
    with pytest.raises(LoaderError, match=r"^more than 100 rows \(ingest\.max_rows\)$"):
        parse(path, ParseLimits(max_rows=100))


# --------------------------------------------------------------------------------------------------
# Bad input, through load_file as ingest calls it


def test_corrupt_office_zip(tmp_path: Path) -> None:
    data = make_docx(tmp_path / "plan.docx").read_bytes()
    (tmp_path / "cut.docx").write_bytes(data[: len(data) // 2])
    with pytest.raises(LoaderError, match=r"^corrupt Word document: "):
        load_file(tmp_path / "cut.docx", doc_id="cut", source="cut.docx")


def test_zip_that_is_not_a_word_package(tmp_path: Path) -> None:
    make_pptx(tmp_path / "deck.docx")  # a presentation saved under the wrong suffix
    with pytest.raises(LoaderError, match=r"^corrupt Word document: .*not a Word file") as caught:
        load_file(tmp_path / "deck.docx", doc_id="deck", source="deck.docx")
    assert "BytesIO" not in str(caught.value)


def test_docx_zip_bomb_is_refused_before_python_docx_reads_it(tmp_path: Path) -> None:
    make_docx(tmp_path / "plan.docx")
    bomb = tmp_path / "bomb.docx"
    with zipfile.ZipFile(tmp_path / "plan.docx") as source, zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as out:
        for item in source.infolist():
            out.writestr(item, source.read(item))
        out.writestr("word/media/padding.bin", b"\0" * (4 * 1024 * 1024))  # 4 MiB inflating from ~4 KiB
    assert bomb.stat().st_size < 64 * 1024
    with pytest.raises(LoaderError, match=r"^Word document unpacks to more than ingest\.max_unpacked_mb \(1 MiB\)$"):
        load_file(bomb, doc_id="bomb", source="bomb.docx", limits=ParseLimits(max_unpacked_mb=1))


def test_encrypted_office_file_needs_a_password(tmp_path: Path) -> None:
    from msoffcrypto.format.ooxml import OOXMLFile

    plain = io.BytesIO(make_xlsx(tmp_path / "sales.xlsx").read_bytes())
    encrypted = io.BytesIO()
    OOXMLFile(plain).encrypt("secret", encrypted)
    (tmp_path / "locked.xlsx").write_bytes(encrypted.getvalue())
    with pytest.raises(LoaderError, match=r"^encrypted Excel workbook \(password required\)$"):
        load_file(tmp_path / "locked.xlsx", doc_id="locked", source="locked.xlsx")


def test_non_zip_content_is_refused_by_sniffing(tmp_path: Path) -> None:
    (tmp_path / "notes.pptx").write_text("just some text", encoding="utf-8")
    with pytest.raises(LoaderError, match=r"^not a PowerPoint presentation \(unrecognised content\)$"):
        load_file(tmp_path / "notes.pptx", doc_id="notes", source="notes.pptx")


# --------------------------------------------------------------------------------------------------
# End to end and listing


def test_load_file_reads_every_office_format(tmp_path: Path) -> None:
    paths = [make_docx(tmp_path / "plan.docx"), make_pptx(tmp_path / "review.pptx"), make_xlsx(tmp_path / "sales.xlsx"),
             write_csv(tmp_path / "t.csv", [["a", "b"], [1, 2]])]
    for path in paths:
        [doc] = load_file(path, doc_id=path.name, source=f"docs/{path.name}", metadata={"team": "ops"})
        assert doc.metadata["format"] == path.suffix[1:] and doc.metadata["team"] == "ops"
        assert doc.metadata["modified"].endswith("Z") and doc.source == f"docs/{path.name}"


def test_rag_formats_lists_the_office_parsers() -> None:
    from typer.testing import CliRunner

    from rag.cli import app

    result = CliRunner().invoke(app, ["formats", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["docx"]["suffixes"] == [".docx"] and rows["pptx"]["suffixes"] == [".pptx"]
    assert rows["xlsx"]["suffixes"] == [".xlsx"] and rows["csv"]["suffixes"] == [".csv", ".tsv"]
    assert all(rows[name]["available"] for name in ("docx", "pptx", "xlsx", "csv"))


# --------------------------------------------------------------------------------------------------
# The shipped parser contract, run against each Office parser with a real file


class TestDocxContract(ParserContractTests):
    @pytest.fixture
    def parser(self) -> Parser:
        return ParserRegistry(plugins=False).get("docx")

    @pytest.fixture
    def sample(self, tmp_path: Path) -> tuple[str, bytes]:
        return "plan.docx", make_docx(tmp_path / "plan.docx").read_bytes()


class TestPptxContract(ParserContractTests):
    @pytest.fixture
    def parser(self) -> Parser:
        return ParserRegistry(plugins=False).get("pptx")

    @pytest.fixture
    def sample(self, tmp_path: Path) -> tuple[str, bytes]:
        return "review.pptx", make_pptx(tmp_path / "review.pptx").read_bytes()


class TestXlsxContract(ParserContractTests):
    @pytest.fixture
    def parser(self) -> Parser:
        return ParserRegistry(plugins=False).get("xlsx")

    @pytest.fixture
    def sample(self, tmp_path: Path) -> tuple[str, bytes]:
        return "sales.xlsx", make_xlsx(tmp_path / "sales.xlsx").read_bytes()


class TestCsvContract(ParserContractTests):
    @pytest.fixture
    def parser(self) -> Parser:
        return ParserRegistry(plugins=False).get("csv")

    @pytest.fixture
    def sample(self, tmp_path: Path) -> tuple[str, bytes]:
        rows = [["product", "price"], ["tea", "3.50"], ["coffee", "4.20"]]
        return "prices.csv", write_csv(tmp_path / "prices.csv", rows, delimiter=";").read_bytes()
