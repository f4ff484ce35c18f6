"""docker-compose.yml: valid for Compose, and wired as docs/deployment-compose.md says.

``docker-compose -f docker-compose.yml config`` validates the file and prints it normalised (defaults
filled in, variables substituted); the wiring tests read that output. No Docker engine is needed. Without
the binary the validation is skipped and the wiring tests read the file itself, so they still run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML reads the compose file")

ROOT = Path(__file__).resolve().parents[1]
COMPOSE_FILE = ROOT / "docker-compose.yml"
SERVICES = {"api", "qdrant", "opensearch", "postgres", "llm"}
# Variables the file reads; unset here so the defaults written in the file are what is checked.
_VARIABLES = ("QDRANT_API_KEY", "POSTGRES_PASSWORD", "LLM_GGUF", "RAG_STORE_KIND", "RAG_STORE_URL", "RAG_LLM_MODEL")


def _compose_binary() -> list[str] | None:
    if shutil.which("docker-compose"):
        return ["docker-compose"]
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return None


def _run_config() -> subprocess.CompletedProcess[str]:
    binary = _compose_binary()
    if binary is None:
        pytest.skip("neither docker-compose nor the docker compose plugin is installed")
    env = {k: v for k, v in os.environ.items() if k not in _VARIABLES}
    return subprocess.run(
        [*binary, "-f", str(COMPOSE_FILE), "config"], cwd=ROOT, capture_output=True, text=True, env=env,
        timeout=60, check=False,
    )


def test_compose_file_is_valid() -> None:
    result = _run_config()
    assert result.returncode == 0, result.stderr
    assert set(yaml.safe_load(result.stdout)["services"]) == SERVICES


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    """The normalised configuration when a Compose binary is there, else the file as written."""
    if _compose_binary() is not None:
        result = _run_config()
        if result.returncode == 0:
            return yaml.safe_load(result.stdout)["services"]
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))["services"]


def _env(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    # The raw file holds "${VAR:-default}"; the normalised output holds the default.
    out = {}
    for key, value in env.items():
        value = str(value)
        if value.startswith("${") and ":-" in value:
            value = value.split(":-", 1)[1][:-1]
        out[key] = value
    return out


def _ports(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """``(host interface, published, target)`` for every port, from the short or the long syntax."""
    found = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            found.add((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        host = parts[0] if len(parts) == 3 else ""
        found.add((host, int(parts[-2]), int(parts[-1])))
    return found


def _depends(service: dict[str, Any]) -> dict[str, str]:
    depends = service.get("depends_on", {})
    if isinstance(depends, list):
        return dict.fromkeys(depends, "service_started")
    return {name: spec.get("condition", "service_started") for name, spec in depends.items()}


def test_every_service_is_there_with_a_healthcheck(services: dict[str, Any]) -> None:
    assert set(services) == SERVICES
    for name in SERVICES - {"api"}:  # the api's healthcheck is the Dockerfile's HEALTHCHECK
        assert services[name]["healthcheck"]["test"], name


def test_api_waits_for_healthy_servers_and_uses_the_llm_service(services: dict[str, Any]) -> None:
    api = services["api"]
    assert _depends(api) == dict.fromkeys(("qdrant", "opensearch", "postgres", "llm"), "service_healthy")
    env = _env(api)
    assert env["RAG_LLM__BASE_URL"] == "http://llm:8080/v1"
    assert env["RAG_STORE__KIND"] == "qdrant" and env["RAG_STORE__URL"] == "http://qdrant:6333"
    assert ("", 8000, 8000) in _ports(api)


def test_llm_service_serves_the_packaged_model_from_the_project_image(services: dict[str, Any]) -> None:
    llm = services["llm"]
    assert llm["image"] == services["api"]["image"] == "rag-platform:latest"
    command = llm["command"] if isinstance(llm["command"], list) else llm["command"].split()
    assert command == ["rag", "llm", "serve", "--host", "0.0.0.0", "--port", "8080"]
    assert _ports(llm) == {("127.0.0.1", 8080, 8080)}
    assert "/health" in " ".join(llm["healthcheck"]["test"])


def test_opensearch_is_a_local_single_node_without_security(services: dict[str, Any]) -> None:
    opensearch = services["opensearch"]
    assert opensearch["image"].startswith("opensearchproject/opensearch:2.")
    env = _env(opensearch)
    assert env["discovery.type"] == "single-node" and env["DISABLE_SECURITY_PLUGIN"] == "true"
    assert "-Xmx1g" in env["OPENSEARCH_JAVA_OPTS"] and str(opensearch["mem_limit"]).lower() in ("2g", str(2 * 1024**3))
    assert _ports(opensearch) == {("127.0.0.1", 9200, 9200)}  # no security: loopback only
    assert "_cluster/health" in " ".join(opensearch["healthcheck"]["test"])


def test_postgres_runs_pgvector_with_a_readiness_check(services: dict[str, Any]) -> None:
    postgres = services["postgres"]
    assert postgres["image"] == "pgvector/pgvector:pg17"
    assert _env(postgres)["POSTGRES_DB"] == "rag"
    assert _ports(postgres) == {("127.0.0.1", 5432, 5432)}
    assert "pg_isready" in " ".join(postgres["healthcheck"]["test"])


def test_qdrant_keeps_its_ports(services: dict[str, Any]) -> None:
    assert {(6333, 6333), (6334, 6334)} <= {(p, t) for _, p, t in _ports(services["qdrant"])}


def test_contract_suite_variables_match_the_published_ports(services: dict[str, Any]) -> None:
    """The URLs docs/deployment-compose.md exports for `pytest -m integration` reach these ports."""
    recipe = (ROOT / "docs" / "deployment-compose.md").read_text(encoding="utf-8")
    assert "RAG_OPENSEARCH_URL=http://localhost:9200" in recipe and "RAG_QDRANT_URL=http://localhost:6333" in recipe
    assert "pytest -m integration tests/stores" in recipe
    published = {p for service in services.values() for _, p, _ in _ports(service)}
    assert {9200, 6333} <= published
