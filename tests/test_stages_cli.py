"""The retrieval stages from the command line: ``--hyde``, ``--rewrite``, ``--multi-query``, ``--rerank``,
``--explain``, ``ask --history`` and ``rag chat``, as real subprocesses.

The LLM is the real embedded llama.cpp server where a user would have it (the stages end to end), and the
scripted endpoint where a test must know the reply (follow-ups, history files). The cross-encoder is a real
one built from the packaged MiniLM (:func:`cross_encoder.build_test_cross_encoder`, once per session).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fake_endpoint import Reply, ScriptedEndpoint

pytestmark = pytest.mark.slow


def rag(cwd: Path, *args: str, env: dict[str, str] | None = None, stdin: str | None = None) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600, input=stdin,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "RAG_CACHE_DIR": str(cwd / "cache"), **(env or {})},
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, copy_ingested: Callable[[Path], Path]) -> Path:
    """The sample corpus after ``rag ingest docs`` (a copy of the session's one ingest)."""
    return copy_ingested(tmp_path_factory.mktemp("stages-cli"))


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_path: Path) -> Path:
    return cross_encoder_path  # the session's one, also used by tests/retrieve


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint() as server:
        yield server


def scripted(endpoint: ScriptedEndpoint) -> dict[str, str]:
    return {"RAG_LLM__BASE_URL": endpoint.base_url, "RAG_LLM__MODEL": endpoint.model, "RAG_LLM__MAX_RETRIES": "0"}


def test_stages_with_the_embedded_llm_explain_themselves(project: Path) -> None:
    env = {"RAG_LLM__THREADS": "1", "RAG_RETRIEVAL__STAGE_TIMEOUT": "240", "RAG_RETRIEVAL__STAGE_MAX_TOKENS": "48"}
    args = ("search", "How do I get my money back?", "--k", "3", "--hyde", "--rewrite", "--multi-query", "2",
            "--explain", "--json")
    result = rag(project, *args, env=env)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert 1 <= len(data["hits"]) <= 3
    stages = {s["stage"]: s for s in data["explain"]["stages"]}
    assert list(stages) == ["rewrite", "multi_query", "hyde", "search"]
    for name in ("rewrite", "hyde"):  # SmolLM2 writes *something*; a failure would say why
        assert stages[name].get("output") or stages[name].get("fallback")
    assert stages["search"]["queries"] == data["explain"]["search_queries"]
    assert data["explain"]["search_queries"][0] == (stages["rewrite"]["output"] or "How do I get my money back?")
    # A second run is served from the stage cache: no LLM call, the same hits.
    again = json.loads(rag(project, *args, env=env).stdout)
    assert [s.get("cached") for s in again["explain"]["stages"][:3]] == [True, True, True]
    assert [h["chunk_id"] for h in again["hits"]] == [h["chunk_id"] for h in data["hits"]]


def test_rerank_with_a_real_cross_encoder(project: Path, cross_encoder: Path) -> None:
    result = rag(project, "search", "refunds after purchase", "--k", "3", f"--rerank={cross_encoder}", "--explain", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    rerank = data["explain"]["stages"][-1]
    assert rerank["stage"] == "rerank" and rerank["model"] == str(cross_encoder)
    assert [r["after"] for r in rerank["ranks"]] == list(range(1, len(rerank["ranks"]) + 1))
    assert sorted(r["before"] for r in rerank["ranks"]) == list(range(1, len(rerank["ranks"]) + 1))
    scores = [h["rerank_score"] for h in data["hits"]]
    assert all(0 <= s <= 1 for s in scores) and scores == sorted(scores, reverse=True)
    assert [h["score"] for h in data["hits"]] == scores  # rerank.score = "rerank": the final score
    # The flag form, configured through the environment, gives the same ranking; human output shows it.
    human = rag(project, "search", "refunds after purchase", "--k", "3", "--rerank", "--explain",
                env={"RAG_RERANK__MODEL": str(cross_encoder)})
    assert human.returncode == 0, human.stderr
    assert "rerank" in human.stdout and "Explain" in human.stdout
    first = data["hits"][0]["metadata"]["source"]
    assert human.stdout.splitlines()[0].startswith(f"1. {first}")


def test_rerank_without_a_model_is_a_usage_error(project: Path) -> None:
    result = rag(project, "search", "refunds", "--rerank")
    assert result.returncode == 2
    assert "rerank.model" in result.stderr and "--rerank-model" in result.stderr
    missing = rag(project, "search", "refunds", "--rerank-model", str(project / "no-such-model"))
    assert missing.returncode == 2 and "no-such-model" in missing.stderr


def test_ask_with_a_history_file_answers_follow_ups(project: Path, endpoint: ScriptedEndpoint) -> None:
    history = project / "chat.json"
    history.unlink(missing_ok=True)
    endpoint.reply(Reply(pieces=["The team plan costs 45 euros [1]."]))
    first = rag(project, "ask", "How much is the team plan?", "--history", str(history), "--json", env=scripted(endpoint))
    assert first.returncode == 0, first.stderr
    assert [t["role"] for t in json.loads(history.read_text())] == ["user", "assistant"]

    endpoint.reply(Reply(pieces=["Within how many days are refunds granted?"]), Reply(pieces=["Within 30 days [1]."]))
    second = rag(project, "ask", "and refunds?", "--history", str(history), "--json", "--explain", env=scripted(endpoint))
    assert second.returncode == 0, second.stderr
    data = json.loads(second.stdout)
    assert data["explain"]["standalone_question"] == "Within how many days are refunds granted?"
    assert "How much is the team plan?" in endpoint.requests[1]["messages"][1]["content"]  # the condense prompt
    turns = json.loads(history.read_text())
    assert [t["content"] for t in turns] == [
        "How much is the team plan?", "The team plan costs 45 euros [1].", "and refunds?", "Within 30 days [1].",
    ]


def test_a_malformed_history_file_is_refused_and_kept(project: Path, endpoint: ScriptedEndpoint) -> None:
    history = project / "broken.json"
    history.write_text('[{"role": "user"}]')
    result = rag(project, "ask", "refunds?", "--history", str(history), env=scripted(endpoint))
    assert result.returncode == 2 and "history turn 1" in result.stderr
    assert history.read_text() == '[{"role": "user"}]' and endpoint.requests == []


def test_chat_keeps_the_conversation(project: Path, endpoint: ScriptedEndpoint) -> None:
    endpoint.reply(
        Reply(pieces=["The basic plan costs 10 euros [1]."]),
        Reply(pieces=["What does the team plan cost?"]), Reply(pieces=["45 euros [1]."]),
        Reply(pieces=["The widget needs Python 3.10 [1]."]),
    )
    script = "What does the basic plan cost?\nand the team plan?\n/reset\nWhat does the widget need?\n"
    result = rag(project, "chat", "--no-chunks", env=scripted(endpoint), stdin=script)
    assert result.returncode == 0, result.stderr
    assert "10 euros" in result.stdout and "45 euros" in result.stdout and "Python 3.10" in result.stdout
    # Turn 2 was condensed with turn 1 in view; after /reset, turn 3 was not condensed at all.
    assert endpoint.requests[1]["messages"][0]["content"].startswith("Rewrite the user's follow-up")
    assert len(endpoint.requests) == 4 and endpoint.requests[3]["stream"] is True
