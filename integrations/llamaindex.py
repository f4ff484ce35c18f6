"""rag-platform's hybrid search as a LlamaIndex retriever (``pip install 'rag-platform[llamaindex]'``).

Over the local library (the collection of a data directory, as ``rag search`` opens it)::

    from llama_index.core.query_engine import RetrieverQueryEngine
    from rag.integrations.llamaindex import RagRetriever

    retriever = RagRetriever(collection="default", k=5, filter="lang=en")
    engine = RetrieverQueryEngine.from_args(retriever, llm=my_llm)
    print(engine.query("How do I rebuild the index?"))

or over a running ``rag serve``::

    retriever = RagRetriever(url="http://127.0.0.1:8000", api_key="rag_...", collection="default", k=5)
    nodes = await retriever.aretrieve("How do I rebuild the index?")

The query options are those of ``rag search`` (:class:`~rag.core.query.QueryOptions`), as keyword
arguments. Each :class:`~llama_index.core.schema.NodeWithScore` holds a
:class:`~llama_index.core.schema.TextNode` whose id is the chunk id, whose source relationship is the
document id, whose character span is the chunk's offsets in the document, and whose metadata is that of
:func:`rag.integrations._client.hit_metadata`; of that metadata only ``citation`` is shown to the LLM and
none is embedded, so prompts carry the passage and where it comes from, not ids and scores.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

try:
    from llama_index.core.callbacks import CallbackManager
    from llama_index.core.retrievers import BaseRetriever
    from llama_index.core.schema import NodeRelationship, NodeWithScore, QueryBundle, RelatedNodeInfo, TextNode
except ImportError as exc:  # the extra is not installed
    raise ImportError(
        "rag.integrations.llamaindex needs LlamaIndex: pip install 'rag-platform[llamaindex]'"
    ) from exc

from pydantic import SecretStr

from rag.core.query import QueryOptions
from rag.integrations._client import DEFAULT_TIMEOUT, RemoteError, build_options, hit_metadata, open_backend

__all__ = ["RagRetriever", "RemoteError"]

LLM_METADATA = ("citation",)
"""The metadata keys a LlamaIndex prompt shows with each passage (``source § section (p. N)``)."""

_ARGUMENTS = ("collection", "url", "api_key", "data_dir", "config_file", "timeout", "options", "callback_manager",
              "verbose")


class RagRetriever(BaseRetriever):
    """A LlamaIndex retriever over a rag-platform collection, local or behind ``rag serve``.

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
        callback_manager, verbose: as for any LlamaIndex retriever.

    Raises:
        ConfigError: an unknown keyword (the message lists the options), a bad option value, ``url``
            together with ``data_dir``, ``history`` over HTTP, or (local) an unknown collection.

    The local library is opened at construction and held until :meth:`close` (or the end of a ``with``).
    """

    def __init__(
        self,
        *,
        collection: str = "default",
        url: str | None = None,
        api_key: SecretStr | str | None = None,
        data_dir: Path | str | None = None,
        config_file: Path | str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
        options: QueryOptions | None = None,
        callback_manager: CallbackManager | None = None,
        verbose: bool = False,
        **query_options: Any,
    ) -> None:
        self.options = build_options(options, query_options, "RagRetriever(...)", _ARGUMENTS)
        self.collection = collection
        self._backend = open_backend(
            collection=collection, url=url, api_key=api_key, data_dir=data_dir, config_file=config_file,
            timeout=timeout,
        )
        try:
            self._backend.check(self.options)
        except BaseException:
            self._backend.close()
            raise
        super().__init__(callback_manager=callback_manager, verbose=verbose)

    def __enter__(self) -> RagRetriever:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        """Release the local engine or the HTTP connections."""
        self._backend.close()

    def _nodes(self, hits: list[dict[str, Any]]) -> list[NodeWithScore]:
        nodes = []
        for hit in hits:
            metadata = hit_metadata(hit, self.collection)
            start, end = metadata.get("start"), metadata.get("end")
            node = TextNode(
                id_=hit["chunk_id"],
                text=hit["text"],
                metadata=metadata,
                excluded_llm_metadata_keys=[key for key in metadata if key not in LLM_METADATA],
                excluded_embed_metadata_keys=list(metadata),
                start_char_idx=start if isinstance(start, int) else None,
                end_char_idx=end if isinstance(end, int) else None,
                relationships={NodeRelationship.SOURCE: RelatedNodeInfo(node_id=hit["doc_id"])},
            )
            nodes.append(NodeWithScore(node=node, score=hit["score"]))
        return nodes

    def _retrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(self._backend.search(query_bundle.query_str, self.options))

    async def _aretrieve(self, query_bundle: QueryBundle) -> list[NodeWithScore]:
        return self._nodes(await self._backend.asearch(query_bundle.query_str, self.options))
