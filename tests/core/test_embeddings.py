"""The embedder on the real packaged model: PyTorch batches and the torch-free ONNX query path agree.

The export is made once for the module (``exported``) in a temporary cache, as ingest makes it; the
tests then check what the query path relies on: equal vectors on real text, equal token counts, a
cache keyed on the model's content, and a model folder's own ONNX file used without an export.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from rag.core.embeddings import SentenceEmbedder, resolve_model_path
from rag.core.onnx_query import OnnxQueryEncoder, export_folder, model_fingerprint

pytestmark = pytest.mark.slow

DOCS = Path(__file__).resolve().parents[2] / "docs"
TEXTS = [
    "How do I rebuild the index after changing the embedding model?",
    "bm25",
    "A much longer query that goes on about sliding windows, overlap, sentence boundaries and chunk sizes " * 3,
    "Ünïcode, emoji 🙂, CJK 検索 and code `rag ingest --rebuild ./docs`",
]


def real_texts() -> list[str]:
    """Paragraphs of the project's own docs, short to far past the model's 256 tokens (truncation)."""
    paragraphs = [p.strip() for p in (DOCS / "architecture.md").read_text().split("\n\n") if len(p.strip()) > 40]
    return [*paragraphs[:12], "\n\n".join(paragraphs[:40])]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A cache folder holding the packaged model's export, made the way ingest makes it (model load)."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAG_CACHE_DIR", str(cache))
        assert SentenceEmbedder().model is not None  # loading the model exports the query encoder
        yield cache


def test_onnx_queries_equal_pytorch(exported: Path) -> None:
    folder = export_folder(resolve_model_path("all-MiniLM-L6-v2"))
    assert folder is not None and folder.parent == exported / "onnx"
    assert {p.name for p in folder.iterdir()} == {
        "model.onnx", "model.opt.onnx", "optimized.txt", "tokenizer.json", "manifest.json"}
    manifest = json.loads((folder / "manifest.json").read_text())
    assert manifest | {"model_path": "", "fingerprint": ""} == {
        "model_path": "", "fingerprint": "", "max_length": 256, "dimension": 384, "normalize": True,
        "inputs": ["input_ids", "attention_mask", "token_type_ids"], "format": 2,
    }
    onnx = SentenceEmbedder()
    torch_only = SentenceEmbedder(onnx_queries=False)
    assert onnx._query_encoder is not None and torch_only._query_encoder is None
    assert "model" not in onnx.__dict__, "queries did not load the PyTorch model"
    assert onnx.dimension == 384
    texts = [*TEXTS, *real_texts()]
    batch = torch_only.encode(texts)  # documents go through the batched PyTorch path
    for row, text in zip(batch, texts):
        fast, reference = onnx.encode_query(text), torch_only.encode_query(text)
        assert fast.shape == (384,) and fast.dtype == np.float32
        assert float(fast @ reference) >= 1 - 1e-5 and float(fast @ row) >= 1 - 1e-5
        np.testing.assert_allclose(fast, reference, atol=1e-5)
        assert np.linalg.norm(fast) == pytest.approx(1.0, abs=1e-5)
        # Prompt packing counts tokens with the same tokenizer, torch-free, with the same result.
        assert onnx.count_tokens(text) == len(torch_only.tokenizer.encode(text, add_special_tokens=False))
    assert "model" not in onnx.__dict__


def test_the_export_is_keyed_on_the_model_files(exported: Path, tmp_path: Path) -> None:
    packaged = Path(resolve_model_path("all-MiniLM-L6-v2"))
    copy = tmp_path / "model"
    shutil.copytree(packaged, copy)
    assert export_folder(str(copy)) != export_folder(str(packaged)), "another model folder, another export"
    before = model_fingerprint(copy)
    assert model_fingerprint(copy) == before, "unchanged files, same fingerprint"
    memo = json.loads((exported / "onnx" / "fingerprints.json").read_text())
    assert str((copy / "model.safetensors").resolve()) in memo, "digests are remembered, not recomputed"
    weights = bytearray((copy / "model.safetensors").read_bytes())
    weights[-1] ^= 1  # fine-tuned in place: same size, same name, other weights
    (copy / "model.safetensors").write_bytes(bytes(weights))
    os.utime(copy / "model.safetensors", ns=(1, 2))
    assert model_fingerprint(copy) != before
    assert OnnxQueryEncoder.load(str(copy)) is None, "no export exists for the changed weights"


def test_a_model_folders_own_onnx_file_is_used(exported: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder as sentence-transformers' ONNX backend saves it (``onnx/model.onnx``) needs no export."""
    packaged = Path(resolve_model_path("all-MiniLM-L6-v2"))
    folder = tmp_path / "model"
    folder.mkdir()
    for item in packaged.iterdir():
        (folder / item.name).symlink_to(item)
    (folder / "onnx").mkdir()
    (folder / "onnx" / "model.onnx").symlink_to(export_folder(str(packaged)) / "model.onnx")
    monkeypatch.setenv("RAG_CACHE_DIR", str(tmp_path / "empty-cache"))
    encoder = OnnxQueryEncoder.load(str(folder))
    assert encoder is not None and encoder.dimension == 384
    assert not (tmp_path / "empty-cache" / "onnx" / export_folder(str(folder)).name).exists(), "nothing exported"
    reference = SentenceEmbedder(onnx_queries=False)
    for text in TEXTS:
        assert float(encoder.encode(text) @ reference.encode_query(text)) >= 1 - 1e-5


def test_a_failed_export_falls_back_to_pytorch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder should be")
    monkeypatch.setenv("RAG_CACHE_DIR", str(blocker))
    embedder = SentenceEmbedder()
    assert embedder._query_encoder is None
    np.testing.assert_allclose(embedder.encode_query(TEXTS[0]), embedder.encode([TEXTS[0]])[0], atol=1e-6)
    text = real_texts()[0]
    assert embedder.count_tokens(text) == len(embedder.tokenizer.encode(text, add_special_tokens=False))
