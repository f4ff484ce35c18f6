"""Congruence (qdrant-client's ``congruence_tests`` style): every backend that runs here returns exact FAISS's
top k, within the backend's ANN tolerance.

The reference is :class:`FaissStore` flat, itself checked against the numpy brute force with
:meth:`Filter.matches` semantics. Each backend is loaded with the same data and asked the same calls:

==============  ==========================================  =================================================
backend         how it searches                             tolerance against exact FAISS
==============  ==========================================  =================================================
FAISS flat      exact                                       same ids, order and scores (1e-4) as brute force
Qdrant local    exact (qdrant-client's numpy local mode)    the same, at 300 and at 5,000 vectors
FAISS HNSW      graph; exact when a filter allows at most   exact for those filters; with the graph forced
                16,384 chunks                               (also under filters) at 5,000 vectors: k hits,
                                                            each allowed and with its exact score, mean
                                                            recall@10 >= 0.9
pgvector        exact scan up to 10,000 candidates,         exact path: same ids, order and scores; graph
                HNSW graph (iterative scan) above           path: recall@10 >= 0.9 at 300 and 5,000 vectors
                                                            (tests/stores/test_pgvector.py, real embedded
                                                            Postgres)
==============  ==========================================  =================================================

The ANN cases use 5,000 random 32-dimensional unit vectors: with no cluster structure they are a hard
case for a graph (real embeddings do better; benchmarks/bench_backends.py measures both on real text).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.core.filters import Filter, parse_filter
from rag.stores import faiss_store
from rag.stores.base import VectorStore
from rag.stores.faiss_store import FaissStore
from rag.stores.qdrant import QdrantStore

SCORE_TOLERANCE = 1e-4
ANN_SIZE = 5000
ANN_QUERIES = 12
K = 10
# Mean recall@10 against exact FAISS that each backend must reach on the ANN corpus, per filter.
MIN_RECALL = {"faiss-hnsw": 0.9, "qdrant-local": 1.0}
ANN_FILTERS = {"none": None, "one in three": {"bucket": 1}, "one in fifty": {"rare": True}}


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, corpus) -> Iterator[dict[str, VectorStore]]:
    root: Path = tmp_path_factory.mktemp("congruence")
    stores: dict[str, VectorStore] = {
        "faiss-flat": FaissStore(root / "faiss", corpus.dim, index="flat"),
        # Local mode in memory: the same engine as on disk, without an fsync per point (persistence is
        # covered by the contract tests).
        "qdrant-local": QdrantStore(corpus.dim),
        # Every filter below allows fewer than 16,384 chunks, so HNSW answers them exactly.
        "faiss-hnsw": FaissStore(root / "hnsw", corpus.dim, index="hnsw"),
    }
    for store in stores.values():
        store.upsert(corpus.chunks)
        store.delete(corpus.ids[::50])  # deletes must agree too (tombstones in the HNSW graph)
        store.flush()
    yield stores
    for store in stores.values():
        store.close()


@pytest.mark.parametrize("k", [3, 1000])
def test_same_results_as_brute_force(engines, corpus, queries: np.ndarray, metadata_filter: Filter, k: int) -> None:
    deleted = set(corpus.ids[::50])
    for query in queries:
        expected = [(cid, s) for cid, s in corpus.expected(query, len(corpus.ids), metadata_filter)
                    if cid not in deleted][:k]
        for name, store in engines.items():
            hits = store.search(query, k, metadata_filter)
            assert [h.chunk_id for h in hits] == [cid for cid, _ in expected], name
            np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=SCORE_TOLERANCE)


def test_same_stored_state(engines, corpus) -> None:
    reference = engines["faiss-flat"]
    some = corpus.ids[1:40:3]
    ours = reference.get_vectors(some)
    for name, store in engines.items():
        assert store.ids() == reference.ids(), name
        assert store.count() == len(corpus.ids) - len(corpus.ids[::50]), name
        theirs = store.get_vectors(some)
        assert ours.keys() == theirs.keys(), name
        for cid in ours:
            np.testing.assert_allclose(ours[cid], theirs[cid], atol=1e-6)


# -- approximate search at scale: exact FAISS's top k within each backend's tolerance ----------------


@pytest.fixture(scope="module")
def ann_corpus(make_corpus):
    data = make_corpus(ANN_SIZE, seed=31)
    for i, meta in enumerate(data.metadata):
        meta["bucket"] = i % 3
        meta["rare"] = i % 50 == 0
    return data


@pytest.fixture(scope="module")
def ann_stores(tmp_path_factory: pytest.TempPathFactory, ann_corpus) -> Iterator[dict[str, VectorStore]]:
    root = tmp_path_factory.mktemp("ann")
    stores: dict[str, VectorStore] = {
        "faiss-flat": FaissStore(root / "flat", ann_corpus.dim, index="flat"),
        "faiss-hnsw": FaissStore(root / "hnsw", ann_corpus.dim, index="hnsw"),  # shipped hnsw_m and ef_search
        "qdrant-local": QdrantStore(ann_corpus.dim),
    }
    for store in stores.values():
        store.upsert(ann_corpus.chunks)
        store.flush()
    yield stores
    for store in stores.values():
        store.close()


@pytest.fixture
def graph_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """FAISS HNSW walks the graph (with its ID selector) even for filters that allow few chunks."""
    monkeypatch.setattr(faiss_store, "_EXACT_MAX_HNSW", 0)


@pytest.mark.parametrize("flt", list(ANN_FILTERS), ids=list(ANN_FILTERS))
@pytest.mark.parametrize("backend", list(MIN_RECALL))
def test_top_k_within_ann_tolerance_of_exact_faiss(
    ann_stores: dict[str, VectorStore], ann_corpus, graph_only: None, backend: str, flt: str
) -> None:
    """k hits, each allowed by the filter and scored exactly, best first, and mean recall@10 against
    exact FAISS of at least the backend's :data:`MIN_RECALL`."""
    exact, store = ann_stores["faiss-flat"], ann_stores[backend]
    spec = ANN_FILTERS[flt]
    metadata_filter = parse_filter(spec) if spec else None
    by_id = dict(zip(ann_corpus.ids, range(len(ann_corpus.ids))))
    recalls = []
    for query in -ann_corpus.vectors[:ANN_QUERIES]:  # not stored vectors: no trivial nearest neighbour
        expected = exact.search(query, K, metadata_filter)
        hits = store.search(query, K, metadata_filter)
        assert len(hits) == len(expected) == K
        rows = [by_id[h.chunk_id] for h in hits]
        assert metadata_filter is None or all(metadata_filter.matches(ann_corpus.metadata[i]) for i in rows)
        np.testing.assert_allclose([h.score for h in hits], ann_corpus.vectors[rows] @ query, atol=SCORE_TOLERANCE)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        recalls.append(len({h.chunk_id for h in hits} & {h.chunk_id for h in expected}) / K)
    assert np.mean(recalls) >= MIN_RECALL[backend], recalls


def test_exact_reference_equals_brute_force_at_scale(ann_stores: dict[str, VectorStore], ann_corpus) -> None:
    """The reference itself: FAISS flat at 5,000 vectors is the numpy brute force."""
    for spec in ANN_FILTERS.values():
        metadata_filter: Filter | None = parse_filter(spec) if spec else None
        for query in -ann_corpus.vectors[:3]:
            expected = ann_corpus.expected(query, K, metadata_filter)
            hits = ann_stores["faiss-flat"].search(query, K, metadata_filter)
            assert [h.chunk_id for h in hits] == [cid for cid, _ in expected]

