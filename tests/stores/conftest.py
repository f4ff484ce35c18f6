"""Shared data for the vector store tests: a seeded random corpus, the filters to try, a brute-force oracle.

The data and the oracle are the contract suite's (:mod:`rag.testing.stores`): numpy over normalised vectors
plus :meth:`Filter.matches`, the reference semantics every store must reproduce (qdrant-client's congruence
tests compare engines the same way). These session-scoped fixtures serve the tests outside the contract
classes, which define their own.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest

from rag.core.filters import Filter, parse_filter
from rag.testing.stores import DIM, FILTER_SPECS, Corpus, unit_vectors

__all__ = ["DIM", "FILTER_SPECS", "Corpus", "unit_vectors"]


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
