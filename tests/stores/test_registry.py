"""create_store: built-ins, entry-point plugins, and the error for an unknown kind."""

from __future__ import annotations

import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import rag.stores
from rag.core.errors import ConfigError, StoreError
from rag.core.settings import StoreSettings
from rag.stores import VectorStore, available_stores, create_store
from rag.stores.faiss_store import FaissStore
from rag.stores.qdrant_store import QdrantStore


def _plugin(name: str, factory) -> SimpleNamespace:
    """A stand-in for an installed entry point of the ``rag.vector_stores`` group."""
    return SimpleNamespace(name=name, value=f"fake_plugin:{name}", load=lambda: factory)


def test_faiss_is_created_in_its_subfolder(tmp_path: Path) -> None:
    store = create_store("faiss", data_dir=tmp_path, dimension=8, options=StoreSettings(index="hnsw", hnsw_m=8))
    try:
        assert isinstance(store, FaissStore) and isinstance(store, VectorStore)
        assert store.path == tmp_path / "faiss" and store.index_kind == "hnsw" and store.dimension == 8
    finally:
        store.close()


def test_qdrant_is_local_without_url(tmp_path: Path) -> None:
    store = create_store("qdrant", data_dir=tmp_path, dimension=8, options=StoreSettings(kind="qdrant"))
    try:
        assert isinstance(store, QdrantStore) and store.path == tmp_path / "qdrant" and store.url is None
        assert (tmp_path / "qdrant").is_dir()
    finally:
        store.close()


def test_unknown_kind_lists_the_available_ones(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown vector store 'milvus'; available: faiss, opensearch, pgvector, qdrant"):
        create_store("milvus", data_dir=tmp_path, dimension=8, options=StoreSettings())


def test_plugins_come_from_entry_points(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def factory(*, data_dir: Path, dimension: int, options: StoreSettings) -> VectorStore:
        calls.append((data_dir, dimension, options.collection))
        return FaissStore(data_dir / "mine", dimension)

    plugins = [_plugin("mine", factory), _plugin("faiss", factory)]  # a built-in name cannot be taken
    monkeypatch.setattr(rag.stores, "entry_points", lambda group: plugins)
    assert available_stores() == ["faiss", "opensearch", "pgvector", "qdrant", "mine"]
    store = create_store("mine", data_dir=tmp_path, dimension=4, options=StoreSettings(collection="c"))
    store.close()
    assert calls == [(tmp_path, 4, "c")]
    create_store("faiss", data_dir=tmp_path, dimension=4, options=StoreSettings()).close()
    assert len(calls) == 1


def test_plugin_returning_something_else_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(rag.stores, "entry_points", lambda group: [_plugin("bad", lambda **kwargs: object())])
    with pytest.raises(StoreError, match="not a VectorStore"):
        create_store("bad", data_dir=tmp_path, dimension=4, options=StoreSettings())


def test_missing_qdrant_client_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "qdrant_client", None)  # makes `import qdrant_client` fail
    with pytest.raises(StoreError, match=r"pip install 'rag-platform\[qdrant\]'"):
        QdrantStore(8)
