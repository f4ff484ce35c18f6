"""Fixtures for the REST API tests: real ``python -m rag.api`` processes over temporary data directories.

Each test module starts the servers it needs once (``start_server`` is module-scoped) and talks to them
over HTTP, so what is tested is what an operator runs: argument parsing, settings from the environment,
uvicorn, worker threads, and readers that see commits made by other processes. The process and the HTTP
helpers live in :mod:`api_server`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from api_server import ApiServer, upload_corpus
from fake_endpoint import ScriptedEndpoint


@pytest.fixture(scope="module")
def start_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., ApiServer]]:
    """``start_server(data_dir, **env)``: start an API process; all are stopped when the module ends."""
    started: list[ApiServer] = []

    def start(data_dir: Path, **env: str) -> ApiServer:
        server = ApiServer(data_dir, env, cwd=tmp_path_factory.mktemp("cwd"))
        started.append(server)
        return server

    yield start
    for server in reversed(started):
        server.stop()




@pytest.fixture(scope="module")
def endpoint() -> Iterator[ScriptedEndpoint]:
    """A scripted OpenAI-compatible endpoint (it stands in for the LLM so a test knows what it was asked)."""
    with ScriptedEndpoint() as server:
        yield server


@pytest.fixture(scope="module")
def scripted_server(
    start_server: Callable[..., ApiServer], tmp_path_factory: pytest.TempPathFactory,
    corpus_writer: Callable[[Path], Path], endpoint: ScriptedEndpoint,
) -> ApiServer:
    """An API process over the test corpus (uploaded to ``default``) whose LLM is :func:`endpoint`."""
    root = tmp_path_factory.mktemp("scripted-api")
    api = start_server(
        root / "data", RAG_LLM__BASE_URL=endpoint.base_url, RAG_LLM__MODEL=endpoint.model,
        RAG_LLM__MAX_RETRIES="0", RAG_CACHE_DIR=str(root / "cache"),
    )
    with api.client() as client:
        upload_corpus(client, "default", corpus_writer(root))
    return api
