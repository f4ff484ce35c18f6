"""Fixtures for ``rag eval``: an index of the repository's own docs/ and a scripted judge."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from eval_helpers import REPO, rag, rag_env
from scripted_judge import ScriptedJudge


@pytest.fixture(scope="session")
def docs_project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project folder holding a copy of the repository's docs/, ingested once (document ids docs/*.md)."""
    project = tmp_path_factory.mktemp("docs-project")
    shutil.copytree(REPO / "docs", project / "docs")
    result = rag(project, "ingest", "docs", env=rag_env(project / "cache"))
    assert result.returncode == 0, result.stderr
    return project


@pytest.fixture
def judge() -> Iterator[ScriptedJudge]:
    with ScriptedJudge() as server:
        yield server
