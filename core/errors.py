"""The one error tree of rag-platform.

Every failure a user can cause or meet derives from :class:`RagError`, so the edges (CLI, API) can
translate it into a one-line message or an HTTP problem response without catching bare exceptions.
"""

from __future__ import annotations

REBUILD_HINT = "rebuild it with `rag ingest --rebuild PATH`"
"""What every index-mismatch or unreadable-index message tells the user to do."""


class RagError(Exception):
    """Base class for every error rag-platform raises on purpose."""

    exit_code: int = 1


class ConfigError(RagError):
    """A setting, flag or config file value is invalid."""

    exit_code = 2


class FilterError(ConfigError):
    """A metadata filter could not be parsed or is malformed."""


class IngestError(RagError):
    """A document could not be loaded, chunked or indexed."""


class LoaderError(IngestError):
    """One file could not be read; ingest reports it and carries on with the rest."""


class UnsupportedFileError(LoaderError):
    """No parser reads this kind of file (by its suffix); containers skip such members instead of failing."""


class StoreError(RagError):
    """The vector store failed or holds data incompatible with the request."""


class IndexMismatchError(StoreError):
    """The index was built with another embedding model or dimension than the one configured."""


class IndexNotFoundError(StoreError):
    """No index exists yet in the data directory."""


class IndexBusyError(StoreError):
    """Another process holds the data directory's writer lock (an ingest is running)."""

    exit_code = 4


class StorageError(StoreError):
    """A file of the index could not be read or written: disk full, locked, corrupt or not permitted.

    The message names the file and what to do; nothing committed before the failure is lost.
    """


class RetrievalError(RagError):
    """A search could not be carried out."""


class GenerationError(RagError):
    """The language model endpoint failed, timed out or is unreachable."""

    exit_code = 3


class GenerationTimeout(GenerationError):  # noqa: N818 - a documented public name (docs/architecture.md)
    """The language model endpoint did not answer in time (an API maps it to 504, other failures to 502)."""


class CollectionNotFoundError(ConfigError):
    """No collection of that name exists in the data directory (an API maps it to 404)."""


class CollectionExistsError(ConfigError):
    """A collection of that name exists already (an API maps it to 409)."""
