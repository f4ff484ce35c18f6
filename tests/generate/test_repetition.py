"""RepetitionGuard: where a looping answer is cut, and that nothing cut was ever released to the reader."""

from __future__ import annotations

import random

import pytest

from rag.generate.repetition import RepetitionGuard, trim_repetition

# The loop issue 17 quotes: the bundled model wrote this sentence eleven times in a row.
LOOP = "You should not change the embedding model [1]. " * 11


def stream(text: str, guard: RepetitionGuard, seed: int = 0) -> list[str]:
    """Feed ``text`` in random pieces of 1-7 characters as a model streams it; the released pieces."""
    rng = random.Random(seed)
    released, position = [], 0
    while position < len(text) and guard.repeat is None:
        size = rng.randint(1, 7)
        released.append(guard.feed(text[position : position + size]))
        position += size
    released.append(guard.finish())
    return [piece for piece in released if piece]


def test_a_repeated_sentence_is_cut_after_its_first_occurrence() -> None:
    text, repeat = trim_repetition(LOOP)
    assert text == "You should not change the embedding model [1]."
    assert repeat is not None and repeat.kind == "sentence"
    assert repeat.span == "You should not change the embedding model [1]."


def test_sentences_differing_only_in_citations_case_or_punctuation_are_repeats() -> None:
    text, repeat = trim_repetition("Ingest is incremental [1]. It re-embeds changed files [2]! it re-embeds changed files [3].")
    assert text == "Ingest is incremental [1]. It re-embeds changed files [2]!"
    assert repeat is not None


def test_a_long_run_repeated_mid_sentence_is_cut_at_the_start_of_its_sentence() -> None:
    text, repeat = trim_repetition(
        "The first run says that the platform is designed to work offline. "
        "Then the second says that the platform is designed to work offline again."
    )
    assert text == "The first run says that the platform is designed to work offline."
    assert repeat is not None and repeat.kind == "ngram"


def test_a_loop_inside_one_sentence_keeps_its_first_round() -> None:
    text, repeat = trim_repetition("Supported formats are pdf, docx, html, md, pdf, docx, html, md, pdf, docx, html, md, pdf")
    assert text == "Supported formats are pdf, docx, html, md"
    assert repeat is not None and repeat.kind == "ngram"


@pytest.mark.parametrize(
    "text",
    [
        "Chunks are 200 tokens long [1]. Consecutive chunks share 40 tokens [1]. Shorter windows cite precisely.",
        # The same short phrase twice, and the same 7 words twice: neither is a loop.
        "Run rag ingest. Then run rag search, and if that works run rag ingest again with --watch.",
        "It is fast. It is fast and it is cheap. It uses the bundled model.",
        "",
    ],
)
def test_text_without_a_loop_is_kept_whole(text: str) -> None:
    assert trim_repetition(text) == (text, None)


def test_short_repeated_sentences_below_the_minimum_do_not_count() -> None:
    assert trim_repetition("Yes. Yes. It does.")[1] is None
    assert trim_repetition("Yes. Yes. It does.".replace("Yes", "Yes it does"))[1] is not None


@pytest.mark.parametrize("seed", range(5))
def test_streamed_pieces_add_up_to_the_kept_text_and_never_include_the_repeat(seed: int) -> None:
    guard = RepetitionGuard()
    released = stream(LOOP, guard, seed)
    assert "".join(released).strip() == guard.text == "You should not change the embedding model [1]."
    assert guard.repeat is not None


@pytest.mark.parametrize("seed", range(3))
def test_text_streams_a_few_words_behind_the_model(seed: int) -> None:
    text = " ".join(f"word{i}" for i in range(40)) + "."
    guard = RepetitionGuard(ngram=8)
    released = stream(text, guard, seed)
    assert "".join(released) == text and guard.repeat is None
    # Text is released before the end, lagging at most ngram - 1 whole words (plus the one being written).
    assert len(released) > 5
    assert "word30" in "".join(released[:-1])


def test_a_repeat_in_the_last_sentence_is_found_when_the_stream_ends() -> None:
    guard = RepetitionGuard()
    shown = guard.feed("The index lives in .rag. The index lives in .rag")  # no space after the last word
    assert guard.repeat is None
    assert shown + guard.finish() == "The index lives in .rag."
    assert guard.repeat is not None


def test_pieces_after_a_repeat_are_ignored() -> None:
    guard = RepetitionGuard()
    stream(LOOP, guard)
    assert guard.feed("More text. ") == "" and guard.finish() == ""
    assert guard.text == "You should not change the embedding model [1]."


@pytest.mark.parametrize(("ngram", "min_words"), [(1, 3), (8, 0)])
def test_bad_arguments_fail_at_construction(ngram: int, min_words: int) -> None:
    with pytest.raises(ValueError, match="at least"):
        RepetitionGuard(ngram, min_words)
