"""Congruence (qdrant-client's ``congruence_tests`` style): the same data and calls on two engines agree.

FaissStore (flat, exact) and QdrantStore (local mode) are loaded with the same random corpus and asked
the same filtered queries; both must return the same ids in the same order with the same scores, and
both must equal the numpy brute force with :meth:`Filter.matches` semantics.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.core.filters import Filter
from rag.stores.faiss_store import FaissStore
from rag.stores.qdrant_store import QdrantStore

SCORE_TOLERANCE = 1e-4


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, corpus) -> Iterator[tuple[FaissStore, QdrantStore]]:
    root: Path = tmp_path_factory.mktemp("congruence")
    faiss = FaissStore(root / "faiss", corpus.dim, index="flat")
    # Local mode in memory: the same engine as on disk, without an fsync per point (persistence is covered
    # by the contract tests).
    qdrant = QdrantStore(corpus.dim)
    for store in (faiss, qdrant):
        store.upsert(corpus.chunks)
        store.delete(corpus.ids[::50])  # deletes must agree too
        store.flush()
    yield faiss, qdrant
    faiss.close()
    qdrant.close()


@pytest.mark.parametrize("k", [3, 1000])
def test_same_results_as_brute_force(engines, corpus, queries: np.ndarray, metadata_filter: Filter, k: int) -> None:
    faiss, qdrant = engines
    deleted = set(corpus.ids[::50])
    for query in queries:
        expected = [(cid, s) for cid, s in corpus.expected(query, len(corpus.ids), metadata_filter)
                    if cid not in deleted][:k]
        for hits in (faiss.search(query, k, metadata_filter), qdrant.search(query, k, metadata_filter)):
            assert [h.chunk_id for h in hits] == [cid for cid, _ in expected]
            np.testing.assert_allclose([h.score for h in hits], [s for _, s in expected], atol=SCORE_TOLERANCE)


def test_same_stored_state(engines, corpus) -> None:
    faiss, qdrant = engines
    assert faiss.ids() == qdrant.ids() and faiss.count() == qdrant.count() == len(corpus.ids) - len(corpus.ids[::50])
    some = corpus.ids[1:40:3]
    ours, theirs = faiss.get_vectors(some), qdrant.get_vectors(some)
    assert ours.keys() == theirs.keys()
    for cid in ours:
        np.testing.assert_allclose(ours[cid], theirs[cid], atol=1e-6)
