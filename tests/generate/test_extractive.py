"""Extractive answers with the real packaged embedder: verbatim, cited, de-duplicated, streamed.

The sentence splitter's tests need no model; the generator's load all-MiniLM-L6-v2 once for the module.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable

import pytest

from rag.core.answers import CITATION_MARKER, NO_CONTEXT_ANSWER, find_citations
from rag.core.embeddings import SentenceEmbedder
from rag.core.errors import ConfigError
from rag.core.settings import load_settings
from rag.core.types import Hit
from rag.engine.llm import LLMServices
from rag.generate.extractive import ExtractiveGenerator, passage_sentences, restates, split_sentences

PIECE = re.compile(r"^ ?(?P<sentence>.+?) \[(?P<n>\d+)\]$")


def sentences_of(answer_text: str) -> list[tuple[str, int]]:
    """``(sentence, n)`` for each ``sentence [n]`` of an extractive answer."""
    parts = re.findall(r"(.+?) \[(\d+)\](?: |$)", answer_text)
    return [(sentence.strip(), int(n)) for sentence, n in parts]


def flat(text: str) -> str:
    return " ".join(text.split())


# -- sentences of a passage (no model) ----------------------------------------------------------------


def test_markdown_structure_never_becomes_an_answer_sentence() -> None:
    text = (
        "## Rebuilding the index\n\n"
        "Run `rag ingest --rebuild docs` after changing the embedding model. It drops the index first.\n\n"
        "| setting | default |\n|---|---|\n| chunking.size | 200 |\n\n"
        "```bash\nrag ingest --rebuild docs\n```\n\n"
        "- The catalog is rebuilt from the files.\n"
        "- Vectors are written again, e.g. for a new model.\n\n"
        "What does a rebuild cost?\n"
    )
    assert passage_sentences(text) == [
        "Run `rag ingest --rebuild docs` after changing the embedding model.",
        "It drops the index first.",
        "The catalog is rebuilt from the files.",
        "Vectors are written again, e.g. for a new model.",
    ]


def test_window_edges_cut_mid_sentence_are_dropped() -> None:
    window = "the index, which is why it is slow. Refunds are granted within 30 days. Shipping takes five"
    assert passage_sentences(window) == ["Refunds are granted within 30 days."]
    # A table cut off from its header is no paragraph either.
    assert passage_sentences("| Plain text | `.txt` | one section |\n| HTML | `.html` | main content |") == []


def test_split_sentences_keeps_abbreviations_and_code_spans() -> None:
    assert split_sentences("Set it, e.g. to 0.5. `alpha` is the dense weight. Why? Because BM25 is exact.") == [
        "Set it, e.g. to 0.5.", "`alpha` is the dense weight.", "Why?", "Because BM25 is exact.",
    ]
    # A quoted question inside a sentence does not end it.
    assert split_sentences('`rag ask "What is alpha?"` retrieves chunks and cites them. Then it stops.') == [
        '`rag ask "What is alpha?"` retrieves chunks and cites them.', "Then it stops.",
    ]


def test_restating_means_adding_fewer_than_two_terms() -> None:
    question = frozenset({"widget", "cach", "clear"})
    assert restates(frozenset({"widget", "cach", "clear"}), question)
    assert restates(frozenset({"widget", "cach", "clear", "often"}), question)
    assert not restates(frozenset({"widget", "cach", "folder", "restart", "clear"}), question)


# -- the generator, with the real embedder ------------------------------------------------------------


@pytest.fixture(scope="module")
def embedder() -> SentenceEmbedder:
    return SentenceEmbedder()


@pytest.fixture
def generator(embedder: SentenceEmbedder) -> ExtractiveGenerator:
    return ExtractiveGenerator(embedder.encode)


FAQ = (
    "## How do I clear the widget cache?\n\n"
    "Clearing the widget cache is how to clear the widget cache. "
    "Open the cache folder in your home directory and delete every file in it, then restart the widget. "
    "The widget ships in three colours."
)
CACHE_SIZE = "Large caches slow the widget down. The cache folder grows by about 2 GB a month of daily use."
PRICING = "The basic plan costs 10 euros a month. The team plan costs 45 euros a month and includes priority support."


@pytest.mark.slow
def test_answer_sentences_are_verbatim_sentences_of_the_blocks_they_cite(
    generator: ExtractiveGenerator, make_hit: Callable[..., Hit]
) -> None:
    hits = [make_hit(1, FAQ), make_hit(2, PRICING), make_hit(3, CACHE_SIZE)]
    answer = generator.generate("How do I clear the widget cache?", hits)

    pairs = sentences_of(answer.text)
    assert pairs, answer.text
    for sentence, number in pairs:
        assert sentence in flat(answer.used_hits[number - 1].chunk.text), (sentence, number)
    assert "delete every file" in answer.text
    assert "colours" not in answer.text and "euros" not in answer.text
    cited, invalid = find_citations(answer.text, len(answer.used_hits))
    assert [c.number for c in answer.citations] == cited and invalid == [] == answer.invalid_citations
    assert all(c.hit is answer.used_hits[c.number - 1] for c in answer.citations)
    assert answer.model == "extractive" and answer.usage is None and answer.used_hits == hits


@pytest.mark.slow
def test_a_sentence_restating_the_question_is_dropped(generator: ExtractiveGenerator, make_hit: Callable[..., Hit]) -> None:
    answer = generator.generate("How do I clear the widget cache?", [make_hit(1, FAQ)])
    assert "is how to clear" not in answer.text
    assert answer.text.startswith("Open the cache folder")


@pytest.mark.slow
def test_repeated_and_near_duplicate_sentences_appear_once(
    generator: ExtractiveGenerator, make_hit: Callable[..., Hit]
) -> None:
    # Overlapping chunk windows repeat a sentence word for word; a second page paraphrases it.
    shared = "Refunds are granted within 30 days of purchase."
    hits = [
        make_hit(1, f"Our policy is simple. {shared}"),
        make_hit(2, f"{shared} Returns need the original receipt."),
        make_hit(3, "Refunds are granted within thirty days of the purchase."),
    ]
    answer = generator.generate("Within how many days are refunds granted?", hits)
    texts = [sentence for sentence, _ in sentences_of(answer.text)]
    assert texts.count(shared) == 1
    assert "within thirty days" not in answer.text
    assert len(texts) == len({t.lower() for t in texts})


@pytest.mark.slow
def test_streamed_pieces_add_up_to_the_text(generator: ExtractiveGenerator, make_hit: Callable[..., Hit]) -> None:
    pieces: list[str] = []
    hits = [make_hit(1, FAQ), make_hit(2, CACHE_SIZE)]
    answer = generator.generate("Why is the widget slow and how do I clear its cache?", hits, on_token=pieces.append)
    assert len(pieces) >= 2 and "".join(pieces) == answer.text
    assert all(PIECE.match(piece) for piece in pieces), pieces
    assert all(CITATION_MARKER.search(piece) for piece in pieces)


@pytest.mark.slow
def test_no_hits_or_nothing_relevant_gives_the_no_context_answer(
    generator: ExtractiveGenerator, make_hit: Callable[..., Hit]
) -> None:
    pieces: list[str] = []
    answer = generator.generate("How do I clear the widget cache?", [], on_token=pieces.append)
    assert answer.text == NO_CONTEXT_ANSWER == "".join(pieces) and answer.citations == []

    unrelated = [make_hit(1, "The Colosseum in Rome was finished in 80 AD by the emperor Titus.")]
    answer = generator.generate("What is the boiling point of liquid nitrogen in kelvin?", unrelated)
    assert answer.text == NO_CONTEXT_ANSWER and answer.citations == [] and answer.used_hits == unrelated


@pytest.mark.slow
def test_blocks_and_numbers_are_those_of_the_llm_prompt(embedder: SentenceEmbedder, make_hit: Callable[..., Hit]) -> None:
    # 60 approximate tokens: the long second hit does not fit and is skipped, so the third becomes block
    # [2], as build_messages numbers it.
    hits = [
        make_hit(1, "Refunds are granted within 30 days of purchase."),
        make_hit(2, "Shipping costs nothing on orders of any size. " * 30),
        make_hit(3, "Every refund needs the original receipt."),
    ]
    answer = ExtractiveGenerator(embedder.encode, context_tokens=60).generate(
        "When are refunds granted, and what do they need?", hits
    )
    assert answer.used_hits == [hits[0], hits[2]]
    assert ("Every refund needs the original receipt.", 2) in sentences_of(answer.text)

    # A first hit longer than the budget is cut to fit, as in the prompt: what lies beyond is not used.
    long_first = "Refunds are granted within 30 days of purchase. " + "Filler words pad the page out. " * 20
    hits = [make_hit(1, long_first + "Every refund needs the original receipt.")]
    answer = ExtractiveGenerator(embedder.encode, context_tokens=30).generate(
        "When are refunds granted, and what do they need?", hits
    )
    assert sentences_of(answer.text) == [("Refunds are granted within 30 days of purchase.", 1)]


def test_bad_budgets_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match="max_words must be positive, got 0"):
        ExtractiveGenerator(lambda texts: None, max_words=0)
    with pytest.raises(ConfigError, match="min_score"):
        ExtractiveGenerator(lambda texts: None, min_score=1.5)


# -- which generator answers ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("generation", "llm", "mode"),
    [
        ({}, {}, "extractive"),  # the bundled model: auto is extractive
        ({}, {"base_url": "http://127.0.0.1:9/v1"}, "llm"),  # a configured endpoint
        ({}, {"gguf": "models/qwen.gguf"}, "llm"),  # a model of the user's own in the embedded server
        ({"mode": "llm"}, {}, "llm"),
        ({"mode": "extractive"}, {"base_url": "http://127.0.0.1:9/v1"}, "extractive"),
    ],
)
def test_auto_is_extractive_only_for_the_bundled_model(tmp_path, generation: dict, llm: dict, mode: str) -> None:
    settings = load_settings(data_dir=tmp_path / ".rag", generation=generation, llm=llm)
    services = LLMServices(settings, len, threading.RLock())
    assert services.answer_mode() == mode


def test_the_extractive_generator_starts_no_llm_and_an_endpoint_gets_the_chat_generator(tmp_path) -> None:
    from rag.generate import OpenAIChatGenerator

    services = LLMServices(load_settings(data_dir=tmp_path / ".rag"), len, threading.RLock())
    assert isinstance(services.generator(), ExtractiveGenerator)
    assert services._endpoint is None  # nothing asked for an LLM endpoint, so none was started
    services = LLMServices(
        load_settings(data_dir=tmp_path / ".rag", llm={"base_url": "http://127.0.0.1:9/v1"}), len, threading.RLock()
    )
    assert isinstance(services.generator(), OpenAIChatGenerator)
