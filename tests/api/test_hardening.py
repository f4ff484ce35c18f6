"""Issue 15: the server under hostile and unlucky conditions, one test (or more) per numbered finding.

Everything runs against real ``python -m rag.api`` processes over sockets: oversized and unauthenticated
bodies sent byte by byte while the server's resident memory is measured, ``kill -9`` in the middle of an
upload job, clients that hang up mid-answer while the embedded llama.cpp server is watched, and the
messages and metrics a client gets to see.
"""

from __future__ import annotations

import json
import os
import re
import select
import signal
import socket
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from api_server import UNREACHABLE_LLM, ApiServer, sse_events, upload_files, wait_for_job

from rag.api.keys import KeyStore
from rag.core.settings import load_settings

pytestmark = pytest.mark.slow

MIB = 1024 * 1024
RSS_BUDGET = 20 * MIB
TEXT = "Refunds are granted within 30 days of purchase. Shipping takes five days. " * 8


# -- servers ----------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def keyed(start_server: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory) -> ApiServer:
    """A server with keys (``admin``: all collections; ``reader``: read ``default``), an unreachable LLM,
    uploads capped at 8 MiB, and ``default`` holding one document."""
    data_dir = tmp_path_factory.mktemp("keyed") / "data"
    keys = KeyStore(load_settings(data_dir=data_dir).data_dir)
    admin, _ = keys.create("*", "admin", "admin")
    reader, _ = keys.create("default", "read", "reader")
    server = start_server(data_dir, **UNREACHABLE_LLM, RAG_API__MAX_UPLOAD_MB="8", RAG_API__JOB_THRESHOLD_KB="64")
    server.key, server.reader = admin, reader  # type: ignore[attr-defined]
    with server.client(admin) as client:
        upload_files(client, "default", {"refunds.txt": TEXT})
    return server


@pytest.fixture(scope="module")
def admin(keyed: ApiServer) -> httpx.Client:
    with keyed.client(keyed.key) as client:
        yield client


def error_of(response: httpx.Response, status: int, kind: str | None = None) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) >= {"error"} and set(body["error"]) == {"type", "message"}, body
    if kind is not None:
        assert body["error"]["type"] == kind, body
    return body["error"]["message"]


# -- raw HTTP, for bodies no client library sends and hang-ups -------------------------------------


def _address(server: ApiServer) -> tuple[str, int]:
    parts = urlsplit(server.url)
    return parts.hostname or "127.0.0.1", parts.port or 80


def _status_of(head: bytes) -> int | None:
    match = re.match(rb"HTTP/1\.[01] (\d{3})", head)
    return int(match.group(1)) if match else None


def send_body(server: ApiServer, path: str, size: int, *, key: str | None = None, chunked: bool = False,
              content_type: str = "application/json") -> tuple[int | None, int]:
    """POST ``size`` bytes to ``path`` 64 KiB at a time, stopping as soon as the server answers.

    Returns ``(status, bytes sent)``; the status is ``None`` if the server closed without answering.
    """
    head = [f"POST {path} HTTP/1.1", f"Host: {_address(server)[0]}", f"Content-Type: {content_type}"]
    head += [f"Authorization: Bearer {key}"] if key else []
    head += ["Transfer-Encoding: chunked"] if chunked else [f"Content-Length: {size}"]
    piece = b"[" + b"1," * (32 * 1024 - 1) + b"1"  # 64 KiB of JSON-looking bytes
    sent, answer = 0, b""
    with socket.create_connection(_address(server), timeout=60) as sock:
        sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode())
        try:
            while sent < size:
                readable, _, _ = select.select([sock], [], [], 0)
                if readable:
                    break
                data = piece[: size - sent]
                sock.sendall(f"{len(data):x}\r\n".encode() + data + b"\r\n" if chunked else data)
                sent += len(data)
            if chunked and sent >= size:
                sock.sendall(b"0\r\n\r\n")
        except OSError:
            pass  # the server closed the connection: what it answered before is still to be read
        try:
            sock.settimeout(30)
            answer = sock.recv(65536)
        except OSError:
            pass
    return _status_of(answer), sent


class Rss:
    """The server's peak resident memory across a block (the kernel's high-water mark, reset first)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def _kib(self, field: str) -> int:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(rf"{field}:\s+(\d+) kB", status).group(1))  # type: ignore[union-attr]

    def __enter__(self) -> Rss:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        self.before = self._kib("VmRSS") * 1024
        return self

    def __exit__(self, *exc: object) -> None:
        self.growth = self._kib("VmHWM") * 1024 - self.before


# -- finding 1: bodies bounded before authentication, every body capped while it streams ----------


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
def test_an_unauthenticated_100_mib_body_is_refused_before_it_is_read(keyed: ApiServer, chunked: bool) -> None:
    with Rss(keyed.process.pid) as rss:
        status, sent = send_body(keyed, "/v1/collections/default/search", 100 * MIB, chunked=chunked)
    assert status == 401
    assert sent < 10 * MIB, f"the client got to send {sent / MIB:.0f} MiB before the 401"
    assert rss.growth < RSS_BUDGET, f"the server grew by {rss.growth / MIB:.0f} MiB"


@pytest.mark.parametrize(
    ("path", "chunked"),
    [("/v1/collections/default/search", False), ("/v1/collections/default/search", True),
     ("/v1/chat/completions", True), ("/v1/collections/default/documents", True)],
    ids=["search", "search-chunked", "chat-chunked", "upload-chunked"],
)
def test_an_authenticated_100_mib_body_gets_413_as_soon_as_the_cap_is_passed(
    keyed: ApiServer, path: str, chunked: bool
) -> None:
    with Rss(keyed.process.pid) as rss:
        status, sent = send_body(keyed, path, 100 * MIB, key=keyed.key, chunked=chunked)
    assert status == 413
    # The caps are 4 MiB (api.max_json_mb) and 8 MiB (this server's api.max_upload_mb), plus what was in
    # flight when the 413 came.
    assert sent < 24 * MIB, f"the client got to send {sent / MIB:.0f} MiB before the 413"
    assert rss.growth < RSS_BUDGET, f"the server grew by {rss.growth / MIB:.0f} MiB"


def test_the_413_has_the_error_shape(admin: httpx.Client) -> None:
    message = error_of(admin.post("/v1/collections/default/search", content=b" " * (5 * MIB)), 413, "payload_too_large")
    assert "api.max_json_mb" in message


# -- finding 2: durable upload jobs --------------------------------------------------------------


def test_kill_9_in_the_middle_of_a_job_loses_no_accepted_file(
    start_server: Callable[..., ApiServer], tmp_path: Path
) -> None:
    data_dir = tmp_path / "data"
    env = {**UNREACHABLE_LLM, "RAG_API__JOB_THRESHOLD_KB": "0"}
    first = start_server(data_dir, **env)
    # Long, distinct files, so the job is still going after the first of them.
    files = {f"part{i}.txt": f"Part {i}. " + " ".join(f"word{i}x{j}" for j in range(400)) for i in range(6)}
    with first.client() as client:
        parts = [("files", (n, t.encode())) for n, t in files.items()]
        accepted = client.post("/v1/collections/default/documents", files=parts)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["id"]
        deadline = time.monotonic() + 120
        while (job := client.get(f"/v1/jobs/{job_id}").json())["files_done"] < 1:
            assert job["status"] in ("queued", "running") and time.monotonic() < deadline, job
            time.sleep(0.05)
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait()
    assert 0 < job["files_done"] < len(files), f"the job was not in the middle when killed: {job}"

    second = start_server(data_dir, **env)
    with second.client() as client:
        response = client.get(f"/v1/jobs/{job_id}")
        assert response.status_code == 200, response.text
        done = wait_for_job(client, response.json(), timeout=600)
        assert done["status"] == "succeeded", done
        listed = client.get("/v1/collections/default/documents").json()
    assert sorted(d["doc_id"] for d in listed["documents"]) == sorted(files)
    uploads = data_dir / "uploads"
    assert sorted(p.name for p in uploads.iterdir()) == sorted(files)  # no leftovers (.part, .prev)


# -- finding 4: chat caps, and upstream failures without URLs -------------------------------------


def test_chat_messages_are_capped_like_ask(admin: httpx.Client) -> None:
    big = "refunds " * (MIB // 8)  # 1 MB, under the 4 MiB body cap
    response = admin.post("/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": big}]})
    assert "20000" in error_of(response, 422, "validation_error")
    question = "refunds " * 600  # 4,800 characters: a valid message, too long a question
    response = admin.post("/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": question}]})
    assert "4000" in error_of(response, 422, "validation_error")
    history = [{"role": "user", "content": "hi"}] * 102
    error_of(admin.post("/v1/chat/completions", json={"model": "default", "messages": history}), 422, "validation_error")


def test_upstream_failures_do_not_show_the_llm_url(admin: httpx.Client) -> None:
    response = admin.post("/v1/chat/completions", json={"model": "default", "messages": [{"role": "user", "content": "refunds?"}]})
    message = error_of(response, 502, "llm_error")
    assert "127.0.0.1:9" not in message and "http" not in message, message
    answer = admin.post("/v1/collections/default/ask", json={"question": "refunds?"})
    assert "127.0.0.1:9" not in error_of(answer, 502, "llm_error")
    streamed = admin.post("/v1/collections/default/ask", json={"question": "refunds?", "stream": True})
    assert "127.0.0.1:9" not in streamed.text and "error" in [kind for kind, _ in sse_events(streamed.text)]


# -- finding 6 and 11: strict validation -----------------------------------------------------------


@pytest.mark.parametrize("name", ["gamma\n", "gamma\r\n", "gam\u202ema", "gamma\u2028", " gamma"])
def test_collection_names_are_matched_whole(admin: httpx.Client, keyed: ApiServer, name: str) -> None:
    error_of(admin.post("/v1/collections", json={"name": name}), 422)
    assert not any("\n" in p.name or "\u202e" in p.name for p in (keyed.data_dir / "collections").glob("*"))


def test_nan_strings_for_booleans_and_hidden_characters_are_refused(admin: httpx.Client, keyed: ApiServer) -> None:
    def post(path: str, raw: str) -> httpx.Response:
        return admin.post(path, content=raw.encode(), headers={"Content-Type": "application/json"})

    for raw in ('{"query": "refunds", "min_score": NaN}', '{"query": "refunds", "min_score": Infinity}',
                '{"query": "refunds", "alpha": -Infinity}', '{"query": "refunds", "filters": {"page": NaN}}',
                '{"query": "refunds", "explain": "yes"}', '{"query": "refunds", "hyde": 1}',
                '{"query": "refunds", "k": "3"}'):
        error_of(post("/v1/collections/default/search", raw), 422, "validation_error")
    error_of(post("/v1/collections/default/ask", '{"question": "refunds", "stream": "yes"}'), 422, "validation_error")
    error_of(post("/v1/chat/completions", '{"model": "default", "stream": "yes", "messages": [{"role": "user", "content": "hi"}]}'), 422)
    error_of(post("/v1/chat/completions", '{"model": "default", "temperature": NaN, "messages": [{"role": "user", "content": "hi"}]}'), 422)
    for doc_id in ("evil\u202etxt.exe", "line\nbreak", "nul\x00"):
        body = {"documents": [{"id": doc_id, "text": "hello"}]}
        error_of(admin.post("/v1/collections/default/documents", json=body), 422, "validation_error")
    error_of(post("/v1/collections/default/documents", '{"documents": [{"id": "x", "text": "t", "metadata": {"v": NaN}}]}'), 422)
    error_of(admin.get("/v1/collections/default/documents/evil%E2%80%AEtxt"), 422, "validation_error")
    report = upload_files(admin, "default", {"evil\u202etxt.exe.txt": "hello"})
    assert report["added"] == [] and "bidirectional" in report["failed"][0]["reason"]
    assert not any("\u202e" in p.name for p in (keyed.data_dir / "uploads").iterdir())


def test_the_openapi_declares_bearer_auth(admin: httpx.Client) -> None:
    schema = admin.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert {"type": "http", "scheme": "bearer"}.items() <= next(s for s in schemes.values() if s["type"] == "http").items()
    search = schema["paths"]["/v1/collections/{name}/search"]["post"]
    assert search.get("security"), search


# -- finding 7: nothing internal disclosed ---------------------------------------------------------


def test_errors_readiness_and_metrics_disclose_nothing_internal(keyed: ApiServer, admin: httpx.Client) -> None:
    data_dir = str(keyed.data_dir)
    admin.post("/v1/collections", json={"name": "hidden-empty"}).raise_for_status()
    with keyed.client(keyed.key) as client:
        upload_files(client, "hidden-empty", {"a.txt": TEXT})
        client.delete("/v1/collections/hidden-empty/documents/a.txt").raise_for_status()
        message = error_of(client.post("/v1/collections/hidden-empty/search", json={"query": "refunds"}), 409, "index_empty")
    assert data_dir not in message and str(Path(data_dir).resolve()) not in message and "/" not in message, message

    with keyed.client() as anonymous:
        ready = anonymous.get("/readyz")
        assert ready.json() == {"status": "not_ready"}, ready.text  # the LLM is unreachable
        metrics = anonymous.get("/metrics").text
    assert "rag_http_requests_total" in metrics and "hidden-empty" not in metrics and 'collection="' not in metrics
    with keyed.client(keyed.reader) as reader:  # a read key is no admin key
        assert set(reader.get("/readyz").json()) == {"status"}
        assert "hidden-empty" not in reader.get("/metrics").text
    detailed = admin.get("/readyz").json()
    assert detailed["collections"]["hidden-empty"] == "ok" and data_dir not in json.dumps(detailed)
    assert ".gguf" not in json.dumps(detailed) and "127.0.0.1:9" not in json.dumps(detailed)
    assert 'rag_ingests_total{collection="hidden-empty",outcome="succeeded"}' in admin.get("/metrics").text


# -- finding 8 and 9: upload names and files ------------------------------------------------------


def test_two_files_with_one_name_are_refused(admin: httpx.Client, keyed: ApiServer) -> None:
    parts = [("files", ("twice.txt", b"first version")), ("files", ("twice.txt", b"second version"))]
    message = error_of(admin.post("/v1/collections/default/documents", files=parts), 422, "validation_error")
    assert "twice.txt" in message
    assert admin.get("/v1/collections/default/documents/twice.txt").status_code == 404
    assert not (keyed.data_dir / "uploads" / "twice.txt").exists()


def test_uploaded_files_live_only_as_long_as_their_documents(admin: httpx.Client, keyed: ApiServer) -> None:
    uploads = keyed.data_dir / "uploads"
    report = upload_files(admin, "default", {"short-lived.txt": TEXT})
    assert report["added"] == ["short-lived.txt"] and (uploads / "short-lived.txt").is_file()
    assert admin.delete("/v1/collections/default/documents/short-lived.txt").status_code == 204
    assert not (uploads / "short-lived.txt").exists()

    report = upload_files(admin, "default", {"broken.pdf": b"%PDF-1.7 this is no PDF"})
    assert [f["path"] for f in report["failed"]] == ["broken.pdf"]
    assert not (uploads / "broken.pdf").exists()

    parts = [("files", ("refused.txt", TEXT.encode()))]
    response = admin.post("/v1/collections/default/documents", files=parts, data={"metadata": json.dumps({"doc_id": "x"})})
    error_of(response, 422)
    assert not (uploads / "refused.txt").exists()

    # A new version that fails to parse leaves the indexed version, and its file, as they were.
    first = _pdf("The first version of the kept file.")
    assert upload_files(admin, "default", {"kept.pdf": first})["added"] == ["kept.pdf"]
    report = upload_files(admin, "default", {"kept.pdf": b"%PDF-1.7 broken"})
    assert [f["path"] for f in report["failed"]] == ["kept.pdf"]
    assert (uploads / "kept.pdf").read_bytes() == first
    assert sorted(p.name for p in uploads.iterdir()) == sorted(["refunds.txt", "kept.pdf"])


def _pdf(text: str) -> bytes:
    """A one-page PDF made with reportlab."""
    from io import BytesIO

    from reportlab.pdfgen import canvas

    out = BytesIO()
    page = canvas.Canvas(out)
    page.drawString(72, 720, text)
    page.save()
    return out.getvalue()


# -- finding 10: a client hanging up during an upload ---------------------------------------------


def test_a_client_hanging_up_mid_upload_is_no_server_error(keyed: ApiServer, admin: httpx.Client) -> None:
    offset = len(keyed.log())
    head = (f"POST /v1/collections/default/documents HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {keyed.key}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {4 * MIB}\r\n\r\n")
    with socket.create_connection(_address(keyed)) as sock:
        sock.sendall(head.encode() + b'{"documents": [{"id": "gone", "text": "' + b"a" * MIB)
        time.sleep(0.5)
    time.sleep(1.0)
    metrics = admin.get("/metrics").text
    assert 'route="/v1/collections/{name}/documents",status="500"' not in metrics
    assert re.search(r'rag_http_cancelled_total\{route="/v1/collections/\{name\}/documents"\} [1-9]', metrics), metrics
    log = keyed.log()[offset:]
    assert "unhandled error" not in log and "Traceback" not in log, log
