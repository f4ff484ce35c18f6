"""What a short LLM completion returns, and what the retrieval stages need from whoever makes one.

The query transforms (HyDE, rewrites, condensing) and the LLM reranker live in ``retrieve``, which may
not import the generate stage; they depend on these shared types instead, and the engine hands them a
:class:`rag.generate.completion.ChatCompleter`, which satisfies :class:`Completer`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Completion:
    """One stage reply: its text, whether it came from the cache, and how long it took."""

    text: str
    cached: bool
    ms: float


class Completer(Protocol):
    """Makes one short completion: :class:`rag.generate.completion.ChatCompleter`, or a test's fake."""

    def complete(self, messages: list[dict[str, str]], *, max_tokens: int, temperature: float = 0.0) -> Completion: ...
