"""Fixtures for the retriever adapters: one ingested sample corpus, searched in-process and through a real
``rag serve`` with a read key, shared by the LangChain and LlamaIndex modules (one server per session)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rag.api.keys import KeyStore
from rag.core.settings import load_settings
from rag.engine import RagEngine

sys.path.insert(0, str(Path(__file__).parents[1] / "api"))  # the API tests' server helper

from api_server import ApiServer


@dataclass
class Deployment:
    """The sample corpus ingested in ``root/.rag``, and a ``rag serve`` over it that wants ``key``."""

    root: Path
    url: str
    key: str

    @property
    def data_dir(self) -> Path:
        return self.root / ".rag"


@pytest.fixture(scope="session")
def deployment(tmp_path_factory: pytest.TempPathFactory, corpus_writer: Callable[[Path], Path]) -> Iterator[Deployment]:
    root = tmp_path_factory.mktemp("adapters")
    docs = corpus_writer(root)
    with RagEngine(load_settings(data_dir=root / ".rag")) as engine:
        engine.ingest([docs])
    key = KeyStore(root / ".rag").create("default", "read", "adapters")[0]  # before the start: keys enforced
    server = ApiServer(root / ".rag", {}, cwd=tmp_path_factory.mktemp("adapters-cwd"))
    try:
        yield Deployment(root, server.url, key)
    finally:
        server.stop()


class _RecordingExecutor(ThreadPoolExecutor):
    """The event loop's default executor, noting what is handed to a worker thread (``asyncio.to_thread``,
    ``run_in_executor(None, ...)``); it still runs it."""

    def __init__(self) -> None:
        super().__init__(max_workers=2)
        self.submitted: list[str] = []

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        self.submitted.append(" ".join(map(repr, (fn, *args))))
        return super().submit(fn, *args, **kwargs)


@pytest.fixture(scope="session")
def run_watching_threads() -> Callable[[Callable[[], Awaitable[Any]]], tuple[Any, list[str]]]:
    """``run_watching_threads(make_coroutine)``: run it in a fresh event loop; returns its result and the
    ``repr`` of each callable (with its arguments) the loop ran in a worker thread."""

    def run(make: Callable[[], Awaitable[Any]]) -> tuple[Any, list[str]]:
        executor = _RecordingExecutor()

        async def main() -> Any:
            asyncio.get_running_loop().set_default_executor(executor)
            return await make()

        return asyncio.run(main()), executor.submitted

    return run
