"""The ``rag`` command as users run it: a real subprocess, real model, real index, real exit codes."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow


def rag(cwd: Path, *args: str, timeout: float = 240, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", **(env or {})},
    )


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, corpus_writer) -> Path:
    """A folder with the sample corpus, ingested once for the read-only tests of this module."""
    root = tmp_path_factory.mktemp("project")
    corpus_writer(root)
    result = rag(root, "ingest", "docs", "--meta", "team=support")
    assert result.returncode == 0, result.stderr
    assert "4 added" in result.stdout and "0 failed" in result.stdout
    return root


def test_search_json_is_stable(project: Path) -> None:
    result = rag(project, "search", "refund policy", "--k", "2", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    assert len(hits) == 2
    assert set(hits[0]) == {"doc_id", "chunk_id", "score", "dense_score", "bm25_score", "rerank_score", "metadata", "text"}
    assert hits[0]["doc_id"] == "docs/web/pricing.html" and hits[0]["metadata"]["team"] == "support"
    assert hits[0]["score"] >= hits[1]["score"]


def test_search_table_filters_and_fusion(project: Path) -> None:
    result = rag(project, "search", "widget", "--filter", "source~docs/guide/*", "--fusion", "rrf", "--alpha", "0.7")
    assert result.returncode == 0, result.stderr
    assert "docs/guide/" in result.stdout and "docs/notes" not in result.stdout and "pricing" not in result.stdout


def test_search_queries_file_one_line_per_query(project: Path) -> None:
    queries = project / "queries.jsonl"
    queries.write_text('{"_id": "q1", "text": "founded in Helsinki"}\n{"_id": "q2", "text": "clear the cache"}\n')
    result = rag(project, "search", "--queries", str(queries), "--json", "--k", "3")
    assert result.returncode == 0, result.stderr
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [line["_id"] for line in lines] == ["q1", "q2"]
    assert lines[0]["hits"][0]["doc_id"] == "docs/notes/history.txt"
    assert lines[1]["hits"][0]["doc_id"] == "docs/guide/troubleshoot.md"


def test_query_flags_reach_the_engine(project: Path) -> None:
    """The flags travel as one QueryOptions: the dense weight and the per-document cap shape the hits."""
    def hits(*flags: str) -> list[dict]:
        result = rag(project, "search", "widget", "--k", "10", *flags, "--json")
        assert result.returncode == 0, result.stderr
        return json.loads(result.stdout)

    keyword_only, dense_only = hits("--alpha", "0"), hits("--alpha", "1")
    assert keyword_only and all(h["dense_score"] is None and h["bm25_score"] is not None for h in keyword_only)
    assert dense_only and all(h["bm25_score"] is None and h["dense_score"] is not None for h in dense_only)
    uncapped, capped = [h["doc_id"] for h in hits()], [h["doc_id"] for h in hits("--max-per-doc", "1")]
    assert len(set(uncapped)) < len(uncapped)  # the cap below has something to do
    assert len(capped) == len(set(capped)) == len(set(uncapped))


def test_status_json(project: Path) -> None:
    info = json.loads(rag(project, "status", "--json").stdout)
    assert (info["documents"], info["files"], info["store"], info["dimension"]) == (4, 4, "faiss", 384)
    assert info["chunks"] > 4 and info["size_bytes"] > 0 and info["embedding_model"] == "all-MiniLM-L6-v2"


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["search", "x", "--filter", "year between 1 2"], 2, "cannot parse filter"),
        (["search", "x", "--filter", '{"year": {"near": 3}}'], 2, "unknown filter operator 'near'"),
        (["search", "x", "--alpha", "1.5"], 2, "alpha"),
        (["search"], 2, "give either a QUERY or --queries"),
        (["ingest", "missing-folder"], 1, "does not exist"),
        (["ingest", "docs", "--meta", "novalue"], 2, "--meta expects KEY=VALUE"),
    ],
)
def test_errors_are_one_line_with_exit_codes(project: Path, args: list[str], code: int, message: str) -> None:
    result = rag(project, *args)
    assert result.returncode == code, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


def test_errors_without_an_index_and_with_bad_config(tmp_path: Path) -> None:
    result = rag(tmp_path, "search", "anything")
    assert result.returncode == 1 and "run `rag ingest PATH` first" in result.stderr
    (tmp_path / "rag.toml").write_text("[retrieval]\nalhpa = 0.3\n")
    result = rag(tmp_path, "status")
    assert result.returncode == 2 and "retrieval.alhpa" in result.stderr


def test_help_teaches(tmp_path: Path) -> None:
    top = rag(tmp_path, "--help").stdout
    assert all(verb in top for verb in ("ingest", "search", "ask", "status", "llm"))
    for verb, example in [("ingest", "--meta team=finance"), ("search", "--queries"), ("ask", "RAG_LLM__BASE_URL")]:
        assert example in rag(tmp_path, verb, "--help").stdout


def test_bad_files_exit_1_and_the_rest_is_searchable(tmp_path: Path, corpus: Path) -> None:
    docs = corpus
    (docs / "scan.pdf").write_bytes(b"%PDF-1.7 truncated")
    result = rag(tmp_path, "ingest", "docs", "--json")
    assert result.returncode == 1
    summary = json.loads(result.stdout)
    assert summary["added"] == 4 and summary["failed"][0]["path"] == "docs/scan.pdf"
    assert rag(tmp_path, "search", "refund", "--k", "1").returncode == 0


def test_interrupted_ingest_leaves_a_loadable_index_and_the_next_run_completes(tmp_path: Path, corpus_writer) -> None:
    """SIGKILL an ingest between commits; the index opens and searches, and a re-run finishes the job."""
    files = {
        f"topic{i:02d}.md": f"# Topic {i}\n\n" + " ".join(f"Sentence {j} about subject {i} and its details." for j in range(40))
        for i in range(24)
    }
    corpus_writer(tmp_path, files)
    env = {"RAG_INGEST__BATCH_CHUNKS": "8"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "rag.cli", "ingest", "docs"], cwd=tmp_path, env={**os.environ, **env},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    catalog = tmp_path / ".rag" / "catalog.sqlite"
    deadline = time.monotonic() + 180
    generation = 0
    while time.monotonic() < deadline and proc.poll() is None:
        if catalog.exists():
            try:
                with sqlite3.connect(catalog) as db:
                    row = db.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()
                generation = int(row[0]) if row else 0
            except sqlite3.Error:
                generation = 0
            if generation >= 2:
                break
        time.sleep(0.05)
    assert proc.poll() is None, "ingest finished before it could be interrupted; make the corpus larger"
    proc.send_signal(signal.SIGKILL)
    proc.wait()

    status = json.loads(rag(tmp_path, "status", "--json", env=env).stdout)
    assert 0 < status["files"] < len(files)
    partial = rag(tmp_path, "search", "subject details", "--json", env=env)
    assert partial.returncode == 0 and json.loads(partial.stdout)

    rerun = rag(tmp_path, "ingest", "docs", "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    summary = json.loads(rerun.stdout)
    assert summary["added"] == len(files) - status["files"] and summary["unchanged"] == status["files"]
    final = json.loads(rag(tmp_path, "status", "--json").stdout)
    assert final["files"] == final["documents"] == len(files)

    from rag.core.settings import load_settings
    from rag.engine import RagEngine

    with RagEngine(load_settings(data_dir=tmp_path / ".rag"), project_root=tmp_path) as engine:
        assert engine.store.ids() == engine.catalog.all_chunk_ids()  # orphans of the killed run are gone
        assert sorted(engine.bm25.chunk_ids) == sorted(engine.catalog.all_chunk_ids())
