"""The benchmarks' shared data readers (``rag.benchmarks.common``)."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.benchmarks.common import parse_qrels


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "test.tsv"
    path.write_text(text, encoding="utf-8")
    return path


def test_a_beir_header_is_skipped(tmp_path: Path) -> None:
    path = write(tmp_path, "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t1\nq2\td3\t1\n")
    assert parse_qrels(path) == {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}


def test_a_headerless_file_keeps_its_first_judgment(tmp_path: Path) -> None:
    # The old reader skipped line 1 unconditionally and lost q1/d1 here.
    path = write(tmp_path, "q1\td1\t2\nq1\td2\t1\nq2\td3\t1\n")
    assert parse_qrels(path) == {"q1": {"d1": 2, "d2": 1}, "q2": {"d3": 1}}


def test_non_positive_grades_and_blank_lines_are_dropped(tmp_path: Path) -> None:
    path = write(tmp_path, "q1\td1\t0\n\nq1\td2\t1\r\nq2\td3\t-1\n")
    assert parse_qrels(path) == {"q1": {"d2": 1}}


@pytest.mark.parametrize("line", ["q1\td1\tgood", "q1\td1", "q1\td1\t1\textra"])
def test_a_malformed_judgment_names_its_line(tmp_path: Path, line: str) -> None:
    path = write(tmp_path, f"q0\td0\t1\n{line}\n")
    with pytest.raises(ValueError, match=r"test\.tsv:2: expected"):
        parse_qrels(path)


def test_the_shared_data_loses_no_judgment() -> None:
    """On the real NFCorpus file (a header line): every judged line with a grade above 0 is read."""
    from rag.benchmarks.common import DATA

    path = DATA / "nfcorpus" / "qrels" / "test.tsv"
    if not path.is_file():
        pytest.skip(f"benchmark data not found at {path.parent}; set RAG_BENCH_DATA to the folder holding nfcorpus/")
    lines = path.read_text(encoding="utf-8").splitlines()[1:]
    positive = sum(1 for line in lines if int(line.split("\t")[2]) > 0)
    assert sum(len(docs) for docs in parse_qrels(path).values()) == positive
