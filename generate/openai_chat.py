"""Cited answers from any OpenAI-compatible chat endpoint: OpenAI, llama.cpp, Ollama, vLLM, ...

The answer streams token by token. In *plain* mode the model writes text with ``[n]`` markers and
citations are parsed out of it. In *structured* mode (endpoints that enforce a JSON schema, such as
llama.cpp's grammar-constrained sampling) the reply is ``{"answer": ..., "citations": [...]}`` where the
schema only admits existing block numbers, so citations cannot be hallucinated; the ``answer`` string
is decoded while it streams so callers still see text, not JSON.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Mapping
from typing import Any

import httpx
import openai
from pydantic import SecretStr

from rag.core.answers import NO_CONTEXT_ANSWER, Answer, Citation, find_citations
from rag.core.errors import ConfigError, GenerationError, GenerationTimeout
from rag.core.tracing import genai_span, set_attributes, usage_attributes
from rag.core.types import Hit
from rag.generate.prompt import approx_token_count, build_messages
from rag.generate.repetition import RepetitionGuard

logger = logging.getLogger(__name__)

_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}


# Characters of answer allowed per token of max_tokens, after reserving room for the JSON tail. Looping
# small models emit ~2.3 characters a token; 1.5 leaves margin, so the answer string always closes and
# the citations that follow it always fit.
_ANSWER_CHARS_PER_TOKEN = 1.5
_JSON_TAIL_TOKENS = 32


def answer_max_chars(max_tokens: int) -> int:
    """The longest answer string structured mode allows within ``max_tokens``."""
    return max(16, int((max_tokens - _JSON_TAIL_TOKENS) * _ANSWER_CHARS_PER_TOKEN))


def citation_response_format(n_blocks: int, max_answer_chars: int | None = None) -> dict[str, Any]:
    """The ``response_format`` of structured mode for a prompt with ``n_blocks`` context blocks.

    ``answer`` comes first so it streams first; ``citations`` may only hold existing block numbers and
    must name at least one (and at most ``n_blocks``, which stops small models from repeating numbers).
    ``max_answer_chars`` bounds the answer so a model that rambles cannot run out of tokens before the
    citations: with a grammar-constrained endpoint the reply is then always complete, valid JSON.
    """
    answer: dict[str, Any] = {"type": "string"}
    if max_answer_chars is not None:
        answer["maxLength"] = max_answer_chars
    schema = {
        "type": "object",
        "properties": {
            "answer": answer,
            "citations": {
                "type": "array",
                "items": {"type": "integer", "enum": list(range(1, n_blocks + 1))},
                "minItems": 1,
                "maxItems": n_blocks,
            },
        },
        "required": ["answer", "citations"],
        "additionalProperties": False,
    }
    return {"type": "json_schema", "json_schema": {"name": "cited_answer", "strict": True, "schema": schema}}


class AnswerStreamDecoder:
    """Decodes the ``"answer"`` string of a JSON object while the object arrives in pieces.

    :meth:`feed` takes the reply as it streams, split anywhere (inside a key, an escape sequence or a
    surrogate pair), and returns only the answer text that became known with that piece, unescaped. A
    small scanner over the top-level object finds the ``answer`` value wherever it stands; nested
    values and other keys are skipped. If the reply does not start with ``{`` the endpoint ignored the
    schema, and the text passes through unchanged (:attr:`is_json` is then ``False``).
    """

    def __init__(self) -> None:
        self.is_json: bool | None = None  # unknown until the first non-blank character
        self._answer: list[str] = []
        self._depth = 0
        self._expecting_key = False
        self._key = ""
        self._in_string = False
        self._role = "value"  # of the current string: "key", "answer" or "value" (skipped)
        self._key_chars: list[str] = []
        self._escape = False
        self._hex: str | None = None  # digits of a \\uXXXX escape, while it is read
        self._high_surrogate: int | None = None  # first half of a pair, held until the second arrives

    @property
    def answer(self) -> str:
        """All answer text decoded so far."""
        return "".join(self._answer)

    def feed(self, piece: str) -> str:
        """Scan the next piece of the reply; returns the answer text it completed (maybe ``""``)."""
        out: list[str] = []
        for char in piece:
            if self.is_json is None:
                if char.isspace():
                    continue
                self.is_json = char == "{"
            if self.is_json:
                self._scan(char, out)
            else:
                out.append(char)
        text = "".join(out)
        self._answer.append(text)
        return text

    def _scan(self, char: str, out: list[str]) -> None:
        if self._in_string:
            self._string_char(char, out)
        elif char == '"':
            self._in_string = True
            if self._depth == 1 and self._expecting_key:
                self._role, self._key_chars = "key", []
            elif self._depth == 1 and self._key == "answer":
                self._role = "answer"
            else:
                self._role = "value"
        elif char in "{[":
            self._depth += 1
            self._expecting_key = self._depth == 1
        elif char in "}]":
            self._depth -= 1
        elif self._depth == 1 and char in ",:":
            self._expecting_key = char == ","

    def _string_char(self, char: str, out: list[str]) -> None:
        if self._hex is not None:
            self._hex += char
            if len(self._hex) == 4:
                digits, self._hex = self._hex, None
                try:
                    self._code_point(int(digits, 16), out)
                except ValueError:  # not JSON; keep what the model wrote
                    self._emit("\\u" + digits, out)
        elif self._escape:
            self._escape = False
            if char == "u":
                self._hex = ""
            else:
                self._emit(_ESCAPES.get(char, char), out)
        elif char == "\\":
            self._escape = True
        elif char == '"':
            self._flush_surrogate(out)
            self._in_string = False
            if self._role == "key":
                self._key = "".join(self._key_chars)
        else:
            self._emit(char, out)

    def _code_point(self, code: int, out: list[str]) -> None:
        if 0xD800 <= code < 0xDC00:
            self._flush_surrogate(out)
            self._high_surrogate = code
        elif 0xDC00 <= code < 0xE000 and self._high_surrogate is not None:
            high, self._high_surrogate = self._high_surrogate, None
            self._emit(chr(0x10000 + ((high - 0xD800) << 10) + (code - 0xDC00)), out)
        else:
            self._emit(chr(code), out)

    def _flush_surrogate(self, out: list[str]) -> None:
        # A high surrogate with no low one after it: json.loads keeps it as a lone code point, so do we.
        if self._high_surrogate is not None:
            high, self._high_surrogate = self._high_surrogate, None
            self._emit(chr(high), out)

    def _emit(self, text: str, out: list[str]) -> None:
        if self._high_surrogate is not None:
            self._flush_surrogate(out)
        if self._role == "answer":
            out.append(text)
        elif self._role == "key":
            self._key_chars.append(text)


def openai_client(
    base_url: str | None, api_key: str | SecretStr | None, timeout: float, max_retries: int
) -> openai.OpenAI:
    """An SDK client for ``base_url``; the key falls back to ``OPENAI_API_KEY``, then to a placeholder,
    because local servers need no key but the SDK refuses to start without one."""
    if isinstance(api_key, SecretStr):
        api_key = api_key.get_secret_value()
    return openai.OpenAI(
        base_url=base_url,
        api_key=api_key or os.environ.get("OPENAI_API_KEY") or "not-needed",
        timeout=timeout,
        max_retries=max_retries,
    )


class OpenAIChatGenerator:
    """Answers a question from retrieved hits through an OpenAI-compatible chat completions endpoint.

    Args:
        base_url: the endpoint, e.g. ``https://api.openai.com/v1`` or ``http://127.0.0.1:8080/v1``;
            ``None`` for the SDK's default (``OPENAI_BASE_URL`` or OpenAI).
        model: the model name to request.
        api_key: the key; falls back to ``OPENAI_API_KEY``, then to a placeholder for local servers.
        timeout: seconds the SDK waits to connect and between streamed bytes (not for the whole answer).
        max_retries: retries, with exponential backoff, on connection errors, timeouts, 408/409/429/5xx.
        temperature: sampling temperature.
        max_tokens: the most tokens the answer may have.
        context_tokens: token budget for the numbered context blocks.
        structured: ask for JSON-schema output with validated citations (needs endpoint support).
        extra_body: more JSON fields for every request (endpoint-specific sampling options); they win
            over the fields set here.
        frequency_penalty: OpenAI's ``frequency_penalty`` (-2 to 2), sent when not ``None``.
        presence_penalty: OpenAI's ``presence_penalty`` (-2 to 2), sent when not ``None``.
        repeat_penalty: llama.cpp's ``repeat_penalty`` (above 0; 1 is none), sent when not ``None``; not
            an OpenAI field (OpenAI rejects it), so only for endpoints that know it, such as llama.cpp.
        repeat_stop_words: stop the answer as soon as it repeats a run of this many words or a whole
            sentence (see :class:`~rag.generate.repetition.RepetitionGuard`); 0 never stops.
        count_tokens: counts a string's tokens for the budget; default: :func:`approx_token_count`.

    Raises:
        ConfigError: an argument is out of range.
    """

    def __init__(  # noqa: PLR0913 - one keyword per llm.* setting, as engine/llm.py passes them
        self,
        base_url: str | None,
        model: str,
        api_key: str | SecretStr | None = None,
        timeout: float = 120,
        max_retries: int = 2,
        temperature: float = 0.1,
        max_tokens: int = 384,
        context_tokens: int = 1500,
        structured: bool = False,
        extra_body: Mapping[str, Any] | None = None,
        count_tokens: Callable[[str], int] | None = None,
        frequency_penalty: float | None = None,
        presence_penalty: float | None = None,
        repeat_penalty: float | None = None,
        repeat_stop_words: int = 8,
    ) -> None:
        if not model:
            raise ConfigError("llm.model must name a model")
        for name, value in (("timeout", timeout), ("max_tokens", max_tokens), ("context_tokens", context_tokens)):
            if value <= 0:
                raise ConfigError(f"llm.{name} must be positive, got {value}")
        if max_retries < 0:
            raise ConfigError(f"llm.max_retries must be 0 or more, got {max_retries}")
        if temperature < 0:
            raise ConfigError(f"llm.temperature must be 0 or more, got {temperature}")
        for name, penalty in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty)):
            if penalty is not None and not -2 <= penalty <= 2:
                raise ConfigError(f"llm.{name} must be between -2 and 2, got {penalty}")
        if repeat_penalty is not None and repeat_penalty <= 0:
            raise ConfigError(f"llm.repeat_penalty must be positive (1 is no penalty), got {repeat_penalty}")
        if repeat_stop_words == 1 or repeat_stop_words < 0:
            raise ConfigError(f"llm.repeat_stop_words must be 0 (off) or at least 2, got {repeat_stop_words}")
        self.model = model
        self.timeout = timeout
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.context_tokens = context_tokens
        self.structured = structured
        self.extra_body = dict(extra_body or {})
        # Standard OpenAI fields go in the request; llama.cpp's own one in the body's extra fields, which
        # an endpoint that rejects unknown fields never sees unless it was configured.
        self.sampling = {
            name: value
            for name, value in (("frequency_penalty", frequency_penalty), ("presence_penalty", presence_penalty))
            if value is not None
        }
        self.extra_sampling = {} if repeat_penalty is None else {"repeat_penalty": repeat_penalty}
        self.repeat_stop_words = repeat_stop_words
        self.count_tokens = count_tokens or approx_token_count
        self._client = openai_client(base_url, api_key, timeout, max_retries)
        self.base_url = str(self._client.base_url).rstrip("/")

    def generate(self, question: str, hits: list[Hit], on_token: Callable[[str], None] | None = None) -> Answer:
        """Answer ``question`` from ``hits`` (best first), streaming the text to ``on_token``.

        With no hits the model is not called: the answer says that no relevant context was found.

        Args:
            question: the user's question.
            hits: retrieved hits, best first; as many as fit ``context_tokens`` are used.
            on_token: called with each new piece of answer text (never JSON), in order; the pieces
                add up to ``Answer.text`` up to surrounding whitespace.

        Returns:
            The answer with its citations; see :class:`Answer`.

        Raises:
            GenerationError: the endpoint is unreachable, timed out, refused the key, does not serve
                the model, or failed.
        """
        if not hits:
            if on_token is not None:
                on_token(NO_CONTEXT_ANSWER)
            return Answer(NO_CONTEXT_ANSWER, [], [], self.model, [])
        messages, used = build_messages(
            question,
            hits,
            budget_tokens=self.context_tokens,
            count_tokens=self.count_tokens,
            structured=self.structured,
        )
        request = self._request(messages, len(used))
        logger.debug("asking %s at %s with %d context blocks", self.model, self.base_url, len(used))
        decoder = AnswerStreamDecoder() if self.structured else None
        guard = RepetitionGuard(self.repeat_stop_words) if self.repeat_stop_words else None
        with genai_span(self.model, self.base_url, max_tokens=self.max_tokens, temperature=self.temperature) as current:
            reply, model, finish_reason, usage = self._stream(request, decoder, guard, on_token)
            set_attributes(current, {
                "gen_ai.response.model": model,
                "gen_ai.response.finish_reasons": [finish_reason] if finish_reason else None,
                "gen_ai.output.type": "json" if self.structured else "text",
                "rag.context.blocks": len(used),
                **usage_attributes(usage),
            })

        warnings: list[str] = []
        if guard is not None and guard.repeat is not None:
            repeat = guard.repeat
            warnings.append(
                f"the answer started repeating itself; cut at character {len(guard.text)}, where it repeated "
                f"{'a sentence' if repeat.kind == 'sentence' else 'words'} already written: {repeat.span!r}"
                + ("; the citations the reply lists after the answer were not read" if decoder is not None else "")
            )
            text, listed = guard.text.strip(), []  # a structured reply cut mid-answer lists no citations
        else:
            if finish_reason == "length":
                warnings.append(f"the answer was cut off at llm.max_tokens ({self.max_tokens} tokens)")
            if decoder is None:
                text, listed = reply.strip(), []
            else:
                text, listed = _read_structured(reply, decoder, warnings)
        answer = _assemble(text, listed, used, model, warnings, on_token)
        answer.usage = usage
        for warning in warnings:
            logger.warning("%s", warning)
        return answer

    def _request(self, messages: list[dict[str, str]], n_blocks: int) -> dict[str, Any]:
        """The chat completion request's keyword arguments for the SDK."""
        request: dict[str, Any] = {
            "model": self.model,
            "messages": messages,
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "stream": True,
            # Token counts arrive in a final chunk (OpenAI, llama.cpp, vLLM, Ollama); others ignore it.
            "stream_options": {"include_usage": True},
            **self.sampling,
        }
        if self.structured:
            request["response_format"] = citation_response_format(n_blocks, answer_max_chars(self.max_tokens))
        if self.extra_sampling or self.extra_body:
            # The SDK merges extra_body into the JSON, over the fields above; llm.extra_body wins over all.
            request["extra_body"] = {**self.extra_sampling, **self.extra_body}
        return request

    def _stream(
        self,
        request: dict[str, Any],
        decoder: AnswerStreamDecoder | None,
        guard: RepetitionGuard | None,
        on_token: Callable[[str], None] | None,
    ) -> tuple[str, str, str | None, dict[str, int] | None]:
        """Send ``request`` and read the streamed reply, handing answer text to ``on_token``; returns the
        reply as received (JSON in structured mode), the model that answered, the finish reason and usage.

        With a ``guard`` the reading stops at the first repeat, and text reaches ``on_token`` only once
        the guard knows it will be kept.
        """
        pieces: list[str] = []
        model, finish_reason, usage = self.model, None, None
        try:
            # ``with``: however the loop ends (an ``on_token`` that raises because the caller's client has
            # gone, included), the request to the endpoint is closed, so the server stops generating.
            with self._client.chat.completions.create(**request) as stream:
                for chunk in stream:
                    model = chunk.model or model
                    if getattr(chunk, "usage", None) is not None:
                        usage = {
                            "prompt_tokens": chunk.usage.prompt_tokens,
                            "completion_tokens": chunk.usage.completion_tokens,
                            "total_tokens": chunk.usage.total_tokens,
                        }
                    if not chunk.choices:  # e.g. a trailing usage chunk
                        continue
                    choice = chunk.choices[0]
                    finish_reason = choice.finish_reason or finish_reason
                    piece = choice.delta.content if choice.delta is not None else None
                    if not piece:
                        continue
                    pieces.append(piece)
                    new_text = decoder.feed(piece) if decoder is not None else piece
                    if guard is not None:
                        new_text = guard.feed(new_text)
                    if new_text and on_token is not None:
                        on_token(new_text)
                    if guard is not None and guard.repeat is not None:
                        break  # leaving the ``with`` closes the stream, which stops the server generating
            rest = guard.finish() if guard is not None else ""  # checks the last sentence, releases the rest
            if rest and on_token is not None:
                on_token(rest)
        except (openai.APIError, httpx.HTTPError) as exc:
            raise self._translate(exc) from exc
        return "".join(pieces), model, finish_reason, usage

    def _translate(self, exc: openai.APIError | httpx.HTTPError) -> GenerationError:
        """One actionable message per failure; never quotes the API key or a 401 body that may echo it."""
        url = self.base_url
        # Timeouts first: the SDK's APITimeoutError is a kind of APIConnectionError.
        if isinstance(exc, (openai.APITimeoutError, httpx.TimeoutException)):
            return GenerationTimeout(
                f"the LLM endpoint at {url} timed out: no response within {self.timeout:g} s "
                "(llm.timeout, RAG_LLM__TIMEOUT); raise it for slow models or long prompts"
            )
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return GenerationError(
                f"cannot reach the LLM endpoint at {url}: {cause}. "
                "Start one with `rag llm serve`, or set RAG_LLM__BASE_URL"
            )
        if isinstance(exc, httpx.HTTPError):  # raw httpx errors surface while the stream is read
            return GenerationError(f"the connection to the LLM endpoint at {url} broke mid-answer: {exc}")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            if status in (401, 403):
                return GenerationError(
                    f"the LLM endpoint at {url} refused the API key (HTTP {status}); "
                    "set llm.api_key (RAG_LLM__API_KEY) or OPENAI_API_KEY"
                )
            if status == 404:
                return GenerationError(
                    f"the LLM endpoint at {url} does not serve model {self.model!r} (HTTP 404); "
                    "set llm.model (RAG_LLM__MODEL) to one it serves, and check that the URL ends in /v1"
                )
            return GenerationError(f"the LLM endpoint at {url} answered HTTP {status}: {_excerpt(exc.response)}")
        return GenerationError(f"the LLM endpoint at {url} failed: {exc.message}")


def _assemble(
    text: str,
    listed: list[int],
    used: list[Hit],
    model: str,
    warnings: list[str],
    on_token: Callable[[str], None] | None,
) -> Answer:
    """Merge inline markers with the listed citations; append markers the text lacks."""
    inline, invalid = find_citations(text, len(used))
    listed_valid = sorted({n for n in listed if 1 <= n <= len(used)})
    invalid = sorted(set(invalid).union(n for n in listed if not 1 <= n <= len(used)))
    # A reader (and the CLI's highlighting) finds citations in the text, so every cited block
    # gets an inline marker even when the model listed it only in "citations".
    missing = [n for n in listed_valid if n not in inline]
    if missing:
        suffix = "".join(f"[{n}]" for n in missing)
        text = f"{text} {suffix}" if text else suffix
        if on_token is not None:
            on_token(f" {suffix}")
    if not text:
        warnings.append("the model returned an empty answer")
    numbers = sorted(set(inline).union(listed_valid))
    citations = [Citation(n, used[n - 1]) for n in numbers]
    return Answer(text, citations, used, model, invalid, warnings)


def _read_structured(reply: str, decoder: AnswerStreamDecoder, warnings: list[str]) -> tuple[str, list[int]]:
    """The answer text and listed citation numbers of a structured reply, tolerating broken JSON."""
    if decoder.is_json is False:
        warnings.append("the endpoint ignored the JSON schema; citations were read from the text")
        return reply.strip(), []
    try:
        data = json.loads(reply)
        text, listed = data["answer"], data["citations"]
        if not isinstance(text, str) or not isinstance(listed, list):
            raise TypeError("answer must be a string and citations a list")
        return text.strip(), [n for n in listed if isinstance(n, int) and not isinstance(n, bool)]
    except (ValueError, KeyError, TypeError) as exc:
        # Typically the reply was cut at max_tokens mid-JSON: keep the answer text streamed so far.
        warnings.append(f"the structured reply was not valid JSON ({exc}); kept the answer text decoded so far")
        return decoder.answer.strip(), []


def _excerpt(response: httpx.Response, limit: int = 200) -> str:
    try:
        body = " ".join(response.text.split())
    except httpx.ResponseNotRead:
        return "(no body)"
    return (body[:limit] + " …" if len(body) > limit else body) or "(empty body)"
