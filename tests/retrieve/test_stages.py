"""The retrieval stages through :class:`RagEngine`: real index and model, the LLM a scripted endpoint.

The endpoint (:class:`fake_endpoint.ScriptedEndpoint`) writes exact rewrites, passages and failures, so
each test can say what the stage must have done with them; the real embedded LLM runs the same stages in
``test_stages_cli.py``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fake_endpoint import Reply, ScriptedEndpoint

from rag.core.errors import ConfigError
from rag.core.settings import load_settings
from rag.engine import RagEngine
from rag.retrieve.transforms import CONDENSE_PROMPT, HYDE_PROMPT, MULTI_QUERY_PROMPT, REWRITE_PROMPT
from rag.workspace import Workspace

pytestmark = pytest.mark.slow  # loads the embedding model

NONSENSE = "qqxv zzkw"  # matches no word of the corpus


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory, corpus_writer: Callable[..., Path]) -> Path:
    root = tmp_path_factory.mktemp("stages")
    docs = corpus_writer(root)
    with RagEngine(load_settings(data_dir=root / ".rag"), project_root=root) as engine:
        engine.ingest([docs])
    return root / ".rag"


@pytest.fixture
def endpoint() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint() as server:
        yield server


@pytest.fixture
def engine_for(
    data_dir: Path, endpoint: ScriptedEndpoint, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., RagEngine]]:
    """Engines over the shared index whose LLM is the scripted endpoint; the stage cache is per test."""
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    made: list[RagEngine] = []

    def make(**retrieval: Any) -> RagEngine:
        retrieval.setdefault("stage_timeout", 5)
        settings = load_settings(
            data_dir=data_dir,
            llm={"base_url": endpoint.base_url, "model": endpoint.model, "max_retries": 0},
            retrieval=retrieval,
        )
        made.append(RagEngine(settings, project_root=data_dir.parent))
        return made[-1]

    yield make
    for engine in made:
        engine.close()


def _ids(hits: list) -> list[str]:
    return [h.chunk.chunk_id for h in hits]


def test_no_stage_is_the_plain_hybrid_search(engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint) -> None:
    engine = engine_for()
    found = engine.retrieve("how much does the team plan cost?", 3)
    plain = engine.retriever.search("how much does the team plan cost?", 3)
    assert [(h.chunk.chunk_id, h.score) for h in found.hits] == [(h.chunk.chunk_id, h.score) for h in plain]
    assert [s["stage"] for s in found.explain["stages"]] == ["search"]
    assert endpoint.requests == []  # no LLM call unless a stage asks for one


def test_rewrite_searches_the_rewritten_query_with_both_retrievers(
    engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint
) -> None:
    endpoint.reply(Reply(pieces=['Query: "refunds granted purchase days"']))
    found = engine_for().retrieve(NONSENSE, 2, rewrite=True)
    assert found.explain["search_queries"] == ["refunds granted purchase days"]  # label and quotes removed
    top = found.hits[0]
    assert top.chunk.doc_id == "docs/web/pricing.html" and "Refunds" in top.chunk.text
    assert top.bm25_score and top.bm25_score > 0  # BM25 read the rewrite, not the nonsense
    request = endpoint.requests[0]
    assert request["stream"] is False and request["temperature"] == 0
    assert request["messages"] == [{"role": "system", "content": REWRITE_PROMPT}, {"role": "user", "content": NONSENSE}]
    stage = found.explain["stages"][0]
    assert stage["stage"] == "rewrite" and stage["output"] == "refunds granted purchase days" and not stage["cached"]


def test_hyde_moves_only_the_dense_side_and_never_reaches_the_answer(
    engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint
) -> None:
    passage = "It all started in 1987, when two engineers founded the firm in Helsinki to build radios."
    endpoint.reply(Reply(pieces=[passage]), Reply(pieces=["It was founded in 1987 [1]."]))
    engine = engine_for(hyde_weight=1.0)
    answer = engine.ask("when did it all begin?", 2, hyde=True)
    hits = answer.used_hits
    assert hits[0].chunk.doc_id == "docs/notes/history.txt"
    # The dense scores are cosines with the passage's embedding (weight 1: the passage alone).
    vector = engine.embedder.encode_query(passage)
    stored = engine.store.get_vectors([hits[0].chunk.chunk_id])[hits[0].chunk.chunk_id]
    assert hits[0].dense_score == pytest.approx(float(np.dot(vector, stored)), abs=1e-4)
    assert endpoint.requests[0]["messages"][0]["content"] == HYDE_PROMPT
    answer_prompt = str(endpoint.requests[1]["messages"])
    assert "radio receivers" in answer_prompt  # the chunk is context ...
    assert "It all started" not in answer_prompt  # ... the passage is not
    assert answer.retrieval.explain["stages"][0]["output"] == passage


def test_hyde_weight_blends_the_passage_with_the_query(
    engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint
) -> None:
    query, passage = "widget licence", "Refunds are granted within 30 days of purchase."
    endpoint.reply(Reply(pieces=[passage]))
    engine = engine_for(hyde_weight=0.25)
    hit = engine.retrieve(query, 1, hyde=True, alpha=1.0).hits[0]
    blended = 0.25 * engine.embedder.encode_query(passage) + 0.75 * engine.embedder.encode_query(query)
    blended /= np.linalg.norm(blended)
    stored = engine.store.get_vectors([hit.chunk.chunk_id])[hit.chunk.chunk_id]
    assert hit.dense_score == pytest.approx(float(np.dot(blended, stored)), abs=1e-4)


def test_multi_query_merges_the_variants_by_reciprocal_rank(
    engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint
) -> None:
    endpoint.reply(Reply(pieces=["1. refunds within 30 days\n2) company founded Helsinki\n- a third one"]))
    found = engine_for().retrieve("team plan price", 6, multi_query=2)
    assert found.explain["search_queries"] == ["team plan price", "refunds within 30 days", "company founded Helsinki"]
    assert "2 different" in endpoint.requests[0]["messages"][0]["content"]
    assert endpoint.requests[0]["messages"][0]["content"] == MULTI_QUERY_PROMPT.format(n=2)
    docs = [h.chunk.doc_id for h in found.hits]
    assert "docs/notes/history.txt" in docs and "docs/web/pricing.html" in docs  # each variant contributed
    assert len(set(_ids(found.hits))) == len(found.hits)  # deduplicated by chunk
    scores = [h.score for h in found.hits]
    assert scores == sorted(scores, reverse=True) and max(scores) <= 3 / 61 + 1e-9  # RRF: Σ 1/(60 + rank)


def test_follow_up_is_condensed_then_searched_and_answered(
    engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint
) -> None:
    endpoint.reply(Reply(pieces=["Within how many days of purchase are refunds granted?"]), Reply(pieces=["Within 30 days [1]."]))
    history = [
        {"role": "user", "content": "How much does the team plan cost?"},
        {"role": "assistant", "content": "45 euros a month [1]."},
    ]
    answer = engine_for().ask("and can I get my money back?", 2, history=history)
    condense = endpoint.requests[0]["messages"]
    assert condense[0]["content"] == CONDENSE_PROMPT
    assert "User: How much does the team plan cost?" in condense[1]["content"]
    assert "Follow-up question: and can I get my money back?" in condense[1]["content"]
    assert answer.retrieval.query == "Within how many days of purchase are refunds granted?"
    assert answer.retrieval.explain["standalone_question"] == "Within how many days of purchase are refunds granted?"
    assert "Refunds" in answer.used_hits[0].chunk.text
    # The answer is written for the standalone question, not the bare follow-up.
    assert "Within how many days of purchase are refunds granted?" in endpoint.requests[1]["messages"][-1]["content"]


def test_condense_can_be_switched_off(engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint) -> None:
    found = engine_for(condense=False).retrieve("and the price?", 2, history=[{"role": "user", "content": "widget"}])
    assert found.query == "and the price?" and endpoint.requests == []


@pytest.mark.parametrize(
    "failure",
    [Reply(status=500, body='{"error": "boom"}'), Reply(pieces=["slow"], delay=3.0), Reply(pieces=["   "])],
    ids=["http-500", "timeout", "empty-reply"],
)
def test_a_failed_transform_falls_back_to_the_plain_query(
    engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint, failure: Reply
) -> None:
    endpoint.reply(failure)
    engine = engine_for(stage_timeout=1.5)
    query = "how much does the team plan cost?"
    found = engine.retrieve(query, 3, rewrite=True, multi_query=2, hyde=True)
    assert _ids(found.hits) == _ids(engine.retriever.search(query, 3))  # exactly the plain search
    stages = {s["stage"]: s for s in found.explain["stages"]}
    assert set(stages) == {"rewrite", "multi_query", "hyde", "search"}
    assert all(stages[name].get("fallback") for name in ("rewrite", "multi_query", "hyde"))
    # The first failure is paid once: the other stages do not queue behind a stuck server.
    assert len(endpoint.requests) == 1
    assert len(found.warnings) == 3 and found.warnings[0].startswith("rewrite failed")
    assert "skipped" in stages["hyde"]["fallback"]


def test_a_failed_condense_searches_the_previous_question_with_the_follow_up(
    engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint
) -> None:
    endpoint.reply(Reply(status=503, body="{}"))
    history = [{"role": "user", "content": "Tell me about refunds"}, {"role": "assistant", "content": "Sure."}]
    found = engine_for().retrieve("how many days?", 2, history=history)
    assert found.query == "Tell me about refunds how many days?"
    assert "Refunds" in found.hits[0].chunk.text and found.warnings[0].startswith("condense failed")


def test_without_a_configured_llm_a_follow_up_is_condensed_without_one(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The bundled model is not started to condense: the previous question joins the follow-up, quietly."""
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    history = [{"role": "user", "content": "Tell me about refunds"}, {"role": "assistant", "content": "Sure [1]."}]
    with Workspace(load_settings(data_dir=data_dir), project_root=data_dir.parent) as workspace:
        answer = workspace.engine("default").ask("how many days?", 2, history=history)
        assert workspace.llm_servers.running() == 0
    assert answer.retrieval.query == "Tell me about refunds how many days?" and answer.warnings == []
    stage = answer.retrieval.explain["stages"][0]
    assert (stage["stage"], stage["method"]) == ("condense", "heuristic") and "fallback" not in stage
    assert "Refunds" in answer.used_hits[0].chunk.text and answer.model == "extractive"


def test_an_unreachable_llm_never_fails_a_search(data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    settings = load_settings(data_dir=data_dir, llm={"base_url": "http://127.0.0.1:9/v1", "max_retries": 0})
    with RagEngine(settings, project_root=data_dir.parent) as engine:
        found = engine.retrieve("refunds", 2, hyde=True, rewrite=True)
    assert found.hits and "cannot connect" in found.warnings[0]


def test_replies_are_cached_across_engines(engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint) -> None:
    endpoint.reply(Reply(pieces=["refund policy"]), Reply(pieces=["a passage about refunds"]))
    first = engine_for().retrieve("money back?", 2, rewrite=True, hyde=True)
    second = engine_for().retrieve("money back?", 2, rewrite=True, hyde=True)  # a new engine, same cache file
    assert len(endpoint.requests) == 2
    assert [s.get("cached") for s in second.explain["stages"][:2]] == [True, True]
    assert _ids(first.hits) == _ids(second.hits)


def test_llm_reranking_reorders_by_the_llm_grades(engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint) -> None:
    engine = engine_for()
    plain = engine.retrieve("plan", 3, rerank=False).hits
    # Pointwise: one grade per candidate, in the fused order; the last candidate gets the top grade.
    top_n = engine.settings.rerank.top_n
    n = min(top_n, len(engine.retrieve("plan", top_n).hits))
    endpoint.reply(*[Reply(pieces=["1"]) for _ in range(n - 1)], Reply(pieces=["3"]))
    found = engine.retrieve("plan", 3, rerank="llm")
    rerank = found.explain["stages"][-1]
    assert rerank["stage"] == "rerank" and rerank["model"] == f"llm:{endpoint.model}"
    assert rerank["ranks"][0]["before"] == n and rerank["ranks"][0]["after"] == 1
    assert found.hits[0].rerank_score == 3 and found.hits[0].score == 3
    assert [h.chunk.chunk_id for h in found.hits[1:]] == _ids(plain)[:2]  # ties keep the fused order


def test_a_failed_llm_reranker_keeps_the_fused_order(engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint) -> None:
    endpoint.reply(Reply(status=500, body="{}"))
    engine = engine_for()
    found = engine.retrieve("plan", 3, rerank="llm")
    assert _ids(found.hits) == _ids(engine.retrieve("plan", 3).hits)
    assert found.hits[0].rerank_score is None and found.warnings[0].startswith("rerank failed")


def test_post_filters_apply_to_the_final_scores(engine_for: Callable[..., RagEngine], endpoint: ScriptedEndpoint) -> None:
    endpoint.reply(Reply(pieces=["widget\nwidget cache\nwidget installer"]))
    found = engine_for().retrieve("widget", 5, multi_query=3, max_per_doc=1)
    docs = [h.chunk.doc_id for h in found.hits]
    assert len(docs) == len(set(docs)) >= 2
    stages = [s["stage"] for s in found.explain["stages"]]
    assert stages[-1] == "post_filter"


def test_rerank_without_a_model_explains_how_to_set_one(engine_for: Callable[..., RagEngine]) -> None:
    with pytest.raises(ConfigError, match=r"rerank.model"):
        engine_for().retrieve("plan", 3, rerank=True)


def test_history_turns_are_validated(engine_for: Callable[..., RagEngine]) -> None:
    with pytest.raises(ConfigError, match="history turn 1"):
        engine_for().retrieve("plan", 3, history=[{"role": "robot", "content": "x"}])
