"""End to end as a user runs it: ingest with the real model, ask through the real local llama.cpp server.

No fakes: with ``generation.mode = llm`` (set for these commands; the default answers extractively, see
the last test) ``rag ask`` starts the embedded server (xllamacpp + the packaged SmolLM2) on a free port on
127.0.0.1 and stops it on exit. The model is tiny, so the test checks the contract (an answer, and
citations that point at retrieved chunks), not the wisdom of the answer.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def rag(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "RAG_LLM__THREADS": "1", "RAG_GENERATION__MODE": "llm",
             **(env or {})},
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, copy_ingested: Callable[[Path], Path]) -> Path:
    """The sample corpus after ``rag ingest docs`` with the real model (a copy of the session's one ingest)."""
    return copy_ingested(tmp_path_factory.mktemp("e2e"))


def test_ask_answers_with_citations_of_retrieved_chunks(project: Path) -> None:
    result = rag(project, "ask", "How much does the team plan cost?", "--k", "3", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["error"] is None and answer["answer"].strip()
    retrieved = {hit["number"]: hit["chunk_id"] for hit in answer["hits"]}
    assert answer["hits"][0]["doc_id"] == "docs/web/pricing.html"
    assert answer["citations"], "structured output guarantees at least one citation"
    for citation in answer["citations"]:
        assert retrieved[citation["number"]] == citation["chunk_id"]


def test_ask_streams_and_prints_numbered_sources(project: Path) -> None:
    result = rag(project, "ask", "Why is the widget slow?", "--k", "2")
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert out.index("Answer") < out.index("Sources") < out.index("Retrieved chunks")
    assert "[1] docs/guide/troubleshoot.md § Troubleshooting > The widget is slow" in out
    # The answer carries [n] markers; only an answer the repetition stop cut may lack them (its JSON reply
    # never reached the citations list), and then the user is told so.
    assert "[" in out.split("Sources")[0] or "started repeating itself" in result.stderr, result.stderr


def test_the_default_answer_is_extractive_and_starts_no_llm(project: Path) -> None:
    """With no endpoint configured, ``rag ask`` answers with cited sentences of the hits, and no llama.cpp."""
    result = rag(project, "--verbose", "ask", "Why is the widget slow?", "--k", "3", "--json",
                 env={"RAG_GENERATION__MODE": "auto"})
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer["model"] == "extractive" and answer["usage"] is None and answer["error"] is None
    texts = {hit["number"]: " ".join(hit["text"].split()) for hit in answer["hits"]}
    sentences = re.findall(r"(.+?) \[(\d+)\](?: |$)", answer["answer"])
    assert sentences and "Large caches slow the widget down." in answer["answer"]
    for sentence, number in sentences:  # every sentence is verbatim from the block it cites
        assert sentence.strip() in texts[int(number)]
    assert {c["number"] for c in answer["citations"]} == {int(n) for _, n in sentences}
    assert "embedded LLM server" not in result.stderr, result.stderr  # none was started (it logs when ready)


def test_chat_mode_flag_overrides_the_setting(project: Path) -> None:
    """``rag chat --mode extractive`` answers extractively although the environment says llm."""
    result = subprocess.run(
        [sys.executable, "-m", "rag.cli", "--verbose", "chat", "--mode", "extractive"], cwd=project,
        input="Why is the widget slow?\n", capture_output=True, text=True, timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "RAG_GENERATION__MODE": "llm"},
    )
    assert result.returncode == 0, result.stderr
    assert "Large caches slow the widget down. [" in result.stdout
    assert "embedded LLM server" not in result.stderr, result.stderr


def test_unreachable_endpoint_is_clear_and_still_shows_sources(project: Path) -> None:
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = rag(
        project, "ask", "Where was the company founded?",
        env={"RAG_LLM__BASE_URL": f"http://127.0.0.1:{port}/v1", "RAG_LLM__MAX_RETRIES": "0"},
    )
    assert result.returncode == 3
    assert f"127.0.0.1:{port}" in result.stderr and "Traceback" not in result.stderr
    assert "docs/notes/history.txt" in result.stdout  # the retrieved sources are still printed


def test_llm_serve_runs_a_standalone_openai_compatible_server(tmp_path: Path) -> None:
    """`rag llm serve` in the foreground, used by a real OpenAI client, stopped by SIGINT like Ctrl-C."""
    import signal
    import time

    import openai

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "llm", "serve", "--port", str(port), "--threads", "1"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        client = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0, timeout=60)
        deadline = time.monotonic() + 90
        while True:
            try:
                models = client.models.list()
                break
            except (openai.APIConnectionError, openai.InternalServerError):  # not listening / 503 loading
                assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read() if proc.poll() else "timeout"
                time.sleep(0.3)
        assert models.data
        reply = client.chat.completions.create(
            model=models.data[0].id, messages=[{"role": "user", "content": "Say hello."}], max_tokens=8
        )
        assert reply.choices[0].message.content.strip()
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode in (0, 130, -signal.SIGINT)
    assert f"http://127.0.0.1:{port}/v1" in err
