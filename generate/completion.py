"""Short, cached, time-bounded chat completions for the retrieval stages (HyDE, rewrites, LLM reranking).

The answer generator streams; the stages only need a few dozen tokens back, so they make one plain
(non-streamed) request whose timeout bounds the whole call. Replies are cached on disk by the model, the
request's sampling parameters and its messages, so asking the same question again costs no LLM call.
The cache is a small SQLite file in the user cache folder (``$RAG_CACHE_DIR``), never in a data
directory, and several processes may share it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import openai
from pydantic import SecretStr

from rag.core.completion import Completion
from rag.core.errors import ConfigError, GenerationError, GenerationTimeout
from rag.core.tracing import genai_span, set_attributes, usage_attributes
from rag.generate.openai_chat import openai_client
from rag.generate.repetition import trim_repetition

log = logging.getLogger(__name__)


class CompletionCache:
    """Replies keyed by a hash of (model, parameters, messages), in SQLite.

    Args:
        path: the database file; its folder is created. A cache that cannot be opened or written is
            skipped with a warning (a stage is never slower to fail because of its cache).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=5, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("CREATE TABLE IF NOT EXISTS replies (key TEXT PRIMARY KEY, text TEXT NOT NULL, created REAL)")
            self._db = db
        except sqlite3.Error as exc:
            log.warning("LLM stage cache %s is not usable (%s); stage replies are not cached", self.path, exc)

    @staticmethod
    def key(model: str, request: dict[str, Any]) -> str:
        payload = json.dumps({"model": model, **request}, sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(payload.encode("utf-8")).hexdigest()

    def get(self, key: str) -> str | None:
        if self._db is None:
            return None
        with self._lock:
            try:
                row = self._db.execute("SELECT text FROM replies WHERE key = ?", (key,)).fetchone()
            except sqlite3.Error as exc:
                log.warning("LLM stage cache read failed: %s", exc)
                return None
        return row[0] if row else None

    def put(self, key: str, text: str) -> None:
        if self._db is None:
            return
        with self._lock:
            try:
                self._db.execute(
                    "INSERT OR REPLACE INTO replies (key, text, created) VALUES (?, ?, ?)", (key, text, time.time())
                )
            except sqlite3.Error as exc:
                log.warning("LLM stage cache write failed: %s", exc)

    def __len__(self) -> int:
        if self._db is None:
            return 0
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            if self._db is not None:
                self._db.close()
                self._db = None


class ChatCompleter:
    """One-shot completions from an OpenAI-compatible endpoint, cached and bounded in time.

    Args:
        base_url: the endpoint (``…/v1``).
        model: the model to request; part of the cache key.
        api_key: falls back to ``OPENAI_API_KEY``, then to a placeholder for local servers.
        timeout: seconds the whole call may take, per attempt.
        max_retries: retries on connection errors, 429 and 5xx (a stage prefers failing fast).
        cache: where replies are kept; ``None`` for no cache.
        frequency_penalty, presence_penalty: OpenAI's sampling penalties, sent when not ``None``.
        repeat_penalty: llama.cpp's repetition penalty, sent (as an extra field) when not ``None``.

    Raises:
        ConfigError: an argument is out of range.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | SecretStr | None = None,
        timeout: float = 30.0,
        max_retries: int = 0,
        cache: CompletionCache | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        repeat_penalty: float | None = None,
    ) -> None:
        if timeout <= 0:
            raise ConfigError(f"the stage LLM timeout must be positive, got {timeout}")
        self.model, self.timeout, self.cache = model, timeout, cache
        self.sampling = {
            name: value
            for name, value in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty))
            if value is not None
        }
        self.extra_body = {} if repeat_penalty is None else {"repeat_penalty": repeat_penalty}
        self._client = openai_client(base_url, api_key, timeout, max_retries)
        self.base_url = str(self._client.base_url).rstrip("/")

    def complete(
        self,
        messages: list[dict[str, str]],
        *,
        max_tokens: int,
        temperature: float = 0.0,
        response_format: dict[str, Any] | None = None,
    ) -> Completion:
        """The model's reply to ``messages`` (stripped), from the cache when it was asked before.

        A free-text reply (no ``response_format``) that starts repeating itself is cut where the repeat
        begins (:func:`~rag.generate.repetition.trim_repetition`): a HyDE passage looping on one sentence
        would otherwise pull the dense search towards that sentence.

        Raises:
            GenerationTimeout: no reply within the timeout.
            GenerationError: the endpoint failed or replied with nothing.
        """
        request: dict[str, Any] = {
            "messages": messages, "max_tokens": max_tokens, "temperature": temperature, **self.sampling
        }
        if response_format is not None:
            request["response_format"] = response_format
        key = CompletionCache.key(self.model, {**request, **self.extra_body})  # every field that shapes the reply
        started = time.perf_counter()
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            return Completion(hit, True, (time.perf_counter() - started) * 1000)
        with genai_span(self.model, self.base_url, max_tokens=max_tokens, temperature=temperature) as current:
            try:
                extra = {"extra_body": self.extra_body} if self.extra_body else {}
                reply = self._client.chat.completions.create(model=self.model, stream=False, **request, **extra)
            except openai.APITimeoutError as exc:
                raise GenerationTimeout(f"the LLM at {self.base_url} did not reply within {self.timeout:g} s") from exc
            except (openai.APIError, httpx.HTTPError) as exc:
                raise GenerationError(f"the LLM at {self.base_url} failed: {_reason(exc)}") from exc
            set_attributes(current, {
                "gen_ai.response.model": reply.model or None,
                "gen_ai.response.finish_reasons": [c.finish_reason for c in reply.choices if c.finish_reason] or None,
                **usage_attributes(reply.usage.model_dump() if reply.usage is not None else None),
            })
        text = (reply.choices[0].message.content or "").strip() if reply.choices else ""
        if response_format is None:  # free text: a small model's loop is cut (a JSON reply is left whole)
            text, repeat = trim_repetition(text)
            if repeat is not None:
                log.debug("stage reply from %s repeated itself (%r); cut at character %d", self.model, repeat.span,
                          len(text))
        if not text:
            raise GenerationError(f"the LLM at {self.base_url} replied with no text")
        if self.cache is not None:
            self.cache.put(key, text)
        return Completion(text, False, (time.perf_counter() - started) * 1000)


def _reason(exc: Exception) -> str:
    """A short reason that never quotes a response body (a 401 body may echo the key)."""
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    if isinstance(exc, openai.APIConnectionError):
        return f"cannot connect ({exc.__cause__ or exc})"
    return type(exc).__name__
