"""What answering returns: the answer text, the citations that tie it to retrieved chunks, and the error
that keeps the sources when generation fails.

These are shared result types, not generation code: the engine returns them, the API, the CLI and
``rag eval`` read them, so they live in ``core`` where every layer may import them. The generate stage
builds them (:mod:`rag.generate.openai_chat`); :mod:`rag.generate.answer` re-exports them under their
old import path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from rag.core.errors import GenerationError
from rag.core.types import Evidence, Hit

# ``[3]`` or ``[1, 4]``: the markers the prompt asks for. Anything else in brackets is ordinary text.
CITATION_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")

NO_CONTEXT_ANSWER = "No relevant context was found for this question, so it cannot be answered from the documents."
"""The answer when retrieval found nothing to answer from (every generation mode gives the same one)."""


@dataclass(frozen=True, slots=True)
class Citation:
    """Context block ``number`` of the prompt, and the retrieved hit it showed the model."""

    number: int
    hit: Hit


@dataclass(slots=True)
class Answer:
    """A generated answer grounded in numbered context blocks.

    Attributes:
        text: the answer, with inline ``[n]`` markers for every cited block.
        citations: the cited blocks, by number, each once.
        used_hits: the hits packed into the prompt; block ``n`` is ``used_hits[n - 1]``.
        model: the model that answered, as the endpoint named it.
        invalid_citations: numbers the model cited that match no block (hallucinated citations).
        warnings: what went wrong without failing the answer (cut at ``llm.max_tokens``, a reply that
            was not the JSON asked for, ...), for the caller to show.
        usage: token counts the endpoint reported (``prompt_tokens``, ``completion_tokens``,
            ``total_tokens``), or ``None`` if it reported none.
        retrieval: how the hits were found (the searched question, each stage's output and time), when
            :meth:`rag.engine.RagEngine.ask` made the answer; not part of :meth:`to_dict`.
        answerable: the calibrated probability that the index holds an answer (``None`` when it could
            not be computed; see :mod:`rag.retrieve.answerable`), set by :meth:`rag.engine.RagEngine.ask`.
        evidence: the raw retriever scores behind ``answerable``.
    """

    text: str
    citations: list[Citation]
    used_hits: list[Hit]
    model: str
    invalid_citations: list[int]
    warnings: list[str] = field(default_factory=list)
    usage: dict[str, int] | None = None
    retrieval: Any = None  # the rag.retrieve.pipeline.Retrieval behind used_hits, set by RagEngine.ask
    answerable: float | None = None
    evidence: Evidence | None = None

    def to_dict(self) -> dict[str, Any]:
        """The stable JSON shape of ``rag ask --json`` and the API: answer, citations and the numbered hits.

        ``hits[i]["number"]`` is the context block number the answer's ``[n]`` markers refer to.
        """
        return {
            "answer": self.text,
            "model": self.model,
            "usage": self.usage,
            "warnings": list(self.warnings),
            "invalid_citations": list(self.invalid_citations),
            "citations": [
                {
                    "number": c.number,
                    "doc_id": c.hit.chunk.doc_id,
                    "chunk_id": c.hit.chunk.chunk_id,
                    "source": c.hit.chunk.source,
                    "section": c.hit.chunk.section,
                }
                for c in self.citations
            ],
            "hits": numbered_hits(self.used_hits),
            "answerable": self.answerable,
            "evidence": self.evidence.to_dict() if self.evidence is not None else None,
        }


def numbered_hits(hits: list[Hit], key: str = "number") -> list[dict[str, Any]]:
    """Hits as JSON, each with its context block number (1-based) under ``key`` (the API says ``n``)."""
    return [{key: number, **hit.to_dict()} for number, hit in enumerate(hits, start=1)]


class AnswerError(GenerationError):
    """Generation failed after retrieval succeeded; :attr:`hits` holds the sources, which callers still show.

    Args:
        message: what went wrong with the endpoint (never the API key).
        hits: the retrieved hits the answer would have been grounded in.
    """

    def __init__(self, message: str, hits: list[Hit], *, timeout: bool = False, retrieval: Any = None) -> None:
        super().__init__(message)
        self.hits = hits
        self.timeout = timeout
        self.retrieval = retrieval


def find_citations(text: str, n_blocks: int) -> tuple[list[int], list[int]]:
    """The block numbers cited by ``[n]`` / ``[n, m]`` markers in ``text``.

    Returns:
        ``(valid, invalid)``, each sorted and without repeats: valid numbers lie in ``1..n_blocks``.
    """
    numbers = {int(number) for match in CITATION_MARKER.finditer(text) for number in match.group(1).split(",")}
    valid = sorted(number for number in numbers if 1 <= number <= n_blocks)
    invalid = sorted(numbers.difference(valid))
    return valid, invalid
