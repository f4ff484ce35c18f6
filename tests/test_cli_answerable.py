"""Answerability in the ``rag`` command: ``ask --json`` and ``search --queries``/``--explain --json`` carry
``answerable`` and ``evidence``; an off-topic ``ask`` says the documents do not cover it without starting
the LLM; people get a one-line verdict."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from test_cli import rag

from rag.engine.answerability import NOT_COVERED

pytestmark = pytest.mark.slow

COVERED = "When are refunds granted after a purchase?"
OFF_TOPIC = "What is the boiling point of liquid nitrogen in kelvin?"


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, copy_ingested: Callable[[Path], Path]) -> Path:
    return copy_ingested(tmp_path_factory.mktemp("cli-answerable"))


def test_ask_json_off_topic_is_not_covered(project: Path) -> None:
    result = rag(project, "ask", OFF_TOPIC, "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["answer"] == NOT_COVERED and data["error"] is None and data["citations"] == [] and data["hits"]
    assert 0.0 <= data["answerable"] < 0.5
    assert data["evidence"]["keyword"] == "bm25s" and 0.0 < data["evidence"]["dense_top"] < 1.0
    assert any("answerable_threshold" in w for w in data["warnings"])


def test_search_outputs_carry_answerability(project: Path) -> None:
    queries = project / "queries.jsonl"
    queries.write_text(json.dumps({"_id": "in", "text": COVERED}) + "\n" + json.dumps({"_id": "out", "text": OFF_TOPIC}) + "\n")
    lines = [json.loads(line) for line in rag(project, "search", "--queries", str(queries)).stdout.splitlines()]
    assert [set(line) for line in lines] == [{"_id", "hits", "answerable", "evidence"}] * 2
    assert lines[0]["answerable"] > 0.5 > lines[1]["answerable"]
    explained = json.loads(rag(project, "search", COVERED, "--explain", "--json").stdout)
    assert list(explained) == ["hits", "answerable", "evidence", "explain"]
    assert explained["answerable"] == lines[0]["answerable"] and explained["evidence"] == lines[0]["evidence"]
    assert isinstance(json.loads(rag(project, "search", COVERED, "--json").stdout), list)  # the plain shape stays
    human = rag(project, "search", OFF_TOPIC)
    assert f"answerable {lines[1]['answerable']:.2f}: the documents do not seem to cover this" in human.stdout
