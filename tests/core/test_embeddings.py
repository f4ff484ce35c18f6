"""The embedder on the real packaged model: PyTorch batches and the ONNX query path agree."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rag.core.embeddings import SentenceEmbedder

pytestmark = pytest.mark.slow

TEXTS = [
    "How do I rebuild the index after changing the embedding model?",
    "bm25",
    "A much longer query that goes on about sliding windows, overlap, sentence boundaries and chunk sizes " * 3,
]


def test_onnx_queries_equal_pytorch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path))
    onnx = SentenceEmbedder()
    torch_only = SentenceEmbedder(onnx_queries=False)
    assert onnx._query_encoder is not None and torch_only._query_encoder is None
    assert list(tmp_path.glob("onnx/*.onnx")), "the export is cached"
    for text in TEXTS:
        fast, reference = onnx.encode_query(text), torch_only.encode_query(text)
        assert fast.shape == (384,) and fast.dtype == np.float32
        np.testing.assert_allclose(fast, reference, atol=1e-5)
        assert np.linalg.norm(fast) == pytest.approx(1.0, abs=1e-5)
    batch = torch_only.encode(TEXTS)  # documents go through the batched PyTorch path
    for row, text in zip(batch, TEXTS):
        np.testing.assert_allclose(onnx.encode_query(text), row, atol=1e-5)


def test_a_failed_export_falls_back_to_pytorch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("RAG_CACHE_DIR", str(blocker))
    embedder = SentenceEmbedder()
    assert embedder._query_encoder is None
    np.testing.assert_allclose(embedder.encode_query(TEXTS[0]), embedder.encode([TEXTS[0]])[0], atol=1e-6)
