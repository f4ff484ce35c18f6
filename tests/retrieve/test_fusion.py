"""Fusion maths: normalisation, the alpha endpoints, RRF, and the retriever's filter/post-filter flow."""

from __future__ import annotations

import numpy as np
import pytest

from rag.core.errors import ConfigError
from rag.core.filters import parse_filter
from rag.core.types import Chunk, ScoredId
from rag.retrieve.bm25 import BM25Index
from rag.retrieve.hybrid import HybridRetriever, PostFilter, linear_fusion, min_max, rrf_fusion
from rag.retrieve.keyword import LocalBM25
from rag.stores.base import StoredChunk


def test_min_max() -> None:
    assert min_max({"a": 2.0, "b": 4.0, "c": 3.0}) == {"a": 0.0, "b": 1.0, "c": 0.5}
    assert min_max({"a": 3.0, "b": 3.0}) == {"a": 1.0, "b": 1.0}
    assert min_max({"a": 0.0}) == {"a": 0.0}
    assert min_max({}) == {}


def test_linear_fusion_values() -> None:
    dense = {"a": 0.9, "b": 0.5, "c": 0.1}
    bm25 = {"a": 1.0, "b": 11.0, "c": 6.0}
    fused = {f.chunk_id: f.score for f in linear_fusion(dense, bm25, 0.25)}
    # norm dense: a=1, b=.5, c=0 ; norm bm25: a=0, b=1, c=.5
    assert fused == pytest.approx({"a": 0.25, "b": 0.25 * 0.5 + 0.75, "c": 0.75 * 0.5})


@pytest.mark.parametrize("seed", range(5))
def test_alpha_endpoints_reproduce_each_retriever(seed: int) -> None:
    rng = np.random.default_rng(seed)
    ids = [f"c{i}" for i in range(40)]
    dense = dict(zip(ids, rng.random(40).round(2)))  # rounded: ties must still follow raw order
    bm25 = dict(zip(ids, (rng.random(40) * 10).round(1)))
    by_dense = sorted(ids, key=lambda c: (-dense[c], c))
    by_bm25 = sorted(ids, key=lambda c: (-bm25[c], c))
    assert [f.chunk_id for f in linear_fusion(dense, bm25, 1.0)] == by_dense
    assert [f.chunk_id for f in linear_fusion(dense, bm25, 0.0)] == by_bm25


def test_rrf() -> None:
    dense = [ScoredId("a", 0.9), ScoredId("b", 0.8)]
    bm25 = [ScoredId("b", 7.0), ScoredId("c", 3.0)]
    fused = {f.chunk_id: f.score for f in rrf_fusion(dense, bm25, 0.5, k=60)}
    assert fused == pytest.approx({"a": 0.5 / 61, "b": 0.5 / 62 + 0.5 / 61, "c": 0.5 / 62})
    assert rrf_fusion(dense, bm25, 0.5)[0].chunk_id == "b"


def test_bad_arguments() -> None:
    with pytest.raises(ConfigError, match="alpha"):
        linear_fusion({}, {}, 1.1)
    with pytest.raises(ConfigError, match="rrf_k"):
        rrf_fusion([], [], 0.5, k=0)
    with pytest.raises(ConfigError, match="max_per_doc"):
        PostFilter(max_per_doc=0)


# -- the retriever over a tiny in-memory world ------------------------------------------------------


class ListStore:
    """An exact in-memory vector store: the retriever's logic is tested apart from any backend."""

    dimension = 4

    def __init__(self, chunks: list[StoredChunk]) -> None:
        self.chunks = {c.chunk_id: c for c in chunks}

    def search(self, vector, k, filter=None):
        scored = [
            ScoredId(c.chunk_id, float(np.dot(c.vector, vector)))
            for c in self.chunks.values()
            if not filter or filter.matches(c.metadata)
        ]
        return sorted(scored, key=lambda s: -s.score)[:k]

    def get_vectors(self, ids):
        return {i: self.chunks[i].vector for i in ids if i in self.chunks}


class Lookup:
    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = {c.chunk_id: c for c in chunks}

    def get_chunks(self, ids):
        return {i: self.chunks[i] for i in ids if i in self.chunks}


@pytest.fixture
def world() -> tuple[HybridRetriever, list[Chunk]]:
    rng = np.random.default_rng(0)
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta"]
    chunks, stored = [], []
    for i in range(60):
        text = " ".join(rng.choice(words, 5)) + f" item{i}"
        meta = {"doc_id": f"d{i // 3}", "page": i % 7, "lang": "en" if i % 2 else "de"}
        vec = rng.normal(size=4).astype(np.float32)
        vec /= np.linalg.norm(vec)
        chunks.append(Chunk(f"c{i}", meta["doc_id"], text, meta))
        stored.append(StoredChunk(f"c{i}", vec, text, meta))
    bm25 = BM25Index(analyzer=None)
    bm25.build([c.chunk_id for c in chunks], [c.text for c in chunks], [c.metadata for c in chunks])
    query_vec = stored[5].vector
    retriever = HybridRetriever(ListStore(stored), LocalBM25(bm25), lambda q: query_vec, Lookup(chunks), candidates=10)
    return retriever, chunks


def test_retriever_endpoints_match_single_retrievers(world) -> None:
    retriever, _ = world
    dense_only = [s.chunk_id for s in retriever.store.search(retriever.embed_query(""), 5)]
    bm25_only = [s.chunk_id for s in retriever.keyword.search("gamma delta", 5)]
    assert [h.chunk.chunk_id for h in retriever.search("gamma delta", 5, alpha=1.0)] == dense_only
    assert [h.chunk.chunk_id for h in retriever.search("gamma delta", 5, alpha=0.0)] == bm25_only


def test_union_candidates_get_both_true_scores(world) -> None:
    retriever, _ = world
    hits = retriever.search("gamma delta", 10, alpha=0.5)
    assert all(h.dense_score is not None and h.bm25_score is not None for h in hits)
    vectors = retriever.store.get_vectors([h.chunk.chunk_id for h in hits])
    for h in hits:
        assert h.dense_score == pytest.approx(float(np.dot(vectors[h.chunk.chunk_id], retriever.embed_query(""))))


def test_prefilter_applies_inside_both_searches(world) -> None:
    retriever, _ = world
    flt = parse_filter({"page": 3, "lang": "en"})
    for alpha in (0.0, 0.5, 1.0):
        hits = retriever.search("alpha beta gamma delta epsilon zeta", 20, alpha=alpha, filter=flt)
        assert hits and all(flt.matches(h.chunk.metadata) for h in hits)
    # Every matching chunk comes back from the dense side, however selective the filter.
    retriever_chunks = retriever.lookup.chunks.values()
    matching = {c.chunk_id for c in retriever_chunks if flt.matches(c.metadata)}
    assert 0 < len(matching) < 10
    assert {h.chunk.chunk_id for h in retriever.search("zeta", 20, alpha=1.0, filter=flt)} == matching


def test_post_filters(world) -> None:
    retriever, _ = world
    capped = retriever.search("alpha beta gamma", 10, alpha=0.5, post=PostFilter(max_per_doc=1))
    docs = [h.chunk.doc_id for h in capped]
    assert len(docs) == len(set(docs)) == 10
    floor = retriever.search("alpha beta gamma", 10, alpha=0.5, post=PostFilter(min_score=0.6))
    assert floor and all(h.score >= 0.6 for h in floor)


def test_orphans_are_skipped_and_rrf_works(world) -> None:
    retriever, chunks = world
    retriever.lookup = Lookup(chunks[1:])  # c0 is now an orphan vector
    hits = retriever.search("alpha", 60, fusion="rrf")
    assert "c0" not in {h.chunk.chunk_id for h in hits}
    with pytest.raises(ConfigError, match="fusion"):
        retriever.search("alpha", 3, fusion="max")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="k must be positive"):
        retriever.search("alpha", 0)


def _ids(*scores: float) -> list[ScoredId]:
    return [ScoredId(f"x{i}", s) for i, s in enumerate(scores)]


def test_confidence_alpha() -> None:
    from rag.retrieve.hybrid import confidence_alpha

    dense, bm25 = _ids(0.8, 0.5), _ids(10.0, *[9.0] * 9)  # BM25 flat: (10 - 9) / 10 = 0.1
    assert confidence_alpha(0.5, dense, bm25, power=0) == 0.5  # γ = 0: plain linear fusion
    assert confidence_alpha(0.0, dense, bm25, power=3) == 0.0 and confidence_alpha(1.0, dense, bm25, power=3) == 1.0
    assert confidence_alpha(0.5, dense, bm25, power=1) == pytest.approx(0.8 / (0.8 + 0.1))
    assert confidence_alpha(0.5, dense, bm25, power=3) == pytest.approx(0.8**3 / (0.8**3 + 0.1**3))
    peaked = _ids(10.0, *[1.0] * 9)  # a sharp BM25 peak pulls weight towards BM25
    assert confidence_alpha(0.5, dense, peaked, 3) < confidence_alpha(0.5, dense, bm25, 3)
    assert confidence_alpha(0.5, dense, [], 3) == 1.0  # no keyword match at all: trust the dense side
    few = _ids(10.0, 9.5)  # only two chunks contain the terms: the 10th best scores 0, full confidence
    assert confidence_alpha(0.5, dense, few, 1) == pytest.approx(0.8 / (0.8 + 1.0))
    assert confidence_alpha(0.5, [], [], 3) == 0.5
    with pytest.raises(ConfigError, match="confidence_power"):
        confidence_alpha(0.5, dense, bm25, power=-1)
