"""QdrantStore's sparse BM25 vector, keyword index and native hybrid search.

Two kinds of tests, no server needed for either:

* **Translation tests** (unit tests): the sparse vectors computed from text, the name that fingerprints
  their settings, the Query API request objects built for a hybrid query with a filter (two ``Prefetch``
  with the filter and ``limit = candidates``, fused by ``RrfQuery`` with weights), the server version
  check and the fallback it triggers. The version check talks to :class:`VersionReportingClient`, a fake
  used for fault injection only: it reports a chosen server version (or fails to) and hands every other
  call to the real local engine.
* **Real searches on Qdrant's local engine**, which supports sparse vectors with the IDF modifier,
  prefetches and weighted RRF in-process: keyword scores equal to ``bm25s``' Lucene BM25, native RRF equal
  to the local RRF at ``alpha = 0.5``, a legacy collection without the sparse vector that keeps working,
  and (``slow``: it loads the embedding model) the engine end to end, ingest to search.

The same keyword and hybrid cases run against a real server in the integration contract
(tests/stores/test_contract.py, ``RAG_QDRANT_URL``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from qdrant_client.http import models

from rag.core.analysis import KeywordAnalysis
from rag.core.errors import ConfigError, StoreError
from rag.core.filters import parse_filter
from rag.core.settings import StoreSettings
from rag.core.types import Chunk, ScoredId
from rag.retrieve.bm25 import Analyzer, BM25Index
from rag.retrieve.hybrid import HybridRetriever, rrf_fusion
from rag.retrieve.keyword import KeywordIndex
from rag.stores.base import ProvidesHybridSearch, ProvidesKeywordIndex, StoredChunk
from rag.stores.qdrant import (
    DEFAULT_AVG_LEN,
    QdrantKeywordIndex,
    QdrantStore,
    SparseBM25,
    create_qdrant_store,
    parse_version,
    term_id,
)
from rag.stores.qdrant import client as qclient
from rag.stores.qdrant import hybrid as qdrant_hybrid

TEXTS = [
    ("refunds are granted within thirty days of purchase", {"lang": "en", "team": True}),
    ("the team plan costs 45 euros a month and includes priority support", {"lang": "en", "team": True}),
    ("the basic plan costs 10 euros a month", {"lang": "en", "team": False}),
    ("our refund policy: a refund takes a week, refunds go to the original card", {"lang": "en", "team": False}),
    ("the widget needs python 3.10 and two gigabytes of free disk space", {"lang": "en", "team": False}),
    ("clear the cache folder when the widget is slow", {"lang": "de", "team": True}),
    ("a missing licence key is the most common cause of a widget that does not start", {"lang": "de"}),
    ("the company was founded in 1987 in helsinki by two engineers", {"lang": "fi", "team": False}),
    ("download the archive, unpack it and run the installer script", {"lang": "en"}),
    ("the installer asks for an admin password before it writes to system folders", {"lang": "en", "team": True}),
    ("in 2019 it released the first widget; refunds were introduced in 2020", {"lang": "en", "team": True}),
    ("the and of", {"lang": "en"}),  # no indexable term
]
QUERIES = ["refund", "widget python", "team plan refunds", "installer password admin", "helsinki 1987 widget"]


class Lookup:
    """The catalog's part in a search: chunk ids to chunks (here, the chunks of :data:`TEXTS`)."""

    def __init__(self) -> None:
        self.chunks = {f"t{i}": Chunk(f"t{i}", f"d{i}", text, meta) for i, (text, meta) in enumerate(TEXTS)}

    def get_chunks(self, ids: list[str]) -> dict[str, Chunk]:
        return {i: self.chunks[i] for i in ids if i in self.chunks}


def stored_chunks(dim: int = 8) -> list[StoredChunk]:
    rng = np.random.default_rng(3)
    return [StoredChunk(f"t{i}", rng.normal(size=dim).astype(np.float32), text, meta)
            for i, (text, meta) in enumerate(TEXTS)]


def average_length(analyzer: Analyzer) -> float:
    return float(np.mean([len(analyzer(text)) for text, _ in TEXTS]))


@pytest.fixture
def sparse_store() -> QdrantStore:
    """An in-memory collection with the sparse vector, its ``avg_len`` the corpus's true average."""
    store = QdrantStore(8, sparse=True, bm25_avg_len=average_length(Analyzer()))
    store.upsert(stored_chunks())
    yield store
    store.close()


class VersionReportingClient:
    """Fault injection only: stands in for a Qdrant server's client to report ``version`` from ``info()``
    (or to fail, when it is an exception), and passes every other call to the real local engine."""

    def __init__(self, real: Any, version: str | Exception) -> None:
        self._real, self.version, self.info_calls = real, version, 0

    def info(self) -> models.VersionInfo:
        self.info_calls += 1
        if isinstance(self.version, Exception):
            raise self.version
        return models.VersionInfo(title="qdrant - vector search engine", version=self.version)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def as_server(store: QdrantStore, version: str | Exception) -> VersionReportingClient:
    """White-box: make an in-memory store take its server code paths, with ``version`` reported."""
    fake = VersionReportingClient(store._client, version)
    store._client = fake  # type: ignore[assignment]
    store.url = "http://qdrant.invalid:6333"
    store._server_version, store._native_checked_at = None, None
    return fake


@pytest.fixture(autouse=True)
def fresh_warnings() -> None:
    """Warnings are logged once per process; each test starts with none logged."""
    qclient._warned.clear()


# -- translation: sparse vectors ----------------------------------------------------------------------


def test_term_ids_are_stable_32_bit_hashes() -> None:
    assert term_id("refund") == 842260292  # the same in every process and on every machine
    assert all(0 <= term_id(t) < 2**32 for t in ("a", "polici", "ünïcode", ""))


def test_document_vectors_hold_saturated_term_frequencies() -> None:
    encoder = SparseBM25(k1=1.2, b=0.75, avg_len=4.0)
    tokens = encoder.analyzer("Refunds: the refund policy")  # the local BM25's analyzer
    assert tokens == ["refund", "refund", "polici"]
    indices, values = encoder.document("Refunds: the refund policy")
    norm = 1.2 * (1 - 0.75 + 0.75 * 3 / 4.0)
    expected = {term_id("refund"): 2 / (2 + norm), term_id("polici"): 1 / (1 + norm)}
    assert indices == sorted(expected) and values == pytest.approx([expected[i] for i in indices])
    assert encoder.document("the and of") == ([], [])


def test_query_vectors_count_terms() -> None:
    indices, values = SparseBM25().query("refund the refunds policy")
    assert dict(zip(indices, values)) == {term_id("refund"): 2.0, term_id("polici"): 1.0}


def test_the_vector_name_fingerprints_the_bm25_settings() -> None:
    default = SparseBM25().vector_name
    assert default.startswith("bm25-") and SparseBM25(Analyzer(), 1.2, 0.75, DEFAULT_AVG_LEN).vector_name == default
    others = {SparseBM25(Analyzer(stemmer=None)).vector_name, SparseBM25(Analyzer(stopwords=None)).vector_name,
              SparseBM25(k1=1.5).vector_name, SparseBM25(b=0.5).vector_name, SparseBM25(avg_len=200).vector_name}
    assert default not in others and len(others) == 5
    with pytest.raises(ConfigError, match="k1 > 0"):
        SparseBM25(k1=0)


def test_upsert_writes_both_vectors(sparse_store: QdrantStore) -> None:
    name = sparse_store.sparse_vector_name
    point = sparse_store.client.retrieve(sparse_store.collection, [qclient.point_id("t3")], with_vectors=True)[0]
    assert set(point.vector) == {"", name}  # the unnamed dense vector and the sparse one
    indices, values = sparse_store.bm25.document(TEXTS[3][0])
    assert (point.vector[name].indices, point.vector[name].values) == (indices, pytest.approx(values))
    empty = sparse_store.client.retrieve(sparse_store.collection, [qclient.point_id("t11")], with_vectors=True)[0]
    assert empty.vector[name].indices == []  # counted as a document by the IDF, as bm25s counts it
    got = sparse_store.get_vectors(["t3"])["t3"]  # the dense vector, whatever else the point holds
    np.testing.assert_allclose(got, stored_chunks()[3].vector / np.linalg.norm(stored_chunks()[3].vector), atol=1e-6)


# -- translation: the hybrid request --------------------------------------------------------------------


def test_translation_of_a_hybrid_query_with_a_filter(sparse_store: QdrantStore) -> None:
    native = sparse_store._filters.translate(parse_filter({"lang": "en"}))
    vector = [0.5] * 8
    request = sparse_store.hybrid_request("refund policies", vector, 5, 0.3, native, 100)
    name = sparse_store.sparse_vector_name
    indices, values = sparse_store.bm25.query("refund policies")
    assert request == {
        "prefetch": [
            models.Prefetch(query=vector, filter=native, limit=100),
            models.Prefetch(query=models.SparseVector(indices=indices, values=values), using=name, filter=native,
                            limit=100),
        ],
        "query": models.RrfQuery(rrf=models.Rrf(k=121, weights=[0.3, 0.7])),  # k = 2 * rrf_k + 1
        "limit": 5,
        "with_payload": ["chunk_id"],
    }
    assert native == models.Filter(must=[models.FieldCondition(key="lang", match=models.MatchValue(value="en"))])
    assert sparse_store.hybrid_request("refund", vector, 300, 0.3, None, 100)["prefetch"][0].limit == 300


def test_translation_of_endpoints_and_termless_queries(sparse_store: QdrantStore) -> None:
    vector = [0.5] * 8
    dense_only = sparse_store.hybrid_request("refund", vector, 5, 1.0, None, 50)
    assert [p.using for p in dense_only["prefetch"]] == [None] and dense_only["query"].rrf.weights == [1.0]
    keyword_only = sparse_store.hybrid_request("refund", vector, 5, 0.0, None, 50)
    assert [p.using for p in keyword_only["prefetch"]] == [sparse_store.sparse_vector_name]
    assert keyword_only["query"].rrf.weights == [1.0]
    assert len(sparse_store.hybrid_request("the and", vector, 5, 0.5, None, 50)["prefetch"]) == 1  # dense only
    assert sparse_store.hybrid_request("the and", vector, 5, 0.0, None, 50) is None
    assert sparse_store.hybrid_search("the and", np.ones(8), 5, 0.0) == []


def test_hybrid_search_sends_the_request(sparse_store: QdrantStore, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    real = sparse_store.client.query_points

    def recording(collection: str, **kwargs: Any) -> Any:
        sent.append(kwargs)
        return real(collection, **kwargs)

    monkeypatch.setattr(sparse_store.client, "query_points", recording)
    flt = parse_filter({"team": True})
    hits = sparse_store.hybrid_search("refund", np.full(8, 2.0), 3, 0.6, flt, candidates=7)
    native = sparse_store._filters.translate(flt)
    unit = (np.full(8, 2.0) / np.linalg.norm(np.full(8, 2.0))).astype(np.float32).tolist()
    assert sent == [sparse_store.hybrid_request("refund", unit, 3, 0.6, native, 7)]
    assert 0 < len(hits) <= 3 and all(TEXTS[int(h.chunk_id[1:])][1].get("team") is True for h in hits)
    assert sparse_store.hybrid_search("refund", np.ones(8), 3, 0.5, parse_filter({"source": {"glob": "[z-a]"}})) == []
    assert len(sent) == 1  # a filter that matches nothing sends nothing


def test_translation_of_keyword_requests(sparse_store: QdrantStore) -> None:
    keyword = sparse_store.keyword_index()
    assert isinstance(keyword, QdrantKeywordIndex) and keyword.name == "qdrant-bm25" and keyword.store is sparse_store
    sparse = sparse_store.sparse_query("refund")
    native = sparse_store._filters.translate(parse_filter({"lang": "en"}))
    assert keyword.search_request(sparse, 4, native) == {
        "query": sparse, "using": sparse_store.sparse_vector_name, "limit": 4, "query_filter": native,
        "with_payload": ["chunk_id"],
    }


# -- the version check and the fallback -----------------------------------------------------------------


@pytest.mark.parametrize(("version", "reason"), [
    ("1.17.0", None), ("1.18.2-dev", None), ("2.0.0", None),
    ("1.16.3", "older than 1.17"), ("1.10.0", "older than 1.17"),
])
def test_server_version_gates_native_hybrid(sparse_store: QdrantStore, version: str, reason: str | None) -> None:
    fake = as_server(sparse_store, version)
    found = sparse_store.hybrid_search_unavailable()
    assert (found is None) if reason is None else (reason in found)
    sparse_store.hybrid_search_unavailable()
    assert fake.info_calls == 1  # asked once
    assert sparse_store.keyword_index() is not None  # the sparse keyword side needs 1.10 only


def test_old_server_falls_back_with_one_warning(sparse_store: QdrantStore, caplog: pytest.LogCaptureFixture) -> None:
    as_server(sparse_store, "1.16.0")
    caplog.set_level(logging.WARNING, logger="rag.stores.qdrant")
    retriever = HybridRetriever(sparse_store, sparse_store.keyword_index(), lambda q: np.ones(8), Lookup(),
                                native_hybrid="auto")
    for _ in range(3):
        hits = retriever.search("refund", 3, alpha=0.5)
        assert hits and all(h.dense_score is not None for h in hits)  # fused locally
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "1.16" in warnings[0] and "fusing locally" in warnings[0]
    with pytest.raises(StoreError, match="native hybrid search is unavailable"):
        sparse_store.hybrid_search("refund", np.ones(8), 3, 0.5)


def test_unreadable_version_is_asked_again_later(sparse_store: QdrantStore, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = as_server(sparse_store, ConnectionError("refused"))
    assert "cannot be read" in sparse_store.hybrid_search_unavailable()
    sparse_store.hybrid_search_unavailable()
    assert fake.info_calls == 1  # not at every search
    monkeypatch.setattr(qdrant_hybrid, "_RECHECK_SECONDS", 0.0)
    fake.version = "1.17.1"
    assert sparse_store.hybrid_search_unavailable() is None and fake.info_calls == 2


def test_a_client_without_weighted_rrf_falls_back(sparse_store: QdrantStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qdrant_hybrid, "_client_has_weighted_rrf", lambda models: False)
    assert "qdrant-client" in sparse_store.hybrid_search_unavailable()


def test_a_server_older_than_sparse_idf_creates_no_sparse_vector(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="rag.stores.qdrant")
    store = QdrantStore(4, sparse=True)
    as_server(store, "1.9.7")
    assert store._new_sparse_config() == {}
    store._adopt_sparse({})
    assert store.keyword_index() is None and "older than 1.10" in store.hybrid_search_unavailable()
    assert "older than 1.10" in caplog.text
    as_server(store, "1.10.0")
    assert list(store._new_sparse_config()) == [store.bm25.vector_name]
    store.close()


def test_parse_version() -> None:
    assert parse_version("1.17.0") == (1, 17) and parse_version("v1.9.7-rc1") == (1, 9)
    assert parse_version("dev") is None and parse_version(None) is None


# -- real searches on the local engine --------------------------------------------------------------------


def test_the_store_offers_both_capabilities(sparse_store: QdrantStore) -> None:
    assert isinstance(sparse_store, ProvidesKeywordIndex) and isinstance(sparse_store, ProvidesHybridSearch)
    assert isinstance(sparse_store.keyword_index(), KeywordIndex)
    assert sparse_store.hybrid_search_unavailable() is None  # local mode: whatever the installed client has


@pytest.mark.parametrize("query", QUERIES)
@pytest.mark.parametrize("spec", [None, {"lang": "en"}, {"team": True}])
def test_keyword_scores_equal_bm25s_lucene(sparse_store: QdrantStore, query: str, spec: dict | None) -> None:
    """With ``avg_len`` at the corpus average, the sparse dot product under Qdrant's IDF is exactly bm25s's
    Lucene BM25 (float32 apart): the same analyzer, IDF, saturation and length normalisation."""
    reference = BM25Index("lucene", 1.2, 0.75, Analyzer())
    reference.build([f"t{i}" for i in range(len(TEXTS))], [t for t, _ in TEXTS], [m for _, m in TEXTS])
    flt = parse_filter(spec) if spec else None
    ours = sparse_store.keyword_index().search(query, 20, flt)
    theirs = reference.search(query, 20, flt)
    assert [h.chunk_id for h in ours] == [h.chunk_id for h in theirs]
    np.testing.assert_allclose([h.score for h in ours], [h.score for h in theirs], rtol=1e-5)


def test_keyword_scores_of_given_ids(sparse_store: QdrantStore) -> None:
    keyword = sparse_store.keyword_index()
    found = {h.chunk_id: h.score for h in keyword.search("refund", 20)}
    scores = keyword.scores("refund", ["t0", "t1", "t11", "unknown", "t0"])
    assert scores == {"t0": pytest.approx(found["t0"]), "t1": 0.0, "t11": 0.0}
    assert keyword.scores("the and", ["t0", "unknown"]) == {"t0": 0.0}  # no query term: stored ids score 0
    assert keyword.scores("refund", []) == {}


def test_native_rrf_equals_local_rrf_at_half(sparse_store: QdrantStore) -> None:
    """At alpha = 0.5 Qdrant's weighted RRF (k = 2 * rrf_k + 1) gives every chunk local RRF's score."""
    rng = np.random.default_rng(11)
    keyword = sparse_store.keyword_index()
    for query in QUERIES:
        vector = rng.normal(size=8)
        native = sparse_store.hybrid_search(query, vector, 12, 0.5, candidates=12)
        dense = sparse_store.search(vector, 12)
        # The keyword list in the engine's own order: the index's search breaks score ties by chunk id,
        # the prefetch by point id, and RRF sees ranks.
        raw = sparse_store.client.query_points(
            sparse_store.collection, **keyword.search_request(sparse_store.sparse_query(query), 12, None))
        ranked = [ScoredId(p.payload["chunk_id"], p.score) for p in raw.points]
        local = rrf_fusion(dense, ranked, 0.5, k=60)
        assert {h.chunk_id: pytest.approx(h.score) for h in native} == {f.chunk_id: f.score for f in local}


def test_native_hybrid_through_the_retriever(sparse_store: QdrantStore) -> None:
    lookup = Lookup()
    query_vector = stored_chunks()[3].vector
    native = HybridRetriever(sparse_store, sparse_store.keyword_index(), lambda q: query_vector, lookup,
                             native_hybrid="auto")
    local = HybridRetriever(sparse_store, sparse_store.keyword_index(), lambda q: query_vector, lookup,
                            native_hybrid="off")
    flt = parse_filter({"lang": "en"})
    fused = native.search("refund policy", 4, alpha=0.5, filter=flt)
    assert fused[0].chunk.chunk_id == "t3"  # best on both sides
    assert all(h.dense_score is None and flt.matches(h.chunk.metadata) for h in fused)
    expected = sparse_store.hybrid_search("refund policy", query_vector, 100, 0.5, flt)[:4]
    assert [(h.chunk.chunk_id, h.score) for h in fused] == [(s.chunk_id, s.score) for s in expected]
    assert all(h.dense_score is not None for h in local.search("refund policy", 4, alpha=0.5, filter=flt))


def test_a_legacy_collection_keeps_working_and_a_rebuild_adds_the_vector(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rag.stores.qdrant")
    data = stored_chunks(4)
    with QdrantStore(4, path=tmp_path, sparse=False) as old:  # as a collection made before the sparse vector
        old.upsert(data[:6])
    store = QdrantStore(4, path=tmp_path, sparse=True)
    assert store.sparse_vector_name is None and store.keyword_index() is None
    assert "predates the sparse BM25 vector" in store.hybrid_search_unavailable()
    assert "rag ingest --rebuild" in caplog.text
    store.upsert(data[6:])  # dense only: the collection has nowhere to put a sparse vector
    assert store.count() == len(data) and store.search(data[7].vector, 1)[0].chunk_id == "t7"
    store.drop()
    rebuilt = QdrantStore(4, path=tmp_path, sparse=True)
    rebuilt.upsert(data)
    assert rebuilt.sparse_vector_name is not None and rebuilt.keyword_index().search("refund", 3)
    rebuilt.close()


def test_other_bm25_settings_are_never_mixed(tmp_path: Path) -> None:
    with QdrantStore(4, path=tmp_path, sparse=True) as first:
        first.upsert(stored_chunks(4)[:3])
        name = first.sparse_vector_name
    store = QdrantStore(4, path=tmp_path, sparse=True, analyzer=Analyzer(stemmer=None))
    assert store.keyword_index() is None and "other BM25 settings" in store.hybrid_search_unavailable()
    store.upsert(stored_chunks(4)[3:])  # dense only, not into the other settings' vector
    point = store.client.retrieve(store.collection, [qclient.point_id("t5")], with_vectors=True)[0]
    assert name not in (point.vector if isinstance(point.vector, dict) else {})
    store.close()


def test_local_mode_leaves_the_sparse_vector_off_by_default(tmp_path: Path) -> None:
    with QdrantStore(4, path=tmp_path) as store:
        assert store.keyword_index() is None and "sparse = true" in store.hybrid_search_unavailable()
    with QdrantStore(4, path=tmp_path, sparse=True) as again:  # an existing collection decides: still none
        assert again.keyword_index() is None
    with QdrantStore(4, sparse=True) as fresh, QdrantStore(4, sparse=False) as off:
        fresh.upsert(stored_chunks(4)[:2])
        assert fresh.keyword_index() is not None and off.keyword_index() is None


def test_the_factory_reads_store_options(tmp_path: Path) -> None:
    options = StoreSettings(kind="qdrant", options={"sparse": "true", "stemmer": "", "bm25_avg_len": 50, "rrf_k": 10})
    store = create_qdrant_store(data_dir=tmp_path, dimension=4, options=options)
    assert store.path == tmp_path / "qdrant" and store.keyword_index() is not None and store.rrf_k == 10
    assert store.bm25.avg_len == 50.0 and store.bm25.analyzer.stemmer_name is None
    store.close()
    with pytest.raises(ConfigError, match="unknown qdrant store option"):
        create_qdrant_store(data_dir=tmp_path, dimension=4, options=StoreSettings(options={"sparce": True}))
    with pytest.raises(ConfigError, match="numbers"):
        create_qdrant_store(data_dir=tmp_path, dimension=4, options=StoreSettings(options={"bm25_b": "high"}))



def test_the_sparse_vector_follows_the_shared_keyword_analysis(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """The registry's ``analysis`` (the ``[retrieval]`` settings the local BM25 index reads) configures the
    sparse vector; a deprecated ``[store.options]`` alias still overrides it, with a warning."""
    analysis = KeywordAnalysis(stemmer="", stopwords="", k1=1.5, b=0.5)
    store = create_qdrant_store(data_dir=tmp_path, dimension=4, options=StoreSettings(kind="qdrant"), analysis=analysis)
    assert store.bm25.analyzer.config() == {"stemmer": None, "stopwords": None}
    assert (store.bm25.k1, store.bm25.b) == (1.5, 0.5)
    store.close()
    caplog.set_level(logging.WARNING, logger="rag.stores.qdrant")
    options = StoreSettings(kind="qdrant", options={"bm25_k1": 2, "stemmer": "english"})
    store = create_qdrant_store(data_dir=tmp_path, dimension=4, options=options, analysis=analysis)
    assert (store.bm25.k1, store.bm25.b, store.bm25.analyzer.stemmer_name) == (2.0, 0.5, "english")
    assert "[store.options] bm25_k1 is deprecated: set retrieval.bm25_k1" in caplog.text
    store.close()
    with create_qdrant_store(data_dir=tmp_path, dimension=4, options=StoreSettings(kind="qdrant")) as default:
        assert default.bm25.vector_name == SparseBM25(Analyzer(), 1.2, 0.75).vector_name  # unchanged defaults


# -- the engine end to end, on the local engine ----------------------------------------------------------


@pytest.mark.slow
def test_engine_end_to_end_with_native_hybrid(
    make_engine, corpus_writer, tmp_path: Path
) -> None:
    """Ingest and search through RagEngine with ``store.kind = "qdrant"``, no url and the sparse vector on
    (``[store.options] sparse = true``)."""
    corpus = corpus_writer(tmp_path)  # the suite's sample documents (this folder's `corpus` is vectors)
    engine = make_engine(store={"kind": "qdrant", "options": {"sparse": True}}, retrieval={"native_hybrid": "auto"})
    engine.ingest([corpus])
    assert engine.retriever.keyword.name == "qdrant-bm25" and engine.bm25 is None
    assert not (engine.data_dir / "bm25").exists()  # the store indexes text as it writes it
    top = engine.search("refund within 30 days", 3)
    assert top[0].chunk.source == "docs/web/pricing.html"
    assert all(h.dense_score is None and h.bm25_score is None for h in top)  # fused inside Qdrant
    search_stage = engine.retrieve("refund within 30 days", 3).explain["stages"][-1]
    assert search_stage["stage"] == "search" and search_stage["fused_in"] == "store"
    installs = engine.search("widget install", 5, filter={"tags": "install"})
    assert installs and all("install" in h.chunk.metadata["tags"] for h in installs)
    assert engine.search("refund", 2, alpha=1.0)[0].dense_score is not None  # an endpoint: one retriever
    engine.close()

    local = make_engine(store={"kind": "qdrant", "options": {"sparse": True}}, retrieval={"native_hybrid": "off"})
    hits = local.search("refund within 30 days", 3)
    assert hits[0].chunk.source == "docs/web/pricing.html"
    assert all(h.dense_score is not None and h.bm25_score is not None for h in hits)  # fused here, same sides
    assert local.retrieve("refund within 30 days", 3).explain["stages"][-1]["fused_in"] == "local"


def test_shards_and_replication_factor_reach_the_new_collection(tmp_path: Path) -> None:
    """Translation test: ``[store.options] shards`` / ``replication_factor`` become ``create_collection``'s
    ``shard_number`` / ``replication_factor`` (local mode accepts and ignores them; a cluster applies them)."""
    options = StoreSettings(options={"shards": 3, "replication_factor": "2"})
    store = create_qdrant_store(data_dir=tmp_path, dimension=4, options=options)
    sent: dict = {}
    original = store.client.create_collection

    def recording(name: str, **kwargs: object) -> object:
        sent.update(kwargs)
        return original(name, **kwargs)

    store.client.create_collection = recording  # type: ignore[method-assign]
    store.collection = "fresh"
    store._ensure_collection()
    assert sent["shard_number"] == 3 and sent["replication_factor"] == 2
    store.close()
    with pytest.raises(ConfigError, match="shards must be positive"):
        create_qdrant_store(data_dir=tmp_path / "x", dimension=4, options=StoreSettings(options={"shards": 0}))
