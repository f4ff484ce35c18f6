"""The OpenAI-compatible endpoints through real OpenAI clients: the official SDK, LangChain, raw SSE.

A model is a collection; the answer comes from the embedded llama.cpp model; the sources travel in the
extra top-level field ``sources`` (the non-streamed response and the last streamed chunk).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path

import openai
import pytest
from api_server import EMBEDDED_LLM, UNREACHABLE_LLM, ApiServer, expected_citations, upload_corpus, upload_files
from langchain_openai import ChatOpenAI

from rag.api.keys import KeyStore

pytestmark = pytest.mark.slow

QUESTION = "How much does the team plan cost?"


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory,
    corpus_writer: Callable[[Path], Path],
) -> ApiServer:
    """The sample corpus in ``default``, one more collection, and then an admin key (so keys are enforced)."""
    root = tmp_path_factory.mktemp("openai")
    api = start_server(root / "data", **EMBEDDED_LLM)
    with api.client() as client:
        upload_corpus(client, "default", corpus_writer(root))
        client.post("/v1/collections", json={"name": "handbook"}).raise_for_status()
        upload_files(client, "handbook", {"leave.md": "# Leave\n\nStaff get twenty-five days of paid leave.\n"})
    api.key = KeyStore(api.data_dir).create("*", "admin", "tests")[0]
    return api


@pytest.fixture(scope="module")
def sdk(server: ApiServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0, timeout=240) as client:
        yield client


def test_sdk_completion_has_content_and_sources(sdk: openai.OpenAI, server: ApiServer) -> None:
    raw = sdk.chat.completions.with_raw_response.create(
        model="default", messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": QUESTION}]
    )
    completion = raw.parse()
    assert completion.object == "chat.completion" and completion.model == "default"
    assert completion.id.startswith("chatcmpl-")
    choice = completion.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    assert completion.usage is not None and completion.usage.completion_tokens > 0

    sources = raw.http_response.json()["sources"]
    assert sources and [s["n"] for s in sources] == list(range(1, len(sources) + 1))
    assert {"chunk_id", "doc_id", "text", "score"} <= set(sources[0])
    assert "pricing.html" in {s["doc_id"] for s in sources}
    assert completion.model_extra["sources"] == sources  # the parsed object keeps the extra field too
    # The LLM's [n] markers (test_citations.py has the extractive answers' and follows the URLs).
    annotations = [a.url_citation for a in choice.message.annotations]
    assert [(a.start_index, a.end_index, a.url) for a in annotations] == expected_citations(
        choice.message.content, sources, server.url)


def test_sdk_stream_ends_with_a_chunk_carrying_sources(sdk: openai.OpenAI, server: ApiServer) -> None:
    stream = sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}], stream=True)
    chunks = list(stream)
    assert len(chunks) >= 3
    assert all(c.object == "chat.completion.chunk" and c.model == "default" for c in chunks)
    assert len({c.id for c in chunks}) == 1
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text.strip()
    last = chunks[-1]
    assert last.choices[0].finish_reason in ("stop", "length")
    assert all(c.choices[0].finish_reason is None for c in chunks[:-1])
    sources = last.model_extra["sources"]
    assert sources and sources[0]["n"] == 1 and sources[0]["chunk_id"]
    assert all("sources" not in (c.model_extra or {}) for c in chunks[:-1])
    annotations = [a for c in chunks for a in (c.choices[0].delta.model_extra or {}).get("annotations", [])]
    assert [(a["url_citation"]["start_index"], a["url_citation"]["end_index"], a["url_citation"]["url"])
            for a in annotations] == expected_citations(text, sources, server.url)


def test_raw_stream_is_openai_framed_and_ends_with_done(server: ApiServer) -> None:
    with server.client(server.key) as client, client.stream(
        "POST", "/v1/chat/completions",
        json={"model": "default", "stream": True, "messages": [{"role": "user", "content": QUESTION}]},
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        body = response.read().decode()
    lines = [line for line in body.split("\n") if line]
    assert all(line.startswith("data: ") for line in lines), lines  # no named events: OpenAI's framing
    payloads = [line[len("data: "):] for line in lines]
    assert payloads[-1] == "[DONE]" and payloads.count("[DONE]") == 1
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert all(len(c["choices"]) == 1 and c["choices"][0]["index"] == 0 for c in chunks)
    deltas = [c["choices"][0]["delta"].get("content") or "" for c in chunks]
    assert "".join(deltas).strip()
    for i, delta in enumerate(deltas):  # each delta is new text, not the answer so far
        so_far = "".join(deltas[:i])
        assert len(so_far) < 3 or not delta.startswith(so_far), deltas
    assert chunks[-1]["sources"] and chunks[-1]["choices"][0]["delta"] == {}


def test_models_are_the_collections(sdk: openai.OpenAI) -> None:
    models = sdk.models.list()
    assert [m.id for m in models.data] == ["default", "handbook"]
    assert all(m.object == "model" for m in models.data)


def test_client_errors_are_openai_errors(sdk: openai.OpenAI, server: ApiServer) -> None:
    with pytest.raises(openai.NotFoundError) as missing:
        sdk.chat.completions.create(model="no-such-collection", messages=[{"role": "user", "content": "hi"}])
    assert missing.value.body["type"] == "collection_not_found"  # the SDK unwraps {"error": {...}}
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(model="default", messages=[{"role": "assistant", "content": "no question"}])
    with pytest.raises(openai.UnprocessableEntityError):
        sdk.chat.completions.create(model="default", messages=[])
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="rag_0000_wrong", max_retries=0) as wrong:
        with pytest.raises(openai.AuthenticationError):
            wrong.models.list()


def test_content_parts_and_earlier_turns(sdk: openai.OpenAI) -> None:
    completion = sdk.chat.completions.create(model="handbook", messages=[
        {"role": "user", "content": "Hello"},
        {"role": "assistant", "content": "Hi, ask me about the handbook."},
        {"role": "user", "content": [{"type": "text", "text": "How many days of paid leave do staff get?"}]},
    ])
    assert completion.choices[0].message.content.strip()
    assert [s["doc_id"] for s in completion.model_extra["sources"]] == ["leave.md"]


def test_langchain_invoke_and_stream(server: ApiServer) -> None:
    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key=server.key, model="default", max_retries=0, timeout=240)
    message = llm.invoke(QUESTION)
    assert isinstance(message.content, str) and message.content.strip()
    pieces = list(llm.stream(QUESTION))
    assert len(pieces) >= 2
    assert "".join(p.content for p in pieces).strip()


def test_llm_failure_reaches_openai_clients(
    start_server: Callable[..., ApiServer], server: ApiServer
) -> None:
    broken = start_server(server.data_dir, **UNREACHABLE_LLM)
    with openai.OpenAI(base_url=f"{broken.url}/v1", api_key=server.key, max_retries=0) as client:
        with pytest.raises(openai.APIStatusError) as failed:
            client.chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}])
        assert failed.value.status_code == 502
        assert failed.value.response.json()["hits"]  # the sources, even without an answer
        with pytest.raises(openai.APIError):  # the stream's error chunk
            list(client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": QUESTION}], stream=True
            ))
    with broken.client(server.key) as raw, raw.stream("POST", "/v1/chat/completions", json={
        "model": "default", "stream": True, "messages": [{"role": "user", "content": QUESTION}],
    }) as response:
        payloads = [line[len("data: "):] for line in response.read().decode().split("\n") if line]
    assert payloads[-1] == "[DONE]"
    assert json.loads(payloads[-2])["error"]["type"] == "llm_error"
