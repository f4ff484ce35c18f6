"""Named collections in one data directory, each with its own catalog, store, BM25 and settings overrides.

Layout::

    <data_dir>/                      the ``default`` collection (where every single-index data directory
        catalog.sqlite ...           already keeps its files, so an existing one is adopted as is)
        collections/<name>/          every other collection, a data directory of its own
            collection.json          {"settings": {...}}: overrides merged over the base settings

A collection's overrides may change anything an index is built with (chunking, store kind and URL,
embedding model, ``retrieval.alpha`` ...) but not where it lives (``data_dir``). Collections on a shared
server store are kept apart by default: ``store.collection`` is ``rag_<name>`` unless overridden.

With shared state (``[state]``, see :mod:`rag.core.shared_state`) the collections and their overrides are
recorded in the shared database instead of ``collection.json`` files, so every API replica sees the same
ones; the folders above then hold only what each replica derives locally.

:class:`Workspace` hands out one :class:`~rag.engine.RagEngine` per collection, made on first use and kept
for the life of the process (an API server), and is safe to share between threads.
"""

from __future__ import annotations

import json
import re
import shutil
import threading
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from rag.core.errors import CollectionExistsError, CollectionNotFoundError, ConfigError
from rag.core.onnx_query import cache_dir
from rag.core.settings import Settings, load_settings
from rag.core.shared_state import SharedRecords, state_target
from rag.engine import RagEngine
from rag.generate.llamacpp_server import LlamaCppServer, SharedLlamaCppServers, model_name, packaged_gguf
from rag.ingest.loaders import default_registry
from rag.ingest.parsers import FormatInfo, ParserRegistry

DEFAULT_COLLECTION = "default"
NAME_PATTERN = re.compile(r"\A[a-z0-9][a-z0-9_-]{0,62}\Z")  # \Z: "$" would also match before a final newline
SETTINGS_FILE = "collection.json"
_SUBFOLDER = "collections"


def check_name(name: str) -> str:
    """Return ``name`` if it is a valid collection name (lower-case letters, digits, ``-``, ``_``; 1-63).

    Raises:
        ConfigError: naming the rule.
    """
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise ConfigError(
            f"invalid collection name {name!r}: use 1-63 lower-case letters, digits, '-' or '_', "
            "starting with a letter or digit"
        )
    return name


def merge_overrides(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """``overrides`` merged into a copy of ``base``, nested tables key by key (settings overrides)."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), dict):
            merged[key] = merge_overrides(merged[key], value)
        else:
            merged[key] = value
    return merged


class Workspace:
    """The collections of one data directory.

    Args:
        settings: the base settings; ``settings.data_dir`` is the data directory.
        project_root: passed to every engine (file ids are relative to it).
    """

    def __init__(self, settings: Settings, project_root: Path | None = None) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        # File ids are relative to the same folder whichever collection a file goes into.
        self.project_root = Path(project_root or settings.data_dir.resolve().parent).resolve()
        self._engines: dict[str, RagEngine] = {}
        self._lock = threading.RLock()
        #: The embedded LLM servers every collection shares (one process per model, not per collection).
        self.llm_servers = SharedLlamaCppServers(cache_dir() / "llm-server.log")
        target = state_target(settings)
        #: With shared state, the collections are recorded in the shared database, not in ``data_dir``.
        self.records = SharedRecords(target) if target is not None else None

    def __enter__(self) -> Workspace:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        with self._lock:
            for engine in self._engines.values():
                engine.close()
            self._engines.clear()
            self.llm_servers.close()
            if self.records is not None:
                self.records.close()

    # -- where things are -------------------------------------------------------------------------

    def path(self, name: str) -> Path:
        """The data directory of collection ``name`` (it may not exist yet)."""
        check_name(name)
        return self.data_dir if name == DEFAULT_COLLECTION else self.data_dir / _SUBFOLDER / name

    def exists(self, name: str) -> bool:
        if name == DEFAULT_COLLECTION:
            return True  # always there; empty until the first ingest
        if self.records is not None:
            return self.records.collection_settings(name) is not None
        return (self.path(name) / SETTINGS_FILE).is_file()

    def names(self) -> list[str]:
        """``default`` first, then the others, sorted."""
        if self.records is not None:
            return [DEFAULT_COLLECTION, *(n for n in self.records.collection_names() if n != DEFAULT_COLLECTION)]
        folder = self.data_dir / _SUBFOLDER
        others = sorted(
            p.name for p in folder.iterdir() if NAME_PATTERN.match(p.name) and (p / SETTINGS_FILE).is_file()
        ) if folder.is_dir() else []
        return [DEFAULT_COLLECTION, *(n for n in others if n != DEFAULT_COLLECTION)]

    def overrides(self, name: str) -> dict[str, Any]:
        """The settings overrides stored with a collection (``{}`` for ``default``)."""
        self.require(name)
        if name == DEFAULT_COLLECTION:
            return {}
        if self.records is not None:
            return dict(self.records.collection_settings(name) or {})
        try:
            data = json.loads((self.path(name) / SETTINGS_FILE).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {self.path(name) / SETTINGS_FILE}: {exc}") from None
        return dict(data.get("settings") or {})

    def settings_for(self, name: str, **overrides: Any) -> Settings:
        """The base settings with the collection's overrides, its own data directory, and then
        ``overrides`` (a command's flags, which win over what the collection stores)."""
        return self._settings(name, merge_overrides(self.overrides(name), overrides))

    def _settings(self, name: str, overrides: Mapping[str, Any]) -> Settings:
        if "data_dir" in overrides:
            raise ConfigError("a collection's settings cannot move its data_dir")
        base = self.settings.model_dump(exclude={"data_dir"})  # secrets stay SecretStr objects
        if name != DEFAULT_COLLECTION and "collection" not in overrides.get("store", {}):
            base["store"]["collection"] = f"rag_{name}"
        return load_settings(data_dir=self.path(name), **merge_overrides(base, overrides))

    def require(self, name: str) -> None:
        """Raise :class:`CollectionNotFoundError` unless ``name`` exists."""
        check_name(name)
        if not self.exists(name):
            raise CollectionNotFoundError(f"no collection named {name!r}; create it with `rag collections create {name}`")

    # -- managing ---------------------------------------------------------------------------------

    def create(self, name: str, settings: Mapping[str, Any] | None = None) -> Settings:
        """Create collection ``name`` with optional settings overrides (validated before anything is written).

        Raises:
            CollectionExistsError: it exists already (``default`` always does).
            ConfigError: the name or an override is invalid.
        """
        check_name(name)
        overrides = dict(settings or {})
        resolved = self._settings(name, overrides)  # validates every override
        from rag.stores import available_stores

        if resolved.store.kind not in available_stores():
            raise ConfigError(
                f"unknown vector store {resolved.store.kind!r}; available: {', '.join(available_stores())}"
            )
        with self._lock:
            if self.records is not None:
                created = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
                if name == DEFAULT_COLLECTION or not self.records.add_collection(name, overrides, created):
                    raise CollectionExistsError(f"collection {name!r} already exists")
                return resolved
            if self.exists(name):
                raise CollectionExistsError(f"collection {name!r} already exists")
            folder = self.path(name)
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f"{SETTINGS_FILE}.tmp"
            tmp.write_text(json.dumps({"settings": overrides}, indent=2, sort_keys=True), encoding="utf-8")
            tmp.replace(folder / SETTINGS_FILE)
        return resolved

    def delete(self, name: str, *, wait: bool = True) -> None:
        """Delete a collection and everything indexed in it (its remote store collection included).

        ``default`` is emptied rather than removed. Takes the collection's writer lock first.
        """
        self.require(name)
        engine = self.engine(name)
        with self._lock:
            self._engines.pop(name, None)
        try:
            with engine._writer_lock("delete", wait=wait, on_wait=None):
                engine._wipe()
                if name != DEFAULT_COLLECTION:
                    # The record goes last: until then the collection still shows as existing.
                    if self.records is not None:
                        self.records.remove_collection(name)
                    (self.path(name) / SETTINGS_FILE).unlink(missing_ok=True)
        finally:
            engine.close()
        if name != DEFAULT_COLLECTION:
            shutil.rmtree(self.path(name), ignore_errors=True)

    def engine(self, name: str = DEFAULT_COLLECTION) -> RagEngine:
        """The engine of collection ``name``, made on first use and shared afterwards."""
        with self._lock:
            engine = self._engines.get(name)
            if engine is None:
                self.require(name)
                engine = self._engines[name] = RagEngine(
                    self.settings_for(name), project_root=self.project_root, llm_servers=self.llm_servers
                )
            return engine

    # -- what front ends ask of the lower layers ----------------------------------------------------
    # The API and ``rag eval`` may import only core, the engine and this module (see the import-linter
    # contracts in pyproject.toml); what they need from ingest or generate is offered here.

    def supported_suffixes(self) -> frozenset[str]:
        """File suffixes some installed parser reads (lower case, with the dot): what an upload may be."""
        return default_registry().suffixes()

    def embedded_llm_model(self) -> str:
        """The model name the embedded llama.cpp server would serve for ``llm.gguf`` (the packaged model
        when unset), known without starting it.

        Raises:
            ConfigError: ``llm.gguf`` is unset and the packaged model is not installed.
        """
        return model_name(self.settings.llm.gguf or packaged_gguf())


def private_llm_server(
    gguf: Path | str | None, *, n_ctx: int, threads: int | None, log_name: str
) -> LlamaCppServer:
    """An embedded llama.cpp server of the caller's own, apart from :attr:`Workspace.llm_servers` (the
    ``rag eval`` judge runs its model with its own context size and threads).

    Use it as a context manager: the server starts on entry and stops on exit.

    Args:
        gguf: the model file; ``None`` for the packaged model.
        n_ctx: context size in tokens.
        threads: CPU threads, ``None`` for llama.cpp's default.
        log_name: file name of the server's log in the user cache folder (``$RAG_CACHE_DIR``).

    Raises:
        ConfigError: ``n_ctx`` is not positive.
    """
    return LlamaCppServer(gguf=gguf, n_ctx=n_ctx, threads=threads, log_path=cache_dir() / log_name)


def file_formats(settings: Settings) -> list[FormatInfo]:
    """The file formats ingest reads under ``settings``: each parser (built-ins first, then plugins) with the
    suffixes it serves after ``ingest.parsers`` picks, its availability and the extra it needs (``rag formats``).
    """
    return ParserRegistry(settings.ingest.parsers).formats()
