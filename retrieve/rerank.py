"""Second-stage reranking: score each fused candidate against the query with a stronger, slower model.

Two rerankers share the :class:`Reranker` protocol, ``score(query, texts) -> list[float]``:

- :class:`CrossEncoderReranker` reads the query and each passage *together* through a
  sentence-transformers ``CrossEncoder`` (any model id in the Hugging Face cache, or a local folder).
  Its scores are the model's default activation: a sigmoid for the usual one-label models, so each is a
  probability-like value in [0, 1] that does not depend on the other passages of the batch.
- :class:`LLMReranker` asks the configured chat model. *Pointwise* makes one completion per passage and
  reads a relevance grade from 0 to 3 (defined in the prompt); the score is that grade, so ties are
  common and a caller should sort stably to keep the fused order among them. *Listwise* makes one
  completion that lists the numbered passages and reads back their numbers in order of relevance; the
  passage named first scores ``len(texts)``, the next one less, and so on.

Scores are comparable only within one call. Higher is more relevant; ``math.nan`` marks a passage that
could not be scored (an unparsable grade, a passage the listwise reply left out). A reranker raises
:class:`~rag.core.errors.GenerationError` when the endpoint fails or when more than half of the passages
could not be scored, so the caller has one failure to handle: it keeps the fused order.
"""

from __future__ import annotations

import logging
import math
import re
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Literal, Protocol, runtime_checkable

from rag.core import completion
from rag.core.errors import ConfigError, GenerationError

log = logging.getLogger(__name__)

LLMRerankMode = Literal["pointwise", "listwise"]

MODEL_HINT = (
    "set one with `rerank.model` in rag.toml, RAG_RERANK__MODEL or --rerank-model PATH: any "
    "sentence-transformers CrossEncoder id (such as cross-encoder/ms-marco-MiniLM-L-6-v2) once it is in "
    "the Hugging Face cache, or a local folder; or --rerank-model llm to rerank with the configured LLM"
)
"""How to choose a cross-encoder; every "cannot load the model" message ends with it."""

POINTWISE_SYSTEM = "You judge how well a passage answers a search query."
POINTWISE_PROMPT = (
    "Query: {query}\n\nPassage: {passage}\n\n"
    "Grade the passage: 0 = unrelated, 1 = related but does not answer, 2 = partly answers, "
    "3 = fully answers. Reply with the number only."
)
GRADES = range(4)
"""The pointwise scale the prompt defines; a grade outside it is unparsable."""

LISTWISE_SYSTEM = "You rank passages by how well they answer a search query."
LISTWISE_PROMPT = (
    "Query: {query}\n\nPassages:\n{passages}\n\n"
    "List the passage numbers from most to least relevant, separated by commas (e.g. 3, 1, 2). "
    "Reply with the numbers only."
)

POINTWISE_MAX_TOKENS = 8
LISTWISE_TOKENS_PER_PASSAGE = 4
"""A listwise reply needs a few tokens per number ("12, "); a few more leave room for a short preamble."""

_NUMBER = re.compile(r"\d+(?:\.\d+)?")
"""Numbers in a grade reply; a decimal such as ``2.5`` is one number (and never a grade)."""
_BRACKETED = re.compile(r"\[(\d+)\]")
_PASSAGE_N = re.compile(r"passage\s*#?\s*(\d+)", re.I)
_ENUMERATOR = re.compile(r"^\s*\d+[.)]\s+(?=\S)", re.M)
"""``1. `` at the start of a line of a numbered list: a rank, not a passage number."""


@runtime_checkable
class Reranker(Protocol):
    """Scores passages against a query: one score per text, higher is more relevant, NaN if unscored."""

    name: str

    def score(self, query: str, texts: Sequence[str]) -> list[float]: ...


class Completer(completion.Completer, Protocol):
    """What the LLM reranker needs from the LLM: a completer that names its model
    (:class:`rag.generate.completion.ChatCompleter`)."""

    model: str


class CrossEncoderReranker:
    """A sentence-transformers ``CrossEncoder`` that scores (query, passage) pairs.

    The model is loaded when the reranker is built, so a missing model fails at startup rather than on
    the first search. One instance may be shared by an API's worker threads: scoring is serialised by a
    lock (the model is not re-entrant, and two concurrent batches would only compete for the same cores).

    Args:
        model: a CrossEncoder id in the Hugging Face cache (``cross-encoder/ms-marco-MiniLM-L-6-v2``) or
            a local folder holding one.
        batch_size: pairs scored per forward pass; it changes speed and memory, not the scores.
        max_length: tokens of query + passage the model reads; longer pairs are truncated.
        device: a torch device (``cpu``, ``cuda``, ``cuda:1``, ``mps``).

    Raises:
        ConfigError: an argument is out of range, the device is unknown or absent, or the model cannot be
            loaded or is not a one-label cross-encoder (the message says how to set one).
    """

    def __init__(self, model: str, *, batch_size: int = 16, max_length: int = 256, device: str = "cpu") -> None:
        if not isinstance(model, str) or not model.strip():
            raise ConfigError(f"the rerank model must be a CrossEncoder id or folder, got {model!r}; {MODEL_HINT}")
        if batch_size <= 0:
            raise ConfigError(f"rerank batch_size must be positive, got {batch_size}")
        if max_length <= 8:
            raise ConfigError(f"rerank max_length must be more than 8 tokens, got {max_length}")
        _check_device(device)
        self.name, self.batch_size, self.max_length, self.device = model, batch_size, max_length, device
        self._lock = threading.Lock()
        self._model = _load_cross_encoder(model, max_length, device)

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """The model's relevance of each text to ``query`` (in [0, 1] for one-label models), in order."""
        if not texts:
            return []
        pairs = [(query, text) for text in texts]
        with self._lock:
            scores = self._model.predict(
                pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
            )
        return [float(s) for s in scores.reshape(len(pairs))]


def _check_device(device: str) -> None:
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"unknown rerank device {device!r}; use cpu, cuda, cuda:N or mps") from exc
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"rerank device {device!r} is not available here (no CUDA); use cpu")
    if parsed.type == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(f"rerank device {device!r} is not available here; use cpu")


def _load_cross_encoder(model: str, max_length: int, device: str):  # noqa: ANN202 - CrossEncoder, imported lazily
    # Imported here: sentence-transformers and torch take seconds to import, and a platform that never
    # reranks (or reranks with the LLM) should not pay for them.
    from sentence_transformers import CrossEncoder

    try:
        loaded = CrossEncoder(model, max_length=max_length, device=device)
    except Exception as exc:  # OSError, ValueError, HF hub errors…: all mean "no such model"
        log.debug("cannot load CrossEncoder %r", model, exc_info=True)
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"cannot load the rerank model {model!r} ({_short(reason)}); {MODEL_HINT}") from exc
    # sentence-transformers turns an embedding model into a CrossEncoder with a *random* head and only
    # logs it; reranking with that would shuffle the results, so refuse it.
    architectures = getattr(getattr(loaded, "config", None), "architectures", None) or []
    if architectures and not any(a.endswith("ForSequenceClassification") for a in architectures):
        raise ConfigError(
            f"the rerank model {model!r} is not a cross-encoder (a {architectures[0]} with no relevance head: "
            f"an embedding model?); {MODEL_HINT}"
        )
    if loaded.num_labels != 1:
        raise ConfigError(
            f"the rerank model {model!r} has {loaded.num_labels} output labels; a reranker needs a one-label "
            f"relevance model; {MODEL_HINT}"
        )
    return loaded


def _short(reason: str, limit: int = 160) -> str:
    return reason if len(reason) <= limit else reason[: limit - 1] + "…"


class LLMReranker:
    """Reranks with the chat LLM, pointwise (a grade per passage) or listwise (one ordering).

    Replies are parsed defensively (small models add chatter): pointwise takes the first whole number
    of the reply that lies on the 0–3 scale, listwise every number that names a passage, first mention
    wins. Passages are sent with their whitespace collapsed and cut at ``max_passage_chars``.

    Args:
        completer: the stage LLM (:class:`rag.generate.completion.ChatCompleter`); its cache makes a
            repeated rerank free.
        mode: ``"pointwise"`` or ``"listwise"``.
        max_passage_chars: characters of each passage shown to the model.
        concurrency: pointwise completions in flight at once (listwise always makes one).

    Raises:
        ConfigError: an argument is out of range.
    """

    def __init__(
        self,
        completer: Completer,
        mode: LLMRerankMode = "pointwise",
        *,
        max_passage_chars: int = 1000,
        concurrency: int = 1,
    ) -> None:
        if mode not in ("pointwise", "listwise"):
            raise ConfigError(f"unknown LLM rerank mode {mode!r}; use 'pointwise' or 'listwise'")
        if max_passage_chars <= 0:
            raise ConfigError(f"max_passage_chars must be positive, got {max_passage_chars}")
        if concurrency <= 0:
            raise ConfigError(f"rerank concurrency must be positive, got {concurrency}")
        self.completer, self.mode = completer, mode
        self.max_passage_chars, self.concurrency = max_passage_chars, concurrency
        self.name = f"llm:{completer.model}"

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """One score per text: its grade (pointwise) or its place in the model's ordering (listwise).

        Raises:
            GenerationTimeout: the endpoint did not answer in time.
            GenerationError: the endpoint failed, or more than half of the passages got no usable score.
        """
        if not texts:
            return []
        passages = [self._cut(text) for text in texts]
        scores = self._pointwise(query, passages) if self.mode == "pointwise" else self._listwise(query, passages)
        unscored = sum(math.isnan(s) for s in scores)
        if unscored * 2 > len(scores):
            raise GenerationError(
                f"the LLM reranker ({self.name}, {self.mode}) gave unparsable replies for {unscored} of "
                f"{len(scores)} passages"
            )
        if unscored:
            log.info("LLM reranker left %d of %d passages unscored", unscored, len(scores))
        return scores

    def _cut(self, text: str) -> str:
        # Collapsed whitespace keeps a listwise prompt one line per passage, so the numbering stays clear.
        return " ".join(text.split())[: self.max_passage_chars]

    def _pointwise(self, query: str, passages: list[str]) -> list[float]:
        def grade(passage: str) -> float:
            messages = [
                {"role": "system", "content": POINTWISE_SYSTEM},
                {"role": "user", "content": POINTWISE_PROMPT.format(query=query, passage=passage)},
            ]
            reply = self.completer.complete(messages, max_tokens=POINTWISE_MAX_TOKENS, temperature=0.0)
            return parse_grade(reply.text)

        if self.concurrency == 1 or len(passages) == 1:
            return [grade(p) for p in passages]
        pool = ThreadPoolExecutor(max_workers=min(self.concurrency, len(passages)))
        try:
            return list(pool.map(grade, passages))  # re-raises the first failure, in passage order
        finally:
            pool.shutdown(wait=True, cancel_futures=True)  # after a failure, ask nothing more

    def _listwise(self, query: str, passages: list[str]) -> list[float]:
        numbered = "\n".join(f"[{i}] {p}" for i, p in enumerate(passages, start=1))
        messages = [
            {"role": "system", "content": LISTWISE_SYSTEM},
            {"role": "user", "content": LISTWISE_PROMPT.format(query=query, passages=numbered)},
        ]
        max_tokens = LISTWISE_TOKENS_PER_PASSAGE * len(passages) + 8
        reply = self.completer.complete(messages, max_tokens=max_tokens, temperature=0.0)
        return order_scores(parse_order(reply.text, len(passages)), len(passages))


def parse_grade(reply: str) -> float:
    """The first whole number of ``reply`` on the grading scale, or NaN when there is none.

    >>> parse_grade("Grade: 2"), parse_grade("3/3"), parse_grade("7, then 1")
    (2.0, 3.0, 1.0)
    """
    for match in _NUMBER.finditer(reply):
        token = match.group()
        if token.isdigit() and int(token) in GRADES:
            return float(token)
    return math.nan


def parse_order(reply: str, n: int) -> list[int]:
    """The passage numbers (1-based) ``reply`` names, in order; repeats and numbers outside 1..n dropped.

    Numbers in brackets (``[3]``) or after "passage" are read when the reply has any, so a numbered list
    of them ("1. [3]") parses; otherwise every number counts, once a line's list enumerator is removed.

    >>> parse_order("[3] > [1] > [3] > [9]", 3), parse_order("3,1,2", 3), parse_order("1. Passage 2", 3)
    ([3, 1], [3, 1, 2], [2])
    """
    tokens = _BRACKETED.findall(reply) or _PASSAGE_N.findall(reply)
    if not tokens:
        tokens = re.findall(r"\d+", _ENUMERATOR.sub("", reply))
    order: list[int] = []
    for token in tokens:
        if 1 <= int(token) <= n and int(token) not in order:
            order.append(int(token))
    return order


def order_scores(order: Sequence[int], n: int) -> list[float]:
    """Scores for ``n`` passages from an ordering: ``n`` for the first named, one less for each next, NaN
    for passages not named."""
    scores = [math.nan] * n
    for position, number in enumerate(order):
        scores[number - 1] = float(n - position)
    return scores
