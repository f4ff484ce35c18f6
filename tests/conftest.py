"""Fixtures shared across the suite: a small real corpus and engines on the real packaged model."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rag.core.settings import load_settings
from rag.engine import RagEngine

CORPUS = {
    "guide/install.md": """\
        ---
        title: Installing the widget
        tags: [setup, install]
        audience: admin
        ---
        # Installing the widget

        ## Requirements
        The widget needs Python 3.10 and two gigabytes of free disk space. It runs on Linux and macOS.

        ## Steps
        Download the archive, unpack it, and run the installer script. The installer asks for an
        admin password before it writes to the system folders.
        """,
    "guide/troubleshoot.md": """\
        ---
        title: Troubleshooting
        tags: [support]
        ---
        # Troubleshooting

        ## The widget does not start
        Check the log file in the home folder. A missing licence key is the most common cause.

        ## The widget is slow
        Large caches slow the widget down. Clear the cache folder and restart it.
        """,
    "notes/history.txt": """\
        Company history

        The company was founded in 1987 in Helsinki by two engineers who built radio receivers.
        In 2004 it moved into software, and in 2019 it released the first widget.
        """,
    "web/pricing.html": """\
        <html><head><title>Pricing</title></head>
        <body><nav>Home | Pricing | Contact</nav>
        <main><h1>Pricing</h1>
        <h2>Plans</h2><p>The basic plan costs 10 euros a month. The team plan costs 45 euros a month
        and includes priority support.</p>
        <h2>Refunds</h2><p>Refunds are granted within 30 days of purchase.</p></main>
        <footer>Copyright</footer></body></html>
        """,
}


def write_corpus(root: Path, files: dict[str, str] | None = None) -> Path:
    """Write the sample corpus (or ``files``) under ``root/docs`` and return that folder."""
    docs = root / "docs"
    for rel, text in (files or CORPUS).items():
        path = docs / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
    return docs


@pytest.fixture(scope="session")
def corpus_writer() -> Callable[..., Path]:
    """:func:`write_corpus`, for tests and module fixtures that place corpora themselves."""
    return write_corpus


@pytest.fixture
def corpus(tmp_path: Path) -> Path:
    return write_corpus(tmp_path)


@pytest.fixture(scope="session")
def ingested_corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder: the sample corpus in ``docs/``, ingested by a real ``rag ingest docs`` into ``.rag/``.

    Made once per session and never changed; tests and module fixtures take copies
    (:func:`copy_ingested`). A CLI ingest loads the model in a fresh process, which is seconds each time.
    """
    root = tmp_path_factory.mktemp("ingested-corpus")
    write_corpus(root)
    result = subprocess.run(
        [sys.executable, "-m", "rag.cli", "ingest", "docs"], cwd=root, capture_output=True, text=True,
        timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    return root


@pytest.fixture(scope="session")
def copy_ingested(ingested_corpus: Path) -> Callable[[Path], Path]:
    """``copy_ingested(root)``: put a private copy of :func:`ingested_corpus` (``docs/`` and ``.rag/``) in
    ``root`` and return ``root``, as if ``rag ingest docs`` had run there.

    The index is relocatable (document ids and file paths are relative to the project) and ``copytree``
    keeps modification times, so the copy's files read as unchanged to a later ingest.
    """

    def copy(root: Path) -> Path:
        shutil.copytree(ingested_corpus, root, dirs_exist_ok=True)
        return root

    return copy


@pytest.fixture(scope="session")
def cross_encoder_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder holding the test cross-encoder (trained once per session, in seconds; see cross_encoder.py)."""
    from cross_encoder import build_test_cross_encoder

    return build_test_cross_encoder(tmp_path_factory.mktemp("cross-encoder"))


@pytest.fixture
def make_engine(tmp_path: Path) -> Iterator[Callable[..., RagEngine]]:
    """Build engines over ``tmp_path/.rag`` (the project root is ``tmp_path``); closed afterwards."""
    made: list[RagEngine] = []

    def make(**overrides: Any) -> RagEngine:
        overrides.setdefault("data_dir", tmp_path / ".rag")
        engine = RagEngine(load_settings(**overrides), project_root=tmp_path)
        made.append(engine)
        return engine

    yield make
    for engine in made:
        try:
            engine.close()
        except Exception:  # noqa: BLE001, S110 - a test may have closed it already
            pass
