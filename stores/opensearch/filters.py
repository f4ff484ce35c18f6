"""Filter translation: chunk metadata as typed ``filterable`` fields, and a :class:`~rag.core.filters.Filter`
as query DSL over them with the semantics of :meth:`Filter.matches <rag.core.filters.Filter.matches>` (the
field layout and the divergences are described in :mod:`rag.stores.opensearch`)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from typing import Any

from rag.core.errors import FilterError
from rag.core.filters import RANGE_OPERATORS, Condition, Filter, glob_regex, parse_datetime

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (integer arithmetic on the timedelta)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def field_name(key: str) -> str:
    """A metadata key as one OpenSearch field name: characters other than ASCII letters, digits, ``_`` and
    ``-`` (and a leading ``_``) are percent-encoded, so ``a.b`` stays one flat key instead of becoming the
    object path ``a`` → ``b`` (which would also clash with a key ``a``). Injective, since ``%`` is encoded."""
    encoded = re.sub(r"[^A-Za-z0-9_\-]", lambda m: "".join(f"%{b:02X}" for b in m.group().encode()), key)
    return "%5F" + encoded[1:] if encoded.startswith("_") else encoded


def filterable_fields(metadata: dict[str, Any]) -> dict[str, Any]:
    """The ``filterable`` object of a chunk: its metadata values split by type (see :mod:`rag.stores.opensearch`)."""
    typed: dict[str, dict[str, list[Any]]] = {"keyword": {}, "number": {}, "boolean": {}, "date": {}}
    present: list[str] = []
    for key, value in metadata.items():
        key = str(key)
        if value is None or not key:  # a null or unnamed field matches no condition
            continue
        present.append(key)
        name = field_name(key)
        for element in value if isinstance(value, (list, tuple)) else (value,):
            if isinstance(element, bool):
                typed["boolean"].setdefault(name, []).append(element)
            elif isinstance(element, (int, float)):
                typed["number"].setdefault(name, []).append(element)
            elif isinstance(element, str):
                typed["keyword"].setdefault(name, []).append(element)
                if (moment := parse_datetime(element)) is not None:
                    typed["date"].setdefault(name, []).append(_micros(moment))
            # None, nested lists and objects: present (for != / not in), but equal to no filter value.
    return {**typed, "present": present}


class MatchesNothing(Exception):  # noqa: N818 - a signal that a filter selects nothing, not an error
    """A filter no document can satisfy (an empty glob set, a NaN bound); the search returns nothing."""


def glob_to_lucene_regexp(pattern: str) -> str | None:
    """A Lucene regular expression matching exactly the strings ``fnmatch.fnmatchcase(s, pattern)`` accepts.

    Lucene's ``regexp`` query is anchored to the whole term. This follows ``fnmatch.translate`` step by
    step (``*``, ``?``, ``[seq]``, ``[!seq]``, ranges, an unclosed ``[`` taken literally, reversed ranges
    dropped). Every character other than an ASCII letter or digit is escaped with ``\\``, which Lucene reads
    as that literal character inside and outside brackets; letters and digits are never escaped, since
    ``\\d``, ``\\w`` and ``\\s`` are classes in recent Lucene versions.

    Returns:
        The expression, or ``None`` when the pattern can match nothing (an empty set such as ``[z-a]``).
    """
    return glob_regex(pattern, _literal)


def _literal(c: str) -> str:
    return c if c.isascii() and c.isalnum() else "\\" + c


def filter_clauses(filter: Filter | None) -> list[dict[str, Any]]:
    """Query DSL clauses, one per condition, for a ``bool`` query's ``filter`` (all must hold).

    Raises:
        MatchesNothing: no document can match (the caller returns no results without searching).
        FilterError: a value that is neither a string, a number nor a boolean.
    """
    return [_clause(c) for c in filter.conditions] if filter else []


def filter_query(filter: Filter | None) -> dict[str, Any]:
    """The filter as one query: ``{"bool": {"filter": [...]}}``, or ``match_all`` for no filter."""
    clauses = filter_clauses(filter)
    return {"bool": {"filter": clauses}} if clauses else {"match_all": {}}


def _typed(kind: str, field: str) -> str:
    return f"filterable.{kind}.{field_name(field)}"


def _clause(c: Condition) -> dict[str, Any]:
    if c.op in ("eq", "in", "ne", "nin"):
        equals = _equals_any(c.field, c.value if c.op in ("in", "nin") else (c.value,))
        if c.op in ("eq", "in"):
            if not equals:
                raise MatchesNothing
            return equals[0] if len(equals) == 1 else {"bool": {"should": equals, "minimum_should_match": 1}}
        # "!=" and "not in" hold for a present, non-null field none of whose elements is equal.
        present = {"term": {"filterable.present": c.field}}
        if not equals:
            return present
        return {"bool": {"filter": [present], "must_not": equals}}
    if c.op == "glob":
        regexp = glob_to_lucene_regexp(c.value)
        if regexp is None:
            raise MatchesNothing
        return {"regexp": {_typed("keyword", c.field): {"value": regexp, "flags": "NONE"}}}
    assert c.op in RANGE_OPERATORS
    if c.is_date_range:
        bound = parse_datetime(c.value)
        assert bound is not None  # Condition validated it
        return {"range": {_typed("date", c.field): {c.op: _micros(bound)}}}
    value = c.value
    if isinstance(value, float) and math.isnan(value):
        raise MatchesNothing  # every comparison with NaN is false
    if isinstance(value, float) and math.isinf(value):
        if (c.op in ("gt", "gte")) == (value > 0):
            raise MatchesNothing  # above +inf or below -inf: nothing (stored numbers are finite)
        return {"exists": {"field": _typed("number", c.field)}}
    return {"range": {_typed("number", c.field): {c.op: value}}}


def _equals_any(field: str, values: Iterable[Any]) -> list[dict[str, Any]]:
    """Clauses matching a field any element of which equals one of ``values`` (grouped per type)."""
    by_kind: dict[str, list[Any]] = {"keyword": [], "number": [], "boolean": []}
    for value in values:
        if isinstance(value, bool):
            by_kind["boolean"].append(value)
        elif isinstance(value, (int, float)):
            if math.isfinite(value):  # NaN equals nothing; stored numbers are finite
                by_kind["number"].append(value)
        elif isinstance(value, str):
            by_kind["keyword"].append(value)
        else:
            raise FilterError(
                f"filter {field!r}: cannot compare {value!r} in OpenSearch; use a string, number or boolean"
            )
    clauses = []
    for kind, found in by_kind.items():
        unique = list(dict.fromkeys(found))
        if len(unique) == 1:
            clauses.append({"term": {_typed(kind, field): unique[0]}})
        elif unique:
            clauses.append({"terms": {_typed(kind, field): unique}})
    return clauses


# -- the store ---------------------------------------------------------------------------------------
