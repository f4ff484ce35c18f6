"""Reading the logs of child servers (llama.cpp, Postgres) for error messages."""

from __future__ import annotations

from collections import deque
from pathlib import Path


def log_tail(path: Path, offset: int = 0, lines: int = 15) -> str:
    """The last ``lines`` non-empty lines written to ``path`` after byte ``offset`` (this run's share)."""
    try:
        with path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError as exc:
        return f"(cannot read {path}: {exc})"
    tail = deque((line for line in text.splitlines() if line.strip()), maxlen=lines)
    return "\n".join(tail) or "(the log is empty)"
