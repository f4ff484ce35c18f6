"""EPUB e-books: chapters in reading (spine) order, each a heading-level section; book metadata.

Each spine document starts a chapter titled from the table of contents (else its first heading); the
chapter's own headings nest under that title, so a chunk's ``section`` reads ``Chapter 3 > The storm``.
A spine document with neither (a file split for size) continues the chapter before it. The archive is
checked against ``ingest.max_unpacked_mb`` (declared and actual sizes) before ebooklib reads it.
"""

from __future__ import annotations

import io
import logging
import posixpath
import re
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers.archive import check_inflated_sizes, open_zip, read_member
from rag.ingest.parsers.base import ZIP_MAGIC, BaseParser, ParseContext, missing_module, sniff_magic
from rag.ingest.parsers.builder import DocumentBuilder
from rag.ingest.parsers.htmlblocks import add_html

log = logging.getLogger(__name__)

_WHAT = "EPUB"
_HAS_HEADING = re.compile(rb"<h[1-6][\s>]", re.IGNORECASE)
_ENCRYPTION = "META-INF/encryption.xml"
# Encrypted resources that make the text unreadable (fonts are routinely "obfuscated"; that is harmless).
_CIPHER_URI = re.compile(rb"CipherReference[^>]*URI\s*=\s*[\"']([^\"']+)[\"']")
_TEXT_SUFFIXES = (".xhtml", ".html", ".htm", ".xml")


def _toc_titles(toc: Any) -> dict[str, str]:
    """Document href (no fragment) → the first table-of-contents title that points into it."""
    from ebooklib import epub

    titles: dict[str, str] = {}
    stack = [toc] if not isinstance(toc, (list, tuple)) else list(reversed(toc))
    while stack:
        entry = stack.pop()
        if isinstance(entry, tuple) and len(entry) == 2:  # (Section, [children])
            section, children = entry
            stack.extend(reversed(list(children)))
            stack.append(section)
            continue
        if isinstance(entry, list):
            stack.extend(reversed(entry))
            continue
        if isinstance(entry, (epub.Link, epub.Section)) and entry.href and entry.title:
            href = posixpath.normpath(entry.href.split("#", 1)[0])
            titles.setdefault(href, " ".join(str(entry.title).split()))
    return titles


def _title_for(name: str, titles: dict[str, str]) -> str | None:
    """The TOC title of a document, matched by its path, else by its file name alone (NCX paths are
    relative to the NCX file, not to the package)."""
    name = posixpath.normpath(name)
    if name in titles:
        return titles[name]
    base = posixpath.basename(name)
    matches = [title for href, title in titles.items() if posixpath.basename(href) == base]
    return matches[0] if len(matches) == 1 else None


def _metadata_values(book: Any, name: str) -> list[str]:
    values = []
    for value, _attributes in book.get_metadata("DC", name) or []:
        text = " ".join(str(value or "").split())
        if text and text not in values:
            values.append(text)
    return values


def _check_drm(archive: Any, limits: Any) -> None:
    """Refuse an EPUB whose text documents are encrypted (DRM): their bytes would be indexed as noise."""
    if _ENCRYPTION not in archive.namelist():
        return
    manifest = read_member(archive, _ENCRYPTION, limits, _WHAT)
    if any(uri.decode("utf-8", "replace").lower().endswith(_TEXT_SUFFIXES) for uri in _CIPHER_URI.findall(manifest)):
        raise LoaderError("DRM-protected EPUB (its text is encrypted)")


class EpubParser(BaseParser):
    """EPUB 2 and 3 e-books read with ebooklib: chapters as sections, title/author/language as metadata."""

    name = "epub"
    suffixes = (".epub",)
    media_types = ("application/epub+zip",)
    description = "e-book: chapters in reading order as sections (TOC titles); title, author, language"

    def available(self) -> str | None:
        return missing_module("ebooklib", None, "ebooklib")

    def sniff(self, head: bytes) -> str | None:
        return sniff_magic(head, ZIP_MAGIC, "an EPUB (zip) file")

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        import ebooklib
        from ebooklib import epub

        archive = open_zip(data, ctx.limits, _WHAT)
        check_inflated_sizes(archive, ctx.limits, _WHAT)
        _check_drm(archive, ctx.limits)
        try:
            book = epub.read_epub(io.BytesIO(data), {"ignore_ncx": True})
        except Exception as exc:  # noqa: BLE001 - ebooklib raises EpubException, KeyError, lxml errors ... on broken books
            raise LoaderError(f"corrupt EPUB: {type(exc).__name__}: {exc}"[:300]) from None
        titles = _toc_titles(book.toc)
        builder = DocumentBuilder()
        for idref, _linear in book.spine:
            item = book.get_item_with_id(idref)
            if item is None or item.get_type() != ebooklib.ITEM_DOCUMENT or isinstance(item, epub.EpubNav):
                continue  # images in the spine, the navigation document (a table of contents, not text)
            self._add_chapter(builder, item.get_content(), _title_for(item.get_name(), titles))
        book_title = (_metadata_values(book, "title") or [""])[0]
        authors = _metadata_values(book, "creator")
        fmt: dict[str, Any] = {
            "author": authors[0] if len(authors) == 1 else authors or None,
            "language": (_metadata_values(book, "language") or [None])[0],
            "publisher": (_metadata_values(book, "publisher") or [None])[0],
            "published": (_metadata_values(book, "date") or [None])[0],
        }
        return [
            builder.build(
                doc_id=ctx.doc_id, source=ctx.source, title=book_title or ctx.stem,
                metadata=ctx.merge_metadata({k: v for k, v in fmt.items() if v}, format=self.name),
            )
        ]

    @staticmethod
    def _add_chapter(builder: DocumentBuilder, content: bytes, toc_title: str | None) -> None:
        """One spine document: a new chapter when the TOC names it or it has headings, else a continuation."""
        if toc_title:
            builder.reset_headings()
            builder.heading(1, toc_title)
            add_html(builder, content, level_offset=1, skip_heading=toc_title)
        elif _HAS_HEADING.search(content):
            builder.reset_headings()
            add_html(builder, content)
        else:
            builder.break_section()
            add_html(builder, content)
