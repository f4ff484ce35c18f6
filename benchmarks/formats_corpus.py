"""The corpus of :mod:`benchmarks.bench_formats`: real files of every format, known facts, and questions.

Every file is written by the library people use to make such files (python-docx, python-pptx, openpyxl,
the ``email`` and ``mailbox`` packages, ebooklib, nbformat, reportlab, Pillow, gzip), never as hand-written
XML. The facts are invented (made-up names and numbers from a seeded generator) so that each question has
exactly one answering document, or one answering table row, in the whole corpus; every format also gets
distractor documents built from the same templates (other sites, other rows), so retrieval is not trivial.

Scanned pages and photos of text are rendered from known text with Pillow and matplotlib's bundled
DejaVuSans.ttf; the known text is kept (:attr:`CorpusFile.known_text`) to score OCR against.

    corpus = build_corpus(Path("/tmp/formats"))
    corpus.files, corpus.questions
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import mailbox
import random
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from email.utils import format_datetime
from pathlib import Path
from typing import Any

SCAN_DPI = 150
FORMATS: tuple[str, ...] = (
    "markdown", "text", "rst", "html", "pdf", "pdf-2col", "pdf-scan", "png", "jpeg", "tiff",
    "docx", "pptx", "xlsx", "csv", "eml", "mbox", "epub", "ipynb", "md.gz",
)
# Formats whose files hold no text layer: their parsed text is OCR output, scored against the known text.
OCR_FORMATS: frozenset[str] = frozenset({"pdf-scan", "png", "jpeg", "tiff"})


@dataclass(frozen=True, slots=True)
class Question:
    """A question and what answers it.

    Attributes:
        text: the question, worded differently from the sentence that answers it.
        fmt: the format of the answering file (a :data:`FORMATS` label).
        path: the answering file, relative to the corpus root (also its document id when ingested there).
        part: for files that hold several documents: the one that answers (an attachment's file name, a
            message's subject); ``None`` when any document of the file counts.
        row_key: for table questions: a cell found only in the answering row.
        row_value: for table questions: the answering cell of that row.
        row: for table questions: the row number as the source counts rows (a spreadsheet's row, a CSV
            file's line, a PDF/Word/slide table's data row from 1); a diagnostic, see bench_formats.
    """

    text: str
    fmt: str
    path: str
    part: str | None = None
    row_key: str | None = None
    row_value: str | None = None
    row: int | None = None


@dataclass(slots=True)
class CorpusFile:
    """One file of the corpus: its format, its page count (paged formats) and, for scans, the known text."""

    path: str
    fmt: str
    pages: int | None = None
    known_text: str | None = None


@dataclass(slots=True)
class Corpus:
    """The files written under :attr:`root` and the questions about them."""

    root: Path
    files: list[CorpusFile] = field(default_factory=list)
    questions: list[Question] = field(default_factory=list)

    def files_of(self, fmt: str) -> list[CorpusFile]:
        return [f for f in self.files if f.fmt == fmt]

    def to_json(self) -> str:
        return json.dumps({
            "root": str(self.root), "files": [asdict(f) for f in self.files],
            "questions": [asdict(q) for q in self.questions],
        })

    @classmethod
    def from_json(cls, text: str) -> Corpus:
        raw = json.loads(text)
        return cls(Path(raw["root"]), [CorpusFile(**f) for f in raw["files"]], [Question(**q) for q in raw["questions"]])


# -- invented facts ---------------------------------------------------------------------------------

_ONSETS = ["b", "br", "d", "dr", "f", "g", "gr", "h", "k", "kr", "l", "m", "n", "p", "qu", "r", "s", "st", "t",
           "th", "tr", "v", "w", "z"]
_VOWELS = ["a", "e", "i", "o", "u", "ai", "ea", "ou"]
_CODAS = ["", "l", "n", "r", "s", "th", "nd", "rk", "x", "m", "v"]
_FIRST_NAMES = ["Amara", "Bruno", "Celia", "Dmitri", "Elif", "Farid", "Greta", "Hiro", "Ines", "Jonas", "Kalinda",
                "Lorcan", "Mireille", "Nadia", "Osric", "Priya", "Quentin", "Rosalind", "Soren", "Tamsin", "Ulla",
                "Viktor", "Wendeline", "Yusuf", "Zofia"]
_KINDS = ["Depot", "Research Station", "Observatory", "Mill", "Laboratory", "Foundry", "Clinic", "Shipyard"]
_GOODS = ["copper wire", "seed potatoes", "glass lenses", "oak barrels", "wool bales", "ceramic tiles",
          "bicycle frames", "paper rolls", "olive oil", "solar panels", "brass valves", "maple syrup"]
_OLD_SITES = ["tannery", "railway yard", "brewery", "rope works", "cattle market", "brickworks", "salt store",
              "cotton mill", "dairy", "gasworks"]
_WEATHER = ["flood", "blizzard", "heatwave", "hailstorm", "landslide", "gale"]
_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
           "November", "December"]
_FILLER = [
    "Staff turnover remained within the range agreed with the regional board.",
    "The maintenance schedule was revised after the spring inspection.",
    "Energy use per unit of output fell slightly compared with the previous period.",
    "A new scheduling tool replaced the paper rota in the second half of the year.",
    "Training hours per employee rose, mostly because of the revised safety course.",
    "Suppliers were asked to confirm delivery windows two weeks in advance.",
    "The visitor programme was paused for the summer and resumed in the autumn.",
    "Insurance premiums were renegotiated on a three-year basis.",
    "Several older vehicles were replaced by electric models.",
    "The board approved a modest budget for roof repairs.",
    "Customer complaints were answered within five working days on average.",
    "A volunteer group helped to restore the garden next to the main entrance.",
    "Waste sorting was extended to the packaging area.",
    "The annual audit found no material weaknesses in the accounts.",
    "Local schools visited twice during the year as part of the outreach plan.",
    "Water consumption was monitored with new meters installed in March.",
    "The canteen menu was changed after a staff survey.",
    "Overtime was reduced by spreading shifts more evenly across the week.",
    "The fire alarm system passed its periodic test without findings.",
    "Parking was reorganised to make room for a delivery bay.",
]


@dataclass(slots=True)
class Fact:
    """A sentence holding an invented fact, and a question it alone answers."""

    sentence: str
    question: str


@dataclass(slots=True)
class Report:
    """A short report about one invented site: a title, sections of paragraphs, and the facts woven in."""

    title: str
    site: str
    sections: list[tuple[str, list[str]]]
    facts: list[Fact]

    def plain_lines(self) -> list[str]:
        """Title, headings and paragraphs, one per item (what a scan of the report shows)."""
        lines = [self.title]
        for heading, paragraphs in self.sections:
            lines += [heading, *paragraphs]
        return lines


class Inventor:
    """Seeded source of unique invented names and numbers, so every fact exists exactly once."""

    def __init__(self, seed: int = 14) -> None:
        self.rng = random.Random(seed)
        self._used: set[str] = set()

    def word(self, syllables: int = 3) -> str:
        while True:
            parts = [self.rng.choice(_ONSETS) + self.rng.choice(_VOWELS) + self.rng.choice(_CODAS)
                     for _ in range(syllables)]
            word = "".join(parts).capitalize()
            if word not in self._used and 6 <= len(word) <= 13:
                self._used.add(word)
                return word

    def person(self) -> str:
        return f"{self.rng.choice(_FIRST_NAMES)} {self.word(3)}"

    def number(self, low: int, high: int) -> int:
        while True:
            value = self.rng.randint(low, high)
            if str(value) not in self._used:
                self._used.add(str(value))
                return value

    def code(self) -> str:
        letters = "".join(self.rng.choice("ABCDEFGHJKLMNPRSTUVWXYZ") for _ in range(3))
        return f"{letters}-{self.number(1000, 9999)}"

    def filler(self, n: int) -> list[str]:
        return self.rng.sample(_FILLER, n)

    def site(self) -> str:
        return f"{self.word(3)} {self.rng.choice(_KINDS)}"

    def facts(self, site: str) -> list[Fact]:
        """Five facts about ``site`` (who runs it, volume, history, a certificate, a closure)."""
        person, year = self.person(), self.rng.randint(1995, 2021)
        goods, crates = self.rng.choice(_GOODS), self.number(10_000, 99_999)
        founded, old, town = self.rng.randint(1890, 1990), self.rng.choice(_OLD_SITES), self.word(2)
        code = self.code()
        month, weather, days = self.rng.choice(_MONTHS), self.rng.choice(_WEATHER), self.rng.randint(2, 19)
        return [
            Fact(f"Operations at the {site} have been directed by {person} since {year}.",
                 f"Who runs the {site}?"),
            Fact(f"During the last fiscal year the {site} processed {crates:,} crates of {goods}.",
                 f"How many crates of {goods} did the {site} handle last year?"),
            Fact(f"The {site} was founded in {founded} in the town of {town}, on the grounds of a former {old}.",
                 f"What stood on the site of the {site} before it was built?"),
            Fact(f"The safety certificate of the {site} carries the reference {code}.",
                 f"What is the reference number of the {site}'s safety certificate?"),
            Fact(f"In {month} a {weather} closed the {site} for {days} days.",
                 f"For how long was the {site} shut because of bad weather?"),
        ]

    def report(self, sections: int = 3, filler: int = 4) -> Report:
        """A report on a new site: ``sections`` headed sections, the five facts spread over them."""
        site = self.site()
        facts = self.facts(site)
        headings = ["Overview", "Operations", "History", "Safety", "Outlook"][:sections]
        body: list[tuple[str, list[str]]] = []
        for i, heading in enumerate(headings):
            mine = [f.sentence for j, f in enumerate(facts) if j % sections == i]
            first, second = self.filler(filler), self.filler(filler)
            paragraphs = [" ".join(first[: filler // 2] + mine[:1] + first[filler // 2:]),
                          " ".join(second[: filler // 2] + mine[1:] + second[filler // 2:])]
            body.append((heading, paragraphs))
        return Report(f"{site}: annual report", site, body, facts)


# -- rendering text as images --------------------------------------------------------------------


def _font(size: int) -> Any:
    import matplotlib
    from PIL import ImageFont

    path = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    return ImageFont.truetype(str(path), size)


def text_images(lines: list[str], width_in: float = 8.5, height_in: float | None = 11.0,
                dpi: int = SCAN_DPI, point: int = 11) -> Iterator[tuple[Any, str]]:
    """Pages of black text on white at ``dpi``, wrapped to the width; yields (image, text on it).

    ``height_in=None`` makes one image just tall enough for all the lines (a photo of a memo).
    """
    from PIL import Image, ImageDraw

    font = _font(round(point * dpi / 72))
    width = round(width_in * dpi)
    margin, line_height = dpi, round(point * dpi / 72 * 1.45)
    wrapped: list[str] = []
    measure = ImageDraw.Draw(Image.new("L", (1, 1)))
    for line in lines:
        words, current = line.split(), ""
        for word in words:
            trial = f"{current} {word}".strip()
            if measure.textlength(trial, font=font) > width - 2 * margin and current:
                wrapped.append(current)
                current = word
            else:
                current = trial
        wrapped += [current, ""]
    if height_in is None:
        height = 2 * margin + len(wrapped) * line_height
    else:
        height = round(height_in * dpi)
    per_page = (height - 2 * margin) // line_height
    for start in range(0, len(wrapped), per_page):
        chunk = wrapped[start:start + per_page]
        if not any(chunk):
            continue
        image = Image.new("L", (width, height), 255)
        draw = ImageDraw.Draw(image)
        for n, text in enumerate(chunk):
            draw.text((margin, margin + n * line_height), text, font=font, fill=0)
        yield image, " ".join(t for t in chunk if t)


# -- the builders -----------------------------------------------------------------------------------


class CorpusWriter:
    """Writes each format's files under ``root/<format>/`` and records files and questions."""

    def __init__(self, root: Path, seed: int = 14) -> None:
        self.corpus = Corpus(root)
        self.inv = Inventor(seed)

    # helpers

    def _path(self, fmt: str, name: str) -> Path:
        folder = self.corpus.root / fmt.replace(".", "-")
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def _add(self, fmt: str, path: Path, pages: int | None = None, known_text: str | None = None) -> str:
        rel = path.relative_to(self.corpus.root).as_posix()
        self.corpus.files.append(CorpusFile(rel, fmt, pages, known_text))
        return rel

    def _ask(self, fmt: str, rel: str, fact: Fact, part: str | None = None) -> None:
        self.corpus.questions.append(Question(fact.question, fmt, rel, part))

    def _reports(self, fmt: str, n: int, asked: tuple[int, ...], write: Callable[[Path, Report], int | None],
                 suffix: str, **report_args: Any) -> None:
        """``n`` reports written by ``write`` (which returns the page count of paged formats, else ``None``);
        fact ``asked[i]`` of report ``i`` becomes a question."""
        for i in range(n):
            report = self.inv.report(**report_args)
            path = self._path(fmt, f"report-{i + 1}{suffix}")
            rel = self._add(fmt, path, pages=write(path, report))
            if i < len(asked):
                self._ask(fmt, rel, report.facts[asked[i]])

    # text formats

    @staticmethod
    def markdown(report: Report) -> str:
        parts = [f"# {report.title}\n"]
        for heading, paragraphs in report.sections:
            parts.append(f"## {heading}\n")
            parts += [p + "\n" for p in paragraphs]
        return "\n".join(parts)

    def text_formats(self) -> None:
        def markdown(path: Path, r: Report) -> None:
            path.write_text(self.markdown(r))

        self._reports("markdown", 4, (0, 1), markdown, ".md")

        def plain(path: Path, r: Report) -> None:
            blocks = [r.title.upper()] + [f"{h}\n\n" + "\n\n".join(ps) for h, ps in r.sections]
            path.write_text("\n\n".join(blocks) + "\n")

        self._reports("text", 3, (2, 3), plain, ".txt")

        def rst(path: Path, r: Report) -> None:
            out = [r.title, "=" * len(r.title), ""]
            for heading, paragraphs in r.sections:
                out += [heading, "-" * len(heading), ""]
                for p in paragraphs:
                    out += [p, ""]
            path.write_text("\n".join(out))

        self._reports("rst", 3, (4, 1), rst, ".rst")

        earlier: list[str] = []

        def html(path: Path, r: Report) -> None:
            # Navigation, a sidebar of links to other reports, a cookie banner and a footer around the
            # article: the boilerplate a main-content extractor has to leave out. The sidebar names the
            # sites of the earlier HTML reports, so boilerplate left in competes with the answering page.
            nav = "".join(f'<li><a href="/{w.lower()}">{w}</a></li>' for w in
                          ["Home", "Reports", "Sites", "Careers", "Press", "Contact"])
            sites = earlier + [self.inv.site() for _ in range(6 - len(earlier))]
            related = "".join(f'<li><a href="/r/{i}">{site} annual report</a></li>' for i, site in enumerate(sites))
            earlier.append(r.site)
            article = "".join(f"<h2>{h}</h2>" + "".join(f"<p>{p}</p>" for p in ps) for h, ps in r.sections)
            path.write_text(
                f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{r.title}</title></head><body>"
                f"<header><div class='logo'>Consolidated Sites Group</div><nav><ul>{nav}</ul></nav></header>"
                f"<div class='cookie'>We use cookies to improve your experience. <button>Accept all</button></div>"
                f"<main><article><h1>{r.title}</h1>{article}</article>"
                f"<aside><h3>Related reports</h3><ul>{related}</ul></aside></main>"
                f"<footer><p>Copyright 2024 Consolidated Sites Group. All rights reserved.</p>"
                f"<ul><li><a href='/privacy'>Privacy</a></li><li><a href='/terms'>Terms</a></li></ul></footer>"
                f"</body></html>"
            )

        self._reports("html", 3, (0, 4), html, ".html")

        def gz(path: Path, r: Report) -> None:
            path.write_bytes(gzip.compress(self.markdown(r).encode(), mtime=0))

        self._reports("md.gz", 2, (3, 2), gz, ".md.gz")

    # PDFs, scans and images

    def pdfs(self) -> None:
        from reportlab.lib.styles import getSampleStyleSheet
        from reportlab.platypus import PageBreak, Paragraph, SimpleDocTemplate

        styles = getSampleStyleSheet()

        def pdf(path: Path, r: Report) -> int:
            story: list[Any] = [Paragraph(r.title, styles["Title"])]
            for i, (heading, paragraphs) in enumerate(r.sections):
                if i == 2:
                    story.append(PageBreak())
                story.append(Paragraph(heading, styles["Heading2"]))
                story += [Paragraph(p, styles["BodyText"]) for p in paragraphs]
            doc = SimpleDocTemplate(str(path), title=r.title, invariant=True)
            doc.build(story)
            return doc.page

        self._reports("pdf", 3, (1, 3), pdf, ".pdf")
        for i in range(2):
            self._two_column_pdf(i, asked=(i == 0))

    def _two_column_pdf(self, index: int, asked: bool) -> None:
        """Two columns of report text on the first page, then a ruled table of depots."""
        from reportlab.lib import colors
        from reportlab.lib.pagesizes import A4
        from reportlab.lib.styles import getSampleStyleSheet
        from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate, Paragraph, Table, TableStyle

        styles = getSampleStyleSheet()
        r = self.inv.report(sections=4, filler=6)
        path = self._path("pdf-2col", f"bulletin-{index + 1}.pdf")
        width, height = A4
        gap, margin = 24, 48
        col = (width - 2 * margin - gap) / 2
        frames = [Frame(margin, margin, col, height - 2 * margin, id="left"),
                  Frame(margin + col + gap, margin, col, height - 2 * margin, id="right")]
        doc = BaseDocTemplate(str(path), pagesize=A4, title=r.title, invariant=True)
        doc.addPageTemplates([PageTemplate(id="two", frames=frames)])
        story: list[Any] = [Paragraph(r.title, styles["Heading1"])]
        for heading, paragraphs in r.sections:
            story.append(Paragraph(heading, styles["Heading3"]))
            story += [Paragraph(p, styles["BodyText"]) for p in paragraphs]
        header = ["Depot", "Manager", "Trucks", "Fuel budget"]
        rows = [[self.inv.word(3), self.inv.person().split()[1], str(self.inv.number(11, 99)),
                 str(self.inv.number(20_000, 90_000))] for _ in range(10)]
        table = Table([header, *rows], colWidths=[col * 0.3, col * 0.3, col * 0.16, col * 0.24])
        table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.5, colors.black), ("FONTSIZE", (0, 0), (-1, -1), 8),
                                   ("BACKGROUND", (0, 0), (-1, 0), colors.lightgrey)]))
        story += [Paragraph("Depot fleet", styles["Heading3"]), table]
        doc.build(story)
        rel = self._add("pdf-2col", path, pages=doc.page)
        if asked:
            self._ask("pdf-2col", rel, r.facts[2])
            for n in (3, 8):
                depot, trucks = rows[n - 1][0], rows[n - 1][2]
                self.corpus.questions.append(Question(
                    f"How many trucks does the {depot} depot run?", "pdf-2col", rel,
                    row_key=depot, row_value=trucks, row=n))

    def scans(self) -> None:
        """Image-only PDFs (150 dpi page images, no text layer) and PNG, JPEG and multi-page TIFF photos."""
        from reportlab.lib.pagesizes import letter
        from reportlab.lib.utils import ImageReader
        from reportlab.pdfgen import canvas

        for i in range(2):
            r = self.inv.report(sections=3, filler=4)
            path = self._path("pdf-scan", f"scan-{i + 1}.pdf")
            pdf = canvas.Canvas(str(path), pagesize=letter, invariant=True)
            texts = []
            for image, text in text_images(r.plain_lines()):
                pdf.drawImage(ImageReader(image), 0, 0, width=letter[0], height=letter[1])
                pdf.showPage()
                texts.append(text)
            pdf.save()
            rel = self._add("pdf-scan", path, pages=len(texts), known_text=" ".join(texts))
            self._ask("pdf-scan", rel, r.facts[i + 1])

        # Photos: a half-page memo each (title and one section), the facts in that section.
        for fmt, suffix, count, asked in (("png", ".png", 2, 2), ("jpeg", ".jpg", 1, 1), ("tiff", ".tiff", 1, 1)):
            for i in range(count):
                r = self.inv.report(sections=1, filler=2)
                lines = r.plain_lines()
                pages = list(text_images(lines, height_in=None))
                if fmt == "tiff":  # a second frame: a second memo's section
                    other = self.inv.report(sections=1, filler=2)
                    pages += list(text_images(other.plain_lines(), height_in=None))
                path = self._path(fmt, f"memo-{i + 1}{suffix}")
                images = [image for image, _ in pages]
                if fmt == "png":
                    images[0].save(path, dpi=(SCAN_DPI, SCAN_DPI))
                elif fmt == "jpeg":
                    images[0].save(path, quality=85, dpi=(SCAN_DPI, SCAN_DPI))
                else:
                    images[0].save(path, save_all=True, append_images=images[1:], compression="tiff_lzw",
                                   dpi=(SCAN_DPI, SCAN_DPI))
                rel = self._add(fmt, path, pages=len(pages), known_text=" ".join(t for _, t in pages))
                if i < asked:
                    self._ask(fmt, rel, r.facts[i])

    # Office documents and tables

    def office(self) -> None:
        import docx
        from pptx import Presentation
        from pptx.util import Inches

        for i in range(3):
            r = self.inv.report(sections=3, filler=4)
            document = docx.Document()
            document.core_properties.title = r.title
            document.core_properties.author = self.inv.person()
            document.add_heading(r.title, level=0)
            for heading, paragraphs in r.sections:
                document.add_heading(heading, level=1)
                for p in paragraphs:
                    document.add_paragraph(p)
            document.add_heading("Suppliers", level=1)
            rows = [[self.inv.word(3) + " Ltd", self.inv.word(2).lower() + " gasket", str(self.inv.number(3, 60)),
                     str(self.inv.number(61, 99))] for _ in range(8)]
            table = document.add_table(rows=1, cols=4)
            table.style = "Table Grid"
            for cell, text in zip(table.rows[0].cells, ["Supplier", "Component", "Unit price (EUR)", "Lead time (weeks)"]):
                cell.text = text
            for row in rows:
                for cell, text in zip(table.add_row().cells, row):
                    cell.text = text
            path = self._path("docx", f"report-{i + 1}.docx")
            document.save(path)
            rel = self._add("docx", path)
            if i < 2:
                self._ask("docx", rel, r.facts[i])
            if i == 0:
                supplier, component, weeks = rows[5][0], rows[5][1], rows[5][3]
                self.corpus.questions.append(Question(
                    f"How many weeks does {supplier} need to deliver the {component}?", "docx", rel,
                    row_key=supplier, row_value=weeks, row=6))

        for i in range(2):
            deck = Presentation()
            site = self.inv.site()
            facts = self.inv.facts(site)
            deck.core_properties.title = f"{site} quarterly review"
            slide = deck.slides.add_slide(deck.slide_layouts[0])
            slide.shapes.title.text = f"{site} quarterly review"
            slide.placeholders[1].text = "Prepared for the regional board"
            for n, (title, fact) in enumerate((("Operations", facts[0]), ("Volumes", facts[1]), ("History", facts[2]))):
                slide = deck.slides.add_slide(deck.slide_layouts[1])
                slide.shapes.title.text = title
                body = slide.placeholders[1].text_frame
                body.text = self.inv.filler(1)[0]
                body.add_paragraph().text = fact.sentence if n != 2 else self.inv.filler(1)[0]
                # The history fact is only in the speaker notes.
                notes = fact.sentence if n == 2 else self.inv.filler(1)[0]
                slide.notes_slide.notes_text_frame.text = notes
            slide = deck.slides.add_slide(deck.slide_layouts[5])
            slide.shapes.title.text = "Milestones"
            milestones = [[f"{self.inv.word(3)} cutover", self.inv.person(), f"2025-{m:02d}-15"] for m in range(1, 7)]
            shape = slide.shapes.add_table(7, 3, Inches(0.5), Inches(1.5), Inches(9), Inches(4))
            for c, text in enumerate(["Milestone", "Owner", "Due"]):
                shape.table.cell(0, c).text = text
            for r_i, row in enumerate(milestones, start=1):
                for c, text in enumerate(row):
                    shape.table.cell(r_i, c).text = text
            path = self._path("pptx", f"review-{i + 1}.pptx")
            deck.save(path)
            rel = self._add("pptx", path)
            if i == 0:
                self._ask("pptx", rel, facts[1])
                self._ask("pptx", rel, facts[2])  # answered by the speaker notes only
                milestone, owner = milestones[3][0], milestones[3][1]
                self.corpus.questions.append(Question(
                    f"Who is responsible for the {milestone} milestone?", "pptx", rel,
                    row_key=milestone, row_value=owner, row=4))

    def sheets(self) -> None:
        import openpyxl

        regions = ["North", "South", "East", "West", "Central"]
        for i in range(2):
            book = openpyxl.Workbook()
            sheet = book.active
            sheet.title = "Store revenue"
            sheet.append(["Store", "Region", "Manager", "Q1 revenue", "Q2 revenue", "Q3 revenue", "Q4 revenue"])
            stores = []
            for _ in range(240 if i == 0 else 120):
                row = [self.inv.word(3), self.inv.rng.choice(regions), self.inv.person()] + [
                    self.inv.number(100_000, 999_999) for _ in range(4)]
                sheet.append(row)
                stores.append(row)
            staff = book.create_sheet("Headcount")
            staff.append(["Store", "Staff", "Opened"])
            for row in stores[:60]:
                staff.append([row[0], self.inv.rng.randint(4, 40), datetime(2000 + self.inv.rng.randint(0, 20), 3, 1)])
            path = self._path("xlsx", f"stores-{i + 1}.xlsx")
            book.save(path)
            rel = self._add("xlsx", path)
            if i == 0:
                for n, column, quarter in ((7, 5, "Q3"), (88, 3, "Q1"), (163, 6, "Q4"), (231, 4, "Q2")):
                    store = stores[n - 1]
                    self.corpus.questions.append(Question(
                        f"What was the {quarter} revenue of the {store[0]} store?", "xlsx", rel,
                        row_key=str(store[0]), row_value=str(store[column]),
                        row=n + 1))

        carriers = ["Northline Freight", "Bluewater Cargo", "Redhill Haulage", "Swift Parcel", "Ironbridge Logistics"]
        for i in range(2):
            rows = [[f"SHP-{self.inv.number(10000, 99999)}", self.inv.word(2), self.inv.word(2),
                     self.inv.rng.choice(carriers), str(self.inv.number(100, 9999))] for _ in range(220 if i == 0 else 100)]
            path = self._path("csv", f"shipments-{i + 1}.csv")
            with open(path, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["Shipment", "Origin", "Destination", "Carrier", "Weight kg"])
                writer.writerows(rows)
            rel = self._add("csv", path)
            if i == 0:
                for n, kind in ((12, "carrier"), (104, "weight"), (197, "carrier")):
                    row = rows[n - 1]
                    if kind == "carrier":
                        text, value = f"Which carrier took the shipment from {row[1]} to {row[2]}?", row[3]
                    else:
                        text, value = f"How heavy was the consignment sent from {row[1]} to {row[2]}?", row[4]
                    self.corpus.questions.append(Question(text, "csv", rel, row_key=row[1], row_value=value, row=n + 1))

    # e-mail, e-books, notebooks

    def _pdf_bytes(self, report: Report) -> bytes:
        from reportlab.lib.styles import getSampleStyleSheet
        from reportlab.platypus import Paragraph, SimpleDocTemplate

        styles, buffer = getSampleStyleSheet(), io.BytesIO()
        story = [Paragraph(report.title, styles["Title"])]
        for heading, paragraphs in report.sections:
            story += [Paragraph(heading, styles["Heading2"]), *(Paragraph(p, styles["BodyText"]) for p in paragraphs)]
        SimpleDocTemplate(buffer, title=report.title, invariant=True).build(story)
        return buffer.getvalue()

    def _docx_bytes(self, report: Report) -> bytes:
        import docx

        document, buffer = docx.Document(), io.BytesIO()
        document.add_heading(report.title, level=0)
        for heading, paragraphs in report.sections:
            document.add_heading(heading, level=1)
            for p in paragraphs:
                document.add_paragraph(p)
        document.save(buffer)
        return buffer.getvalue()

    def _message(self, n: int, subject: str, body: str) -> EmailMessage:
        message = EmailMessage()
        message["Subject"] = subject
        message["From"] = f"{self.inv.person()} <ops{n}@sites.example>"
        message["To"] = "board@sites.example"
        message["Date"] = format_datetime(datetime(2024, 5, 1, 9, 30, tzinfo=UTC) + timedelta(days=n))
        message["Message-ID"] = f"<bench{n}@sites.example>"
        message.set_content(body)
        return message

    def mail(self) -> None:
        attachments = [None, ("application", "pdf", ".pdf"),
                       ("application", "vnd.openxmlformats-officedocument.wordprocessingml.document", ".docx")]
        for i, attach in enumerate(attachments):
            body_report = self.inv.report(sections=1, filler=4)
            subject = f"Update from the {body_report.site}"
            body = "Hello all,\n\n" + "\n\n".join(body_report.sections[0][1]) + "\n\nBest regards\n"
            message = self._message(i, subject, body)
            path = self._path("eml", f"message-{i + 1}.eml")
            rel = str(path.relative_to(self.corpus.root).as_posix())
            if attach is None:
                self._ask("eml", rel, body_report.facts[0], part=subject)
            else:
                inner = self.inv.report(sections=2, filler=4)
                name = f"{inner.site.split()[0].lower()}-report{attach[2]}"
                data = self._pdf_bytes(inner) if attach[2] == ".pdf" else self._docx_bytes(inner)
                message.add_attachment(data, maintype=attach[0], subtype=attach[1], filename=name)
                # Asked about a fact only the attachment holds.
                self._ask("eml", rel, inner.facts[1 if attach[2] == ".pdf" else 3], part=name)
            path.write_bytes(message.as_bytes())
            self._add("eml", path)

        path = self._path("mbox", "archive.mbox")
        box = mailbox.mbox(str(path), create=True)
        asked: list[tuple[Report, str]] = []
        for n in range(6):
            r = self.inv.report(sections=1, filler=4)
            subject = f"Weekly note: {r.site}"
            box.add(self._message(10 + n, subject, "\n\n".join(r.sections[0][1])))
            asked.append((r, subject))
        box.flush()
        box.close()
        rel = self._add("mbox", path)
        for r, subject in (asked[1], asked[4]):
            self._ask("mbox", rel, r.facts[0], part=subject)

    def books(self) -> None:
        from ebooklib import epub

        for i in range(2):
            book = epub.EpubBook()
            book.set_identifier(f"bench-formats-{i}")
            site = self.inv.site()
            book.set_title(f"A history of the {site}")
            book.set_language("en")
            book.add_author(self.inv.person())
            chapters, reports = [], []
            for c in range(3):
                r = self.inv.report(sections=2, filler=4)
                reports.append(r)
                chapter = epub.EpubHtml(title=r.site, file_name=f"chap_{c + 1}.xhtml", lang="en")
                chapter.content = f"<h1>{r.site}</h1>" + "".join(
                    f"<h2>{h}</h2>" + "".join(f"<p>{p}</p>" for p in ps) for h, ps in r.sections)
                book.add_item(chapter)
                chapters.append(chapter)
            book.toc = chapters
            book.add_item(epub.EpubNcx())
            book.add_item(epub.EpubNav())
            book.spine = ["nav", *chapters]
            path = self._path("epub", f"book-{i + 1}.epub")
            epub.write_epub(str(path), book)
            rel = self._add("epub", path)
            self._ask("epub", rel, reports[1 + i].facts[2 + i])

        import nbformat
        from nbformat import v4

        for i in range(2):
            r = self.inv.report(sections=2, filler=4)
            sensor, drift = self.inv.word(2), self.inv.number(100, 999)
            notebook = v4.new_notebook()
            notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
            notebook.cells = [v4.new_markdown_cell(f"# {r.title}")]
            for heading, paragraphs in r.sections:
                notebook.cells.append(v4.new_markdown_cell(f"## {heading}\n\n" + "\n\n".join(paragraphs)))
            notebook.cells.append(v4.new_code_cell(
                f"# Calibration: the {sensor} humidity sensor drifts by 0.{drift} percent per day\n"
                f"DRIFT_{sensor.upper()} = 0.{drift}\nprint(DRIFT_{sensor.upper()})",
                outputs=[v4.new_output("stream", name="stdout", text=f"0.{drift}\n")]))
            path = self._path("ipynb", f"analysis-{i + 1}.ipynb")
            nbformat.write(notebook, str(path))
            rel = self._add("ipynb", path)
            if i == 0:
                self._ask("ipynb", rel, r.facts[0])
                self._ask("ipynb", rel, Fact("", f"How fast does the {sensor} humidity sensor drift?"))


def build_corpus(root: Path, seed: int = 14) -> Corpus:
    """Write the whole corpus under ``root`` (created; existing files are overwritten) and return it."""
    root.mkdir(parents=True, exist_ok=True)
    writer = CorpusWriter(root, seed)
    writer.text_formats()
    writer.pdfs()
    writer.scans()
    writer.office()
    writer.sheets()
    writer.mail()
    writer.books()
    return writer.corpus
