"""A real ``python -m rag.api`` process for the API tests, and helpers to talk to it over HTTP."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

# The environment of every server: offline, and none of the caller's RAG_* settings (a developer's
# RAG_LLM__BASE_URL must not change what the tests talk to).
BASE_ENV = {
    **{k: v for k, v in os.environ.items() if not k.startswith("RAG_") or k.startswith("RAG_TEST_")},
    "HF_HUB_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
# Nothing listens on port 9 (discard): every LLM call fails at once, so /ask answers 502 with the sources.
UNREACHABLE_LLM = {"RAG_LLM__BASE_URL": "http://127.0.0.1:9/v1", "RAG_LLM__MAX_RETRIES": "0"}
# The embedded llama.cpp model writing the answers (generation.mode = llm: by default they are extractive),
# kept quick on two shared cores: short answers, and one thread (llama.cpp's spinning worker threads slow it
# down ten-fold when other processes want the same cores).
EMBEDDED_LLM = {"RAG_GENERATION__MODE": "llm", "RAG_LLM__MAX_TOKENS": "96", "RAG_LLM__THREADS": "1"}
START_TIMEOUT = 120.0
TIMEOUT = httpx.Timeout(240.0, connect=10.0)  # the first question starts llama.cpp on two slow cores


class ApiServer:
    """A running ``python -m rag.api --data-dir D --port 0`` process; ``url`` once it listens.

    Args:
        data_dir: the server's data directory.
        env: extra environment (``RAG_API__JOB_THRESHOLD_KB`` ...), over :data:`BASE_ENV`.
        cwd: the process's working directory (no ``rag.toml`` there).
    """

    key: str | None = None  # a key a test module made for it, if any

    def __init__(self, data_dir: Path, env: dict[str, str], cwd: Path) -> None:
        self.data_dir = data_dir
        self.log_path = cwd / f"server-{data_dir.name}-{time.monotonic_ns()}.log"
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "rag.api", "--data-dir", str(data_dir), "--port", "0"],
                cwd=cwd, env={**BASE_ENV, **env}, stdout=log, stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + START_TIMEOUT
        while not (match := re.search(r"serving at (http://\S+)", self.log_path.read_text())):
            if self.process.poll() is not None:
                raise RuntimeError(f"the server exited with {self.process.returncode}:\n{self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not listen within {START_TIMEOUT:.0f} s:\n{self.log()}")
            time.sleep(0.1)
        self.url = match.group(1)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, key: str | None = None, *, header: str = "bearer") -> httpx.Client:
        """An httpx client on the server, sending ``key`` as a Bearer token or as ``X-API-Key``."""
        headers = {}
        if key is not None:
            headers = {"Authorization": f"Bearer {key}"} if header == "bearer" else {"X-API-Key": key}
        return httpx.Client(base_url=self.url, headers=headers, timeout=TIMEOUT)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def wait_for_job(client: httpx.Client, job: dict[str, Any], timeout: float = 180.0) -> dict[str, Any]:
    """Poll ``/v1/jobs/{id}`` until the job has finished; returns its last state."""
    deadline = time.monotonic() + timeout
    while job["status"] in ("queued", "running"):
        assert time.monotonic() < deadline, f"job {job['id']} still {job['status']} after {timeout:.0f} s"
        time.sleep(0.2)
        response = client.get(f"/v1/jobs/{job['id']}")
        assert response.status_code == 200, response.text
        job = response.json()
    return job


def upload_files(
    client: httpx.Client, collection: str, files: dict[str, bytes | str], metadata: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Upload ``{file name: content}`` as multipart ``files``; the ingest report (a job is waited for)."""
    parts = [("files", (name, data.encode() if isinstance(data, str) else data)) for name, data in files.items()]
    form = {"metadata": json.dumps(metadata)} if metadata else None
    response = client.post(f"/v1/collections/{collection}/documents", files=parts, data=form)
    if response.status_code == 202:
        job = wait_for_job(client, response.json())
        assert job["status"] == "succeeded", job
        return job["report"]
    assert response.status_code == 200, response.text
    return response.json()


def upload_corpus(client: httpx.Client, collection: str, docs: Path) -> dict[str, Any]:
    """Upload every file under ``docs`` (the suite's sample corpus) by its file name."""
    files = {path.name: path.read_bytes() for path in sorted(docs.rglob("*")) if path.is_file()}
    report = upload_files(client, collection, files)
    assert sorted(report["added"]) == sorted(files), report
    return report


def sse_events(text: str) -> list[tuple[str | None, str]]:
    """``(event, data)`` of each Server-Sent Event in a response body."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        if not block.strip():
            continue
        kind, data = None, []
        for line in block.split("\n"):
            if line.startswith("event:"):
                kind = line[len("event:"):].strip()
            elif line.startswith("data:"):
                data.append(line[len("data:"):].lstrip())
        events.append((kind, "\n".join(data)))
    return events


def expected_citations(content: str, sources: list[dict[str, Any]], base_url: str) -> list[tuple[int, int, str]]:
    """``(start_index, end_index, url)`` of the ``url_citation`` each ``[n]`` marker in ``content`` should get,
    in text order: ``[n]`` spans its whole marker, each number of ``[n, m]`` its own digits; a number with no
    source gets none. ``sources``: the response's numbered ``sources`` (each with its chunk's ``url`` path)."""
    expected = []
    for marker in re.finditer(r"\[(\d+(?:\s*,\s*\d+)*)\]", content):
        numbers = list(re.finditer(r"\d+", marker.group(1)))
        for number in numbers:
            n = int(number.group())
            if not 1 <= n <= len(sources):
                continue
            if len(numbers) == 1:
                start, end = marker.span()
            else:
                start, end = marker.start(1) + number.start(), marker.start(1) + number.end()
            expected.append((start, end, base_url.rstrip("/") + sources[n - 1]["url"]))
    return expected
