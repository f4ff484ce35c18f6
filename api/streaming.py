"""Run a blocking ``RagEngine.ask`` in a worker thread and hand its events to an async response.

The first event decides the response: an error before any source is found (an unknown collection, a bad
filter, an empty index) becomes an ordinary HTTP error; anything later streams.

A client that hangs up cancels its answer: the worker's callbacks raise :class:`ClientGone` at the next
piece of text, which closes the streamed request to the LLM (so the LLM stops generating and its slot is
free) and ends the worker, which frees its ``api.concurrency`` slot.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from starlette.requests import Request

from rag.core.answers import Answer
from rag.core.errors import RagError
from rag.core.types import Hit


@dataclass(frozen=True)
class Event:
    """``sources`` (hits), ``delta`` (text), ``answer`` (the finished Answer) or ``error`` (a RagError)."""

    kind: str
    value: Any


class ClientGone(Exception):  # noqa: N818 - an event, not an error: nothing is answered
    """The client closed its connection; the work for it stops and no response is sent."""


class Cancel:
    """A flag the event loop sets when the client leaves and the worker thread checks between steps."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self, *_: Any) -> None:
        """Raise :class:`ClientGone` if the client has left (usable as an ``on_token`` callback)."""
        if self._event.is_set():
            raise ClientGone()


T = TypeVar("T")


async def run_until_gone(request: Request, cancel: Cancel, fn: Callable[[], T], limiter: anyio.CapacityLimiter) -> T:
    """Run ``fn`` in a worker thread while watching the connection; a hang-up sets ``cancel``.

    ``fn`` must check ``cancel`` (pass ``cancel.check`` as its ``on_token``). The request's body must
    have been read: the next message from the server is then the disconnect.

    Raises:
        ClientGone: the client left (``fn`` stopped early or its result is not wanted).
    """
    outcome: list[Any] = []

    async def work() -> None:
        try:
            outcome.append(await anyio.to_thread.run_sync(fn, limiter=limiter))
        except Exception as exc:  # noqa: BLE001 - re-raised below, outside the task group's ExceptionGroup
            outcome.append(exc)
        finally:
            group.cancel_scope.cancel()  # the answer is complete: stop watching

    async def watch() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass
        cancel.set()

    async with anyio.create_task_group() as group:
        group.start_soon(watch)
        await work()
    if cancel.is_set:
        raise ClientGone()
    if isinstance(outcome[0], Exception):
        raise outcome[0]
    return outcome[0]


Ask = Callable[[Callable[[list[Hit]], None], Callable[[str], None]], Answer]
"""``ask(on_sources, on_token) -> Answer``: the engine call with everything but the callbacks bound."""


async def ask_events(ask: Ask, limiter: anyio.CapacityLimiter) -> AsyncIterator[Event]:
    """Start ``ask``, wait for its first event, and return an iterator over all its events.

    Closing the iterator early (the client left) cancels the answer at its next piece of text.

    Raises:
        RagError: ``ask`` failed before producing any event (retrieval failed).
    """
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[Event | None] = asyncio.Queue()
    cancel = Cancel()

    def put(event: Event | None) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    def on_sources(hits: list[Hit]) -> None:
        cancel.check()
        put(Event("sources", hits))

    def on_token(text: str) -> None:
        cancel.check()
        put(Event("delta", text))

    def work() -> None:
        try:
            answer = ask(on_sources, on_token)
            put(Event("answer", answer))
        except RagError as exc:
            put(Event("error", exc))
        except ClientGone:
            pass  # nobody is listening any more
        finally:
            put(None)

    task = asyncio.ensure_future(anyio.to_thread.run_sync(work, limiter=limiter))
    try:
        first = await queue.get()
    except BaseException:  # cancelled while retrieving: stop the worker at its next step
        cancel.set()
        raise
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
            cancel.set()  # a no-op once the answer is complete; else the client left mid-answer
            await task

    return events()


def sse(event: str | None, data: Any) -> str:
    """One Server-Sent Event; ``data`` is serialised as JSON (one line, so no framing issues)."""
    payload = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return (f"event: {event}\n" if event else "") + f"data: {payload}\n\n"
