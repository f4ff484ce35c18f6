"""OpenTelemetry spans around the stages of a search and an answer, through the OpenTelemetry *API* only.

Every layer wraps its stages in :func:`span` (``with span("rag.retrieve.dense", {...}):``). This module
imports only ``opentelemetry.trace``, which is light; the SDK, its exporter and its thread are set up by
the front ends (``rag`` and ``rag serve``) in :mod:`rag.core.tracing_setup`, and only when a standard
``OTEL_*`` variable asks for traces. Until a tracer provider is set, :func:`span` returns one shared
do-nothing context manager, so tracing that is not configured costs a function call and an ``isinstance``
per stage (``benchmarks/bench_tracing.py`` measures it). An application that embeds the library and sets
its own provider gets the same spans in its own traces.

No span carries a query, a passage or an answer: only sizes, counts, scores, settings and model names.

Span names and attributes are listed in docs/integrations.md ("Traces (OpenTelemetry)").
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any
from urllib.parse import urlsplit

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

__all__ = [
    "SpanKind", "enabled", "genai_attributes", "genai_span", "set_attributes", "span", "stage_failed",
    "usage_attributes",
]

TRACER_NAME = "rag"
"""The instrumentation scope of every span the library makes."""

# A ProxyTracer: it hands out no-op spans until a provider is set, then the provider's (checked per span).
_tracer = trace.get_tracer(TRACER_NAME)
_OFF: AbstractContextManager[Span] = nullcontext(trace.INVALID_SPAN)  # reusable; its span ignores every call


class _State:
    enabled = False  # a provider, once set, stays set: after the first True, enabled() is one attribute read

AttributeValue = str | bool | int | float | list[str] | list[int] | list[float] | None


def _provider_set() -> bool:
    return not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


if hasattr(trace, "_TRACER_PROVIDER") and "OTEL_PYTHON_TRACER_PROVIDER" not in os.environ:
    # What get_tracer_provider() checks first, without the os.environ look-up it then makes on every call
    # while no provider is set (1-2 µs, most of an unset hook's cost). That variable, the one other way a
    # provider appears, is read once here.
    def _provider_set() -> bool:
        return trace._TRACER_PROVIDER is not None


def enabled() -> bool:
    """Whether a tracer provider is set (by :mod:`rag.core.tracing_setup` or by an embedding application)."""
    if not _State.enabled:
        _State.enabled = _provider_set()
    return _State.enabled


def span(
    name: str, attributes: Mapping[str, AttributeValue] | None = None, *, kind: SpanKind = SpanKind.INTERNAL
) -> AbstractContextManager[Span]:
    """A context manager that runs its block inside a new span ``name``, child of the current one.

    Without a tracer provider it is a shared no-op whose span ignores ``set_attribute`` and the like.
    An exception leaving the block is recorded on the span and sets its status to error.

    Args:
        name: the span name (``rag.retrieve.dense``; ``chat MODEL`` for an LLM call, as GenAI spans are named).
        attributes: attributes known at the start; ``None`` values are left out.
        kind: ``SpanKind.CLIENT`` for calls to another service (an LLM endpoint).
    """
    if not enabled():
        return _OFF
    return _tracer.start_as_current_span(name, kind=kind, attributes=_clean(attributes) if attributes else None)


def set_attributes(target: Span, attributes: Mapping[str, AttributeValue]) -> None:
    """Set ``attributes`` on ``target``, leaving out ``None`` values (OpenTelemetry rejects them)."""
    if target.is_recording():
        target.set_attributes(_clean(attributes))


def stage_failed(target: Span, exc: BaseException, fallback: str) -> None:
    """Mark a stage that failed and fell back (the request goes on): the exception, ``error.type``, the
    fallback taken, and an error status."""
    if target.is_recording():
        target.record_exception(exc)
        target.set_attributes({"error.type": type(exc).__name__, "rag.fallback": fallback})
        target.set_status(Status(StatusCode.ERROR, str(exc)))


def genai_attributes(model: str, base_url: str | None, **request: AttributeValue) -> dict[str, AttributeValue]:
    """The GenAI semantic-convention attributes of a chat call to an OpenAI-compatible endpoint.

    The provider is ``openai`` (the API spoken, as the conventions advise for OpenAI-compatible servers);
    ``server.address`` and ``server.port`` tell which server it was. ``request`` adds
    ``gen_ai.request.<name>`` attributes (``max_tokens``, ``temperature``).
    """
    attributes: dict[str, AttributeValue] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.system": "openai",  # the older name of gen_ai.provider.name, which many backends still read
        "gen_ai.request.model": model,
        **{f"gen_ai.request.{name}": value for name, value in request.items()},
    }
    if base_url:
        parts = urlsplit(base_url)
        attributes["server.address"] = parts.hostname
        attributes["server.port"] = parts.port or (443 if parts.scheme == "https" else 80)
    return attributes


@contextmanager
def genai_span(model: str, base_url: str | None, **request: AttributeValue) -> Iterator[Span]:
    """A ``chat MODEL`` client span with :func:`genai_attributes`; an exception sets ``error.type``."""
    with span(f"chat {model}", genai_attributes(model, base_url, **request), kind=SpanKind.CLIENT) as current:
        try:
            yield current
        except Exception as exc:
            current.set_attribute("error.type", type(exc).__name__)
            raise


def usage_attributes(usage: Mapping[str, int | None] | None) -> dict[str, AttributeValue]:
    """``gen_ai.usage.input_tokens`` / ``output_tokens`` from an OpenAI ``usage`` record, when known."""
    if not usage:
        return {}
    return {"gen_ai.usage.input_tokens": usage.get("prompt_tokens"),
            "gen_ai.usage.output_tokens": usage.get("completion_tokens")}


def _clean(attributes: Mapping[str, AttributeValue]) -> dict[str, Any]:
    return {key: value for key, value in attributes.items() if value is not None}
