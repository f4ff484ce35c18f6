"""One data directory, many real processes: the writer lock, readers during an ingest, read-only
readers, and progress that survives ``kill -9`` inside one large file."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rag.core.settings import load_settings
from rag.engine import RagEngine

pytestmark = pytest.mark.slow

WORDS = (
    "river stone lantern orchard copper meadow harbor violet thunder saddle quarry ember glacier willow "
    "falcon marble tundra cobalt prairie juniper canyon velvet summit basalt"
).split()


def rag_cmd(data_dir: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "rag.cli", "--data-dir", str(data_dir), *args]


def run(cwd: Path, data_dir: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        rag_cmd(data_dir, *args), cwd=cwd, capture_output=True, text=True, timeout=timeout,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def start(cwd: Path, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen:
    return subprocess.Popen(
        rag_cmd(data_dir, *args), cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **(env or {})},
    )


def write_jsonl(path: Path, prefix: str, count: int, words: int = 40, seed: int = 0) -> list[str]:
    """``count`` one-chunk records, each holding a unique marker word ``<prefix>mark<i>``; returns the ids."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    ids = []
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(count):
            body = " ".join(rng.choice(WORDS) for _ in range(words))
            ids.append(f"{prefix}{i}")
            fh.write(json.dumps({"_id": f"{prefix}{i}", "text": f"{prefix}mark{i} {body}"}) + "\n")
    return ids


def wait_for(predicate, timeout: float = 120, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def status(cwd: Path, data_dir: Path) -> dict:
    result = run(cwd, data_dir, "status", "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def consistent(data_dir: Path, root: Path) -> set[str]:
    """Catalog, store and BM25 name exactly the same chunks; returns the document ids."""
    with RagEngine(load_settings(data_dir=data_dir), project_root=root) as engine:
        ids = engine.catalog.all_chunk_ids()
        assert engine.store.ids() == ids
        assert sorted(engine.bm25.chunk_ids) == sorted(ids)
        return {meta["doc_id"] for _, _, meta in engine.catalog.iter_chunks()}


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file but SQLite's WAL side files, with size and modification time."""
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and not p.name.endswith(("-wal", "-shm"))
    }


def test_a_second_writer_waits_or_fails_fast_while_readers_see_committed_state(tmp_path: Path) -> None:
    data = tmp_path / ".rag"
    slow_ids = write_jsonl(tmp_path / "slow" / "corpus.jsonl", "s", 1200)  # long enough to outlast three CLI runs
    fast_ids = write_jsonl(tmp_path / "fast" / "corpus.jsonl", "f", 12, seed=1)
    env = {"RAG_INGEST__BATCH_CHUNKS": "16"}
    first = start(tmp_path, data, "ingest", "slow", env=env)
    wait_for(lambda: (data / "catalog.sqlite").exists() and status(tmp_path, data)["documents"] > 0, what="a first commit")
    assert first.poll() is None, "the first ingest finished too soon to test concurrency"

    busy = run(tmp_path, data, "ingest", "fast", "--no-wait")
    assert busy.returncode == 4, busy.stderr
    assert "another process (pid" in busy.stderr and "is writing to" in busy.stderr
    assert "Traceback" not in busy.stderr
    queued = start(tmp_path, data, "ingest", "fast", "--json", env=env)

    # A reader during the ingest: the last committed state, no error.
    during = run(tmp_path, data, "search", "s0mark0", "--k", "1", "--json")
    assert during.returncode == 0, during.stderr
    committed = status(tmp_path, data)["documents"]
    assert 0 < committed <= len(slow_ids)
    assert first.poll() is None, "the first ingest finished before the second could queue behind it"

    _, err_first = first.communicate(timeout=600)
    out_queued, err_queued = queued.communicate(timeout=600)
    assert first.returncode == 0 and queued.returncode == 0, err_first + err_queued
    assert "waiting for it to finish" in err_queued
    assert json.loads(out_queued)["added"] == 1
    assert consistent(data, tmp_path) == set(slow_ids) | set(fast_ids)


def test_two_ingests_and_a_search_loop_at_once(tmp_path: Path) -> None:
    """The issue's scenario: two ingests of different folders and readers, all on one data directory."""
    data = tmp_path / ".rag"
    ids_a = write_jsonl(tmp_path / "a" / "part.jsonl", "a", 90, seed=2)
    ids_b = write_jsonl(tmp_path / "b" / "part.jsonl", "b", 90, seed=3)
    env = {"RAG_INGEST__BATCH_CHUNKS": "24"}
    writers = [start(tmp_path, data, "ingest", folder, env=env) for folder in ("a", "b")]
    searches: list[subprocess.CompletedProcess] = []
    while any(w.poll() is None for w in writers):
        searches.append(run(tmp_path, data, "search", random.choice(WORDS), "--k", "3", "--json"))
    outputs = [w.communicate(timeout=600) for w in writers]
    assert [w.returncode for w in writers] == [0, 0], outputs
    for result in searches:
        # Before the first commit there is no index yet: a clean error, never a traceback.
        assert "Traceback" not in result.stderr, result.stderr
        assert result.returncode == 0 or "no index" in result.stderr, result.stderr
    assert any(r.returncode == 0 for r in searches), "no search ran while the ingests were writing"
    assert all("Traceback" not in err for _, err in outputs)
    assert consistent(data, tmp_path) == set(ids_a) | set(ids_b)
    with RagEngine(load_settings(data_dir=data), project_root=tmp_path) as engine:
        for doc_id in [*ids_a, *ids_b]:
            hits = engine.search(f"{doc_id[0]}mark{doc_id[1:]}", 1, alpha=0.0)
            assert hits and hits[0].chunk.doc_id == doc_id


def test_readers_write_no_files(tmp_path: Path, corpus: Path) -> None:
    data = tmp_path / ".rag"
    env = {"RAG_STORE__INDEX": "hnsw"}
    assert run(tmp_path, data, "ingest", "docs", env=env).returncode == 0
    # Derived files a reader might be tempted to rebuild: BM25 and the HNSW graph cache.
    shutil.rmtree(data / "bm25")
    for cache in (data / "faiss").glob("hnsw-*.npz"):
        cache.unlink()
    before = snapshot(data)
    offline_llm = {**env, "RAG_LLM__BASE_URL": "http://127.0.0.1:9/v1", "RAG_LLM__MAX_RETRIES": "0"}
    assert run(tmp_path, data, "search", "refund", "--json", env=env).returncode == 0
    assert run(tmp_path, data, "status", "--json", env=env).returncode == 0
    assert run(tmp_path, data, "ask", "How much is the team plan?", env=offline_llm).returncode == 3  # LLM down
    assert snapshot(data) == before
    assert not (data / "bm25").exists() and not list((data / "faiss").glob("hnsw-*"))


def test_a_read_only_data_directory_is_searchable(tmp_path: Path, corpus: Path) -> None:
    data = tmp_path / ".rag"
    assert run(tmp_path, data, "ingest", "docs").returncode == 0
    mount = f"mount --bind {data} {data} && mount -o remount,bind,ro {data}"
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"{mount} && ! touch {data}/probe"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot mount a read-only folder here: {probe.stderr.decode().strip()}")
    command = " ".join(rag_cmd(data, "search", "refund", "--k", "2", "--json"))
    result = subprocess.run(
        ["unshare", "-rm", "sh", "-c", f"{mount} && exec {command}"], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)[0]["doc_id"] == "docs/web/pricing.html"


def test_a_kill_inside_one_large_jsonl_keeps_the_committed_batches(tmp_path: Path) -> None:
    data = tmp_path / ".rag"
    ids = write_jsonl(tmp_path / "corpus" / "big.jsonl", "k", 300, seed=4)
    env = {"RAG_INGEST__BATCH_CHUNKS": "20"}
    proc = start(tmp_path, data, "ingest", "corpus", env=env)
    wait_for(
        lambda: (data / "catalog.sqlite").exists() and status(tmp_path, data)["documents"] >= len(ids) // 2,
        timeout=300, what="half of the records to be committed",
    )
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    after_kill = status(tmp_path, data)
    assert len(ids) // 2 <= after_kill["documents"] < len(ids), "kill landed after the end; the corpus is too small"

    rerun = run(tmp_path, data, "ingest", "corpus", "--json", env=env)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    total = report["chunks"]
    assert total == len(ids)
    # The re-run embeds only what was not committed (plus at most the batch in flight, whose vectors
    # may already be in the store and are then reused).
    assert report["chunks_added"] <= total - after_kill["chunks"]
    assert report["chunks_added"] <= 0.6 * total
    assert consistent(data, tmp_path) == set(ids)
