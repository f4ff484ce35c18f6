"""The ingest pipeline's defects from issue 14: symbolic links, silent skips, memory and commits in huge files.

Each test would fail on the code before the fix: a link loop aborted the run, links were cited by their
target and counted twice, unsupported files vanished without a word, and a large single-section file
was tokenized whole (1.2 GB of RSS for 10 MB of text) and committed only when fully embedded.
"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from rag.api.schemas import IngestReportResponse
from rag.core.catalog import INCOMPLETE
from rag.core.types import Document, Section
from rag.ingest import chunking
from rag.ingest.chunking import SlidingWindowChunker

WORDS = (
    "river stone lantern orchard copper meadow harbor violet thunder saddle quarry ember glacier willow "
    "falcon marble tundra cobalt prairie juniper canyon velvet summit basalt"
).split()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def _sources(engine) -> set[str]:
    return {meta["source"] for _, _, meta in engine.catalog.iter_chunks()}


def _prose(megabytes: float, seed: int = 0) -> str:
    """One paragraph of short sentences, one per line: a single section with no paragraph break."""
    rng = random.Random(seed)
    lines, size = ["A long plain text"], 0
    while size < megabytes * 2**20:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + "."
        lines.append(line)
        size += len(line) + 1
    return "\n".join(lines) + "\n"


def _rag(cwd: Path, *args: str) -> list[str]:
    return [sys.executable, "-m", "rag.cli", "--data-dir", str(cwd / ".rag"), *args]


def _env(**extra: str) -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **extra}


# --- Symbolic links -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_a_symlink_loop_is_reported_and_the_rest_committed(make_engine, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _write(docs / "good.txt", "Good notes\n\nOtters hold hands while they sleep.\n")
    (docs / "loop.txt").symlink_to("loop.txt")
    engine = make_engine()
    report = engine.ingest([docs])  # raised RuntimeError("Symlink loop ...") before, committing nothing
    assert report.added == ["docs/good.txt"]
    assert [path for path, _ in report.failed] == ["docs/loop.txt"]
    assert report.failed[0][1].startswith("symlink loop")
    assert engine.search("otters sleep", 1)[0].chunk.source == "docs/good.txt"


@pytest.mark.slow
def test_a_link_is_cited_by_its_own_path_and_leaves_with_it(make_engine, tmp_path: Path) -> None:
    target = _write(tmp_path / "elsewhere" / "seals.txt", "Seal notes\n\nSeals sing at dusk on the northern rocks.\n")
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "seals.txt").symlink_to(target)
    (docs / "gone.txt").symlink_to(tmp_path / "elsewhere" / "missing.txt")
    engine = make_engine()
    report = engine.ingest([docs])
    assert report.added == ["docs/seals.txt"]
    assert report.failed == [("docs/gone.txt", f"broken symbolic link (its target {tmp_path / 'elsewhere' / 'missing.txt'} does not exist)")]
    assert engine.search("seals sing at dusk", 1)[0].chunk.source == "docs/seals.txt"  # not elsewhere/seals.txt

    (docs / "seals.txt").unlink()
    after = engine.ingest([docs])
    assert after.removed == ["docs/seals.txt"]
    assert _sources(engine) == set()


@pytest.mark.slow
def test_a_link_and_its_target_in_the_folder_give_one_document(make_engine, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _write(docs / "zebra.txt", "Zebra notes\n\nEvery zebra has its own stripe pattern.\n")
    (docs / "alias.txt").symlink_to("zebra.txt")  # sorts first: the target still wins
    engine = make_engine()
    report = engine.ingest([docs])
    assert (report.added, report.skipped) == (["docs/zebra.txt"], [("docs/alias.txt", "link to docs/zebra.txt, which is ingested too")])
    assert engine.status()["documents"] == 1 and _sources(engine) == {"docs/zebra.txt"}
    again = engine.ingest([docs])
    assert (again.added, again.unchanged, len(again.skipped)) == ([], ["docs/zebra.txt"], 1)


@pytest.mark.slow
def test_ids_of_ordinary_files_do_not_change(make_engine, tmp_path: Path) -> None:
    """Links among the folders above a file are resolved as before, so an upgrade re-ingests nothing."""
    real = _write(tmp_path / "real" / "docs" / "notes.txt", "Notes\n\nThe lighthouse keeper logs every ship.\n")
    (tmp_path / "alias").symlink_to(real.parent)
    engine = make_engine()
    assert engine.ingest([tmp_path / "alias"]).added == ["real/docs/notes.txt"]
    assert engine.ingest([real.parent]).unchanged == ["real/docs/notes.txt"]


# --- Every file is counted ------------------------------------------------------------------------------


@pytest.mark.slow
def test_unsupported_files_are_skipped_with_a_reason_not_dropped(make_engine, tmp_path: Path) -> None:
    office = tmp_path / "office"
    _write(office / "memo.txt", "Memo\n\nThe quarterly meeting moves to Thursday.\n")
    for name in ("budget.xyz", "tool.exe", "photo.heic", "sub/archive.7z", "README"):
        (office / name).parent.mkdir(parents=True, exist_ok=True)
        (office / name).write_bytes(b"not for us")
    for silent in (".DS_Store", ".git/config", "node_modules/x/readme.txt"):  # hidden and tool folders
        (office / silent).parent.mkdir(parents=True, exist_ok=True)
        (office / silent).write_bytes(b"quiet")
    (office / "shared").symlink_to(tmp_path, target_is_directory=True)
    engine = make_engine()
    report = engine.ingest([office])
    assert report.added == ["office/memo.txt"] and report.ok
    assert report.skipped == [
        ("office/README", "no file suffix (type unknown)"),
        ("office/budget.xyz", "unsupported file type .xyz"),
        ("office/photo.heic", "unsupported file type .heic"),
        ("office/sub/archive.7z", "unsupported file type .7z"),
        ("office/tool.exe", "unsupported file type .exe"),
        ("office/shared", "link to a folder (links to folders are not followed)"),
    ]
    shown = report.to_dict(names=True)
    assert shown["skipped"][0] == {"path": "office/README", "reason": "no file suffix (type unknown)"}
    assert IngestReportResponse.model_validate(shown).skipped[1].reason == "unsupported file type .xyz"  # the API's shape


@pytest.mark.slow
def test_the_cli_counts_skipped_files_and_exits_0(tmp_path: Path) -> None:
    _write(tmp_path / "office" / "memo.txt", "Memo\n\nThe quarterly meeting moves to Thursday.\n")
    (tmp_path / "office" / "sheet.xyz").write_bytes(b"cells")
    summary = subprocess.run(_rag(tmp_path, "-v", "ingest", "office"), cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=600)
    assert summary.returncode == 0, summary.stderr
    assert "1 added, 0 updated, 0 unchanged, 0 removed, 0 failed, 1 skipped;" in summary.stdout
    assert "skipped office/sheet.xyz: unsupported file type .xyz" in summary.stderr
    (tmp_path / "office" / "sheet.xyz").write_bytes(b"cells, changed")
    as_json = subprocess.run(_rag(tmp_path, "ingest", "office", "--json"), cwd=tmp_path, capture_output=True, text=True, env=_env(), timeout=600)
    assert as_json.returncode == 0, as_json.stderr
    assert json.loads(as_json.stdout)["skipped"] == [{"path": "office/sheet.xyz", "reason": "unsupported file type .xyz"}]


# --- Huge files: slices, memory, commits inside one document ------------------------------------------------


def test_long_sections_are_tokenized_in_slices_cut_at_breaks(tokenizer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chunking, "_SLICE_CHARS", 4000)
    text = "\n\n".join(_prose(0.0004, seed=i).strip() for i in range(12))  # 12 paragraphs of ~400 chars
    doc = Document("d", text, "d", "d", [Section(text=text, start=0, headings=("H",))])
    chunker = SlidingWindowChunker(tokenizer, size=64, overlap=16)
    spans = [span for _, span in chunker.iter_spans([doc])]
    assert spans == chunker.chunk_many([doc])[0]
    assert all(span.text == text[span.start : span.end] and span.n_tokens <= 64 for span in spans)
    assert {span.headings for span in spans} == {("H",)}
    cuts = [len(piece.text) for piece in chunking._slices(doc.sections[0], 4000)]
    assert sum(cuts) == len(text) and max(cuts) <= 4000 and len(cuts) > 1
    ends, offset = [], 0
    for length in cuts[:-1]:
        offset += length
        ends.append(offset)
    assert all(text[end - 2 : end] == "\n\n" for end in ends)  # each cut at a paragraph break
    assert not any(span.start < end < span.end for span in spans for end in ends)  # no window crosses one


_MEMORY_CHILD = """
import hashlib, json, sys
from pathlib import Path
import numpy as np
from rag.core.settings import load_settings
from rag.engine import RagEngine

def rss(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024

root = Path(sys.argv[1])
engine = RagEngine(load_settings(data_dir=root / ".rag", ingest={"batch_chunks": 64}), project_root=root)
dimension = engine.embedder.dimension
engine.embedder.tokenizer

def encode(texts, show_progress=False):  # fake: a hash of each text, for a test of memory alone
    rows = [np.frombuffer(hashlib.shake_128(t.encode()).digest(dimension), dtype=np.uint8) for t in texts]
    vectors = np.asarray(rows, dtype=np.float32) - 127.5
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

engine.embedder.encode = encode
base = rss("VmRSS")
report = engine.ingest([root / "big.txt"])
print(json.dumps({"growth_mb": rss("VmHWM") - base, "chunks": engine.status()["chunks"], "failed": report.failed}))
"""


@pytest.mark.slow
def test_a_large_single_section_file_ingests_in_bounded_memory(tmp_path: Path) -> None:
    """6 MB of one-paragraph text, ingested in a subprocess with a fake embedder (a hash per text: this is
    about memory, and the real model would take minutes): peak RSS grows by less than 400 MB.

    Before the fix the same file grew RSS by about 750 MB just to load and chunk (1.2 GB for 10 MB,
    ``benchmarks/bench_ingest_memory.py``); after it, 6 MB of text costs the text itself (twice, as
    bytes and as str) plus slices and batches of bounded size.
    """
    (tmp_path / "big.txt").write_text(_prose(6), encoding="utf-8")
    child = subprocess.run(
        [sys.executable, "-c", _MEMORY_CHILD, str(tmp_path)], capture_output=True, text=True, env=_env(), timeout=900
    )
    assert child.returncode == 0, child.stderr[-2000:]
    result = json.loads(child.stdout.strip().splitlines()[-1])
    assert result["failed"] == [] and result["chunks"] > 5000
    assert result["growth_mb"] < 400, result


@pytest.mark.slow
def test_a_kill_inside_one_large_document_keeps_its_committed_batches(tmp_path: Path) -> None:
    """The real model: a one-section file of ~250 chunks, killed after its first batches, keeps them
    (marked incomplete, never as done), and the re-run completes the document reusing their vectors."""
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "long.txt").write_text(_prose(0.2, seed=3), encoding="utf-8")
    env = _env(RAG_INGEST__BATCH_CHUNKS="16")
    catalog = tmp_path / ".rag" / "catalog.sqlite"

    def committed() -> int:
        if not catalog.exists():
            return 0
        try:
            with sqlite3.connect(f"file:{catalog}?mode=ro", uri=True) as db:
                return db.execute("SELECT COUNT(*) FROM chunks").fetchone()[0]
        except sqlite3.Error:  # tables not created yet
            return 0

    proc = subprocess.Popen(_rag(tmp_path, "ingest", "corpus"), cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 600
    while committed() < 32 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()

    status = subprocess.run(_rag(tmp_path, "status", "--json"), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600)
    after_kill = json.loads(status.stdout)
    with sqlite3.connect(catalog) as db:
        hashes = db.execute("SELECT content_hash FROM documents").fetchall()
        files = db.execute("SELECT file_hash FROM files").fetchall()
    assert after_kill["documents"] == 1 and after_kill["chunks"] >= 32
    assert hashes == [(INCOMPLETE,)] and files == [(INCOMPLETE,)], "kill landed after the end; the file is too small"

    rerun = subprocess.run(_rag(tmp_path, "ingest", "corpus", "--json"), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert rerun.returncode == 0, rerun.stderr
    report = json.loads(rerun.stdout)
    assert report["updated"] == 1 and report["documents"] == 1 and report["chunks"] > after_kill["chunks"]
    assert report["chunks_added"] <= report["chunks"] - after_kill["chunks"]  # committed vectors reused
    with sqlite3.connect(catalog) as db:
        assert INCOMPLETE not in {row[0] for row in db.execute("SELECT content_hash FROM documents")}
        orders = [row[0] for row in db.execute("SELECT ord FROM chunks ORDER BY ord")]
        starts = [json.loads(row[0])["start"] for row in db.execute("SELECT metadata FROM chunks ORDER BY ord")]
    assert orders == list(range(report["chunks"])) and starts == sorted(starts)
    again = subprocess.run(_rag(tmp_path, "ingest", "corpus", "--json"), cwd=tmp_path, capture_output=True, text=True, env=env, timeout=900)
    assert json.loads(again.stdout)["unchanged"] == 1


@pytest.mark.slow
def test_an_updated_large_document_reuses_its_windows_and_drops_only_stale_ones(make_engine, tmp_path: Path) -> None:
    """Commit order across the parts of one document, with a fake embedder (a hash per text; the test is
    about which vectors are written, reused and deleted, not about their values)."""
    import hashlib

    import numpy as np

    path = tmp_path / "docs" / "long.txt"
    path.parent.mkdir()
    text = _prose(0.06, seed=5)
    path.write_text(text, encoding="utf-8")
    engine = make_engine(ingest={"batch_chunks": 8})
    dimension = engine.embedder.dimension
    embedded: list[str] = []

    def encode(texts: list[str], show_progress: bool = False) -> np.ndarray:
        embedded.extend(texts)
        rows = [np.frombuffer(hashlib.shake_128(t.encode()).digest(dimension), dtype=np.uint8) for t in texts]
        vectors = np.asarray(rows, dtype=np.float32) - 127.5
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    engine.embedder.encode = encode
    first = engine.ingest([path.parent])
    total = engine.status()["chunks"]
    assert first.chunks_added == total > 24  # several parts of one document
    before = engine.catalog.all_chunk_ids()

    path.write_text(text[:-2000] + "The end.\n", encoding="utf-8")  # same offsets: early windows keep their ids
    embedded.clear()
    second = engine.ingest([path.parent])
    after = engine.catalog.all_chunk_ids()
    assert second.updated == ["docs/long.txt"]
    assert engine.store.ids() == after and engine.catalog.journaled() == set()  # nothing stale or orphaned left
    assert second.chunks_removed == len(before - after) and second.chunks_added == len(after - before) == len(embedded)
    assert len(after & before) > total // 2  # windows that did not change were reused, not re-embedded
    [doc] = engine.catalog.documents()
    assert doc["content_hash"] != INCOMPLETE and doc["chunks"] == len(after)


@pytest.mark.slow
def test_a_file_over_max_file_mb_is_refused_before_it_is_read(make_engine, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``Path.read_bytes`` is patched to fail for the large file (a fault injector, not a stand-in): the
    size is checked from ``stat`` first, so the file is never read."""
    big = _write(tmp_path / "docs" / "big.txt", "Big\n\n" + "walrus " * 400)
    _write(tmp_path / "docs" / "small.txt", "Small\n\nA short note on puffins.\n")
    real_read = Path.read_bytes

    def read_bytes(self: Path) -> bytes:
        if self.name == big.name:
            raise AssertionError("the oversized file was read")
        return real_read(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    engine = make_engine(ingest={"max_file_mb": 0.001})
    report = engine.ingest([big.parent])
    assert report.added == ["docs/small.txt"]
    assert report.failed == [("docs/big.txt", "file of 0 MiB is larger than ingest.max_file_mb (0.001)")]
