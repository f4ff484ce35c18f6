"""Typed values that flow between the stages: documents in, chunks stored, hits out."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

RESERVED_METADATA_KEYS: frozenset[str] = frozenset(
    {
        "chunk_id", "text", "doc_id", "source", "title", "content_hash", "headings", "section", "page",
        "start", "end", "chunk_index", "n_tokens", "modified",
        # Set by parsers: where in the file a chunk lies, and how the file was read.
        "format", "encoding", "slide", "sheet", "table", "row_start", "row_end", "parent_id", "ocr",
        # Set by ingest with chunking.context_prefix: the title and heading path embedded with the chunk.
        "context_prefix",
    }
)
"""Metadata keys the platform sets on every chunk; user metadata (front-matter, ``--meta``, a JSONL line's
``metadata``) may not use them, since a silent override would lose either the user's value or ours."""


def reserved_keys_in(metadata: dict[str, Any]) -> list[str]:
    """The keys of ``metadata`` that are reserved, sorted (empty when it is fine)."""
    return sorted(RESERVED_METADATA_KEYS.intersection(metadata))


def indexed_text(text: str, metadata: Mapping[str, Any]) -> str:
    """What is embedded and keyword-indexed for a chunk: its ``context_prefix`` (document title and heading
    path, set by ingest when ``chunking.context_prefix`` is on), a blank line, then its text; the text alone
    when it has no prefix. Citations and answers show the text alone."""
    prefix = metadata.get("context_prefix")
    return f"{prefix}\n\n{text}" if prefix else text


@dataclass(frozen=True, slots=True)
class Table:
    """What makes a :class:`Section` a table: chunks of it are cut between rows and repeat its header.

    The section's text is the table as Markdown: ``header`` (the column-name row and the ``|---|`` rule),
    then one line per data row. Every chunk of the section starts with ``header``, so a row retrieved on
    its own still carries its column names.

    Attributes:
        header: the header lines, exactly as the section text starts, without the trailing newline.
        name: the sheet name, caption or other name of the table, or ``None``.
        first_row: the row number (as the source counts rows, e.g. a spreadsheet's 1-based row) of the
            first data row; chunks record ``row_start`` and ``row_end`` from it.
    """

    header: str
    name: str | None = None
    first_row: int = 1


@dataclass(frozen=True, slots=True)
class Section:
    """A structural span of a document: a heading's section, a page, a slide, a table.

    Chunk windows never cross a section boundary, so every chunk has one heading path, one page and one
    location.

    Attributes:
        text: the section's text, exactly as it appears in the document text.
        start: character offset of ``text`` inside :attr:`Document.text`.
        headings: the heading path that leads to this section, outermost first.
        page: 1-based page number for paged formats, else ``None``.
        location: where the section lies in the file beyond the page, copied into every chunk's metadata
            (``{"slide": 3}``, ``{"sheet": "Sales"}``); keys must be reserved metadata keys.
        table: set when the section is a table (see :class:`Table`).
    """

    text: str
    start: int
    headings: tuple[str, ...] = ()
    page: int | None = None
    location: Mapping[str, Any] = field(default_factory=dict)
    table: Table | None = None


@dataclass(slots=True)
class Document:
    """One loaded document, before chunking.

    Attributes:
        doc_id: stable identity (a path relative to the project, or a corpus ``_id``).
        text: the full plain text; section and chunk offsets point into it.
        source: where it came from (file path), shown in citations.
        title: human title (front-matter, ``<title>``, first heading, or file name).
        sections: the spans chunking works within; offsets point into ``text``.
        metadata: user metadata (front-matter, ``--meta``, JSONL ``metadata``) plus ``modified``.
    """

    doc_id: str
    text: str
    source: str
    title: str
    sections: list[Section]
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Chunk:
    """An indexed window of a document, the unit of retrieval and citation.

    ``metadata`` is flat and filterable. Every chunk carries: ``doc_id``, ``source``, ``title``,
    ``headings`` (list), ``section`` (the heading path joined by `` > ``), ``page``, ``start`` and
    ``end`` (character offsets in the document text), ``modified`` (ISO-8601 UTC), ``content_hash``
    (of the whole document), ``chunk_index``, ``n_tokens`` and any user metadata.
    """

    chunk_id: str
    doc_id: str
    text: str
    metadata: dict[str, Any]

    @property
    def source(self) -> str:
        return str(self.metadata.get("source", self.doc_id))

    @property
    def indexed_text(self) -> str:
        """The text embedded and keyword-indexed for this chunk (see :func:`indexed_text`)."""
        return indexed_text(self.text, self.metadata)

    @property
    def section(self) -> str:
        return str(self.metadata.get("section") or "")

    def citation_label(self) -> str:
        """``source § section (p. N)``: what a reader needs to find the passage."""
        label = self.source
        if self.section:
            label += f" § {self.section}"
        if self.metadata.get("page") is not None:
            label += f" (p. {self.metadata['page']})"
        return label


@dataclass(slots=True)
class Hit:
    """A retrieved chunk with its final score and the scores behind it.

    ``score`` is the fused score, or after reranking the reranker's (or the blend, see ``rerank.score``);
    ``rerank_score`` is the reranker's own score, ``None`` when no reranker ran or it could not score
    this chunk. ``expanded_text`` is the chunk widened with its neighbours or its section
    (``generation.expand``), made just before an answer is generated; ``None`` when it was not widened.
    """

    chunk: Chunk
    score: float
    dense_score: float | None = None
    bm25_score: float | None = None
    rerank_score: float | None = None
    expanded_text: str | None = None

    @property
    def context_text(self) -> str:
        """The text a generator answers from: :attr:`expanded_text` when the chunk was widened, else the
        chunk's own text. Citations still name the chunk (its id, source and section)."""
        return self.chunk.text if self.expanded_text is None else self.expanded_text

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape printed by ``rag search --json``."""
        return {
            "doc_id": self.chunk.doc_id,
            "chunk_id": self.chunk.chunk_id,
            "score": self.score,
            "dense_score": self.dense_score,
            "bm25_score": self.bm25_score,
            "rerank_score": self.rerank_score,
            "metadata": self.chunk.metadata,
            "text": self.chunk.text,
        }


@dataclass(frozen=True, slots=True)
class ScoredId:
    """A store- or BM25-level result: a chunk id and its raw score, before fusion."""

    chunk_id: str
    score: float


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the two retrievers saw for one query before fusion normalised it away (the answerability input).

    Fused scores are min-max normalised per query, so the top hit scores near 1 whether or not anything
    relevant was found. The raw scores are not: these are what :mod:`rag.retrieve.answerable` turns into
    the probability that the index holds an answer. A field is ``None`` when its retriever did not run
    (``alpha`` 0 or 1, a store's native hybrid query) or, for ``rerank_top``, when no reranker ran.

    Attributes:
        dense_top: the best raw cosine similarity of the dense side.
        dense_gap: ``dense_top`` minus the mean cosine of dense ranks 2–10: how far the best stands out.
        bm25_top: the best raw keyword score (BM25 for the local index).
        bm25_per_term: ``bm25_top`` divided by the number of analysed query terms (query-length normalised).
        bm25_gap: ``(s1 - s10) / s1`` of the keyword scores (``s10`` is 0 when fewer than 10 chunks match).
        term_coverage: the share of the analysed query terms that the best keyword hit contains.
        agreement: the share of the dense top 10 that is also in the keyword top 10.
        dense_top_in_bm25: whether the dense side's best chunk is in the keyword top 10.
        query_terms: analysed query terms the keyword side scored with (``None`` if it cannot say).
        rerank_top: the best reranker score, when reranking ran.
        keyword: the keyword side's name (``bm25s`` locally); the calibrated model uses keyword
            features only from ``bm25s``, whose scale it was fitted on.
    """

    dense_top: float | None = None
    dense_gap: float | None = None
    bm25_top: float | None = None
    bm25_per_term: float | None = None
    bm25_gap: float | None = None
    term_coverage: float | None = None
    agreement: float | None = None
    dense_top_in_bm25: bool | None = None
    query_terms: int | None = None
    rerank_top: float | None = None
    keyword: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape (``evidence`` in search and ask output)."""
        return {
            "dense_top": self.dense_top,
            "dense_gap": self.dense_gap,
            "bm25_top": self.bm25_top,
            "bm25_per_term": self.bm25_per_term,
            "bm25_gap": self.bm25_gap,
            "term_coverage": self.term_coverage,
            "agreement": self.agreement,
            "dense_top_in_bm25": self.dense_top_in_bm25,
            "query_terms": self.query_terms,
            "rerank_top": self.rerank_top,
            "keyword": self.keyword,
        }
