"""Citations in standard shapes, read by clients we did not write, from a real ``python -m rag.api`` process.

``/v1/chat/completions`` puts an OpenAI ``url_citation`` annotation on the message for each ``[n]`` marker
(streamed: on one chunk's delta after the text); its URL, ``/v1/collections/{c}/documents/{id}?chunk=ID``,
returns the cited chunk with its offsets in the document. The official ``openai`` SDK reads them (a plain
completion, a raw stream, and the SDK's own stream accumulator); LangChain's ``ChatOpenAI`` (0.3) keeps only
the content of a Chat Completions reply, so for it the test shows that the content, markers included, is
the same text the annotations' offsets index. The OpenAI Agents SDK turns them into its own citation objects.
Answers are extractive (the default): no LLM is started.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from api_server import ApiServer, expected_citations, upload_corpus
from langchain_openai import ChatOpenAI

from rag.api.citations import chunk_path, url_citations
from rag.api.keys import KeyStore
from rag.core.types import Chunk, Hit

pytestmark = pytest.mark.slow

QUESTION = "Why is the widget slow, and how do I make it fast again?"
# A document id with a folder, a space and a question mark: its chunk URL must escape them.
ODD_ID = "faq/widget speed?.md"
ODD_TEXT = "# Speed\n\nThe widget is slow when its cache is large. Clearing the cache makes the widget fast again.\n"


@pytest.fixture(scope="module")
def server(
    start_server: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory,
    corpus_writer: Callable[[Path], Path],
) -> ApiServer:
    """The sample corpus and :data:`ODD_ID` in ``default``, an empty ``other``; then an admin key
    (``server.key``), so keys are enforced."""
    root = tmp_path_factory.mktemp("citations")
    api = start_server(root / "data")
    with api.client() as client:
        upload_corpus(client, "default", corpus_writer(root))
        added = client.post("/v1/collections/default/documents", json={"documents": [{"id": ODD_ID, "text": ODD_TEXT}]})
        assert added.status_code == 200, added.text
        client.post("/v1/collections", json={"name": "other"}).raise_for_status()
    api.key = KeyStore(api.data_dir).create("*", "admin", "tests")[0]
    return api


@pytest.fixture(scope="module")
def read_keys(server: ApiServer) -> dict[str, str]:
    """A read key for each collection."""
    keys = KeyStore(server.data_dir)
    return {name: keys.create(name, "read", f"{name} reader")[0] for name in ("default", "other")}


@pytest.fixture(scope="module")
def sdk(server: ApiServer) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0, timeout=120) as client:
        yield client


@pytest.fixture(scope="module")
def reader(server: ApiServer, read_keys: dict[str, str]) -> Iterator[httpx.Client]:
    """A client with ``default``'s read key: what a chat user's browser would follow the URLs with."""
    with server.client(read_keys["default"]) as client:
        yield client


def spans(annotations: list[Any]) -> list[tuple[int, int, str]]:
    return [(a.url_citation.start_index, a.url_citation.end_index, a.url_citation.url) for a in annotations]


def test_sdk_completion_annotates_each_marker_with_a_url_that_fetches_its_chunk(
    sdk: openai.OpenAI, server: ApiServer, reader: httpx.Client
) -> None:
    raw = sdk.chat.completions.with_raw_response.create(model="default", messages=[{"role": "user", "content": QUESTION}])
    message = raw.parse().choices[0].message
    sources = raw.http_response.json()["sources"]
    content, annotations = message.content, message.annotations
    markers = re.findall(r"\[\d+\]", content)
    assert len(markers) >= 2, content  # the question draws on two passages
    assert all(isinstance(a, openai.types.chat.chat_completion_message.Annotation) for a in annotations)
    assert spans(annotations) == expected_citations(content, sources, server.url)
    assert [content[start:end] for start, end, _ in spans(annotations)] == markers
    assert ODD_ID in {s["doc_id"] for s in sources}

    for annotation in annotations:
        citation = annotation.url_citation
        n = int(content[citation.start_index + 1:citation.end_index - 1])
        source = sources[n - 1]
        assert citation.url == server.url + source["url"] and citation.url.startswith("http://127.0.0.1:")
        assert citation.title.startswith(source["metadata"]["source"])  # the citation label: source § section
        fetched = reader.get(citation.url)
        assert fetched.status_code == 200, fetched.text
        chunk = fetched.json()
        assert (chunk["chunk_id"], chunk["doc_id"], chunk["text"]) == (source["chunk_id"], source["doc_id"], source["text"])
        assert chunk["start"] == source["metadata"]["start"] and chunk["end"] == source["metadata"]["end"]

    # Every source, cited or not, has a URL; the odd id is escaped in it and the chunk's offsets slice the
    # document's own text.
    odd = next(s for s in sources if s["doc_id"] == ODD_ID)
    assert odd["url"] == f"/v1/collections/default/documents/faq/widget%20speed%3F.md?chunk={odd['chunk_id']}"
    chunk = reader.get(odd["url"]).json()
    assert chunk["doc_id"] == ODD_ID and ODD_TEXT[chunk["start"]:chunk["end"]] == chunk["text"]


def test_sdk_streams_annotations_with_offsets_into_the_accumulated_content(sdk: openai.OpenAI, server: ApiServer) -> None:
    plain = sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}])
    expected = spans(plain.choices[0].message.annotations)
    assert expected

    # The raw stream: one chunk's delta carries all the annotations, after the text, before the finish.
    chunks = list(sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}], stream=True))
    content = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert content == plain.choices[0].message.content
    carrying = [i for i, c in enumerate(chunks) if (c.choices[0].delta.model_extra or {}).get("annotations")]
    assert len(carrying) == 1 and carrying[0] == len(chunks) - 2, carrying
    delta = chunks[carrying[0]].choices[0].delta
    assert delta.content is None and chunks[carrying[0]].choices[0].finish_reason is None
    streamed = [(a["url_citation"]["start_index"], a["url_citation"]["end_index"], a["url_citation"]["url"])
                for a in delta.model_extra["annotations"]]
    assert streamed == expected == expected_citations(content, chunks[-1].model_extra["sources"], server.url)

    # The SDK's own accumulator (ChatCompletionStreamState) builds the message with typed annotations.
    with sdk.chat.completions.stream(model="default", messages=[{"role": "user", "content": QUESTION}]) as stream:
        final = stream.get_final_completion().choices[0].message
    assert final.content == content and spans(final.annotations) == expected


def test_langchain_chat_openai_keeps_the_content_the_offsets_index(sdk: openai.OpenAI, server: ApiServer) -> None:
    plain = sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}]).choices[0].message
    llm = ChatOpenAI(base_url=f"{server.url}/v1", api_key=server.key, model="default", max_retries=0, timeout=120)
    invoked = llm.invoke(QUESTION)
    streamed = list(llm.stream(QUESTION))
    assert len(streamed) >= 3
    # ChatOpenAI's Chat Completions path (langchain-openai 0.3) keeps the text and the finish reason but neither
    # `annotations` nor `sources`; the text is the very string the annotations index, markers and all.
    for content in (invoked.content, "".join(str(piece.content) for piece in streamed)):
        assert content == plain.content
        assert [content[start:end] for start, end, _ in spans(plain.annotations)] == re.findall(r"\[\d+\]", content)
    assert invoked.response_metadata["finish_reason"] == "stop"


def test_openai_agents_sdk_turns_the_annotations_into_its_own_citations(sdk: openai.OpenAI, server: ApiServer) -> None:
    """The OpenAI Agents SDK, a client we do not control, reads Chat Completions annotations into its
    ``AnnotationURLCitation`` objects, from a plain completion and from a stream (its own accumulator)."""
    from agents import Agent, OpenAIChatCompletionsModel, Runner, set_tracing_disabled
    from agents.items import MessageOutputItem

    set_tracing_disabled(True)  # it would export its traces to OpenAI otherwise
    plain = sdk.chat.completions.create(model="default", messages=[{"role": "user", "content": QUESTION}]).choices[0].message
    expected = [(start, end, url, a.url_citation.title) for (start, end, url), a in zip(spans(plain.annotations), plain.annotations)]

    def agent() -> Agent:  # an async client per event loop
        client = openai.AsyncOpenAI(base_url=f"{server.url}/v1", api_key=server.key, max_retries=0, timeout=120)
        return Agent(name="docs", instructions="Answer from the documents.",
                     model=OpenAIChatCompletionsModel(model="default", openai_client=client))

    async def runs() -> list[Any]:
        ran = await Runner.run(agent(), QUESTION)
        streamed = Runner.run_streamed(agent(), QUESTION)
        async for _ in streamed.stream_events():
            pass
        return [ran, streamed]

    for run in asyncio.run(runs()):
        [message] = [item.raw_item for item in run.new_items if isinstance(item, MessageOutputItem)]
        [part] = message.content
        assert part.text == plain.content
        assert [(a.start_index, a.end_index, a.url, a.title) for a in part.annotations] == expected


def test_chunk_url_offsets_neighbours_scopes_and_errors(
    server: ApiServer, reader: httpx.Client, read_keys: dict[str, str]
) -> None:
    document = reader.get("/v1/collections/default/documents/troubleshoot.md")
    assert document.status_code == 200 and "chunk_list" in document.json()  # without ?chunk: the document
    chunk_ids = [c["chunk_id"] for c in document.json()["chunk_list"]]
    assert len(chunk_ids) >= 2
    middle = f"/v1/collections/default/documents/troubleshoot.md?chunk={chunk_ids[1]}"

    one = reader.get(middle).json()  # one neighbour each side by default
    assert one["chunk_index"] == 1 and one["document_chunks"] == len(chunk_ids)
    assert [c["chunk_id"] for c in one["before"]] == chunk_ids[:1]
    assert [c["chunk_id"] for c in one["after"]] == chunk_ids[2:3]
    assert one["start"] < one["end"] and one["page"] is None and one["title"] == "Troubleshooting"
    alone = reader.get(middle + "&neighbours=0").json()
    assert alone["before"] == alone["after"] == [] and alone["text"] == one["text"]

    def error(path: str, client: httpx.Client = reader) -> tuple[int, str]:
        response = client.get(path)
        return response.status_code, response.json()["error"]["type"]

    assert error(f"/v1/collections/default/documents/install.md?chunk={chunk_ids[1]}") == (404, "chunk_not_found")
    assert error("/v1/collections/default/documents/troubleshoot.md?chunk=0000") == (404, "chunk_not_found")
    assert error(middle + "&neighbours=11")[0] == 422
    assert error("/v1/collections/default/documents/troubleshoot.md?neighbours=1") == (422, "validation_error")
    assert error(middle.replace("default", "nope"))[0] in (403, 404)
    with server.client(read_keys["other"]) as stranger, server.client() as anonymous:
        assert error(middle, stranger)[0] == 403
        assert error(middle, anonymous)[0] == 401

    # /ask's hits carry the same URLs; the OpenAPI document describes the chunk response.
    asked = reader.post("/v1/collections/default/ask", json={"question": QUESTION}).json()
    assert all(h["url"].endswith(f"?chunk={h['chunk_id']}") and reader.get(h["url"]).status_code == 200 for h in asked["hits"])
    spec = reader.get("/openapi.json").json()
    assert {"ChunkResponse", "DocumentResponse"} <= set(spec["components"]["schemas"])
    parameters = {p["name"] for p in spec["paths"]["/v1/collections/{name}/documents/{doc_id}"]["get"]["parameters"]}
    assert {"chunk", "neighbours"} <= parameters


def test_url_citations_of_grouped_repeated_and_unknown_markers() -> None:
    """An LLM's markers (no server needed): ``[n, m]`` gets one annotation per number, on its own digits; a
    repeated marker one per occurrence; a number with no block none."""
    hits = [Hit(Chunk(f"c{i}", f"guide/doc {i}.md", f"text {i}", {"source": f"doc{i}.md", "section": "Intro"}), 1.0)
            for i in (1, 2)]
    content = "Caches slow it [1, 2]. Clear them [2][9]; see [1]."
    found = url_citations(content, hits, "default", "http://h:8000/")
    assert [(content[c["url_citation"]["start_index"]:c["url_citation"]["end_index"]], c["url_citation"]["url"])
            for c in found] == [
        ("1", "http://h:8000/v1/collections/default/documents/guide/doc%201.md?chunk=c1"),
        ("2", "http://h:8000/v1/collections/default/documents/guide/doc%202.md?chunk=c2"),
        ("[2]", "http://h:8000/v1/collections/default/documents/guide/doc%202.md?chunk=c2"),
        ("[1]", "http://h:8000/v1/collections/default/documents/guide/doc%201.md?chunk=c1"),
    ]
    assert {c["type"] for c in found} == {"url_citation"} and found[0]["url_citation"]["title"] == "doc1.md § Intro"
    sources = [{"url": chunk_path("default", h.chunk.doc_id, h.chunk.chunk_id)} for h in hits]
    assert [(c["url_citation"]["start_index"], c["url_citation"]["end_index"], c["url_citation"]["url"]) for c in found] \
        == expected_citations(content, sources, "http://h:8000")
