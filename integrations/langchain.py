"""rag-platform's hybrid search as a LangChain retriever (``pip install 'rag-platform[langchain]'``).

Over the local library (the collection of a data directory, as ``rag search`` opens it)::

    from rag.integrations.langchain import RagRetriever

    with RagRetriever(collection="default", k=5, alpha=0.8, filter="lang=en") as retriever:
        docs = retriever.invoke("How do I rebuild the index?")

or over a running ``rag serve``::

    retriever = RagRetriever(url="http://127.0.0.1:8000", api_key="rag_...", collection="default", k=5)
    docs = await retriever.ainvoke("How do I rebuild the index?")

The query options are those of ``rag search`` (:class:`~rag.core.query.QueryOptions`: ``k``, ``alpha``,
``fusion``, ``filter``, ``min_score``, ``max_per_doc``, ``hyde``, ``rewrite``, ``multi_query``, ``rerank``,
``history``), given as keyword arguments at construction or per call (``retriever.invoke(q, k=3)``).
Each :class:`~langchain_core.documents.Document` holds the chunk's text, its id, and the metadata of
:func:`rag.integrations._client.hit_metadata` (``doc_id``, ``chunk_id``, ``source``, ``section``, ``page``,
``score`` ..., and ``citation``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "rag.integrations.langchain needs LangChain: pip install 'rag-platform[langchain]'"
    ) from exc

from pydantic import ConfigDict, Field, PrivateAttr, SecretStr, model_validator

from rag.core.query import QueryOptions
from rag.integrations._client import (
    DEFAULT_TIMEOUT,
    RemoteError,
    SearchBackend,
    build_options,
    hit_metadata,
    open_backend,
)

__all__ = ["RagRetriever", "RemoteError"]


class RagRetriever(BaseRetriever):
    """A LangChain retriever over a rag-platform collection, local or behind ``rag serve``.

    Args:
        collection: the collection to search (default ``"default"``).
        url: a running ``rag serve`` (``http://host:8000``); unset: the local library.
        api_key: the server's API key (a read key of ``collection`` is enough).
        data_dir: local only: the data directory; ``None`` resolves it as ``rag search`` does
            (``$RAG_DATA_DIR``, ``rag.toml``, else ``./.rag``).
        config_file: local only: the config file instead of ``$RAG_CONFIG`` / ``./rag.toml``.
        timeout: seconds an HTTP search may take.
        options: the query options as one :class:`~rag.core.query.QueryOptions`, or give them as keyword
            arguments (``k=5, alpha=0.8, filter="lang=en", rerank=True`` ...); unset options take the
            configured defaults (``k``: ``retrieval.k``, 5 as shipped).

    Raises:
        ConfigError: an unknown keyword (the message lists the options), a bad option value, ``url``
            together with ``data_dir``, ``history`` over HTTP, or (local) an unknown collection.

    The local library is opened at construction and held until :meth:`close` (or the end of a ``with``).
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    collection: str = "default"
    url: str | None = None
    api_key: SecretStr | None = None
    data_dir: Path | None = None
    config_file: Path | None = None
    timeout: float = DEFAULT_TIMEOUT
    options: QueryOptions = Field(default_factory=QueryOptions)

    _backend: SearchBackend = PrivateAttr()

    @model_validator(mode="before")
    @classmethod
    def _gather_options(cls, values: Any) -> Any:
        """Move the query-option keywords (``k``, ``alpha`` ...) into ``options``, refusing unknown ones."""
        if not isinstance(values, dict):
            return values
        fields = {name: value for name, value in values.items() if name in cls.model_fields and name != "options"}
        keywords = {name: value for name, value in values.items() if name not in cls.model_fields}
        arguments = [name for name in cls.model_fields if name not in BaseRetriever.model_fields]
        return {**fields, "options": build_options(values.get("options"), keywords, "RagRetriever(...)", arguments)}

    def model_post_init(self, context: Any, /) -> None:
        self._backend = open_backend(
            collection=self.collection, url=self.url, api_key=self.api_key, data_dir=self.data_dir,
            config_file=self.config_file, timeout=self.timeout,
        )
        try:
            self._backend.check(self.options)
        except BaseException:
            self._backend.close()
            raise

    def __enter__(self) -> RagRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the local engine or the HTTP connections."""
        self._backend.close()

    def _options(self, overrides: dict[str, Any]) -> QueryOptions:
        """This retriever's options with a call's own (``retriever.invoke(q, k=3)``) on top."""
        if not overrides:
            return self.options
        build_options(None, overrides, "RagRetriever.invoke(...)")  # names an unknown keyword
        return self.options.updated(overrides)

    def _documents(self, hits: list[dict[str, Any]]) -> list[Document]:
        return [
            Document(id=hit["chunk_id"], page_content=hit["text"], metadata=hit_metadata(hit, self.collection))
            for hit in hits
        ]

    def _get_relevant_documents(
        self, query: str, *, run_manager: CallbackManagerForRetrieverRun, **overrides: Any
    ) -> list[Document]:
        return self._documents(self._backend.search(query, self._options(overrides)))

    async def _aget_relevant_documents(
        self, query: str, *, run_manager: AsyncCallbackManagerForRetrieverRun, **overrides: Any
    ) -> list[Document]:
        return self._documents(await self._backend.asearch(query, self._options(overrides)))
