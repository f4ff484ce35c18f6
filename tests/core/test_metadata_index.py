"""MetadataIndex must decide exactly what Filter.matches decides, row by row."""

from __future__ import annotations

import random

import numpy as np
import pytest

from rag.core.filters import parse_filter
from rag.core.metadata_index import MetadataIndex

FILTERS = [
    {"lang": "en"},
    {"lang": {"ne": "en"}},
    {"tags": "b"},
    {"tags": {"nin": ["a", "b"]}},
    {"tags": {"in": ["c", "zzz"]}},
    {"page": {"gte": 3}},
    {"page": {"gt": 2, "lte": 7}},
    {"page": 1},
    {"page": 1.0},
    {"flag": True},
    {"flag": 1},
    {"source": {"glob": "docs/*"}},
    {"source": {"glob": "*.pdf"}},
    {"modified": {"gte": "2026-06-01"}},
    {"missing": {"ne": 1}},
    {"lang": "en", "page": {"lt": 5}, "tags": {"ne": "a"}},
]


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    rng = random.Random(7)
    out = []
    for i in range(600):
        row: dict = {"source": rng.choice(["docs/a.md", "docs/b.md", "notes/c.txt", "x.pdf"])}
        if rng.random() < 0.8:
            row["lang"] = rng.choice(["en", "de", "fr"])
        if rng.random() < 0.7:
            row["page"] = rng.randint(1, 9)
        if rng.random() < 0.6:
            row["tags"] = rng.sample(["a", "b", "c", "d"], rng.randint(0, 3))
        if rng.random() < 0.5:
            row["flag"] = rng.choice([True, False, 1, 0])
        row["modified"] = f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T00:00:00Z"
        row["nested"] = {"ignored": i}
        out.append(row)
    return out


@pytest.mark.parametrize("spec", FILTERS, ids=[str(f) for f in FILTERS])
def test_mask_equals_row_by_row(rows: list[dict], spec: dict) -> None:
    flt = parse_filter(spec)
    expected = np.array([flt.matches(r) for r in rows])
    got = MetadataIndex(rows).mask(flt)
    assert got.dtype == bool and (got == expected).all()
    assert 0 < expected.sum() < len(rows) or spec in ({"missing": {"ne": 1}}, {"flag": 1})


def test_empty_filter_and_empty_index() -> None:
    assert MetadataIndex([{"a": 1}]).mask(parse_filter(None)).tolist() == [True]
    assert MetadataIndex([]).mask(parse_filter({"a": 1})).tolist() == []
