"""The query path never imports torch: ``rag search``, ``rag ask`` (extractive) and the API's readers.

Ingest (in this process, with PyTorch) exports the query encoder into a fresh cache; a new Python
process then runs the CLI's search and ask and the API's search and ask over that index, and reports
which heavy modules it imported. What is tested is the real thing: the packaged model, the real CLI
and app, a real subprocess whose ``sys.modules`` starts empty.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rag.core.settings import load_settings
from rag.engine import RagEngine

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[1] / "docs"
HEAVY = ("torch", "transformers", "sentence_transformers")

# Runs in the fresh process: every reader front end, then the modules it loaded, as one JSON line.
READERS = f"""
import json, sys
from typer.testing import CliRunner
from fastapi.testclient import TestClient
from rag.cli import app
from rag.api.app import create_app

cli = CliRunner()
search = cli.invoke(app, ["search", "How do filters work?", "--json", "-k", "3"])
ask = cli.invoke(app, ["ask", "How do I attach metadata to documents?", "--json"])
with TestClient(create_app()) as client:
    api_search = client.post("/v1/collections/default/search", json={{"query": "metadata filters"}})
    api_ask = client.post("/v1/collections/default/ask", json={{"question": "What is a filter?"}})
print(json.dumps({{
    "cli": [search.exit_code, ask.exit_code], "api": [api_search.status_code, api_ask.status_code],
    "search_hits": len(json.loads(search.output)), "ask": json.loads(ask.output),
    "api_hits": len(api_search.json()["hits"]), "api_answer": api_ask.json()["answer"],
    "heavy": [name for name in {HEAVY!r} if name in sys.modules],
}}))
"""


def test_search_ask_and_the_api_readers_import_no_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    corpus = tmp_path / "docs"
    corpus.mkdir()
    for name in ("filters.md", "metadata.md"):
        shutil.copy(DOCS / name, corpus / name)
    cache, data = tmp_path / "cache", tmp_path / ".rag"
    monkeypatch.setenv("RAG_CACHE_DIR", str(cache))
    with RagEngine(load_settings(data_dir=data), project_root=tmp_path) as engine:
        engine.ingest([corpus])
    assert list(cache.glob("onnx/*/manifest.json")), "ingest exported the query encoder"

    env = {**os.environ, "RAG_CACHE_DIR": str(cache), "RAG_DATA_DIR": str(data), "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", READERS], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["cli"] == [0, 0] and report["api"] == [200, 200]
    assert report["search_hits"] == 3 and report["api_hits"] > 0
    assert report["ask"]["citations"] and report["api_answer"], "extractive answers, with citations"
    assert report["heavy"] == [], f"the query path imported {report['heavy']}"
