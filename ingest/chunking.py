"""Split documents into overlapping windows measured in tokens of the embedding model's tokenizer.

Windows never cross a :class:`~rag.core.types.Section` boundary, so every chunk has one heading path and
one page. Inside a section the chunker prefers natural breaks: it cuts the section into *units*
(paragraphs; a paragraph too long for a window into sentences; a sentence too long into lines; a line
too long into runs of whole words), packs units greedily into windows of at most ``size`` tokens, and
starts each next window with the trailing whole units of the previous one that fit in ``overlap``
tokens. When the last unit alone is larger than that, the overlap falls back to the tail of that unit,
starting at a sentence start if one lies in the last ``overlap`` tokens, else at a word start.

Each section is tokenized once, with the offset mapping, and every later decision works on token
indices, so chunking costs one fast-tokenizer pass over the text. A section longer than
``_SLICE_CHARS`` characters is tokenized in slices cut at paragraph, line or word boundaries (windows do
not cross a slice), and :meth:`SlidingWindowChunker.iter_spans` yields windows as it goes, so memory is
bounded by the slice, not by the document.
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


@dataclass(frozen=True, slots=True)
class ChunkSpan:
    """One window of a document, before it is embedded and stored.

    Attributes:
        text: the window's text, exactly ``doc.text[start:end]``, without leading or trailing whitespace.
        start: character offset of the window in :attr:`Document.text`.
        end: character offset just past the window.
        headings: heading path of the section the window lies in.
        page: 1-based page of that section, or ``None``.
        n_tokens: tokens in ``text``, without the special tokens the embedder adds.
        location: the section's location keys (``slide``, ``sheet`` ...) and, in a table, ``table``,
            ``row_start`` and ``row_end``; copied into the chunk's metadata.
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

    __slots__ = ("text", "starts", "ends")

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


def _pieces(text: str, start: int, end: int, separator: re.Pattern[str]) -> Iterator[tuple[int, int]]:
    """Trimmed, non-empty ranges of ``text[start:end]`` between the gaps ``separator`` matches."""
    if separator is not _SENTENCE and text.find("\n", start, end) < 0:
        yield start, end  # cheap exit: paragraph and line gaps need a newline
        return
    lo = start
    for match in separator.finditer(text, start, end):
        piece = _trim(text, lo, match.start(1))
        if piece[0] < piece[1]:
            yield piece
        lo = match.end(1)
    piece = _trim(text, lo, end)
    if piece[0] < piece[1]:
        yield piece


class SlidingWindowChunker:
    """Structure-aware sliding windows over documents, sized in tokens of a Hugging Face fast tokenizer.

    Tokens are counted without special tokens. The embedder adds its own (``[CLS]``/``[SEP]``), so
    ``size`` must be at most the model's maximum sequence length minus those: 254 for all-MiniLM-L6-v2,
    which reads 256 tokens (the default 200 leaves headroom).

    Args:
        tokenizer: the embedding model's fast tokenizer (offset mapping is required).
        size: maximum tokens per window.
        overlap: maximum tokens a window shares with the one before it.

    Raises:
        ConfigError: ``size`` is not positive, ``overlap`` is negative or not below ``size``, ``size``
            exceeds what the tokenizer's model reads, or the tokenizer is not a fast tokenizer.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, size: int = 200, overlap: int = 40) -> None:
        if size <= 0:
            raise ConfigError(f"chunk size must be positive, got {size}")
        if not 0 <= overlap < size:
            raise ConfigError(f"chunk overlap must be >= 0 and smaller than size ({size}), got {overlap}")
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

    def chunk(self, doc: Document) -> list[ChunkSpan]:
        """Windows of one document, in text order; see :meth:`chunk_many`."""
        return self.chunk_many([doc])[0]

    def chunk_many(self, docs: Iterable[Document]) -> list[list[ChunkSpan]]:
        """Windows of many documents, tokenizing their sections in batches for speed.

        A document without sections is chunked as one section spanning its text. Blank sections give
        no windows.

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
            for section in doc.sections or [Section(text=doc.text, start=0)]:
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
    # One section

    def _chunk_section(self, section: Section, tokens: _Tokens) -> list[ChunkSpan]:
        units: list[_Unit] = []
        start, end = _trim(tokens.text, 0, len(tokens.text))
        if start < end:
            self._split(tokens, start, end, 0, units)
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
            for lo, hi, n_tokens in self._pack(tokens, units)
        ]

    def _split(self, tokens: _Tokens, start: int, end: int, level: int, out: list[_Unit]) -> None:
        """Append units covering ``[start, end)`` to ``out``, splitting at ``_SEPARATORS[level:]``."""
        tok_start, tok_end = tokens.index(start), tokens.index(end)
        if tok_end - tok_start <= self.size:
            out.append(_Unit(start, end, tok_start, tok_end, tok_end - tok_start, True))
            return
        if level == len(_SEPARATORS):
            self._split_words(tokens, start, end, tok_start, tok_end, out)
            return
        for piece_start, piece_end in _pieces(tokens.text, start, end, _SEPARATORS[level]):
            self._split(tokens, piece_start, piece_end, level + 1, out)

    def _split_words(
        self, tokens: _Tokens, start: int, end: int, tok_start: int, tok_end: int, out: list[_Unit]
    ) -> None:
        """Cut a run with no usable separator into pieces of ``size - overlap`` tokens.

        Pieces leave room for a token-level overlap in front of them. Cuts fall between words where
        possible; a cut inside a word (a very long token run without spaces or punctuation) makes the
        piece's count uncertain, so it is re-counted on its own and shrunk until it fits.
        """
        stride = self.size - self.overlap
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
                while n_tokens > self.size and hi - lo > 1:
                    hi = max(lo + 1, hi - (n_tokens - self.size))
                    hi_char = tokens.starts[hi]
                    piece_end = _trim(tokens.text, lo_char, hi_char)[1]
                    hi_clean = tokens.clean_cut(hi)
                    n_tokens = self._count(tokens.text[lo_char:piece_end])
            out.append(_Unit(lo_char, piece_end, lo, hi, n_tokens, lo_clean))
            lo, lo_char, lo_clean = hi, hi_char, hi_clean

    def _count(self, text: str) -> int:
        return len(self._tokenizer(text, add_special_tokens=False, verbose=False)["input_ids"])

    # ------------------------------------------------------------------------------------------------
    # Packing

    def _pack(self, tokens: _Tokens, units: list[_Unit]) -> list[tuple[int, int, int]]:
        """Greedy windows over ``units`` as ``(start, end, n_tokens)`` in section-text offsets."""
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
                first, lead = nxt, self._lead(tokens, units[nxt - 1], budget)
        return windows

    def _lead(self, tokens: _Tokens, unit: _Unit, budget: int) -> tuple[int, int] | None:
        """The tail of ``unit`` (at most ``budget`` tokens) to repeat at the start of the next window.

        Starts at the earliest paragraph or sentence start in that tail, else line start, else word
        start; ``None`` when there is no clean place to start.
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
                if match.end(1) >= floor
            ]
            if starts:
                char = min(starts)
                return char, unit.tok_end - tokens.index(char)
        for t in range(lowest, unit.tok_end):
            if tokens.clean_cut(t):
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
