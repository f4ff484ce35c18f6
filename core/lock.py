"""The writer lock: one process at a time changes a data directory.

An ingest (or a rebuild, or a document deletion) holds ``<data_dir>/write.lock`` for its whole run, so two
writers never interleave their commits. Readers take no lock: SQLite's WAL gives them the last committed
state while a writer works. The lock is an ``flock`` on an open file, so the kernel releases it when the
holder dies, ``kill -9`` included; a stale lock file left behind is harmless. The holder writes its pid and
what it is doing into the file, for the message another writer shows while it waits.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from rag.core.errors import IndexBusyError, StorageError

LOCK_NAME = "write.lock"
_POLL_SECONDS = 0.2


class WriterLock:
    """An exclusive, process-level lock on a data directory, as a context manager.

    Args:
        data_dir: the data directory (created if missing).
        purpose: what the holder is doing, shown to a writer that has to wait (``"ingest"``).
        wait: block until the lock is free; ``False`` raises :class:`IndexBusyError` at once instead.
        on_wait: called once with a human message when the lock is taken and ``wait`` is true.
        timeout: give up waiting after this many seconds (``None``: wait for as long as it takes).

    Raises:
        IndexBusyError: the lock is held elsewhere and ``wait`` is false, or ``timeout`` ran out.
        StorageError: the lock file cannot be created (read-only or missing permissions).
    """

    def __init__(
        self,
        data_dir: Path,
        purpose: str = "ingest",
        *,
        wait: bool = True,
        on_wait: Callable[[str], None] | None = None,
        timeout: float | None = None,
    ) -> None:
        self.path = Path(data_dir) / LOCK_NAME
        self.purpose, self.wait, self.on_wait, self.timeout = purpose, wait, on_wait, timeout
        self._fd: int | None = None

    def __enter__(self) -> WriterLock:
        self.acquire()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(
                f"cannot create the writer lock {self.path}: {exc.strerror}; the data directory must be writable "
                "to ingest (searching a read-only one works)"
            ) from None
        try:
            self._lock(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        # Who holds it, for the waiting message of the next writer; the lock itself is the flock.
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {self.purpose}\n".encode(), 0)

    def _lock(self, fd: int) -> None:
        if _try_flock(fd):
            return
        message = f"another process ({self.holder()}) is writing to {self.path.parent}"
        wait_for_lock(lambda: _try_flock(fd), message, wait=self.wait, on_wait=self.on_wait, timeout=self.timeout)

    def holder(self) -> str:
        """``pid N, ingest`` as the current holder wrote it, or ``unknown`` if it cannot be read."""
        try:
            pid, _, purpose = self.path.read_text().strip().partition(" ")
        except OSError:
            return "unknown"
        return f"pid {pid}, {purpose}" if pid else "unknown"

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def wait_for_lock(
    try_lock: Callable[[], bool],
    message: str,
    *,
    wait: bool,
    on_wait: Callable[[str], None] | None,
    timeout: float | None,
) -> None:
    """Poll ``try_lock`` until it succeeds, for a lock that ``message`` says another process holds.

    Raises:
        IndexBusyError: ``wait`` is false, or ``timeout`` seconds ran out.
    """
    if not wait:
        raise IndexBusyError(f"{message}; wait for it to finish, or run again without --no-wait to queue")
    if on_wait is not None:
        on_wait(f"{message}; waiting for it to finish ...")
    deadline = None if timeout is None else time.monotonic() + timeout
    while not try_lock():
        if deadline is not None and time.monotonic() >= deadline:
            raise IndexBusyError(f"{message}; gave up after waiting {timeout:g} s")
        time.sleep(_POLL_SECONDS)


def _try_flock(fd: int) -> bool:
    """Take the exclusive lock if it is free; ``False`` if another open file holds it."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return False
    return True
