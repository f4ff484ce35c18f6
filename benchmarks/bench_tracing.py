"""What the tracing hooks cost a search: unset (the shipped default), stubbed out (the code before tracing,
up to a bare ``with``), and on (the SDK recording every span into a batch exporter).

The corpus is this repository's ``docs/`` folder, ingested once into ``benchmarks/.cache/tracing-docs``;
the queries are questions about it. Default hybrid search (k = 10), no LLM, in one process:

1. **unset vs stub**: with no tracer provider, every query runs with the shipped hooks (``span`` returns a
   shared no-op) and with every module's ``span`` replaced by a stub that returns a prebuilt
   ``nullcontext`` without any check, taking turns query by query (order rotated), so load changes hit both.
   The stub is the closest in-process stand-in for the code before the hooks: it keeps only the ``with``.
2. **on vs stub**: the SDK is then set up (``TracerProvider`` with a ``BatchSpanProcessor`` into an exporter
   that drops the spans, i.e. everything but the network), and the shipped hooks now record; they take
   turns with the stub again.

It also counts the hooks a search passes through and times one unset hook (``with span(...)``) against a
bare ``with nullcontext()``, which bounds the unset overhead per search from below the noise of a search.

    python -m benchmarks.bench_tracing [--rounds 5] [--max-load 1.5] [--max-wait 300]
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from typing import Any

from opentelemetry import trace

from benchmarks.common import CACHE, ROOT, load_average, percentile, table, wait_for_quiet, write_result
from rag.core import tracing
from rag.core.settings import load_settings
from rag.engine import RagEngine

DOCS = ROOT.parent / "docs"
QUERIES = [
    "how do I ingest a folder of documents",
    "what does alpha do in hybrid search",
    "reciprocal rank fusion",
    "how are API keys created and scoped",
    "streaming answers with server-sent events",
    "which vector stores are supported",
    "chunk size and overlap settings",
    "how does the extractive answer mode work",
    "rerank with a cross-encoder",
    "filter search results by metadata",
    "answerability threshold",
    "run the server behind a reverse proxy",
    "OpenAI compatible chat completions endpoint",
    "evaluate retrieval quality with rag eval",
    "what happens when the embedding model changes",
    "delete a document from a collection",
]
# Every module that imports `span` from rag.core.tracing (the stub replaces it there).
INSTRUMENTED = ("rag.retrieve.hybrid", "rag.retrieve.pipeline", "rag.engine.reading", "rag.generate.extractive")


def open_engine() -> RagEngine:
    data_dir = CACHE / "tracing-docs"
    engine = RagEngine(load_settings(data_dir=data_dir), project_root=DOCS.parent)
    report = engine.ingest([DOCS])
    if report.chunks_added:
        print(f"ingested {report.chunks_added} chunks of docs/", file=sys.stderr)
    return engine


class Hooks:
    """Swaps each instrumented module's ``span`` between the shipped one, a stub and a counter."""

    def __init__(self) -> None:
        self.modules = [importlib.import_module(name) for name in INSTRUMENTED]
        self.shipped = tracing.span
        null = nullcontext(trace.INVALID_SPAN)
        self.stub: Callable[..., Any] = lambda *args, **kwargs: null
        self.count = 0

    def use(self, fn: Callable[..., Any]) -> None:
        for module in self.modules:
            module.span = fn  # type: ignore[attr-defined]

    def counting(self) -> Callable[..., Any]:
        def counted(*args: Any, **kwargs: Any) -> Any:
            self.count += 1
            return self.shipped(*args, **kwargs)

        return counted


def take_turns(engine: RagEngine, hooks: Hooks, variants: dict[str, Callable[..., Any]], rounds: int) -> dict[str, list[float]]:
    """Milliseconds per search for each variant, the variants taking turns on every query."""
    timings: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(rounds):
        for index, query in enumerate(QUERIES):
            shift = (round_ + index) % len(names)
            for name in names[shift:] + names[:shift]:
                hooks.use(variants[name])
                started = time.perf_counter()
                engine.search(query)
                timings[name].append((time.perf_counter() - started) * 1000)
    hooks.use(hooks.shipped)
    return timings


def summary(timings: dict[str, list[float]], baseline: str) -> list[list[Any]]:
    base = statistics.median(timings[baseline])
    return [[name, len(ms), statistics.median(ms), percentile(ms, 0.9), statistics.median(ms) / base]
            for name, ms in timings.items()]


class DropExporter:
    """A span exporter that keeps nothing: the SDK's whole cost except the network."""

    def export(self, spans: Sequence[Any]) -> Any:
        from opentelemetry.sdk.trace.export import SpanExportResult

        self.exported = getattr(self, "exported", 0) + len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5, help="passes over the queries per phase")
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--max-wait", type=float, default=300)
    args = parser.parse_args(argv)

    engine = open_engine()
    hooks = Hooks()
    for query in QUERIES:  # warm: models loaded, caches filled
        engine.search(query)
    quiet = wait_for_quiet(args.max_load, args.max_wait)

    hooks.use(hooks.counting())
    engine.search(QUERIES[0])
    hooks_per_search = hooks.count
    hooks.use(hooks.shipped)
    assert not tracing.enabled(), "an OTEL tracer provider is set; unset OTEL_* variables to measure"
    per_hook_ns = min(timeit.repeat(lambda: tracing.span("rag.bench", {"rag.k": 10}).__enter__(), number=20000,
                                    repeat=5)) / 20000 * 1e9
    bare_ns = min(timeit.repeat(lambda: nullcontext(None).__enter__(), number=20000, repeat=5)) / 20000 * 1e9

    unset = take_turns(engine, hooks, {"stub (before)": hooks.stub, "unset": hooks.shipped}, args.rounds)

    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider()
    exporter = DropExporter()
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    on = take_turns(engine, hooks, {"stub (before)": hooks.stub, "on (SDK)": hooks.shipped}, args.rounds)
    provider.shutdown()
    engine.close()

    rows_unset, rows_on = summary(unset, "stub (before)"), summary(on, "stub (before)")
    headers = ["variant", "searches", "p50 ms", "p90 ms", "p50 ratio"]
    print("Phase 1: no tracer provider\n" + table(headers, rows_unset))
    print("\nPhase 2: SDK recording every span\n" + table(headers, rows_on))
    overhead_us = hooks_per_search * max(per_hook_ns - bare_ns, 0) / 1000
    print(f"\n{hooks_per_search} hooks per search; an unset hook costs {per_hook_ns:.0f} ns "
          f"(a bare nullcontext {bare_ns:.0f} ns): <= {overhead_us:.1f} us per search, "
          f"{overhead_us / 10 / statistics.median(unset['stub (before)']):.4f} % of its p50")
    path = write_result("tracing", {
        "corpus": str(DOCS.relative_to(ROOT.parent)), "queries": len(QUERIES), "rounds": args.rounds,
        "load": {"wait": quiet, "end": load_average()},
        "unset": {"rows": rows_unset, "ms": unset}, "on": {"rows": rows_on, "ms": on},
        "hooks_per_search": hooks_per_search, "unset_hook_ns": per_hook_ns, "bare_with_ns": bare_ns,
        "spans_exported": getattr(exporter, "exported", 0),
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
