"""Run a blocking ``RagEngine.ask`` in a worker thread and hand its events to an async response.

The first event decides the response: an error before any source is found (an unknown collection, a bad
filter, an empty index) becomes an ordinary HTTP error; anything later streams.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import anyio

from rag.core.errors import RagError
from rag.core.types import Hit
from rag.generate.answer import Answer


@dataclass(frozen=True)
class Event:
    """``sources`` (hits), ``delta`` (text), ``answer`` (the finished Answer) or ``error`` (a RagError)."""

    kind: str
    value: Any


Ask = Callable[[Callable[[list[Hit]], None], Callable[[str], None]], Answer]
"""``ask(on_sources, on_token) -> Answer``: the engine call with everything but the callbacks bound."""


async def ask_events(ask: Ask, limiter: anyio.CapacityLimiter) -> AsyncIterator[Event]:
    """Start ``ask``, wait for its first event, and return an iterator over all its events.

    Raises:
        RagError: ``ask`` failed before producing any event (retrieval failed).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def put(event: Event | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    def work() -> None:
        try:
            answer = ask(lambda hits: put(Event("sources", hits)), lambda text: put(Event("delta", text)))
            put(Event("answer", answer))
        except RagError as exc:
            put(Event("error", exc))
        finally:
            put(None)

    task = asyncio.ensure_future(anyio.to_thread.run_sync(work, limiter=limiter))
    first = await queue.get()
    if first is None:  # cannot happen: work always puts an event before None
        raise RuntimeError("the answer produced no event")
    if first.kind == "error":
        await task
        raise first.value

    async def events() -> AsyncIterator[Event]:
        try:
            yield first
            while (event := await queue.get()) is not None:
                yield event
        finally:
            await task

    return events()


def sse(event: str | None, data: Any) -> str:
    """One Server-Sent Event; ``data`` is serialised as JSON (one line, so no framing issues)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
