"""Issue 15, findings 3 and 5, with the embedded llama.cpp server of a real ``python -m rag.api`` process.

One llama.cpp process serves every collection, and starting it holds up no search (finding 5); a client
that hangs up stops its answer, so the single llama.cpp slot is free again within seconds (finding 3).
llama.cpp runs one request at a time (``n_parallel = 1``): a tiny request sent straight to it returns
promptly only if no abandoned answer is still generating there.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from api_server import ApiServer, upload_files

pytestmark = pytest.mark.slow

TEXT = "Refunds are granted within 30 days of purchase. Shipping takes five days. Returns need a receipt. " * 6
# Long answers, so an abandoned one would keep llama.cpp busy for a long time; one thread (see api_server).
# llama.cpp's ``ignore_eos`` makes every answer run to max_tokens: a short answer that ended before the
# client hung up would be complete, not cancelled. So the tests never wait for a whole answer: they read
# its first piece (``first_delta``) and hang up. The repetition stop is off: it would end a looping answer
# early, and the answer that is abandoned must still be running. The answerability gate is off: the essay
# question scores as not covered by the one-paragraph document, and its instant answer is complete at once.
LONG_ANSWERS = {"RAG_GENERATION__MODE": "llm", "RAG_LLM__MAX_TOKENS": "1500", "RAG_LLM__THREADS": "1",
                "RAG_LLM__STRUCTURED": "false", "RAG_LLM__TEMPERATURE": "1.0",
                "RAG_LLM__EXTRA_BODY": '{"ignore_eos": true}', "RAG_LLM__REPEAT_STOP_WORDS": "0",
                "RAG_RETRIEVAL__ANSWERABLE_THRESHOLD": "0"}
QUESTION = "Write a very long, detailed essay about every rule for refunds, shipping and returns."
PROBE_SECONDS = 10.0


@pytest.fixture(scope="module")
def server(start_server: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory) -> ApiServer:
    """An embedded-LLM server with the same document in ``default`` and ``second``; llama.cpp not started."""
    api = start_server(tmp_path_factory.mktemp("llm") / "data", **LONG_ANSWERS)
    with api.client() as client:
        client.post("/v1/collections", json={"name": "second"}).raise_for_status()
        for name in ("default", "second"):
            upload_files(client, name, {"policy.txt": TEXT})
            client.post(f"/v1/collections/{name}/search", json={"query": "refunds"}).raise_for_status()
    return api


def llama_servers(parent: int) -> list[str]:
    """The base URLs of the llama.cpp children of process ``parent``."""
    urls = []
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = int(re.search(r"PPid:\s+(\d+)", status.read_text()).group(1))  # type: ignore[union-attr]
            command = (status.parent / "cmdline").read_bytes().split(b"\0")
        except (OSError, AttributeError):
            continue
        if ppid == parent and b"rag.generate.llamacpp_server" in command:
            urls.append(f"http://127.0.0.1:{command[command.index(b'--port') + 1].decode()}")
    return urls


def probe_seconds(llama: str) -> float:
    """Seconds llama.cpp takes to answer a one-token request (it waits while its slot is busy)."""
    started = time.monotonic()
    response = httpx.post(f"{llama}/v1/chat/completions", timeout=300,
                          json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1})
    assert response.status_code == 200, response.text
    return time.monotonic() - started


def first_delta(client: httpx.Client, name: str, question: str) -> None:
    """Ask ``name`` with a streamed answer, read up to its first piece of text, then hang up."""
    with client.stream("POST", f"/v1/collections/{name}/ask", json={"question": question, "stream": True}) as response:
        response.raise_for_status()
        for line in response.iter_lines():
            if line.startswith("event: delta"):
                return
    raise AssertionError(f"the answer on {name!r} streamed no text")


def cancelled_asks(client: httpx.Client) -> int:
    """How many ``/ask`` requests the server counted as cancelled by their client, once the count is steady.

    A request is counted when the server has stopped its work, a moment after the client left: two equal
    readings half a second apart say no earlier hang-up is still on its way to the count.
    """
    def count() -> int:
        metrics = client.get("/metrics").text
        found = re.search(r'rag_http_cancelled_total\{route="/v1/collections/\{name\}/ask"\} (\d+)', metrics)
        return int(float(found.group(1))) if found else 0

    previous, current = -1, count()
    while current != previous:
        time.sleep(0.5)
        previous, current = current, count()
    return current


def test_one_llm_for_all_collections_and_searches_do_not_wait_for_it(server: ApiServer) -> None:
    asked: dict[str, float] = {}

    def ask() -> None:
        started = time.monotonic()
        with server.client() as client:
            first_delta(client, "default", "How long do refunds take?")
        asked["seconds"] = time.monotonic() - started

    thread = threading.Thread(target=ask)
    thread.start()
    deadline = time.monotonic() + 60
    while not llama_servers(server.process.pid):  # llama.cpp is being started for the question
        assert time.monotonic() < deadline, "the question did not start llama.cpp"
        time.sleep(0.05)
    with server.client() as client:
        for name in ("default", "second"):
            started = time.monotonic()
            client.post(f"/v1/collections/{name}/search", json={"query": "refunds"}).raise_for_status()
            searched = time.monotonic() - started
            assert searched < 5, f"a search on {name!r} took {searched:.1f} s while the LLM started"
        thread.join()
        assert asked["seconds"] > searched
        first_delta(client, "second", "How long do refunds take?")
    assert len(llama_servers(server.process.pid)) == 1


def test_a_client_that_hangs_up_frees_the_llm_within_seconds(server: ApiServer) -> None:
    [llama] = llama_servers(server.process.pid)
    probe_seconds(llama)
    with server.client() as client:
        cancelled_before = cancelled_asks(client)

    # Streamed: read the first piece of the answer, then hang up.
    with server.client() as client:
        first_delta(client, "default", QUESTION)
    assert probe_seconds(llama) < PROBE_SECONDS

    # Not streamed: hang up while the answer is being generated.
    body = json.dumps({"question": QUESTION}).encode()
    parts = urlsplit(server.url)
    with socket.create_connection((parts.hostname, parts.port)) as sock:
        sock.sendall(b"POST /v1/collections/default/ask HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     + f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
        time.sleep(6)  # retrieval, then generation under way
    assert probe_seconds(llama) < PROBE_SECONDS

    with server.client() as client:
        # The server counted the two as cancelled, not as errors, and answers as before.
        assert cancelled_asks(client) - cancelled_before == 2
        assert not re.search(r'rag_http_errors_total\{route="/v1/collections/\{name\}/ask",status="5',
                             client.get("/metrics").text)
        first_delta(client, "default", "How long do refunds take?")
