"""The built-in stores run the VectorStore contract suite (:mod:`rag.testing.stores`, the mixins a plugin's
tests subclass too), plus FAISS and Qdrant specifics.

A backend's test class subclasses :class:`~rag.testing.stores.VectorStoreContract` and implements ``open_at``
(and ``drop`` if its storage outlives a temporary folder). Every backend then passes the same cases, each
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
from pathlib import Path

import numpy as np
import pytest

from rag.core.errors import StoreError
from rag.core.filters import Filter, parse_filter
from rag.stores import faiss_store
from rag.stores.base import StoredChunk, VectorStore
from rag.stores.faiss_store import FaissStore
from rag.stores.qdrant import QdrantStore
from rag.testing.stores import KeywordHybridContract, VectorStoreContract, assert_same_hits


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

    def counting(batch, k):
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
