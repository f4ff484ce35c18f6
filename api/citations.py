"""Citations in the shapes other software reads: a URL per cited chunk, and OpenAI's ``url_citation``.

An answer cites context block ``n`` with an inline ``[n]`` marker (or ``[n, m]``). Chat clients built for
OpenAI do not know our ``sources`` field, but they do know the message's ``annotations``: a list of
``{"type": "url_citation", "url_citation": {"url", "title", "start_index", "end_index"}}`` where
``content[start_index:end_index]`` is the text the citation belongs to. Here that span is the marker
itself, and the URL is the chunk's own address, ``GET /v1/collections/{c}/documents/{doc_id}?chunk=ID``,
which returns the chunk with its character offsets in the document.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import quote

from rag.core.answers import CITATION_MARKER, numbered_hits
from rag.core.types import Hit

_DIGITS = re.compile(r"\d+")


def chunk_path(collection: str, doc_id: str, chunk_id: str) -> str:
    """The chunk's URL path (``/v1/collections/{c}/documents/{doc_id}?chunk={chunk_id}``), escaped.

    A document id keeps its slashes (the route takes them); everything else that is not safe in a URL
    path or query (``?``, ``#``, ``%``, spaces, non-ASCII) is percent-encoded.
    """
    return f"/v1/collections/{quote(collection, safe='')}/documents/{quote(doc_id, safe='/')}?chunk={quote(chunk_id, safe='')}"


def numbered_sources(hits: list[Hit], collection: str) -> list[dict[str, Any]]:
    """``hits`` as the API's numbered sources (``n`` = the block number ``[n]`` cites), each with the
    ``url`` path of its chunk."""
    return [
        {**source, "url": chunk_path(collection, source["doc_id"], source["chunk_id"])}
        for source in numbered_hits(hits, "n")
    ]


def url_citations(content: str, hits: list[Hit], collection: str, base_url: str) -> list[dict[str, Any]]:
    """OpenAI ``url_citation`` annotations for the ``[n]`` markers in ``content``, in text order.

    Args:
        content: the answer text exactly as the client receives it (for a stream: all deltas joined).
        hits: the numbered context blocks; block ``n`` is ``hits[n - 1]``.
        collection: the collection the hits come from (it is part of the URL).
        base_url: the server's address as the client reached it, e.g. ``http://host:8000/``.

    Returns:
        One annotation per cited number per marker occurrence; a number with no block gets none. For
        ``[n]`` the span ``[start_index, end_index)`` is the whole marker; in ``[n, m]`` each number's
        span is its own digits, so spans never overlap. Offsets count characters (code points), so
        ``content[start_index:end_index]`` is the cited text in Python.
    """
    base = base_url.rstrip("/")
    annotations: list[dict[str, Any]] = []
    for match in CITATION_MARKER.finditer(content):
        numbers = [(int(number.group()), match.start(1) + number.start(), match.start(1) + number.end())
                   for number in _DIGITS.finditer(match.group(1))]
        single = len(numbers) == 1
        for number, start, end in numbers:
            if not 1 <= number <= len(hits):
                continue
            chunk = hits[number - 1].chunk
            annotations.append({
                "type": "url_citation",
                "url_citation": {
                    "url": base + chunk_path(collection, chunk.doc_id, chunk.chunk_id),
                    "title": chunk.citation_label(),
                    "start_index": match.start() if single else start,
                    "end_index": match.end() if single else end,
                },
            })
    return annotations

