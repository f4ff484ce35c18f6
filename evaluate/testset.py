"""Test sets for ``rag eval``: JSONL or CSV question sets, and BEIR folders for retrieval-only runs.

A row has a ``question`` and optionally:

- ``id``: a stable identifier (default: ``q<line number>``), used to pair questions across runs;
- ``reference``: a ground-truth answer (needed by ``context_recall`` and ``context_precision``);
- ``reference_doc_ids``: the ids of the documents that answer it (needed by ``ndcg@k``, ``recall@k``, ``mrr``);
  a list, or ``{doc id: grade}`` for graded judgments;
- ``filters``: pre-filters for the question's retrieval, in any form ``rag search --filter`` accepts.

CSV columns carry the same names; ``reference_doc_ids`` is a JSON list or ``;``-separated ids, and
``filters`` a JSON object or ``;``-separated filter strings. A BEIR folder holds ``queries.jsonl``
(``_id``, ``text``) and ``qrels/test.tsv`` (``query-id``, ``corpus-id``, ``score``); its queries without
judgments are left out.

The test set's SHA-256 (of the file bytes, or of the BEIR queries and qrels) goes into every report, so two
reports can be checked to be about the same questions.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError

BUNDLED = {"docs_qa": "docs_qa.jsonl"}
"""Test sets shipped in the package, usable by name (``rag eval run docs_qa``)."""


class TestSetError(ConfigError):
    """A test set is missing, unreadable or malformed (exit code 2)."""

    __test__ = False  # not a pytest test class despite its name


@dataclass(frozen=True, slots=True)
class TestCase:
    """One question of a test set.

    Attributes:
        id: stable identifier, unique within the set.
        question: the question asked.
        reference: a ground-truth answer, or ``None``.
        reference_docs: graded relevant documents, ``doc id -> grade`` (empty when none are given).
        filters: retrieval pre-filters for this question, or ``None``.
    """

    __test__ = False

    id: str
    question: str
    reference: str | None = None
    reference_docs: dict[str, int] = field(default_factory=dict)
    filters: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "question": self.question,
            "reference": self.reference,
            "reference_doc_ids": dict(self.reference_docs),
            "filters": self.filters,
        }


@dataclass(frozen=True, slots=True)
class TestSet:
    """The questions of one test set, with where they came from and a hash of the source."""

    __test__ = False

    cases: list[TestCase]
    source: str
    format: str
    sha256: str

    @property
    def has_references(self) -> bool:
        return any(case.reference for case in self.cases)

    @property
    def has_reference_docs(self) -> bool:
        return any(case.reference_docs for case in self.cases)

    def limited(self, limit: int | None) -> TestSet:
        """The first ``limit`` questions (all when ``limit`` is ``None``)."""
        if limit is None:
            return self
        if limit <= 0:
            raise TestSetError(f"--limit must be positive, got {limit}")
        return TestSet(self.cases[:limit], self.source, self.format, self.sha256)

    def describe(self) -> dict[str, Any]:
        return {"source": self.source, "format": self.format, "sha256": self.sha256, "questions": len(self.cases)}


def bundled_path(name: str) -> Path:
    """The file of a bundled test set (``docs_qa``)."""
    return Path(str(resources.files("rag.evaluate").joinpath("testsets", BUNDLED[name])))


def load_testset(path: Path | str) -> TestSet:
    """Read a test set from a ``.jsonl``/``.json`` file, a ``.csv`` file, a BEIR folder, or a bundled name.

    Raises:
        TestSetError: the path does not exist, or a row is malformed (the message names file and line).
    """
    if str(path) in BUNDLED and not Path(path).exists():
        path = bundled_path(str(path))
    path = Path(path)
    if path.is_dir():
        return _load_beir(path)
    if not path.is_file():
        raise TestSetError(f"test set {path} does not exist (give a .jsonl or .csv file, or a BEIR folder)")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise TestSetError(f"cannot read test set {path}: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TestSetError(f"{path}: invalid UTF-8 at byte {exc.start}") from None
    suffix = path.suffix.lower()
    if suffix == ".csv":
        rows = _csv_rows(path, text)
    elif suffix in (".jsonl", ".json", ".ndjson"):
        rows = _jsonl_rows(path, text)
    else:
        raise TestSetError(f"{path}: unsupported test set type {suffix or '(none)'}; use .jsonl, .csv or a BEIR folder")
    cases = _cases(path, rows)
    return TestSet(cases, str(path), "csv" if suffix == ".csv" else "jsonl", hashlib.sha256(data).hexdigest())


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise TestSetError(f"{path} line {number}: invalid JSON ({exc})") from None
        if not isinstance(row, dict):
            raise TestSetError(f"{path} line {number}: expected a JSON object, got {type(row).__name__}")
        rows.append((number, row))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict[str, Any]]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or "question" not in reader.fieldnames:
        raise TestSetError(f"{path}: the CSV header must have a 'question' column, got {reader.fieldnames}")
    rows = []
    for row in reader:
        number = reader.line_num
        parsed: dict[str, Any] = {k: v for k, v in row.items() if k is not None and v not in (None, "")}
        for key in ("reference_doc_ids", "filters"):
            raw = parsed.get(key)
            if isinstance(raw, str):
                stripped = raw.strip()
                if stripped.startswith(("[", "{")):
                    try:
                        parsed[key] = json.loads(stripped)
                    except ValueError as exc:
                        raise TestSetError(f"{path} line {number}: {key} is not valid JSON ({exc})") from None
                else:
                    parsed[key] = [part.strip() for part in stripped.split(";") if part.strip()]
        rows.append((number, parsed))
    return rows


def _cases(path: Path, rows: list[tuple[int, dict[str, Any]]]) -> list[TestCase]:
    cases: list[TestCase] = []
    seen: set[str] = set()
    for number, row in rows:
        where = f"{path} line {number}"
        question = row.get("question")
        if not isinstance(question, str) or not question.strip():
            raise TestSetError(f"{where}: 'question' is missing or empty")
        case_id = str(row.get("id") if row.get("id") not in (None, "") else f"q{number}")
        if case_id in seen:
            raise TestSetError(f"{where}: duplicate id {case_id!r}")
        seen.add(case_id)
        reference = row.get("reference")
        if reference is not None and not isinstance(reference, str):
            raise TestSetError(f"{where}: 'reference' must be text")
        cases.append(
            TestCase(
                case_id,
                question.strip(),
                reference.strip() if reference and reference.strip() else None,
                _reference_docs(where, row.get("reference_doc_ids")),
                row.get("filters") or None,
            )
        )
    if not cases:
        raise TestSetError(f"{path}: the test set holds no questions")
    return cases


def _reference_docs(where: str, value: Any) -> dict[str, int]:
    if value is None:
        return {}
    if isinstance(value, str):
        return {value: 1}
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return dict.fromkeys(value, 1)
    if isinstance(value, Mapping) and all(isinstance(g, int) and not isinstance(g, bool) for g in value.values()):
        return {str(k): int(g) for k, g in value.items()}
    raise TestSetError(f"{where}: 'reference_doc_ids' must be a list of ids or an object of id -> integer grade")


def _load_beir(folder: Path) -> TestSet:
    queries_path = folder / "queries.jsonl"
    qrels_path = folder / "qrels" / "test.tsv"
    for needed in (queries_path, qrels_path):
        if not needed.is_file():
            raise TestSetError(f"{folder} is not a BEIR folder: {needed} is missing")
    digest = hashlib.sha256()
    qrels: dict[str, dict[str, int]] = {}
    qrels_bytes = qrels_path.read_bytes()
    for number, line in enumerate(qrels_bytes.decode("utf-8").splitlines(), start=1):
        parts = line.rstrip("\n").split("\t")
        if number == 1 and parts and not parts[-1].lstrip("-").isdigit():
            continue  # the header line
        if len(parts) != 3 or not parts[2].lstrip("-").isdigit():
            raise TestSetError(f"{qrels_path} line {number}: expected query-id<TAB>corpus-id<TAB>score")
        if int(parts[2]) > 0:
            qrels.setdefault(parts[0], {})[parts[1]] = int(parts[2])
    queries_bytes = queries_path.read_bytes()
    digest.update(queries_bytes)
    digest.update(qrels_bytes)
    cases = []
    for number, row in _jsonl_rows(queries_path, queries_bytes.decode("utf-8")):
        if "_id" not in row or not isinstance(row.get("text"), str):
            raise TestSetError(f"{queries_path} line {number}: a query needs '_id' and 'text'")
        qid = str(row["_id"])
        if qid in qrels:
            cases.append(TestCase(qid, row["text"], None, qrels[qid], None))
    if not cases:
        raise TestSetError(f"{folder}: no query in queries.jsonl has a judgment in qrels/test.tsv")
    return TestSet(cases, str(folder), "beir", digest.hexdigest())
