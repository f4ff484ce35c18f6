"""OpenTelemetry traces, as a collector receives them: a real OTLP/HTTP receiver on loopback decodes the
``ExportTraceServiceRequest`` protobufs that a real ``rag serve`` process and real ``rag`` commands send.

The LLM is the scripted endpoint (:mod:`fake_endpoint`), so the GenAI span's token counts are known; a
second collection answers extractively. One server and two CLI processes (run at once).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from api_server import BASE_ENV, ApiServer
from fake_endpoint import Reply, ScriptedEndpoint
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

from rag.core.tracing_setup import tracing_requested

pytestmark = pytest.mark.slow

QUESTION = "How many days do refunds take after purchase?"
NO_OTEL = {k: v for k, v in BASE_ENV.items() if not k.startswith("OTEL_")}


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [_value(v) for v in value.array_value.values]
    return getattr(value, kind) if kind else None


class Receiver:
    """An OTLP/HTTP trace receiver on 127.0.0.1: ``POST /v1/traces`` with a protobuf body, decoded into
    one dict per span (name, ids, kind, attributes, status, the resource's service.name)."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.posts = 0
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                request = ExportTraceServiceRequest.FromString(body)
                receiver.add(self.path, self.headers.get("Content-Type"), request)
                reply = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"
        self._lock = threading.Lock()
        threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True).start()

    def add(self, path: str, content_type: str | None, request: ExportTraceServiceRequest) -> None:
        assert path == "/v1/traces" and content_type == "application/x-protobuf", (path, content_type)
        spans = []
        for resource_spans in request.resource_spans:
            resource = {a.key: _value(a.value) for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for s in scope_spans.spans:
                    spans.append({
                        "name": s.name, "trace_id": s.trace_id.hex(), "span_id": s.span_id.hex(),
                        "parent": s.parent_span_id.hex() or None, "kind": s.kind, "status": s.status.code,
                        "attributes": {a.key: _value(a.value) for a in s.attributes},
                        "service": resource.get("service.name"), "scope": scope_spans.scope.name,
                    })
        with self._lock:
            self.posts += 1
            self.spans.extend(spans)

    def wait_for(self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 20.0) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                spans = list(self.spans)
            if predicate(spans):
                return spans
            assert time.monotonic() < deadline, f"spans never arrived; got {[s['name'] for s in spans]}"
            time.sleep(0.05)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def tree(spans: list[dict[str, Any]], root: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The spans under ``root`` (itself included), by name; names that repeat keep their first span."""
    children: dict[str, list[dict[str, Any]]] = {}
    for s in spans:
        children.setdefault(s["parent"], []).append(s)
    found: dict[str, dict[str, Any]] = {}
    stack = [root]
    while stack:
        node = stack.pop()
        found.setdefault(node["name"], node)
        stack.extend(children.get(node["span_id"], []))
    return found


def parent_of(spans: list[dict[str, Any]], child: dict[str, Any]) -> dict[str, Any]:
    return next(s for s in spans if s["span_id"] == child["parent"])


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    server = Receiver()
    yield server
    server.close()


@pytest.fixture(scope="module")
def endpoint() -> Iterator[ScriptedEndpoint]:
    with ScriptedEndpoint() as server:
        yield server


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory, copy_ingested: Callable[[Path], Path]) -> Path:
    """The ingested sample corpus, also as a collection ``extractive`` whose answers are extractive (a copy
    of the index with the collection's settings file, so no second ingest)."""
    root = copy_ingested(tmp_path_factory.mktemp("tracing"))
    extractive = root / ".rag" / "collections" / "extractive"
    shutil.copytree(root / ".rag", extractive)
    (extractive / "collection.json").write_text(json.dumps({"settings": {"generation": {"mode": "extractive"}}}))
    return root


def otel_env(receiver: Receiver, **more: str) -> dict[str, str]:
    return {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_BSP_SCHEDULE_DELAY": "50", **more}


def test_the_otel_variables_decide_whether_traces_are_exported() -> None:
    endpoint = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}
    assert not tracing_requested({})
    assert not tracing_requested({"OTEL_SERVICE_NAME": "rag", "OTEL_BSP_SCHEDULE_DELAY": "50"})
    assert tracing_requested(endpoint)
    assert tracing_requested({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"})
    assert tracing_requested({"OTEL_TRACES_EXPORTER": "console"})
    assert not tracing_requested({**endpoint, "OTEL_TRACES_EXPORTER": "none"})
    assert not tracing_requested({**endpoint, "OTEL_SDK_DISABLED": "TRUE"})


def test_a_request_traces_every_stage_under_its_http_span(
    start_server: Callable[..., ApiServer], project: Path, receiver: Receiver, endpoint: ScriptedEndpoint,
) -> None:
    server = start_server(
        project / ".rag", **otel_env(receiver, OTEL_SERVICE_NAME="rag-api-under-test"),
        RAG_LLM__BASE_URL=endpoint.base_url, RAG_LLM__MODEL=endpoint.model, RAG_LLM__MAX_RETRIES="0",
        RAG_CACHE_DIR=str(project / "cache"),
    )
    endpoint.reply(
        Reply(pieces=["refunds granted within days of purchase"]),  # /search: the rewrite (not streamed)
        Reply(pieces=["How many days do refunds take after purchase?"]),  # /ask: the condensed follow-up
        Reply(pieces=["Refunds are granted within 30 days of purchase [1]."],  # /ask: the answer, streamed
              usage={"prompt_tokens": 212, "completion_tokens": 13, "total_tokens": 225}),
    )
    with server.client() as client:
        found = client.post("/v1/collections/default/search", json={"query": QUESTION, "rewrite": True})
        assert found.status_code == 200, found.text
        history = [{"role": "user", "content": "What does the team plan cost?"},
                   {"role": "assistant", "content": "45 euros a month [1]."}]
        answer = client.post("/v1/collections/default/ask", json={"question": "and refunds?", "history": history})
        assert answer.status_code == 200, answer.text
        assert answer.json()["usage"]["completion_tokens"] == 13
        extracted = client.post("/v1/collections/extractive/ask", json={"question": QUESTION})
        assert extracted.status_code == 200 and extracted.json()["model"] == "extractive", extracted.text

    def three_requests(spans: list[dict[str, Any]]) -> bool:
        names = [s["name"] for s in spans]
        return "POST /v1/collections/{name}/search" in names and names.count("POST /v1/collections/{name}/ask") == 2

    spans = receiver.wait_for(three_requests)
    assert {s["service"] for s in spans} == {"rag-api-under-test"}

    # /search: the server span is the root; the stages run under it, in one trace.
    http = next(s for s in spans if s["name"] == "POST /v1/collections/{name}/search")
    assert http["parent"] is None and http["kind"] == 2  # SPAN_KIND_SERVER
    assert http["attributes"]["http.response.status_code" if "http.response.status_code" in http["attributes"]
                              else "http.status_code"] == 200
    search = tree(spans, http)
    for name in ("rag.retrieve", "rag.retrieve.rewrite", "rag.retrieve.search", "rag.retrieve.embed_query",
                 "rag.retrieve.dense", "rag.retrieve.keyword", "rag.retrieve.fusion", "chat fake-model"):
        assert name in search, (name, sorted(search))
        assert search[name]["trace_id"] == http["trace_id"] and search[name]["scope"] in ("rag", http["scope"])
    assert parent_of(spans, search["rag.retrieve.dense"])["name"] == "rag.retrieve.search"
    assert search["rag.retrieve.dense"]["attributes"]["rag.store"] == "FaissStore"
    assert search["rag.retrieve.keyword"]["attributes"]["rag.keyword"] == "bm25s"
    assert search["rag.retrieve.fusion"]["attributes"]["rag.fusion"] == "linear"
    assert search["rag.retrieve"]["attributes"]["rag.hits"] == len(found.json()["hits"])
    # The rewrite's LLM call is a GenAI client span inside the rewrite stage.
    stage_call = search["chat fake-model"]
    assert parent_of(spans, stage_call)["name"] == "rag.retrieve.rewrite" and stage_call["kind"] == 3  # CLIENT
    assert stage_call["attributes"]["gen_ai.usage.input_tokens"] == 1  # what the endpoint's usage said

    # /ask: condense, retrieval and the answer's GenAI span, with the endpoint's token counts.
    http, extractive_http = [s for s in spans if s["name"] == "POST /v1/collections/{name}/ask"]
    ask = tree(spans, http)
    assert {"rag.ask", "rag.retrieve", "rag.retrieve.condense", "rag.retrieve.dense"} <= set(ask)
    generation = next(s for s in spans if s["name"] == "chat fake-model" and s["trace_id"] == http["trace_id"]
                      and parent_of(spans, s)["name"] == "rag.ask")
    assert generation["kind"] == 3 and generation["status"] != 2  # CLIENT, not an error
    attributes = generation["attributes"]
    assert attributes["gen_ai.operation.name"] == "chat"
    assert attributes["gen_ai.provider.name"] == attributes["gen_ai.system"] == "openai"
    assert attributes["gen_ai.request.model"] == attributes["gen_ai.response.model"] == "fake-model"
    assert attributes["gen_ai.usage.input_tokens"] == 212 and attributes["gen_ai.usage.output_tokens"] == 13
    assert attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert attributes["server.address"] == "127.0.0.1" and attributes["gen_ai.request.max_tokens"] > 0
    assert ask["rag.ask"]["attributes"]["rag.citations"] == 1

    # An extractive answer has its own span, under rag.ask, with no GenAI attributes: no tokens to count.
    extractive = tree(spans, extractive_http)
    assert "chat fake-model" not in extractive
    generation = extractive["rag.generate.extractive"]
    assert parent_of(spans, generation)["name"] == "rag.ask"
    assert generation["attributes"]["rag.answer.mode"] == "extractive" and generation["attributes"]["rag.citations"] >= 1
    assert not [key for key in generation["attributes"] if key.startswith("gen_ai.")]

    # Spans carry sizes, scores and names, never the user's words.
    texts = [v for s in spans for v in s["attributes"].values() if isinstance(v, str)]
    assert not [t for t in texts if "refund" in t.lower() or "team plan" in t.lower()]


def test_a_cli_search_is_traced_and_an_untraced_one_loads_no_sdk(project: Path, receiver: Receiver) -> None:
    """``rag search`` exports its spans at exit under a ``rag search`` root; the same search with no OTEL_
    variable imports no SDK and starts no exporter thread (it reports what it loaded as it exits)."""
    data = str(project / ".rag")
    argv = ["--data-dir", data, "search", QUESTION, "--json"]
    probe = (
        "import atexit, json, sys, threading\n"
        "atexit.register(lambda: print('PROBE ' + json.dumps({'sdk': sorted(m for m in sys.modules if "
        "m.startswith(('opentelemetry.sdk', 'opentelemetry.exporter'))), "
        "'threads': [t.name for t in threading.enumerate()]}), file=sys.stderr))\n"
        f"sys.argv = ['rag', *{argv!r}]\n"
        "from rag.cli import main\nmain()\n"
    )
    traced_env = {**NO_OTEL, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": f"{receiver.url}/v1/traces"}
    runs = {
        "traced": subprocess.Popen([sys.executable, "-m", "rag.cli", *argv], cwd=project, env=traced_env,
                                   text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
        "untraced": subprocess.Popen([sys.executable, "-c", probe], cwd=project, env=NO_OTEL,
                                     text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE),
    }
    outputs = {name: run.communicate(timeout=300) for name, run in runs.items()}
    for name, run in runs.items():
        assert run.returncode == 0 and "Traceback" not in outputs[name][1], (name, outputs[name][1])
    assert json.loads(outputs["traced"][0]) == json.loads(outputs["untraced"][0])  # tracing changes no result

    spans = receiver.wait_for(lambda spans: "rag search" in {s["name"] for s in spans})
    root = next(s for s in spans if s["name"] == "rag search")
    assert root["parent"] is None and root["service"] == "rag-platform" and root["status"] != 2
    names = tree(spans, root)
    assert {"rag.retrieve", "rag.retrieve.search", "rag.retrieve.embed_query", "rag.retrieve.dense",
            "rag.retrieve.keyword", "rag.retrieve.fusion"} <= set(names), sorted(names)
    assert {s["trace_id"] for s in names.values()} == {root["trace_id"]}
    assert parent_of(spans, names["rag.retrieve"])["name"] == "rag search"

    report = json.loads(outputs["untraced"][1].split("PROBE ", 1)[1])
    assert report["sdk"] == [], report
    assert not [t for t in report["threads"] if t.startswith("OtelBatch")], report  # the SDK's exporter thread
