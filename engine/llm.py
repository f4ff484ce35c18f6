"""The engine's LLM services: the answer generator, the stage completer, the query transformer, rerankers.

Each is made on first use and kept until :meth:`LLMServices.close`. With no ``llm.base_url`` the first use
of an LLM starts the embedded llama.cpp server (or asks the shared ``llm_servers`` of a workspace for one).
``generation.mode`` says who writes answers (:meth:`LLMServices.answer_mode`): the LLM, or the extractive
generator, which needs no LLM at all.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError
from rag.core.settings import Settings
from rag.retrieve.pipeline import Reranker
from rag.retrieve.transforms import QueryTransformer


class LLMServices:
    """The LLM-backed components of one engine.

    Args:
        settings: the configuration in force (``[llm]``, ``[retrieval]`` stage settings, ``[rerank]``).
        count_tokens: the prompt-packing budget unit (the embedding tokenizer's token count).
        lock: the engine's lock, guarding the made-once components.
        llm_servers: embedded LLM servers shared with other engines (a workspace's); ``None``: start our own.
        embedder: the engine's embedding model provider, which extractive answers score sentences with;
            ``None``: one made from ``settings.embedding`` when first needed.
    """

    def __init__(
        self,
        settings: Settings,
        count_tokens: Callable[[str], int],
        lock: threading.RLock,
        llm_servers: Any = None,
        embedder: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self._embedder = embedder
        self.count_tokens = count_tokens
        self._lock = lock
        self._llm_servers = llm_servers
        self._llm_start = threading.Lock()  # not ``_lock``: searches must not wait for an LLM to start
        self._llm = ExitStack()
        self._generator: Any = None
        self._endpoint: tuple[str, str, bool] | None = None
        self._transformer_instance: QueryTransformer | None = None
        self._completer: Any = None
        self._rerankers: dict[str, Reranker] = {}

    def close(self) -> None:
        """Stop the embedded LLM server if these services started one, and forget every component."""
        with self._lock:
            self._llm.close()
            self._generator = self._endpoint = self._transformer_instance = None
            if self._completer is not None and self._completer.cache is not None:
                self._completer.cache.close()
            self._completer = None
            self._rerankers.clear()

    def answer_mode(self) -> str:
        """Who writes answers: ``"extractive"`` or ``"llm"``, as ``generation.mode`` says.

        ``auto`` is extractive when the LLM would be the bundled model (no ``llm.base_url`` and no
        ``llm.gguf``: SmolLM2-135M cannot write answers worth reading) and the LLM otherwise.
        """
        mode = self.settings.generation.mode
        if mode == "auto":
            return "llm" if self.settings.llm.chosen else "extractive"
        return mode

    def generator(self) -> Any:
        """The answer generator, made on first use: an
        :class:`~rag.generate.extractive.ExtractiveGenerator` or an :class:`OpenAIChatGenerator` for the
        configured endpoint, as :meth:`answer_mode` says.

        An LLM generator with no ``llm.base_url`` starts the embedded llama.cpp server (its log goes to the
        user cache folder, never into the data directory) and keeps it until :meth:`close`; the extractive
        one starts nothing.

        Raises:
            GenerationError / ConfigError: the embedded server cannot start.
        """
        from rag.generate import OpenAIChatGenerator

        if self._generator is None and self.answer_mode() == "extractive":
            with self._lock:
                if self._generator is None:
                    self._generator = self._extractive_generator()
        if self._generator is None:
            base_url, model, structured = self._llm_endpoint()  # may start the LLM: outside ``_lock``
            with self._lock:
                if self._generator is None:
                    cfg = self.settings.llm
                    self._generator = OpenAIChatGenerator(
                        base_url, model, api_key=cfg.api_key, timeout=cfg.timeout, max_retries=cfg.max_retries,
                        temperature=cfg.temperature, max_tokens=cfg.max_tokens, context_tokens=cfg.context_tokens,
                        structured=structured, extra_body=cfg.extra_body, count_tokens=self.count_tokens,
                        repeat_stop_words=cfg.repeat_stop_words, **self._penalties(),
                    )
        return self._generator

    def _extractive_generator(self) -> Any:
        """An :class:`~rag.generate.extractive.ExtractiveGenerator` over the engine's embedder and analyzer."""
        import numpy as np

        from rag.core.analysis import KeywordAnalysis
        from rag.generate.extractive import ExtractiveGenerator

        if self._embedder is None:
            from rag.engine.state import EmbedderProvider

            self._embedder = EmbedderProvider(self.settings.embedding)
        provider = self._embedder

        def encode(texts: list[str]) -> Any:
            # One text at a time through the query encoder (ONNX on CPU, the same vectors as encode()):
            # an answer's few dozen short sentences go faster so than as a torch batch, which contends for
            # the cores with everything else on a busy machine.
            embedder = provider()
            return np.stack([embedder.encode_query(text) for text in texts])

        analysis = KeywordAnalysis.from_settings(self.settings.retrieval)
        return ExtractiveGenerator(
            encode, context_tokens=self.settings.llm.context_tokens, count_tokens=self.count_tokens,
            analyzer=analysis.analyzer(),
        )

    def _penalties(self) -> dict[str, float | None]:
        """The llm.* sampling penalties, with the embedded server's defaults when ``llm.base_url`` is unset."""
        from rag.generate.llamacpp_server import sampling_penalties

        cfg = self.settings.llm
        return sampling_penalties(
            cfg.frequency_penalty, cfg.presence_penalty, cfg.repeat_penalty, embedded=not cfg.base_url
        )

    def _llm_endpoint(self) -> tuple[str, str, bool]:
        """``(base_url, model, structured)`` of the configured endpoint, starting the embedded server once.

        The start (seconds) holds only ``_llm_start``, never ``_lock``, so searches go on meanwhile; with
        shared servers (an API's workspace) every collection with the same model uses one process.
        """
        with self._llm_start:
            if self._endpoint is None:
                cfg = self.settings.llm
                if cfg.base_url:
                    self._endpoint = (cfg.base_url, cfg.model, bool(cfg.structured))
                elif self._llm_servers is not None:
                    base_url, model = self._llm_servers.endpoint(cfg.gguf, cfg.n_ctx, cfg.threads)
                    self._endpoint = (base_url, model, cfg.structured is not False)
                else:
                    from rag.core.onnx_query import cache_dir
                    from rag.generate import LlamaCppServer

                    server = self._llm.enter_context(LlamaCppServer(
                        gguf=Path(cfg.gguf) if cfg.gguf else None, n_ctx=cfg.n_ctx, threads=cfg.threads,
                        log_path=cache_dir() / "llm-server.log",
                    ))
                    self._endpoint = (server.base_url, server.model, cfg.structured is not False)
            return self._endpoint

    def completer(self) -> Any:
        """The :class:`~rag.generate.completion.ChatCompleter` the retrieval stages use (transforms and LLM
        reranking share it): the configured LLM, bounded by ``retrieval.stage_timeout``, its replies cached
        in the user cache folder. Made on first use and kept until :meth:`close`.

        Raises:
            GenerationError: the embedded server cannot start.
        """
        from rag.core.onnx_query import cache_dir
        from rag.generate.completion import ChatCompleter, CompletionCache

        base_url, model, _ = self._llm_endpoint()  # may start the LLM: outside ``_lock``
        with self._lock:
            if self._completer is None:
                cfg = self.settings.retrieval
                cache = CompletionCache(cache_dir() / "llm-stage-cache.sqlite") if cfg.stage_cache else None
                self._completer = ChatCompleter(
                    base_url, model, api_key=self.settings.llm.api_key, timeout=cfg.stage_timeout, cache=cache,
                    **self._penalties(),
                )
            return self._completer

    def transformer(self) -> QueryTransformer:
        """The query transformer (HyDE, rewrite, multi-query, condensing) over :meth:`completer`."""
        with self._lock:
            if self._transformer_instance is None:
                self._transformer_instance = QueryTransformer(
                    self.completer(), self.settings.retrieval.stage_max_tokens
                )
            return self._transformer_instance

    def reranker(self, rerank: bool | str | None = None) -> Reranker | None:
        """The reranker ``rerank`` asks for, loaded once and kept; ``None`` for none.

        ``True`` is the configured reranker (``[rerank] model``), a string a model id, local folder or
        ``"llm"``, ``False`` none, ``None`` as ``rerank.enabled`` says.

        Raises:
            ConfigError: reranking is on but no model is configured, or the model cannot be loaded.
        """
        cfg = self.settings.rerank
        if rerank is None:
            rerank = cfg.enabled
        if rerank is False:
            return None
        model = cfg.model if rerank is True else rerank
        if not model or not str(model).strip():
            raise ConfigError(
                "reranking needs a model, and none ships with rag-platform: set rerank.model in rag.toml "
                "(or RAG_RERANK__MODEL, or --rerank-model) to a sentence-transformers CrossEncoder id such as "
                "cross-encoder/ms-marco-MiniLM-L-6-v2 (downloaded once) or a local folder, or to 'llm' to "
                "rerank with the configured LLM"
            )
        model = str(model).strip()
        with self._lock:
            if model not in self._rerankers:
                from rag.retrieve.rerank import CrossEncoderReranker, LLMReranker

                if model == "llm":
                    self._rerankers[model] = LLMReranker(self.completer(), cfg.llm_mode)
                else:
                    self._rerankers[model] = CrossEncoderReranker(
                        model, batch_size=cfg.batch_size, max_length=cfg.max_length, device=cfg.device
                    )
            return self._rerankers[model]
