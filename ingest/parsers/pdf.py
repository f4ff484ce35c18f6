"""PDF: the text layer page by page; each page a section with its number."""

from __future__ import annotations

import io

from rag.core.errors import LoaderError
from rag.core.types import Document, Section
from rag.ingest.parsers.base import PDF_MAGIC, BaseParser, ParseContext, sniff_magic

_PAGE_SEPARATOR = "\n\n"
# Generators (reportlab, some office suites) write these when the author set no title.
_PLACEHOLDER_TITLES = frozenset({"", "untitled", "untitled document", "anonymous"})


def _pdf_pages(data: bytes) -> tuple[list[str], str]:
    """Every page's extracted text and the ``/Title``; any pypdf failure becomes a LoaderError."""
    import pypdf

    try:
        reader = pypdf.PdfReader(io.BytesIO(data))
        if reader.is_encrypted and not reader.decrypt(""):
            raise LoaderError("encrypted PDF (password required)")
        info = reader.metadata
        title = info.title if info is not None and isinstance(info.title, str) else ""
        pages = [page.extract_text() or "" for page in reader.pages]
    except LoaderError:
        raise
    except Exception as exc:  # pypdf raises many exception types (PdfReadError, ValueError, KeyError...)
        raise LoaderError(f"corrupt PDF: {exc or type(exc).__name__}") from None
    return pages, title



class PdfParser(BaseParser):
    name = "pdf"
    suffixes = (".pdf",)
    media_types = ("application/pdf",)
    description = "text per page (page in metadata)"

    def sniff(self, head: bytes) -> str | None:
        # Some writers put junk before the header; readers accept it within the first KiB.
        return None if PDF_MAGIC in head[:1024] else sniff_magic(head, PDF_MAGIC, "a PDF")

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        pages, pdf_title = _pdf_pages(data)
        if len(pages) > ctx.limits.max_pages:
            raise LoaderError(f"{len(pages)} pages, more than ingest.max_pages ({ctx.limits.max_pages})")
        parts: list[str] = []
        sections: list[Section] = []
        offset = 0
        for number, raw in enumerate(pages, start=1):
            page_text = raw.replace("\x00", "").replace("\r\n", "\n").replace("\r", "\n").strip()
            if not page_text:
                continue  # a blank or image-only page
            if parts:
                offset += len(_PAGE_SEPARATOR)
            sections.append(Section(text=page_text, start=offset, page=number))
            parts.append(page_text)
            offset += len(page_text)
        if not parts:
            raise LoaderError("no extractable text (scanned PDF?)")
        title = pdf_title.strip()
        return [
            Document(
                doc_id=ctx.doc_id,
                text=_PAGE_SEPARATOR.join(parts),
                source=ctx.source,
                title=ctx.stem if title.lower() in _PLACEHOLDER_TITLES else title,
                sections=sections,
                metadata=ctx.merge_metadata(format=self.name),
            )
        ]
