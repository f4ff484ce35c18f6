"""Background ingest jobs for large uploads: ``202 Accepted`` now, progress and the report at ``/v1/jobs/{id}``.

Jobs run on a small thread pool in the server process. Ingests into one collection are serialised by the
collection's writer lock (which also queues them behind a CLI ingest). Jobs live in memory, so a restart
forgets finished ones (the documents they committed stay committed); with shared state every change of a
job is also recorded in the shared database, so any replica answers ``/v1/jobs/{id}`` and a restart
forgets nothing.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any

from rag.core.errors import RagError
from rag.core.shared_state import SharedRecords
from rag.ingest.pipeline import IngestReport

log = logging.getLogger(__name__)

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
        records: the shared database, where every change of a job is recorded (``None``: memory only).
    """

    def __init__(
        self,
        workers: int = 2,
        classify: Callable[[RagError], tuple[int, str]] | None = None,
        on_finish: Callable[[str, str], None] | None = None,
        records: SharedRecords | None = None,
    ) -> None:
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None  # made on the first job, and again after a shutdown
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._classify = classify
        self._on_finish = on_finish
        self._records = records

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
        self._record(job)
        with self._lock:
            self._pool.submit(self._run, job, work)
        return job

    def _record(self, job: Job) -> None:
        if self._records is None:
            return
        try:
            self._records.save_job(job.to_dict(), datetime.now(timezone.utc).isoformat())
        except RagError as exc:  # the job itself goes on; only other replicas miss this change
            log.warning("cannot record job %s in the shared database: %s", job.id, exc)

    def _run(self, job: Job, work: Work) -> None:
        job.status = "running"
        self._record(job)

        def progress(done: int, total: int, _path: str) -> None:
            job.files_done, job.files_total = done, total
            self._record(job)

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
        self._record(job)
        if self._on_finish:
            self._on_finish(job.collection, job.status)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None and self._records is not None:
            record = self._records.load_job(job_id)  # submitted through another replica
            job = Job(**record) if record is not None else None
        return job

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
