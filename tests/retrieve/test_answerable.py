"""Answerability: the evidence is what the retrievers really scored, the shipped model separates a question
the corpus answers from one it does not, and ``ask`` does not generate from passages that do not answer."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from rag.core.settings import load_settings
from rag.core.types import Evidence, ScoredId
from rag.engine import RagEngine
from rag.engine.answerability import NOT_COVERED, NOT_COVERED_MODEL, not_covered
from rag.retrieve.answerable import answerable_probability, gather_evidence, model_for
from rag.retrieve.answerable_model import MODELS

COVERED = "When are refunds granted after a purchase?"
OFF_TOPIC = "What is the boiling point of liquid nitrogen in kelvin?"


def ids(*pairs: tuple[str, float]) -> list[ScoredId]:
    return [ScoredId(cid, score) for cid, score in pairs]


def test_evidence_from_ranked_lists() -> None:
    dense = ids(("a", 0.8), ("b", 0.5), ("c", 0.3))
    keyword = ids(*[(f"k{i}", 10.0 - i) for i in range(9)], ("a", 1.0), ("b", 0.5))
    evidence = gather_evidence(dense, keyword, query_terms=["refund", "purchas", "refund"], top_terms={"refund"},
                               keyword_name="bm25s")
    assert evidence.dense_top == 0.8
    assert evidence.dense_gap == pytest.approx(0.8 - 0.4)
    assert evidence.bm25_top == 10.0 and evidence.bm25_per_term == pytest.approx(10.0 / 3)
    assert evidence.bm25_gap == pytest.approx((10.0 - 1.0) / 10.0)  # s10 is "a" at 1.0
    assert evidence.term_coverage == 0.5  # distinct terms: refund (found), purchas (not)
    assert evidence.agreement == pytest.approx(1 / 3) and evidence.dense_top_in_bm25 is True
    assert evidence.query_terms == 3 and evidence.rerank_top is None
    assert model_for(evidence) == "hybrid"


def test_evidence_when_a_retriever_did_not_run_or_found_nothing() -> None:
    dense_only = gather_evidence(ids(("a", 0.6)), None)
    assert dense_only.bm25_top is None and dense_only.agreement is None and model_for(dense_only) == "dense"
    assert dense_only.dense_gap == 0.0
    nothing_matched = gather_evidence(ids(("a", 0.2), ("b", 0.1)), [], query_terms=["zyx"], keyword_name="bm25s")
    assert nothing_matched.bm25_top == 0.0 and nothing_matched.term_coverage == 0.0
    assert nothing_matched.agreement == 0.0 and nothing_matched.dense_top_in_bm25 is False
    # A keyword side of another scale (Postgres full-text search) is reported but not fed to the model.
    other = gather_evidence(ids(("a", 0.6)), ids(("a", 0.1)), query_terms=["x"], top_terms={"x"}, keyword_name="pg-fts")
    assert model_for(other) == "dense"
    assert answerable_probability(Evidence()) is None and answerable_probability(None) is None


def test_shipped_models_are_complete() -> None:
    assert set(MODELS) == {"hybrid", "dense", "keyword"}
    for params in MODELS.values():
        assert len(params["features"]) == len(params["coef"]) == len(params["mean"]) == len(params["scale"])
    strong = gather_evidence(ids(("a", 0.9), *[(f"d{i}", 0.2) for i in range(9)]),
                             ids(("a", 30.0), *[(f"k{i}", 1.0) for i in range(9)]),
                             query_terms=["a", "b"], top_terms={"a", "b"}, keyword_name="bm25s")
    weak = gather_evidence(ids(*[(f"d{i}", 0.2) for i in range(10)]), ids(*[(f"k{i}", 1.0) for i in range(10)]),
                           query_terms=["a", "b"], top_terms={"a"}, keyword_name="bm25s")
    assert answerable_probability(strong) > 0.5 > answerable_probability(weak)


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, copy_ingested: Callable[[Path], Path]) -> Path:
    return copy_ingested(tmp_path_factory.mktemp("answerable"))


@pytest.fixture
def engine(project: Path) -> RagEngine:
    with RagEngine(load_settings(data_dir=project / ".rag"), project_root=project) as made:
        yield made


def test_evidence_is_what_the_retrievers_scored(engine: RagEngine) -> None:
    found = engine.retrieve(COVERED)
    evidence = found.evidence
    assert found.hits[0].chunk.doc_id == "docs/web/pricing.html"
    vector = engine.embedder.encode_query(COVERED)
    stored = engine.store.get_vectors(list(engine.catalog.all_chunk_ids()))
    cosines = sorted((float(np.dot(v, vector)) for v in stored.values()), reverse=True)
    assert evidence.dense_top == pytest.approx(cosines[0], abs=1e-5)
    assert evidence.dense_gap == pytest.approx(cosines[0] - np.mean(cosines[1:10]), abs=1e-5)
    best = engine.bm25.search(COVERED, 10)
    assert evidence.bm25_top == pytest.approx(best[0].score)
    terms = engine.bm25.analyzer(COVERED)
    assert evidence.query_terms == len(terms) and evidence.bm25_per_term == pytest.approx(best[0].score / len(terms))
    assert evidence.keyword == "bm25s" and found.explain["evidence"] == evidence.to_dict()
    assert found.answerable == answerable_probability(evidence) == found.explain["answerable"]


def test_a_covered_question_scores_high_and_an_off_topic_one_low(engine: RagEngine) -> None:
    covered, off_topic = engine.retrieve(COVERED), engine.retrieve(OFF_TOPIC)
    assert off_topic.hits, "the nearest passages are still returned"
    assert covered.answerable > 0.5 > off_topic.answerable
    assert covered.evidence.dense_top > off_topic.evidence.dense_top


def test_dense_only_search_uses_the_dense_model(engine: RagEngine) -> None:
    found = engine.retrieve(COVERED, alpha=1.0)
    assert found.evidence.bm25_top is None and model_for(found.evidence) == "dense"
    assert 0.0 < found.answerable < 1.0


def test_ask_below_the_threshold_says_so_without_generating(engine: RagEngine) -> None:
    """The off-topic question is answered without an LLM (none is started: the test would take minutes)."""
    streamed: list[str] = []
    sources: list[int] = []
    answer = engine.ask(OFF_TOPIC, on_sources=lambda hits: sources.append(len(hits)), on_token=streamed.append)
    threshold = engine.settings.retrieval.answerable_threshold
    assert answer.answerable is not None and answer.answerable < threshold
    assert answer.text == NOT_COVERED and streamed == [NOT_COVERED] and answer.model == NOT_COVERED_MODEL
    assert answer.used_hits and sources == [len(answer.used_hits)] and answer.citations == []
    assert any("answerable_threshold" in w for w in answer.warnings)
    data = answer.to_dict()
    assert data["answerable"] == answer.answerable and data["evidence"] == answer.evidence.to_dict()
    assert len(data["hits"]) == len(answer.used_hits)


def test_the_gate_only_closes_below_the_threshold(engine: RagEngine) -> None:
    found = engine.retrieve(OFF_TOPIC)
    assert not_covered(found, 0.0) is None  # 0 always generates
    assert not_covered(found, found.answerable) is None  # at the threshold: generate
    assert not_covered(found, min(1.0, found.answerable + 1e-6)) is not None
    found.hits = []
    assert not_covered(found, 1.0) is None  # no hits: the generator's own no-context answer stands
