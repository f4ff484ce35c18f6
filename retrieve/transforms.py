"""Query transforms written by the LLM: HyDE passages, search rewrites, query variants, standalone follow-ups.

Each transform is one short, cached completion (see :mod:`rag.generate.completion`) whose reply is parsed
defensively: small models add labels, quotes, numbering and chatter around what was asked for. A reply
with nothing usable left raises :class:`~rag.core.errors.GenerationError`, like an endpoint failure, so
the caller has one failure to handle (it falls back to the plain query).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from rag.core.completion import Completer, Completion
from rag.core.errors import ConfigError, GenerationError

HYDE_PROMPT = (
    "Write a short passage, in the style of a reference document, that answers the user's question. "
    "Write only the passage."
)
REWRITE_PROMPT = (
    "Rewrite the user's question as a search query for a document index: keep its key terms, spell out "
    "abbreviations and add close synonyms. Reply with the query only, on one line."
)
MULTI_QUERY_PROMPT = (
    "Write {n} different search queries that would find documents answering the user's question. "
    "Write one query per line, with no numbering and no other text."
)
CONDENSE_PROMPT = (
    "Rewrite the user's follow-up question as a standalone question that can be understood without the "
    "conversation: replace pronouns and references with what they refer to. Reply with the question only."
)

MAX_QUERY_CHARS = 400
"""A rewrite longer than this is cut: a model that rambles must not turn a query into an essay."""

HISTORY_TURNS = 6
"""Earlier turns shown to the condense prompt (the most recent ones)."""

HISTORY_CHARS = 400
"""Characters of each earlier turn shown to the condense prompt."""

_LABEL = re.compile(r"^\s*(?:search\s+)?(?:query|question|standalone question|rewritten query)\s*\d*\s*[:\-]\s*", re.I)
_BULLET = re.compile(r"^\s*(?:[-*•]|\d+[.)]|\(\d+\))\s*")


def clean_line(text: str) -> str:
    """One line of a reply without bullets, numbering, a leading label or surrounding quotes."""
    line = _BULLET.sub("", text.strip())
    line = _LABEL.sub("", line).strip()
    if len(line) >= 2 and line[0] == line[-1] and line[0] in "\"'`":
        line = line[1:-1].strip()
    return line[:MAX_QUERY_CHARS].strip()


def _first_line(reply: str) -> str:
    for raw in reply.splitlines():
        line = clean_line(raw)
        if line:
            return line
    return ""


class QueryTransformer:
    """The LLM-written transforms, on one completer.

    Args:
        completer: the stage LLM.
        max_tokens: reply budget of each transform (the HyDE passage is the longest).
    """

    def __init__(self, completer: Completer, max_tokens: int = 160) -> None:
        if max_tokens <= 0:
            raise ConfigError(f"retrieval.stage_max_tokens must be positive, got {max_tokens}")
        self.completer, self.max_tokens = completer, max_tokens

    def _ask(self, system: str, user: str, max_tokens: int | None = None) -> Completion:
        messages = [{"role": "system", "content": system}, {"role": "user", "content": user}]
        return self.completer.complete(messages, max_tokens=max_tokens or self.max_tokens)

    def hyde(self, question: str) -> tuple[str, Completion]:
        """A hypothetical passage answering ``question`` (for the dense side only)."""
        reply = self._ask(HYDE_PROMPT, question)
        passage = reply.text.strip()
        if not passage:
            raise GenerationError("the HyDE reply was empty")
        return passage, reply

    def rewrite(self, question: str) -> tuple[str, Completion]:
        """``question`` as one keyword search query."""
        reply = self._ask(REWRITE_PROMPT, question, min(self.max_tokens, 64))
        query = _first_line(reply.text)
        if not query:
            raise GenerationError(f"the rewrite reply held no query: {reply.text[:80]!r}")
        return query, reply

    def variants(self, question: str, n: int) -> tuple[list[str], Completion]:
        """Up to ``n`` distinct search queries for ``question``, none equal to it."""
        if n <= 0:
            raise ConfigError(f"multi_query must be positive, got {n}")
        reply = self._ask(MULTI_QUERY_PROMPT.format(n=n), question, min(self.max_tokens, 40 * n))
        seen = {question.strip().casefold()}
        queries: list[str] = []
        for raw in reply.text.splitlines():
            line = clean_line(raw)
            if line and line.casefold() not in seen:
                seen.add(line.casefold())
                queries.append(line)
            if len(queries) == n:
                break
        if not queries:
            raise GenerationError(f"the multi-query reply held no new query: {reply.text[:80]!r}")
        return queries, reply

    def condense(self, question: str, history: Sequence[Mapping[str, str]]) -> tuple[str, Completion]:
        """``question`` rewritten to stand alone, given the earlier turns ``history``."""
        conversation = "\n".join(
            f"{turn['role'].capitalize()}: {' '.join(str(turn['content']).split())[:HISTORY_CHARS]}"
            for turn in history[-HISTORY_TURNS:]
        )
        user = f"Conversation:\n{conversation}\n\nFollow-up question: {question}\n\nStandalone question:"
        reply = self._ask(CONDENSE_PROMPT, user, min(self.max_tokens, 80))
        standalone = _first_line(reply.text)
        if not standalone:
            raise GenerationError(f"the condense reply held no question: {reply.text[:80]!r}")
        return standalone, reply


def heuristic_standalone(question: str, history: Sequence[Mapping[str, str]]) -> str:
    """Without an LLM: the last earlier user turn, then the follow-up, so retrieval sees both topics."""
    for turn in reversed(history):
        if turn.get("role") == "user" and str(turn.get("content", "")).strip():
            previous = " ".join(str(turn["content"]).split())[:HISTORY_CHARS]
            return f"{previous} {question}"
    return question
