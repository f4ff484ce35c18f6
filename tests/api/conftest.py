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
from api_server import ApiServer


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


