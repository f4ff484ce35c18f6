"""Every endpoint of the REST API against real ``python -m rag.api`` processes, over HTTP.

Two servers share one data directory: ``server`` answers with the embedded llama.cpp model; ``aux`` has an
unreachable LLM, runs every upload as a job and takes at most 50 KB per upload. Sharing the directory also
exercises what the platform promises about processes: each reader sees the other's (and the CLI's)
commits without a restart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from api_server import (
    BASE_ENV,
    EMBEDDED_LLM,
    UNREACHABLE_LLM,
    ApiServer,
    sse_events,
    upload_corpus,
    upload_files,
    wait_for_job,
)

from rag.core.errors import FilterError
from rag.core.filters import parse_filter

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("endpoints")


@pytest.fixture(scope="module")
def server(start_server: Callable[..., ApiServer], root: Path, corpus_writer: Callable[[Path], Path]) -> ApiServer:
    """The main server, with the sample corpus uploaded into ``default``."""
    api = start_server(root / "data", **EMBEDDED_LLM)
    with api.client() as client:
        upload_corpus(client, "default", corpus_writer(root))
    return api


@pytest.fixture(scope="module")
def aux(start_server: Callable[..., ApiServer], server: ApiServer) -> ApiServer:
    """A second server on the same data directory: LLM unreachable, every upload a job, 50 KB limit."""
    return start_server(
        server.data_dir, **UNREACHABLE_LLM, RAG_API__JOB_THRESHOLD_KB="0", RAG_API__MAX_UPLOAD_MB="0.05"
    )


@pytest.fixture(scope="module")
def client(server: ApiServer) -> Iterator[httpx.Client]:
    with server.client() as c:
        yield c


def error_of(response: httpx.Response, status: int, kind: str | None = None) -> str:
    """Assert ``response`` is a problem response with ``status`` (and ``kind``); return its message."""
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body["error"]) == {"type", "message"}, body
    if kind is not None:
        assert body["error"]["type"] == kind, body
    assert body["error"]["message"]
    return body["error"]["message"]


# -- system -----------------------------------------------------------------------------------------


def test_openapi_is_served_and_the_api_is_versioned(client: httpx.Client) -> None:
    schema = client.get("/openapi.json").json()
    unversioned = {p for p in schema["paths"] if not p.startswith("/v1/")}
    assert unversioned == {"/healthz", "/readyz", "/metrics"}
    for path in ("/v1/collections", "/v1/collections/{name}/search", "/v1/chat/completions", "/v1/jobs/{job_id}"):
        assert path in schema["paths"]


def test_unknown_routes_and_methods_get_the_error_shape(client: httpx.Client) -> None:
    error_of(client.get("/v1/nothing-here"), 404, "not_found")
    error_of(client.put("/v1/collections"), 405, "method_not_allowed")


def test_health_and_readiness(server: ApiServer, aux: ApiServer) -> None:
    with server.client() as client:
        assert client.get("/healthz").json() == {"status": "ok"}
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["status"] == "ready" and ready.json()["llm"]["ok"] is True
        assert ready.json()["collections"]["default"] == "ok"
    with aux.client() as client:
        assert client.get("/healthz").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 503, ready.text
        assert ready.json()["status"] == "not_ready"
        assert ready.json()["llm"]["ok"] is False and "unreachable" in ready.json()["llm"]["detail"]


def test_metrics_count_requests_by_route_template(client: httpx.Client) -> None:
    client.post("/v1/collections/default/search", json={"query": "refunds"}).raise_for_status()
    client.get("/v1/collections/no-such-collection")
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'rag_http_requests_total{method="POST",route="/v1/collections/{name}/search",status="200"}' in text
    assert 'rag_http_errors_total{route="/v1/collections/{name}",status="404"}' in text
    assert 'rag_ingests_total{collection="default",outcome="succeeded"}' in text
    assert "rag_http_request_seconds_bucket" in text
    assert "no-such-collection" not in text  # route templates, not raw paths: bounded label values


# -- collections ------------------------------------------------------------------------------------


def test_collections_create_list_get_delete(client: httpx.Client) -> None:
    created = client.post("/v1/collections", json={"name": "crud", "settings": {"retrieval": {"alpha": 0.3}}})
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "crud" and body["documents"] == 0
    assert body["settings"] == {"retrieval": {"alpha": 0.3}}

    error_of(client.post("/v1/collections", json={"name": "crud"}), 409, "collection_exists")
    for bad in ("Bad Name", "UPPER", "a/b", "..", "-dash-first", "x" * 64, ""):
        error_of(client.post("/v1/collections", json={"name": bad}), 422)
    error_of(client.post("/v1/collections", json={"name": "typo", "settings": {"retrieval": {"alfa": 1}}}), 422)
    error_of(client.post("/v1/collections", json={"name": "moved", "settings": {"data_dir": "/tmp"}}), 422)
    error_of(client.post("/v1/collections", json={"settings": {}}), 422, "validation_error")

    names = [c["name"] for c in client.get("/v1/collections").json()["collections"]]
    assert names[0] == "default" and "crud" in names and "typo" not in names and "moved" not in names
    assert client.get("/v1/collections/crud").json()["settings"] == {"retrieval": {"alpha": 0.3}}

    deleted = client.delete("/v1/collections/crud")
    assert deleted.status_code == 204 and deleted.content == b""
    error_of(client.get("/v1/collections/crud"), 404, "collection_not_found")
    error_of(client.delete("/v1/collections/crud"), 404, "collection_not_found")
    error_of(client.get("/v1/collections/Not_Valid"), 422)
    assert "crud" not in [c["name"] for c in client.get("/v1/collections").json()["collections"]]


# -- documents --------------------------------------------------------------------------------------


def test_json_upload_reports_added_updated_and_unchanged(client: httpx.Client) -> None:
    client.post("/v1/collections", json={"name": "jsondocs"}).raise_for_status()
    url = "/v1/collections/jsondocs/documents"
    documents = [
        {"id": "notes/one", "text": "The lighthouse keeper logs every passing ship.", "metadata": {"lang": "en"}},
        {"id": "notes/two", "text": "Bread is baked at dawn in the harbour bakery.", "metadata": {"lang": "en"}},
    ]
    first = client.post(url, json={"documents": documents})
    assert first.status_code == 200, first.text
    assert sorted(first.json()["added"]) == ["notes/one", "notes/two"] and first.json()["chunks_added"] == 2

    again = client.post(url, json={"documents": documents}).json()
    assert sorted(again["unchanged"]) == ["notes/one", "notes/two"] and again["added"] == again["updated"] == []

    documents[1]["text"] = "Bread is baked at noon in the harbour bakery."
    changed = client.post(url, json={"documents": documents}).json()
    assert changed["updated"] == ["notes/two"] and changed["unchanged"] == ["notes/one"]

    error_of(client.post(url, json={"documents": []}), 422, "validation_error")
    error_of(client.post(url, json={"documents": [{"id": "x"}]}), 422, "validation_error")
    error_of(client.post(url, json={"documents": [{"id": "x", "text": "t", "extra": 1}]}), 422, "validation_error")
    error_of(client.post(url, content=b"{not json", headers={"content-type": "application/json"}), 422)
    error_of(client.post(url, content=b"plain", headers={"content-type": "text/plain"}), 415)
    error_of(client.post("/v1/collections/nowhere/documents", json={"documents": documents}), 404,
             "collection_not_found")


def test_multipart_upload_reports_each_file(client: httpx.Client) -> None:
    client.post("/v1/collections", json={"name": "files"}).raise_for_status()
    files = {
        "alpine.md": "# Alpine huts\n\nThe alpine hut opens in June and serves soup to climbers.\n",
        "river.txt": "River ferry\n\nThe river ferry crosses every twenty minutes until midnight.\n",
        "tool.exe": b"MZ\x00\x01binary",
        "broken.pdf": b"%PDF-1.4 this is not really a pdf",
        f"{'long' * 80}.txt": "A name longer than any file system takes.",
    }
    report = upload_files(client, "files", files, metadata={"team": "outdoor"})
    assert sorted(report["added"]) == ["alpine.md", "river.txt"], report
    failed = {item["path"]: item["reason"] for item in report["failed"]}
    assert set(failed) == {"tool.exe", "broken.pdf", f"{'long' * 80}.txt"}, report
    assert "unsupported file type .exe" in failed["tool.exe"]
    assert failed["broken.pdf"] and "longer than" in failed[f"{'long' * 80}.txt"]

    same = {k: v for k, v in files.items() if k.endswith((".md", ".txt"))}
    again = upload_files(client, "files", same, metadata={"team": "outdoor"})
    assert sorted(again["unchanged"]) == ["alpine.md", "river.txt"] and again["added"] == again["updated"] == []
    retagged = upload_files(client, "files", same, metadata={"team": "indoor"})  # same bytes, new metadata
    assert sorted(retagged["updated"]) == ["alpine.md", "river.txt"], retagged

    document = client.get("/v1/collections/files/documents/alpine.md").json()
    assert document["metadata"]["team"] == "indoor"

    url = "/v1/collections/files/documents"
    error_of(client.post(url, files=[("other", ("a.txt", b"x"))]), 422, "validation_error")
    error_of(client.post(url, files=[("files", ("a.txt", b"x"))], data={"metadata": "[1]"}), 422)
    hidden = client.post(url, files=[("files", ("../../escape.txt", b"escape")), ("files", (".hidden.txt", b"h"))])
    assert hidden.status_code == 200, hidden.text
    assert hidden.json()["added"] == ["escape.txt"]  # only the base name is kept: nothing lands outside
    assert [f["path"] for f in hidden.json()["failed"]] == [".hidden.txt"]


def test_upload_over_the_limit_is_413(aux: ApiServer) -> None:
    with aux.client() as client:
        big = "word " * 20_000  # 100 KB > 50 KB
        error_of(client.post("/v1/collections/default/documents",
                             json={"documents": [{"id": "big", "text": big}]}), 413, "payload_too_large")
        error_of(client.post("/v1/collections/default/documents", files=[("files", ("big.txt", big.encode()))]),
                 413, "payload_too_large")


def test_upload_over_the_job_threshold_runs_as_a_job(aux: ApiServer) -> None:
    with aux.client() as client:
        client.post("/v1/collections", json={"name": "jobs"}).raise_for_status()
        response = client.post("/v1/collections/jobs/documents", files=[
            ("files", ("orchard.md", b"# Orchard\n\nThe orchard grows forty kinds of apple.\n")),
            ("files", ("mill.txt", b"The old mill grinds rye flour on Saturdays.\n")),
        ])
        assert response.status_code == 202, response.text
        job = response.json()
        assert job["collection"] == "jobs" and job["status"] in ("queued", "running", "succeeded")
        assert job["files_total"] == 2
        job = wait_for_job(client, job)
        assert job["status"] == "succeeded", job
        assert sorted(job["report"]["added"]) == ["mill.txt", "orchard.md"]
        assert job["error"] is None and job["files_done"] == job["files_total"] == 2

        json_job = client.post("/v1/collections/jobs/documents",
                               json={"documents": [{"id": "j", "text": "JSON uploads run as jobs too."}]})
        assert json_job.status_code == 202, json_job.text
        json_job = wait_for_job(client, json_job.json())
        assert json_job["report"]["added"] == ["j"] and json_job["files_done"] == json_job["files_total"] == 1
        error_of(client.get("/v1/jobs/0123456789abcdef"), 404, "job_not_found")

        # A job that fails ends failed, with the error the same upload would have got inline.
        client.post("/v1/collections", json={"name": "jobs-fail", "settings": {"chunking": {"size": 5000}}})
        failing = client.post("/v1/collections/jobs-fail/documents", json={"documents": [{"id": "x", "text": "t"}]})
        assert failing.status_code == 202, failing.text
        failed = wait_for_job(client, failing.json())
        assert failed["status"] == "failed" and failed["report"] is None, failed
        assert failed["error"]["type"] == "invalid_request" and "chunking.size" in failed["error"]["message"]


def test_list_documents_paginated_and_filtered(client: httpx.Client) -> None:
    client.post("/v1/collections", json={"name": "listing"}).raise_for_status()
    documents = [
        {"id": f"dir/doc-{i}", "text": f"Document number {i} talks about topic {i}.",
         "metadata": {"team": "red" if i % 2 else "blue", "rank": i}}
        for i in range(5)
    ]
    client.post("/v1/collections/listing/documents", json={"documents": documents}).raise_for_status()
    url = "/v1/collections/listing/documents"

    page = client.get(url, params={"limit": 2}).json()
    assert page["total"] == 5 and page["offset"] == 0 and page["limit"] == 2
    assert [d["doc_id"] for d in page["documents"]] == ["dir/doc-0", "dir/doc-1"]
    rest = client.get(url, params={"offset": 2, "limit": 10}).json()
    assert [d["doc_id"] for d in rest["documents"]] == ["dir/doc-2", "dir/doc-3", "dir/doc-4"]
    assert client.get(url, params={"offset": 10}).json()["documents"] == []

    red = client.get(url, params={"filter": "team=red"}).json()
    assert red["total"] == 2 and {d["doc_id"] for d in red["documents"]} == {"dir/doc-1", "dir/doc-3"}
    both = client.get(url, params=[("filter", "team=red"), ("filter", "rank>=3")]).json()
    assert [d["doc_id"] for d in both["documents"]] == ["dir/doc-3"]
    as_json = client.get(url, params={"filter": json.dumps({"rank": {"in": [0, 4]}})}).json()
    assert [d["doc_id"] for d in as_json["documents"]] == ["dir/doc-0", "dir/doc-4"]
    assert as_json["documents"][0]["metadata"]["team"] == "blue"

    error_of(client.get(url, params={"filter": "team"}), 422, "invalid_filter")
    error_of(client.get(url, params={"limit": 0}), 422, "validation_error")
    error_of(client.get(url, params={"offset": -1}), 422, "validation_error")
    error_of(client.get("/v1/collections/nowhere/documents"), 404, "collection_not_found")


def test_get_and_delete_a_document_whose_id_has_slashes(client: httpx.Client) -> None:
    client.post("/v1/collections", json={"name": "slashes"}).raise_for_status()
    client.post("/v1/collections/slashes/documents", json={"documents": [
        {"id": "a/b/c.md", "text": "Deep ids keep their slashes."},
        {"id": "keep", "text": "This one stays."},
    ]}).raise_for_status()
    url = "/v1/collections/slashes/documents"
    document = client.get(f"{url}/a/b/c.md")
    assert document.status_code == 200, document.text
    body = document.json()
    assert body["doc_id"] == "a/b/c.md" and body["chunks"] == len(body["chunk_list"]) == 1
    assert body["chunk_list"][0]["text"] == "Deep ids keep their slashes."

    assert client.delete(f"{url}/a/b/c.md").status_code == 204
    error_of(client.get(f"{url}/a/b/c.md"), 404, "document_not_found")
    error_of(client.delete(f"{url}/a/b/c.md"), 404, "document_not_found")
    assert [d["doc_id"] for d in client.get(url).json()["documents"]] == ["keep"]
    error_of(client.get("/v1/collections/nowhere/documents/x"), 404, "collection_not_found")


# -- search and ask ---------------------------------------------------------------------------------


def test_search_returns_fused_dense_and_bm25_scores(client: httpx.Client) -> None:
    response = client.post("/v1/collections/default/search", json={"query": "how much does the team plan cost", "k": 3})
    assert response.status_code == 200, response.text
    hits = response.json()["hits"]
    assert 0 < len(hits) <= 3
    assert hits[0]["doc_id"] == "pricing.html"
    for hit in hits:
        assert isinstance(hit["score"], float) and hit["text"] and hit["chunk_id"]
        assert "dense_score" in hit and "bm25_score" in hit
    assert any(h["dense_score"] is not None for h in hits) and any(h["bm25_score"] is not None for h in hits)
    assert [h["score"] for h in hits] == sorted((h["score"] for h in hits), reverse=True)

    options = {"query": "widget", "k": 10, "alpha": 0.0, "fusion": "rrf", "max_per_doc": 1, "min_score": 0.0}
    spread = client.post("/v1/collections/default/search", json=options).json()["hits"]
    assert len({h["doc_id"] for h in spread}) == len(spread) > 1

    only = client.post("/v1/collections/default/search",
                       json={"query": "widget", "filters": {"source": "history.txt"}}).json()["hits"]
    assert only and {h["doc_id"] for h in only} == {"history.txt"}
    as_string = client.post("/v1/collections/default/search",
                            json={"query": "widget", "filters": ["source~*.md"]}).json()["hits"]
    assert as_string and all(h["doc_id"].endswith(".md") for h in as_string)


def test_search_rejects_bad_arguments(client: httpx.Client) -> None:
    url = "/v1/collections/default/search"
    bad = "page >> 2"
    with pytest.raises(FilterError) as parser:
        parse_filter(bad)
    assert error_of(client.post(url, json={"query": "x", "filters": bad}), 422, "invalid_filter") == str(parser.value)
    error_of(client.post(url, json={"query": "x", "filters": {"page": {"near": 2}}}), 422, "invalid_filter")
    error_of(client.post(url, json={"query": "x", "filters": "{broken json"}), 422, "invalid_filter")
    assert "alpha" in error_of(client.post(url, json={"query": "x", "alpha": 2}), 422, "validation_error")
    error_of(client.post(url, json={"query": "x", "k": 0}), 422, "validation_error")
    error_of(client.post(url, json={"query": "x", "fusion": "max"}), 422, "validation_error")
    error_of(client.post(url, json={"query": ""}), 422, "validation_error")
    error_of(client.post(url, json={"query": "x", "unknown": 1}), 422, "validation_error")
    error_of(client.post("/v1/collections/nowhere/search", json={"query": "x"}), 404, "collection_not_found")
    client.post("/v1/collections", json={"name": "empty"}).raise_for_status()
    error_of(client.post("/v1/collections/empty/search", json={"query": "x"}), 409, "index_empty")


def test_ask_answers_with_citations_among_the_hits(client: httpx.Client) -> None:
    question = {"question": "How much does the team plan cost?", "k": 3}
    response = client.post("/v1/collections/default/ask", json=question)
    assert response.status_code == 200, response.text
    body = response.json()
    assert isinstance(body["answer"], str) and body["answer"].strip()
    assert body["model"] and isinstance(body["warnings"], list)
    assert body["hits"] and [h["n"] for h in body["hits"]] == list(range(1, len(body["hits"]) + 1))
    chunk_ids = {h["chunk_id"]: h for h in body["hits"]}
    for citation in body["citations"]:
        assert citation["chunk_id"] in chunk_ids
        assert chunk_ids[citation["chunk_id"]]["n"] == citation["n"]
        assert chunk_ids[citation["chunk_id"]]["doc_id"] == citation["doc_id"]
    error_of(client.post("/v1/collections/default/ask", json={"question": "x", "alpha": -1}), 422)
    error_of(client.post("/v1/collections/default/ask", json={"question": "x", "filters": "a >> b"}), 422,
             "invalid_filter")
    error_of(client.post("/v1/collections/nowhere/ask", json={"question": "x"}), 404, "collection_not_found")


def test_ask_streams_sources_then_deltas_then_citations_and_done(client: httpx.Client) -> None:
    with client.stream("POST", "/v1/collections/default/ask",
                       json={"question": "When are refunds granted?", "k": 3, "stream": True}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = sse_events(response.read().decode())
    kinds = [kind for kind, _ in events]
    assert kinds[0] == "sources" and kinds[-2:] == ["citations", "done"], kinds
    assert set(kinds[1:-2]) == {"delta"}, kinds
    hits = json.loads(events[0][1])["hits"]
    assert hits and all("n" in h and "chunk_id" in h for h in hits)
    deltas = [json.loads(data)["text"] for kind, data in events if kind == "delta"]
    assert "".join(deltas).strip()
    for i, delta in enumerate(deltas):  # each delta is new text, not the answer so far
        so_far = "".join(deltas[:i])
        assert len(so_far) < 3 or not delta.startswith(so_far), deltas
    citations = json.loads(events[-2][1])["citations"]
    assert {c["chunk_id"] for c in citations} <= {h["chunk_id"] for h in hits}
    done = json.loads(events[-1][1])
    assert done["model"] and "usage" in done


def test_ask_errors_before_the_stream_are_plain_http_errors(client: httpx.Client) -> None:
    response = client.post("/v1/collections/default/ask", json={"question": "x", "stream": True, "filters": "a >> b"})
    error_of(response, 422, "invalid_filter")


def test_llm_failure_returns_502_with_the_sources(aux: ApiServer) -> None:
    with aux.client() as client:
        response = client.post("/v1/collections/default/ask", json={"question": "When are refunds granted?"})
        assert response.status_code == 502, response.text
        body = response.json()
        assert body["error"]["type"] == "llm_error" and body["error"]["message"]
        assert body["hits"] and body["hits"][0]["n"] == 1 and body["hits"][0]["text"]

        with client.stream("POST", "/v1/collections/default/ask",
                           json={"question": "When are refunds granted?", "stream": True}) as streamed:
            assert streamed.status_code == 200
            events = sse_events(streamed.read().decode())
        assert [kind for kind, _ in events] == ["sources", "error"], events
        assert json.loads(events[0][1])["hits"]
        error = json.loads(events[1][1])
        assert error["type"] == "llm_error" and error["status"] == 502 and error["message"]


def test_a_reader_sees_cli_commits_without_a_restart(client: httpx.Client, server: ApiServer, root: Path) -> None:
    query = {"query": "zeppelin hangar mooring mast", "k": 3}
    before = client.post("/v1/collections/default/search", json=query).json()["hits"]
    assert not any("zeppelin" in h["text"].lower() for h in before)
    folder = root / "more"
    folder.mkdir()
    (folder / "zeppelin.md").write_text("# Airships\n\nThe zeppelin hangar has a mooring mast on its roof.\n")
    ingest = subprocess.run(
        [sys.executable, "-m", "rag.cli", "--data-dir", str(server.data_dir), "ingest", str(folder)],
        cwd=root, env=BASE_ENV, capture_output=True, text=True, timeout=300,
    )
    assert ingest.returncode == 0, ingest.stderr
    after = client.post("/v1/collections/default/search", json=query).json()["hits"]
    assert after and "zeppelin" in after[0]["text"].lower(), after
    assert after[0]["doc_id"] == "more/zeppelin.md"


def test_cors_origins_are_configurable(tmp_path) -> None:
    from fastapi.testclient import TestClient

    from rag.api.app import create_app
    from rag.core.settings import load_settings

    allowed = "http://app.example"
    app = create_app(load_settings(data_dir=tmp_path / ".rag", api={"cors_origins": [allowed]}))
    with TestClient(app) as client:
        preflight = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "authorization"}
        ok = client.options("/v1/collections/default/search", headers={"Origin": allowed, **preflight})
        assert ok.headers.get("access-control-allow-origin") == allowed
        other = client.options("/v1/collections/default/search", headers={"Origin": "http://evil.example", **preflight})
        assert "access-control-allow-origin" not in other.headers
        mcp = {"Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": "mcp-protocol-version"}
        assert client.options("/mcp", headers={"Origin": allowed, **mcp}).status_code == 200  # a browser MCP client
    with TestClient(create_app(load_settings(data_dir=tmp_path / ".rag"))) as client:  # none by default
        assert "access-control-allow-origin" not in client.get("/healthz", headers={"Origin": allowed}).headers
