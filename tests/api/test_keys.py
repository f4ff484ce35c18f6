"""Collection isolation with API keys, adversarially, against a real server process.

Collection ``bravo`` (and ``default``) hold a unique marker; the keys under test grant only ``alpha``.
Whatever the request (other collections by name, path tricks, document ids, filters, chat models, job
ids), the marker must never appear in a response to those keys.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from api_server import UNREACHABLE_LLM, ApiServer, upload_files, wait_for_job

from rag.api.keys import KeyStore

pytestmark = pytest.mark.slow

MARKER = "QUOKKA-7781-CLASSIFIED"


@dataclass
class Keys:
    read_a: str
    write_a: str
    admin_a: str
    admin_all: str
    revoked_a: str
    bravo_job: str


@pytest.fixture(scope="module")
def server(start_server: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory) -> ApiServer:
    # An unreachable LLM: authorised questions answer 502 at once, which is all these tests need.
    # A 1 KB job threshold: the small uploads below run inline, the marker file of bravo as a job.
    return start_server(tmp_path_factory.mktemp("keys") / "data", **UNREACHABLE_LLM, RAG_API__JOB_THRESHOLD_KB="1")


@pytest.fixture(scope="module")
def keys(server: ApiServer) -> Keys:
    """Collections filled while the server is open, then keys (from then on every request needs one)."""
    with server.client() as client:
        for name in ("alpha", "bravo"):
            client.post("/v1/collections", json={"name": name}).raise_for_status()
        shared = [{"id": "shared/readme", "text": "The alpha team meets on Mondays to plan the garden.",
                   "metadata": {"team": "alpha"}},
                  {"id": "alpha/notes", "text": "Alpha notes: compost the leaves in autumn.",
                   "metadata": {"team": "alpha"}}]
        client.post("/v1/collections/alpha/documents", json={"documents": shared}).raise_for_status()
        secret = [{"id": "shared/readme", "text": f"{MARKER}: the bravo team meets on Mondays to plan the garden.",
                   "metadata": {"team": "bravo", "secret": MARKER}},
                  {"id": "bravo/plans", "text": f"Bravo plans {MARKER} for the garden.", "metadata": {"team": "bravo"}}]
        client.post("/v1/collections/bravo/documents", json={"documents": secret}).raise_for_status()
        upload_files(client, "default", {"root.md": f"# Root\n\nThe default collection knows {MARKER} too.\n"})
        big = f"# Big\n\n{MARKER} garden plans. " + "More garden plans for Mondays. " * 60
        job = client.post("/v1/collections/bravo/documents", files=[("files", ("big.md", big.encode()))])
        assert job.status_code == 202, job.text
        assert wait_for_job(client, job.json())["status"] == "succeeded"
    store = KeyStore(server.data_dir)
    revoked, record = store.create("alpha", "read", "revoked")
    store.revoke(record.id)
    return Keys(
        read_a=store.create("alpha", "read", "reader")[0],
        write_a=store.create("alpha", "write", "writer")[0],
        admin_a=store.create("alpha", "admin", "alpha admin")[0],
        admin_all=store.create("*", "admin", "root")[0],
        revoked_a=revoked,
        bravo_job=job.json()["id"],
    )


@pytest.fixture(scope="module")
def reader(server: ApiServer, keys: Keys) -> Iterator[httpx.Client]:
    with server.client(keys.read_a) as client:
        yield client


def assert_no_leak(response: httpx.Response | tuple[int, str], *allowed: int) -> None:
    status, text = (response.status_code, response.text) if isinstance(response, httpx.Response) else response
    assert MARKER not in text, (status, text)
    assert status < 500 or status in (502, 504), (status, text)  # 502/504: the LLM, which is unreachable
    if allowed:
        assert status in allowed, (status, text)


def raw_request(
    server: ApiServer, method: str, path: str, key: str, body: dict[str, Any] | None = None
) -> tuple[int, str]:
    """Send ``path`` byte for byte (httpx would normalise ``..`` segments away before sending)."""
    url = urlsplit(server.url)
    conn = http.client.HTTPConnection(url.hostname, url.port, timeout=60)
    try:
        headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
        conn.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = conn.getresponse()
        return response.status, response.read().decode(errors="replace")
    finally:
        conn.close()


# -- authentication ---------------------------------------------------------------------------------


def test_missing_unknown_and_revoked_keys_are_401(server: ApiServer, keys: Keys) -> None:
    requests = [("GET", "/v1/collections", None), ("GET", "/v1/models", None),
                ("POST", "/v1/collections/alpha/search", {"query": "garden"}),
                ("POST", "/v1/chat/completions", {"model": "alpha", "messages": [{"role": "user", "content": "hi"}]}),
                ("GET", f"/v1/jobs/{keys.bravo_job}", None)]
    presented: list[dict[str, str]] = [
        {}, {"Authorization": "Bearer"}, {"Authorization": f"Basic {keys.read_a}"},
        {"Authorization": "Bearer rag_00000000_wrong"}, {"X-API-Key": "not-a-key"},
        {"Authorization": f"Bearer {keys.read_a}x"}, {"X-API-Key": keys.revoked_a},
        {"Authorization": f"Bearer {keys.revoked_a}"},
    ]
    with httpx.Client(base_url=server.url, timeout=60) as client:
        for headers in presented:
            for method, path, body in requests:
                response = client.request(method, path, json=body, headers=headers)
                assert response.status_code == 401, (headers, path, response.text)
                assert response.json()["error"]["type"] == "unauthorized"
                assert response.headers["www-authenticate"] == "Bearer"
                assert_no_leak(response)
        assert client.get("/healthz").status_code == 200  # liveness stays open for probes


def test_both_header_styles_work(server: ApiServer, keys: Keys) -> None:
    for header in ("bearer", "x-api-key"):
        with server.client(keys.read_a, header=header) as client:
            response = client.post("/v1/collections/alpha/search", json={"query": "garden"})
            assert response.status_code == 200, response.text
            assert response.json()["hits"]
            assert_no_leak(response)
    with httpx.Client(base_url=server.url, headers={"Authorization": f"bearer {keys.read_a}"}) as client:
        assert client.get("/v1/collections/alpha").status_code == 200  # the scheme is case-insensitive


# -- scope and role ---------------------------------------------------------------------------------


def test_a_read_key_sees_only_its_collection(reader: httpx.Client) -> None:
    assert [c["name"] for c in reader.get("/v1/collections").json()["collections"]] == ["alpha"]
    assert [m["id"] for m in reader.get("/v1/models").json()["data"]] == ["alpha"]
    hits = reader.post("/v1/collections/alpha/search", json={"query": "team meets on Mondays"}).json()["hits"]
    assert hits and {h["metadata"]["team"] for h in hits} == {"alpha"}
    assert reader.get("/v1/collections/alpha/documents/shared/readme").json()["metadata"]["team"] == "alpha"
    asked = reader.post("/v1/collections/alpha/ask", json={"question": "When does the team meet?"})
    assert asked.status_code == 502 and asked.json()["hits"]  # authorised; only the LLM is missing
    assert_no_leak(asked)


@pytest.mark.parametrize("collection", ["bravo", "default", "no-such-collection"])
def test_a_read_key_is_403_on_any_other_collection(reader: httpx.Client, keys: Keys, collection: str) -> None:
    base = f"/v1/collections/{collection}"
    question = [{"role": "user", "content": "When does the team meet?"}]
    calls = [
        ("GET", base, None), ("DELETE", base, None),
        ("POST", f"{base}/search", {"query": "garden"}),
        ("POST", f"{base}/ask", {"question": "garden"}),
        ("POST", f"{base}/ask", {"question": "garden", "stream": True}),
        ("GET", f"{base}/documents", None),
        ("GET", f"{base}/documents/shared/readme", None),
        ("DELETE", f"{base}/documents/shared/readme", None),
        ("POST", f"{base}/documents", {"documents": [{"id": "x", "text": "overwrite"}]}),
        ("POST", "/v1/chat/completions", {"model": collection, "messages": question}),
        ("POST", "/v1/chat/completions", {"model": collection, "messages": question, "stream": True}),
    ]
    for method, path, body in calls:
        response = reader.request(method, path, json=body)
        assert response.status_code == 403, (method, path, response.text)
        assert response.json()["error"]["type"] == "forbidden"
        assert_no_leak(response)
    upload = reader.post(f"{base}/documents", files=[("files", ("x.txt", b"overwrite"))])
    assert upload.status_code == 403, upload.text


def test_jobs_of_other_collections_are_forbidden(server: ApiServer, keys: Keys, reader: httpx.Client) -> None:
    response = reader.get(f"/v1/jobs/{keys.bravo_job}")
    assert response.status_code == 403, response.text
    assert_no_leak(response)
    with server.client(keys.admin_all) as admin:
        assert admin.get(f"/v1/jobs/{keys.bravo_job}").json()["report"]["added"] == ["big.md"]


def test_roles_read_write_admin(server: ApiServer, keys: Keys, reader: httpx.Client) -> None:
    documents = {"documents": [{"id": "written", "text": "Written by the writer key."}]}
    assert reader.post("/v1/collections/alpha/documents", json=documents).status_code == 403
    assert reader.post("/v1/collections/alpha/documents", files=[("files", ("a.txt", b"a"))]).status_code == 403
    assert reader.delete("/v1/collections/alpha/documents/alpha/notes").status_code == 403
    assert reader.delete("/v1/collections/alpha").status_code == 403
    assert reader.post("/v1/collections", json={"name": "mine"}).status_code == 403

    with server.client(keys.write_a) as writer:
        assert writer.post("/v1/collections/alpha/documents", json=documents).json()["added"] == ["written"]
        assert writer.delete("/v1/collections/alpha/documents/written").status_code == 204
        assert writer.delete("/v1/collections/alpha").status_code == 403  # deleting a collection is admin's
        assert writer.post("/v1/collections", json={"name": "mine"}).status_code == 403
        assert writer.post("/v1/collections/bravo/documents", json=documents).status_code == 403

    with server.client(keys.admin_a) as alpha_admin:
        created = alpha_admin.post("/v1/collections", json={"name": "mine"})
        assert created.status_code == 403, created.text  # creating collections needs an admin key for '*'
        assert alpha_admin.delete("/v1/collections/bravo").status_code == 403

    with server.client(keys.admin_all) as root:
        assert root.post("/v1/collections", json={"name": "scratch"}).status_code == 201
        names = [c["name"] for c in root.get("/v1/collections").json()["collections"]]
        assert names == ["default", "alpha", "bravo", "scratch"]
        scratch_admin = KeyStore(server.data_dir).create("scratch", "admin")[0]
        with server.client(scratch_admin) as owner:
            assert owner.delete("/v1/collections/scratch").status_code == 204
        assert root.get("/v1/collections/scratch").status_code == 404
        assert root.get("/v1/collections/bravo/documents/shared/readme").json()["metadata"]["secret"] == MARKER


def test_a_key_revoked_while_the_server_runs_stops_working(server: ApiServer) -> None:
    store = KeyStore(server.data_dir)
    key, record = store.create("alpha", "read", "short-lived")
    with server.client(key) as client:
        assert client.get("/v1/collections/alpha").status_code == 200
        store.revoke(record.id)
        assert client.get("/v1/collections/alpha").status_code == 401


# -- tricks -----------------------------------------------------------------------------------------

TRICK_PATHS = [
    "/v1/collections/alpha/documents/../../bravo/documents/shared/readme",
    "/v1/collections/alpha/documents/..%2F..%2Fbravo%2Fdocuments%2Fshared%2Freadme",
    "/v1/collections/alpha/documents/%2e%2e/%2e%2e/bravo/documents/shared/readme",
    "/v1/collections/alpha/documents/shared/readme/../../../../bravo/documents/shared/readme",
    "/v1/collections/alpha/documents/..%5C..%5Cbravo%5Cdocuments%5Cshared%5Creadme",
    "/v1/collections/alpha/documents/../../../collections/bravo/catalog.sqlite",
    "/v1/collections/alpha/documents/%2e%2e%2f%2e%2e%2fcatalog.sqlite",
    "/v1/collections/alpha/documents//shared/readme",
    "/v1/collections/alpha/documents/root.md",
    "/v1/collections/alpha%2F..%2Fbravo/documents/shared/readme",
    "/v1/collections/alpha/../bravo/documents/shared/readme",
    "/v1/collections/..%2Fbravo/documents",
    "/v1/collections/../collections/bravo",
    "/v1/collections/%62ravo/documents/shared/readme",
    "/v1/collections/BRAVO/documents/shared/readme",
    "/v1/collections/Bravo",
    "/v1/collections/bravo%00/documents",
    "/v1/collections/bravo%20/documents",
    "/v1/collections/..",
    "/v1/collections/.",
    "/v1/collections/alpha/documents?collection=bravo",
    "/v1/collections/alpha/documents?filter=team%3Dbravo",
    "/v1/collections/alpha/documents?filter=%7B%22secret%22%3A%20%7B%22glob%22%3A%20%22%2A%22%7D%7D",
    "/v1/collections/alpha/documents/../../../../../../etc/passwd",
]


@pytest.mark.parametrize("path", TRICK_PATHS)
def test_path_tricks_never_reach_another_collection(server: ApiServer, keys: Keys, path: str) -> None:
    for key in (keys.read_a, keys.write_a):
        assert_no_leak(raw_request(server, "GET", path, key))
    assert_no_leak(raw_request(server, "DELETE", path, keys.write_a))
    with server.client(keys.admin_all) as root:  # nothing was deleted either
        assert root.get("/v1/collections/bravo/documents", params={"limit": 10}).json()["total"] == 3


@pytest.mark.parametrize("name", ["bravo", "Bravo", "BRAVO", "../bravo", "alpha/../bravo", "alpha/../../bravo",
                                  "%62ravo", "bravo/", "*", "", "default", "alpha%2F..%2Fbravo", ".."])
def test_collection_names_in_bodies_and_paths_never_reach_bravo(server: ApiServer, keys: Keys, name: str) -> None:
    question = [{"role": "user", "content": "When does the team meet?"}]
    with server.client(keys.read_a) as reader:
        assert_no_leak(reader.post("/v1/chat/completions", json={"model": name, "messages": question}), 403, 422)
    for method, path, body in [("POST", f"/v1/collections/{name}/search", {"query": "garden"}),
                               ("POST", f"/v1/collections/{name}/ask", {"question": "garden", "stream": True}),
                               ("GET", f"/v1/collections/{name}/documents", None),
                               ("GET", f"/v1/collections/{name}", None)]:
        assert_no_leak(raw_request(server, method, path, keys.read_a, body))


FILTERS: list[Any] = [
    {"team": "bravo"}, {"secret": MARKER}, {"secret": {"glob": "*"}}, {"collection": "bravo"},
    {"store.collection": "rag_bravo"}, {"doc_id": "shared/readme"}, {"source": {"glob": "*"}},
    {"data_dir": {"glob": "*"}}, "collection=bravo", ["team!=alpha"], "source~../*", "source~*bravo*",
    {"team": {"in": ["alpha", "bravo"]}}, {"doc_id": {"glob": "*"}},
]


@pytest.mark.parametrize("filters", FILTERS, ids=str)
def test_filters_only_narrow_the_granted_collection(reader: httpx.Client, filters: Any) -> None:
    search = reader.post("/v1/collections/alpha/search", json={"query": "team meets on Mondays", "filters": filters})
    assert_no_leak(search, 200)
    assert all(h["metadata"]["team"] == "alpha" for h in search.json()["hits"])
    asked = reader.post("/v1/collections/alpha/ask", json={"question": "garden", "filters": filters, "stream": True})
    assert_no_leak(asked, 200, 409)
    listed = reader.get("/v1/collections/alpha/documents",
                        params={"filter": filters if isinstance(filters, (str, list)) else json.dumps(filters)})
    assert_no_leak(listed, 200)
    assert all(d["metadata"].get("team") == "alpha" for d in listed.json()["documents"])


def test_document_ids_never_leave_the_collection(reader: httpx.Client) -> None:
    for doc_id in ("shared/readme", "bravo/plans", "big.md", "root.md", "../bravo/shared/readme", "%2e%2e/bravo"):
        response = reader.get(f"/v1/collections/alpha/documents/{doc_id}")
        assert_no_leak(response, 200, 404)
    assert reader.get("/v1/collections/alpha/documents/bravo/plans").status_code == 404
