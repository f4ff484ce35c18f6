"""Split documents into overlapping windows measured in tokens of the embedding model's tokenizer.

Windows never cross a :class:`~rag.core.types.Section` boundary, so every chunk has one heading path and
one page. Inside a section the chunker prefers natural breaks: it cuts the section into *units*
(paragraphs; a paragraph too long for a window into sentences; a sentence too long into lines; a line
too long into runs of whole words), packs units greedily into windows of at most ``size`` tokens, and
starts each next window with the trailing whole units of the previous one that fit in ``overlap``
tokens. When the last unit alone is larger than that, the overlap falls back to the tail of that unit,
starting at a sentence start if one lies in the last ``overlap`` tokens, else at a word start.

Three kinds of structure get their own rules:

* **Tables** (a section with :attr:`Section.table <rag.core.types.Section.table>`) are cut between rows,
  never inside one, and every window repeats the table's header, so a row retrieved alone still carries
  its column names. Windows of a table do not overlap: rows are independent facts, and the repeated header
  already gives each window the context an overlap gives prose. A single row too long for a window (a huge
  cell) is the one case cut inside a row: by words, each piece still after the header.
* **Fenced code blocks** (``` or ~~~, found with markdown-it-py) are never cut at a blank line inside them,
  so a block that fits a window stays whole; a longer block is cut at line boundaries. Overlap never starts
  a window inside a block unless the block is longer than a window.
* **Tiny sections** (under ``min_tokens``: a heading alone, a label, a navigation line) are merged into the
  next section when it lies under their heading path and on the same page and location, their text leading
  its first window, or, the last one of a document, into the previous section it lies under.

Each section is tokenized once, with the offset mapping, and every later decision works on token
indices, so chunking costs one fast-tokenizer pass over the text (plus a short count of the few sections
small enough to be tiny, and a block-level Markdown parse of sections that contain a fence marker). A
section longer than ``_SLICE_CHARS`` characters is tokenized in slices cut at paragraph, line or word
boundaries (windows do not cross a slice), and :meth:`SlidingWindowChunker.iter_spans` yields windows as
it goes, so memory is bounded by the slice, not by the document.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from bisect import bisect_left
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from rag.core.errors import ConfigError
from rag.core.types import Document, Section

if TYPE_CHECKING:
    from markdown_it import MarkdownIt
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

# Separators of the split hierarchy, strongest first. Group 1 is the gap between two pieces.
_PARAGRAPH = re.compile(r"(\s*\n[ \t\f\v]*\n\s*)")
_SENTENCE = re.compile(r"[.!?\u2026][\"'\u201d\u2019)\]]*(\s+)")
_LINE = re.compile(r"(\s*\n\s*)")
_SEPARATORS = (_PARAGRAPH, _SENTENCE, _LINE)

# Sections tokenized per tokenizer call in chunk_many: large enough for the Rust tokenizer to use every
# core, small enough that offsets of a huge corpus are never all in memory at once.
_TOKENIZE_BATCH = 1024

# Characters tokenized per tokenizer call, over all its sections.
_TOKENIZE_CHARS = 1 << 20

# The longest stretch of one section tokenized at once. The offset mapping costs about 150 bytes of Python
# objects per character (a 10 MB section needed 1.7 GB); a slice of 256 Ki characters needs ~40 MB.
_SLICE_CHARS = 1 << 18

# Tokenizers that report no limit use a huge sentinel model_max_length.
_NO_LIMIT = 1_000_000

# Index of _LINE in _SEPARATORS: a code block too long for a window is cut at its lines, never at "sentences".
_LINE_LEVEL = 2

# Tiny-section candidates are counted only below this many characters per min_tokens token: MiniLM averages
# about 4-5 characters per token on English, so a longer section is practically never tiny, and the extra
# count stays off the long sections that make up most of a corpus.
_TINY_CHARS_PER_TOKEN = 10

_FENCE_MARKERS = ("```", "~~~")
_NEWLINE = re.compile(r"\r\n|\r|\n")  # what markdown-it counts as a line break


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """One window of a document, before it is embedded and stored.

    Attributes:
        text: the window's text, without leading or trailing whitespace: exactly ``doc.text[start:end]``,
            except in a table window after the first, which is the table's header, a newline, then
            ``doc.text[start:end]`` (its rows), so that every window of a table names its columns.
        start: character offset of the window in :attr:`Document.text` (in a table, of its first row, or
            of the header for the first window).
        end: character offset just past the window.
        headings: heading path of the section the window lies in.
        page: 1-based page of that section, or ``None``.
        n_tokens: tokens in ``text`` (header included), without the special tokens the embedder adds.
        location: the section's location keys (``slide``, ``sheet`` ...) and, in a table, ``table`` (the
            table's name, when it has one), ``row_start`` and ``row_end`` (the source's numbers of the first
            and last row in the window); copied into the chunk's metadata.
    """

    text: str
    start: int
    end: int
    headings: tuple[str, ...]
    page: int | None
    n_tokens: int
    location: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class _Unit:
    """A piece of a section that is never split across windows (except for token-level overlap).

    ``start``/``end`` are trimmed character offsets in the section text, ``tok_start``/``tok_end`` token
    indices. ``joins_previous`` is False when the boundary before the unit cuts through a word: the
    tokenizer would read the two halves differently on their own, so no window spans that boundary.
    """

    start: int
    end: int
    tok_start: int
    tok_end: int
    n_tokens: int
    joins_previous: bool


class _Tokens:
    """A section's text with the character offsets of its tokens."""

    __slots__ = ("ends", "starts", "text")

    starts: Sequence[int]
    ends: Sequence[int]

    def __init__(self, text: str, offsets: Sequence[tuple[int, int]]) -> None:
        self.text = text
        # zip(*...) transposes in C; these lists are the hot path for long corpora.
        self.starts, self.ends = zip(*offsets) if offsets else ((), ())

    def index(self, pos: int) -> int:
        """Index of the first token that starts at or after character ``pos``."""
        return bisect_left(self.starts, pos)

    def clean_cut(self, t: int) -> bool:
        """True when cutting before token ``t`` (``0 < t < len``) splits no word, so each side tokenizes
        the same alone.

        Holds at whitespace and next to punctuation, where BERT-style pre-tokenizers split anyway.
        """
        if self.starts[t] > self.ends[t - 1]:
            return True
        return _is_punctuation(self.text[self.starts[t]]) or _is_punctuation(self.text[self.ends[t - 1] - 1])


def _is_punctuation(char: str) -> bool:
    # The definition BERT's pre-tokenizer uses: ASCII symbols count as punctuation too.
    code = ord(char)
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126:
        return True
    return unicodedata.category(char).startswith("P")


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    """``[start, end)`` without leading and trailing whitespace (empty when ``start == end``)."""
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end


def _trimmed_length(text: str) -> int:
    """``len(text.strip())`` without copying a long text."""
    start, end = _trim(text, 0, len(text))
    return end - start


def _pieces(
    text: str, start: int, end: int, separator: re.Pattern[str], fences: Sequence[tuple[int, int]] = ()
) -> Iterator[tuple[int, int]]:
    """Trimmed, non-empty ranges of ``text[start:end]`` between the gaps ``separator`` matches.

    Gaps inside one of ``fences`` (code blocks, as ``(start, end)`` ranges) are not cut at.
    """
    if separator is not _SENTENCE and text.find("\n", start, end) < 0:
        yield start, end  # cheap exit: paragraph and line gaps need a newline
        return
    lo = start
    for match in separator.finditer(text, start, end):
        if fences and _in_fence(fences, match.start(1), match.end(1)):
            continue
        piece = _trim(text, lo, match.start(1))
        if piece[0] < piece[1]:
            yield piece
        lo = match.end(1)
    piece = _trim(text, lo, end)
    if piece[0] < piece[1]:
        yield piece


def _in_fence(fences: Sequence[tuple[int, int]], start: int, end: int) -> bool:
    """True when the whitespace run ``[start, end)`` lies inside a fence (it cannot contain a fence's
    first or last character, which are not whitespace, so any overlap means inside)."""
    return any(start < fence_end and end > fence_start for fence_start, fence_end in fences)


def _inside_fence(fences: Sequence[tuple[int, int]], pos: int) -> bool:
    """True when a window starting at ``pos`` would start inside a code block (after its opening fence)."""
    return any(fence_start < pos < fence_end for fence_start, fence_end in fences)


_markdown: MarkdownIt | None = None


def _fences(text: str) -> list[tuple[int, int]]:
    """Trimmed ``(start, end)`` ranges of the fenced code blocks in ``text``, opening to closing fence.

    markdown-it-py finds them as CommonMark does (``` or ~~~ of any length from 3, an info string or
    not, inside lists and quotes too, an unclosed fence running to the end); only its block level runs.
    Text without a fence marker is not parsed at all.
    """
    global _markdown  # noqa: PLW0603 - one parser per process, built the first time a text has a fence
    if not any(marker in text for marker in _FENCE_MARKERS):
        return []
    if _markdown is None:
        from markdown_it import MarkdownIt

        # Block structure is all that decides where a fence is; inline parsing would only cost time.
        _markdown = MarkdownIt("commonmark").disable("inline")
    blocks = [token.map for token in _markdown.parse(text) if token.type == "fence" and token.map]
    if not blocks:
        return []
    line_starts = [0, *(match.end() for match in _NEWLINE.finditer(text))]
    ranges = []
    for first_line, end_line in blocks:
        start = line_starts[first_line]
        end = line_starts[end_line] if end_line < len(line_starts) else len(text)
        start, end = _trim(text, start, end)
        if start < end:
            ranges.append((start, end))
    return ranges


def _around_fences(
    text: str, start: int, end: int, fences: Sequence[tuple[int, int]]
) -> Iterator[tuple[int, int, bool]]:
    """``text[start:end]`` as trimmed, non-empty ``(start, end, is_fence)`` runs of prose and code blocks."""
    lo = start
    for fence_start, fence_end in fences:
        fence_start, fence_end = max(fence_start, start), min(fence_end, end)
        if fence_start >= fence_end:
            continue
        for piece_start, piece_end, is_fence in ((lo, fence_start, False), (fence_start, fence_end, True)):
            piece_start, piece_end = _trim(text, piece_start, piece_end)
            if piece_start < piece_end:
                yield piece_start, piece_end, is_fence
        lo = fence_end
    lo, hi = _trim(text, lo, end)
    if lo < hi:
        yield lo, hi, False


def _nested(inner: tuple[str, ...], outer: tuple[str, ...]) -> bool:
    """True when heading path ``inner`` lies under (or is) ``outer``."""
    return inner[: len(outer)] == outer


class SlidingWindowChunker:
    """Structure-aware sliding windows over documents, sized in tokens of a Hugging Face fast tokenizer.

    Tokens are counted without special tokens. The embedder adds its own (``[CLS]``/``[SEP]``), so
    ``size`` must be at most the model's maximum sequence length minus those: 254 for all-MiniLM-L6-v2,
    which reads 256 tokens (the default 200 leaves headroom).

    Args:
        tokenizer: the embedding model's fast tokenizer (offset mapping is required).
        size: maximum tokens per window.
        overlap: maximum tokens a window shares with the one before it (tables never overlap).
        min_tokens: sections with fewer tokens are merged into a neighbour (see the module docstring);
            0 keeps every section apart.

    Raises:
        ConfigError: ``size`` is not positive, ``overlap`` is negative or not below ``size``,
            ``min_tokens`` is negative, ``size`` exceeds what the tokenizer's model reads, or the
            tokenizer is not a fast tokenizer.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, size: int = 200, overlap: int = 40, min_tokens: int = 25
    ) -> None:
        if size <= 0:
            raise ConfigError(f"chunk size must be positive, got {size}")
        if not 0 <= overlap < size:
            raise ConfigError(f"chunk overlap must be >= 0 and smaller than size ({size}), got {overlap}")
        if min_tokens < 0:
            raise ConfigError(f"chunking min_tokens must be >= 0, got {min_tokens}")
        if not getattr(tokenizer, "is_fast", False):
            raise ConfigError(f"chunking needs a fast tokenizer with offset mapping, got {type(tokenizer).__name__}")
        model_max = int(getattr(tokenizer, "model_max_length", _NO_LIMIT) or _NO_LIMIT)
        if model_max < _NO_LIMIT:
            limit = model_max - tokenizer.num_special_tokens_to_add(pair=False)
            if size > limit:
                raise ConfigError(f"chunk size {size} exceeds the tokenizer's limit of {limit} tokens")
        self._tokenizer = tokenizer
        self.size = size
        self.overlap = overlap
        self.min_tokens = min_tokens

    def chunk(self, doc: Document) -> list[ChunkSpan]:
        """Windows of one document, in text order; see :meth:`chunk_many`."""
        return self.chunk_many([doc])[0]

    def chunk_many(self, docs: Iterable[Document]) -> list[list[ChunkSpan]]:
        """Windows of many documents, tokenizing their sections in batches for speed.

        A document without sections is chunked as one section spanning its text. Blank sections give
        no windows; tiny sections are first merged into a neighbour (:meth:`sections_of`).

        Args:
            docs: documents whose sections' offsets point into their text.

        Returns:
            One list of :class:`ChunkSpan` per document, in input order; each list in text order.
        """
        docs = list(docs)
        results: list[list[ChunkSpan]] = [[] for _ in docs]
        for index, span in self.iter_spans(docs):
            results[index].append(span)
        return results

    def iter_spans(self, docs: Iterable[Document]) -> Iterator[tuple[int, ChunkSpan]]:
        """Windows of many documents as a stream: what :meth:`chunk_many` returns, one window at a time.

        Sections are tokenized in batches (at most ``_TOKENIZE_BATCH`` sections and about
        ``_TOKENIZE_CHARS`` characters per call), and a section longer than ``_SLICE_CHARS`` in slices
        (see :func:`_slices`), so a caller that consumes the windows as they come holds a bounded amount
        of tokenizer output whatever the size of the documents.

        Args:
            docs: documents whose sections' offsets point into their text; read lazily.

        Yields:
            ``(index, span)``: the position of the span's document in ``docs``, and the span; in input
            order and, inside a document, in text order. A document with no windows yields nothing.
        """
        batch: list[tuple[int, Section]] = []
        chars = 0
        for index, doc in enumerate(docs):
            for section in self.sections_of(doc):
                if not section.text or section.text.isspace():  # not strip(): that copies a huge section
                    continue
                for piece in _slices(section, _SLICE_CHARS):
                    batch.append((index, piece))
                    chars += len(piece.text)
                    if len(batch) >= _TOKENIZE_BATCH or chars >= _TOKENIZE_CHARS:
                        yield from self._chunk_batch(batch)
                        batch, chars = [], 0
        if batch:
            yield from self._chunk_batch(batch)

    def _chunk_batch(self, batch: list[tuple[int, Section]]) -> Iterator[tuple[int, ChunkSpan]]:
        """Tokenize the sections of ``batch`` in one call and yield their windows, tagged with their index."""
        offsets = self._tokenizer(
            [section.text for _, section in batch],
            add_special_tokens=False,
            return_offsets_mapping=True,
            return_attention_mask=False,
            return_token_type_ids=False,
            verbose=False,  # long sections are expected; no "longer than max length" warning
        )["offset_mapping"]
        for (index, section), section_offsets in zip(batch, offsets):
            for span in self._chunk_section(section, _Tokens(section.text, section_offsets)):
                yield index, span

    # ------------------------------------------------------------------------------------------------
    # Tiny sections

    def sections_of(self, doc: Document) -> list[Section]:
        """The sections chunked for ``doc``: its own, with tiny ones merged into a neighbour.

        A section under ``min_tokens`` tokens joins the next section when the next one lies under its
        heading path (a heading alone before its first subsection, a preamble before the first heading),
        both have the same page and location, neither is a table, and only whitespace lies between them;
        the joined section has the next one's, deeper, heading path. Tiny sections in a row keep joining
        while the joined text stays under ``min_tokens``. The last section of a document, when tiny, joins
        the previous one instead when it lies under that one's path. A tiny section followed by a sibling
        (``## Licence`` then ``## Usage``) stays apart: joined, one of them would carry the other's heading
        path, or the chunk a path wider than its text's.

        Args:
            doc: a document whose sections' offsets point into its text.

        Returns:
            The sections to chunk, in text order (the document's own list when nothing merges); a document
            without sections is one section spanning its text.
        """
        sections = doc.sections or [Section(text=doc.text, start=0)]
        if self.min_tokens <= 0 or len(sections) < 2:
            return sections
        sections = [section for section in sections if _trimmed_length(section.text)]  # blank: no windows
        counts = self._tiny_counts(sections)
        merged: list[tuple[Section, int | None]] = []
        pending: tuple[Section, int | None] | None = None  # a tiny section waiting to lead the next one
        for section, count in zip(sections, counts):
            if pending is not None:
                if self._joinable(doc, pending[0], section) and _nested(section.headings, pending[0].headings):
                    section = self._join(doc, pending[0], section, section.headings)
                    count = None if count is None or pending[1] is None else pending[1] + count
                else:
                    merged.append(pending)
                pending = None
            if count is not None and count < self.min_tokens:
                pending = (section, count)
            else:
                merged.append((section, count))
        if pending is not None:
            previous = merged[-1][0] if merged else None
            if previous is not None and self._joinable(doc, previous, pending[0]) and _nested(
                pending[0].headings, previous.headings
            ):
                merged[-1] = (self._join(doc, previous, pending[0], previous.headings), None)
            else:
                merged.append(pending)
        return [section for section, _ in merged]

    def _tiny_counts(self, sections: list[Section]) -> list[int | None]:
        """Tokens of each section that may be tiny, ``None`` for the rest and for tables (never merged)."""
        limit = self.min_tokens * _TINY_CHARS_PER_TOKEN
        candidates = [
            index
            for index, section in enumerate(sections)
            if section.table is None and _trimmed_length(section.text) <= limit
        ]
        counts: list[int | None] = [None] * len(sections)
        if candidates:
            ids = self._tokenizer(
                [sections[index].text for index in candidates],
                add_special_tokens=False,
                return_attention_mask=False,
                return_token_type_ids=False,
                verbose=False,
            )["input_ids"]
            for index, section_ids in zip(candidates, ids):
                counts[index] = len(section_ids)
        return counts

    @staticmethod
    def _joinable(doc: Document, first: Section, second: Section) -> bool:
        """True when ``first`` and ``second`` may become one section: same page and location, no table,
        adjacent in the text with only whitespace between."""
        gap_start = first.start + len(first.text)
        return (
            first.table is None
            and second.table is None
            and first.page == second.page
            and dict(first.location) == dict(second.location)
            and gap_start <= second.start
            and not doc.text[gap_start : second.start].strip()
        )

    @staticmethod
    def _join(doc: Document, first: Section, second: Section, headings: tuple[str, ...]) -> Section:
        """One section spanning ``first`` to ``second``, under ``headings``."""
        end = second.start + len(second.text)
        return Section(
            text=doc.text[first.start : end], start=first.start, headings=headings, page=second.page,
            location=second.location,
        )

    # ------------------------------------------------------------------------------------------------
    # One section

    def _chunk_section(self, section: Section, tokens: _Tokens) -> list[ChunkSpan]:
        if section.table is not None:
            spans = self._chunk_table(section, tokens)
            if spans is not None:
                return spans
        units: list[_Unit] = []
        start, end = _trim(tokens.text, 0, len(tokens.text))
        # Only a section longer than a window is cut anywhere, so only such a section needs its fences.
        fences = _fences(tokens.text) if len(tokens.starts) > self.size else []
        if start < end:
            self._split(tokens, start, end, 0, units, fences)
        return [
            ChunkSpan(
                text=tokens.text[lo:hi],
                start=section.start + lo,
                end=section.start + hi,
                headings=section.headings,
                page=section.page,
                n_tokens=n_tokens,
                location=section.location,
            )
            for lo, hi, n_tokens in self._pack(tokens, units, fences)
        ]

    def _split(
        self,
        tokens: _Tokens,
        start: int,
        end: int,
        level: int,
        out: list[_Unit],
        fences: Sequence[tuple[int, int]] = (),
    ) -> None:
        """Append units covering ``[start, end)`` to ``out``, splitting at ``_SEPARATORS[level:]``.

        A code block (one of ``fences``) is never cut at a paragraph gap; one too long for a window is cut
        at its lines, and the prose around it at sentences as usual.
        """
        tok_start, tok_end = tokens.index(start), tokens.index(end)
        if tok_end - tok_start <= self.size:
            out.append(_Unit(start, end, tok_start, tok_end, tok_end - tok_start, True))
            return
        if level == len(_SEPARATORS):
            self._split_words(tokens, start, end, tok_start, tok_end, out)
            return
        if fences:
            fences = [fence for fence in fences if fence[0] < end and start < fence[1]]
        if not fences:
            for piece_start, piece_end in _pieces(tokens.text, start, end, _SEPARATORS[level]):
                self._split(tokens, piece_start, piece_end, level + 1, out)
        elif level == 0:
            for piece_start, piece_end in _pieces(tokens.text, start, end, _PARAGRAPH, fences):
                self._split(tokens, piece_start, piece_end, 1, out, fences)
        else:
            for piece_start, piece_end, is_fence in _around_fences(tokens.text, start, end, fences):
                self._split(tokens, piece_start, piece_end, max(level, _LINE_LEVEL) if is_fence else level, out)

    def _split_words(
        self,
        tokens: _Tokens,
        start: int,
        end: int,
        tok_start: int,
        tok_end: int,
        out: list[_Unit],
        limit: int | None = None,
        stride: int | None = None,
    ) -> None:
        """Cut a run with no usable separator into pieces of ``stride`` tokens (``size - overlap``).

        Pieces leave room for a token-level overlap in front of them. Cuts fall between words where
        possible; a cut inside a word (a very long token run without spaces or punctuation) makes the
        piece's count uncertain, so it is re-counted on its own and shrunk until it fits ``limit``
        (``size``).
        """
        limit = self.size if limit is None else limit
        stride = self.size - self.overlap if stride is None else stride
        lo, lo_char, lo_clean = tok_start, start, True
        while lo < tok_end:
            if tok_end - lo <= stride:
                hi, hi_char = tok_end, end
            else:
                hi = next((t for t in range(lo + stride, lo, -1) if tokens.clean_cut(t)), lo + stride)
                hi_char = tokens.starts[hi]
            piece_end = _trim(tokens.text, lo_char, hi_char)[1]
            hi_clean = hi == tok_end or tokens.clean_cut(hi)
            n_tokens = hi - lo
            if not (lo_clean and hi_clean):
                n_tokens = self._count(tokens.text[lo_char:piece_end])
                while n_tokens > limit and hi - lo > 1:
                    hi = max(lo + 1, hi - (n_tokens - limit))
                    hi_char = tokens.starts[hi]
                    piece_end = _trim(tokens.text, lo_char, hi_char)[1]
                    hi_clean = tokens.clean_cut(hi)
                    n_tokens = self._count(tokens.text[lo_char:piece_end])
            out.append(_Unit(lo_char, piece_end, lo, hi, n_tokens, lo_clean))
            lo, lo_char, lo_clean = hi, hi_char, hi_clean

    # ------------------------------------------------------------------------------------------------
    # Tables

    def _chunk_table(self, section: Section, tokens: _Tokens) -> list[ChunkSpan] | None:
        """Windows of a table section: whole rows, no overlap, the header leading every window.

        Returns ``None`` (chunk it as text) when the section does not start with its header, or the header
        alone takes more than half a window, which would leave too little room for rows.
        """
        table = section.table
        assert table is not None
        text = tokens.text
        head_start, head_end = _trim(text, 0, len(table.header))
        if not text.startswith(table.header) or head_start == head_end:
            log.debug("table section does not start with its header; chunked as text")
            return None
        head_tokens = tokens.index(head_end) - tokens.index(head_start)
        if head_tokens > self.size // 2:
            log.debug("table header of %d tokens leaves too little room for rows; chunked as text", head_tokens)
            return None
        header = text[head_start:head_end]
        location = {**section.location, **({"table": table.name} if table.name is not None else {})}

        def span(lo: int, hi: int, n_tokens: int, rows: tuple[int, int] | None, first: bool) -> ChunkSpan:
            # The first window is a true slice of the document from the header on; later ones repeat it.
            start = head_start if first else lo
            return ChunkSpan(
                text=text[head_start:hi] if first else f"{header}\n{text[lo:hi]}",
                start=section.start + start,
                end=section.start + hi,
                headings=section.headings,
                page=section.page,
                n_tokens=head_tokens + n_tokens,
                location={**location, "row_start": rows[0], "row_end": rows[1]} if rows else location,
            )

        rows = self._table_rows(text, len(table.header), table.first_row)
        if not rows:
            return [span(head_end, head_end, 0, None, True)]
        budget = self.size - head_tokens
        spans: list[ChunkSpan] = []
        index = 0
        while index < len(rows):
            number, lo, hi = rows[index]
            tok_lo = tokens.index(lo)
            if tokens.index(hi) - tok_lo > budget:
                # A row longer than a window (a huge cell): the one case cut inside a row, by words.
                pieces: list[_Unit] = []
                self._split_words(tokens, lo, hi, tok_lo, tokens.index(hi), pieces, budget, budget)
                for piece in pieces:
                    spans.append(span(piece.start, piece.end, piece.n_tokens, (number, number), not spans))
                index += 1
                continue
            last, used = index, 0
            while last < len(rows) and used + tokens.index(rows[last][2]) - tokens.index(rows[last][1]) <= budget:
                used += tokens.index(rows[last][2]) - tokens.index(rows[last][1])
                last += 1
            spans.append(span(lo, rows[last - 1][2], used, (number, rows[last - 1][0]), not spans))
            index = last
        return spans

    @staticmethod
    def _table_rows(text: str, body_start: int, first_row: int) -> list[tuple[int, int, int]]:
        """``(row number, start, end)`` of each non-blank line after the header, numbered from ``first_row``."""
        rows = []
        number, line_start = first_row, body_start + 1  # the header ends at the newline before row one
        while line_start <= len(text):
            line_end = text.find("\n", line_start)
            line_end = len(text) if line_end < 0 else line_end
            lo, hi = _trim(text, line_start, line_end)
            if lo < hi:
                rows.append((number, lo, hi))
            number, line_start = number + 1, line_end + 1
        return rows

    def _count(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    # ------------------------------------------------------------------------------------------------
    # Packing

    def _pack(
        self, tokens: _Tokens, units: list[_Unit], fences: Sequence[tuple[int, int]] = ()
    ) -> list[tuple[int, int, int]]:
        """Greedy windows over ``units`` as ``(start, end, n_tokens)`` in section-text offsets.

        A partial unit carried over as overlap never starts inside one of ``fences``.
        """
        windows: list[tuple[int, int, int]] = []
        first = 0
        lead: tuple[int, int] | None = None  # (char start, tokens) of a partial unit carried over as overlap
        while first < len(units):
            window_start, used = lead if lead else (units[first].start, 0)
            nxt = first
            # The first unit always fits: alone it is <= size, and a lead is only made when both fit.
            while nxt < len(units) and used + units[nxt].n_tokens <= self.size and (
                nxt == first or units[nxt].joins_previous
            ):
                used += units[nxt].n_tokens
                nxt += 1
            windows.append((window_start, units[nxt - 1].end, used))
            if nxt == len(units):
                break
            if not units[nxt].joins_previous:
                first, lead = nxt, None
                continue
            # Overlap: as many trailing whole units as fit in `overlap` with the next unit still fitting.
            back, shared = nxt, 0
            while (
                back > first
                and shared + units[back - 1].n_tokens <= self.overlap
                and shared + units[back - 1].n_tokens + units[nxt].n_tokens <= self.size
            ):
                back -= 1
                shared += units[back].n_tokens
            if back < nxt:
                first, lead = back, None
            else:
                budget = min(self.overlap, self.size - units[nxt].n_tokens)
                first, lead = nxt, self._lead(tokens, units[nxt - 1], budget, fences)
        return windows

    def _lead(
        self, tokens: _Tokens, unit: _Unit, budget: int, fences: Sequence[tuple[int, int]] = ()
    ) -> tuple[int, int] | None:
        """The tail of ``unit`` (at most ``budget`` tokens) to repeat at the start of the next window.

        Starts at the earliest paragraph or sentence start in that tail, else line start, else word
        start, never inside one of ``fences``; ``None`` when there is no clean place to start.
        """
        if budget <= 0:
            return None
        lowest = max(unit.tok_end - budget, unit.tok_start + 1)
        if lowest >= unit.tok_end:
            return None
        floor = tokens.starts[lowest]
        # A gap ending in the tail begins after the few tokens (punctuation, closing quotes) before it.
        search_from = tokens.starts[max(unit.tok_start, lowest - 4)]
        has_newline = tokens.text.find("\n", search_from, unit.end) >= 0
        for separators in ((_PARAGRAPH, _SENTENCE), (_LINE,)):
            starts = [
                match.end(1)
                for separator in separators
                if has_newline or separator is _SENTENCE
                for match in separator.finditer(tokens.text, search_from, unit.end)
                if match.end(1) >= floor and not (fences and _inside_fence(fences, match.end(1)))
            ]
            if starts:
                char = min(starts)
                return char, unit.tok_end - tokens.index(char)
        for t in range(lowest, unit.tok_end):
            if tokens.clean_cut(t) and not (fences and _inside_fence(fences, tokens.starts[t])):
                return tokens.starts[t], unit.tok_end - t
        return None


def _slices(section: Section, limit: int) -> Iterator[Section]:
    """``section`` cut into consecutive sections of at most ``limit`` characters (itself when it fits).

    Each cut falls after the last paragraph break in the second half of the slice, else after the last
    line break, else after the last whitespace, else (a run of ``limit / 2`` characters without any)
    at the limit. Tables are never cut: each chunk of a table repeats its header, and ``ingest.max_rows``
    bounds them already.
    """
    text = section.text
    if len(text) <= limit or section.table is not None:
        yield section
        return
    lo = 0
    while lo < len(text):
        hi = len(text) if len(text) - lo <= limit else _cut(text, lo + limit // 2, lo + limit)
        yield replace(section, text=text[lo:hi], start=section.start + lo)
        lo = hi


def _cut(text: str, earliest: int, latest: int) -> int:
    """The offset to cut ``text`` at, in ``(earliest, latest]``: just after the strongest break there."""
    for separator in ("\n\n", "\n"):
        found = text.rfind(separator, earliest, latest)
        if found >= 0:
            return found + len(separator)
    for pos in range(latest - 1, earliest - 1, -1):
        if text[pos].isspace():
            return pos + 1
    return latest
