"""What an ingest run reports: the files it added, updated, left alone, removed, failed or skipped.

A shared result type: the engine returns it, the CLI, the API's upload jobs and Python callers read it,
so it lives in ``core`` where every layer may import it. :mod:`rag.ingest.pipeline` fills it in and
re-exports it under its old import path.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(slots=True)
class IngestReport:
    """What one ingest run did, for the end summary and ``--json``.

    ``added``, ``updated``, ``unchanged`` and ``removed`` list files (or document ids, for in-memory
    documents); ``failed`` lists ``(what, reason)`` for files, folders and single records that could not
    be read; ``skipped`` lists ``(path, reason)`` for files left out on purpose (an unsupported type, a
    link to a file ingested anyway). Failures make a run not :attr:`ok`; skips do not.
    """

    added: list[str] = field(default_factory=list)
    updated: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    chunks_added: int = 0
    chunks_removed: int = 0
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failed

    def to_dict(self, *, names: bool = False) -> dict[str, Any]:
        """The report as JSON: counts of added/updated/unchanged/removed (``rag ingest --json``), or with
        ``names`` the lists of files or document ids themselves (the API)."""
        shown = list if names else len
        return {
            "added": shown(self.added),
            "updated": shown(self.updated),
            "unchanged": shown(self.unchanged),
            "removed": shown(self.removed),
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "chunks_added": self.chunks_added,
            "chunks_removed": self.chunks_removed,
            "seconds": round(self.seconds, 3),
        }


Progress = Callable[[int, int, str], None]
"""``progress(files_done, files_total, current_path)``."""
