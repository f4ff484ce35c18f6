"""Answerability over HTTP: ``answerable`` and ``evidence`` in the /search and /ask bodies and the SSE
``done`` event, and an off-topic question answered "not covered" without a request to the LLM. A real API
process; its LLM is the scripted endpoint, so the test knows whether generation ran."""

from __future__ import annotations

import json

import pytest
from api_server import ApiServer, sse_events
from fake_endpoint import Reply, ScriptedEndpoint

from rag.engine.answerability import NOT_COVERED

pytestmark = pytest.mark.slow

COVERED = "When are refunds granted after a purchase?"
OFF_TOPIC = "What is the boiling point of liquid nitrogen in kelvin?"
EVIDENCE_KEYS = {
    "dense_top", "dense_gap", "bm25_top", "bm25_per_term", "bm25_gap", "term_coverage", "agreement",
    "dense_top_in_bm25", "query_terms", "rerank_top", "keyword",
}


def test_search_bodies_carry_answerability(scripted_server: ApiServer) -> None:
    with scripted_server.client() as client:
        covered = client.post("/v1/collections/default/search", json={"query": COVERED, "explain": True}).json()
        off_topic = client.post("/v1/collections/default/search", json={"query": OFF_TOPIC}).json()
    assert set(covered) == {"hits", "answerable", "evidence", "explain"}
    assert set(covered["evidence"]) == EVIDENCE_KEYS and covered["evidence"]["keyword"] == "bm25s"
    assert covered["explain"]["answerable"] == covered["answerable"]
    assert covered["explain"]["evidence"] == covered["evidence"]
    assert covered["answerable"] > 0.5 > off_topic["answerable"]
    assert off_topic["hits"]


def test_ask_generates_when_covered_and_says_so_when_not(scripted_server: ApiServer, endpoint: ScriptedEndpoint) -> None:
    endpoint.script.clear()
    endpoint.requests.clear()
    endpoint.reply(Reply(pieces=["Refunds are granted within 30 days of purchase [1]."]))
    with scripted_server.client() as client:
        covered = client.post("/v1/collections/default/ask", json={"question": COVERED})
        assert covered.status_code == 200, covered.text
        assert len(endpoint.requests) == 1
        off_topic = client.post("/v1/collections/default/ask", json={"question": OFF_TOPIC})
        assert off_topic.status_code == 200, off_topic.text
        streamed = client.post("/v1/collections/default/ask", json={"question": OFF_TOPIC, "stream": True})
    assert len(endpoint.requests) == 1, "no generation for the off-topic questions"
    body = covered.json()
    assert body["answer"].startswith("Refunds are granted") and body["answerable"] > 0.5
    assert set(body["evidence"]) == EVIDENCE_KEYS
    miss = off_topic.json()
    assert miss["answer"] == NOT_COVERED and miss["citations"] == [] and miss["hits"]
    assert miss["answerable"] < 0.5 and any("answerable_threshold" in w for w in miss["warnings"])
    events = sse_events(streamed.text)
    assert [kind for kind, _ in events] == ["sources", "delta", "citations", "done"]
    assert json.loads(events[1][1]) == {"text": NOT_COVERED}
    done = json.loads(events[-1][1])
    assert done["answerable"] == pytest.approx(miss["answerable"]) and done["evidence"] == miss["evidence"]
