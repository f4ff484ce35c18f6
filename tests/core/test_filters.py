"""Filter parsing and semantics: the reference every store and BM25 must agree with."""

from __future__ import annotations

import pytest

from rag.core.errors import FilterError
from rag.core.filters import Condition, Filter, parse_condition, parse_filter

META = {
    "source": "docs/cli.md",
    "page": 3,
    "score": 0.5,
    "tags": ["cli", "config"],
    "lang": "en",
    "draft": False,
    "modified": "2026-03-04T10:00:00Z",
}


@pytest.mark.parametrize(
    ("text", "field", "op", "value"),
    [
        ("lang=en", "lang", "eq", "en"),
        ("page>=2", "page", "gte", 2),
        ("page < 10", "page", "lt", 10),
        ("score>0.25", "score", "gt", 0.25),
        ("lang!=de", "lang", "ne", "de"),
        ("tags in cli, api", "tags", "in", ("cli", "api")),
        ("tags not in api", "tags", "nin", ("api",)),
        ("source~docs/*.md", "source", "glob", "docs/*.md"),
        ("modified>=2026-01-01", "modified", "gte", "2026-01-01"),
        ('year="2024"', "year", "eq", "2024"),
        ("draft=false", "draft", "eq", False),
    ],
)
def test_parse_condition(text: str, field: str, op: str, value: object) -> None:
    assert parse_condition(text) == Condition(field, op, value)


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ({"lang": "en"}, True),
        ({"lang": "de"}, False),
        ({"page": {"gte": 3, "lt": 4}}, True),
        ({"page": {"gt": 3}}, False),
        ({"tags": "cli"}, True),  # list field: any element
        ({"tags": {"in": ["api", "config"]}}, True),
        ({"tags": {"ne": "api"}}, True),
        ({"tags": {"ne": "cli"}}, False),  # some element equals it
        ({"tags": {"nin": ["cli"]}}, False),
        ({"missing": {"ne": "x"}}, False),  # a missing field never matches, like Qdrant
        ({"missing": "x"}, False),
        ({"source": {"glob": "docs/*.md"}}, True),
        ({"source": {"glob": "src/*"}}, False),
        ({"modified": {"gte": "2026-03-01", "lt": "2026-04-01T00:00:00+00:00"}}, True),
        ({"modified": {"lt": "2026-03-04T09:59:59Z"}}, False),
        ({"draft": False}, True),
        ({"draft": 0}, False),  # booleans are not numbers
        ({"page": {"gte": "2026-01-01"}}, False),  # a number is not a date
        (["lang=en", "page>=3"], True),
        ({}, True),
    ],
)
def test_semantics(spec: object, expected: bool) -> None:
    assert parse_filter(spec).matches(META) is expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"page": {"between": [1, 2]}}, "unknown filter operator 'between'"),
        ({"page": {"gte": "soon"}}, "range bound must be a number or an ISO date"),
        ({"tags": {"in": []}}, "expected a non-empty list"),
        ({"tags": {"in": "cli"}}, "expected a non-empty list"),
        ({"page": {}}, "has no operator"),
        ({"lang": None}, "expected a single value"),
        ("page >> 2", "range bound"),
        ("just words", "cannot parse filter"),
        ("{not json", "not valid JSON"),
        ("lang=", "empty value"),
    ],
)
def test_errors_name_the_problem(spec: object, message: str) -> None:
    with pytest.raises(FilterError, match=message):
        parse_filter(spec)


def test_json_string_and_round_trip() -> None:
    parsed = parse_filter('{"page": {"gte": 2}, "tags": ["a", "b"]}')
    assert parsed == Filter((Condition("page", "gte", 2), Condition("tags", "in", ("a", "b"))))
    assert parse_filter(parsed.to_dict()) == parsed


def test_and_combines_and_empty_is_falsy() -> None:
    combined = parse_filter("lang=en") & parse_filter("page>=2")
    assert len(combined.conditions) == 2
    assert not parse_filter(None)
