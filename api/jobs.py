"""Background ingest jobs for large uploads: ``202 Accepted`` now, progress and the report at ``/v1/jobs/{id}``.

Jobs run on a small thread pool in the server process. Ingests into one collection are serialised by the
collection's writer lock (which also queues them behind a CLI ingest); jobs live in memory, so a restart
forgets finished ones (the documents they committed stay committed).
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rag.core.errors import RagError
from rag.ingest.pipeline import IngestReport

_KEEP_FINISHED = 1000


@dataclass
class Job:
    id: str
    collection: str
    status: str = "queued"
    files_done: int = 0
    files_total: int = 0
    report: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    created: str = field(default_factory=lambda: datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "collection": self.collection, "status": self.status, "files_done": self.files_done,
            "files_total": self.files_total, "report": self.report, "error": self.error, "created": self.created,
        }


Work = Callable[[Callable[[int, int, str], None]], IngestReport]
"""An ingest to run: called with a progress callback, returns the report."""


class JobManager:
    """Runs ingest jobs in the background and remembers their outcome.

    Args:
        workers: jobs that run at once (ingests into one collection still go one at a time).
        classify: maps a library error to ``(status, type)`` for the job's ``error``.
        on_finish: called with ``(collection, outcome)`` when a job ends (metrics).
    """

    def __init__(
        self,
        workers: int = 2,
        classify: Callable[[RagError], tuple[int, str]] | None = None,
        on_finish: Callable[[str, str], None] | None = None,
    ) -> None:
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None  # made on the first job, and again after a shutdown
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._classify = classify
        self._on_finish = on_finish

    def submit(self, collection: str, work: Work, *, files_total: int = 0) -> Job:
        job = Job(uuid.uuid4().hex, collection, files_total=files_total)
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > _KEEP_FINISHED:
                oldest = next(iter(self._jobs.values()))
                if oldest.status in ("queued", "running"):
                    break
                self._jobs.popitem(last=False)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="rag-job")
            self._pool.submit(self._run, job, work)
        return job

    def _run(self, job: Job, work: Work) -> None:
        job.status = "running"

        def progress(done: int, total: int, _path: str) -> None:
            job.files_done, job.files_total = done, total

        try:
            report = work(progress)
        except RagError as exc:
            kind = self._classify(exc)[1] if self._classify else type(exc).__name__
            job.error, job.status = {"type": kind, "message": str(exc)}, "failed"
        except Exception as exc:  # noqa: BLE001 - a job must end in a state, never vanish
            job.error, job.status = {"type": "internal_error", "message": str(exc) or type(exc).__name__}, "failed"
        else:
            # JSON uploads report no progress while they run; a finished job has done every file either way.
            job.files_done = job.files_total
            job.report, job.status = report_dict(report), "succeeded"
        if self._on_finish:
            self._on_finish(job.collection, job.status)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def shutdown(self) -> None:
        """Wait for the running and queued jobs. A later job starts a new pool: an app's lifespan may end
        and start again (test clients do that), and its uploads must not fail for it."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=False)


def report_dict(report: IngestReport) -> dict[str, Any]:
    """An ingest report with the lists themselves (the API shows which documents, not just how many)."""
    return report.to_dict(names=True)
