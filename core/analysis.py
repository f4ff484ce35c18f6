"""Keyword analysis: how chunk and query text become BM25 terms, and the BM25 parameters that score them.

One place for both keyword sides: the local ``bm25s`` index (:mod:`rag.retrieve.bm25`) and a store that
indexes terms itself (Qdrant's sparse BM25 vector) build their :class:`Analyzer` and BM25 parameters from the
same :class:`KeywordAnalysis`, which :meth:`KeywordAnalysis.from_settings` reads from ``[retrieval]``
(``stemmer``, ``stopwords``, ``bm25_k1``, ``bm25_b``). It lives in ``core`` so that stores, which import only
``core``, analyse text exactly as retrieval does.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rag.core.errors import ConfigError

if TYPE_CHECKING:
    from rag.core.settings import RetrievalSettings

__all__ = ["Analyzer", "KeywordAnalysis"]

_TOKEN_RE = re.compile(r"(?u)\b\w\w+\b")


class Analyzer:
    """Lower-case word tokens (two characters or more), minus stopwords, stemmed.

    The same analyzer runs at index and query time; tests feed its output to ``rank_bm25`` too.

    Args:
        stemmer: a PyStemmer language (``"english"``) or ``None``/``""`` for no stemming.
        stopwords: a ``bm25s`` stopword list name (``"en"``) or ``None``/``""`` for none.

    Raises:
        ConfigError: an unknown stemmer language or stopword list.
    """

    def __init__(self, stemmer: str | None = "english", stopwords: str | None = "en") -> None:
        self.stemmer_name = stemmer or None
        self.stopwords_name = stopwords or None
        self._stopwords: frozenset[str] = frozenset()
        if self.stopwords_name:
            import bm25s.stopwords as lists

            # bm25s ships STOPWORDS_<LANGUAGE> tuples; accept "en" and language names.
            lookup = {n.removeprefix("STOPWORDS_").lower(): getattr(lists, n) for n in dir(lists) if n.startswith("STOPWORDS_")}
            lookup["english"] = lookup["en"]
            if self.stopwords_name not in lookup:
                raise ConfigError(f"unknown stopword list {self.stopwords_name!r}; use one of {sorted(lookup)}")
            self._stopwords = frozenset(lookup[self.stopwords_name])
        self._stem: Callable[[list[str]], list[str]] | None = None
        if self.stemmer_name:
            import Stemmer

            try:
                self._stem = Stemmer.Stemmer(self.stemmer_name).stemWords
            except KeyError:
                raise ConfigError(
                    f"unknown stemmer language {self.stemmer_name!r}; use one of {Stemmer.algorithms()}"
                ) from None

    def __call__(self, text: str) -> list[str]:
        words = [w for w in _TOKEN_RE.findall(text.lower()) if w not in self._stopwords]
        return self._stem(words) if self._stem else words

    def config(self) -> dict[str, Any]:
        """The settings that decide which terms this analyzer produces (stored beside an index built with it)."""
        return {"stemmer": self.stemmer_name, "stopwords": self.stopwords_name}


@dataclass(frozen=True, slots=True)
class KeywordAnalysis:
    """The analysis and BM25 parameters every keyword side of one index shares.

    Attributes:
        stemmer: a PyStemmer language, or ``None`` for no stemming (``retrieval.stemmer``).
        stopwords: a ``bm25s`` stopword list, or ``None`` for none (``retrieval.stopwords``).
        k1: BM25 term-frequency saturation (``retrieval.bm25_k1``).
        b: BM25 length normalisation, 0 to 1 (``retrieval.bm25_b``).
    """

    stemmer: str | None = "english"
    stopwords: str | None = "en"
    k1: float = 1.2
    b: float = 0.75

    @classmethod
    def from_settings(cls, retrieval: RetrievalSettings) -> KeywordAnalysis:
        """The analysis configured under ``[retrieval]``."""
        return cls(stemmer=retrieval.stemmer, stopwords=retrieval.stopwords, k1=retrieval.bm25_k1, b=retrieval.bm25_b)

    def analyzer(self) -> Analyzer:
        """A new :class:`Analyzer` with these settings (it loads its stemmer and stopword list)."""
        return Analyzer(stemmer=self.stemmer, stopwords=self.stopwords)
