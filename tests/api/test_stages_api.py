"""Retrieval stages over HTTP: request fields named as the CLI flags, ``explain`` in the bodies, and the
chat endpoint's earlier turns used for follow-ups. A real API process; its LLM is the scripted endpoint,
so each test knows what the stage was told and what it replied."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api_server import ApiServer, sse_events
from fake_endpoint import Reply, ScriptedEndpoint

pytestmark = pytest.mark.slow


@pytest.fixture
def script(endpoint: ScriptedEndpoint) -> ScriptedEndpoint:
    endpoint.script.clear()
    endpoint.requests.clear()
    return endpoint


def test_search_with_stages_and_explain(scripted_server: ApiServer, script: ScriptedEndpoint) -> None:
    script.reply(Reply(pieces=["refunds granted within days of purchase"]), Reply(pieces=["pricing refunds\nwidget price"]))
    with scripted_server.client() as client:
        response = client.post("/v1/collections/default/search", json={
            "query": "money back?", "k": 2, "rewrite": True, "multi_query": 2, "explain": True,
        })
    assert response.status_code == 200, response.text
    body = response.json()
    explain = body["explain"]
    assert explain["search_queries"] == ["refunds granted within days of purchase", "pricing refunds", "widget price"]
    assert [s["stage"] for s in explain["stages"]] == ["rewrite", "multi_query", "search"]
    assert body["hits"][0]["doc_id"] == "pricing.html" and "rerank_score" in body["hits"][0]


def test_search_without_explain_has_none(scripted_server: ApiServer, script: ScriptedEndpoint) -> None:
    with scripted_server.client() as client:
        body = client.post("/v1/collections/default/search", json={"query": "refunds", "k": 1}).json()
    assert body["explain"] is None and script.requests == []


def test_a_failing_llm_never_fails_the_search(scripted_server: ApiServer, script: ScriptedEndpoint) -> None:
    script.reply(Reply(status=500, body="{}"))
    with scripted_server.client() as client:
        response = client.post("/v1/collections/default/search", json={"query": "refund days", "hyde": True, "explain": True})
    assert response.status_code == 200
    assert response.json()["explain"]["warnings"][0].startswith("hyde failed")


def test_rerank_without_a_model_is_a_client_error(scripted_server: ApiServer) -> None:
    with scripted_server.client() as client:
        response = client.post("/v1/collections/default/search", json={"query": "refunds", "rerank": True})
    assert response.status_code == 422 and "rerank.model" in response.text


def test_a_client_cannot_make_the_server_load_a_model(scripted_server: ApiServer, tmp_path: Path) -> None:
    with scripted_server.client() as client:
        response = client.post("/v1/collections/default/search", json={"query": "refunds", "rerank": str(tmp_path)})
    assert response.status_code == 422 and "configured model" in response.text


def test_ask_history_condenses_the_follow_up(scripted_server: ApiServer, script: ScriptedEndpoint) -> None:
    script.reply(Reply(pieces=["Within how many days are refunds granted?"]), Reply(pieces=["Within 30 days [1]."]))
    with scripted_server.client() as client:
        response = client.post("/v1/collections/default/ask", json={
            "question": "and refunds?", "explain": True, "stream": True,
            "history": [{"role": "user", "content": "What does the team plan cost?"},
                        {"role": "assistant", "content": "45 euros a month [1]."}],
        })
    assert response.status_code == 200
    events = dict(sse_events(response.text))
    done = json.loads(events["done"])
    assert done["explain"]["standalone_question"] == "Within how many days are refunds granted?"
    assert "What does the team plan cost?" in script.requests[0]["messages"][1]["content"]


def test_chat_completions_use_the_earlier_turns(scripted_server: ApiServer, script: ScriptedEndpoint) -> None:
    script.reply(Reply(pieces=["Within how many days are refunds granted?"]), Reply(pieces=["Within 30 days [1]."]))
    with scripted_server.client() as client:
        response = client.post("/v1/chat/completions", json={"model": "default", "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "What does the team plan cost?"},
            {"role": "assistant", "content": "45 euros a month."},
            {"role": "user", "content": "and can I get a refund?"},
        ]})
    assert response.status_code == 200, response.text
    condense = script.requests[0]["messages"][1]["content"]
    assert "User: What does the team plan cost?" in condense and "Assistant: 45 euros a month." in condense
    assert "Be brief" not in condense  # system turns are not conversation
    assert "Refunds" in response.json()["sources"][0]["text"]


def test_request_options_reach_the_engine(scripted_server: ApiServer, script: ScriptedEndpoint) -> None:
    """The body's fields travel as one QueryOptions: the dense weight and the per-document cap shape the hits,
    of a search and of an answer's sources."""
    def hits(**fields: object) -> list[dict]:
        response = client.post("/v1/collections/default/search", json={"query": "widget", "k": 10, **fields})
        assert response.status_code == 200, response.text
        return response.json()["hits"]

    with scripted_server.client() as client:
        keyword_only, dense_only = hits(alpha=0), hits(alpha=1)
        uncapped, capped = [h["doc_id"] for h in hits()], [h["doc_id"] for h in hits(max_per_doc=1)]
        script.reply(Reply(pieces=["A widget [1]."]))
        asked = client.post("/v1/collections/default/ask", json={"question": "widget", "k": 10, "max_per_doc": 1})
    assert keyword_only and all(h["dense_score"] is None and h["bm25_score"] is not None for h in keyword_only)
    assert dense_only and all(h["bm25_score"] is None and h["dense_score"] is not None for h in dense_only)
    assert len(set(uncapped)) < len(uncapped) and len(capped) == len(set(capped)) == len(set(uncapped))
    assert asked.status_code == 200, asked.text
    sources = [h["doc_id"] for h in asked.json()["hits"]]
    assert sources and len(sources) == len(set(sources))
