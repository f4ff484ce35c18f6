"""The registry: create_store (built-ins, entry-point plugins, the error for an unknown kind), drop_store and
store_traits, which keep backend names out of the engine."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import TYPE_CHECKING

import numpy as np
import pytest

import rag.stores
from rag.core.analysis import KeywordAnalysis
from rag.core.errors import ConfigError, IndexMismatchError, StoreError
from rag.core.settings import StoreSettings
from rag.stores import (
    StoreTraits,
    VectorStore,
    available_stores,
    create_store,
    drop_store,
    local_store_folders,
    store_traits,
)
from rag.stores.base import StoredChunk
from rag.stores.faiss_store import FaissStore
from rag.stores.qdrant import QdrantStore

if TYPE_CHECKING:
    from rag.engine import RagEngine


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


def test_store_traits_say_where_the_data_lives() -> None:
    assert store_traits("faiss", StoreSettings()) == StoreTraits(local_folder="faiss", uses_collection=False)
    assert store_traits("qdrant", StoreSettings()) == StoreTraits(local_folder="qdrant", single_client=True)
    server = StoreSettings(url="http://qdrant.invalid:6333")
    assert store_traits("qdrant", server) == store_traits("pgvector", StoreSettings()) == StoreTraits()
    assert store_traits("opensearch", server) == store_traits("mine", StoreSettings()) == StoreTraits()
    assert local_store_folders() == ("faiss", "qdrant")


@pytest.mark.parametrize("kind", ["faiss", "qdrant"])
def test_drop_store_deletes_a_local_folder_whatever_it_holds(tmp_path: Path, kind: str) -> None:
    create_store(kind, data_dir=tmp_path, dimension=8, options=StoreSettings(kind=kind)).close()
    assert (tmp_path / kind).is_dir()
    drop_store(kind, data_dir=tmp_path, dimension=16, options=StoreSettings(kind=kind))  # another dimension
    assert not (tmp_path / kind).exists()
    with create_store(kind, data_dir=tmp_path, dimension=16, options=StoreSettings(kind=kind)) as fresh:
        assert fresh.count() == 0


def test_drop_store_opens_a_plugin_any_dimension_when_it_can(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A store with data elsewhere is opened and dropped; ``any_dimension`` reaches a factory that takes it."""
    received: list[dict] = []

    def factory(*, data_dir: Path, dimension: int, options: StoreSettings, any_dimension: bool = False) -> VectorStore:
        received.append({"dimension": dimension, "any_dimension": any_dimension})
        return QdrantStore(dimension, path=data_dir / "mine", any_dimension=any_dimension)

    def strict(*, data_dir: Path, dimension: int, options: StoreSettings) -> VectorStore:
        return QdrantStore(dimension, path=data_dir / "strict")

    monkeypatch.setattr(rag.stores, "entry_points", lambda group: [_plugin("mine", factory), _plugin("strict", strict)])
    with create_store("mine", data_dir=tmp_path, dimension=4, options=StoreSettings()) as store:
        store.upsert([StoredChunk("a", np.ones(4, dtype=np.float32), "t", {})])
    drop_store("mine", data_dir=tmp_path, dimension=8, options=StoreSettings())
    assert received == [{"dimension": 4, "any_dimension": False}, {"dimension": 8, "any_dimension": True}]
    with create_store("mine", data_dir=tmp_path, dimension=8, options=StoreSettings()) as fresh:
        assert fresh.count() == 0 and fresh.dimension == 8
    create_store("strict", data_dir=tmp_path, dimension=4, options=StoreSettings()).close()
    with pytest.raises(IndexMismatchError):  # a factory without any_dimension cannot open another size
        drop_store("strict", data_dir=tmp_path, dimension=8, options=StoreSettings())
    drop_store("strict", data_dir=tmp_path, dimension=4, options=StoreSettings())


def test_analysis_reaches_a_factory_that_takes_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    received: list[object] = []

    def factory(*, data_dir: Path, dimension: int, options: StoreSettings, analysis: KeywordAnalysis) -> VectorStore:
        received.append(analysis)
        return FaissStore(data_dir / "mine", dimension)

    monkeypatch.setattr(rag.stores, "entry_points", lambda group: [_plugin("mine", factory)])
    analysis = KeywordAnalysis(stemmer=None)
    create_store("mine", data_dir=tmp_path, dimension=4, options=StoreSettings(), analysis=analysis).close()
    assert received == [analysis]
    store = create_store("qdrant", data_dir=tmp_path, dimension=4, options=StoreSettings(), analysis=analysis)
    assert store.bm25.analyzer.stemmer_name is None  # the built-in Qdrant store's sparse side reads it too
    store.close()


def test_backend_subpackages_are_packaged() -> None:
    """Every folder of ``stores/`` that is a package is listed in pyproject's ``packages`` (else a wheel lacks it)."""
    import tomllib

    root = Path(rag.stores.__file__).resolve().parent
    listed = set(tomllib.loads((root.parent / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {f"rag.stores.{init.parent.name}" for init in root.glob("*/__init__.py")}
    assert found >= {"rag.stores.qdrant", "rag.stores.opensearch", "rag.stores.pgvector"}
    assert found <= listed


@pytest.mark.slow
def test_a_rebuild_drops_a_plugin_store_through_the_registry(
    make_engine: Callable[..., RagEngine], corpus_writer: Callable[..., Path], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The engine names no backend: ``--rebuild`` asks the registry to drop the configured store, which opens
    a plugin's store (its data outside the built-in folders) with ``any_dimension`` and drops it."""
    opened_to_drop: list[bool] = []

    def factory(
        *, data_dir: Path, dimension: int, options: StoreSettings, read_only: bool = False, any_dimension: bool = False
    ) -> VectorStore:
        opened_to_drop.append(any_dimension)
        return FaissStore(data_dir / "elsewhere", dimension, read_only=read_only)

    monkeypatch.setattr(rag.stores, "entry_points", lambda group: [_plugin("mine", factory)])
    corpus = corpus_writer(tmp_path)
    engine = make_engine(store={"kind": "mine"})
    engine.ingest([corpus])
    dimension, chunks = engine.store.dimension, engine.store.count()
    with FaissStore(engine.data_dir / "elsewhere", dimension) as stray:  # a vector no catalog lists
        stray.upsert([StoredChunk("stray", np.ones(dimension, dtype=np.float32), "", {})])
        stray.flush()
    assert True not in opened_to_drop
    engine.ingest([corpus], rebuild=True)
    assert opened_to_drop.count(True) == 1
    assert "stray" not in engine.store.ids() and engine.store.count() == chunks
