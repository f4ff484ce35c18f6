"""Shared state: which database ``[state]`` names, and the Postgres catalog against the SQLite one.

The catalog tests run the same writes against ``catalog.sqlite`` and a real embedded Postgres and compare
every read (the congruence pattern the stores use), so the two catalogs cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from rag.core.catalog import Catalog, DocumentWrite, FileRecord
from rag.core.errors import ConfigError, StorageError
from rag.core.settings import load_settings
from rag.core.shared_state import PostgresCatalog, StateTarget, catalog_schema, state_target
from rag.core.types import Chunk
from rag.stores.pgvector.server import EmbeddedPostgres

PG = "postgresql://rag@db.internal:5432/rag"


@pytest.mark.parametrize(
    ("settings", "expected"),
    [
        ({}, None),  # FAISS, local
        ({"store": {"kind": "pgvector"}}, None),  # a private embedded server is not shared
        ({"store": {"kind": "pgvector", "url": PG}}, PG),  # the store's server holds the state too
        ({"store": {"kind": "pgvector", "url": PG}, "state": {"backend": "local"}}, None),
        ({"store": {"kind": "qdrant", "url": "http://q:6333"}}, None),  # no Postgres named: local
        ({"store": {"kind": "qdrant", "url": "http://q:6333"}, "state": {"url": PG}}, PG),
        ({"store": {"kind": "opensearch", "url": "http://o:9200"}, "state": {"backend": "postgres", "url": PG}}, PG),
    ],
)
def test_state_target(settings: dict, expected: str | None, tmp_path: Path) -> None:
    target = state_target(load_settings(data_dir=tmp_path, **settings))
    assert (target.url if target else None) == expected


def test_the_store_password_goes_with_the_store_url_only(tmp_path: Path) -> None:
    same = load_settings(data_dir=tmp_path, store={"kind": "pgvector", "url": PG, "api_key": "s3cret"})
    assert state_target(same) == StateTarget(PG, "s3cret")
    other = load_settings(
        data_dir=tmp_path, store={"kind": "qdrant", "url": "http://q:6333", "api_key": "qk"}, state={"url": PG}
    )
    assert state_target(other) == StateTarget(PG, None)
    assert StateTarget("postgresql://u:pw@h/db").where == "postgresql://u:***@h/db"


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"state": {"backend": "postgres"}}, "needs a database"),
        ({"state": {"url": PG}}, "keeps its vectors on this machine"),  # FAISS
        ({"store": {"kind": "qdrant"}, "state": {"url": PG}}, "keeps its vectors on this machine"),
        ({"store": {"kind": "qdrant", "url": "http://q:6333"}, "state": {"url": "mysql://x/y"}}, "postgresql://"),
    ],
)
def test_impossible_state_settings_are_refused(settings: dict, message: str, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=message):
        state_target(load_settings(data_dir=tmp_path, **settings))


def test_catalog_schema_names_are_safe_identifiers() -> None:
    assert catalog_schema("rag") == "rag_catalog_rag"
    odd = catalog_schema("Team Docs; DROP")
    assert odd.startswith("rag_catalog_team_docs__drop_") and odd.replace("_", "").isalnum()
    assert catalog_schema("a" * 80) != catalog_schema("a" * 81)


# -- the Postgres catalog, congruent with SQLite -------------------------------------------------------


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StateTarget]:
    with EmbeddedPostgres(tmp_path_factory.mktemp("state") / "postgres") as server:
        server.start()
        yield StateTarget(server.url)


def _doc(doc_id: str, n: int, path: str = "a.md") -> DocumentWrite:
    chunks = [Chunk(f"{doc_id}#{i}", doc_id, f"text {i} of {doc_id}", {"k": i, "z": "ü", "a": [1, 2]}) for i in range(n)]
    return DocumentWrite(doc_id, path, f"hash-{doc_id}-{n}", f"Title {doc_id}", chunks)


def _exercise(catalog: Catalog) -> list[object]:
    """The same writes, and every read the engine and ingest make, in order."""
    seen: list[object] = [catalog.counts(), catalog.generation, catalog.chunk_rows()]
    catalog.check_identity({"embedding_model": "m", "dimension": "4"}, "rebuild")
    catalog.journal(["x#0", "x#1"])
    with catalog.transaction() as db:
        catalog.write_documents(db, [_doc("a", 3), _doc("b", 2, "b.md")])
        catalog.record_file(db, FileRecord("a.md", "fh", 2**40, 1700000000.123456), "2026-01-01T00:00:00Z")
        catalog.unjournal(db, ["x#0"])
        catalog.bump_generation(db)
    with catalog.transaction() as db:
        catalog.write_documents(db, [_doc("a", 1)])  # replaced: fewer chunks, written last
        catalog.journal(["x#1", "x#2"], db)
        catalog.bump_generation(db)
    seen += [
        catalog.get_meta(), catalog.generation, catalog.counts(), catalog.files(), catalog.document_hashes("a.md"),
        catalog.document_info(["a", "b", "nope"]), sorted(catalog.chunk_ids_of(["a", "b"])), catalog.documents(),
        catalog.document_chunks("b"), catalog.get_chunks(["b#1", "a#0", "gone"]), catalog.chunk_rows(),
        sorted(catalog.journaled()), sorted(catalog.all_chunk_ids()),
    ]
    with catalog.transaction() as db:
        removed = catalog.delete_file(db, "a.md")
        catalog.bump_generation(db)
    seen += [sorted(removed), catalog.counts(), catalog.files(), catalog.chunk_rows()]
    with pytest.raises(RuntimeError), catalog.transaction() as db:  # noqa: PT012 - the raise inside tests the rollback
        catalog.delete_documents(db, ["b"])
        raise RuntimeError("rolled back")
    seen += [catalog.counts()]
    return seen


def test_the_postgres_catalog_reads_what_sqlite_reads(target: StateTarget, tmp_path: Path) -> None:
    local = Catalog(tmp_path / "catalog.sqlite")
    shared = PostgresCatalog(target, "congruence")
    try:
        assert _exercise(shared) == _exercise(local)
    finally:
        local.close()
        shared.close()


def test_a_reader_creates_nothing_and_sees_later_commits(target: StateTarget) -> None:
    reader = PostgresCatalog(target, "later", read_only=True)
    try:
        assert reader.counts() == {"files": 0, "documents": 0, "chunks": 0}
        assert reader.generation == 0 and reader.chunk_rows().ids == []
        with pytest.raises(StorageError, match="read-only"), reader.transaction():
            pass
        writer = PostgresCatalog(target, "later")
        with writer.transaction() as db:
            writer.write_documents(db, [_doc("d", 2)])
            writer.bump_generation(db)
        writer.close()
        assert reader.generation == 1 and reader.chunk_rows().ids == ["d#0", "d#1"]
    finally:
        reader.close()


def test_drop_forgets_one_collection_only(target: StateTarget) -> None:
    keep, gone = PostgresCatalog(target, "keep"), PostgresCatalog(target, "gone")
    try:
        for catalog in (keep, gone):
            with catalog.transaction() as db:
                catalog.write_documents(db, [_doc("d", 1)])
        gone.drop()
        assert gone.counts()["chunks"] == 0 and keep.counts()["chunks"] == 1
    finally:
        keep.close()
        gone.close()


def test_an_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    url = f"postgresql://postgres@/rag?host={tmp_path}&port=5432"
    with pytest.raises(StorageError, match=r"(?s)cannot connect to the shared state database.*state.url"):
        PostgresCatalog(StateTarget(url), "x")


def test_a_reader_reconnects_after_the_server_dropped_its_connection(target: StateTarget) -> None:
    writer = PostgresCatalog(target, "dropped")
    with writer.transaction() as db:
        writer.write_documents(db, [_doc("d", 2)])
        writer.bump_generation(db)
    reader = PostgresCatalog(target, "dropped", read_only=True)
    try:
        assert reader.generation == 1
        # What a server restart or failover does to every open session.
        writer._conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'rag catalog dropped' "
            "AND pid <> pg_backend_pid()"
        )
        assert reader.counts()["chunks"] == 2  # read again on a new connection
        assert reader.chunk_rows().ids == ["d#0", "d#1"]
    finally:
        reader.close()
        writer.close()
