"""rag.integrations.langchain.RagRetriever in a real LCEL chain, over the local library and a real ``rag serve``.

The chat model is langchain-core's ``FakeListChatModel``, which stands in for an LLM (it returns a canned
reply); what is checked is what LangChain hands it: the prompt built from our retrieved documents.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.language_models.fake_chat_models import FakeListChatModel
from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnablePassthrough

from rag.core.errors import CollectionNotFoundError, ConfigError, FilterError
from rag.integrations.langchain import RagRetriever, RemoteError

QUESTION = "How much does the team plan cost?"
REPLY = "The team plan costs 45 euros a month [1]."
BACKENDS = ["local", "http"]


@pytest.fixture(scope="module")
def retrievers(deployment: Any) -> Iterator[dict[str, RagRetriever]]:
    """The same retriever (k=3) over the local library and over the server, with a read key."""
    local = RagRetriever(collection="default", k=3, data_dir=deployment.data_dir)
    http = RagRetriever(url=deployment.url, api_key=deployment.key, collection="default", k=3)
    yield {"local": local, "http": http}
    local.close()
    http.close()


class PromptRecorder(BaseCallbackHandler):
    """Keeps the last message of each chat-model call: the prompt LangChain built."""

    run_inline = True  # called in the event loop under ainvoke, not in a worker thread

    def __init__(self) -> None:
        self.prompts: list[str] = []

    def on_chat_model_start(self, serialized: dict[str, Any], messages: list[list[Any]], **kwargs: Any) -> None:
        self.prompts.append(str(messages[0][-1].content))


def format_docs(docs: list[Document]) -> str:
    return "\n\n".join(f"[{n}] {doc.metadata['citation']}\n{doc.page_content}" for n, doc in enumerate(docs, 1))


@pytest.mark.parametrize("backend", BACKENDS)
def test_lcel_chain_prompts_with_the_retrieved_passages(retrievers: dict[str, RagRetriever], backend: str) -> None:
    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer from the numbered sources only and cite them as [n]."),
        ("human", "Sources:\n{context}\n\nQuestion: {question}"),
    ])
    model = FakeListChatModel(responses=[REPLY])
    chain = {"context": retrievers[backend] | format_docs, "question": RunnablePassthrough()} | prompt | model
    chain = chain | StrOutputParser()
    recorder = PromptRecorder()

    assert chain.invoke(QUESTION, config={"callbacks": [recorder]}) == REPLY
    assert asyncio.run(chain.ainvoke(QUESTION, config={"callbacks": [recorder]})) == REPLY

    sync_prompt, async_prompt = recorder.prompts
    assert sync_prompt == async_prompt
    first_source = sync_prompt.split("Sources:\n", 1)[1].split("\n\n[2] ")[0]
    assert first_source.startswith("[1] ") and "pricing.html § Pricing > Plans" in first_source
    assert "The team plan costs 45 euros a month" in first_source
    assert sync_prompt.endswith(f"Question: {QUESTION}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_documents_carry_text_scores_metadata_and_options(retrievers: dict[str, RagRetriever], backend: str) -> None:
    retriever = retrievers[backend]
    docs = retriever.invoke(QUESTION)
    assert len(docs) == 3  # the retriever's k
    top = docs[0]
    meta = top.metadata
    assert top.id == meta["chunk_id"] and "The team plan costs 45 euros a month" in top.page_content
    assert meta["doc_id"].endswith("web/pricing.html") and meta["source"] == meta["doc_id"]
    assert meta["section"] == "Pricing > Plans" and meta["title"] == "Pricing" and meta["page"] is None
    assert meta["citation"] == f"{meta['source']} § Pricing > Plans"
    assert meta["collection"] == "default"
    assert isinstance(meta["start"], int) and meta["end"] > meta["start"]
    assert meta["dense_score"] is not None and meta["bm25_score"] is not None and meta["rerank_score"] is None
    scores = [doc.metadata["score"] for doc in docs]
    assert scores == sorted(scores, reverse=True)

    # Query options per call, on top of the retriever's: k, a filter on front-matter, max_per_doc, alpha.
    assert len(retriever.invoke(QUESTION, k=1)) == 1
    admin = retriever.invoke("widget", filter="audience=admin", k=5)
    assert admin and {doc.metadata["doc_id"].rsplit("/", 1)[-1] for doc in admin} == {"install.md"}
    spread = retriever.invoke("widget", max_per_doc=1, k=5)
    assert len({doc.metadata["doc_id"] for doc in spread}) == len(spread) > 1
    keyword_only = retriever.invoke(QUESTION, alpha=0.0, fusion="linear")
    assert keyword_only[0].metadata["score"] == pytest.approx(1.0)  # the normalised best BM25 score


def test_local_and_http_return_the_same_documents(retrievers: dict[str, RagRetriever]) -> None:
    local = retrievers["local"].invoke("Why is the widget slow?")
    http = asyncio.run(retrievers["http"].ainvoke("Why is the widget slow?"))
    assert [d.id for d in local] == [d.id for d in http]
    scores = ("score", "dense_score", "bm25_score")
    for mine, theirs in zip(local, http, strict=True):
        assert mine.page_content == theirs.page_content
        assert {k: v for k, v in mine.metadata.items() if k not in scores} == {
            k: v for k, v in theirs.metadata.items() if k not in scores
        }
        assert [mine.metadata[s] for s in scores] == pytest.approx([theirs.metadata[s] for s in scores], abs=1e-5)


def test_async_search_over_http_stays_on_the_event_loop(retrievers: dict[str, RagRetriever], run_watching_threads: Any) -> None:
    docs, threaded = run_watching_threads(lambda: retrievers["http"].ainvoke(QUESTION))
    assert docs and not any("search" in call for call in threaded), threaded
    # The local library is synchronous: its search goes to a worker thread, which the watch does see.
    docs, threaded = run_watching_threads(lambda: retrievers["local"].ainvoke(QUESTION))
    assert docs and any("LocalBackend.search" in call for call in threaded), threaded


def test_bad_arguments_and_refusals_are_clear_errors(deployment: Any, retrievers: dict[str, RagRetriever]) -> None:
    with pytest.raises(ConfigError, match=r"unknown argument 'colection'.*collection, url.*the query options are k"):
        RagRetriever(colection="default", data_dir=deployment.data_dir)
    with pytest.raises(ConfigError, match=r"alpha must be within \[0, 1\], got 2"):
        RagRetriever(alpha=2, data_dir=deployment.data_dir)
    with pytest.raises(ConfigError, match="unknown argument 'top_k'"):
        retrievers["local"].invoke(QUESTION, top_k=2)
    with pytest.raises(ConfigError, match="not both"):
        RagRetriever(url=deployment.url, data_dir=deployment.data_dir)
    with pytest.raises(ConfigError, match="history"):
        RagRetriever(url=deployment.url, api_key=deployment.key, history=[{"role": "user", "content": "Hi"}])
    with pytest.raises(CollectionNotFoundError, match="no collection named 'nope'"):
        RagRetriever(collection="nope", data_dir=deployment.data_dir)
    with pytest.raises(RemoteError, match=r"answered 401 \(unauthorized\)") as refused:
        RagRetriever(url=deployment.url, api_key="rag_wrong").invoke(QUESTION)
    assert refused.value.status == 401
    with pytest.raises(RemoteError, match=r"answered 403 \(forbidden\): this key may not read collection 'other'"):
        RagRetriever(url=deployment.url, api_key=deployment.key, collection="other").invoke(QUESTION)
    with pytest.raises(FilterError, match="unknown filter operator 'near'"):  # checked before any request
        retrievers["http"].invoke(QUESTION, filter={"page": {"near": 2}})
    with pytest.raises(ConfigError, match=r"answered 422 \(invalid_request\): rerank: this server reranks with"):
        retrievers["http"].invoke(QUESTION, rerank="some/cross-encoder")  # the server's own refusal
    with pytest.raises(RemoteError, match=r"cannot search rag serve at http://127\.0\.0\.1:9"):
        RagRetriever(url="http://127.0.0.1:9").invoke(QUESTION)
    assert "rag_wrong" not in repr(RagRetriever(url=deployment.url, api_key="rag_wrong"))


def test_data_dir_none_finds_the_index_as_rag_search_does(deployment: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("RAG_DATA_DIR", "RAG_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(deployment.root)  # ./.rag, as `rag search` run here would use
    with RagRetriever(k=1) as retriever:
        monkeypatch.chdir(tmp_path)  # a long-lived retriever keeps its index when the cwd moves
        assert retriever.invoke(QUESTION)[0].metadata["doc_id"].endswith("web/pricing.html")


def test_without_langchain_the_import_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in [n for n in sys.modules if n == "langchain_core" or n.startswith("langchain_core.")]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed: importing it raises ImportError
    monkeypatch.delitem(sys.modules, "rag.integrations.langchain")
    with pytest.raises(ImportError, match=r"pip install 'rag-platform\[langchain\]'"):
        __import__("rag.integrations.langchain")
