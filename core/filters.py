"""Metadata filters: one parsed, validated form shared by every store, BM25 and the CLI.

A :class:`Filter` is a conjunction of :class:`Condition` objects. It is built from either

* CLI strings (``rag search --filter``), one condition each::

      lang=en            equality            page>=2 / page<10   numeric or date range
      lang!=en           inequality          modified>=2024-01-01
      tags in a,b,c      membership          source~docs/*.md    path glob

* or a mapping (Python / JSON / REST), in the style of Chroma and MongoDB::

      {"lang": "en", "page": {"gte": 2}, "tags": {"in": ["a", "b"]}, "source": {"glob": "docs/*"}}

Semantics follow Qdrant's so that the embedded and remote engines agree: a condition on a list-valued
field holds when *any* element satisfies it, and a missing field never satisfies a condition (not even
``!=``). Ranges on ISO-8601 strings compare as UTC datetimes. Anything unknown is a
:class:`~rag.core.errors.FilterError` naming the bad part, never silently ignored.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from rag.core.errors import FilterError

OPERATORS = ("eq", "ne", "in", "nin", "gt", "gte", "lt", "lte", "glob")
RANGE_OPERATORS = ("gt", "gte", "lt", "lte")

# Longest symbols first so ">=" is not read as ">".
_SYMBOLS = {">=": "gte", "<=": "lte", "!=": "ne", ">": "gt", "<": "lt", "=": "eq", "~": "glob"}
_FIELD = r"[A-Za-z_][\w.\-]*"
_SYMBOL_RE = re.compile(rf"^\s*({_FIELD})\s*(>=|<=|!=|>|<|=|~)\s*(.*?)\s*$")
_WORD_RE = re.compile(rf"^\s*({_FIELD})\s+(not in|in)\s+(.+?)\s*$", re.IGNORECASE)
_DATE_RE = re.compile(r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?)?(Z|[+-]\d{2}:?\d{2})?$")


def parse_datetime(value: str) -> datetime | None:
    """Parse an ISO-8601 date or datetime to an aware UTC datetime; ``None`` if it is not one."""
    if not isinstance(value, str) or not _DATE_RE.match(value.strip()):
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _scalar(text: str) -> Any:
    """Read a CLI value: JSON scalars (``2``, ``1.5``, ``true``, ``"2"``) keep their type, the rest is text."""
    text = text.strip()
    if not text:
        raise FilterError("empty value in filter")
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if isinstance(value, (dict, list)) or value is None:
        return text
    return value


@dataclass(frozen=True, slots=True)
class Condition:
    """One test on one metadata field, e.g. ``Condition("page", "gte", 2)``."""

    field: str
    op: str
    value: Any

    def __post_init__(self) -> None:
        if self.op not in OPERATORS:
            raise FilterError(
                f"unknown filter operator {self.op!r} on field {self.field!r}; "
                f"use one of {', '.join(OPERATORS)}"
            )
        if not self.field:
            raise FilterError("filter condition has an empty field name")
        if self.op in ("in", "nin"):
            if not isinstance(self.value, (list, tuple)) or not self.value:
                raise FilterError(f"filter {self.field!r} {self.op}: expected a non-empty list, got {self.value!r}")
            object.__setattr__(self, "value", tuple(self.value))
        elif self.op in RANGE_OPERATORS:
            if isinstance(self.value, bool) or not (
                isinstance(self.value, (int, float)) or parse_datetime(self.value) is not None
            ):
                raise FilterError(
                    f"filter {self.field!r} {self.op}: range bound must be a number or an ISO date "
                    f"(YYYY-MM-DD[THH:MM:SS]), got {self.value!r}"
                )
        elif self.op == "glob":
            if not isinstance(self.value, str) or not self.value:
                raise FilterError(f"filter {self.field!r} glob: expected a pattern string, got {self.value!r}")
        elif isinstance(self.value, (dict, list, tuple)) or self.value is None:
            raise FilterError(f"filter {self.field!r} {self.op}: expected a single value, got {self.value!r}")

    @property
    def is_date_range(self) -> bool:
        return self.op in RANGE_OPERATORS and isinstance(self.value, str)

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        """Whether ``metadata`` satisfies this condition (any element, for list values)."""
        if self.field not in metadata or metadata[self.field] is None:
            return False
        actual = metadata[self.field]
        values = actual if isinstance(actual, (list, tuple)) else (actual,)
        if self.op == "ne":
            return all(not _equal(v, self.value) for v in values)
        if self.op == "nin":
            return all(not any(_equal(v, x) for x in self.value) for v in values)
        return any(self._test(v) for v in values)

    def _test(self, actual: Any) -> bool:
        if self.op == "eq":
            return _equal(actual, self.value)
        if self.op == "in":
            return any(_equal(actual, x) for x in self.value)
        if self.op == "glob":
            return isinstance(actual, str) and fnmatch.fnmatchcase(actual, self.value)
        return _compare(actual, self.op, self.value)


def _equal(actual: Any, expected: Any) -> bool:
    if isinstance(actual, bool) or isinstance(expected, bool):
        return actual is expected
    return actual == expected


def _compare(actual: Any, op: str, bound: Any) -> bool:
    if isinstance(bound, str):  # a date bound: compare as instants
        left, right = parse_datetime(actual) if isinstance(actual, str) else None, parse_datetime(bound)
    elif isinstance(actual, (int, float)) and not isinstance(actual, bool):
        left, right = actual, bound
    else:
        return False
    if left is None or right is None:
        return False
    return {"gt": left > right, "gte": left >= right, "lt": left < right, "lte": left <= right}[op]


@dataclass(frozen=True, slots=True)
class Filter:
    """A conjunction of conditions; the empty filter matches everything."""

    conditions: tuple[Condition, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.conditions)

    def matches(self, metadata: Mapping[str, Any]) -> bool:
        return all(c.matches(metadata) for c in self.conditions)

    def __and__(self, other: Filter) -> Filter:
        return Filter(self.conditions + other.conditions)

    def to_dict(self) -> dict[str, Any]:
        """The mapping form, round-trippable through :func:`parse_filter`."""
        out: dict[str, dict[str, Any]] = {}
        for c in self.conditions:
            value = list(c.value) if isinstance(c.value, tuple) else c.value
            out.setdefault(c.field, {})
            if c.op in out[c.field]:  # two conditions with the same op: keep both via a nested AND
                raise FilterError(f"cannot serialise two {c.op!r} conditions on {c.field!r}")
            out[c.field][c.op] = value
        return out


def parse_condition(text: str) -> Condition:
    """Parse one CLI condition such as ``page>=2``, ``tags in a,b`` or ``source~docs/*.md``."""
    if match := _WORD_RE.match(text):
        field, word, raw = match.groups()
        items = [_scalar(part) for part in raw.split(",") if part.strip()]
        return Condition(field, "nin" if word.lower() == "not in" else "in", items)
    if match := _SYMBOL_RE.match(text):
        field, symbol, raw = match.groups()
        op = _SYMBOLS[symbol]
        if op == "glob":
            return Condition(field, op, raw)
        if op in RANGE_OPERATORS and parse_datetime(raw) is not None:
            return Condition(field, op, raw)
        return Condition(field, op, _scalar(raw))
    raise FilterError(
        f"cannot parse filter {text!r}; expected FIELD=VALUE, FIELD!=VALUE, FIELD>=N, FIELD<DATE, "
        "FIELD~GLOB or 'FIELD in A,B'"
    )


def parse_filter(spec: Filter | Mapping[str, Any] | str | Iterable[str] | None) -> Filter:
    """Build a :class:`Filter` from a mapping, a CLI string, several CLI strings or ``None``.

    Raises:
        FilterError: on an unknown operator, a malformed value or an unparsable string.
    """
    if spec is None:
        return Filter()
    if isinstance(spec, Filter):
        return spec
    if isinstance(spec, str):
        spec = spec.strip()
        if spec.startswith("{"):
            try:
                return parse_filter(json.loads(spec))
            except json.JSONDecodeError as exc:
                raise FilterError(f"filter is not valid JSON: {exc}") from None
        return Filter((parse_condition(spec),))
    if isinstance(spec, Mapping):
        conditions: list[Condition] = []
        for field, rule in spec.items():
            if not isinstance(field, str):
                raise FilterError(f"filter field names must be strings, got {field!r}")
            if isinstance(rule, Mapping):
                if not rule:
                    raise FilterError(f"filter {field!r} has no operator")
                conditions.extend(Condition(field, str(op), value) for op, value in rule.items())
            elif isinstance(rule, (list, tuple)):
                conditions.append(Condition(field, "in", list(rule)))
            else:
                conditions.append(Condition(field, "eq", rule))
        return Filter(tuple(conditions))
    conditions = []
    for item in spec:
        conditions.extend(parse_filter(item).conditions)
    return Filter(tuple(conditions))


def glob_regex(pattern: str, literal: Callable[[str], str]) -> str | None:
    """The body of a regular expression matching exactly what ``fnmatch.fnmatchcase(s, pattern)`` accepts.

    Follows ``fnmatch.translate`` step by step (``*``, ``?``, ``[seq]``, ``[!seq]``, ranges, an unclosed
    ``[`` taken literally, reversed ranges dropped), so stores that filter inside an engine (Postgres,
    OpenSearch) match globs as :meth:`Condition.matches` does. ``literal`` writes one literal character
    in the engine's regex dialect; anchoring is left to the caller.

    Returns:
        The expression, or ``None`` when the pattern can match nothing (an empty set such as ``[z-a]``).
    """
    out: list[str] = []
    i, n = 0, len(pattern)
    while i < n:
        c = pattern[i]
        i += 1
        if c == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            while j < n and pattern[j] != "]":
                j += 1
            if j >= n:
                out.append(literal("["))
                continue
            chunks = _bracket_chunks(pattern, i, j)
            i = j + 1
            negate = bool(chunks) and chunks[0].startswith("!")
            if negate:
                chunks[0] = chunks[0][1:]
            members: list[str] = []
            for k, chunk in enumerate(chunks):
                # Adjacent chunks meet in a range: the last character of one to the first of the next.
                start = 1 if k > 0 else 0
                stop = len(chunk) - 1 if k < len(chunks) - 1 else len(chunk)
                if k > 0:
                    members.append(f"{literal(chunks[k - 1][-1])}-{literal(chunk[0])}")
                members.extend(literal(ch) for ch in chunk[start:stop])
            if not members:
                if not negate:
                    return None  # an empty set: the pattern matches nothing
                out.append(".")  # a negated empty set: any character
            else:
                out.append(f"[{'^' if negate else ''}{''.join(members)}]")
        else:
            out.append(literal(c))
    return "".join(out)


def _bracket_chunks(pattern: str, i: int, j: int) -> list[str]:
    """The chunks ``fnmatch.translate`` splits ``pattern[i:j]`` into: hyphens between chunks are ranges,
    hyphens inside a chunk are literal; reversed ranges are removed with their end points."""
    stuff = pattern[i:j]
    if "-" not in stuff:
        return [stuff]
    chunks: list[str] = []
    k = i + 2 if pattern[i] == "!" else i + 1
    while True:
        k = pattern.find("-", k, j)
        if k < 0:
            break
        chunks.append(pattern[i:k])
        i = k + 1
        k = k + 3
    chunk = pattern[i:j]
    if chunk:
        chunks.append(chunk)
    else:
        chunks[-1] += "-"
    for k in range(len(chunks) - 1, 0, -1):
        if chunks[k - 1][-1] > chunks[k][0]:
            chunks[k - 1] = chunks[k - 1][:-1] + chunks[k][1:]
            del chunks[k]
    return chunks
