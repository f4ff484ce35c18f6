"""The ask path's answerability gate: when retrieval says the documents do not seem to hold an answer,
answer that, with the nearest sources, instead of handing the generator context that does not answer.

Generation is skipped rather than run with a caveat: a model given unrelated passages writes a fluent
answer from them (the bundled one echoes the question or repeats a sentence), which a caveat in front does
not undo; skipping is also instant. The nearest passages are still returned (``used_hits``) and listed by
every front end, so a reader can check them, and the answer's ``warnings`` say why nothing was generated.
"""

from __future__ import annotations

from rag.core.answers import Answer
from rag.retrieve.pipeline import Retrieval

NOT_COVERED = "The documents do not seem to cover this question; the nearest passages are listed as sources."
"""The answer text when generation is skipped (front ends and tests match it)."""

NOT_COVERED_MODEL = "none (not generated: below retrieval.answerable_threshold)"
"""``Answer.model`` when generation is skipped: no model wrote the text."""


def not_covered(retrieval: Retrieval, threshold: float) -> Answer | None:
    """The "not covered" answer when ``retrieval`` is judged unanswerable, else ``None`` (generate as usual).

    Judged unanswerable: there are hits (with none, the generator's own no-context answer stands), the
    probability could be computed, and it is below ``threshold`` (``0`` never skips).
    """
    probability = retrieval.answerable
    if not retrieval.hits or probability is None or probability >= threshold:
        return None
    warning = (
        f"answerability {probability:.2f} is below retrieval.answerable_threshold {threshold:g}: the retrieved "
        "passages do not seem to answer the question, so no answer was generated from them"
    )
    return Answer(
        text=NOT_COVERED, citations=[], used_hits=list(retrieval.hits), model=NOT_COVERED_MODEL,
        invalid_citations=[], warnings=[warning],
    )
