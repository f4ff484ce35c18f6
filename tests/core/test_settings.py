"""Settings precedence: defaults < rag.toml < RAG_* environment < CLI overrides; clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from rag.core.errors import ConfigError
from rag.core.settings import load_settings


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("RAG_CONFIG", "RAG_DATA_DIR", "RAG_RETRIEVAL__ALPHA", "RAG_STORE__KIND", "RAG_RETRIEVAL__K"):
        monkeypatch.delenv(name, raising=False)


def test_defaults() -> None:
    s = load_settings()
    assert s.data_dir == Path(".rag")
    assert (s.store.kind, s.retrieval.alpha, s.chunking.size, s.chunking.overlap) == ("faiss", 0.5, 200, 40)
    assert s.llm.base_url is None


def test_precedence(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    (tmp_path / "rag.toml").write_text('data_dir = "from-toml"\n[retrieval]\nalpha = 0.2\nk = 7\n[store]\nkind = "qdrant"\n')
    s = load_settings()
    assert (str(s.data_dir), s.retrieval.alpha, s.retrieval.k, s.store.kind) == ("from-toml", 0.2, 7, "qdrant")
    monkeypatch.setenv("RAG_RETRIEVAL__ALPHA", "0.9")
    monkeypatch.setenv("RAG_DATA_DIR", "from-env")
    s = load_settings()
    assert (str(s.data_dir), s.retrieval.alpha, s.retrieval.k) == ("from-env", 0.9, 7)
    s = load_settings(retrieval={"alpha": 0.3}, data_dir="from-cli")
    assert (str(s.data_dir), s.retrieval.alpha) == ("from-cli", 0.3)


def test_rag_config_names_another_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere.toml"
    other.write_text("[chunking]\nsize = 128\noverlap = 16\n")
    monkeypatch.setenv("RAG_CONFIG", str(other))
    assert load_settings().chunking.size == 128
    monkeypatch.setenv("RAG_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="not a file"):
        load_settings()


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"retrieval": {"alpha": 1.5}}, "retrieval.alpha"),
        ({"chunking": {"size": 100, "overlap": 100}}, "overlap"),
        ({"retrieval": {"fusion": "max"}}, "retrieval.fusion"),
        ({"retrieval": {"k": 0}}, "retrieval.k"),
        ({"unknown": 1}, "unknown"),
        ({"retrieval": {"alhpa": 0.3}}, "retrieval.alhpa"),
    ],
)
def test_invalid_values_name_the_field(overrides: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(**overrides)


def test_malformed_toml_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "rag.toml").write_text("[retrieval\nalpha = ")
    with pytest.raises(ConfigError, match="cannot read configuration"):
        load_settings()
