"""Helpers shared by the ``rag eval`` tests: paths, the environment for ``rag`` subprocesses, running them."""

from __future__ import annotations

import os
import subprocess
import sys
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
