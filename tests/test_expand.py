"""generation.expand: retrieved chunks widened with their neighbours or section before the answer is written."""

from __future__ import annotations

import textwrap
from itertools import pairwise

import pytest

from rag.core.errors import ConfigError
from rag.core.types import Hit
from rag.generate.prompt import build_messages, format_block

pytestmark = pytest.mark.slow

# One paragraph of numbered sentences, single-spaced: windows of 40 tokens sharing up to 10.
SENTENCES = " ".join(f"Fact {n} says that lamp {n} glows {'red' if n % 2 else 'blue'} at night." for n in range(1, 31))

TWO_SECTIONS = textwrap.dedent(
    """\
    # Lamps

    ## Red lamps
    """
) + " ".join(f"Red lamp {n} is mounted on pole {n} near the harbour." for n in range(1, 9)) + textwrap.dedent(
    """

    ## Blue lamps
    """
) + " ".join(f"Blue lamp {n} is mounted on mast {n} by the station." for n in range(1, 9)) + "\n"


@pytest.fixture
def engine(make_engine):
    engine = make_engine(chunking={"size": 40, "overlap": 10, "min_tokens": 0})
    engine.ingest_documents([{"id": "facts", "text": SENTENCES}])
    return engine


def _hit(engine, chunk_index: int, doc_id: str = "facts") -> Hit:
    chunk = engine.catalog.document_chunks(doc_id)[chunk_index]
    return Hit(chunk, score=1.0)


def test_neighbours_are_merged_without_repeating_the_overlap(engine):
    chunks = engine.catalog.document_chunks("facts")
    assert len(chunks) >= 5
    assert all(b.metadata["start"] < a.metadata["end"] for a, b in pairwise(chunks))  # windows overlap
    [widened] = engine.expand([_hit(engine, 2)], "neighbours")
    first, last = chunks[1].metadata["start"], chunks[3].metadata["end"]
    assert widened.expanded_text == SENTENCES[first:last]  # the document's own text, each sentence once
    assert widened.chunk == chunks[2] and widened.context_text == widened.expanded_text
    # The first chunk has no chunk before it: only the next one is added.
    [start] = engine.expand([_hit(engine, 0)], "neighbours")
    assert start.expanded_text == SENTENCES[: chunks[1].metadata["end"]]


def test_hits_next_to_each_other_are_not_repeated(engine):
    hits = [_hit(engine, 2), _hit(engine, 3)]
    widened = engine.expand(hits, "neighbours")
    chunks = engine.catalog.document_chunks("facts")
    # Chunk 3 is in the prompt as hit 2, so hit 1 takes only chunk 1; hit 2 then takes chunk 4.
    assert widened[0].expanded_text == SENTENCES[chunks[1].metadata["start"] : chunks[2].metadata["end"]]
    assert widened[1].expanded_text == SENTENCES[chunks[3].metadata["start"] : chunks[4].metadata["end"]]
    assert [h.chunk.chunk_id for h in widened] == [h.chunk.chunk_id for h in hits]


def test_widening_respects_the_budget_and_never_drops_a_hit(engine, make_engine, tmp_path):
    hits = [_hit(engine, i) for i in (2, 6, 10)]
    count = engine.count_tokens
    own = sum(count(format_block(n, hit)) for n, hit in enumerate(hits, start=1))
    for budget in (own, own + 30, own + 200, own + 5000):
        small = make_engine(
            data_dir=tmp_path / ".rag", chunking={"size": 40, "overlap": 10, "min_tokens": 0},
            llm={"context_tokens": budget},
        )
        widened = small.expand(hits, "neighbours")
        total = sum(count(format_block(n, hit)) for n, hit in enumerate(widened, start=1))
        assert total <= budget
        _, used = build_messages("q", widened, budget_tokens=budget, count_tokens=count)
        assert [h.chunk.chunk_id for h in used] == [h.chunk.chunk_id for h in hits]
        if budget == own:
            assert all(h.expanded_text is None for h in widened)
        if budget == own + 5000:
            assert all(h.expanded_text is not None for h in widened)


def test_section_takes_the_whole_short_section_and_stays_inside_it(make_engine, tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "lamps.md").write_text(TWO_SECTIONS, encoding="utf-8")
    engine = make_engine(chunking={"size": 40, "overlap": 10, "min_tokens": 0})
    engine.ingest([tmp_path / "docs"])
    chunks = engine.catalog.document_chunks("docs/lamps.md")
    red = [c for c in chunks if c.section.endswith("Red lamps")]
    assert len(red) >= 3
    [widened] = engine.expand([Hit(red[1], score=1.0)], "section")
    text = widened.expanded_text
    assert text == TWO_SECTIONS[red[0].metadata["start"] : red[-1].metadata["end"]]
    assert "Blue lamp" not in text and text.count("Red lamp 3 ") == 1
    # neighbours: one chunk each side only.
    [near] = engine.expand([Hit(red[1], score=1.0)], "neighbours")
    assert len(near.expanded_text) < len(text) or len(red) == 3


def test_unknown_mode_is_a_config_error(engine):
    with pytest.raises(ConfigError, match="expand must be one of none, neighbours, section"):
        engine.expand([_hit(engine, 1)], "paragraph")


def test_ask_answers_from_widened_hits_and_cites_the_retrieved_chunks(make_engine):
    engine = make_engine(
        chunking={"size": 40, "overlap": 10, "min_tokens": 0}, generation={"expand": "neighbours"},
        llm={"max_tokens": 24},
    )
    engine.ingest_documents([{"id": "facts", "text": SENTENCES}])
    sources: list[Hit] = []
    answer = engine.ask("What colour does lamp 7 glow?", k=2, on_sources=sources.extend)
    retrieved = [h.chunk.chunk_id for h in sources]
    assert [h.chunk.chunk_id for h in answer.used_hits] == retrieved[: len(answer.used_hits)]
    assert all(h.expanded_text is None for h in sources)  # the sources are shown as retrieved
    assert any(h.expanded_text and len(h.expanded_text) > len(h.chunk.text) for h in answer.used_hits)
    assert all(c.hit.chunk.chunk_id in retrieved for c in answer.citations)
    assert [h["text"] for h in answer.to_dict()["hits"]] == [h.chunk.text for h in answer.used_hits]
