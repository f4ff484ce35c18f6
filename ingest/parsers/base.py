"""The parser contract: what a format parser declares, what it is given, and what it returns.

A parser turns the bytes of one file into :class:`~rag.core.types.Document` values whose sections tile
the structure chunking must respect (headings, pages, slides, sheets, tables). It is chosen by suffix and
confirmed by content (:meth:`Parser.sniff`), so a binary file named ``.txt`` is refused with a reason
instead of being indexed as garbage.

Every failure a user can cause (a corrupt, encrypted, oversized or empty file) raises
:class:`~rag.core.errors.LoaderError` with a short reason and no path; the pipeline reports
``<path>: <reason>`` and carries on with the other files.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time
from pathlib import PurePosixPath
from typing import Any, Literal, Protocol, runtime_checkable

from rag.core.errors import LoaderError
from rag.core.types import Document, reserved_keys_in

OcrMode = Literal["auto", "always", "never"]


@dataclass(frozen=True, slots=True)
class ParseLimits:
    """Bounds on the work one file may cause, so that a hostile or huge file costs bounded time and memory.

    Each limit is an ``[ingest]`` setting (see :class:`~rag.core.settings.IngestSettings`); a file past a
    limit fails with a reason that names the setting, and the rest of the run goes on.

    Attributes:
        max_file_mb: largest file read at all.
        max_unpacked_mb: most bytes a container (Office zip, EPUB, gzip, e-mail attachments) may unpack to.
        max_pages: most pages of a PDF (or frames of a TIFF).
        max_rows: most rows of one sheet or CSV file.
        max_depth: how deep containers nest (an attachment of an attachment is depth 2).
        ocr: ``auto`` reads pages without a text layer (and images) with OCR, ``always`` OCRs every PDF
            page, ``never`` never runs OCR (such pages and images are reported, not indexed).
    """

    max_file_mb: float = 256
    max_unpacked_mb: float = 512
    max_pages: int = 5000
    max_rows: int = 200_000
    max_depth: int = 3
    ocr: OcrMode = "auto"

    @property
    def max_file_bytes(self) -> int:
        return int(self.max_file_mb * 1024 * 1024)

    @property
    def max_unpacked_bytes(self) -> int:
        return int(self.max_unpacked_mb * 1024 * 1024)


@dataclass(slots=True)
class ParseContext:
    """What a parser is told besides the bytes.

    Attributes:
        name: the file's name (or an attachment's, a compressed file's inner name); suffix checks use it.
        doc_id: the id of the (first) document; a parser that yields several documents derives theirs
            from it (``<doc_id>#2``) unless the format carries its own ids (BEIR JSONL).
        source: the display path every document cites.
        metadata: the caller's user tags (``--meta``); they override format metadata.
        fixed: keys set last, over everything (``modified``: the file's mtime).
        limits: the bounds above.
        problems: where a multi-record file reports a bad record as ``(label, reason)`` and carries on;
            ``None`` means a bad record fails the whole file.
        depth: how deep inside containers this file is (0 for a file on disk).
        parse_child: parses a contained file (an attachment, the inside of a ``.gz``) through the registry:
            ``parse_child(data, name, doc_id)``; raises :class:`LoaderError` past ``limits.max_depth``.
    """

    name: str
    doc_id: str
    source: str
    metadata: dict[str, Any] = field(default_factory=dict)
    fixed: dict[str, Any] = field(default_factory=dict)
    limits: ParseLimits = field(default_factory=ParseLimits)
    problems: list[tuple[str, str]] | None = None
    depth: int = 0
    parse_child: Callable[[bytes, str, str], list[Document]] | None = None

    @property
    def suffix(self) -> str:
        """The last suffix of :attr:`name`, lower case, with the dot (``""`` when it has none)."""
        return PurePosixPath(self.name).suffix.lower()

    @property
    def stem(self) -> str:
        """:attr:`name` without its directory and last suffix: the fallback title."""
        return PurePosixPath(self.name).stem

    def merge_metadata(self, fmt: dict[str, Any] | None = None, **platform: Any) -> dict[str, Any]:
        """Format metadata < user tags < platform keys (``format``, ``encoding`` ...) < fixed keys.

        Args:
            fmt: metadata read from the file (front-matter, e-mail headers); made JSON-safe here.
            platform: reserved keys the parser sets itself (``format="docx"``); ``None`` values are dropped.

        Raises:
            LoaderError: ``fmt`` uses a key the platform sets (``source``, ``page``, ...).
        """
        fmt = jsonable(fmt or {})
        clash = reserved_keys_in(fmt)
        if clash:
            raise LoaderError(
                f"metadata key(s) {', '.join(clash)} are reserved (every chunk gets them from the platform); "
                "rename them in the document"
            )
        own = {key: value for key, value in platform.items() if value is not None}
        return {**fmt, **self.metadata, **own, **self.fixed}


@runtime_checkable
class Parser(Protocol):
    """A file format reader, registered by name (built-ins here, plugins in the ``rag.parsers`` entry points).

    Attributes:
        name: short unique name (``"docx"``), shown by ``rag formats`` and stored as chunk ``format``.
        suffixes: lower-case file suffixes with the dot that select this parser (``(".docx",)``).
        media_types: the MIME types it reads (for uploads and documentation).
        description: one line on what it extracts (shown by ``rag formats``).
        extra: the pip extra that installs what it needs (``"ocr"``), or ``None`` in the base install.
    """

    name: str
    suffixes: tuple[str, ...]
    media_types: tuple[str, ...]
    description: str
    extra: str | None

    def available(self) -> str | None:
        """``None`` when the parser can run here, else why not (a missing package, with the install hint)."""
        ...

    def sniff(self, head: bytes) -> str | None:
        """Check the first bytes of a file against the format: ``None`` when they fit, else the reason.

        ``head`` holds at least the first 8 KiB (or the whole file when shorter).
        """
        ...

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Read one file. Returns at least one document with non-blank text.

        Raises:
            LoaderError: the file is corrupt, encrypted, past a limit, or holds no text.
        """
        ...


# --------------------------------------------------------------------------------------------------
# Helpers parsers share

ZIP_MAGIC = b"PK\x03\x04"
PDF_MAGIC = b"%PDF-"

# What a file's first bytes say it is, for reasons like "content is a PDF, not text".
_MAGIC_NAMES = (
    (PDF_MAGIC, "a PDF"),
    (ZIP_MAGIC, "a zip archive"),
    (b"\x89PNG\r\n\x1a\n", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"II*\x00", "a TIFF image"),
    (b"MM\x00*", "a TIFF image"),
    (b"GIF8", "a GIF image"),
    (b"\x1f\x8b", "gzip-compressed data"),
    (b"\x7fELF", "an executable"),
    (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1", "a legacy Office file (.doc/.xls/.ppt)"),
    (b"SQLite format 3\x00", "an SQLite database"),
)


def describe_magic(head: bytes) -> str | None:
    """What the magic number at the start of ``head`` says the file is (``"a PDF"``), or ``None``."""
    for magic, name in _MAGIC_NAMES:
        if head.startswith(magic):
            return name
    return None


def sniff_magic(head: bytes, magic: bytes, expected: str) -> str | None:
    """The reason a file that should start with ``magic`` does not (``None`` when it does)."""
    if head.startswith(magic):
        return None
    actual = describe_magic(head)
    return f"not {expected}: the content is {actual}" if actual else f"not {expected} (unrecognised content)"


def sniff_text(head: bytes) -> str | None:
    """For text formats: why ``head`` is not text (``None`` when it may be): a known binary magic number."""
    kind = describe_magic(head)
    return f"binary file, not text (the content is {kind})" if kind else None


def jsonable(value: Any) -> Any:
    """``value`` made JSON-serialisable: dates and times become ISO strings, unknown types ``str``."""
    if value is None or isinstance(value, (str, bool, int, float)):
        return value
    if isinstance(value, (date, time)):  # datetime is a date subclass
        return value.isoformat()
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(item) for item in value]
    return str(value)


def iso_utc(moment: datetime) -> str:
    """A datetime as ISO-8601 UTC with a ``Z`` (naive values are taken as UTC)."""

    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class BaseParser:
    """Defaults for :class:`Parser`: available everywhere, no content check. Subclass and set the attributes."""

    name: str = ""
    suffixes: tuple[str, ...] = ()
    media_types: tuple[str, ...] = ()
    description: str = ""
    extra: str | None = None

    def available(self) -> str | None:
        return None

    def sniff(self, head: bytes) -> str | None:
        return None

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


def missing_module(module: str, extra: str | None, package: str | None = None) -> str | None:
    """``None`` when ``module`` imports, else the install hint for it (``pip install 'rag-platform[ocr]'``)."""
    import importlib.util

    try:
        if importlib.util.find_spec(module) is not None:
            return None
    except (ImportError, ValueError):
        pass
    hint = f"pip install 'rag-platform[{extra}]'" if extra else f"pip install {package or module}"
    return f"needs {package or module}: {hint}"
