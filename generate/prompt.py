"""The grounded prompt: numbered context blocks packed into a token budget, then the question.

Block ``n`` is ``[n] <citation label>\\n<chunk text>``; the model cites it as ``[n]`` and the generator maps
``n`` back to ``used[n - 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Callable

from rag.core.types import Hit

SYSTEM_PROMPT = (
    "You answer questions using ONLY the numbered context blocks the user gives you. "
    "Cite the blocks that support each statement by their number in square brackets, like [1] or [2]. "
    "If the context does not contain the answer, say that you do not know; do not use outside knowledge."
)
# The shape is spelled out (with placeholders, not an example answer a small model would copy) because
# models follow the schema better when the prompt also describes it.
STRUCTURED_SUFFIX = (
    ' Reply as JSON of this shape: {"answer": "<the answer, citing blocks like [1]>",'
    ' "citations": [<numbers of the blocks used>]}'
)
TRUNCATION_MARK = " …"


def approx_token_count(text: str) -> int:
    """A cheap token estimate, about four characters per token (English text, BPE tokenizers).

    It is only an approximation, used when no tokenizer is given; the engine passes the embedding
    tokenizer's counter instead.
    """
    return math.ceil(len(text) / 4)


def format_block(number: int, hit: Hit, text: str | None = None) -> str:
    """``[number] <citation label>`` and, on the next line, ``text`` (default: the hit's
    :attr:`~rag.core.types.Hit.context_text`, its chunk text or the text ``generation.expand`` widened it to)."""
    return f"[{number}] {hit.chunk.citation_label()}\n{hit.context_text if text is None else text}"


def _truncated_block(number: int, hit: Hit, budget_tokens: int, count_tokens: Callable[[str], int]) -> str:
    """The longest prefix of the hit's context text (cut at a word boundary) whose block fits the budget."""
    text = hit.context_text
    low, high = 0, len(text)
    # Binary search on characters: any token counter grows (weakly) with the prefix length.
    while low < high:
        middle = (low + high + 1) // 2
        if count_tokens(format_block(number, hit, text[:middle] + TRUNCATION_MARK)) <= budget_tokens:
            low = middle
        else:
            high = middle - 1
    prefix = text[:low]
    if low < len(text) and " " in prefix:
        prefix = prefix.rsplit(" ", 1)[0]  # do not end on half a word
    return format_block(number, hit, prefix.rstrip() + TRUNCATION_MARK)


def build_messages(
    question: str,
    hits: list[Hit],
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    structured: bool = False,
) -> tuple[list[dict[str, str]], list[Hit]]:
    """Build the chat messages for a grounded, cited answer.

    Hits are taken in rank order and packed greedily: a block that does not fit the remaining budget is
    skipped and later, smaller ones may still fit. The first hit is always used; if its block alone
    exceeds the budget its text is truncated to fit (down to the bare label if need be). Blocks are
    counted one by one (the blank lines between them are not), and the budget covers the blocks only,
    not the instructions or the question.

    Args:
        question: the user's question.
        hits: retrieved hits, best first.
        budget_tokens: token budget for the context blocks (``llm.context_tokens``).
        count_tokens: counts the tokens of a string.
        structured: also ask for the JSON reply shape of the generator's structured mode.

    Returns:
        The ``[system, user]`` messages, and the hits used: block ``n`` is ``used[n - 1]``.

    Raises:
        ValueError: ``budget_tokens`` is not positive.
    """
    if budget_tokens <= 0:
        raise ValueError(f"budget_tokens must be positive, got {budget_tokens}")
    blocks: list[str] = []
    used: list[Hit] = []
    remaining = budget_tokens
    for hit in hits:
        number = len(used) + 1
        block = format_block(number, hit)
        cost = count_tokens(block)
        if cost > remaining:
            if used:
                continue
            block = _truncated_block(number, hit, budget_tokens, count_tokens)
            cost = count_tokens(block)
        blocks.append(block)
        used.append(hit)
        remaining -= cost
    context = "\n\n".join(blocks)
    user = f"Context:\n\n{context}\n\nQuestion: {question.strip()}" if blocks else f"Question: {question.strip()}"
    system = SYSTEM_PROMPT + (STRUCTURED_SUFFIX if structured else "")
    return [{"role": "system", "content": system}, {"role": "user", "content": user}], used
