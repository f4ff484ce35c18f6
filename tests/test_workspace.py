"""Named collections: an existing single-index data directory is the ``default`` collection, others live
apart with their own settings, and deleting one touches nothing else."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from rag.core.errors import CollectionExistsError, CollectionNotFoundError, ConfigError
from rag.core.settings import load_settings
from rag.workspace import Workspace

pytestmark = pytest.mark.slow


def test_an_existing_data_directory_is_the_default_collection(tmp_path: Path, copy_ingested: Callable[[Path], Path]) -> None:
    """A data directory made before collections existed (rag ingest at its root) keeps working as is."""
    copy_ingested(tmp_path)  # `rag ingest docs` run at the project root (the session's one ingest, copied)
    before = sorted(p.name for p in (tmp_path / ".rag").iterdir())
    with Workspace(load_settings(data_dir=tmp_path / ".rag"), project_root=tmp_path) as workspace:
        assert workspace.names() == ["default"]
        engine = workspace.engine("default")
        assert engine.status()["documents"] == 4
        assert engine.search("refund", 1)[0].chunk.doc_id == "docs/web/pricing.html"
    assert sorted(p.name for p in (tmp_path / ".rag").iterdir()) == before  # adopted in place, nothing moved


def test_collections_have_their_own_index_and_settings(tmp_path: Path, corpus: Path) -> None:
    with Workspace(load_settings(data_dir=tmp_path / ".rag"), project_root=tmp_path) as workspace:
        workspace.engine().ingest([corpus])
        settings = workspace.create("small", {"chunking": {"size": 64, "overlap": 8}, "retrieval": {"alpha": 0.2}})
        assert (settings.chunking.size, settings.retrieval.alpha) == (64, 0.2)
        assert settings.store.collection == "rag_small"  # apart from other collections on a shared server
        assert workspace.names() == ["default", "small"]
        small = workspace.engine("small")
        small.ingest([corpus / "guide"])
        assert small.status()["documents"] == 2 and small.status()["chunk_size"] == 64
        assert workspace.engine().status()["documents"] == 4
        assert {h.chunk.doc_id for h in small.search("widget", 10)} <= {"docs/guide/install.md", "docs/guide/troubleshoot.md"}

        with pytest.raises(CollectionExistsError):
            workspace.create("small")
        with pytest.raises(CollectionExistsError):
            workspace.create("default")
        for bad in ("Small", "a/b", "..", "", "x" * 64):
            with pytest.raises(ConfigError, match="invalid collection name"):
                workspace.create(bad)
        with pytest.raises(ConfigError, match=r"retrieval.alpha"):
            workspace.create("bad-settings", {"retrieval": {"alpha": 7}})
        assert "bad-settings" not in workspace.names()  # nothing written for a refused collection
        with pytest.raises(ConfigError, match="data_dir"):
            workspace.create("moved", {"data_dir": "/elsewhere"})
        assert json.loads((workspace.path("small") / "collection.json").read_text())["settings"]["retrieval"] == {"alpha": 0.2}

        workspace.delete("small")
        assert workspace.names() == ["default"] and not workspace.path("small").exists()
        with pytest.raises(CollectionNotFoundError):
            workspace.engine("small")
        assert workspace.engine().status()["documents"] == 4  # the default collection is untouched
