"""BM25 over bm25s: scores equal rank_bm25's on the same tokens, filters, persistence."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from rank_bm25 import BM25Okapi, BM25Plus

from rag.core.errors import StorageError
from rag.core.filters import parse_filter
from rag.retrieve.bm25 import Analyzer, BM25Index

CORPUS = [
    "Hybrid search combines dense vectors with BM25 keyword scores.",
    "The ingest command chunks documents into sliding windows of tokens.",
    "Incremental ingest skips files whose content hash did not change.",
    "FAISS stores vectors on disk; Qdrant runs as a distributed engine.",
    "Reciprocal rank fusion merges ranked lists without score normalisation.",
    "Metadata filters restrict search to matching chunks before ranking.",
    "Citations point at numbered context blocks in the prompt.",
    "The embedding model is all-MiniLM-L6-v2, packaged for offline use.",
    "Chunk overlap keeps sentences that straddle a window boundary searchable.",
    "Dense retrieval understands paraphrases; keyword search matches exact terms.",
    "The local llama.cpp server speaks the OpenAI chat completions API.",
    "Benchmarks compare the pipeline with a baseline measured in the same run.",
]
QUERIES = ["hybrid keyword scores", "incremental ingest hash", "vectors disk engine", "citations prompt", "zzz"]


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    return Analyzer()


def _index(method: str, analyzer: Analyzer, k1: float = 1.5, b: float = 0.75) -> BM25Index:
    index = BM25Index(method, k1, b, analyzer)
    index.build([f"c{i}" for i in range(len(CORPUS))], CORPUS, [{"i": i} for i in range(len(CORPUS))])
    return index


@pytest.mark.parametrize(
    ("method", "reference", "factor"),
    [
        # bm25s leaves out Okapi's constant (k1 + 1) numerator: same ranking, scores scaled by 1/(k1+1).
        ("robertson", BM25Okapi, 1 / 2.5),
        ("bm25+", BM25Plus, 1.0),
    ],
)
def test_scores_match_rank_bm25(method: str, reference: type, factor: float, analyzer: Analyzer) -> None:
    """Same tokens in, same scores out. (BM25L is left out: rank_bm25 scores documents without a query
    term as 0, bm25s gives them the delta floor, so the two define the variant differently.)"""
    ours = _index(method, analyzer)
    kwargs = {"delta": 0.5} if method == "bm25+" else {}
    theirs = reference([analyzer(t) for t in CORPUS], k1=1.5, b=0.75, **kwargs)
    for query in QUERIES:
        expected = theirs.get_scores(analyzer(query)) * factor
        np.testing.assert_allclose(ours.score_all(query), expected, rtol=1e-4, atol=1e-5)


def test_lucene_default_matches_its_formula(analyzer: Analyzer) -> None:
    """bm25s' default has no rank_bm25 twin; check it against the Lucene formula written out."""
    docs = [analyzer(t) for t in CORPUS]
    n, avgdl, k1, b = len(docs), sum(map(len, docs)) / len(docs), 1.2, 0.75
    index = _index("lucene", analyzer, k1=k1, b=b)
    for query in QUERIES:
        expected = []
        for doc in docs:
            score = 0.0
            for term in set(analyzer(query)):
                df = sum(term in d for d in docs)
                if df:
                    idf = np.log(1 + (n - df + 0.5) / (df + 0.5))
                    tf = doc.count(term)
                    score += idf * tf / (tf + k1 * (1 - b + b * len(doc) / avgdl))
            expected.append(score)
        np.testing.assert_allclose(index.score_all(query), expected, rtol=1e-4, atol=1e-5)


def test_search_ranks_and_filters(analyzer: Analyzer) -> None:
    index = _index("lucene", analyzer)
    top = index.search("incremental ingest", 3)
    assert top[0].chunk_id == "c2" and len(top) == 2  # only chunks sharing a term come back
    assert top[0].score > top[1].score > 0
    only_odd = parse_filter({"i": {"in": [1, 3, 5]}})
    assert {h.chunk_id for h in index.search("ingest vectors filters", 10, only_odd)} == {"c1", "c3", "c5"}
    assert index.search("zzz", 5) == []


def test_analyzer_stems_and_drops_stopwords(analyzer: Analyzer) -> None:
    assert analyzer("The running dogs and the RUNNER") == ["run", "dog", "runner"]
    assert Analyzer(stemmer=None, stopwords=None)("The dogs") == ["the", "dogs"]


def test_save_load_round_trip(tmp_path: Path, analyzer: Analyzer) -> None:
    index = _index("lucene", analyzer, k1=1.2)
    index.save(tmp_path, generation=3)
    loaded = BM25Index.load(tmp_path, analyzer, "lucene", 1.2, 0.75)
    assert loaded is not None and loaded.generation == 3
    np.testing.assert_allclose(loaded.score_all("hybrid search"), index.score_all("hybrid search"))
    assert [h.chunk_id for h in loaded.search("ingest", 5, parse_filter({"i": 2}))] == ["c2"]
    assert BM25Index.load(tmp_path, analyzer, "robertson", 1.2, 0.75) is None  # other parameters: rebuild
    index.save(tmp_path, generation=4)
    index.save(tmp_path, generation=5)
    # The generation CURRENT named before a save is kept (a reader may be loading it); older ones go.
    assert sorted(p.name for p in tmp_path.glob("gen-*")) == ["gen-00000004", "gen-00000005"]


def test_save_never_deletes_or_hides_a_newer_generation(tmp_path: Path, analyzer: Analyzer) -> None:
    index = _index("lucene", analyzer, k1=1.2)
    index.save(tmp_path, generation=7)
    index.save(tmp_path, generation=6)  # a slower writer finishing after a newer save
    assert (tmp_path / "gen-00000007").is_dir()
    assert (tmp_path / "CURRENT").read_text() == "gen-00000007"
    loaded = BM25Index.load(tmp_path, analyzer, "lucene", 1.2, 0.75)
    assert loaded is not None and loaded.generation == 7
    assert not list(tmp_path.glob("*.tmp-*"))


def test_unreadable_index_loads_as_missing(tmp_path: Path, analyzer: Analyzer) -> None:
    index = _index("lucene", analyzer, k1=1.2)
    index.save(tmp_path, generation=2)
    for file in (tmp_path / "gen-00000002" / "bm25s").iterdir():
        file.write_bytes(b"garbage")
    assert BM25Index.load(tmp_path, analyzer, "lucene", 1.2, 0.75) is None  # derived: the caller rebuilds it


def test_save_failure_is_one_storage_error_naming_the_folder(tmp_path: Path, analyzer: Analyzer) -> None:
    blocker = tmp_path / "bm25"
    blocker.write_text("a file where the folder should be")
    with pytest.raises(StorageError, match="bm25"):
        _index("lucene", analyzer, k1=1.2).save(blocker, generation=1)


def test_empty_index(tmp_path: Path, analyzer: Analyzer) -> None:
    index = BM25Index(analyzer=analyzer)
    index.build([], [], [])
    assert index.search("anything", 3) == []
    index.save(tmp_path, 1)
    loaded = BM25Index.load(tmp_path, analyzer, "lucene", 1.2, 0.75)
    assert loaded is not None and loaded.search("anything", 3) == []
