"""Contextual chunk text: the document title and heading path embedded (and keyword-indexed) with a chunk.

A window cut from the middle of a document often does not name its subject: "It is rebuilt whenever the
catalog changes" says nothing of BM25 until the heading above it does. With ``chunking.context_prefix``
on, ingest records for every chunk a short prefix, ``Title > Heading > Subheading``, in its metadata
(``context_prefix``); what is embedded and keyword-indexed is that prefix, a blank line, then the chunk
text (:func:`rag.core.types.indexed_text`), while the text shown and cited stays the chunk's own.

The prefix never makes the embedder drop the end of a chunk: it is cut (at a word boundary) to the tokens
the model reads beyond the chunk, and left out when fewer than
:data:`MIN_PREFIX_TOKENS` remain. A title the chunk text already starts with (a JSONL record's title,
which the JSONL parser puts in front of its text) is not repeated, and a first heading that repeats the
title (a Markdown file titled by its first heading) appears once. A document whose title is only its id (a JSONL record without a title) gets no title in
its prefix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

SEPARATOR = " > "
#: Longest prefix in tokens: the title and heading path, not a second passage.
MAX_PREFIX_TOKENS = 48
#: A prefix that would have to be cut below this many tokens is left out.
MIN_PREFIX_TOKENS = 4


class ContextPrefixer:
    """Makes the ``context_prefix`` of each chunk.

    Args:
        tokenizer: the embedding model's fast tokenizer (the one the chunker counts with).
        max_tokens: tokens the embedding model reads, without its special tokens (254 for MiniLM).
        max_prefix_tokens: cap on a prefix's tokens.
    """

    def __init__(
        self, tokenizer: PreTrainedTokenizerBase, max_tokens: int, max_prefix_tokens: int = MAX_PREFIX_TOKENS
    ) -> None:
        self._tokenizer = tokenizer
        self.max_tokens = max_tokens
        self.max_prefix_tokens = max_prefix_tokens

    @staticmethod
    def path(title: str, headings: Sequence[str], text: str) -> str:
        """``title > heading > ...`` for a chunk with ``text``, before any token limit; may be empty.

        The title is left out when ``text`` already starts with it; a heading equal to the part before
        it (ignoring case and surrounding space) is left out.
        """
        parts: list[str] = []
        title = " ".join(title.split())
        if title and not text.lstrip().startswith(title):
            parts.append(title)
        for heading in headings:
            heading = " ".join(heading.split())
            if not heading:
                continue
            if parts and parts[-1].casefold() == heading.casefold():
                continue
            if not parts and title and heading.casefold() == title.casefold():
                continue  # the title was left out because the text starts with it; so does this heading
            parts.append(heading)
        return SEPARATOR.join(parts)

    def prefix(self, title: str, headings: Sequence[str], text: str, n_tokens: int) -> str:
        """The prefix of a chunk of ``n_tokens`` tokens, cut to what the model reads beyond the chunk.

        Returns:
            The prefix, or ``""`` when there is none or no room for one.
        """
        path = self.path(title, headings, text)
        if not path:
            return ""
        room = min(self.max_prefix_tokens, self.max_tokens - n_tokens)
        if room < MIN_PREFIX_TOKENS:
            return ""
        encoded = self._tokenizer(path, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        offsets = encoded["offset_mapping"]
        if len(offsets) <= room:
            return path
        cut = offsets[room - 1][1]
        if offsets[room][0] == cut and " " in path[:cut]:
            cut = path.rindex(" ", 0, cut)  # do not end on part of a word
        return path[:cut].rstrip(" >")


__all__ = ["MAX_PREFIX_TOKENS", "MIN_PREFIX_TOKENS", "SEPARATOR", "ContextPrefixer"]
