"""Property-based tests of the whole API from its own OpenAPI schema (schemathesis, in-process ASGI).

Every operation gets generated requests, valid and invalid; each response must not be a server error and
must match the schema documented for its status. The app's LLM endpoint is unreachable, so ``/ask`` and
the chat endpoint answer the documented 502 (with the sources) instead of starting llama.cpp per example.

About 40 examples per operation (a few hundred in all); ``RAG_TEST_EXAMPLES=500`` fuzzes longer. Run with
``-s`` to see which statuses each operation's examples reached.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error, response_schema_conformance

from rag.api.app import create_app
from rag.core.settings import load_settings

pytestmark = pytest.mark.slow

DOCUMENTS = [
    {"id": "guide/install", "text": "Install the widget with the installer script; it needs Python 3.10.",
     "metadata": {"lang": "en", "page": 1, "tags": ["setup"]}},
    {"id": "guide/refunds", "text": "Refunds are granted within 30 days of purchase.", "metadata": {"lang": "en"}},
    {"id": "notes/history", "text": "The company was founded in 1987 in Helsinki.", "metadata": {"lang": "fi"}},
]


@pytest.fixture(scope="module")
def app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FastAPI]:
    """The app over ``default`` and ``docs`` (three documents each) and an empty ``doomed``; one job done."""
    data_dir: Path = tmp_path_factory.mktemp("schemathesis") / "data"
    config = load_settings(
        data_dir=data_dir,
        llm={"base_url": "http://127.0.0.1:9/v1", "max_retries": 0},  # nothing listens: every answer is a 502
        api={"max_upload_mb": 0.02, "job_threshold_kb": 8},  # 413s and jobs within reach of generated bodies
    )
    app = create_app(config)
    # No ``with``: schemathesis runs the app's lifespan, and its pytest plugin ends it after every test (so
    # the app must take requests, jobs included, after its lifespan has ended and started again).
    client = TestClient(app)
    for name in ("docs", "doomed"):
        client.post("/v1/collections", json={"name": name}).raise_for_status()
    for name in ("default", "docs"):
        client.post(f"/v1/collections/{name}/documents", json={"documents": DOCUMENTS}).raise_for_status()
    big = [{"id": "big", "text": "A long document about widgets. " * 350}]
    job = client.post("/v1/collections/docs/documents", json={"documents": big}).json()
    while job["status"] in ("queued", "running"):
        time.sleep(0.1)
        job = client.get(f"/v1/jobs/{job['id']}").json()
    assert job["status"] == "succeeded", job
    app.state.job_id = job["id"]
    yield app
    app.state.services.workspace.close()


@pytest.fixture(scope="module")
def api_schema(app: FastAPI) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_asgi("/openapi.json", app)


# 5xx statuses this app must answer with: its LLM endpoint is unreachable on purpose, so answers are the
# documented 502 (with the sources) and readiness the documented 503. Any other 5xx is a bug.
EXPECTED_5XX = {
    ("POST", "/v1/collections/{name}/ask"): 502,
    ("POST", "/v1/chat/completions"): 502,
    ("GET", "/readyz"): 503,
}
QUESTION = [{"role": "user", "content": "When are refunds granted?"}]


def _operations() -> list[Any]:
    """Every operation, from the schema of an app that is never called."""
    spec = create_app(load_settings(data_dir=Path(tempfile.gettempdir()) / "rag-schema-only")).openapi()
    return [pytest.param(method.upper(), path, id=f"{method.upper()} {path}")
            for path, item in spec["paths"].items() for method in item]


def _known(method: str, path: str, job_id: str) -> list[dict[str, Any]]:
    """Path parameters that exist, so generated requests get past the 404s to the code behind them.

    Destructive operations get their own targets: ``doomed`` for deleting a collection, ``docs`` for
    deleting documents, so ``default`` keeps its documents for the operations tested after them.
    """
    if path == "/v1/jobs/{job_id}":
        return [{"job_id": job_id}]
    if path == "/v1/collections/{name}" and method == "DELETE":
        return [{"name": "doomed"}]
    if "{doc_id}" in path:
        name = "docs" if method == "DELETE" else "default"
        return [{"name": name, "doc_id": doc["id"]} for doc in DOCUMENTS]
    if "{name}" in path:
        return [{"name": "default"}, {"name": "docs"}]
    return []


DOCS = {"name": "docs"}
# Requests that reach the rarer documented responses: a stream, a job (202), an upload over the limit (413).
_BODIES: dict[tuple[str, str], list[tuple[dict[str, Any], dict[str, Any]]]] = {
    ("POST", "/v1/chat/completions"): [
        ({"model": "default", "messages": QUESTION, "stream": stream}, {}) for stream in (False, True)
    ],
    ("POST", "/v1/collections/{name}/ask"): [
        ({"question": "When are refunds granted?", "stream": True}, {"path_parameters": {"name": "default"}}),
    ],
    ("POST", "/v1/collections/{name}/documents"): [
        ({"documents": [{"id": "job", "text": "Jobs run in the background. " * 350}]}, {"path_parameters": DOCS}),
        ({"documents": [{"id": "huge", "text": "x" * 25_000}]}, {"path_parameters": DOCS}),
    ],
}


def _cases(operation: Any, method: str, path: str, job_id: str) -> st.SearchStrategy[schemathesis.Case]:
    """Free positive and negative cases, and positive ones on known collections, documents and jobs."""
    strategies = [operation.as_strategy(GenerationMode.POSITIVE, path_parameters=known)
                  for known in _known(method, path, job_id)]
    strategies += [operation.as_strategy(GenerationMode.POSITIVE, media_type="application/json", body=body, **known)
                   for body, known in _BODIES.get((method, path), [])]
    strategies += [operation.as_strategy(GenerationMode.POSITIVE), operation.as_strategy(GenerationMode.NEGATIVE)]
    return st.one_of(strategies)


# ``schemathesis.pytest.from_fixture`` would be the idiom, but it breaks on pytest 9 (it sets the node's
# private ``_nodeid``); parametrizing by operation and running each one's strategy under ``given`` is the
# same test with plain pytest and Hypothesis.
@pytest.mark.parametrize(("method", "path"), _operations())
def test_no_server_errors_and_responses_match_the_schema(
    app: FastAPI, api_schema: schemathesis.BaseSchema, method: str, path: str
) -> None:
    statuses: Counter[int] = Counter()

    @given(case=_cases(api_schema[path][method], method, path, app.state.job_id))
    @settings(max_examples=int(os.environ.get("RAG_TEST_EXAMPLES", "40")), deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])
    def check(case: schemathesis.Case) -> None:
        response = case.call()
        statuses[response.status_code] += 1
        checks = [response_schema_conformance]
        if response.status_code != EXPECTED_5XX.get((method, path)):
            checks.append(not_a_server_error)
        case.validate_response(response, checks=checks)

    check()
    print(f"{method} {path}: {dict(sorted(statuses.items()))}")  # noqa: T201 - shown with -s: what the examples reached
