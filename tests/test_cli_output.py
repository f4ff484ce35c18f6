"""Machine output is exact and human output is literal, whatever the documents hold.

Document text full of what Rich would read as markup (``[bold]``, ``[/]``, ``x[i]``), emoji codes
(``:smile:``), line separators (U+2028), emoji and tabs goes through every ``--json`` path and every
human path of the real ``rag`` command; JSON must carry it byte for byte, the terminal must show it
unchanged (whitespace runs aside, which snippets fold into one space), and nothing may crash.
"""

from __future__ import annotations

import json
import os
import random
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

DATA_DIR = "idx[1][b]"  # Rich would read "[b]" as bold and drop it
BROKEN = "docs/broken [b] x[i] :smile:.pdf"  # fails to load; reported by path (no "/" in a file name)

MARKERS = [
    "[bold]x[/bold]", "[/]", "x[i]", "[link](http://a.b)", "almond prunus dulcis[mill d a webb",
    "\u2028", "🦀", ":smile:", "\t",
]
MARKER_TEXT = (
    "Orchard note on the almond prunus dulcis[mill d a webb, written by the keeper of the west rows: keep "
    "[bold]x[/bold] and a lone [/] and x[i] as typed, see [link](http://a.b) for more.\u2028"
    "Second line\twith a tab, a crab 🦀 and :smile: left as text."
)
ASK_KEYS = {
    "question", "answer", "error", "model", "usage", "warnings", "invalid_citations", "citations", "hits", "answerable",
    "evidence",
}
WORDS = [
    "apple", "birch", "cedar", "daisy", "elder", "fennel", "ginger", "hazel", "iris", "juniper",
    "kale", "lilac", "maple", "nettle", "olive", "poppy", "quince", "rowan", "sorrel",
]


def corpus() -> dict[str, str]:
    """Twenty one-chunk text files, every one with bracketed text, plus the marker file."""
    files = {"markers.txt": MARKER_TEXT}
    for i, word in enumerate(WORDS):
        files[f"plant{i:02d}.txt"] = (
            f"Field guide entry {i} about {word} plants and how they grow: the {word}[{i}] bed uses "
            f"[b]{word}[/b] labels, a [/] divider, {word}[mill d a webb and [see {word}](http://x.y/{i}) notes."
        )
    return files


def rag(cwd: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """Run ``rag --data-dir idx[1][b] ARGS`` as users do; no output path may ever print a traceback."""
    result = subprocess.run(
        [sys.executable, "-m", "rag.cli", "--data-dir", DATA_DIR, *args], cwd=cwd, capture_output=True,
        text=True, encoding="utf-8", timeout=300,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200", "RAG_LLM__THREADS": "1", **(env or {})},
    )
    assert "Traceback" not in result.stderr + result.stdout, result.stderr
    return result


def flat(text: str) -> str:
    """What human output shows of ``text``: whitespace runs (tab, U+2028) as one space."""
    return " ".join(text.split())


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The bracketed corpus, ingested once with ``--json`` into a data directory with brackets in its name."""
    root = tmp_path_factory.mktemp("output")
    docs = root / "docs"
    docs.mkdir()
    for name, text in corpus().items():
        (docs / name).write_text(text, encoding="utf-8")
    (root / BROKEN).write_bytes(b"%PDF-1.7 truncated")
    result = rag(root, "ingest", "docs", "--json")
    assert result.returncode == 1, result.stderr  # the broken PDF; the rest is indexed
    summary = json.loads(result.stdout)
    assert summary["added"] == 20 and summary["chunks"] == 20
    assert [f["path"] for f in summary["failed"]] == [BROKEN]
    return root


def stored_texts(root: Path) -> dict[str, str]:
    """chunk_id -> text as the catalog holds it."""
    with sqlite3.connect(root / DATA_DIR / "catalog.sqlite") as db:
        return dict(db.execute("SELECT chunk_id, text FROM chunks"))


def test_markers_are_stored_verbatim(project: Path) -> None:
    texts = list(stored_texts(project).values())
    assert MARKER_TEXT in texts  # one chunk, no loader change: the baseline the outputs are held to


def test_human_ingest_reports_bracketed_paths_literally(project: Path) -> None:
    result = rag(project, "ingest", "docs")
    assert result.returncode == 1
    assert f"failed {BROKEN}: " in result.stderr
    assert "0 added" in result.stdout and "20 unchanged" in result.stdout


def test_search_json_returns_stored_text_byte_for_byte(project: Path) -> None:
    result = rag(project, "search", "almond prunus dulcis", "--k", "20", "--json")
    assert result.returncode == 0, result.stderr
    hits = json.loads(result.stdout)
    stored = stored_texts(project)
    assert len(hits) == 20
    assert all(hit["text"] == stored[hit["chunk_id"]] for hit in hits)
    (marked,) = [hit for hit in hits if hit["doc_id"] == "docs/markers.txt"]
    assert marked["text"] == MARKER_TEXT
    assert all(marker in marked["text"] for marker in MARKERS)
    assert "\u2028" not in result.stdout  # escaped, so no line splitter breaks the document apart


def test_search_human_shows_every_marker_literally(project: Path) -> None:
    result = rag(project, "search", "almond prunus dulcis", "--k", "3")
    assert result.returncode == 0, result.stderr
    assert flat(MARKER_TEXT) in result.stdout  # the whole text, only whitespace folded
    assert "😄" not in result.stdout  # ":smile:" is not an emoji code here
    lines = result.stdout.splitlines()
    assert lines[0].startswith("1. docs/markers.txt  score ")


def test_batch_of_300_queries_gives_only_json_lines(project: Path) -> None:
    rng = random.Random(7)
    vocabulary = [*WORDS, "almond", "dulcis", "[/]", "x[i]", "[bold]", "[link](http://a.b)", ":smile:", "🦀"]
    queries = [{"_id": f"q{n}[/]", "text": " ".join(rng.sample(vocabulary, rng.randint(1, 3)))} for n in range(300)]
    path = project / "queries.jsonl"
    path.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries), encoding="utf-8")
    result = rag(project, "search", "--queries", str(path), "--k", "3", "--json")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()  # str.splitlines also splits on U+2028: it must not matter
    assert len(lines) == 300 and result.stdout.endswith("\n")
    rows = [json.loads(line) for line in lines]
    assert [row["_id"] for row in rows] == [q["_id"] for q in queries]
    stored = stored_texts(project)
    assert all(row["hits"] and all(h["text"] == stored[h["chunk_id"]] for h in row["hits"]) for row in rows)

    path.write_text("".join(json.dumps(q, ensure_ascii=False) + "\n" for q in queries[:20]), encoding="utf-8")
    plain = rag(project, "search", "--queries", str(path), "--k", "3")  # JSON lines without --json too
    assert plain.returncode == 0 and plain.stdout.splitlines() == lines[:20]


def test_status_json_and_human_with_a_bracketed_data_dir(project: Path) -> None:
    info = json.loads(rag(project, "status", "--json").stdout)
    assert info["data_dir"] == DATA_DIR and info["documents"] == 20
    result = rag(project, "status")
    assert result.returncode == 0, result.stderr
    assert ["data_dir", DATA_DIR] in [line.split() for line in result.stdout.splitlines()]


def test_error_messages_keep_brackets(project: Path) -> None:
    result = rag(project, "search", "x", "--filter", "[/] :smile: x[i]")
    assert result.returncode == 2
    assert "[/] :smile: x[i]" in result.stderr and result.stderr.startswith("error: ")


def test_ask_json_carries_the_hits_exactly(project: Path) -> None:
    result = rag(project, "ask", "What does the orchard note about the almond keep?", "--k", "3", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == ASK_KEYS
    assert answer["error"] is None and isinstance(answer["answer"], str)
    stored = stored_texts(project)
    assert answer["hits"] and all(hit["text"] == stored[hit["chunk_id"]] for hit in answer["hits"])
    assert MARKER_TEXT in [hit["text"] for hit in answer["hits"]]


def test_ask_human_shows_bracketed_sources_literally(project: Path) -> None:
    result = rag(project, "ask", "What does the orchard note about the almond keep?", "--k", "3")
    assert result.returncode == 0, result.stderr
    _, _, chunks = result.stdout.partition("\nRetrieved chunks\n")
    assert "[1] docs/" in chunks
    assert flat(MARKER_TEXT) in chunks
    assert "😄" not in chunks


def test_ask_failure_still_prints_the_sources_exactly(project: Path) -> None:
    with socket.socket() as probe:  # a port nothing listens on: the endpoint refuses at once
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = {"RAG_LLM__BASE_URL": f"http://127.0.0.1:{port}/v1", "RAG_LLM__MAX_RETRIES": "0"}
    question = "What does the orchard note about the almond keep?"
    result = rag(project, "ask", question, "--k", "3", "--json", env=env)
    assert result.returncode == 3, result.stderr
    answer = json.loads(result.stdout)
    assert set(answer) == ASK_KEYS
    assert answer["answer"] is None and answer["error"] and answer["citations"] == []
    assert MARKER_TEXT in [hit["text"] for hit in answer["hits"]]
    result = rag(project, "ask", question, "--k", "3", env=env)
    assert result.returncode == 3
    assert result.stderr.count("error: ") == 1
    assert flat(MARKER_TEXT) in result.stdout.partition("\nRetrieved chunks\n")[2]


def test_a_busy_index_is_reported_in_one_line_and_waited_for(project: Path) -> None:
    from rag.core.lock import WriterLock

    lock = WriterLock(project / DATA_DIR, "test")
    with lock:
        result = rag(project, "ingest", "docs", "--no-wait")
        assert result.returncode == 4
        assert result.stderr.startswith("error: another process (pid ") and result.stderr.count("\n") == 1
        assert f"writing to {DATA_DIR}" in result.stderr
        waiting = subprocess.Popen(
            [sys.executable, "-m", "rag.cli", "--data-dir", DATA_DIR, "ingest", "docs", "--json"], cwd=project,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, encoding="utf-8",
            env={**os.environ, "HF_HUB_OFFLINE": "1"},
        )
        assert waiting.stderr is not None
        message = waiting.stderr.readline()  # printed once, before it blocks
        assert f"writing to {DATA_DIR}; waiting" in message
    stdout, stderr = waiting.communicate(timeout=120)
    assert "Traceback" not in stderr
    assert waiting.returncode == 1 and json.loads(stdout)["unchanged"] == 20  # 1: the broken PDF
