"""PowerPoint (.pptx): one section per slide, titled by the slide title, with ``slide`` in every chunk.

Read with python-pptx after :func:`~rag.ingest.parsers.ooxml.open_package` has checked the package. A
slide's title is the heading; then come the text of its shapes in the slide's order (shapes inside
groups included), its tables as tables, and its speaker notes prefixed ``Notes:``. Hidden slides are
read like the others. Pictures, charts and media carry no text here and are skipped.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, missing_module
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.ooxml import core_metadata, library_error, open_package, sniff_package

log = logging.getLogger(__name__)

WHAT = "PowerPoint presentation"
# Titles that presentation tools write when the author set none.
_PLACEHOLDER_TITLES = frozenset({"", "powerpoint presentation", "presentation"})


def _text(raw: str) -> str:
    # python-pptx renders a line break inside a paragraph as a vertical tab.
    return raw.replace("\v", "\n").strip()


def _shapes(shapes: Any) -> Iterator[Any]:
    """Every shape in slide order, the members of group shapes in place of the group."""
    from pptx.shapes.group import GroupShape

    for shape in shapes:
        if isinstance(shape, GroupShape):
            yield from _shapes(shape.shapes)
        else:
            yield shape


def _add_slide(builder: DocumentBuilder, slide: Any, number: int) -> str:
    """Add one slide's title, text, tables and notes as its section(s); returns the slide title."""
    location = {"slide": number}
    title_shape = slide.shapes.title
    title = " ".join(_text(title_shape.text_frame.text).split()) if title_shape is not None else ""
    builder.reset_headings()
    if title:
        builder.heading(1, title, location=location)
    for shape in _shapes(slide.shapes):
        if title_shape is not None and shape.shape_id == title_shape.shape_id:
            continue
        if shape.has_table:
            rows = [[_text(cell.text) for cell in row.cells] for row in shape.table.rows]
            builder.table(rows, location=location)
        elif shape.has_text_frame:
            builder.paragraph(_text(shape.text_frame.text), location=location)
    if slide.has_notes_slide:
        frame = slide.notes_slide.notes_text_frame
        notes = _text(frame.text) if frame is not None else ""
        if notes:
            builder.paragraph(f"Notes: {notes}", location=location)
    return title


class PptxParser(BaseParser):
    """PowerPoint presentations: a section per slide (``slide`` in metadata), tables, speaker notes."""

    name = "pptx"
    suffixes = (".pptx",)
    media_types = ("application/vnd.openxmlformats-officedocument.presentationml.presentation",)
    description = "a section per slide (slide in metadata): title, text, tables, speaker notes"

    def available(self) -> str | None:
        return missing_module("pptx", None, "python-pptx")

    def sniff(self, head: bytes) -> str | None:
        return sniff_package(head, WHAT)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Read one .pptx file.

        Raises:
            LoaderError: encrypted, legacy, corrupt or oversized package, or no text.
        """
        import pptx

        stream = open_package(data, ctx.limits, WHAT, ".pptx")
        builder = DocumentBuilder()
        first_title = ""
        try:
            presentation = pptx.Presentation(stream)
            for number, slide in enumerate(presentation.slides, start=1):
                title = _add_slide(builder, slide, number)
                first_title = first_title or title
            props = presentation.core_properties
            metadata = core_metadata(author=props.author, created=props.created, modified=props.modified,
                                     subject=props.subject, keywords=props.keywords)
            core_title = (props.title or "").strip()
        except Exception as exc:  # python-pptx and lxml raise many types for a malformed package
            log.debug("python-pptx failed on %s", ctx.name, exc_info=True)
            raise library_error(WHAT, exc) from None
        title = core_title if core_title.lower() not in _PLACEHOLDER_TITLES else first_title or ctx.stem
        doc = builder.build(
            doc_id=ctx.doc_id, source=ctx.source, title=title,
            metadata=ctx.merge_metadata(metadata, format=self.name),
        )
        return [doc]
