"""Filter translation: a :class:`~rag.core.filters.Filter` as a SQL condition over the ``metadata`` (jsonb) and
``dates`` columns, with the semantics of :meth:`Filter.matches <rag.core.filters.Filter.matches>` (the
divergences are listed in :mod:`rag.stores.pgvector`), and the ``dates`` each chunk's metadata yields."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from rag.core.filters import Condition, Filter, glob_regex, parse_datetime

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_RANGE_SQL = {"gt": ">", "gte": ">=", "lt": "<", "lte": "<="}


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (integer arithmetic on the timedelta)."""
    return (moment - _EPOCH) // timedelta(microseconds=1)


def date_index(metadata: dict[str, Any]) -> dict[str, list[int]]:
    """Each field's date-like strings (list elements included), as microseconds since the epoch.

    The same :func:`~rag.core.filters.parse_datetime` that :meth:`Filter.matches` uses decides what is a
    date, so SQL date ranges agree with it exactly.
    """
    found: dict[str, list[int]] = {}
    for field, value in metadata.items():
        values = value if isinstance(value, (list, tuple)) else (value,)
        micros = [_micros(moment) for v in values if isinstance(v, str) and (moment := parse_datetime(v)) is not None]
        if micros:
            found[str(field)] = micros
    return found


def glob_to_regex(pattern: str) -> str | None:
    """A Postgres regular expression (ARE) matching exactly what ``fnmatch.fnmatchcase(s, pattern)`` does.

    Follows ``fnmatch.translate`` step by step (``*``, ``?``, ``[seq]``, ``[!seq]``, ranges, an unclosed
    ``[`` taken literally, reversed ranges dropped); every literal character is written as a ``\\Uxxxxxxxx``
    escape, which means the same inside and outside brackets, so no Postgres metacharacter leaks through.

    Returns:
        The anchored expression, or ``None`` when the pattern can match nothing (an empty set ``[]``-like).
    """
    body = glob_regex(pattern, _char)
    return None if body is None else "^" + body + "$"


def _char(c: str) -> str:
    return c if c.isascii() and c.isalnum() else f"\\U{ord(c):08x}"


class MatchesNothing(Exception):  # noqa: N818 - a signal that a filter selects nothing, not an error
    """A filter no row can satisfy (an empty glob set, a NaN bound); the search returns nothing."""


class FilterSql:
    """Translates a :class:`Filter` into a SQL condition over ``metadata``/``dates``, with bound parameters."""

    def __init__(self, sql: Any) -> None:
        self._sql = sql

    def translate(self, filter: Filter) -> tuple[Any, list[Any]]:
        """``(condition, params)``: a ``psycopg.sql.Composed`` and the values for its ``%s`` placeholders."""
        parts, params = [], []
        for condition in filter.conditions:
            text, values = self._condition(condition)
            parts.append(self._sql.SQL(text))
            params.extend(values)
        return self._sql.SQL(" AND ").join(parts), params

    @staticmethod
    def _any_element(predicate: str, column: str = "metadata") -> str:
        """True when some element of the field (the value itself, if it is not a list) satisfies ``predicate``
        over ``e``; a missing field gives ``[null]``, which no predicate accepts."""
        field = f"{column} -> %s"
        return (
            f"EXISTS (SELECT FROM jsonb_array_elements(CASE WHEN jsonb_typeof({field}) = 'array' THEN {field} "
            f"ELSE jsonb_build_array({field}) END) AS elements(e) WHERE {predicate})"
        )

    def _condition(self, c: Condition) -> tuple[str, list[Any]]:
        if c.op in ("eq", "in", "ne", "nin"):
            candidates = self._containments(c.field, c.value if c.op in ("in", "nin") else (c.value,))
            if c.op in ("eq", "in"):
                if not candidates:
                    raise MatchesNothing
                return "metadata @> ANY(%s::jsonb[])", [candidates]
            # "!=" and "not in" need the field present and not null; an empty list then matches, as in
            # Filter.matches (no element equals the value).
            present = "coalesce(jsonb_typeof(metadata -> %s), 'null') <> 'null'"
            if not candidates:
                return present, [c.field]
            return f"({present} AND NOT metadata @> ANY(%s::jsonb[]))", [c.field, candidates]
        if c.op == "glob":
            regex = glob_to_regex(c.value)
            if regex is None:
                raise MatchesNothing
            predicate = "jsonb_typeof(e) = 'string' AND (e #>> '{}') ~ %s"
            return self._any_element(predicate), [c.field, c.field, c.field, regex]
        op = _RANGE_SQL[c.op]
        if c.is_date_range:
            bound = parse_datetime(c.value)
            assert bound is not None  # Condition validated it
            return self._any_element(f"(e)::numeric {op} %s", "dates"), [c.field] * 3 + [_micros(bound)]
        value = float(c.value) if isinstance(c.value, float) else c.value
        if isinstance(value, float) and math.isnan(value):
            raise MatchesNothing  # every comparison with NaN is false
        if isinstance(value, float) and math.isinf(value):
            if (c.op in ("gt", "gte")) == (value > 0):
                raise MatchesNothing  # above +inf or below -inf: nothing
            return self._any_element("jsonb_typeof(e) = 'number'"), [c.field] * 3
        predicate = f"CASE WHEN jsonb_typeof(e) = 'number' THEN (e)::numeric {op} %s ELSE false END"
        return self._any_element(predicate), [c.field] * 3 + [Decimal(repr(value))]

    @staticmethod
    def _containments(field: str, values: tuple[Any, ...]) -> list[str]:
        """JSON documents whose containment means "the field equals v or is a list holding v".

        JSONB containment compares numbers by value (``3 == 3.0``) and keeps booleans apart from numbers,
        as :meth:`Filter.matches` does. A NaN or infinite value equals nothing, so it is left out.
        """
        found: list[str] = []
        for value in values:
            if isinstance(value, float) and not math.isfinite(value):
                continue
            found.append(json.dumps({field: value}))
            found.append(json.dumps({field: [value]}))
        return found
