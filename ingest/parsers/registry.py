"""Which parser reads which file: built-ins registered here, third-party parsers from entry points.

Third-party parsers come from the ``rag.parsers`` entry-point group; an entry point names a
:class:`~rag.ingest.parsers.base.Parser` instance or a class (or factory) called with no arguments::

    [project.entry-points."rag.parsers"]
    vsdx = "my_package.visio:VisioParser"

A plugin's name may not shadow a built-in's. A suffix goes to the built-in parser that claims it, then
to the plugins (in name order); ``ingest.parsers`` in ``rag.toml`` (``{".pdf" = "mypdf"}``) picks the
parser for a suffix explicitly, a plugin included.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import PurePosixPath

from rag.core.errors import ConfigError, LoaderError, UnsupportedFileError
from rag.core.types import Document
from rag.ingest.parsers.base import ParseContext, Parser

log = logging.getLogger(__name__)

ENTRY_POINT_GROUP = "rag.parsers"

# Bytes handed to Parser.sniff: enough for every magic number and a charset declaration.
SNIFF_BYTES = 8192

# Built-in parsers as "module:Class", in the order `rag formats` lists them.
BUILTIN_PARSERS: tuple[str, ...] = (
    "rag.ingest.parsers.markdown:MarkdownParser",
    "rag.ingest.parsers.text:TextParser",
    "rag.ingest.parsers.rst:RstParser",
    "rag.ingest.parsers.html:HtmlParser",
    "rag.ingest.parsers.pdf:PdfParser",
    "rag.ingest.parsers.jsonl:JsonlParser",
    "rag.ingest.parsers.docx:DocxParser",
    "rag.ingest.parsers.pptx:PptxParser",
    "rag.ingest.parsers.xlsx:XlsxParser",
    "rag.ingest.parsers.delimited:CsvParser",
    "rag.ingest.parsers.mail:EmlParser",
    "rag.ingest.parsers.mail:MboxParser",
    "rag.ingest.parsers.epub:EpubParser",
    "rag.ingest.parsers.notebook:NotebookParser",
    "rag.ingest.parsers.compressed:GzipParser",
    "rag.ingest.parsers.image:ImageParser",
)


@dataclass(frozen=True, slots=True)
class FormatInfo:
    """One row of ``rag formats``: a parser, what it reads, and whether it can run here."""

    name: str
    suffixes: tuple[str, ...]
    media_types: tuple[str, ...]
    description: str
    extra: str | None
    plugin: bool
    unavailable: str | None  # None when usable, else why not (with the install hint)

    def to_dict(self) -> dict[str, object]:
        return {
            "name": self.name,
            "suffixes": list(self.suffixes),
            "media_types": list(self.media_types),
            "description": self.description,
            "extra": self.extra,
            "plugin": self.plugin,
            "available": self.unavailable is None,
            "unavailable": self.unavailable,
        }


def _instantiate(target: object, what: str) -> Parser:
    parser = target() if isinstance(target, type) or (callable(target) and not hasattr(target, "parse")) else target
    if not isinstance(parser, Parser) or not parser.name or not parser.suffixes:
        raise ConfigError(f"{what} is not a parser (needs name, suffixes, media_types, description, extra, "
                          "available(), sniff() and parse())")
    bad = [s for s in parser.suffixes if not s.startswith(".") or s != s.lower()]
    if bad:
        raise ConfigError(f"{what}: suffixes must be lower case and start with a dot, got {', '.join(bad)}")
    return parser


class ParserRegistry:
    """The parsers of this installation, and the choice of one for a file name.

    Args:
        overrides: suffix → parser name, taking precedence over the default choice (``ingest.parsers``).
        plugins: load ``rag.parsers`` entry points (tests turn it off to see the built-ins alone).

    Raises:
        ConfigError: an override names an unknown parser or a malformed suffix.
    """

    def __init__(self, overrides: Mapping[str, str] | None = None, *, plugins: bool = True) -> None:
        self._parsers: dict[str, Parser] = {}
        self._plugin_names: set[str] = set()
        for spec in BUILTIN_PARSERS:
            module, _, attr = spec.partition(":")
            parser = _instantiate(getattr(importlib.import_module(module), attr), spec)
            self._parsers[parser.name] = parser
        if plugins:
            self._load_plugins()
        self._by_suffix: dict[str, Parser] = {}
        for parser in self._parsers.values():  # built-ins first, then plugins by name
            for suffix in parser.suffixes:
                self._by_suffix.setdefault(suffix, parser)
        for suffix, name in (overrides or {}).items():
            if not suffix.startswith("."):
                raise ConfigError(f"ingest.parsers: a suffix starts with a dot, got {suffix!r}")
            if name not in self._parsers:
                raise ConfigError(
                    f"ingest.parsers: no parser named {name!r} for {suffix}; installed: {', '.join(sorted(self._parsers))}"
                )
            self._by_suffix[suffix.lower()] = self._parsers[name]

    def _load_plugins(self) -> None:
        for entry_point in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            what = f"parser plugin {entry_point.name!r} ({entry_point.value})"
            try:
                parser = _instantiate(entry_point.load(), what)
            except Exception as exc:  # noqa: BLE001 - a broken plugin must not take ingest down with it
                log.warning("ignoring %s: %s", what, exc)
                continue
            if parser.name in self._parsers:
                log.warning("ignoring %s: the name %r is taken by a built-in parser", what, parser.name)
                continue
            self._parsers[parser.name] = parser
            self._plugin_names.add(parser.name)

    # -- lookup ------------------------------------------------------------------------------------

    def get(self, name: str) -> Parser | None:
        """The parser called ``name``, or ``None``."""
        return self._parsers.get(name)

    def for_name(self, name: str) -> Parser | None:
        """The parser for a file name, by its last suffix (case-insensitive), or ``None``."""
        return self._by_suffix.get(PurePosixPath(name).suffix.lower())

    def suffixes(self) -> frozenset[str]:
        """Every suffix some parser claims."""
        return frozenset(self._by_suffix)

    def formats(self) -> list[FormatInfo]:
        """Every parser with its suffixes (those it actually serves) and availability, built-ins first."""
        rows = []
        for parser in self._parsers.values():
            served = tuple(s for s in parser.suffixes if self._by_suffix.get(s) is parser)
            served += tuple(sorted(s for s, p in self._by_suffix.items() if p is parser and s not in served))
            rows.append(
                FormatInfo(
                    name=parser.name, suffixes=served, media_types=tuple(parser.media_types),
                    description=parser.description, extra=parser.extra, plugin=parser.name in self._plugin_names,
                    unavailable=parser.available(),
                )
            )
        return rows

    # -- parsing -----------------------------------------------------------------------------------

    def unsupported_reason(self, name: str) -> str | None:
        """Why a file of this name is skipped (``None`` when a parser claims its suffix)."""
        if self.for_name(name) is not None:
            return None
        suffix = PurePosixPath(name).suffix.lower()
        return f"unsupported file type {suffix}" if suffix else "no file suffix (type unknown)"

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """Parse ``data`` with the parser for ``ctx.name``, after checking that it can run and the content fits.

        Nested files (attachments, the inside of a ``.gz``) come back through ``ctx.parse_child``, one
        level deeper each time.

        Raises:
            LoaderError: no parser claims the suffix, the parser cannot run here, the content is not of
                the format, or the parser failed on it.
        """
        parser = self.for_name(ctx.name)
        if parser is None:
            raise UnsupportedFileError(self.unsupported_reason(ctx.name) or "unsupported file type")
        missing = parser.available()
        if missing:
            raise LoaderError(f"{parser.name} files {missing}")
        if not data.strip():
            raise LoaderError("empty file")
        mismatch = parser.sniff(data[:SNIFF_BYTES])
        if mismatch:
            raise LoaderError(mismatch)

        def parse_child(child: bytes, name: str, doc_id: str) -> list[Document]:
            if ctx.depth + 1 > ctx.limits.max_depth:
                raise LoaderError(f"nested more than {ctx.limits.max_depth} deep (ingest.max_depth)")
            inner = ParseContext(
                name=name, doc_id=doc_id, source=ctx.source, metadata=ctx.metadata, fixed=ctx.fixed,
                limits=ctx.limits, problems=ctx.problems, depth=ctx.depth + 1,
            )
            return self.parse(child, inner)

        ctx.parse_child = parse_child
        try:
            docs = parser.parse(data, ctx)
        except LoaderError:
            raise
        except MemoryError:
            raise LoaderError("out of memory while parsing (lower the ingest limits or split the file)") from None
        except RecursionError:
            raise LoaderError("structure nested too deeply to parse") from None
        except Exception as exc:  # a parser library's own exception for a malformed file
            log.debug("%s parser failed on %s", parser.name, ctx.name, exc_info=True)
            raise LoaderError(f"cannot parse as {parser.name}: {type(exc).__name__}: {exc}"[:300]) from None
        if not docs and ctx.problems is None:
            raise LoaderError("no text content")
        return docs


