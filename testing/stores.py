"""The contract every vector store keeps, as pytest mixins a plugin's tests subclass (Haystack's
``DocumentStoreBaseTests`` pattern).

Subclass :class:`VectorStoreContract` in a ``test_*.py`` module and implement :meth:`~VectorStoreContract.open_at`
(open, creating if needed, the store kept at a location), and :meth:`~VectorStoreContract.drop` if the storage
outlives pytest's temporary folder (a server collection)::

    import pytest
    from rag.core.settings import StoreSettings
    from rag.testing.stores import VectorStoreContract

    class TestMyStore(VectorStoreContract):
        on_disk = False  # a server: size_bytes() is 0

        def open_at(self, location, dimension):
            options = StoreSettings(kind="mystore", url="http://localhost:1234", collection=location.name)
            return create_my_store(data_dir=location, dimension=dimension, options=options)

        def drop(self, location):
            delete_my_collection(location.name)

Every case is checked against a numpy brute-force oracle with :meth:`Filter.matches
<rag.core.filters.Filter.matches>` semantics (the reference every store must reproduce): exact nearest
neighbours, each filter operator inside the search (a selective filter still returns ``k``), replace and
delete by id, persistence across close and reopen, the dimension checks that ``rag ingest --rebuild``
relies on, and ``drop``. A store that also offers the optional keyword and native hybrid capabilities
(:class:`~rag.stores.base.ProvidesKeywordIndex`, :class:`~rag.stores.base.ProvidesHybridSearch`) mixes in
:class:`KeywordHybridContract` too. The suite needs pytest and numpy; its data fixtures (``corpus``,
``make_corpus``, ``queries``, ``metadata_filter``) are defined on the classes, so no conftest is needed.
Run it with ``pytest path/to/test_my_store.py``; docs/vector-stores.md has the details.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest

from rag.core.errors import ConfigError, IndexMismatchError
from rag.core.filters import Filter, parse_filter
from rag.stores.base import StoredChunk, VectorStore

__all__ = [
    "DIM", "FILTER_SPECS", "SCORE_TOLERANCE", "Corpus", "KeywordHybridContract", "VectorStoreContract",
    "assert_same_hits", "unit_vectors",
]

SCORE_TOLERANCE = 1e-4


def assert_same_hits(got: list, expected: list[tuple[str, float]]) -> None:
    """Same ids in the same order, scores equal within :data:`SCORE_TOLERANCE`."""
    assert [hit.chunk_id for hit in got] == [cid for cid, _ in expected]
    np.testing.assert_allclose([hit.score for hit in got], [s for _, s in expected], atol=SCORE_TOLERANCE)


DIM = 32

# Every operator, list-valued fields, int/float/bool equality, missing and null fields, date ranges across
# time zones, globs (matching and not), and a conjunction.
FILTER_SPECS: list[dict[str, Any]] = [
    {"lang": "en"},
    {"lang": {"ne": "en"}},
    {"lang": {"in": ["en", "de"]}},
    {"lang": {"nin": ["en", "fr"]}},
    {"page": 3},
    {"page": {"gte": 3, "lt": 7}},
    {"page": {"gt": 8}},
    {"page": {"lte": 2}},
    {"page": {"in": [1, 2.5, 9]}},
    {"score": {"gt": 0.5}},
    {"tags": "a"},
    {"tags": {"ne": "a"}},
    {"tags": {"in": ["c", "zzz"]}},
    {"tags": {"nin": ["a", "b"]}},
    {"tags": {"glob": "b*"}},
    {"flag": True},
    {"flag": 1},
    {"modified": {"gte": "2024-06-01"}},
    {"modified": {"lt": "2024-03-15T12:00:00+02:00"}},
    {"modified": {"gt": "2024-02-01T00:00:00Z", "lte": "2024-09-30"}},
    {"source": {"glob": "docs/*"}},
    {"source": {"glob": "*.md"}},
    {"source": {"glob": "nowhere/*"}},
    {"year": {"ne": 2020}},
    {"status": {"ne": "draft"}},
    {"absent": "x"},
    {"doc_id": {"in": ["doc-1", "doc-3"]}},
    {"lang": "en", "page": {"lt": 5}, "tags": {"ne": "a"}},
]


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors (float32), reproducible from ``seed``."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _metadata(i: int, rng: random.Random) -> dict[str, Any]:
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    meta: dict[str, Any] = {
        "doc_id": f"doc-{i % 20}",
        "source": rng.choice(["docs/a.md", "docs/guide/b.md", "notes/c.txt", "x.pdf", "readme.md"]),
        "score": rng.random(),
        "flag": rng.random() < 0.5,
        # Several ISO spellings (date only, Z, offset, space separator) that must compare as instants.
        "modified": rng.choice(["2024-{:02d}-{:02d}", "2024-{:02d}-{:02d}T10:00:00Z",
                                "2024-{:02d}-{:02d}T10:00:00+02:00", "2024-{:02d}-{:02d} 08:30:00"]).format(month, day),
        # Never an empty list: Qdrant counts [] as missing, Filter.matches does not (see rag.stores.qdrant).
        "tags": rng.sample(["a", "b", "c", "d", "bb"], rng.randint(1, 3)),
    }
    if rng.random() < 0.9:
        meta["lang"] = rng.choice(["en", "de", "fr"])
    if rng.random() < 0.8:
        # Some pages are floats, so 3 must equal 3.0 as it does for Filter.matches.
        page = rng.randint(1, 9)
        meta["page"] = float(page) if rng.random() < 0.2 else page
    if rng.random() < 0.3:
        meta["year"] = rng.choice([2019, 2020, 2021])
    meta["status"] = rng.choice(["draft", "final"]) if rng.random() < 0.5 else None
    return meta


@dataclass
class Corpus:
    """Chunks with known vectors and metadata, and the exact answer to any query over them."""

    ids: list[str]
    vectors: np.ndarray
    metadata: list[dict[str, Any]]

    @classmethod
    def random(cls, n: int, dim: int = DIM, seed: int = 0) -> Corpus:
        rng = random.Random(seed)
        return cls([f"chunk-{seed}-{i}" for i in range(n)], unit_vectors(n, dim, seed),
                   [_metadata(i, rng) for i in range(n)])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def chunks(self) -> list[StoredChunk]:
        return [StoredChunk(cid, v, f"text of {cid}", m) for cid, v, m in zip(self.ids, self.vectors, self.metadata)]

    def expected(self, query: np.ndarray, k: int, flt: Filter | None = None) -> list[tuple[str, float]]:
        """Brute force: the ``k`` best (id, cosine) among chunks whose metadata ``flt`` matches."""
        query = query / np.linalg.norm(query)
        rows = [i for i, m in enumerate(self.metadata) if flt is None or flt.matches(m)]
        scores = self.vectors[rows] @ query
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.ids[rows[j]], float(scores[j])) for j in order]


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
    # The data fixtures are defined here, not in a conftest.py, so that a plugin's test module needs only
    # this class; a conftest fixture of the same name does not override them.

    @pytest.fixture(scope="class")
    def corpus(self) -> Corpus:
        """300 chunks with varied metadata; read-only, shared by the class's cases."""
        return Corpus.random(300)

    @pytest.fixture(scope="class")
    def make_corpus(self) -> Callable[..., Corpus]:
        """``make_corpus(n, dim=DIM, seed=0)``: a fresh random corpus (cases may edit its metadata)."""
        return Corpus.random

    @pytest.fixture(scope="class")
    def queries(self) -> np.ndarray:
        """A few query vectors unrelated to the corpus."""
        return unit_vectors(4, DIM, seed=99)

    @pytest.fixture(params=FILTER_SPECS, ids=[str(spec) for spec in FILTER_SPECS])
    def metadata_filter(self, request: pytest.FixtureRequest) -> Filter:
        """Each filter of :data:`FILTER_SPECS`, parsed."""
        return parse_filter(request.param)

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
    def filled(self, tmp_path_factory: pytest.TempPathFactory, corpus: Corpus) -> Iterator[VectorStore]:
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

    TEXTS: ClassVar[dict[str, tuple[str, list[float], dict[str, Any]]]] = {
        "a": ("refund: refunds for teams", [1.0, 0.0], {"team": True}),  # best on both sides for "refund"
        "b": ("the widget needs python", [0.0, 1.0], {"team": False}),
        "c": ("refunds are granted within thirty days", [0.6, 0.8], {"team": True}),
        "d": ("a refund for the widget, which needs python and a licence key", [0.8, 0.6], {"team": False}),
        "e": ("the the and of", [-1.0, 0.0], {"team": True}),  # no indexable term
    }

    @pytest.fixture(scope="class")
    def texts(self, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
        """A store holding :attr:`TEXTS` (2-dimensional vectors), flushed; the cases only read it."""
        location = tmp_path_factory.mktemp("texts") / "store"
        store = self.open_scratch(location, 2)  # type: ignore[attr-defined]
        store.upsert([StoredChunk(cid, np.array(vec), text, meta) for cid, (text, vec, meta) in self.TEXTS.items()])
        store.flush()
        yield store
        store.close()
        self.drop(location)  # type: ignore[attr-defined]

    def test_keyword_search_stems_and_filters(self, texts: Any) -> None:
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

    def test_keyword_scores_of_any_chunk(self, texts: Any) -> None:
        keyword = texts.keyword_index()
        found = {h.chunk_id: h.score for h in keyword.search("refund", 10)}
        scores = keyword.scores("refund", ["a", "b", "e", "unknown"])
        assert scores.keys() == {"a", "b", "e"}  # unknown ids are left out
        assert scores["a"] == pytest.approx(found["a"], rel=1e-5) and scores["b"] == scores["e"] == 0.0
        assert keyword.scores("refund", []) == {}

    def test_hybrid_search_endpoints_filter_and_order(self, texts: Any) -> None:
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
