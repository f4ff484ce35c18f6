"""When the retriever hands the whole hybrid query to a store that fuses natively, and when it fuses locally.

:class:`FusingStore` is a stand-in for OpenSearch and Qdrant, whose engines cannot run inside this test:
a small but real in-memory store (exact dense search, a real ``bm25s`` index over the same rows as its own
keyword side) whose ``hybrid_search`` really fuses, with min-max normalisation over each side's own hits
and fixed weights as OpenSearch's pipeline does. It records its ``hybrid_search`` calls, so a test can
tell which path ran. The real engines' native searches are tested in tests/stores (Qdrant's local engine
here, both servers in the integration contract).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from rag.core.errors import ConfigError
from rag.core.filters import Filter, parse_filter
from rag.core.types import Chunk, ScoredId
from rag.retrieve.bm25 import BM25Index
from rag.retrieve.hybrid import HybridRetriever, PostFilter, min_max
from rag.retrieve.keyword import KeywordIndex, LocalBM25
from rag.stores.base import ProvidesHybridSearch, ProvidesKeywordIndex, StoredChunk


class OwnKeywordIndex:
    """The stand-in store's own keyword search: BM25 over its rows, holding the store it searches."""

    name = "stand-in-bm25"

    def __init__(self, store: FusingStore, index: BM25Index) -> None:
        self.store = store
        self._local = LocalBM25(index)

    def search(self, query: str, k: int, filter: Filter | None = None) -> list[ScoredId]:
        return self._local.search(query, k, filter)

    def scores(self, query: str, chunk_ids: Sequence[str]) -> dict[str, float]:
        return self._local.scores(query, chunk_ids)


class FusingStore:
    """A stand-in for a store whose engine fuses natively (see the module docstring).

    Attributes:
        calls: the arguments of every ``hybrid_search`` call, in order.
        unavailable: what ``hybrid_search_unavailable`` answers (a reason blocks the native path).
    """

    dimension = 4

    def __init__(self, chunks: list[StoredChunk]) -> None:
        self.rows = {c.chunk_id: c for c in chunks}
        self.bm25 = BM25Index()
        self.bm25.build(list(self.rows), [c.text for c in chunks], [c.metadata for c in chunks])
        self.calls: list[dict] = []
        self.unavailable: str | None = None

    # -- the VectorStore part the retriever uses
    def search(self, vector: np.ndarray, k: int, filter: Filter | None = None) -> list[ScoredId]:
        vector = vector / np.linalg.norm(vector)
        scored = [ScoredId(c.chunk_id, float(np.dot(c.vector, vector)))
                  for c in self.rows.values() if not filter or filter.matches(c.metadata)]
        return sorted(scored, key=lambda s: (-s.score, s.chunk_id))[:k]

    def get_vectors(self, chunk_ids: list[str]) -> dict[str, np.ndarray]:
        return {cid: self.rows[cid].vector for cid in chunk_ids if cid in self.rows}

    # -- the optional capabilities
    def keyword_index(self) -> OwnKeywordIndex:
        return OwnKeywordIndex(self, self.bm25)

    def hybrid_search_unavailable(self) -> str | None:
        return self.unavailable

    def hybrid_search(self, query: str, vector: np.ndarray, k: int, alpha: float, filter: Filter | None = None,
                      *, candidates: int = 100) -> list[ScoredId]:
        self.calls.append({"query": query, "vector": np.array(vector), "k": k, "alpha": alpha, "filter": filter,
                           "candidates": candidates})
        dense = {h.chunk_id: h.score for h in self.search(vector, max(k, candidates), filter)}
        keyword = {h.chunk_id: h.score for h in self.keyword_index().search(query, max(k, candidates), filter)}
        nd, nk = min_max(dense), min_max(keyword)
        fused = [ScoredId(cid, alpha * nd.get(cid, 0.0) + (1 - alpha) * nk.get(cid, 0.0)) for cid in dense | keyword]
        return sorted(fused, key=lambda s: (-s.score, s.chunk_id))[:k]


class Lookup:
    def __init__(self, chunks: list[Chunk]) -> None:
        self.chunks = {c.chunk_id: c for c in chunks}

    def get_chunks(self, ids):
        return {i: self.chunks[i] for i in ids if i in self.chunks}


class CountingEmbedder:
    """A fixed query vector that counts how often the query was embedded."""

    def __init__(self, vector: np.ndarray) -> None:
        self.vector, self.calls = vector, 0

    def __call__(self, query: str) -> np.ndarray:
        self.calls += 1
        return self.vector


@pytest.fixture
def world() -> tuple[FusingStore, list[Chunk], CountingEmbedder]:
    rng = np.random.default_rng(7)
    words = ["refund", "widget", "python", "install", "cache", "licence"]
    chunks, stored = [], []
    for i in range(40):
        text = " ".join(rng.choice(words, 4)) + f" item{i}"
        meta = {"doc_id": f"d{i // 4}", "lang": "en" if i % 2 else "de"}
        vector = rng.normal(size=4).astype(np.float32)
        vector /= np.linalg.norm(vector)
        chunks.append(Chunk(f"c{i}", meta["doc_id"], text, meta))
        stored.append(StoredChunk(f"c{i}", vector, text, meta))
    return FusingStore(stored), chunks, CountingEmbedder(stored[3].vector)


def retriever(world, keyword: KeywordIndex | None = None, **kwargs) -> HybridRetriever:
    store, chunks, embed = world
    kwargs.setdefault("native_hybrid", "auto")
    return HybridRetriever(store, keyword or store.keyword_index(), embed, Lookup(chunks), candidates=12, **kwargs)


def test_the_stand_in_has_the_capabilities(world) -> None:
    store = world[0]
    assert isinstance(store, ProvidesHybridSearch) and isinstance(store, ProvidesKeywordIndex)
    assert isinstance(store.keyword_index(), KeywordIndex)


def test_native_path_when_every_condition_holds(world) -> None:
    store, _, embed = world
    flt = parse_filter({"lang": "en"})
    hits = retriever(world).search("refund widget", 5, alpha=0.4, filter=flt)
    assert len(store.calls) == 1
    call = store.calls[0]
    # `depth` candidates per side, and up to their union back (as local fusion ranks the union), so
    # post-filters and orphans still leave k hits.
    assert (call["query"], call["k"], call["candidates"], call["alpha"], call["filter"]) == (
        "refund widget", 24, 12, 0.4, flt)
    np.testing.assert_array_equal(call["vector"], embed.vector)
    expected = store.hybrid_search("refund widget", embed.vector, 24, 0.4, flt, candidates=12)[:5]
    assert [(h.chunk.chunk_id, h.score) for h in hits] == [(s.chunk_id, s.score) for s in expected]
    assert all(h.dense_score is None and h.bm25_score is None for h in hits)  # fused natively: no parts
    assert all(flt.matches(h.chunk.metadata) for h in hits)


@pytest.mark.parametrize("case", ["alpha=0", "alpha=1", "rrf", "off", "local keyword index", "unavailable"])
def test_local_fusion_otherwise(world, case: str) -> None:
    store = world[0]
    alpha = {"alpha=0": 0.0, "alpha=1": 1.0}.get(case, 0.5)
    fusion = "rrf" if case == "rrf" else "linear"
    # The same bm25s rows, but not the store's own index: the store cannot fuse with a side it does not hold.
    keyword = LocalBM25(store.bm25) if case == "local keyword index" else None
    if case == "unavailable":
        store.unavailable = "the server is too old"
    subject = retriever(world, keyword, native_hybrid="off" if case == "off" else "auto")
    reference = retriever(world, LocalBM25(store.bm25), native_hybrid="off")
    hits = subject.search("refund widget", 6, alpha=alpha, fusion=fusion)
    assert store.calls == []
    expected = reference.search("refund widget", 6, alpha=alpha, fusion=fusion)
    assert [(h.chunk.chunk_id, h.score, h.dense_score, h.bm25_score) for h in hits] == [
        (h.chunk.chunk_id, h.score, h.dense_score, h.bm25_score) for h in expected]
    if 0 < alpha < 1 and fusion == "linear":
        assert all(h.dense_score is not None for h in hits)  # locally fused: both parts


def test_native_search_takes_the_given_vector(world) -> None:
    """HyDE passes the dense vector: the native query must use it and not embed the query."""
    store, _, embed = world
    hyde = np.array([0.5, 0.5, 0.5, 0.5], dtype=np.float32)
    retriever(world).search("refund", 3, alpha=0.5, vector=hyde)
    assert embed.calls == 0
    np.testing.assert_array_equal(store.calls[0]["vector"], hyde)


def test_post_filters_and_orphans_apply_to_native_hits(world) -> None:
    _store, chunks, _ = world
    subject = retriever(world)
    capped = subject.search("refund widget install", 6, alpha=0.5, post=PostFilter(max_per_doc=1))
    assert len(capped) == 6 and len({h.chunk.doc_id for h in capped}) == 6
    floor = subject.search("refund widget install", 10, alpha=0.5, post=PostFilter(min_score=0.5))
    assert floor and all(h.score >= 0.5 for h in floor)
    best = subject.search("refund widget install", 1, alpha=0.5)[0].chunk.chunk_id
    subject.lookup = Lookup([c for c in chunks if c.chunk_id != best])  # an orphan vector in the store
    hits = subject.search("refund widget install", 5, alpha=0.5)
    assert len(hits) == 5 and best not in {h.chunk.chunk_id for h in hits}


def test_depth_is_at_least_k(world) -> None:
    store = world[0]
    retriever(world).search("refund", 30, alpha=0.5)
    assert store.calls[-1]["candidates"] == 30 and store.calls[-1]["k"] == 60


def test_bad_native_hybrid_value(world) -> None:
    with pytest.raises(ConfigError, match="native_hybrid"):
        retriever(world, native_hybrid="always")
