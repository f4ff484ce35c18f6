"""``rag collections``, ``rag keys``, ``--collection`` on every command, and ``rag serve`` as a real process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

pytestmark = pytest.mark.slow


def rag(cwd: Path, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
    result = subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def test_collections_and_the_collection_option(tmp_path: Path, corpus: Path) -> None:
    assert rag(tmp_path, "collections", "create", "guides", "--set", "chunking.size=96", "--set", "retrieval.alpha=0.3").returncode == 0
    assert rag(tmp_path, "ingest", "-c", "guides", "docs/guide").returncode == 0
    assert rag(tmp_path, "ingest", "docs").returncode == 0  # the default collection
    listed = json.loads(rag(tmp_path, "collections", "list", "--json").stdout)
    assert [(c["name"], c["documents"]) for c in listed] == [("default", 4), ("guides", 2)]
    assert listed[1]["settings"] == {"chunking": {"size": 96}, "retrieval": {"alpha": 0.3}}
    status = json.loads(rag(tmp_path, "status", "-c", "guides", "--json").stdout)
    assert (status["documents"], status["chunk_size"]) == (2, 96)
    hits = json.loads(rag(tmp_path, "search", "refund", "-c", "guides", "--json").stdout)
    assert {h["doc_id"] for h in hits} <= {"docs/guide/install.md", "docs/guide/troubleshoot.md"}
    env_selected = subprocess.run(
        [sys.executable, "-m", "rag.cli", "status", "--json"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "RAG_COLLECTION": "guides"}, timeout=300,
    )
    assert json.loads(env_selected.stdout)["documents"] == 2

    missing = rag(tmp_path, "search", "x", "-c", "nope")
    assert missing.returncode == 2 and "no collection named 'nope'" in missing.stderr
    bad = rag(tmp_path, "collections", "create", "papers", "--set", "retrieval.alpha=9")
    assert bad.returncode == 2 and "retrieval.alpha" in bad.stderr
    assert rag(tmp_path, "collections", "delete", "guides", "--yes").returncode == 0
    assert [c["name"] for c in json.loads(rag(tmp_path, "collections", "list", "--json").stdout)] == ["default"]
    assert json.loads(rag(tmp_path, "status", "--json").stdout)["documents"] == 4


def test_keys_and_serve(tmp_path: Path, copy_ingested: Callable[[Path], Path]) -> None:
    copy_ingested(tmp_path)  # the sample corpus after `rag ingest docs` (the session's one ingest, copied)
    exposed = rag(tmp_path, "serve", "--host", "0.0.0.0", "--port", "0", timeout=60)
    assert exposed.returncode == 2 and "refusing to serve on 0.0.0.0 with no API key" in exposed.stderr

    created = json.loads(rag(tmp_path, "keys", "create", "--collection", "default", "--role", "read", "--name", "web", "--json").stdout)
    key = created["key"]
    assert re.fullmatch(r"rag_[0-9a-f]{8}_\S+", key) and created["role"] == "read"
    listed = json.loads(rag(tmp_path, "keys", "list", "--json").stdout)
    assert [k["id"] for k in listed] == [created["id"]] and "key" not in listed[0]
    assert key not in (tmp_path / ".rag" / "keys.sqlite").read_bytes().decode("latin-1")  # stored hashed

    server = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "serve", "--port", "0"], cwd=tmp_path, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    try:
        line = server.stderr.readline()
        match = re.search(r"serving at (http://\S+) ", line)
        assert match, line
        url = match.group(1)
        http = httpx.Client(timeout=120)  # the first search loads the model
        assert http.get(f"{url}/healthz").json() == {"status": "ok"}
        body = {"query": "refund", "k": 1}
        assert http.post(f"{url}/v1/collections/default/search", json=body).status_code == 401
        ok = http.post(f"{url}/v1/collections/default/search", json=body, headers={"Authorization": f"Bearer {key}"})
        assert ok.status_code == 200 and ok.json()["hits"][0]["doc_id"] == "docs/web/pricing.html"
        assert rag(tmp_path, "keys", "revoke", created["id"]).returncode == 0
        revoked = http.post(f"{url}/v1/collections/default/search", json=body, headers={"X-API-Key": key})
        assert revoked.status_code == 401 and revoked.json()["error"]["type"] == "unauthorized"
    finally:
        server.terminate()
        server.wait(timeout=30)
    again = rag(tmp_path, "keys", "revoke", created["id"])
    assert again.returncode == 2 and "no active key" in again.stderr
