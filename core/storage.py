"""SQLite files of the index: opened for writing or read-only, their failures turned into one-line errors.

Every file of a data directory is opened through :func:`open_sqlite`, and every statement that can fail
runs inside :func:`sqlite_errors`, so a locked database, a full disk, a file the process may not write, or a
corrupt file ends in a :class:`~rag.core.errors.StorageError` that names the file and the fix, never in a
traceback. Readers open files read-only: a read-only data directory (a mounted snapshot, a file system
another user owns) stays searchable.
"""

from __future__ import annotations

import errno
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rag.core.errors import REBUILD_HINT, StorageError

# How long a statement waits for another connection's lock before it fails with "database is locked".
BUSY_TIMEOUT_S = 30.0

_FULL = "disk is full (or the file-size limit was reached)"


def describe_sqlite_error(path: Path, exc: sqlite3.Error, *, derived: bool = False) -> str:
    """A one-line message for a failure on ``path``: what happened and what to do about it.

    Args:
        path: the SQLite file.
        exc: the error sqlite3 raised.
        derived: the file can be rebuilt from the catalog (a vector store), which changes the advice for a
            corrupt file.
    """
    text = str(exc)
    lowered = text.lower()
    if "locked" in lowered or "busy" in lowered:
        return (
            f"{path} is locked by another process (an ingest?) and stayed locked for {BUSY_TIMEOUT_S:g} s; "
            "retry when it has finished"
        )
    if "full" in lowered or "disk i/o" in lowered or "too big" in lowered:
        return (
            f"cannot write {path}: {_FULL} ({text}); free some space and run the same command again: "
            "everything committed before is kept"
        )
    if "readonly" in lowered or "read-only" in lowered:
        return f"cannot write {path}: the file or its folder is read-only; ingest needs a writable data directory"
    if "not a database" in lowered or "malformed" in lowered or "corrupt" in lowered:
        fix = REBUILD_HINT if derived else f"restore it from a backup, or move it away and {REBUILD_HINT}"
        return f"{path} is corrupt ({text}); {fix}"
    if "unable to open" in lowered:
        return f"cannot open {path} ({text}); check that its folder exists and is readable"
    return f"{path}: {text}"


def describe_os_error(exc: OSError, fallback: Path | None = None) -> str:
    """A one-line message for a failed file operation, naming the file."""
    where = exc.filename or fallback or "a file of the index"
    if exc.errno in (errno.ENOSPC, errno.EFBIG, errno.EDQUOT):
        return (
            f"cannot write {where}: {_FULL}; free some space and run the same command again: "
            "everything committed before is kept"
        )
    if exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"cannot write {where}: {exc.strerror}; ingest needs a writable data directory"
    return f"{where}: {exc.strerror or exc}"


@contextmanager
def sqlite_errors(path: Path, *, derived: bool = False) -> Iterator[None]:
    """Turn any ``sqlite3.Error`` (and disk-full ``OSError``) raised inside into a :class:`StorageError`."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageError(describe_sqlite_error(path, exc, derived=derived)) from exc
    except OSError as exc:
        raise StorageError(describe_os_error(exc, path)) from exc


def open_sqlite(path: Path, *, read_only: bool = False, derived: bool = False) -> sqlite3.Connection | None:
    """Open ``path`` in autocommit mode with WAL journaling (writers) or read-only (readers).

    A reader opens ``mode=ro``; where even that cannot work because the folder is not writable (SQLite's
    WAL needs a shared-memory file beside the database), it opens the file as immutable, which is exact
    as long as nothing writes to that folder, and nothing can.

    Returns:
        The connection, or ``None`` for a reader when the file does not exist (an empty index).

    Raises:
        StorageError: the file cannot be opened or is not a database.
    """
    if read_only and not path.exists():
        return None
    with sqlite_errors(path, derived=derived):
        if not read_only:
            path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S)
            conn.execute("PRAGMA journal_mode=WAL")
            return conn
        uri = path.resolve().as_uri()
        try:
            conn = sqlite3.connect(
                f"{uri}?mode=ro", uri=True, isolation_level=None, check_same_thread=False, timeout=BUSY_TIMEOUT_S
            )
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return conn
        except sqlite3.OperationalError as exc:
            if "unable to open" not in str(exc) and "readonly" not in str(exc).lower():
                raise
        conn = sqlite3.connect(f"{uri}?immutable=1", uri=True, isolation_level=None, check_same_thread=False)
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        return conn
