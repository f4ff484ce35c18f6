"""Test sets: JSONL, CSV and BEIR folders, their errors, and the bundled QA set over docs/."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from eval_helpers import QA, REPO

from rag.evaluate.metrics import parse_metrics
from rag.evaluate.testset import TestSetError, load_testset


def test_jsonl_rows_with_every_field(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    rows = [
        {"id": "a", "question": "What is alpha?", "reference": "The dense weight.", "reference_doc_ids": ["docs/search.md"],
         "filters": ["source~docs/*"]},
        {"question": "Graded?", "reference_doc_ids": {"d1": 2, "d2": 1}},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    testset = load_testset(path)
    first, second = testset.cases
    assert (first.id, first.reference, first.reference_docs, first.filters) == (
        "a", "The dense weight.", {"docs/search.md": 1}, ["source~docs/*"])
    assert (second.id, second.reference, second.reference_docs) == ("q2", None, {"d1": 2, "d2": 1})
    assert testset.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert testset.has_references and testset.has_reference_docs


def test_csv_rows(tmp_path: Path) -> None:
    path = tmp_path / "qa.csv"
    path.write_text(
        "id,question,reference,reference_doc_ids,filters\n"
        'c1,"What is BM25, briefly?",A keyword ranking.,docs/search.md;docs/concepts.md,\n'
        'c2,Which store?,,"[""docs/vector-stores.md""]","{""source"": {""glob"": ""docs/*""}}"\n',
        encoding="utf-8",
    )
    first, second = load_testset(path).cases
    assert first.question == "What is BM25, briefly?"
    assert first.reference_docs == {"docs/search.md": 1, "docs/concepts.md": 1}
    assert first.filters is None
    assert second.reference is None
    assert second.reference_docs == {"docs/vector-stores.md": 1}
    assert second.filters == {"source": {"glob": "docs/*"}}


def test_beir_folder_keeps_judged_queries(tmp_path: Path) -> None:
    (tmp_path / "qrels").mkdir()
    (tmp_path / "queries.jsonl").write_text(
        '{"_id": "1", "text": "first"}\n{"_id": "2", "text": "unjudged"}\n{"_id": "3", "text": "third"}\n')
    (tmp_path / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n1\td1\t1\n3\td2\t2\n3\td3\t0\n")
    testset = load_testset(tmp_path)
    assert testset.format == "beir"
    assert [(c.id, c.question, c.reference_docs) for c in testset.cases] == [("1", "first", {"d1": 1}),
                                                                            ("3", "third", {"d2": 2})]
    specs, _ = parse_metrics(None, has_references=False, has_reference_docs=True, retrieval_only=True)
    assert [s.name for s in specs] == ["ndcg@10", "recall@10", "mrr@10"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ('{"question": "ok"}\n{not json}\n', "line 2: invalid JSON"),
        ('{"reference": "no question"}\n', "line 1: 'question' is missing"),
        ('{"id": "x", "question": "a"}\n{"id": "x", "question": "b"}\n', "line 2: duplicate id 'x'"),
        ('{"question": "a", "reference_doc_ids": [1, 2]}\n', "reference_doc_ids"),
        ("\n\n", "holds no questions"),
    ],
)
def test_malformed_jsonl_names_the_line(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(TestSetError, match=message):
        load_testset(path)


def test_missing_and_unsupported_files(tmp_path: Path) -> None:
    with pytest.raises(TestSetError, match="does not exist"):
        load_testset(tmp_path / "nope.jsonl")
    (tmp_path / "qa.txt").write_text("question?")
    with pytest.raises(TestSetError, match=r"unsupported test set type .txt"):
        load_testset(tmp_path / "qa.txt")
    with pytest.raises(TestSetError, match="not a BEIR folder"):
        load_testset(tmp_path)
    assert TestSetError("x").exit_code == 2


def test_bundled_qa_set_covers_the_docs() -> None:
    testset = load_testset("docs_qa")
    assert Path(testset.source).resolve() == QA.resolve()
    assert len(testset.cases) >= 30
    for case in testset.cases:
        assert case.question.endswith("?"), case.id
        assert case.reference and len(case.reference) > 20, case.id
        assert case.reference_docs, case.id
        for doc in case.reference_docs:
            assert (REPO / doc).is_file(), f"{case.id}: {doc} is not a page of docs/"
    cited = {doc for case in testset.cases for doc in case.reference_docs}
    assert len(cited) >= 10  # the set spans the manual, not one page


def test_metric_names_and_defaults() -> None:
    specs, notes = parse_metrics(None, has_references=False, has_reference_docs=False)
    assert [s.name for s in specs] == ["faithfulness"] and "context_recall left out" in notes[0]
    specs, _ = parse_metrics(["faithfulness,ndcg@5", "mrr", "recall"], has_references=True, has_reference_docs=True)
    assert [(s.name, s.kind, s.cutoff) for s in specs] == [
        ("faithfulness", "judge", None), ("ndcg@5", "retrieval", 5), ("mrr@10", "retrieval", 10),
        ("recall@10", "retrieval", 10)]
    from rag.core.errors import ConfigError

    with pytest.raises(ConfigError, match="unknown metric 'bleu'"):
        parse_metrics(["bleu"], has_references=True, has_reference_docs=True)
    with pytest.raises(ConfigError, match="BEIR folder is for retrieval metrics only"):
        parse_metrics(["faithfulness"], has_references=False, has_reference_docs=True, retrieval_only=True)
