"""Prompt building: numbered blocks in rank order, packed greedily into the token budget."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from rag.core.types import Hit
from rag.generate.prompt import approx_token_count, build_messages, format_block


def words(text: str) -> int:
    """A predictable token counter for the tests: one token per whitespace-separated word."""
    return len(text.split())


def blocks_of(messages: list[dict[str, str]]) -> list[str]:
    """The context blocks of the user message, split at their ``[n] `` headers."""
    context = messages[1]["content"].split("Context:\n\n", 1)[1].rsplit("\n\nQuestion:", 1)[0]
    return re.split(r"\n\n(?=\[\d+\] )", context)


def test_blocks_are_numbered_labelled_and_kept_in_rank_order(hits: list[Hit]) -> None:
    messages, used = build_messages("How tall is it?", hits, budget_tokens=1000, count_tokens=words)

    assert used == hits
    assert [m["role"] for m in messages] == ["system", "user"]
    assert blocks_of(messages) == [
        "[1] docs/eiffel.md § Facts\nThe Eiffel Tower is 330 metres tall. It was completed in 1889.",
        "[2] docs/berlin.md\nBerlin is the capital of Germany.",
        "[3] docs/rome.md § History\nThe Colosseum in Rome was finished in 80 AD.",
    ]
    assert messages[1]["content"].endswith("\n\nQuestion: How tall is it?")


def test_system_message_grounds_cites_and_allows_not_knowing(hits: list[Hit]) -> None:
    plain, _ = build_messages("q", hits, budget_tokens=100, count_tokens=words)
    structured, _ = build_messages("q", hits, budget_tokens=100, count_tokens=words, structured=True)

    system = plain[0]["content"]
    assert "ONLY the numbered context blocks" in system
    assert "[1]" in system
    assert "do not know" in system
    assert structured[0]["content"].startswith(system)
    assert '"citations"' in structured[0]["content"]


def test_blocks_that_do_not_fit_are_skipped_and_later_ones_still_packed(make_hit: Callable[..., Hit]) -> None:
    small = make_hit(1, "alpha " * 10)
    large = make_hit(2, "beta " * 100)
    medium = make_hit(3, "gamma " * 20)
    tail = make_hit(4, "delta " * 30)
    budget = 60  # each block also costs 2 words of header: "[n] docs/docN.md"

    messages, used = build_messages("q", [small, large, medium, tail], budget_tokens=budget, count_tokens=words)

    assert used == [small, medium]  # large skipped; tail would overflow once medium is in
    blocks = blocks_of(messages)
    assert sum(words(block) for block in blocks) <= budget
    # Numbering follows the used hits, so block n is used[n - 1] even after a skip.
    assert [block.split("\n", 1)[0] for block in blocks] == ["[1] docs/doc1.md", "[2] docs/doc3.md"]


def test_first_block_is_truncated_when_it_alone_exceeds_the_budget(make_hit: Callable[..., Hit]) -> None:
    text = " ".join(f"word{i}" for i in range(1000))
    huge, next_hit = make_hit(1, text), make_hit(2, "small")

    messages, used = build_messages("q", [huge, next_hit], budget_tokens=50, count_tokens=words)

    assert used == [huge]
    (block,) = blocks_of(messages)
    assert words(block) <= 50
    header, body = block.split("\n", 1)
    assert header == "[1] docs/doc1.md"
    assert body.endswith(" …")
    kept = body.removesuffix(" …")
    assert text.startswith(kept + " ")  # a prefix, cut between words
    assert words(kept) >= 40  # and not needlessly short


def test_truncation_works_with_a_character_based_counter(make_hit: Callable[..., Hit]) -> None:
    huge = make_hit(1, "x" * 10_000)

    messages, used = build_messages("q", [huge], budget_tokens=100, count_tokens=approx_token_count)

    (block,) = blocks_of(messages)
    assert used == [huge]
    assert 90 <= approx_token_count(block) <= 100


def test_format_block_defaults_to_the_chunk_text(hits: list[Hit]) -> None:
    assert format_block(2, hits[1]) == "[2] docs/berlin.md\nBerlin is the capital of Germany."


def test_budget_must_be_positive(hits: list[Hit]) -> None:
    with pytest.raises(ValueError, match="budget_tokens must be positive, got 0"):
        build_messages("q", hits, budget_tokens=0, count_tokens=words)


def test_approx_token_count_is_about_four_characters_per_token() -> None:
    assert approx_token_count("") == 0
    assert approx_token_count("abcd") == 1
    assert approx_token_count("abcde") == 2
