"""Helpers shared by the ``rag eval`` tests: paths, the environment for ``rag`` subprocesses, running them."""

from __future__ import annotations

import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
QA = REPO / "evaluate" / "testsets" / "docs_qa.jsonl"
# One llama.cpp thread, short answers and a small context budget: seconds per answer on a busy 2-core box.
FAST_LLM = {"RAG_LLM__THREADS": "1", "RAG_LLM__MAX_TOKENS": "40", "RAG_LLM__CONTEXT_TOKENS": "500"}


def rag_env(cache: Path, **extra: str) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAG_CACHE_DIR": str(cache),
           **FAST_LLM, **extra}
    for name in ("RAG_JUDGE_BASE_URL", "RAG_JUDGE_MODEL", "RAG_COLLECTION"):
        env.pop(name, None)
    return env


def rag(project: Path, *args: str, env: dict[str, str], timeout: float = 900) -> subprocess.CompletedProcess:
    """``rag --data-dir PROJECT/.rag ARGS`` run in ``project``, output captured."""
    return subprocess.run([sys.executable, "-m", "rag.cli", "--data-dir", str(project / ".rag"), *args],
                          cwd=project, capture_output=True, text=True, env=env, timeout=timeout)


def start_rag(project: Path, *args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "rag.cli", "--data-dir", str(project / ".rag"), *args],
                            cwd=project, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def run_concurrently(project: Path, commands: list[tuple[str, ...]], *, env: dict[str, str],
                     workers: int = 2, timeout: float = 300) -> list[subprocess.CompletedProcess]:
    """:func:`rag` for each of ``commands`` (independent ones), ``workers`` at a time; results in order.

    A test waiting on one child leaves the other core idle; most of a short ``rag`` run is its imports.
    """
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(lambda args: rag(project, *args, env=env, timeout=timeout), commands))
