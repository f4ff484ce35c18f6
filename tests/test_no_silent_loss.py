"""Nothing is deleted or moved on a guess: unreadable folders, narrower ingests, id clashes, reserved keys.

Every test here runs the real pipeline (real model, FAISS, catalog, BM25) and checks what stays searchable.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from rag.core.errors import ConfigError

pytestmark = pytest.mark.slow


def _sources(engine) -> set[str]:
    return {meta["source"] for _, _, meta in engine.catalog.iter_chunks()}


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_an_unlistable_folder_is_reported_and_its_files_are_kept(tmp_path: Path, corpus: Path) -> None:
    """Ingest as root with the capabilities that bypass permissions dropped, so chmod 000 really bites."""
    data = tmp_path / ".rag"
    rag = [sys.executable, "-m", "rag.cli", "--data-dir", str(data), "ingest", str(corpus), "--json"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    first = subprocess.run(rag, cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    assert first.returncode == 0, first.stderr
    assert json.loads(first.stdout)["documents"] == 4
    locked = corpus / "guide"
    locked.chmod(0)
    try:
        dropped = ["setpriv", "--inh-caps=-all", "--bounding-set=-all", "--"]
        probe = subprocess.run([*dropped, "ls", str(locked)], capture_output=True)
        if probe.returncode == 0:
            pytest.skip("cannot make a folder unreadable here (setpriv missing or permissions not enforced)")
        second = subprocess.run([*dropped, *rag], cwd=tmp_path, capture_output=True, text=True, env=env, timeout=300)
    finally:
        locked.chmod(0o755)
    report = json.loads(second.stdout)
    assert second.returncode == 1  # something failed, and it says what
    assert report["removed"] == 0 and report["documents"] == 4
    assert [f["path"] for f in report["failed"]] == ["docs/guide"]
    assert "cannot list folder" in report["failed"][0]["reason"]
    assert "Traceback" not in second.stderr


def test_ingesting_a_folder_removes_only_what_was_ingested_from_under_it(make_engine, tmp_path: Path, corpus: Path) -> None:
    outside = _write(tmp_path.parent / f"{tmp_path.name}-elsewhere" / "far.md", "# Far away\n\nA note kept elsewhere.\n")
    hidden = _write(corpus / ".drafts" / "draft.md", "# Draft\n\nA draft given by name.\n")
    engine = make_engine()
    engine.ingest([corpus])
    engine.ingest([outside])  # an absolute id, outside the project root
    engine.ingest([hidden])  # a file the folder walk skips (hidden folder), ingested by name
    before = _sources(engine)
    assert str(outside.resolve()) in before and "docs/.drafts/draft.md" in before

    (corpus / "notes" / "history.txt").unlink()
    report = engine.ingest([tmp_path])  # `rag ingest .` from the project root
    assert report.removed == ["docs/notes/history.txt"]
    after = _sources(engine)
    assert str(outside.resolve()) in after, "a file ingested from outside the folder was removed"
    assert "docs/.drafts/draft.md" in after, "a file the walk skips but that still exists was removed"
    assert engine.search("A note kept elsewhere", 1)[0].chunk.source == str(outside.resolve())

    sub = engine.ingest([corpus / "web"])  # a narrower folder touches nothing outside it
    assert sub.removed == [] and _sources(engine) == after


def test_a_shared_jsonl_id_is_a_failed_record_not_a_silent_move(make_engine, tmp_path: Path) -> None:
    first = _write(tmp_path / "data" / "a.jsonl", '{"_id": "d1", "text": "apples grow on trees"}\n')
    _write(
        tmp_path / "data" / "b.jsonl",
        '{"_id": "d1", "text": "bananas grow in bunches"}\n{"_id": "d2", "text": "cherries are red"}\n',
    )
    engine = make_engine()
    report = engine.ingest([first.parent])
    assert report.failed == [
        ("data/b.jsonl: _id 'd1'", "already ingested from data/a.jsonl; document ids must be unique across files (record skipped)")
    ]
    [hit] = engine.search("apples trees", 1, filter={"doc_id": "d1"})
    assert hit.chunk.source == "data/a.jsonl" and "apples" in hit.chunk.text
    assert engine.search("cherries", 1)[0].chunk.doc_id == "d2"  # the rest of the file is in
    # The clash is reported again on every run until it is resolved, never forgotten.
    again = engine.ingest([first.parent])
    assert [path for path, _ in again.failed] == ["data/b.jsonl: _id 'd1'"]

    # Resolved: the record leaves a.jsonl, so b.jsonl may have it.
    first.write_text('{"_id": "d3", "text": "dates are sweet"}\n')
    engine.ingest([first.parent])
    resolved = engine.ingest([first.parent])
    assert resolved.failed == []
    assert engine.search("bananas bunches", 1)[0].chunk.doc_id == "d1"


def test_reserved_metadata_fails_one_file_or_record_not_the_batch(make_engine, tmp_path: Path) -> None:
    docs = tmp_path / "docs"
    _write(docs / "bad.md", "---\nsource: somewhere else\npage: 3\n---\n# Bad\n\nFront-matter that lies.\n")
    _write(docs / "good.md", "---\ntags: [fine]\n---\n# Good\n\nHonest front-matter about walruses.\n")
    _write(
        docs / "mixed.jsonl",
        '{"_id": "r1", "text": "otters hold hands", "metadata": {"chunk_id": "x"}}\n'
        '{"_id": "r2", "text": "seals sing at dusk", "metadata": {"colony": "north"}}\n',
    )
    engine = make_engine()
    report = engine.ingest([docs])
    failed = dict(report.failed)
    assert set(failed) == {"docs/bad.md", "docs/mixed.jsonl: line 1 (_id 'r1')"}
    assert "page, source are reserved" in failed["docs/bad.md"]
    assert "chunk_id are reserved" in failed["docs/mixed.jsonl: line 1 (_id 'r1')"]
    assert engine.search("walruses", 1)[0].chunk.source == "docs/good.md"
    assert engine.search("seals dusk", 1)[0].chunk.metadata["colony"] == "north"

    with pytest.raises(ConfigError, match="text are reserved"):
        engine.ingest([docs], {"text": "override"})  # --meta: refused before anything changes


def test_the_sweep_deletes_only_journaled_orphans(make_engine, corpus: Path) -> None:
    """Vectors another writer flushed but has not recorded yet are not journaled as leftovers: never swept."""
    import numpy as np

    from rag.stores.base import StoredChunk

    engine = make_engine()
    engine.ingest([corpus])
    with engine.writing() as writer:
        vector = np.ones(writer.store.dimension, dtype=np.float32)
        writer.store.upsert([
            StoredChunk("in-flight", vector, "flushed by a writer, not yet recorded", {}),
            StoredChunk("left-by-a-dead-run", vector, "journaled, never committed", {}),
        ])
        writer.store.flush()
        writer.catalog.journal(["left-by-a-dead-run"])
    (corpus / "notes" / "extra.txt").write_text("Extra\n\nA new note so that the next ingest commits something.\n")
    engine.ingest([corpus])
    ids = engine.store.ids()
    assert "in-flight" in ids, "a vector nobody journaled was swept"
    assert "left-by-a-dead-run" not in ids and not engine.catalog.journaled()
