"""Fixtures for the generate stage: hits to answer from and a scripted OpenAI-compatible endpoint."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fake_endpoint import ScriptedEndpoint

from rag.core.types import Chunk, Hit


def _make_hit(number: int, text: str, source: str | None = None, section: str = "") -> Hit:
    source = source or f"docs/doc{number}.md"
    metadata: dict[str, Any] = {"source": source, "section": section}
    return Hit(Chunk(f"c{number}", source, text, metadata), score=1.0 / number)


@pytest.fixture
def make_hit() -> Callable[..., Hit]:
    """``make_hit(number, text, source=None, section="")``: a hit on chunk ``c<number>``."""
    return _make_hit


@pytest.fixture
def hits() -> list[Hit]:
    """Three small hits about different facts, best first."""
    return [
        _make_hit(1, "The Eiffel Tower is 330 metres tall. It was completed in 1889.", "docs/eiffel.md", "Facts"),
        _make_hit(2, "Berlin is the capital of Germany.", "docs/berlin.md"),
        _make_hit(3, "The Colosseum in Rome was finished in 80 AD.", "docs/rome.md", "History"),
    ]


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    """A running :class:`ScriptedEndpoint`; queue replies with ``endpoint.reply(...)``."""
    with ScriptedEndpoint() as server:
        yield server
