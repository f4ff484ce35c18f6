"""Sections from heading offsets, for parsers that find headings in finished text."""

from __future__ import annotations

from rag.core.types import Section


def sections_at(text: str, starts: list[tuple[int, tuple[str, ...]]]) -> list[Section]:
    """Sections that tile ``text`` from each ``(offset, heading path)`` to the next; blank ones dropped."""
    sections = []
    for index, (start, headings) in enumerate(starts):
        end = starts[index + 1][0] if index + 1 < len(starts) else len(text)
        if text[start:end].strip():
            sections.append(Section(text=text[start:end], start=start, headings=headings))
    return sections


def push_heading(stack: list[tuple[int, str]], level: int, title: str) -> tuple[str, ...]:
    """Update the open-heading ``stack`` with a new heading; return the new heading path."""
    while stack and stack[-1][0] >= level:
        stack.pop()
    stack.append((level, title))
    return tuple(name for _, name in stack)
