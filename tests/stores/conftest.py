"""Shared data for the vector store tests: a seeded random corpus, the filters to try, a brute-force oracle.

The oracle is numpy over normalised vectors plus :meth:`Filter.matches`, the reference semantics every
store must reproduce (qdrant-client's congruence tests compare engines the same way).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pytest

from rag.core.filters import Filter, parse_filter
from rag.stores.base import StoredChunk

DIM = 32

# Every operator, list-valued fields, int/float/bool equality, missing and null fields, date ranges across
# time zones, globs (matching and not), and a conjunction.
FILTER_SPECS: list[dict[str, Any]] = [
    {"lang": "en"},
    {"lang": {"ne": "en"}},
    {"lang": {"in": ["en", "de"]}},
    {"lang": {"nin": ["en", "fr"]}},
    {"page": 3},
    {"page": {"gte": 3, "lt": 7}},
    {"page": {"gt": 8}},
    {"page": {"lte": 2}},
    {"page": {"in": [1, 2.5, 9]}},
    {"score": {"gt": 0.5}},
    {"tags": "a"},
    {"tags": {"ne": "a"}},
    {"tags": {"in": ["c", "zzz"]}},
    {"tags": {"nin": ["a", "b"]}},
    {"tags": {"glob": "b*"}},
    {"flag": True},
    {"flag": 1},
    {"modified": {"gte": "2024-06-01"}},
    {"modified": {"lt": "2024-03-15T12:00:00+02:00"}},
    {"modified": {"gt": "2024-02-01T00:00:00Z", "lte": "2024-09-30"}},
    {"source": {"glob": "docs/*"}},
    {"source": {"glob": "*.md"}},
    {"source": {"glob": "nowhere/*"}},
    {"year": {"ne": 2020}},
    {"status": {"ne": "draft"}},
    {"absent": "x"},
    {"doc_id": {"in": ["doc-1", "doc-3"]}},
    {"lang": "en", "page": {"lt": 5}, "tags": {"ne": "a"}},
]


def unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors (float32), reproducible from ``seed``."""
    vectors = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _metadata(i: int, rng: random.Random) -> dict[str, Any]:
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    meta: dict[str, Any] = {
        "doc_id": f"doc-{i % 20}",
        "source": rng.choice(["docs/a.md", "docs/guide/b.md", "notes/c.txt", "x.pdf", "readme.md"]),
        "score": rng.random(),
        "flag": rng.random() < 0.5,
        # Several ISO spellings (date only, Z, offset, space separator) that must compare as instants.
        "modified": rng.choice(["2024-{:02d}-{:02d}", "2024-{:02d}-{:02d}T10:00:00Z",
                                "2024-{:02d}-{:02d}T10:00:00+02:00", "2024-{:02d}-{:02d} 08:30:00"]).format(month, day),
        # Never an empty list: Qdrant counts [] as missing, Filter.matches does not (see rag.stores.qdrant).
        "tags": rng.sample(["a", "b", "c", "d", "bb"], rng.randint(1, 3)),
    }
    if rng.random() < 0.9:
        meta["lang"] = rng.choice(["en", "de", "fr"])
    if rng.random() < 0.8:
        # Some pages are floats, so 3 must equal 3.0 as it does for Filter.matches.
        page = rng.randint(1, 9)
        meta["page"] = float(page) if rng.random() < 0.2 else page
    if rng.random() < 0.3:
        meta["year"] = rng.choice([2019, 2020, 2021])
    meta["status"] = rng.choice(["draft", "final"]) if rng.random() < 0.5 else None
    return meta


@dataclass
class Corpus:
    """Chunks with known vectors and metadata, and the exact answer to any query over them."""

    ids: list[str]
    vectors: np.ndarray
    metadata: list[dict[str, Any]]

    @classmethod
    def random(cls, n: int, dim: int = DIM, seed: int = 0) -> Corpus:
        rng = random.Random(seed)
        return cls([f"chunk-{seed}-{i}" for i in range(n)], unit_vectors(n, dim, seed),
                   [_metadata(i, rng) for i in range(n)])

    @property
    def dim(self) -> int:
        return int(self.vectors.shape[1])

    @property
    def chunks(self) -> list[StoredChunk]:
        return [StoredChunk(cid, v, f"text of {cid}", m) for cid, v, m in zip(self.ids, self.vectors, self.metadata)]

    def expected(self, query: np.ndarray, k: int, flt: Filter | None = None) -> list[tuple[str, float]]:
        """Brute force: the ``k`` best (id, cosine) among chunks whose metadata ``flt`` matches."""
        query = query / np.linalg.norm(query)
        rows = [i for i, m in enumerate(self.metadata) if flt is None or flt.matches(m)]
        scores = self.vectors[rows] @ query
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.ids[rows[j]], float(scores[j])) for j in order]


@pytest.fixture(scope="session")
def corpus() -> Corpus:
    """300 chunks with varied metadata; read-only, shared by every test."""
    return Corpus.random(300)


@pytest.fixture(scope="session")
def make_corpus() -> Callable[..., Corpus]:
    """``make_corpus(n, dim=DIM, seed=0)``: a fresh random corpus (tests may edit its metadata)."""
    return Corpus.random


@pytest.fixture(scope="session")
def queries() -> np.ndarray:
    """A few query vectors unrelated to the corpus."""
    return unit_vectors(4, DIM, seed=99)


@pytest.fixture(params=FILTER_SPECS, ids=[str(spec) for spec in FILTER_SPECS])
def metadata_filter(request: pytest.FixtureRequest) -> Filter:
    """Each filter of :data:`FILTER_SPECS`, parsed."""
    return parse_filter(request.param)
