"""The OpenTelemetry SDK set up from the standard ``OTEL_*`` variables, for the front ends (``rag``, ``rag serve``).

Traces are exported only when a variable asks for them: ``OTEL_EXPORTER_OTLP_ENDPOINT`` or
``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` (OTLP), or ``OTEL_TRACES_EXPORTER`` naming an exporter other than
``none``; ``OTEL_SDK_DISABLED=true`` wins over all. Otherwise nothing is imported from the SDK, no exporter
thread starts, and :func:`rag.core.tracing.span` stays a no-op. The SDK's own classes read the rest of the
standard variables: ``OTEL_SERVICE_NAME`` and ``OTEL_RESOURCE_ATTRIBUTES`` (the resource),
``OTEL_TRACES_SAMPLER`` / ``_ARG``, ``OTEL_BSP_*`` (batching), ``OTEL_EXPORTER_OTLP_*`` (endpoint, headers,
timeout, compression, certificates). Spans still queued are exported when the process exits.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from typing import Any

from opentelemetry import trace

from rag.core import tracing
from rag.core.errors import ConfigError

DEFAULT_SERVICE_NAME = "rag-platform"
"""``service.name`` when neither ``OTEL_SERVICE_NAME`` nor ``OTEL_RESOURCE_ATTRIBUTES`` names one."""



class _State:
    configured = False


def tracing_requested(environ: Mapping[str, str] = os.environ) -> bool:
    """Whether the ``OTEL_*`` variables in ``environ`` ask for traces to be exported (see the module docstring)."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = environ.get("OTEL_TRACES_EXPORTER")
    if exporters is not None and exporters.strip():
        return any(name.strip() not in ("", "none") for name in exporters.split(","))
    return bool(environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def configure_tracing(service_version: str | None = None, environ: Mapping[str, str] = os.environ) -> bool:
    """Set up the SDK as the ``OTEL_*`` variables say, once per process; a no-op when they ask for nothing
    or when a tracer provider is already set (an embedding application's own).

    Args:
        service_version: the ``service.version`` resource attribute.

    Returns:
        Whether spans are now exported by a provider set up here.

    Raises:
        ConfigError: ``OTEL_TRACES_EXPORTER`` names an exporter this installation lacks, or the OTLP
            protocol is not one it speaks.
    """
    if _State.configured:
        return True
    if not tracing_requested(environ) or tracing.enabled():
        return False
    from opentelemetry.sdk.resources import SERVICE_NAME, SERVICE_VERSION, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = [_exporter(name, environ) for name in _exporter_names(environ)]
    resource = Resource.create({SERVICE_VERSION: service_version} if service_version else {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    # shutdown_on_exit (the default) flushes the queued spans at interpreter exit.
    provider = TracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _State.configured = True
    return True


def _exporter_names(environ: Mapping[str, str]) -> list[str]:
    names = [name.strip().lower() for name in environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")]
    return [name for name in names if name and name != "none"] or ["otlp"]


def _exporter(name: str, environ: Mapping[str, str]) -> Any:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter(out=sys.stderr)  # stdout carries --json output
    if name != "otlp":
        raise ConfigError(f"OTEL_TRACES_EXPORTER={name!r} is not supported here; use otlp, console or none")
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL") or "http/protobuf"
    ).strip().lower()
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()  # reads OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT, _HEADERS, _TIMEOUT ...
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise ConfigError(
                "OTEL_EXPORTER_OTLP_PROTOCOL=grpc needs `pip install opentelemetry-exporter-otlp-proto-grpc`; "
                "the bundled exporter speaks http/protobuf (port 4318)"
            ) from None
        return GrpcExporter()
    raise ConfigError(f"OTLP protocol {protocol!r} is not supported; use http/protobuf or grpc")
