"""The VectorStore contract, as a reusable test-suite mixin (Haystack's ``DocumentStoreBaseTests`` style).

A backend's test class subclasses :class:`VectorStoreContract` and implements :meth:`open_at` (and
:meth:`drop` if its storage outlives a temporary folder). Every backend then passes the same cases, each
checked against a numpy brute-force oracle with :meth:`Filter.matches` semantics.
"""

from __future__ import annotations

import gc
import hashlib
import os
import signal
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.core.errors import ConfigError, IndexMismatchError, StoreError
from rag.core.filters import Filter, parse_filter
from rag.stores import faiss_store
from rag.stores.base import StoredChunk, VectorStore
from rag.stores.faiss_store import FaissStore
from rag.stores.qdrant_store import QdrantStore

SCORE_TOLERANCE = 1e-4


def assert_same_hits(got: list, expected: list[tuple[str, float]]) -> None:
    """Same ids in the same order, scores equal within :data:`SCORE_TOLERANCE`."""
    assert [hit.chunk_id for hit in got] == [cid for cid, _ in expected]
    np.testing.assert_allclose([hit.score for hit in got], [s for _, s in expected], atol=SCORE_TOLERANCE)


class VectorStoreContract:
    """Cases every :class:`VectorStore` must pass. Subclasses implement :meth:`open_at`."""

    #: Whether the store reports a non-zero size on disk.
    on_disk = True

    def open_at(self, location: Path, dimension: int) -> VectorStore:
        """Open (creating if needed) the store kept at ``location`` (a folder, or a name derived from it)."""
        raise NotImplementedError

    def open_scratch(self, location: Path, dimension: int) -> VectorStore:
        """A store for cases that load much data but never reopen it; by default :meth:`open_at`."""
        return self.open_at(location, dimension)

    def drop(self, location: Path) -> None:
        """Remove storage that outlives the temporary folder (a server collection); nothing by default."""

    # -- fixtures ------------------------------------------------------------------------------------

    @pytest.fixture
    def location(self, tmp_path: Path) -> Iterator[Path]:
        yield tmp_path / "store"
        self.drop(tmp_path / "store")

    @pytest.fixture
    def reopen(self, location: Path) -> Iterator[Callable[..., VectorStore]]:
        """``reopen(dimension=DIM)``: a new store object on the same storage; closed at teardown."""
        opened: list[VectorStore] = []

        def _open(dimension: int = 32) -> VectorStore:
            opened.append(self.open_at(location, dimension))
            return opened[-1]

        yield _open
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, reopen: Callable[..., VectorStore]) -> VectorStore:
        """An empty store."""
        return reopen()

    @pytest.fixture
    def scratch(self, location: Path) -> Iterator[VectorStore]:
        """An empty store for a case that loads much data and never reopens it."""
        store = self.open_scratch(location, 32)
        yield store
        store.close()

    @pytest.fixture(scope="class")
    def filled(self, tmp_path_factory: pytest.TempPathFactory, corpus) -> Iterator[VectorStore]:
        """A store holding the shared corpus, flushed; read-only cases share it."""
        location = tmp_path_factory.mktemp("filled") / "store"
        store = self.open_scratch(location, corpus.dim)
        store.upsert(corpus.chunks)
        store.flush()
        yield store
        store.close()
        self.drop(location)

    # -- cases ---------------------------------------------------------------------------------------

    def test_empty_store_search(self, store: VectorStore, queries: np.ndarray) -> None:
        assert store.search(queries[0], 5) == []
        assert store.search(queries[0], 5, parse_filter({"lang": "en"})) == []
        assert store.count() == 0 and store.ids() == set()

    def test_search_returns_exact_nearest_neighbours(self, filled: VectorStore, corpus, queries) -> None:
        for query in queries:
            assert_same_hits(filled.search(query, 10), corpus.expected(query, 10))

    def test_search_of_a_stored_vector_finds_itself(self, filled: VectorStore, corpus) -> None:
        hits = filled.search(corpus.vectors[7] * 3.0, 1)  # scale must not matter: cosine
        assert hits[0].chunk_id == corpus.ids[7] and hits[0].score == pytest.approx(1.0, abs=SCORE_TOLERANCE)

    def test_k_larger_than_the_store(self, store: VectorStore, make_corpus) -> None:
        small = make_corpus(5, seed=3)
        store.upsert(small.chunks)
        assert_same_hits(store.search(small.vectors[0], 50), small.expected(small.vectors[0], 50))

    def test_filter_is_applied_inside_the_search(
        self, filled: VectorStore, corpus, queries: np.ndarray, metadata_filter: Filter
    ) -> None:
        for query in queries[:2]:
            assert_same_hits(filled.search(query, 10, metadata_filter), corpus.expected(query, 10, metadata_filter))

    def test_selective_filter_still_returns_k(self, scratch: VectorStore, make_corpus) -> None:
        data = make_corpus(10_000, seed=5)
        rare = set(range(0, 10_000, 667))  # 15 chunks
        for i, meta in enumerate(data.metadata):
            meta["group"] = "rare" if i in rare else "common"
        scratch.upsert(data.chunks)
        flt = parse_filter({"group": "rare"})
        query = data.vectors[1]  # a "common" chunk: the unfiltered top 10 holds no rare one
        hits = scratch.search(query, 10, flt)
        assert len(hits) == 10
        assert {h.chunk_id for h in hits} <= {data.ids[i] for i in rare}
        assert_same_hits(hits, data.expected(query, 10, flt))

    def test_upsert_same_id_replaces(self, store: VectorStore, make_corpus) -> None:
        data = make_corpus(20, seed=1)
        store.upsert(data.chunks)
        replacement = -data.vectors[4]
        store.upsert([StoredChunk(data.ids[4], replacement, "new text", {"lang": "xx"})])
        assert store.count() == 20
        np.testing.assert_allclose(store.get_vectors([data.ids[4]])[data.ids[4]], replacement, atol=1e-6)
        assert store.search(replacement, 1)[0].chunk_id == data.ids[4]
        assert [h.chunk_id for h in store.search(replacement, 5, parse_filter({"lang": "xx"}))] == [data.ids[4]]

    def test_repeated_id_in_one_upsert_keeps_the_last(self, store: VectorStore, make_corpus) -> None:
        data = make_corpus(2, seed=2)
        store.upsert([StoredChunk("same", data.vectors[0], "a", {}), StoredChunk("same", data.vectors[1], "b", {})])
        assert store.count() == 1
        np.testing.assert_allclose(store.get_vectors(["same"])["same"], data.vectors[1], atol=1e-6)

    def test_delete(self, store: VectorStore, make_corpus) -> None:
        data = make_corpus(30, seed=4)
        store.upsert(data.chunks)
        gone = data.ids[:10]
        store.delete(gone)
        assert store.count() == 20 and store.ids() == set(data.ids[10:])
        assert store.get_vectors(gone) == {}
        hits = store.search(data.vectors[0], 30)
        assert len(hits) == 20 and not {h.chunk_id for h in hits} & set(gone)

    def test_delete_unknown_ids_is_ignored(self, store: VectorStore, make_corpus) -> None:
        data = make_corpus(3, seed=6)
        store.upsert(data.chunks)
        store.delete(["never-stored", data.ids[0], data.ids[0]])
        store.delete([])
        assert store.ids() == set(data.ids[1:])

    def test_persists_across_close_and_reopen(self, store: VectorStore, reopen, make_corpus, queries) -> None:
        data = make_corpus(50, seed=7)
        store.upsert(data.chunks)
        store.delete([data.ids[0]])
        store.flush()
        store.close()
        again = reopen()
        assert again.ids() == set(data.ids[1:])
        data.ids, data.vectors, data.metadata = data.ids[1:], data.vectors[1:], data.metadata[1:]
        flt = parse_filter({"lang": "en"})
        assert_same_hits(again.search(queries[0], 5, flt), data.expected(queries[0], 5, flt))

    def test_get_vectors(self, filled: VectorStore, corpus) -> None:
        wanted = [corpus.ids[3], corpus.ids[42], "unknown"]
        got = filled.get_vectors(wanted)
        assert set(got) == {corpus.ids[3], corpus.ids[42]}
        np.testing.assert_allclose(got[corpus.ids[42]], corpus.vectors[42], atol=1e-6)
        assert filled.get_vectors([]) == {}

    def test_ids_and_count(self, filled: VectorStore, corpus) -> None:
        assert filled.ids() == set(corpus.ids) and filled.count() == len(corpus.ids)

    def test_size_bytes(self, store: VectorStore, make_corpus) -> None:
        store.upsert(make_corpus(10, seed=9).chunks)
        store.flush()
        assert (store.size_bytes() > 0) if self.on_disk else (store.size_bytes() == 0)

    def test_dimension_mismatch_raises(self, store: VectorStore, reopen, make_corpus) -> None:
        store.upsert(make_corpus(3, seed=8).chunks)
        store.close()
        with pytest.raises(IndexMismatchError, match="rag ingest --rebuild"):
            reopen(dimension=64)

    def test_vector_of_wrong_dimension_raises(self, store: VectorStore) -> None:
        with pytest.raises(IndexMismatchError):
            store.search(np.ones(7, dtype=np.float32), 3)
        with pytest.raises(IndexMismatchError):
            store.upsert([StoredChunk("x", np.ones(7, dtype=np.float32), "", {})])
        assert store.count() == 0

    def test_k_must_be_positive(self, store: VectorStore, queries) -> None:
        with pytest.raises(ValueError, match="k must be positive"):
            store.search(queries[0], 0)

    def test_drop_removes_everything_so_another_dimension_can_follow(self, store: VectorStore, reopen, make_corpus) -> None:
        store.upsert(make_corpus(5, seed=11).chunks)
        store.flush()
        store.drop()
        fresh = reopen(dimension=64)  # what --rebuild does after a model change
        assert fresh.count() == 0 and fresh.ids() == set()


class KeywordHybridContract:
    """Cases for a store that also ranks chunk text (``keyword_index()``) and fuses natively
    (``hybrid_search``): OpenSearch and Qdrant servers, and Qdrant's local engine with its sparse vector.

    Mixed into a :class:`VectorStoreContract` subclass, whose :meth:`~VectorStoreContract.open_scratch` and
    :meth:`~VectorStoreContract.drop` it uses. The engines fuse differently (OpenSearch min-max and a weighted
    mean, Qdrant weighted RRF), so the cases check what both guarantee: stemming, the filter inside both
    sides, each side alone at the ``alpha`` endpoints, and a chunk best on both sides ranked first.
    """

    TEXTS = {
        "a": ("refund: refunds for teams", [1.0, 0.0], {"team": True}),  # best on both sides for "refund"
        "b": ("the widget needs python", [0.0, 1.0], {"team": False}),
        "c": ("refunds are granted within thirty days", [0.6, 0.8], {"team": True}),
        "d": ("a refund for the widget, which needs python and a licence key", [0.8, 0.6], {"team": False}),
        "e": ("the the and of", [-1.0, 0.0], {"team": True}),  # no indexable term
    }

    @pytest.fixture(scope="class")
    def texts(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[VectorStore]:
        """A store holding :attr:`TEXTS` (2-dimensional vectors), flushed; the cases only read it."""
        location = tmp_path_factory.mktemp("texts") / "store"
        store = self.open_scratch(location, 2)  # type: ignore[attr-defined]
        store.upsert([StoredChunk(cid, np.array(vec), text, meta) for cid, (text, vec, meta) in self.TEXTS.items()])
        store.flush()
        yield store
        store.close()
        self.drop(location)  # type: ignore[attr-defined]

    def test_keyword_search_stems_and_filters(self, texts) -> None:  # noqa: ANN001
        keyword = texts.keyword_index()
        assert keyword is not None and keyword.store is texts  # the store's own: the engine may fuse natively
        found = keyword.search("refund", 10)
        assert {h.chunk_id for h in found} == {"a", "c", "d"} and all(h.score > 0 for h in found)  # stemmed
        assert [h.score for h in found] == sorted((h.score for h in found), reverse=True)
        team = parse_filter({"team": True})
        in_team = [h.chunk_id for h in found if h.chunk_id != "d"]
        assert [h.chunk_id for h in keyword.search("refund", 10, team)] == in_team
        assert keyword.search("the and", 10) == []  # stop words only
        with pytest.raises(ValueError, match="k must be positive"):
            keyword.search("refund", 0)

    def test_keyword_scores_of_any_chunk(self, texts) -> None:  # noqa: ANN001
        keyword = texts.keyword_index()
        found = {h.chunk_id: h.score for h in keyword.search("refund", 10)}
        scores = keyword.scores("refund", ["a", "b", "e", "unknown"])
        assert scores.keys() == {"a", "b", "e"}  # unknown ids are left out
        assert scores["a"] == pytest.approx(found["a"], rel=1e-5) and scores["b"] == scores["e"] == 0.0
        assert keyword.scores("refund", []) == {}

    def test_hybrid_search_endpoints_filter_and_order(self, texts) -> None:  # noqa: ANN001
        assert texts.hybrid_search_unavailable() is None
        query, vector = "refund", np.array([1.0, 0.0])
        dense_best = texts.search(vector, 1)[0].chunk_id
        keyword_best = texts.keyword_index().search(query, 1)[0].chunk_id
        assert texts.hybrid_search(query, vector, 1, 1.0)[0].chunk_id == dense_best == "a"
        assert texts.hybrid_search(query, vector, 1, 0.0)[0].chunk_id == keyword_best
        fused = texts.hybrid_search(query, vector, 5, 0.5)
        assert fused[0].chunk_id == "a" == keyword_best  # first on both sides, first whatever the fusion
        assert [h.score for h in fused] == sorted((h.score for h in fused), reverse=True)
        team = parse_filter({"team": True})
        for alpha in (0.0, 0.3, 0.5, 1.0):
            hits = texts.hybrid_search(query, vector, 5, alpha, team)
            assert hits and {h.chunk_id for h in hits} <= {"a", "c", "e"}  # the filter holds on both sides
        assert texts.hybrid_search(query, vector, 5, 0.5, parse_filter({"team": "nobody"})) == []
        assert len(texts.hybrid_search(query, vector, 2, 0.5, candidates=10)) == 2
        with pytest.raises(ValueError, match="k must be positive"):
            texts.hybrid_search(query, vector, 0, 0.5)
        with pytest.raises(ConfigError, match="alpha"):
            texts.hybrid_search(query, vector, 3, 1.5)


class TestFaissFlat(VectorStoreContract):
    def open_at(self, location: Path, dimension: int) -> VectorStore:
        return FaissStore(location, dimension, index="flat")


class TestFaissHnsw(VectorStoreContract):
    def open_at(self, location: Path, dimension: int) -> VectorStore:
        return FaissStore(location, dimension, index="hnsw", hnsw_m=16, ef_search=64)


class TestQdrantLocal(VectorStoreContract):
    def open_at(self, location: Path, dimension: int) -> VectorStore:
        return QdrantStore(dimension, path=location)

    def open_scratch(self, location: Path, dimension: int) -> VectorStore:
        # The same local engine without its on-disk log, which commits and fsyncs every point on its own
        # (~1.5 ms each, several times that on a busy disk): 10,000 points would take 15 s or more.
        return QdrantStore(dimension)


class TestQdrantLocalSparse(KeywordHybridContract):
    """The keyword and hybrid cases on Qdrant's local engine with the sparse BM25 vector (``sparse=True``)."""

    def open_scratch(self, location: Path, dimension: int) -> VectorStore:
        return QdrantStore(dimension, sparse=True)

    def drop(self, location: Path) -> None:
        """In memory: nothing outlives the store."""


_RUN = uuid.uuid4().hex[:8]


@pytest.mark.integration
@pytest.mark.skipif(not os.environ.get("RAG_QDRANT_URL"), reason="set RAG_QDRANT_URL to run against a Qdrant server")
class TestQdrantServer(VectorStoreContract, KeywordHybridContract):
    on_disk = False

    @staticmethod
    def _collection(location: Path) -> str:
        # Unique per test storage and per run, so parallel or aborted runs never share a collection.
        return f"rag_test_{_RUN}_{hashlib.sha1(str(location).encode()).hexdigest()[:10]}"

    def open_at(self, location: Path, dimension: int) -> VectorStore:
        return QdrantStore(
            dimension,
            url=os.environ["RAG_QDRANT_URL"],
            api_key=os.environ.get("RAG_QDRANT_API_KEY"),
            collection=self._collection(location),
        )

    def drop(self, location: Path) -> None:
        from qdrant_client import QdrantClient

        client = QdrantClient(url=os.environ["RAG_QDRANT_URL"], api_key=os.environ.get("RAG_QDRANT_API_KEY"))
        try:
            client.delete_collection(self._collection(location))
        finally:
            client.close()


# -- FaissStore specifics: durability, the HNSW cache and tombstones, the selector code paths --------------


@pytest.mark.parametrize("index", ["flat", "hnsw"])
def test_faiss_read_only_opens_write_nothing(tmp_path: Path, index: str, make_corpus) -> None:
    corpus = make_corpus(40, seed=12)
    location = tmp_path / "store"
    missing = FaissStore(location, 32, index=index, read_only=True)
    assert missing.count() == 0 and not location.exists()  # no index yet: empty, and nothing created
    missing.close()
    with FaissStore(location, 32, index=index) as writer:
        writer.upsert(corpus.chunks)
        writer.flush()
    for cache in location.glob("hnsw-*"):
        cache.unlink()
    before = {p.name: p.stat().st_mtime_ns for p in location.iterdir() if not p.name.endswith(("-wal", "-shm"))}
    reader = FaissStore(location, 32, index=index, read_only=True)
    assert reader.search(corpus.chunks[0].vector, 1)[0].chunk_id == corpus.chunks[0].chunk_id
    with pytest.raises(StoreError, match="read-only"):
        reader.upsert(corpus.chunks[:1])
    reader.close()
    after = {p.name: p.stat().st_mtime_ns for p in location.iterdir() if not p.name.endswith(("-wal", "-shm"))}
    assert after == before  # no HNSW cache, no schema, no generation bump


@pytest.mark.parametrize("index", ["flat", "hnsw"])
class TestFaissDurability:
    def test_unflushed_writes_are_invisible_to_a_fresh_open(self, tmp_path: Path, index: str, make_corpus) -> None:
        data = make_corpus(40, seed=11)
        first = FaissStore(tmp_path, data.dim, index=index)
        first.upsert(data.chunks[:30])
        first.flush()
        first.upsert(data.chunks[30:])
        first.delete(data.ids[:5])  # not flushed: as if the process died here
        fresh = FaissStore(tmp_path, data.dim, index=index)
        assert fresh.ids() == set(data.ids[:30])
        assert fresh.search(data.vectors[35], 1)[0].chunk_id != data.ids[35]
        fresh.close()
        del first  # its connection closes without a commit, rolling the pending writes back
        gc.collect()
        assert FaissStore(tmp_path, data.dim, index=index).ids() == set(data.ids[:30])

    def test_process_killed_mid_write_leaves_the_flushed_state(self, tmp_path: Path, index: str) -> None:
        script = textwrap.dedent(
            """
            import sys
            import numpy as np
            from pathlib import Path
            from rag.stores.base import StoredChunk
            from rag.stores.faiss_store import FaissStore

            store = FaissStore(Path(sys.argv[1]), 8, index=sys.argv[2])
            rng = np.random.default_rng(0)
            chunk = lambda i: StoredChunk(f"c{i}", rng.standard_normal(8), "text", {"i": i})
            store.upsert([chunk(i) for i in range(50)])
            store.flush()
            i = 50
            while True:  # write and delete without ever flushing, until killed
                store.upsert([chunk(j) for j in range(i, i + 10)])
                store.delete([f"c{i - 50}"])
                i += 10
                if i == 300:
                    print("writing", flush=True)
            """
        )
        proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path), index], stdout=subprocess.PIPE, text=True)
        try:
            assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=30)
        store = FaissStore(tmp_path, 8, index=index)
        assert store.ids() == {f"c{i}" for i in range(50)}
        assert len(store.search(np.ones(8, dtype=np.float32), 100)) == 50
        store.close()


class TestFaissHnswSpecifics:
    def test_graph_cache_is_reused_and_rebuilt_when_stale(self, tmp_path: Path, make_corpus, caplog) -> None:
        data = make_corpus(60, seed=12)
        with FaissStore(tmp_path, data.dim, index="hnsw") as store:
            store.upsert(data.chunks[:40])
        assert [p.name for p in tmp_path.glob("hnsw-*.npz")] == ["hnsw-1.npz"]
        caplog.set_level("INFO", logger="rag.stores.faiss_store")
        reopened = FaissStore(tmp_path, data.dim, index="hnsw")
        assert "building" not in caplog.text  # adopted the cached graph
        reopened.upsert(data.chunks[40:])
        reopened.flush()  # generation 2 is durable, but the process "dies" before close writes its graph
        caplog.clear()
        store = FaissStore(tmp_path, data.dim, index="hnsw")
        assert "building the hnsw index over 60" in caplog.text
        assert_same_hits(store.search(data.vectors[50], 5), data.expected(data.vectors[50], 5))
        assert [p.name for p in tmp_path.glob("hnsw-*.npz")] == ["hnsw-2.npz"]
        store.close()

    def test_cache_from_other_settings_is_not_used(self, tmp_path: Path, make_corpus, caplog) -> None:
        data = make_corpus(30, seed=13)
        with FaissStore(tmp_path, data.dim, index="hnsw", hnsw_m=8) as store:
            store.upsert(data.chunks)
        caplog.set_level("INFO", logger="rag.stores.faiss_store")
        with FaissStore(tmp_path, data.dim, index="hnsw", hnsw_m=16) as store:
            assert "does not match" in caplog.text
            assert_same_hits(store.search(data.vectors[3], 5), data.expected(data.vectors[3], 5))

    def test_tombstones_are_excluded_and_compacted(self, tmp_path: Path, make_corpus) -> None:
        data = make_corpus(100, seed=14)
        store = FaissStore(tmp_path, data.dim, index="hnsw")
        store.upsert(data.chunks)
        store.flush()
        store.delete(data.ids[:10])  # 10% tombstones: kept, excluded by the selector
        store.upsert([StoredChunk(data.ids[10], -data.vectors[10], "", {})])
        store.flush()
        assert store.search(data.vectors[0], 100)[0].chunk_id != data.ids[0]
        assert {h.chunk_id for h in store.search(data.vectors[0], 100)} == set(data.ids[10:])
        store.delete(data.ids[10:25])  # now over 20%: the flush rebuilds the graph without them
        store.flush()
        # White-box: the graph holds live nodes only after compaction.
        assert len(store._index._labels) == store.count() == 75
        live = data.ids[25:], data.vectors[25:], data.metadata[25:]
        data.ids, data.vectors, data.metadata = live
        store.close()
        with FaissStore(tmp_path, data.dim, index="hnsw") as store:
            assert_same_hits(store.search(data.vectors[0], 10), data.expected(data.vectors[0], 10))


@pytest.mark.parametrize(("index", "threshold"), [("flat", "_EXACT_MAX_FLAT"), ("hnsw", "_EXACT_MAX_HNSW")])
def test_faiss_selector_path_equals_brute_force(
    tmp_path: Path, monkeypatch, corpus, queries, metadata_filter: Filter, index: str, threshold: str
) -> None:
    """With exact search over small allowed sets disabled, FAISS's IDSelector path must agree too."""
    monkeypatch.setattr(faiss_store, threshold, 0)
    with FaissStore(tmp_path, corpus.dim, index=index) as store:
        store.upsert(corpus.chunks)
        store.delete(corpus.ids[:5])  # leaves tombstones in the HNSW graph
        rest = corpus.ids[5:], corpus.vectors[5:], corpus.metadata[5:]
        expected = type(corpus)(*rest).expected(queries[0], 10, metadata_filter)
        assert_same_hits(store.search(queries[0], 10, metadata_filter), expected)


class TestQdrantSpecifics:
    def test_glob_expansion_from_facets_equals_scrolling(self, corpus) -> None:
        with QdrantStore(corpus.dim) as store:
            store.upsert(corpus.chunks)
            scrolled = store._distinct_strings("tags")
            store.url = "http://server"  # white-box: take the server branch (facet API) on the local engine
            assert store._distinct_strings("tags") == scrolled == {"a", "b", "c", "d", "bb"}

    def test_reserved_metadata_keys_are_refused(self, tmp_path: Path) -> None:
        with QdrantStore(4, path=tmp_path) as store, pytest.raises(StoreError, match="reserved key"):
            store.upsert([StoredChunk("x", np.ones(4), "t", {"text": "clash"})])

    def test_empty_list_counts_as_missing(self) -> None:
        """A documented divergence from Filter.matches: Qdrant treats [] like a missing field."""
        flt = parse_filter({"tags": {"ne": "a"}})
        assert flt.matches({"tags": []})
        with QdrantStore(4) as store:  # in memory
            store.upsert([StoredChunk("x", np.ones(4), "t", {"tags": []})])
            assert store.search(np.ones(4), 1, flt) == []


def test_concurrent_read_only_searches_share_scans_and_stay_exact(tmp_path: Path, make_corpus) -> None:
    import threading
    import time

    corpus = make_corpus(500, seed=13)
    with FaissStore(tmp_path / "store", 32) as writer:
        writer.upsert(corpus.chunks)
        writer.flush()
    reader = FaissStore(tmp_path / "store", 32, read_only=True)
    queries = [c.vector for c in corpus.chunks[:64]]
    expected = [reader.search(q, 7) for q in queries]  # one at a time: one scan each
    scans: list[int] = []
    inner = reader._index._search_many

    def counting(batch, k):  # noqa: ANN001, ANN202
        scans.append(len(batch))
        time.sleep(0.005)  # a scan as slow as a large index's, so that queries queue behind it
        return inner(batch, k)

    reader._index.batcher._run = counting
    results: dict[int, list] = {}

    def worker(offset: int) -> None:
        for i in range(offset, len(queries), 8):
            results[i] = reader.search(queries[i], 7 if i % 2 else 3)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert [results[i] for i in range(len(queries))] == [e if i % 2 else e[:3] for i, e in enumerate(expected)]
    assert sum(scans) == len(queries) and len(scans) < len(queries)  # some scans answered several queries
    reader.close()
