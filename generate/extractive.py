"""Grounded extractive answers: the retrieved passages' own sentences that answer the question, each cited.

No language model writes anything: the answer is made of sentences taken verbatim (up to whitespace) from
the context blocks an LLM would have been shown (the same hits, the same ``llm.context_tokens`` budget and
the same ``[n]`` numbering as :func:`rag.generate.prompt.build_messages`), so it is faithful by
construction and cannot loop. Each candidate sentence is scored against the question with

- the embedder the index was built with (sentence-question cosine; no second model is loaded),
- lexical overlap: the question's stemmed terms found in the sentence, IDF-weighted over the candidates,
- a small prior for the rank of the hit it comes from;

the best ones are kept within a length budget, near-duplicates and sentences that merely restate the
question are dropped, and the kept sentences are ordered by hit (best hit first) and, within a hit, as
the passage has them. Markdown is parsed (markdown-it), so a heading, a table row or a code block is never
an answer sentence, and a list item is one.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from rag.core.analysis import Analyzer
from rag.core.answers import NO_CONTEXT_ANSWER, Answer, Citation
from rag.core.errors import ConfigError
from rag.core.tracing import set_attributes, span
from rag.core.types import Hit
from rag.generate.prompt import _truncated_block, approx_token_count, build_messages, format_block

logger = logging.getLogger(__name__)

MODEL_NAME = "extractive"
"""What :attr:`Answer.model` says for an extractive answer."""

# Weights of the three evidence kinds in a sentence's score (they sum to 1; cosine and overlap lie in
# [0, 1] for relevant text, the prior in (0, 1]). The embedder carries meaning, the overlap the exact
# terms a user typed (option names, numbers), the prior a tie-break towards the hit retrieval trusted most.
COSINE_WEIGHT = 0.55
OVERLAP_WEIGHT = 0.35
RANK_WEIGHT = 0.10

# A sentence ends at . ! or ? (and any closing marks) before a capital, a digit or a code span; after a bare
# question mark, before anything ("Why 200? all-MiniLM ..."), but not after a quoted one (`"Why?" it asks`).
_SENTENCE_END = re.compile(r"(?:(?<=[.!?])[\"')\]`*_]*\s+(?=[\"'(\[*_]*[A-Z0-9`])|(?<=\?)\s+)")
_ABBREVIATION = re.compile(r"(?:\b(?:e\.g|i\.e|etc|vs|cf|approx|incl|no|fig|eq)\.)$", re.IGNORECASE)
_TERMINAL = re.compile(r"[.!?][\"')\]`*_]*$")
_WORD = re.compile(r"\w+")


@dataclass(slots=True)
class Candidate:
    """One sentence of one context block, and how well it answers."""

    block: int  # the context block number [n], 1-based
    position: int  # order within the block
    text: str
    score: float = 0.0
    terms: frozenset[str] = frozenset()


class ExtractiveGenerator:
    """Answers a question with cited sentences of the retrieved passages (see the module docstring).

    It has the interface of :class:`~rag.generate.openai_chat.OpenAIChatGenerator`: :meth:`generate`
    takes the question, the hits and an ``on_token`` callback and returns an :class:`Answer`.

    Args:
        encode: embeds a list of texts into L2-normalised vectors (the engine's
            :meth:`SentenceEmbedder.encode <rag.core.embeddings.SentenceEmbedder.encode>`).
        context_tokens: token budget for the context blocks (``llm.context_tokens``): the hits used are
            exactly those an LLM prompt would hold.
        count_tokens: counts a string's tokens for the budget; default: :func:`approx_token_count`.
        analyzer: turns text into stemmed terms for the lexical overlap; default: English stemming and
            stopwords, as retrieval's BM25 has them.
        max_words: the answer's length budget in words; the best sentence is kept even when longer
            (up to twice this), so a long answer sentence is not lost.
        max_sentences: the most sentences an answer has.
        min_score: the floor: when no sentence scores above it, the answer says that no relevant context
            was found, as the LLM path does with no hits.
        margin: sentences scoring more than this below the best one are not added (they answer less).

    Raises:
        ConfigError: a budget is not positive, or a threshold is out of range.
    """

    model = MODEL_NAME

    def __init__(
        self,
        encode: Callable[[list[str]], np.ndarray],
        *,
        context_tokens: int = 1500,
        count_tokens: Callable[[str], int] | None = None,
        analyzer: Analyzer | None = None,
        max_words: int = 80,
        max_sentences: int = 4,
        min_score: float = 0.3,
        margin: float = 0.15,
    ) -> None:
        for name, value in (("context_tokens", context_tokens), ("max_words", max_words),
                            ("max_sentences", max_sentences)):
            if value <= 0:
                raise ConfigError(f"extractive {name} must be positive, got {value}")
        if not 0 <= min_score < 1 or margin < 0:
            raise ConfigError(f"extractive min_score must be in [0, 1) and margin >= 0, got {min_score}, {margin}")
        self.encode = encode
        self.context_tokens = context_tokens
        self.count_tokens = count_tokens or approx_token_count
        self.analyzer = analyzer or Analyzer()
        self.max_words = max_words
        self.max_sentences = max_sentences
        self.min_score = min_score
        self.margin = margin

    def generate(self, question: str, hits: list[Hit], on_token: Callable[[str], None] | None = None) -> Answer:
        """Answer ``question`` from ``hits`` (best first) with cited sentences, streamed to ``on_token``.

        Args:
            question: the user's question.
            hits: retrieved hits, best first; as many as fit ``context_tokens`` are used, as for an LLM.
            on_token: called with each answer sentence (and its ``[n]``), in order; the pieces add up to
                ``Answer.text`` exactly.

        Returns:
            The answer; every sentence in it is a sentence of the block it cites. With no hits, or no
            sentence above the floor, the "no relevant context" answer with no citations.
        """
        # Its own span, not a GenAI one: no model writes text here, so there are no tokens to count.
        with span("rag.generate.extractive", {"rag.answer.mode": "extractive", "rag.hits": len(hits)}) as current:
            answer = self._generate(question, hits, on_token)
            set_attributes(current, {"rag.context.blocks": len(answer.used_hits), "rag.citations": len(answer.citations)})
        return answer

    def _generate(self, question: str, hits: list[Hit], on_token: Callable[[str], None] | None) -> Answer:
        if not hits:
            return self._no_context([], on_token)
        _, used = build_messages(question, hits, budget_tokens=self.context_tokens, count_tokens=self.count_tokens)
        candidates = [
            Candidate(number, position, sentence)
            for number, text in enumerate(self._block_texts(used), start=1)
            for position, sentence in enumerate(passage_sentences(text))
        ]
        chosen = self._select(question, candidates)
        if not chosen:
            return self._no_context(used, on_token)
        pieces = [f"{' ' if i else ''}{c.text} [{c.block}]" for i, c in enumerate(chosen)]
        if on_token is not None:
            for piece in pieces:
                on_token(piece)
        numbers = sorted({c.block for c in chosen})
        return Answer("".join(pieces), [Citation(n, used[n - 1]) for n in numbers], used, self.model, [])

    def _no_context(self, used: list[Hit], on_token: Callable[[str], None] | None) -> Answer:
        if on_token is not None:
            on_token(NO_CONTEXT_ANSWER)
        return Answer(NO_CONTEXT_ANSWER, [], used, self.model, [])

    def _block_texts(self, used: list[Hit]) -> list[str]:
        """The text of each context block as the prompt holds it (the first one cut to the budget if need be)."""
        texts = [hit.context_text for hit in used]  # widened by generation.expand, as the prompt
        if used and self.count_tokens(format_block(1, used[0])) > self.context_tokens:
            block = _truncated_block(1, used[0], self.context_tokens, self.count_tokens)
            texts[0] = block.split("\n", 1)[1] if "\n" in block else ""
        return texts

    def _select(self, question: str, candidates: list[Candidate]) -> list[Candidate]:
        """Score the candidates and keep the best few that add something, in answer order."""
        question_terms = frozenset(self.analyzer(question))
        candidates = _unique(candidates)
        for candidate in candidates:
            candidate.terms = frozenset(self.analyzer(candidate.text))
        candidates = [c for c in candidates if not restates(c.terms, question_terms)]
        if not candidates:
            return []
        vectors = self.encode([question, *(c.text for c in candidates)])
        cosine = vectors[1:] @ vectors[0]
        overlap = idf_overlap(question_terms, [c.terms for c in candidates])
        for candidate, cos, lex in zip(candidates, cosine, overlap):
            prior = 1.0 / candidate.block
            candidate.score = COSINE_WEIGHT * float(cos) + OVERLAP_WEIGHT * lex + RANK_WEIGHT * prior
        ranked = sorted(range(len(candidates)), key=lambda i: -candidates[i].score)
        best = candidates[ranked[0]].score
        logger.debug("extractive: %d candidates, best score %.3f", len(candidates), best)
        if best < self.min_score:
            return []
        chosen: list[int] = []
        words = 0
        for i in ranked:
            candidate = candidates[i]
            if candidate.score < best - self.margin or len(chosen) >= self.max_sentences:
                break
            length = len(_WORD.findall(candidate.text))
            if chosen and words + length > self.max_words:
                continue
            if not chosen and length > 2 * self.max_words:
                continue  # a run-on paragraph, not an answer sentence
            if any(_near_duplicate(candidate, candidates[j], vectors[i + 1], vectors[j + 1]) for j in chosen):
                continue
            chosen.append(i)
            words += length
        # Best hit first (its best sentence's rank), then the passage's own order within the hit.
        first_rank = {}
        for rank, i in enumerate(chosen):
            first_rank.setdefault(candidates[i].block, rank)
        return sorted((candidates[i] for i in chosen), key=lambda c: (first_rank[c.block], c.position))


def passage_sentences(text: str) -> list[str]:
    """The sentences of a passage that may stand in an answer, in order.

    The passage is parsed as Markdown (plain text is a paragraph to Markdown): paragraphs and list items
    are split into sentences; headings, code blocks, tables, HTML blocks and table rows that a chunk window
    cut off from their header are skipped. Since a chunk is a window over its document, a first sentence
    that starts in the middle of one (lower case, punctuation) and a last one that stops without its full
    stop are dropped; so are questions (they do not answer), sentences ending in a colon (what they
    introduce is not in them) and scraps under four words.

    Returns:
        Each sentence with its whitespace collapsed; otherwise verbatim, Markdown inline marks included.
    """
    from markdown_it import MarkdownIt

    tokens = MarkdownIt("commonmark").enable("table").parse(text)
    paragraphs: list[str] = []
    in_paragraph = False
    for token in tokens:
        if token.type == "paragraph_open":
            in_paragraph = True
        elif token.type == "paragraph_close":
            in_paragraph = False
        elif token.type == "inline" and in_paragraph:
            content = " ".join(token.content.split())
            if content and not content.startswith("|"):  # a table row cut off from its header
                paragraphs.append(content)
    sentences = [s for paragraph in paragraphs for s in split_sentences(paragraph)]
    if sentences and _starts_midway(sentences[0], text):
        sentences.pop(0)
    if sentences and not _TERMINAL.search(sentences[-1]) and text.rstrip().endswith(sentences[-1].split()[-1]):
        sentences.pop()  # the window stopped in the middle of it
    # A question does not answer, and a sentence ending in a colon introduces something it does not hold.
    return [s for s in sentences if not s.endswith(("?", ":")) and len(_WORD.findall(s)) >= 4]


def split_sentences(paragraph: str) -> list[str]:
    """Split one paragraph (whitespace collapsed) into sentences at ``.``, ``!`` or ``?`` followed by a
    capital or a digit; abbreviations such as "e.g." do not end a sentence."""
    pieces = _SENTENCE_END.split(paragraph)
    sentences: list[str] = []
    for piece in pieces:
        if sentences and _ABBREVIATION.search(sentences[-1]):
            sentences[-1] = f"{sentences[-1]} {piece}"
        else:
            sentences.append(piece)
    return [s.strip() for s in sentences if s.strip()]


def _starts_midway(sentence: str, text: str) -> bool:
    """The passage's first sentence begins inside a sentence the chunk window cut (not at a block start)."""
    stripped = text.lstrip()
    if not stripped.startswith(sentence[:20]):
        return False  # something (a heading, a list marker, a code block) comes first: a clean start
    first = sentence[0]
    return not (first.isupper() or first.isdigit() or first in "\"'([`*_")


def restates(terms: frozenset[str], question_terms: frozenset[str]) -> bool:
    """A sentence restates the question when it adds fewer than two content terms, or when fewer than a
    quarter of its terms are new."""
    novel = terms - question_terms
    return len(novel) < 2 or len(novel) < 0.25 * len(terms)


def idf_overlap(question_terms: frozenset[str], sentence_terms: Sequence[frozenset[str]]) -> list[float]:
    """The IDF-weighted share of the question's terms each sentence holds, in [0, 1].

    IDF is counted over the candidate sentences themselves, so a term every candidate shares (the
    topic word) weighs little, and a rare one that the question asks about weighs much.
    """
    if not question_terms:
        return [0.0] * len(sentence_terms)
    n = len(sentence_terms)
    weight = {
        term: float(np.log(1 + n / max(1, sum(term in terms for terms in sentence_terms))))
        for term in question_terms
    }
    total = sum(weight.values())
    return [sum(weight[t] for t in question_terms & terms) / total for terms in sentence_terms]


def _unique(candidates: list[Candidate]) -> list[Candidate]:
    """The first of each sentence: overlapping chunk windows repeat sentences word for word."""
    seen: set[str] = set()
    unique = []
    for candidate in candidates:
        key = candidate.text.lower()
        if key not in seen:
            seen.add(key)
            unique.append(candidate)
    return unique


def _near_duplicate(a: Candidate, b: Candidate, va: np.ndarray, vb: np.ndarray) -> bool:
    """Two sentences saying the same: nearly the same embedding, or mostly the same terms."""
    if float(va @ vb) >= 0.92:
        return True
    union = a.terms | b.terms
    return bool(union) and len(a.terms & b.terms) / len(union) >= 0.8
