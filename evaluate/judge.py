"""The RAGAS judge: an LLM behind any OpenAI-compatible endpoint, with a disk cache, timeouts and retries.

RAGAS 0.4's collections metrics call ``await llm.agenerate(prompt, ResponseModel)`` on an
:class:`~ragas.llms.base.InstructorBaseRagasLLM`. :class:`JudgeLLM` is one, built around what
``ragas.llms.llm_factory(model, client=AsyncOpenAI(base_url=...))`` returns, and adds what an evaluation
needs that RAGAS leaves out:

- a per-call timeout, transport retries with backoff (the OpenAI client's), and a bound on concurrent calls;
- a disk cache keyed by (judge model, prompt): a re-run, or a run resumed after a kill, sends nothing that
  was already judged. The n-th identical prompt within one metric of one question (answer relevancy asks
  the same prompt ``strictness`` times) is its own entry, so cached runs reproduce uncached ones;
- failures that do not depend on luck (unparseable or truncated output) are cached too, so a re-run does not
  pay for them again; timeouts and connection errors are not, and are retried by the next run; a reply cut
  off at ``max_tokens`` is cached with that budget and asked again under a larger one;
- a record of every call's parsed verdicts, which the report shows as the judge's reasons.

With no ``base_url`` the judge is the packaged SmolLM2-135M in an embedded llama.cpp server, so ``rag eval``
works offline. Its requests carry the RAGAS response model's JSON schema (with bounded lists and strings, and
verdicts limited to 0 and 1) as ``response_format``, which llama.cpp enforces with a grammar: even a 135M model
then returns well-formed verdicts. They also carry ``cache_prompt: false`` and a fixed ``seed``, so a reply does
not depend on the request before it (llama.cpp's prompt cache) or on the sampler's luck: the same command gives
the same scores. Such a judge gives smoke-test scores only; the report says so at the top.
"""

from __future__ import annotations

import asyncio
import contextvars
import hashlib
import json
import logging
import os
import sqlite3
import threading
import time
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError, GenerationError

# RAGAS posts usage analytics to a web service unless told not to; an offline tool must not phone home.
os.environ.setdefault("RAGAS_DO_NOT_TRACK", "true")

log = logging.getLogger(__name__)

EMBEDDED_CAVEAT = (
    "The judge is the embedded SmolLM2-135M-Instruct: a 135M-parameter model gives smoke-test scores only. "
    "They show that the pipeline runs, not how good the answers are; point --judge-base-url at a strong model "
    "to measure quality."
)
DEFAULT_MAX_TOKENS = 4096
"""Judge output budget; RAGAS's own default (1024) cuts long claim lists short."""
EMBEDDED_MAX_TOKENS = 768
EMBEDDED_N_CTX = 8192
# The embedded server has one slot and a CPU: a slow reply is not helped by asking again, so it gets a long
# timeout and no retries.
DEFAULT_TIMEOUT, EMBEDDED_TIMEOUT = 180.0, 600.0
DEFAULT_RETRIES, EMBEDDED_RETRIES = 2, 0
# Bounds written into the schema sent to a grammar-constrained judge (lists, strings), so a small model
# cannot ramble or loop until the output budget runs out; tighter for the embedded 135M judge.
SCHEMA_BOUNDS = {"embedded": (8, 200), "endpoint": (32, 1000)}
# The integer fields of RAGAS's response models that are binary verdicts; the schema sent allows 0 and 1 only.
BINARY_FIELDS = frozenset({"verdict", "attributed", "noncommittal"})
# Sent to the embedded llama.cpp with every judge request: no reuse of the previous request's KV cache (which
# made a reply depend on what was asked before it) and a fixed sampling seed.
EMBEDDED_REQUEST = {"cache_prompt": False, "seed": 0}
CUTOFF_REASON = "judge output cut off at max_tokens (raise --judge-max-tokens)"


class JudgeUnavailable(GenerationError):  # noqa: N818 - a case of GenerationError, named like GenerationTimeout
    """The judge endpoint cannot be reached at all (exit code 3)."""


class JudgeCallError(Exception):
    """One judge call failed; :attr:`reason` is what the report shows for the missing score."""

    def __init__(self, reason: str, *, cached: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.cached = cached


@dataclass(slots=True)
class JudgeConfig:
    """Which judge to use and how to call it.

    Args:
        base_url: an OpenAI-compatible API root (``.../v1``); ``None`` starts the embedded SmolLM2 server.
        model: the judge model name (required with ``base_url``).
        api_key: the endpoint's key; falls back to ``RAG_JUDGE_API_KEY``, then ``OPENAI_API_KEY``.
        timeout: seconds per HTTP request (default 180; 600 for the embedded judge).
        max_retries: transport retries per call (connection errors, timeouts, 408/409/429/5xx), with backoff
            (default 2; 0 for the embedded judge).
        concurrency: judge calls in flight at once (default 4; 1 for the embedded server, which has one slot).
        max_tokens: output budget per call (default 4096; 768 for the embedded judge).
        temperature: sampling temperature (RAGAS's default, near-deterministic).
        json_schema: send the response model's JSON schema as ``response_format`` (llama.cpp, vLLM and
            others enforce it); default on for the embedded judge only.
        cache_path: the SQLite cache file; default ``$RAG_CACHE_DIR/judge-cache.sqlite``.
        gguf, threads, n_ctx: the embedded server's model file, CPU threads (default: half the CPUs this
            process may use, at least 1, see :func:`default_judge_threads`) and context window.
    """

    base_url: str | None = None
    model: str | None = None
    api_key: str | None = field(default=None, repr=False)
    timeout: float | None = None
    max_retries: int | None = None
    concurrency: int | None = None
    max_tokens: int | None = None
    temperature: float = 0.01
    json_schema: bool | None = None
    cache_path: Path | None = None
    gguf: str | None = None
    threads: int | None = None
    n_ctx: int = EMBEDDED_N_CTX

    def __post_init__(self) -> None:
        if self.base_url and not self.model:
            raise ConfigError("--judge-base-url needs --judge-model (the model name the endpoint serves)")
        if self.model and not self.base_url:
            raise ConfigError("--judge-model needs --judge-base-url; without both, the embedded judge is used")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"judge timeout must be positive, got {self.timeout}")
        if self.max_retries is not None and self.max_retries < 0:
            raise ConfigError(f"judge max_retries must be >= 0, got {self.max_retries}")
        if self.concurrency is not None and self.concurrency <= 0:
            raise ConfigError(f"judge concurrency must be positive, got {self.concurrency}")
        if self.max_tokens is not None and self.max_tokens <= 0:
            raise ConfigError(f"judge max_tokens must be positive, got {self.max_tokens}")

    @property
    def embedded(self) -> bool:
        return not self.base_url

    @property
    def effective_timeout(self) -> float:
        return self.timeout or (EMBEDDED_TIMEOUT if self.embedded else DEFAULT_TIMEOUT)

    @property
    def effective_retries(self) -> int:
        if self.max_retries is not None:
            return self.max_retries
        return EMBEDDED_RETRIES if self.embedded else DEFAULT_RETRIES

    @property
    def schema_bounds(self) -> tuple[int, int]:
        return SCHEMA_BOUNDS["embedded" if self.embedded else "endpoint"]

    @property
    def effective_concurrency(self) -> int:
        return self.concurrency or (1 if self.embedded else 4)

    @property
    def effective_max_tokens(self) -> int:
        return self.max_tokens or (EMBEDDED_MAX_TOKENS if self.embedded else DEFAULT_MAX_TOKENS)

    @property
    def effective_threads(self) -> int:
        return self.threads or default_judge_threads()

    @property
    def effective_json_schema(self) -> bool:
        return self.embedded if self.json_schema is None else self.json_schema

    def identity(self) -> dict[str, Any]:
        """The settings that shape the judge's replies (for comparing runs); threads, timeouts, retries,
        concurrency and the cache file do not."""
        return {"max_tokens": self.effective_max_tokens, "temperature": self.temperature,
                "json_schema": self.effective_json_schema,
                "schema_bounds": list(self.schema_bounds) if self.effective_json_schema else None,
                **({"n_ctx": self.n_ctx, **EMBEDDED_REQUEST} if self.embedded else {})}

    def resolved_cache_path(self) -> Path:
        if self.cache_path is not None:
            return Path(self.cache_path).expanduser()
        from rag.core.onnx_query import cache_dir

        return cache_dir() / "judge-cache.sqlite"


def default_judge_threads() -> int:
    """llama.cpp threads for the embedded judge: half the CPUs this process may use, at least 1, at most 8.

    llama.cpp's own default takes every core; on a busy machine its threads then wait for each other (on a
    2-core machine under load, 2 threads decoded 0.27 tokens/s where 1 thread decoded 10.6). Threads do
    not change the replies, only their speed.
    """
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(8, cpus // 2))


# -- the cache --------------------------------------------------------------------------------------


class JudgeCache:
    """Judge replies on disk, keyed by a hash of (judge model, messages, response model, occurrence).

    A SQLite file, so a run killed mid-way keeps every reply written before the kill (each is committed
    as it arrives), and several processes may share it.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS judge_calls (key TEXT PRIMARY KEY, model TEXT NOT NULL, "
                "status TEXT NOT NULL, payload TEXT NOT NULL, created REAL NOT NULL)"
            )
        except (OSError, sqlite3.Error) as exc:
            raise ConfigError(f"cannot open the judge cache {self.path}: {exc}") from None
        self._lock = threading.Lock()

    @staticmethod
    def key(model: str, messages: list[dict[str, str]], response_model: str, occurrence: int) -> str:
        blob = json.dumps([model, messages, response_model, occurrence], ensure_ascii=False, sort_keys=True)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def get(self, key: str) -> tuple[str, str] | None:
        """``(status, payload)``: ``("ok", reply JSON)`` or ``("error", reason)``; ``None`` if not cached."""
        with self._lock:
            row = self._db.execute("SELECT status, payload FROM judge_calls WHERE key = ?", (key,)).fetchone()
        return (row[0], row[1]) if row else None

    def put(self, key: str, model: str, status: str, payload: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO judge_calls (key, model, status, payload, created) VALUES (?, ?, ?, ?, ?)",
                (key, model, status, payload, time.time()),
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM judge_calls").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


# -- recording calls per (question, metric) -----------------------------------------------------------


@dataclass(slots=True)
class JudgeCall:
    """One judge call as the report shows it."""

    response_model: str
    output: dict[str, Any] | None
    error: str | None
    cached: bool
    seconds: float


@dataclass(slots=True)
class CallRecord:
    """The judge calls made while scoring one metric of one question."""

    calls: list[JudgeCall] = field(default_factory=list)
    occurrences: Counter = field(default_factory=Counter)


_RECORD: contextvars.ContextVar[CallRecord | None] = contextvars.ContextVar("rag_judge_record", default=None)


def recording() -> tuple[CallRecord, contextvars.Token]:
    """Start recording the judge calls of the current task; reset with ``_RECORD.reset(token)``."""
    record = CallRecord()
    return record, _RECORD.set(record)


def stop_recording(token: contextvars.Token) -> None:
    _RECORD.reset(token)


@dataclass(slots=True)
class JudgeStats:
    """Counts over a run: calls sent, answered from the cache, failed."""

    sent: int = 0
    cached: int = 0
    failed: int = 0
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"sent": self.sent, "cached": self.cached, "failed": self.failed, "seconds": round(self.seconds, 3)}


# -- the RAGAS LLM -----------------------------------------------------------------------------------


def bounded_schema(schema: dict[str, Any], max_items: int = 32, max_chars: int = 1000) -> dict[str, Any]:
    """A copy of a JSON schema with every list capped at ``max_items`` items, every string at ``max_chars``
    characters, the binary verdict fields (:data:`BINARY_FIELDS`) limited to 0 and 1, and no extra object
    properties, for grammar-constrained decoding."""

    def walk(node: Any) -> Any:
        if isinstance(node, dict):
            node = {key: walk(value) for key, value in node.items()}
            kind = node.get("type")
            if kind == "array":
                node.setdefault("maxItems", max_items)
            elif kind == "string" and "enum" not in node:
                node.setdefault("maxLength", max_chars)
            elif kind == "object" and "properties" in node:
                node.setdefault("additionalProperties", False)
                for name, prop in node["properties"].items():
                    if name in BINARY_FIELDS and isinstance(prop, dict) and prop.get("type") == "integer":
                        prop.setdefault("enum", [0, 1])  # a small judge writes "attributed: 2" otherwise
            return node
        if isinstance(node, list):
            return [walk(item) for item in node]
        return node

    return walk(schema)


def _failure(exc: BaseException, timeout: float) -> tuple[str, bool]:
    """``(reason, deterministic)`` for a failed judge call; deterministic failures are cached."""
    import openai

    chain: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in chain and len(chain) < 10:
        chain.append(current)
        current = current.__cause__ or current.__context__
    for item in chain:
        if isinstance(item, (openai.APITimeoutError, asyncio.TimeoutError, TimeoutError)):
            return f"judge timed out (after {timeout:g} s per request)", False
        if isinstance(item, openai.APIConnectionError):
            return f"cannot reach the judge endpoint ({item.__class__.__name__})", False
        if isinstance(item, openai.APIStatusError):
            return f"judge endpoint answered HTTP {item.status_code}", item.status_code in (400, 404, 422)
    for item in chain:
        completion = getattr(item, "last_completion", None)
        choices = getattr(completion, "choices", None) or []
        finish = getattr(choices[0], "finish_reason", None) if choices else None
        if item.__class__.__name__ == "IncompleteOutputException" or finish == "length":
            return CUTOFF_REASON, True
    detail = " ".join(str(exc).split())[:200] or exc.__class__.__name__
    return f"judge output did not parse ({detail})", True


def _cached_failure(status: str, payload: str, budget: int) -> str | None:
    """The reason of a cached failure that still holds under the output ``budget``, or ``None`` to ask again.

    A reply cut off at ``max_tokens`` holds only for budgets up to the one it was cut at; an entry written
    before the budget was recorded (status ``error`` with the cut-off reason) is asked again.
    """
    if status == "error":
        return None if payload == CUTOFF_REASON else payload
    if status == "cutoff":
        try:
            cut_at = int(json.loads(payload)["max_tokens"])
        except (ValueError, KeyError, TypeError):
            return None
        return CUTOFF_REASON if budget <= cut_at else None
    return None


def _ragas_base() -> type:
    from ragas.llms.base import InstructorBaseRagasLLM

    return InstructorBaseRagasLLM


def make_judge_llm(inner: Any, *, model: str, cache: JudgeCache, stats: JudgeStats, config: JudgeConfig) -> Any:  # noqa: C901 - counts the methods of its nested class
    """A :class:`JudgeLLM` around ``inner`` (an LLM made by ``ragas.llms.llm_factory``)."""
    base = _ragas_base()

    class JudgeLLM(base):  # type: ignore[misc, valid-type]
        """RAGAS LLM with cache, timeout, bounded concurrency and call recording (see module docstring)."""

        def __init__(self) -> None:
            self.inner = inner
            self.model = model
            self.semaphore = asyncio.Semaphore(config.effective_concurrency)

        def generate(self, prompt: str, response_model: Any) -> Any:
            return asyncio.run(self.agenerate(prompt, response_model))

        async def agenerate(self, prompt: str, response_model: Any) -> Any:
            messages = []
            if getattr(inner, "system_prompt", None):
                messages.append({"role": "system", "content": inner.system_prompt})
            messages.append({"role": "user", "content": prompt})
            record = _RECORD.get()
            name = response_model.__name__
            occurrence = 0
            if record is not None:
                occurrence = record.occurrences[(name, prompt)]
                record.occurrences[(name, prompt)] += 1
            key = JudgeCache.key(model, messages, name, occurrence)
            budget = config.effective_max_tokens
            hit = cache.get(key)
            if hit is not None:
                status, payload = hit
                if status == "ok":
                    try:
                        result = response_model.model_validate_json(payload)
                    except ValueError:
                        pass  # a cache entry from another RAGAS version: ask again
                    else:
                        stats.cached += 1
                        self._record(record, name, result, None, True, 0.0)
                        return result
                reason = _cached_failure(status, payload, budget)
                if reason is not None:
                    stats.cached += 1
                    self._record(record, name, None, reason, True, 0.0)
                    raise JudgeCallError(reason, cached=True)
            async with self.semaphore:
                started = time.perf_counter()
                try:
                    # A hard cap over the client's own per-request timeout and retries.
                    cap = config.effective_timeout * (config.effective_retries + 1) + 30
                    result = await asyncio.wait_for(self._call(messages, response_model), cap)
                except Exception as exc:  # every failure becomes a reason
                    seconds = time.perf_counter() - started
                    stats.sent += 1
                    stats.failed += 1
                    stats.seconds += seconds
                    reason, deterministic = _failure(exc, config.effective_timeout)
                    log.info("judge call failed: %s", reason, exc_info=True)
                    if reason == CUTOFF_REASON:  # cut at this budget; a larger one asks again
                        cache.put(key, model, "cutoff", json.dumps({"reason": reason, "max_tokens": budget}))
                    elif deterministic:
                        cache.put(key, model, "error", reason)
                    self._record(record, name, None, reason, False, seconds)
                    raise JudgeCallError(reason) from exc
            seconds = time.perf_counter() - started
            stats.sent += 1
            stats.seconds += seconds
            cache.put(key, model, "ok", result.model_dump_json())
            self._record(record, name, result, None, False, seconds)
            return result

        def request_options(self, response_model: Any) -> dict[str, Any]:
            """The sampling options and extra JSON fields of a request for ``response_model``."""
            kwargs = dict(inner.model_args)
            extra: dict[str, Any] = dict(EMBEDDED_REQUEST) if config.embedded else {}
            if config.effective_json_schema:
                # Overrides the plain JSON mode instructor asks for: the endpoint enforces the schema.
                schema = bounded_schema(response_model.model_json_schema(), *config.schema_bounds)
                extra["response_format"] = {"type": "json_object", "schema": schema}
            if extra:
                kwargs["extra_body"] = extra
            return kwargs

        async def _call(self, messages: list[dict[str, str]], response_model: Any) -> Any:
            return await inner.client.chat.completions.create(
                model=model,
                messages=messages,
                response_model=response_model,
                # Re-asking a grammar-constrained judge gets the same reply; a free one may fix its JSON.
                max_retries=0 if config.effective_json_schema else 1,
                **self.request_options(response_model),
            )

        @staticmethod
        def _record(record: CallRecord | None, name: str, result: Any, error: str | None, cached: bool, seconds: float) -> None:
            if record is not None:
                output = result.model_dump() if result is not None else None
                record.calls.append(JudgeCall(name, output, error, cached, round(seconds, 3)))

    return JudgeLLM()


def _minilm_embeddings_class() -> type:
    from ragas.embeddings.base import BaseRagasEmbedding

    class MiniLMEmbeddings(BaseRagasEmbedding):
        """RAGAS embeddings from the packaged all-MiniLM-L6-v2 (answer relevancy compares questions with it)."""

        def __init__(self, model: str = "all-MiniLM-L6-v2") -> None:
            super().__init__()
            from rag.core.embeddings import SentenceEmbedder

            self.embedder = SentenceEmbedder(model, onnx_queries=False)
            self.model = model

        def embed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embedder.encode([text])[0].tolist()

        async def aembed_text(self, text: str, **kwargs: Any) -> list[float]:
            return self.embed_text(text)

        def embed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return self.embedder.encode(list(texts)).tolist()

        async def aembed_texts(self, texts: list[str], **kwargs: Any) -> list[list[float]]:
            return self.embed_texts(texts)

    return MiniLMEmbeddings


def _quiet_instructor() -> None:
    """Keep instructor's ERROR line for every failed judge call off the console.

    A failed call is already a missing score with its reason in the report, and logged here at INFO (shown
    with ``rag -v``). Unless logging is verbose, instructor's own logger is raised above ERROR; a level set
    on it explicitly is left alone.
    """
    quiet = logging.getLogger("instructor")
    if quiet.level == logging.NOTSET and not logging.getLogger().isEnabledFor(logging.INFO):
        quiet.setLevel(logging.CRITICAL)


class Judge:
    """The judge of one or more runs: the endpoint (or the embedded server), the cache and the counters.

    Use as a context manager; the embedded server, when used, runs until the block ends. Make a fresh
    :meth:`llm` for every event loop (the async HTTP client belongs to the loop it was made in).

    Raises:
        ConfigError: bad configuration, or the cache cannot be opened.
        GenerationError: the embedded server cannot start.
    """

    def __init__(self, config: JudgeConfig) -> None:
        self.config = config
        self.cache = JudgeCache(config.resolved_cache_path())
        self.stats = JudgeStats()
        self._stack = ExitStack()
        self.base_url = config.base_url
        self.model = config.model
        self._embeddings: Any = None
        self.started = False
        self.gguf: Path | None = None
        _quiet_instructor()

    def __enter__(self) -> Judge:
        self.started = True
        if self.config.embedded:
            from rag.workspace import private_llm_server

            server = self._stack.enter_context(
                private_llm_server(
                    self.config.gguf, n_ctx=self.config.n_ctx, threads=self.config.effective_threads,
                    log_name="judge-server.log",
                )
            )
            self.base_url, self.model = server.base_url, server.model
            self.gguf = Path(server.gguf)
        return self

    def __exit__(self, *exc: object) -> None:
        self._stack.close()
        self.cache.close()
        self.started = False

    def _api_key(self) -> str:
        return (
            self.config.api_key or os.environ.get("RAG_JUDGE_API_KEY") or os.environ.get("OPENAI_API_KEY") or "sk-no-key"
        )

    def check_reachable(self) -> None:
        """Fail fast, before any question is judged, when nothing answers at the judge's address.

        Raises:
            JudgeUnavailable: the connection is refused or times out (an HTTP error is not fatal here).
        """
        import httpx

        url = f"{self.base_url.rstrip('/')}/models"
        try:
            httpx.get(url, timeout=min(self.config.effective_timeout, 15.0), headers={"Authorization": f"Bearer {self._api_key()}"})
        except httpx.HTTPError as exc:
            raise JudgeUnavailable(
                f"cannot reach the judge endpoint {self.base_url} ({exc.__class__.__name__}); check --judge-base-url"
            ) from None

    def llm(self) -> Any:
        """A RAGAS LLM for the current event loop."""
        from openai import AsyncOpenAI
        from ragas.llms import llm_factory

        client = AsyncOpenAI(
            base_url=self.base_url, api_key=self._api_key(), timeout=self.config.effective_timeout,
            max_retries=self.config.effective_retries,
        )
        inner = llm_factory(
            self.model, client=client, max_tokens=self.config.effective_max_tokens, temperature=self.config.temperature
        )
        return make_judge_llm(inner, model=self.model, cache=self.cache, stats=self.stats, config=self.config)

    @property
    def embeddings(self) -> Any:
        """The packaged MiniLM as RAGAS embeddings (loaded on first use)."""
        if self._embeddings is None:
            self._embeddings = _minilm_embeddings_class()()
        return self._embeddings

    def describe(self) -> dict[str, Any]:
        """Who judged, for the report: model, endpoint, settings, the caveat for a weak judge, cache counts."""
        import ragas

        gguf = None
        if self.gguf is not None:
            try:
                gguf = {"file": str(self.gguf), "name": self.gguf.name, "bytes": self.gguf.stat().st_size}
            except OSError:
                gguf = {"file": str(self.gguf), "name": self.gguf.name, "bytes": None}
        return {
            "model": self.model,
            "base_url": self.base_url,
            "embedded": self.config.embedded,
            "gguf": gguf,
            "threads": self.config.effective_threads if self.config.embedded else None,
            "identity": {"model": self.model, **({"gguf": gguf["name"], "gguf_bytes": gguf["bytes"]} if gguf else
                         {"base_url": self.base_url}), **self.config.identity()},
            "caveat": EMBEDDED_CAVEAT if self.config.embedded else None,
            "ragas": ragas.__version__,
            "embeddings": "all-MiniLM-L6-v2 (packaged)",
            "max_tokens": self.config.effective_max_tokens,
            "temperature": self.config.temperature,
            "timeout_s": self.config.effective_timeout,
            "max_retries": self.config.effective_retries,
            "schema_bounds": list(self.config.schema_bounds) if self.config.effective_json_schema else None,
            "concurrency": self.config.effective_concurrency,
            "json_schema": self.config.effective_json_schema,
            "cache": str(self.cache.path),
            "calls": self.stats.to_dict(),
        }
