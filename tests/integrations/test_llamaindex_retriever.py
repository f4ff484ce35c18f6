"""rag.integrations.llamaindex.RagRetriever in a real LlamaIndex query engine, over the local library and a real
``rag serve``.

The LLM is llama-index's ``MockLLM``, which stands in for an LLM: it answers with the prompt it was given,
so the response shows exactly what the query engine built from our retrieved nodes.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode

from rag.core.errors import ConfigError
from rag.core.query import QueryOptions
from rag.integrations.llamaindex import RagRetriever

QUESTION = "How much does the team plan cost?"
BACKENDS = ["local", "http"]


@pytest.fixture(scope="module")
def retrievers(deployment: Any) -> Iterator[dict[str, RagRetriever]]:
    """The same retriever (k=3) over the local library and over the server, with a read key."""
    with (
        RagRetriever(collection="default", k=3, data_dir=deployment.data_dir) as local,
        RagRetriever(url=deployment.url, api_key=deployment.key, collection="default", k=3) as http,
    ):
        yield {"local": local, "http": http}


@pytest.mark.parametrize("backend", BACKENDS)
def test_query_engine_answers_from_the_retrieved_nodes(retrievers: dict[str, RagRetriever], backend: str) -> None:
    engine = RetrieverQueryEngine.from_args(retrievers[backend], llm=MockLLM())
    response = engine.query(QUESTION)
    async_response = asyncio.run(engine.aquery(QUESTION))

    prompt = str(response)  # MockLLM answers with its prompt
    assert prompt == str(async_response)
    assert "The team plan costs 45 euros a month" in prompt and f"Query: {QUESTION}" in prompt
    assert "citation: docs/web/pricing.html § Pricing > Plans" in prompt
    assert "chunk_id" not in prompt and "score" not in prompt  # ids and scores stay out of the prompt

    nodes = response.source_nodes
    assert len(nodes) == 3 and [n.node_id for n in nodes] == [n.node_id for n in async_response.source_nodes]
    top = nodes[0]
    meta = top.node.metadata
    assert top.node_id == meta["chunk_id"] and top.node.ref_doc_id == meta["doc_id"] == "docs/web/pricing.html"
    assert top.score == meta["score"] and [n.score for n in nodes] == sorted((n.score for n in nodes), reverse=True)
    assert (top.node.start_char_idx, top.node.end_char_idx) == (meta["start"], meta["end"])
    assert meta["section"] == "Pricing > Plans" and meta["collection"] == "default"
    assert top.node.get_content(MetadataMode.EMBED) == top.node.get_content(MetadataMode.NONE)


def test_options_local_and_http_agree(deployment: Any) -> None:
    options = QueryOptions(k=5, filter={"audience": {"eq": "admin"}}, alpha=0.7)
    with (
        RagRetriever(options=options, data_dir=deployment.data_dir) as local,
        RagRetriever(options=options, url=deployment.url, api_key=deployment.key) as http,
    ):
        mine, theirs = local.retrieve("widget"), asyncio.run(http.aretrieve("widget"))
    assert mine and {n.node.ref_doc_id for n in mine} == {"docs/guide/install.md"}
    assert [n.node_id for n in mine] == [n.node_id for n in theirs]
    assert [n.score for n in mine] == pytest.approx([n.score for n in theirs], abs=1e-5)


def test_async_search_over_http_stays_on_the_event_loop(retrievers: dict[str, RagRetriever], run_watching_threads: Any) -> None:
    nodes, threaded = run_watching_threads(lambda: retrievers["http"].aretrieve(QUESTION))
    assert nodes and not any("search" in call for call in threaded), threaded


def test_bad_arguments_are_clear_errors(deployment: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"unknown argument 'similarity_top_k'.*the query options are k"):
        RagRetriever(similarity_top_k=3, data_dir=deployment.data_dir)
    with pytest.raises(ConfigError, match="not both"):
        RagRetriever(options=QueryOptions(k=2), k=3, data_dir=deployment.data_dir)
    with pytest.raises(ConfigError, match="url must be the http"):
        RagRetriever(url="localhost:8000")

    for name in [n for n in sys.modules if n == "llama_index" or n.startswith("llama_index.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    monkeypatch.delitem(sys.modules, "rag.integrations.llamaindex")
    with pytest.raises(ImportError, match=r"pip install 'rag-platform\[llamaindex\]'"):
        __import__("rag.integrations.llamaindex")
