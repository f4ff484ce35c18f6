"""The import layers of docs/architecture.md hold, and the shared types moved into ``core`` keep their old paths.

``lint-imports`` checks the ``[tool.importlinter]`` contracts of pyproject.toml (layers, forbidden imports,
no cycles); it runs here so that the README's test command, and with it CI, enforces them.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import rag.core.answers
import rag.core.completion
import rag.core.ingest_report
import rag.evaluate.report
import rag.evaluate.schema
import rag.generate
import rag.generate.answer
import rag.generate.completion
import rag.ingest.pipeline

ROOT = Path(__file__).resolve().parent.parent


def _lint_imports() -> str:
    beside_python = Path(sys.executable).with_name("lint-imports")
    found = str(beside_python) if beside_python.is_file() else shutil.which("lint-imports")
    assert found, "lint-imports is missing: it comes with the dev extra (EXTRAS=dev bash scripts/install.sh)"
    return found


def test_import_contracts_hold() -> None:
    # The contracts must be checked against this checkout, not another installed copy of rag; lint-imports
    # reads them from the pyproject.toml of its working directory.
    where = subprocess.run(
        [sys.executable, "-c", "import rag; print(rag.__file__)"], cwd=ROOT, capture_output=True, text=True, check=True
    )
    assert Path(where.stdout.strip()).resolve() == ROOT / "__init__.py"
    result = subprocess.run(
        [_lint_imports(), "--no-cache", "--no-logo"],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, f"lint-imports failed:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


def test_moved_result_types_keep_their_old_import_paths() -> None:
    # The same objects, not copies: `except AnswerError` must catch what either path names.
    for name in ("Answer", "AnswerError", "Citation", "CITATION_MARKER", "find_citations", "numbered_hits"):
        assert getattr(rag.generate.answer, name) is getattr(rag.core.answers, name), name
    assert rag.generate.completion.Completion is rag.core.completion.Completion
    assert rag.ingest.pipeline.IngestReport is rag.core.ingest_report.IngestReport
    assert rag.ingest.pipeline.Progress is rag.core.ingest_report.Progress
    assert rag.generate.Answer is rag.core.answers.Answer and rag.generate.Citation is rag.core.answers.Citation


def test_run_reports_and_comparisons_share_one_schema_version() -> None:
    import rag.evaluate.compare

    assert rag.evaluate.report.SCHEMA_VERSION == rag.evaluate.schema.SCHEMA_VERSION == 1
    assert rag.evaluate.compare.RUN_SCHEMA_VERSION is rag.evaluate.schema.SCHEMA_VERSION


def test_front_ends_reach_ingest_and_generate_through_the_workspace(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the API and ``rag eval`` took from ingest and generate themselves, the workspace now offers."""
    from rag.core.settings import load_settings
    from rag.generate.llamacpp_server import LlamaCppServer
    from rag.ingest.loaders import supported_suffixes
    from rag.workspace import Workspace, private_llm_server

    gguf = tmp_path / "Tiny-Chat-1B.Q4_K_M.gguf"
    gguf.write_bytes(b"GGUF")
    settings = load_settings(data_dir=tmp_path / ".rag", llm={"gguf": str(gguf)})
    with Workspace(settings, project_root=tmp_path) as workspace:
        assert workspace.supported_suffixes() == supported_suffixes()
        assert {".md", ".pdf", ".html"} <= workspace.supported_suffixes()
        assert workspace.embedded_llm_model() == "Tiny-Chat-1B"  # named without starting anything
        assert workspace.llm_servers.running() == 0
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "cache"))
    server = private_llm_server(gguf, n_ctx=512, threads=2, log_name="judge-server.log")
    assert isinstance(server, LlamaCppServer) and server.port is None  # starts only as a context manager
    assert (server.gguf, server.n_ctx, server.threads) == (gguf, 512, 2)
    assert server.log_path == tmp_path / "cache" / "judge-server.log"


def _import_cycles(imports: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for imported in sorted(imports.get(module, ())):
            if imported not in index:
                visit(imported)
                low[module] = min(low[module], low[imported])
            elif imported in on_stack:
                low[module] = min(low[module], index[imported])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return cycles


def _type_only_back_references() -> list[tuple[str, str]]:
    """The cycle contract's named exceptions in pyproject.toml (type-only imports of a store class)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (contract,) = [c for c in config["tool"]["importlinter"]["contracts"] if c["type"] == "acyclic_siblings"]
    edges = [tuple(part.strip() for part in line.split("->")) for line in contract.get("ignore_imports", [])]
    return [(a, b) for a, b in edges]


def test_no_import_cycles_between_files() -> None:
    """No file imports itself back through others, a package's ``__init__`` and its own modules included
    (the ``acyclic_siblings`` contract compares siblings only, so it does not see the latter)."""
    import grimp

    graph = grimp.build_graph("rag", cache_dir=None)
    imports = {module: set(graph.find_modules_directly_imported_by(module)) for module in graph.modules}
    for importer, imported in _type_only_back_references():
        assert imported in imports[importer], f"{importer} no longer imports {imported}: drop the exception"
        imports[importer].discard(imported)
    cycles = _import_cycles(imports)
    shown = [
        ", ".join(f"{a} -> {b}" for a in cycle for b in sorted(imports[a] & set(cycle))) for cycle in cycles
    ]
    assert not cycles, "import cycles:\n" + "\n".join(shown)


def test_the_cycle_finder_finds_cycles() -> None:
    assert _import_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _import_cycles({"pkg": {"pkg.mod"}, "pkg.mod": {"pkg"}}) == [["pkg", "pkg.mod"]]
    assert _import_cycles({"a": {"b"}, "b": set()}) == []
