"""A full disk, a locked database and corrupt files end in one line that names the file and the fix;
derived files are rebuilt on their own; nothing committed is lost."""

from __future__ import annotations

import json
import os
import resource
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from rag.core import storage
from rag.core.errors import StorageError
from rag.core.settings import load_settings
from rag.engine import RagEngine

pytestmark = pytest.mark.slow


def rag(cwd: Path, *args: str, env: dict[str, str] | None = None, file_limit: int | None = None) -> subprocess.CompletedProcess:
    def limit() -> None:  # in the child: writes past the limit fail with EFBIG (Python ignores SIGXFSZ)
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_limit, file_limit))

    return subprocess.run(
        [sys.executable, "-m", "rag.cli", *args], cwd=cwd, capture_output=True, text=True, timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})}, preexec_fn=limit if file_limit else None,
    )


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


def jsonl(path: Path, count: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(count):
            words = " ".join(f"w{(i * 7 + j) % 97}" for j in range(60))
            fh.write(json.dumps({"_id": f"d{i}", "text": f"record{i} {words}"}) + "\n")


def test_disk_full_is_one_line_keeps_what_was_committed_and_the_rerun_finishes(tmp_path: Path) -> None:
    jsonl(tmp_path / "corpus" / "big.jsonl", 400)
    env = {"RAG_INGEST__BATCH_CHUNKS": "16"}
    # No file may grow past 300 KB: a write-ahead log (the store's grows ~30 KB a batch) hits it mid-run.
    full = rag(tmp_path, "ingest", "corpus", env=env, file_limit=300_000)
    message = one_line_error(full)
    assert "disk is full (or the file-size limit was reached)" in message and ".rag/" in message
    assert "run the same command again" in message

    status = json.loads(rag(tmp_path, "status", "--json").stdout)
    assert 0 < status["documents"] < 400  # the batches committed before the failure are there
    assert rag(tmp_path, "search", "record3", "--json").returncode == 0  # and the index loads

    rerun = rag(tmp_path, "ingest", "corpus", "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    assert json.loads(rerun.stdout)["documents"] == 400
    with RagEngine(load_settings(data_dir=tmp_path / ".rag"), project_root=tmp_path) as engine:
        ids = engine.catalog.all_chunk_ids()
        assert engine.store.ids() == ids and sorted(engine.bm25.chunk_ids) == sorted(ids)


@pytest.fixture
def project(tmp_path: Path, copy_ingested: Callable[[Path], Path]) -> Path:
    """The sample corpus after ``rag ingest docs``, a private copy for a test to corrupt (one ingest per session)."""
    return copy_ingested(tmp_path)


def test_a_corrupt_catalog_is_one_line_naming_it(project: Path) -> None:
    catalog = project / ".rag" / "catalog.sqlite"
    for side in (project / ".rag").glob("catalog.sqlite-*"):
        side.unlink()
    catalog.write_bytes(b"this is not a database" * 100)
    for args in (["status"], ["search", "refund"], ["ingest", "docs"]):
        message = one_line_error(rag(project, *args))
        assert "catalog.sqlite is corrupt" in message and "rag ingest --rebuild" in message, message


def test_a_corrupt_vector_store_is_one_line_with_the_rebuild_hint(project: Path) -> None:
    store = project / ".rag" / "faiss" / "store.sqlite3"
    for side in store.parent.glob("store.sqlite3-*"):
        side.unlink()
    store.write_bytes(b"\x00garbage" * 1000)
    message = one_line_error(rag(project, "search", "refund"))
    assert "store.sqlite3 is corrupt" in message and "rag ingest --rebuild" in message
    assert rag(project, "ingest", "--rebuild", "docs").returncode == 0
    assert rag(project, "search", "refund").returncode == 0


def test_a_corrupt_bm25_index_is_rebuilt_without_a_word(project: Path) -> None:
    for file in (project / ".rag" / "bm25").rglob("*"):
        if file.is_file() and file.name != "CURRENT":
            file.write_bytes(b"garbage")
    result = rag(project, "search", "refund plan", "--json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["doc_id"] == "docs/web/pricing.html"
    assert rag(project, "ingest", "docs").returncode == 0  # the writer saves a good one again
    with RagEngine(load_settings(data_dir=project / ".rag"), project_root=project) as engine:
        assert engine.bm25.generation == engine.catalog.generation


def test_a_database_locked_by_another_program_is_a_clear_error(project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(storage, "BUSY_TIMEOUT_S", 0.3)
    holder = sqlite3.connect(project / ".rag" / "catalog.sqlite", isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # e.g. a backup tool or an sqlite3 shell left open
    try:
        (project / "docs" / "new.md").write_text("# New\n\nA new page.\n")
        with RagEngine(load_settings(data_dir=project / ".rag"), project_root=project) as engine:
            with pytest.raises(StorageError, match=r"catalog\.sqlite is locked by another process"):
                engine.ingest([project / "docs"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
