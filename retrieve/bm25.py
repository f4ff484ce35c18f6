"""BM25 keyword search over chunks with ``bm25s``, persisted beside the vector index.

``bm25s`` keeps the index as a sparse matrix, so scoring a query is one pass over its terms' postings.
It has no incremental updates; the ingest pipeline rebuilds the index from the catalog whenever the
chunk set changes (a few seconds at 100k chunks) and saves it under a generation number, so a stale or
half-written index is detected and rebuilt rather than trusted.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from collections.abc import Callable, Sequence
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from rag.core.analysis import Analyzer  # re-exported: the analyzer lives in core, beside the stores that share it
from rag.core.errors import ConfigError, StorageError
from rag.core.filters import Filter
from rag.core.metadata_index import MetadataIndex
from rag.core.storage import describe_os_error
from rag.core.types import ScoredId

__all__ = ["Analyzer", "BM25Index"]

log = logging.getLogger(__name__)

def _import_bm25s():  # noqa: ANN202 - the bm25s module, imported on first use
    import bm25s

    # bm25s sets its own logger to DEBUG on import; put it back to a library's usual level.
    logging.getLogger("bm25s").setLevel(logging.WARNING)
    return bm25s


_CURRENT = "CURRENT"


class BM25Index:
    """A BM25 index over chunk texts, with metadata pre-filtering.

    Args:
        method: a ``bm25s`` variant: ``lucene`` (default), ``robertson``, ``atire``, ``bm25l``, ``bm25+``.
        k1: term-frequency saturation.
        b: length normalisation.
        analyzer: tokenizer used for documents and queries.
    """

    def __init__(
        self, method: str = "lucene", k1: float = 1.2, b: float = 0.75, analyzer: Analyzer | None = None
    ) -> None:
        if k1 <= 0 or not 0 <= b <= 1:
            raise ConfigError(f"BM25 needs k1 > 0 and 0 <= b <= 1, got k1={k1}, b={b}")
        self.method, self.k1, self.b = method, k1, b
        self.analyzer = analyzer or Analyzer()
        self.chunk_ids: list[str] = []
        self._position: dict[str, int] = {}
        self._metadata: Sequence[dict[str, Any]] | Callable[[], Sequence[dict[str, Any]]] = []
        self._model: Any = None
        self.generation = 0

    # -- building ---------------------------------------------------------------------------------

    def build(self, chunk_ids: list[str], texts: list[str], metadata: Sequence[dict[str, Any]]) -> None:
        """Index ``texts`` (row ``i`` is chunk ``chunk_ids[i]`` with ``metadata[i]``), replacing any content."""
        bm25s = _import_bm25s()
        if not (len(chunk_ids) == len(texts) == len(metadata)):
            raise ValueError("chunk_ids, texts and metadata must have the same length")
        model = bm25s.BM25(method=self.method, k1=self.k1, b=self.b)
        if texts:
            model.index([self.analyzer(t) for t in texts], show_progress=False)
        self._model = model
        self.chunk_ids = list(chunk_ids)
        self._position = {cid: i for i, cid in enumerate(self.chunk_ids)}
        self._metadata = list(metadata)
        self.__dict__.pop("_filter_index", None)

    def __len__(self) -> int:
        return len(self.chunk_ids)

    # -- searching --------------------------------------------------------------------------------

    @cached_property
    def _filter_index(self) -> MetadataIndex:
        metadata = self._metadata() if callable(self._metadata) else self._metadata
        return MetadataIndex(metadata)

    def score_all(self, query: str, filter: Filter | None = None) -> np.ndarray:
        """BM25 score of every row for ``query``; rows failing ``filter`` score ``-inf``."""
        if not self.chunk_ids:
            return np.zeros(0, dtype=np.float32)
        tokens = self.analyzer(query)
        scores = self._model.get_scores(tokens) if tokens else np.zeros(len(self.chunk_ids), dtype=np.float32)
        scores = np.asarray(scores, dtype=np.float32)
        return self.mask(scores, filter) if filter else scores

    def mask(self, scores: np.ndarray, filter: Filter) -> np.ndarray:
        """A copy of a :meth:`score_all` result in which rows failing ``filter`` score ``-inf``."""
        return np.where(self._filter_index.mask(filter), scores, np.float32(-np.inf))

    def top_k(self, scores: np.ndarray, k: int) -> list[ScoredId]:
        """The ``k`` best rows of a :meth:`score_all` result that matched at least one term."""
        positive = np.flatnonzero(scores > 0)
        if positive.size > k:
            # Keep everything tied with the k-th score: identical token bags are common, and which of
            # them survive the cut must not depend on k or on partition order.
            kth = np.partition(scores[positive], positive.size - k)[positive.size - k]
            positive = positive[scores[positive] >= kth]
        # Ties break by chunk id, as fusion's do, so alpha=0 reproduces this order exactly.
        order = sorted(positive.tolist(), key=lambda i: (-scores[i], self.chunk_ids[i]))[:k]
        return [ScoredId(self.chunk_ids[i], float(scores[i])) for i in order]

    def search(self, query: str, k: int, filter: Filter | None = None) -> list[ScoredId]:
        """The ``k`` highest-scoring chunks matching ``filter`` (only chunks sharing a term with the query)."""
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        return self.top_k(self.score_all(query, filter), k)

    def scores_of(self, scores: np.ndarray, chunk_ids: Sequence[str]) -> dict[str, float]:
        """Look up rows of a :meth:`score_all` result by chunk id (unknown ids are left out)."""
        out: dict[str, float] = {}
        for cid in chunk_ids:
            row = self._position.get(cid)
            if row is not None and np.isfinite(scores[row]):
                out[cid] = float(scores[row])
        return out

    # -- persistence ------------------------------------------------------------------------------

    def save(self, folder: Path, generation: int) -> None:
        """Write the index as ``folder/gen-N`` and switch ``folder/CURRENT`` to it atomically.

        Another writer may save concurrently (two processes rebuilding after the same commit): a
        generation is written to a private temporary folder and renamed into place, ``CURRENT`` only
        ever moves forward, and only generations older than the one ``CURRENT`` named before are
        deleted, so a save never removes a newer generation, nor the one a reader may be loading.

        Raises:
            StorageError: the files cannot be written (disk full, read-only folder); the previous
                generation stays current.
        """
        try:
            self._save(folder, generation)
        except OSError as exc:
            raise StorageError(describe_os_error(exc, folder)) from None
        self.generation = generation

    def _save(self, folder: Path, generation: int) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / _generation_name(generation)
        tmp = folder / f"{target.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            tmp.mkdir()
            if self.chunk_ids:
                self._model.save(str(tmp / "bm25s"), show_progress=False)
            metadata = self._metadata() if callable(self._metadata) else self._metadata
            with open(tmp / "rows.jsonl", "w", encoding="utf-8") as fh:
                for cid, meta in zip(self.chunk_ids, metadata):
                    fh.write(json.dumps([cid, meta], ensure_ascii=False) + "\n")
            (tmp / "params.json").write_text(
                json.dumps({"method": self.method, "k1": self.k1, "b": self.b, **self.analyzer.config()})
            )
            try:
                os.rename(tmp, target)
            except OSError:
                if not target.is_dir():  # not "another writer saved this generation first"
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        previous = _current_generation(folder)
        if previous is None or previous < generation:
            pointer = folder / f"{_CURRENT}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            pointer.write_text(target.name)
            os.replace(pointer, folder / _CURRENT)
        keep_from = min(generation, previous if previous is not None else generation)
        for old in folder.glob("gen-*"):
            number = _parse_generation(old.name)
            if number is not None and number < keep_from:
                shutil.rmtree(old, ignore_errors=True)

    @classmethod
    def load(cls, folder: Path, analyzer: Analyzer, method: str, k1: float, b: float) -> BM25Index | None:
        """Load the current generation, or ``None`` if absent, built with other parameters, or unreadable.

        The index is derived from the catalog, so an unreadable one is not an error: the caller rebuilds it.
        """
        bm25s = _import_bm25s()

        try:
            target = folder / (folder / _CURRENT).read_text().strip()
            params = json.loads((target / "params.json").read_text())
        except (OSError, ValueError):
            return None
        wanted = {"method": method, "k1": k1, "b": b, **analyzer.config()}
        if params != wanted:
            log.info("BM25 parameters changed (%s -> %s); it will be rebuilt", params, wanted)
            return None
        index = cls(method, k1, b, analyzer)
        rows_path = target / "rows.jsonl"
        try:
            with open(rows_path, encoding="utf-8") as fh:
                index.chunk_ids = [json.loads(line)[0] for line in fh]
            if index.chunk_ids:
                index._model = bm25s.BM25.load(str(target / "bm25s"), mmap=False, show_progress=False)
            else:
                index._model = bm25s.BM25(method=method, k1=k1, b=b)
        except Exception as exc:  # noqa: BLE001 - numpy, json and zip errors alike: a derived file to rebuild
            log.warning("BM25 index in %s is unreadable (%s); rebuilding it from the catalog", target, exc)
            return None
        generation = _parse_generation(target.name)
        if generation is None:
            return None
        index._position = {cid: i for i, cid in enumerate(index.chunk_ids)}

        def read_metadata() -> list[dict[str, Any]]:  # only when a filter is first used
            with open(rows_path, encoding="utf-8") as fh:
                return [json.loads(line)[1] for line in fh]

        index._metadata = read_metadata
        index.generation = generation
        return index


def _generation_name(generation: int) -> str:
    return f"gen-{generation:08d}"


def _parse_generation(name: str) -> int | None:
    """The number of a ``gen-N`` folder name; ``None`` for anything else (temporary folders)."""
    digits = name.removeprefix("gen-")
    return int(digits) if name.startswith("gen-") and digits.isdigit() else None


def _current_generation(folder: Path) -> int | None:
    try:
        return _parse_generation((folder / _CURRENT).read_text().strip())
    except OSError:
        return None
