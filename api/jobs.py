"""Background ingest jobs for large uploads: ``202 Accepted`` now, progress and the report at ``/v1/jobs/{id}``.

A job is durable. Before the 202 its uploaded files are in the collection's ``uploads/`` folder and its
record and *spec* (what to ingest: the file names and metadata, or the JSON documents) are written to
``<data_dir>/jobs/<id>.json``. While a process runs a job it holds an exclusive lock on ``<id>.lock``;
the kernel drops it when the process dies, ``kill -9`` included. On start, a server resumes every
unfinished job whose lock it can take (so two servers over one data directory never run a job twice),
and a job that cannot run any more (its collection was deleted) ends ``failed`` with the reason. Finished
jobs keep their record (the last 1,000) and lose their spec.

With shared state every change of a job is also recorded in the shared database, so any replica answers
``/v1/jobs/{id}``. Jobs run on a small thread pool; ingests into one collection are serialised by the
collection's writer lock (which also queues them behind a CLI ingest).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any

from rag.core.errors import RagError, StorageError
from rag.core.ingest_report import IngestReport, Progress
from rag.core.shared_state import SharedRecords
from rag.core.storage import describe_os_error

log = logging.getLogger(__name__)

_KEEP_FINISHED = 1000
JOBS_FOLDER = "jobs"
_JOB_ID = re.compile(r"\A[0-9a-f]{32}\Z")


@dataclass
class Job:
    id: str
    collection: str
    status: str = "queued"
    files_done: int = 0
    files_total: int = 0
    report: dict[str, Any] | None = None
    error: dict[str, str] | None = None
    created: str = field(default_factory=lambda: datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def finished(self) -> bool:
        return self.status in ("succeeded", "failed")


Runner = Callable[[str, dict[str, Any], Progress | None], IngestReport]
"""``runner(collection, spec, progress) -> report``: runs the ingest a job's spec describes."""


class JobStore:
    """Job records and the specs of unfinished jobs, one JSON file a job in ``folder``.

    Args:
        folder: ``<data_dir>/jobs``; made on the first job.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    def _file(self, job_id: str, suffix: str) -> Path:
        if not _JOB_ID.match(job_id):  # ids are made here; anything else is no job (and no file name)
            raise KeyError(job_id)
        return self.folder / f"{job_id}{suffix}"

    def save(self, job: Job, spec: dict[str, Any] | None) -> None:
        """Write the job (and its spec, while it is unfinished) atomically.

        Raises:
            StorageError: the file cannot be written (disk full, read-only).
        """
        target = self._file(job.id, ".json")
        tmp = target.with_suffix(".tmp")
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            with tmp.open("w", encoding="utf-8") as out:
                json.dump({"job": job.to_dict(), "spec": spec}, out, ensure_ascii=False)
                out.flush()
                os.fsync(out.fileno())  # on disk before the 202 says it is
            os.replace(tmp, target)
        except OSError as exc:
            raise StorageError(describe_os_error(exc, target)) from exc

    def load(self, job_id: str) -> tuple[Job, dict[str, Any] | None] | None:
        try:
            data = json.loads(self._file(job_id, ".json").read_text(encoding="utf-8"))
        except (KeyError, OSError, ValueError):
            return None
        return Job(**data["job"]), data.get("spec")

    def claim(self, job_id: str) -> IO[bytes] | None:
        """An exclusive lock on the job for this process's life (``None``: another process holds it)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        handle = self._file(job_id, ".lock").open("a+b")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return None
        return handle

    def release(self, job_id: str, handle: IO[bytes] | None) -> None:
        if handle is None:
            return
        self._file(job_id, ".lock").unlink(missing_ok=True)
        handle.close()

    def unfinished(self) -> list[tuple[Job, dict[str, Any] | None]]:
        """The jobs on disk that have not finished, oldest first."""
        found = []
        for path in sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime) if self.folder.is_dir() else []:
            loaded = self.load(path.stem)
            if loaded is not None and not loaded[0].finished:
                found.append(loaded)
        return found

    def prune(self, keep: int = _KEEP_FINISHED) -> None:
        """Remove the records of all but the newest ``keep`` finished jobs."""
        if not self.folder.is_dir():
            return
        paths = sorted(self.folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        finished = [p for p in paths if (loaded := self.load(p.stem)) is not None and loaded[0].finished]
        for path in finished[keep:]:
            path.unlink(missing_ok=True)


class JobManager:
    """Runs ingest jobs in the background, durably, and remembers their outcome.

    Args:
        runner: runs a job's spec (see :data:`Runner`).
        store: where jobs are written before they are accepted (``None``: memory only, for tests of the
            manager itself).
        workers: jobs that run at once (ingests into one collection still go one at a time).
        classify: maps a library error to ``(status, type)`` for the job's ``error``.
        describe: turns an error's message into what a client may see.
        on_finish: called with ``(collection, outcome)`` when a job ends (metrics).
        records: the shared database, where every change of a job is also recorded (``None``: none).
    """

    def __init__(
        self,
        runner: Runner,
        store: JobStore | None = None,
        *,
        workers: int = 2,
        classify: Callable[[RagError], tuple[int, str]] | None = None,
        describe: Callable[[str], str] = str,
        on_finish: Callable[[str, str], None] | None = None,
        records: SharedRecords | None = None,
    ) -> None:
        self._runner = runner
        self._store = store
        self._workers = workers
        self._pool: ThreadPoolExecutor | None = None  # made on the first job, and again after a shutdown
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._lock = threading.Lock()
        self._classify = classify
        self._describe = describe
        self._on_finish = on_finish
        self._records = records

    def submit(self, collection: str, spec: dict[str, Any], *, files_total: int = 0) -> Job:
        """Record the job durably, then queue it; returns it (status ``queued``).

        Raises:
            StorageError: the job cannot be recorded; it was not accepted.
        """
        job = Job(uuid.uuid4().hex, collection, files_total=files_total)
        claim = self._store.claim(job.id) if self._store is not None else None
        try:
            if self._store is not None:
                self._store.save(job, spec)
        except BaseException:
            self._store.release(job.id, claim)  # type: ignore[union-attr]
            raise
        self._record(job)
        self._start(job, spec, claim)
        return job

    def resume(self) -> int:
        """Queue again the unfinished jobs no other process runs (after a restart); returns how many."""
        if self._store is None:
            return 0
        resumed = 0
        for job, spec in self._store.unfinished():
            claim = self._store.claim(job.id)
            if claim is None:
                continue  # another server over this data directory runs it
            current = self._store.load(job.id)
            if current is None or current[0].finished:  # it finished while we looked
                self._store.release(job.id, claim)
                continue
            log.info("resuming upload job %s (%s, %d of %d files done)", job.id, job.status, job.files_done,
                     job.files_total)
            job.status = "queued"
            self._start(job, spec, claim)
            resumed += 1
        self._store.prune()
        return resumed

    def _start(self, job: Job, spec: dict[str, Any] | None, claim: IO[bytes] | None) -> None:
        with self._lock:
            self._jobs[job.id] = job
            while len(self._jobs) > _KEEP_FINISHED:
                oldest = next(iter(self._jobs.values()))
                if not oldest.finished:
                    break
                self._jobs.popitem(last=False)
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self._workers, thread_name_prefix="rag-job")
            self._pool.submit(self._run, job, spec, claim)

    def _save(self, job: Job, spec: dict[str, Any] | None) -> None:
        if self._store is not None:
            try:
                self._store.save(job, spec)
            except StorageError as exc:  # the job goes on; a restart now would run it again (idempotent)
                log.warning("cannot record job %s: %s", job.id, exc)
        self._record(job)

    def _record(self, job: Job) -> None:
        if self._records is None:
            return
        try:
            self._records.save_job(job.to_dict(), datetime.now(UTC).isoformat())
        except RagError as exc:  # the job itself goes on; only other replicas miss this change
            log.warning("cannot record job %s in the shared database: %s", job.id, exc)

    def _run(self, job: Job, spec: dict[str, Any] | None, claim: IO[bytes] | None) -> None:
        job.status = "running"
        self._save(job, spec)

        def progress(done: int, total: int, _path: str) -> None:
            job.files_done, job.files_total = done, total
            self._save(job, spec)

        try:
            if spec is None:
                raise StorageError("the job's upload was not recorded; send the files again")
            report = self._runner(job.collection, spec, progress)
        except RagError as exc:
            kind = self._classify(exc)[1] if self._classify else type(exc).__name__
            job.error, job.status = {"type": kind, "message": self._describe(str(exc))}, "failed"
        except Exception:  # a job must end in a state, never vanish; what went wrong is for the log
            log.exception("upload job %s failed", job.id)
            job.error, job.status = {"type": "internal_error", "message": "internal error; the server log has the details"}, "failed"
        else:
            # JSON uploads report no progress while they run; a finished job has done every file either way.
            job.files_done = job.files_total
            job.report, job.status = report_dict(report), "succeeded"
        self._save(job, None)
        if self._store is not None:
            self._store.release(job.id, claim)
        if self._on_finish:
            self._on_finish(job.collection, job.status)

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None and self._store is not None:
            loaded = self._store.load(job_id)  # finished before a restart
            job = loaded[0] if loaded is not None else None
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
