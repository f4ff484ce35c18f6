"""The API's answers in the default generation mode, extractive: ``/ask`` (JSON and SSE) and the
OpenAI-compatible ``/v1/chat/completions`` (plain and streamed), from a real ``python -m rag.api`` process
with no LLM configured, which starts no llama.cpp.

The LLM path of the same routes is tested in test_endpoints.py and test_openai_compat.py
(``generation.mode = llm``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
from api_server import ApiServer, sse_events, upload_corpus

pytestmark = pytest.mark.slow

QUESTION = "Why is the widget slow?"


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory,
    corpus_writer: Callable[[Path], Path],
) -> ApiServer:
    """A server with the shipped defaults (no ``llm.base_url``) and the sample corpus in ``default``."""
    root = tmp_path_factory.mktemp("extractive")
    api = start_server(root / "data")
    with api.client() as client:
        upload_corpus(client, "default", corpus_writer(root))
    return api


@pytest.fixture(scope="module")
def client(server: ApiServer) -> httpx.Client:
    with server.client() as client:
        yield client


def llama_children(parent: int) -> list[int]:
    """The pids of llama.cpp server processes started by process ``parent``."""
    found = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = int(re.search(r"PPid:\s+(\d+)", status.read_text()).group(1))  # type: ignore[union-attr]
            command = (status.parent / "cmdline").read_bytes()
        except (OSError, AttributeError):
            continue
        if ppid == parent and b"rag.generate.llamacpp_server" in command:
            found.append(int(status.parent.name))
    return found


def assert_verbatim(answer: str, hits: list[dict], key: str = "n") -> None:
    """Every ``sentence [n]`` of ``answer`` is a sentence of hit ``n``'s text."""
    texts = {hit[key]: " ".join(hit["text"].split()) for hit in hits}
    sentences = re.findall(r"(.+?) \[(\d+)\](?: |$)", answer)
    assert sentences, answer
    for sentence, number in sentences:
        assert sentence.strip() in texts[int(number)], (sentence, number)


def test_ask_json_is_extractive(client: httpx.Client, server: ApiServer) -> None:
    response = client.post("/v1/collections/default/ask", json={"question": QUESTION, "k": 3})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["model"] == "extractive" and body["usage"] is None
    assert "Large caches slow the widget down." in body["answer"]
    assert_verbatim(body["answer"], body["hits"])
    cited = {c["n"] for c in body["citations"]}
    assert cited and cited <= {h["n"] for h in body["hits"]}
    assert llama_children(server.process.pid) == []


def test_ask_streams_sources_deltas_citations_done(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/collections/default/ask",
                       json={"question": QUESTION, "k": 3, "stream": True}) as response:
        assert response.status_code == 200
        events = sse_events(response.read().decode())
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "sources" and kinds[-2:] == ["citations", "done"], kinds
    assert set(kinds[1:-2]) == {"delta"}, kinds
    hits = json.loads(events[0][1])["hits"]
    text = "".join(json.loads(data)["text"] for kind, data in events if kind == "delta")
    assert_verbatim(text, hits)
    assert json.loads(events[-1][1])["model"] == "extractive"


def test_openai_compatible_chat_plain_and_streamed(client: httpx.Client, server: ApiServer) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    response = client.post("/v1/chat/completions", json={"model": "default", "messages": messages})
    assert response.status_code == 200, response.text
    body = response.json()
    content = body["choices"][0]["message"]["content"]
    assert body["choices"][0]["finish_reason"] == "stop" and body["system_fingerprint"] == "extractive"
    assert body["usage"] == {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0}
    assert_verbatim(content, body["sources"])

    with client.stream("POST", "/v1/chat/completions",
                       json={"model": "default", "messages": messages, "stream": True}) as streamed:
        payloads = [line[len("data: "):] for line in streamed.read().decode().split("\n") if line]
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == content
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop" and chunks[-1]["sources"] == body["sources"]
    assert llama_children(server.process.pid) == []
