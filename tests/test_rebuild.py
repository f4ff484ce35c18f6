"""``--rebuild`` works exactly where the identity check refuses: another model and dimension, another store
kind, another server URL or collection. Without it, each of those is a clear error, never empty results."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.core.errors import IndexMismatchError
from rag.stores.qdrant import QdrantStore

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def small_model(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real second embedding model of another dimension: the packaged MiniLM with a 128-d projection."""
    import torch
    from sentence_transformers import SentenceTransformer, models

    from rag.core.embeddings import resolve_model_path

    torch.manual_seed(0)
    base = SentenceTransformer(resolve_model_path("all-MiniLM-L6-v2"), device="cpu")
    dense = models.Dense(384, 128, activation_function=torch.nn.Identity())  # MiniLM is 384-d
    model = SentenceTransformer(modules=[base[0], base[1], dense, models.Normalize()], device="cpu")
    folder = tmp_path_factory.mktemp("minilm-128")
    model.save(str(folder))
    return str(folder)


def test_rebuild_after_a_model_and_dimension_change(make_engine, corpus: Path, small_model: str) -> None:
    make_engine().ingest([corpus])
    changed = make_engine(embedding={"model": small_model})
    with pytest.raises(IndexMismatchError, match="rag ingest --rebuild"):
        changed.ingest([corpus])
    with pytest.raises(IndexMismatchError, match="embedding_model"):
        changed.search("refund")
    report = changed.ingest([corpus], rebuild=True)
    assert len(report.added) == 4
    assert changed.status()["dimension"] == 128
    assert changed.search("refund within 30 days", 1)[0].chunk.source == "docs/web/pricing.html"


def test_rebuild_after_a_store_change(make_engine, corpus: Path) -> None:
    make_engine().ingest([corpus])
    qdrant = make_engine(store={"kind": "qdrant"})
    with pytest.raises(IndexMismatchError, match="store='faiss'"):
        qdrant.search("refund")
    qdrant.ingest([corpus], rebuild=True)
    assert qdrant.search("refund within 30 days", 1)[0].chunk.source == "docs/web/pricing.html"
    qdrant.close()

    other = make_engine(store={"kind": "qdrant", "collection": "other"})
    with pytest.raises(IndexMismatchError, match="store_collection='rag'"):
        other.search("refund")  # a new, empty collection: an error, not silently empty dense results
    other.ingest([corpus], rebuild=True)
    assert other.search("founded in Helsinki", 1)[0].chunk.source == "docs/notes/history.txt"


def test_a_new_server_url_is_refused_before_connecting(make_engine, corpus: Path) -> None:
    local = make_engine(store={"kind": "qdrant"})
    local.ingest([corpus])
    local.close()
    remote = make_engine(store={"kind": "qdrant", "url": "http://127.0.0.1:9"})
    with pytest.raises(IndexMismatchError, match="store_url=''"):
        remote.search("refund")


def test_an_empty_store_behind_a_full_catalog_is_an_error(make_engine, corpus: Path, tmp_path: Path) -> None:
    engine = make_engine(store={"kind": "qdrant"})
    engine.ingest([corpus])
    engine.close()
    with QdrantStore(384, path=tmp_path / ".rag" / "qdrant") as store:
        store.drop()  # the collection vanished behind the catalog's back (deleted on a server, say)
    with pytest.raises(IndexMismatchError, match="holds no vectors"):
        make_engine(store={"kind": "qdrant"}).search("refund")


def test_a_collection_of_another_size_can_be_dropped(tmp_path: Path) -> None:
    import numpy as np

    from rag.stores.base import StoredChunk

    with QdrantStore(384, path=tmp_path / "q") as store:
        store.upsert([StoredChunk("a", np.ones(384, dtype=np.float32), "t", {})])
    with pytest.raises(IndexMismatchError):
        QdrantStore(128, path=tmp_path / "q")
    QdrantStore(128, path=tmp_path / "q", any_dimension=True).drop()
    with QdrantStore(128, path=tmp_path / "q") as fresh:
        assert fresh.count() == 0


@pytest.mark.parametrize("chunking", [{"size": 120}, {"overlap": 10}, {"min_tokens": 0}, {"context_prefix": True}])
def test_a_chunking_change_needs_a_rebuild(make_engine, corpus: Path, chunking: dict) -> None:
    """Chunks of unchanged files would keep the old windows while changed files get new ones."""
    make_engine().ingest([corpus])
    changed = make_engine(chunking=chunking)
    (key,) = chunking
    recorded = {
        "size": "chunk_size", "overlap": "chunk_overlap", "min_tokens": "chunk_min_tokens",
        "context_prefix": "chunk_context_prefix",
    }[key]
    with pytest.raises(IndexMismatchError, match=f"{recorded}=.*rag ingest --rebuild"):
        changed.ingest([corpus])
    assert len(changed.ingest([corpus], rebuild=True).added) == 4
