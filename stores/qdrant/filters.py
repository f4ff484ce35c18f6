"""Filter translation: a :class:`~rag.core.filters.Filter` as a native Qdrant filter, with the semantics of
:meth:`Filter.matches <rag.core.filters.Filter.matches>` (the divergences are listed in :mod:`rag.stores.qdrant`)."""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rag.core.errors import FilterError
from rag.core.filters import Condition, Filter, parse_datetime

if TYPE_CHECKING:
    from qdrant_client.http import models

# Payload keys the store itself writes; metadata may not use them.
RESERVED_KEYS = ("chunk_id", "text")


class MatchesNothing(Exception):  # noqa: N818 - a signal that a filter selects nothing, not an error
    """A filter no stored point can satisfy (a glob with no matching value, a reserved field)."""


class FilterTranslator:
    """Translates a :class:`Filter` into a native ``models.Filter`` with ``Filter.matches`` semantics.

    Args:
        models: the ``qdrant_client.http.models`` module.
        distinct_strings: returns the distinct string values (list elements included) stored under a
            field; globs are expanded against them, since Qdrant has no glob match.
    """

    def __init__(self, models: Any, distinct_strings: Callable[[str], set[str]]) -> None:
        self._m = models
        self._distinct_strings = distinct_strings

    def translate(self, filter: Filter) -> models.Filter:
        """The native filter: a ``must`` of one clause per condition.

        Raises:
            MatchesNothing: no point can match (the caller returns no results without searching).
            FilterError: a value Qdrant cannot compare (neither string, number nor boolean).
        """
        return self._m.Filter(must=[self._condition(c) for c in filter.conditions])

    def _condition(self, c: Condition) -> Any:
        m = self._m
        if c.field in RESERVED_KEYS:  # never metadata (refused at upsert), so never matched
            raise MatchesNothing
        if c.op == "eq":
            return self._equals(c.field, c.value)
        if c.op == "in":
            return m.Filter(should=self._any_of(c.field, c.value))
        # Qdrant's must_not alone would also accept points without the field; Filter.matches does not,
        # so the field must also be non-empty (present and not null).
        not_empty = m.IsEmptyCondition(is_empty=m.PayloadField(key=c.field))
        if c.op == "ne":
            return m.Filter(must_not=[self._equals(c.field, c.value), not_empty])
        if c.op == "nin":
            return m.Filter(must_not=[*self._any_of(c.field, c.value), not_empty])
        if c.op == "glob":
            values = sorted(v for v in self._distinct_strings(c.field) if fnmatch.fnmatchcase(v, c.value))
            if not values:
                raise MatchesNothing
            return m.FieldCondition(key=c.field, match=m.MatchAny(any=values))
        if c.is_date_range:
            return m.FieldCondition(key=c.field, range=m.DatetimeRange(**{c.op: parse_datetime(c.value)}))
        return m.FieldCondition(key=c.field, range=m.Range(**{c.op: c.value}))

    def _equals(self, field: str, value: Any) -> Any:
        m = self._m
        if isinstance(value, (str, bool)):
            return m.FieldCondition(key=field, match=m.MatchValue(value=value))
        if isinstance(value, (int, float)):
            # A point range, not MatchValue: Filter.matches has 2 == 2.0 while Qdrant's exact match keeps
            # integers and floats apart (and cannot take a float at all).
            return m.FieldCondition(key=field, range=m.Range(gte=value, lte=value))
        raise FilterError(f"filter {field!r}: cannot compare {value!r} in Qdrant; use a string, number or boolean")

    def _any_of(self, field: str, values: tuple[Any, ...]) -> list[Any]:
        strings = [v for v in values if isinstance(v, str)]
        clauses = [self._m.FieldCondition(key=field, match=self._m.MatchAny(any=strings))] if strings else []
        return clauses + [self._equals(field, v) for v in values if not isinstance(v, str)]
