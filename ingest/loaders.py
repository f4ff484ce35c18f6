"""Read files from disk into :class:`~rag.core.types.Document` values, one loader per format.

:func:`load_file` is the single entry point: it picks a loader by file suffix, reads the file, and returns
documents whose :attr:`~rag.core.types.Document.sections` tile the structure chunking must respect
(Markdown and HTML headings, PDF pages). Every failure a user can cause (an empty, binary, mis-encoded,
corrupt or unsupported file) raises :class:`~rag.core.errors.LoaderError` with a short human reason and
no path, so the caller can report ``<path>: <reason>`` and carry on with the other files.

Metadata precedence, lowest to highest: format metadata (Markdown front-matter, a JSONL line's
``metadata``) < the caller's ``metadata`` (``--meta`` user tags) < ``modified``. ``modified`` is always
the file's mtime as ISO-8601 UTC (``2024-05-01T09:30:00Z``), because incremental ingest and date
filters rely on it meaning exactly that.
"""

from __future__ import annotations

import io
import json
import logging
import re
from collections.abc import Callable, Iterator
from datetime import date, datetime, time, timezone
from pathlib import Path
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document, Section, reserved_keys_in

log = logging.getLogger(__name__)

_MARKDOWN_SUFFIXES = (".md", ".markdown")
_TEXT_SUFFIXES = (".txt", ".text", ".rst")
_HTML_SUFFIXES = (".html", ".htm")

SUPPORTED_SUFFIXES: frozenset[str] = frozenset(
    (*_MARKDOWN_SUFFIXES, *_TEXT_SUFFIXES, *_HTML_SUFFIXES, ".pdf", ".jsonl")
)
"""File suffixes :func:`load_file` can read (lower case, with the dot)."""

# A plain-text file's first line becomes its title only when it looks like one.
_MAX_TITLE_LINE = 80


def load_file(
    path: Path,
    *,
    doc_id: str,
    source: str,
    metadata: dict[str, Any] | None = None,
    problems: list[tuple[str, str]] | None = None,
) -> list[Document]:
    """Load one file into documents, choosing the loader by its suffix (case-insensitive).

    Markdown, plain text, HTML and PDF files give one document; a ``.jsonl`` BEIR corpus gives one per line.

    Args:
        path: the file to read.
        doc_id: stable id of the document (ignored for ``.jsonl``, whose lines carry their own ``_id``).
        source: display path, stored on each document for citations.
        metadata: user tags (``--meta``); they override format metadata such as front-matter.
        problems: where a multi-record file (``.jsonl``) reports a bad record as ``(label, reason)`` and
            carries on with the others; without it, a bad record fails the whole file.

    Returns:
        The loaded documents. Each has ``metadata["modified"]`` set to the file's mtime (ISO-8601 UTC).

    Raises:
        LoaderError: the suffix is unsupported, or the file cannot be read, is empty, binary, not valid
            UTF-8, a corrupt PDF, or holds no text.
    """
    suffix = path.suffix.lower()
    loader = _LOADERS.get(suffix)
    if loader is None:
        raise LoaderError(f"unsupported file type {suffix or '(no suffix)'}")
    try:
        mtime = path.stat().st_mtime
        data = path.read_bytes()
    except OSError as exc:
        raise LoaderError(f"cannot read file: {exc.strerror or exc}") from None
    if not data.strip():
        raise LoaderError("empty file")
    # Merged last, over user tags and format metadata, so ``modified`` always means the file's mtime.
    fixed = {"modified": datetime.fromtimestamp(mtime, tz=timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    if loader is _load_jsonl:
        docs = _load_jsonl(data, path, doc_id, source, dict(metadata or {}), fixed, problems)
    else:
        docs = loader(data, path, doc_id, source, dict(metadata or {}), fixed)
    log.debug("loaded %s: %d document(s)", source, len(docs))
    return docs


# --------------------------------------------------------------------------------------------------
# Shared helpers


def _decode(data: bytes) -> str:
    """Strict UTF-8 text with a BOM removed and newlines normalised to ``\\n``."""
    if b"\x00" in data:
        # NUL never occurs in UTF-8 text; it marks binary content (or UTF-16, which we do not read).
        raise LoaderError("binary file, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoaderError(f"invalid UTF-8 at byte {exc.start}") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise LoaderError("empty file")
    return text


def _jsonable(value: Any) -> Any:
    """``value`` made JSON-serialisable: dates and times become ISO strings, unknown types ``str``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (date, time)):  # datetime is a date subclass
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_jsonable(item) for item in value]
    return str(value)


def _merge_metadata(fmt: dict[str, Any], user: dict[str, Any], fixed: dict[str, Any]) -> dict[str, Any]:
    """Format metadata < user tags < fixed keys (``modified``).

    Raises:
        LoaderError: format metadata uses a key the platform sets itself (``source``, ``page``, ...).
    """
    clash = reserved_keys_in(fmt)
    if clash:
        raise LoaderError(
            f"metadata key(s) {', '.join(clash)} are reserved (every chunk gets them from the platform); "
            "rename them in the document"
        )
    return {**fmt, **user, **fixed}


def _sections_at(text: str, starts: list[tuple[int, tuple[str, ...]]]) -> list[Section]:
    """Sections that tile ``text`` from each ``(offset, heading path)`` to the next; blank ones dropped."""
    sections = []
    for index, (start, headings) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
        if text[start:end].strip():
            sections.append(Section(text=text[start:end], start=start, headings=headings))
    return sections


def _push_heading(stack: list[tuple[int, str]], level: int, title: str) -> tuple[str, ...]:
    """Update the open-heading ``stack`` with a new heading; return the new heading path."""
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, title))
    return tuple(name for _, name in stack)


# --------------------------------------------------------------------------------------------------
# Markdown

# ATX headings: up to 3 spaces of indent, 1-6 '#', a space, the text, an optional closing '#' run.
_ATX_HEADING = re.compile(r"^ {0,3}(#{1,6})[ \t]+(.*?)(?:[ \t]+#+)?[ \t]*$")
_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})")
_MD_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")


def _clean_heading(raw: str) -> str:
    """Heading text without inline markup (links, code ticks, emphasis), for readable heading paths."""
    text = _MD_LINK.sub(r"\1", raw).replace("`", "")
    text = re.sub(r"(\*\*|__|\*)(.+?)\1", r"\2", text)
    return " ".join(text.split())


def _markdown_headings(text: str) -> Iterator[tuple[int, int, str]]:
    """``(offset, level, title)`` of each ATX heading in ``text``, skipping fenced code blocks."""
    fence: str | None = None
    offset = 0
    for line in text.splitlines(keepends=True):
        stripped = line.rstrip("\n")
        fence_match = _FENCE.match(stripped)
        if fence is not None:
            # A fence closes with the same character, at least as long, and nothing else on the line.
            if fence_match and fence_match.group(1)[0] == fence[0] and len(fence_match.group(1)) >= len(fence):
                if not stripped.strip().strip(fence[0]):
                    fence = None
        elif fence_match:
            fence = fence_match.group(1)
        else:
            heading = _ATX_HEADING.match(stripped)
            if heading and _clean_heading(heading.group(2)):
                yield offset, len(heading.group(1)), _clean_heading(heading.group(2))
        offset += len(line)


def _load_markdown(
    data: bytes, path: Path, doc_id: str, source: str, user: dict[str, Any], fixed: dict[str, Any]
) -> list[Document]:
    import frontmatter

    text = _decode(data)
    try:
        front, body = frontmatter.parse(text)
    except Exception as exc:  # the YAML/TOML handlers raise their own exception types
        raise LoaderError(f"invalid front-matter: {exc}") from None
    if not body.strip():
        raise LoaderError("empty file (front-matter only)")
    fmt = _jsonable(front)
    fm_title = fmt.pop("title", None)

    starts: list[tuple[int, tuple[str, ...]]] = [(0, ())]
    stack: list[tuple[int, str]] = []
    first_h1: str | None = None
    for offset, level, heading in _markdown_headings(body):
        if level == 1 and first_h1 is None:
            first_h1 = heading
        starts.append((offset, _push_heading(stack, level, heading)))
    title = str(fm_title).strip() if fm_title not in (None, "") else (first_h1 or path.stem)
    return [
        Document(
            doc_id=doc_id,
            text=body,
            source=source,
            title=title,
            sections=_sections_at(body, starts),
            metadata=_merge_metadata(fmt, user, fixed),
        )
    ]


# --------------------------------------------------------------------------------------------------
# Plain text


def _load_text(
    data: bytes, path: Path, doc_id: str, source: str, user: dict[str, Any], fixed: dict[str, Any]
) -> list[Document]:
    text = _decode(data)
    first_line = next(line.strip() for line in text.splitlines() if line.strip())
    title = first_line if len(first_line) <= _MAX_TITLE_LINE else path.stem
    return [
        Document(
            doc_id=doc_id,
            text=text,
            source=source,
            title=title,
            sections=[Section(text=text, start=0)],
            metadata=_merge_metadata({}, user, fixed),
        )
    ]


# --------------------------------------------------------------------------------------------------
# HTML

# Page furniture, not content: navigation, banners, scripts. Dropped before extracting text.
_HTML_DROP = ("script", "style", "nav", "header", "footer", "aside", "noscript", "template", "head", "title")
_HTML_HEADINGS = {f"h{level}": level for level in range(1, 7)}
# Blocks separated by a blank line, so the chunker sees them as paragraphs.
_HTML_PARAGRAPHS = frozenset(
    {"p", "div", "section", "article", "main", "blockquote", "pre", "ul", "ol", "dl", "table", "figure",
     "form", "fieldset", "address", "details", "hr"}
)
# Blocks on their own line, without a blank line between siblings (list items, table rows).
_HTML_LINES = frozenset({"li", "dt", "dd", "tr", "br", "caption", "figcaption", "summary", "legend"})
_HTML_CELLS = frozenset({"td", "th"})


class _HtmlText:
    """Plain text built line by line from an HTML tree, remembering where each heading's section starts."""

    def __init__(self) -> None:
        self.parts: list[str] = []
        self.length = 0
        self.line: list[str] = []
        self.pending_break = 0  # newlines owed before the next written line
        self.pending_section: tuple[str, ...] | None = None
        self.starts: list[tuple[int, tuple[str, ...]]] = [(0, ())]

    def inline(self, text: str) -> None:
        self.line.append(text)

    def block(self, newlines: int) -> None:
        """End the current line; ask for ``newlines`` line breaks (1 or 2) before the next one."""
        self.flush()
        self.pending_break = max(self.pending_break, newlines)

    def section(self, headings: tuple[str, ...]) -> None:
        """The next written line (a heading) opens a section with this heading path."""
        self.pending_section = headings

    def flush(self, raw: str | None = None) -> None:
        """Write the buffered inline text as one line (whitespace collapsed), or ``raw`` verbatim."""
        line = raw if raw is not None else " ".join("".join(self.line).split())
        self.line = []
        if not line.strip():
            return
        if self.length:
            self._write("\n" * max(self.pending_break, 1))
        self.pending_break = 0
        if self.pending_section is not None:
            self.starts.append((self.length, self.pending_section))
            self.pending_section = None
        self._write(line)

    def _write(self, text: str) -> None:
        self.parts.append(text)
        self.length += len(text)

    def text(self) -> str:
        self.flush()
        return "".join(self.parts)


def _html_to_text(root: Any) -> _HtmlText:
    """Walk ``root`` iteratively (deeply nested pages would overflow recursion) into an :class:`_HtmlText`."""
    from bs4 import NavigableString
    from bs4.element import PreformattedString

    out = _HtmlText()
    stack: list[tuple[Any, bool]] = [(root, False)]
    open_headings: list[tuple[int, str]] = []
    while stack:
        node, closing = stack.pop()
        if isinstance(node, NavigableString):
            if not isinstance(node, PreformattedString):  # comments, doctypes, CDATA
                out.inline(str(node))
            continue
        name = node.name
        if name in _HTML_HEADINGS:
            heading = " ".join(node.get_text(" ").split())
            if heading:
                out.block(2)
                out.section(_push_heading(open_headings, _HTML_HEADINGS[name], heading))
                out.flush(heading)
                out.block(2)
            continue
        if name == "pre":
            out.block(2)
            out.flush(node.get_text().strip("\n"))
            out.block(2)
            continue
        if closing:
            if name in _HTML_PARAGRAPHS:
                out.block(2)
            elif name in _HTML_LINES:
                out.block(1)
            elif name in _HTML_CELLS:
                out.inline(" ")
            continue
        if name in _HTML_PARAGRAPHS:
            out.block(2)
        elif name in _HTML_LINES:
            out.block(1)
        stack.append((node, True))
        stack.extend((child, False) for child in reversed(node.contents))
    return out


def _load_html(
    data: bytes, path: Path, doc_id: str, source: str, user: dict[str, Any], fixed: dict[str, Any]
) -> list[Document]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(_decode(data), "html.parser")
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if title_tag else ""
    for tag in soup.find_all(_HTML_DROP):
        tag.decompose()
    root = soup.find("main") or soup.find("article") or soup.find("body") or soup
    if not title:
        h1 = root.find("h1")
        title = (" ".join(h1.get_text(" ").split()) if h1 else "") or path.stem
    built = _html_to_text(root)
    text = built.text()
    if not text.strip():
        raise LoaderError("no text content")
    return [
        Document(
            doc_id=doc_id,
            text=text,
            source=source,
            title=title,
            sections=_sections_at(text, built.starts),
            metadata=_merge_metadata({}, user, fixed),
        )
    ]


# --------------------------------------------------------------------------------------------------
# PDF

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


def _load_pdf(
    data: bytes, path: Path, doc_id: str, source: str, user: dict[str, Any], fixed: dict[str, Any]
) -> list[Document]:
    pages, pdf_title = _pdf_pages(data)
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
            doc_id=doc_id,
            text=_PAGE_SEPARATOR.join(parts),
            source=source,
            title=path.stem if title.lower() in _PLACEHOLDER_TITLES else title,
            sections=sections,
            metadata=_merge_metadata({}, user, fixed),
        )
    ]


# --------------------------------------------------------------------------------------------------
# JSONL (BEIR corpus)


def _load_jsonl(
    data: bytes,
    path: Path,
    doc_id: str,
    source: str,
    user: dict[str, Any],
    fixed: dict[str, Any],
    problems: list[tuple[str, str]] | None = None,
) -> list[Document]:
    """One document per line of a BEIR corpus: ``{"_id", "title", "text", "metadata"?}``.

    The title, when present, is prepended to the text (``title\\n\\ntext``) so BM25 and the embedder both
    see it, as BEIR's own dense baselines do; one section spans the whole text. Blank lines are skipped.
    A line whose metadata uses a reserved key is reported in ``problems`` and skipped when ``problems``
    is given; malformed lines (invalid JSON, no ``_id``, a repeated ``_id``) fail the whole file.
    """
    docs: list[Document] = []
    seen: set[str] = set()
    for number, line in enumerate(_decode(data).split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise LoaderError(f"line {number}: invalid JSON ({exc.msg})") from None
        if not isinstance(record, dict):
            raise LoaderError(f"line {number}: expected a JSON object")
        if record.get("_id") is None:
            raise LoaderError(f'line {number}: missing "_id"')
        body = record.get("text")
        if not isinstance(body, str):
            raise LoaderError(f'line {number}: missing "text"')
        line_meta = record.get("metadata") or {}
        if not isinstance(line_meta, dict):
            raise LoaderError(f'line {number}: "metadata" must be an object')
        line_id = str(record["_id"])
        if line_id in seen:
            raise LoaderError(f"line {number}: duplicate _id {line_id!r}")
        seen.add(line_id)
        title = str(record.get("title") or "").strip()
        text = f"{title}\n\n{body}" if title and body.strip() else (title or body)
        try:
            merged = _merge_metadata(line_meta, user, fixed)
        except LoaderError as exc:
            if problems is None:
                raise LoaderError(f"line {number}: {exc}") from None
            problems.append((f"line {number} (_id {line_id!r})", str(exc)))
            continue
        docs.append(
            Document(
                doc_id=line_id,
                text=text,
                source=source,
                title=title or line_id,
                sections=[Section(text=text, start=0)] if text.strip() else [],
                metadata=merged,
            )
        )
    return docs


_Loader = Callable[[bytes, Path, str, str, dict[str, Any], dict[str, Any]], list[Document]]

_LOADERS: dict[str, _Loader] = {
    **dict.fromkeys(_MARKDOWN_SUFFIXES, _load_markdown),
    **dict.fromkeys(_TEXT_SUFFIXES, _load_text),
    **dict.fromkeys(_HTML_SUFFIXES, _load_html),
    ".pdf": _load_pdf,
    ".jsonl": _load_jsonl,
}
