"""Stop an answer that starts repeating itself, before the reader sees the repeat.

Small models loop: SmolLM2-135M answered "You should not change the embedding model." eleven times in a
row. Sampling penalties make loops rarer; :class:`RepetitionGuard` catches the ones that still happen. It
reads the answer text as it streams (plain text, or the ``answer`` string decoded from a JSON reply) and
reports a repeat as soon as

- a run of ``ngram`` words (default 8) appears a second time, or
- a whole sentence of at least ``min_sentence_words`` words equals one already written,

comparing words case-folded, without punctuation and without citation markers (``[2]`` and ``[3]`` do
not make two sentences different). The text is then cut where the repeat begins: at the start of the
sentence holding it when that sentence is new text, else at its first repeated word.

So that nothing it may cut has been shown, the guard holds back the last ``ngram - 1`` words (and a word
still being written): a streamed answer lags a few words behind the model, and the pieces it releases
always add up to the kept text.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

# A citation marker (skipped: it is not a word) or a word.
_TOKEN = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]|\w+")
# Where a sentence ends: terminal punctuation (and closing quotes or brackets) then space, or a line break.
_SENTENCE_END = re.compile(r"[.!?][\"')\]]*(?=\s)|\n")


@dataclass(frozen=True, slots=True)
class Repeat:
    """Where an answer started repeating itself.

    Attributes:
        cut: characters of the text to keep (``text[:cut]``, trailing space and separators trimmed).
        first: offset of the earlier occurrence that was repeated.
        span: the repeated words as written the first time (up to 80 characters), for the warning.
        kind: ``"sentence"`` or ``"ngram"``.
    """

    cut: int
    first: int
    span: str
    kind: str


class RepetitionGuard:
    """Finds the first repeated sentence or ``ngram``-word run in a text that arrives in pieces.

    Usage in a streaming loop::

        guard = RepetitionGuard()
        for piece in stream:
            show(guard.feed(piece))  # text safe to show now (maybe "")
            if guard.repeat is not None:
                break  # stop reading: closing the stream stops the model
        show(guard.finish())
        text = guard.text  # the answer without the repeat

    Args:
        ngram: words in a run whose second occurrence counts as a repeat (at least 2).
        min_sentence_words: the fewest words a repeated whole sentence needs to count (at least 1);
            sentences of ``ngram`` words or more are caught as runs anyway.

    Raises:
        ValueError: an argument is out of range.
    """

    def __init__(self, ngram: int = 8, min_sentence_words: int = 3) -> None:
        if ngram < 2:
            raise ValueError(f"ngram must be at least 2, got {ngram}")
        if min_sentence_words < 1:
            raise ValueError(f"min_sentence_words must be at least 1, got {min_sentence_words}")
        self.ngram = ngram
        self.min_sentence_words = min_sentence_words
        self.repeat: Repeat | None = None
        self._text = ""
        self._scanned = 0  # text before this offset has been split into words
        self._words: list[str] = []
        self._starts: list[int] = []  # offset of each word
        self._ends: list[int] = []
        self._sentence_of: list[int] = []  # offset where each word's sentence starts
        self._runs: dict[tuple[str, ...], int] = {}  # run of words -> index of its first word
        self._sentence_start = 0  # offset where the current sentence starts
        self._sentence_word = 0  # index of the current sentence's first word
        self._sentences: dict[tuple[str, ...], tuple[int, int]] = {}  # sentence words -> its first (start, end)
        self._released = 0  # characters handed out by feed/finish
        self._finished = False

    @property
    def text(self) -> str:
        """The text so far, or up to the repeat once one was found (trailing space and separators trimmed)."""
        if self.repeat is None:
            return self._text
        kept, shown = _trim_end(self._text[: self.repeat.cut]), self._text[: self._released].rstrip()
        # Never less than what was already shown: the shown pieces must add up to the text.
        return kept if len(kept) >= len(shown) else shown

    def feed(self, piece: str) -> str:
        """Add the next piece; returns the text that is now safe to show (maybe ``""``).

        After a repeat was found (:attr:`repeat` is set) further pieces are ignored.
        """
        if self.repeat is not None or self._finished:
            return ""
        self._text += piece
        # Only whole words are scanned: the last word may go on in the next piece.
        boundary = max(self._text.rfind(" "), self._text.rfind("\n"), self._text.rfind("\t")) + 1
        if boundary > self._scanned:
            self._scan(self._text[:boundary])
        if self.repeat is not None:
            return self._release(self.text)
        held = len(self._words) - (self.ngram - 1)  # the first of the words held back
        return self._release(self._text[: self._starts[held]] if held > 0 else "")

    def finish(self) -> str:
        """The stream ended: check the last words and sentence; returns the rest of the text to show."""
        if not self._finished and self.repeat is None:
            self._finished = True
            self._scan(self._text, final=True)
        self._finished = True
        return self._release(self.text)

    def _release(self, upto: str) -> str:
        if len(upto) <= self._released:
            return ""
        out, self._released = upto[self._released :], len(upto)
        return out

    def _scan(self, text: str, final: bool = False) -> None:
        """Split ``text[self._scanned:]`` into words and sentence ends, stopping at the first repeat."""
        position = self._scanned
        ends = [m.end() for m in _SENTENCE_END.finditer(text, position)]
        if final:
            ends.append(len(text))
        for match in _TOKEN.finditer(text, position):
            while ends and ends[0] <= match.start():
                if self._end_sentence(ends.pop(0)):
                    return
            if match.group().startswith("["):
                continue  # a citation marker
            self._add_word(match.group().casefold(), match.start(), match.end())
            if self.repeat is not None:
                return
        for end in ends:
            if self._end_sentence(end):
                return
        self._scanned = len(text)

    def _add_word(self, word: str, start: int, end: int) -> None:
        self._words.append(word)
        self._starts.append(start)
        self._ends.append(end)
        self._sentence_of.append(self._sentence_start)
        if len(self._words) < self.ngram:
            return
        index = len(self._words) - self.ngram
        run = tuple(self._words[index:])
        first = self._runs.setdefault(run, index)
        if first != index:
            self._found(self._starts[index], self._sentence_of[index], self._starts[first],
                        self._ends[first + self.ngram - 1], "ngram")

    def _end_sentence(self, end: int) -> bool:
        """Close the current sentence at offset ``end``; ``True`` if it repeats an earlier one."""
        words = tuple(self._words[self._sentence_word :])
        start = self._starts[self._sentence_word] if words else end
        self._sentence_start, self._sentence_word = end, len(self._words)
        if len(words) < self.min_sentence_words:
            return False
        first, first_end = self._sentences.setdefault(words, (start, end))
        if first != start:
            self._found(start, start, first, first_end, "sentence")
            return True
        return False

    def _found(self, repeat_start: int, sentence_start: int, first_start: int, first_end: int, kind: str) -> None:
        # Cut at the start of the sentence holding the repeat when that sentence began after the earlier
        # occurrence and has not been shown; else at the repeat's first word (a loop inside one sentence).
        cut = sentence_start if first_start < sentence_start and sentence_start >= self._released else repeat_start
        span = " ".join(self._text[first_start:first_end].split())
        self.repeat = Repeat(cut, first_start, span if len(span) <= 80 else span[:79] + "…", kind)


def _trim_end(text: str) -> str:
    """Drop the space and separators a cut leaves at the end (``"model, and"`` keeps ``"model, and"``)."""
    return text.rstrip().rstrip(",;:-–—").rstrip()


def trim_repetition(text: str, ngram: int = 8) -> tuple[str, Repeat | None]:
    """``text`` cut where it starts repeating itself (see :class:`RepetitionGuard`), and the repeat found."""
    guard = RepetitionGuard(ngram)
    guard.feed(text)
    guard.finish()
    return guard.text, guard.repeat
