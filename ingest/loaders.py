"""Read files from disk into :class:`~rag.core.types.Document` values through the parser registry.

:func:`load_file` is the single entry point: it reads the file (within ``ingest.max_file_mb``), picks a
parser by suffix, checks the content against the format, and returns documents whose
:attr:`~rag.core.types.Document.sections` tile the structure chunking must respect. Every failure a user
can cause (an empty, binary, mis-encoded, corrupt, oversized or unsupported file) raises
:class:`~rag.core.errors.LoaderError` with a short human reason and no path, so the caller can report
``<path>: <reason>`` and carry on with the other files.

Metadata precedence, lowest to highest: format metadata (Markdown front-matter, e-mail headers, a JSONL
line's ``metadata``) < the caller's ``metadata`` (``--meta`` user tags) < keys the parser sets
(``format``, ``encoding``) < ``modified``. ``modified`` is always the file's mtime as ISO-8601 UTC
(``2024-05-01T09:30:00Z``), because incremental ingest and date filters rely on it meaning exactly that.
"""

from __future__ import annotations

import logging
import os
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers import ParseContext, ParseLimits, ParserRegistry

log = logging.getLogger(__name__)


@lru_cache(maxsize=1)
def default_registry() -> ParserRegistry:
    """The built-in parsers and the installed plugins, with no suffix overrides (built once)."""
    return ParserRegistry()


def supported_suffixes() -> frozenset[str]:
    """File suffixes some installed parser reads (lower case, with the dot)."""
    return default_registry().suffixes()


def check_file(path: Path, limits: ParseLimits, registry: ParserRegistry) -> os.stat_result:
    """What can be known about a file before reading it: a parser claims its type and it is within
    ``ingest.max_file_mb``.

    Returns:
        The file's ``stat`` (following a symbolic link to the file it leads to).

    Raises:
        LoaderError: the suffix is unsupported, the file cannot be looked at, or it is too large.
    """
    reason = registry.unsupported_reason(path.name)
    if reason:
        raise LoaderError(reason)
    try:
        stat = path.stat()
    except OSError as exc:
        raise LoaderError(f"cannot read file: {exc.strerror or exc}") from None
    if stat.st_size > limits.max_file_bytes:
        raise LoaderError(
            f"file of {stat.st_size / 2**20:.0f} MiB is larger than ingest.max_file_mb ({limits.max_file_mb:g})"
        )
    return stat


def load_file(
    path: Path,
    *,
    doc_id: str,
    source: str,
    metadata: dict[str, Any] | None = None,
    problems: list[tuple[str, str]] | None = None,
    limits: ParseLimits | None = None,
    registry: ParserRegistry | None = None,
    data: bytes | None = None,
) -> list[Document]:
    """Load one file into documents with the parser its suffix selects (case-insensitive).

    Args:
        path: the file to read.
        doc_id: stable id of the (first) document; multi-document formats derive or carry their own.
        source: display path, stored on each document for citations.
        metadata: user tags (``--meta``); they override format metadata such as front-matter.
        problems: where a multi-record file reports a bad record as ``(label, reason)`` and carries on
            with the others; without it, a bad record fails the whole file.
        limits: bounds on size, pages, rows and nesting; the defaults when ``None``.
        registry: the parsers to choose from; the installed ones when ``None``.
        data: the file's bytes when the caller has read them already.

    Returns:
        The loaded documents. Each has ``metadata["modified"]`` set to the file's mtime (ISO-8601 UTC).

    Raises:
        LoaderError: the suffix is unsupported, or the file cannot be read, is empty, past a limit, not of
            its format, or holds no text.
    """
    registry = registry or default_registry()
    limits = limits or ParseLimits()
    stat = check_file(path, limits, registry)
    if data is None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise LoaderError(f"cannot read file: {exc.strerror or exc}") from None
    if not data or data.isspace():  # not data.strip(): that would copy a large file
        raise LoaderError("empty file")
    # Merged last, over user tags and format metadata, so ``modified`` always means the file's mtime.
    fixed = {"modified": datetime.fromtimestamp(stat.st_mtime, tz=UTC).strftime("%Y-%m-%dT%H:%M:%SZ")}
    ctx = ParseContext(
        name=path.name, doc_id=doc_id, source=source, metadata=dict(metadata or {}), fixed=fixed, limits=limits,
        problems=problems,
    )
    docs = registry.parse(data, ctx)
    log.debug("loaded %s: %d document(s)", source, len(docs))
    return docs


def __getattr__(name: str) -> Any:
    # SUPPORTED_SUFFIXES was a constant before parsers became plugins; it now depends on what is installed.
    if name == "SUPPORTED_SUFFIXES":
        return supported_suffixes()
    raise AttributeError(name)
