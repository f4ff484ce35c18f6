"""Shared pieces of the benchmarks: BEIR data, cached indexes built by the real pipeline, metrics, output.

Datasets are read from ``../shared/data/<name>/`` (BEIR layout) and never copied into the project.
Indexes are ingested with ``rag`` itself into ``benchmarks/.cache/<name>``; incremental ingest makes the
second run of any benchmark skip the embedding work.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

from rag.core.settings import RetrievalSettings, load_settings
from rag.engine import RagEngine
from rag.evaluate.retrieval_metrics import ndcg_at, recall_at  # also re-exported for the scripts

ROOT = Path(__file__).resolve().parent
DATA = Path(os.environ.get("RAG_BENCH_DATA", ROOT.parent.parent / "shared" / "data"))
CACHE = ROOT / ".cache"
RESULTS = ROOT / "results"


def dataset(name: str) -> Path:
    """The dataset folder, or exit with a clear message when the shared data is absent."""
    folder = DATA / name
    if not (folder / "corpus.jsonl").is_file():
        sys.exit(f"benchmark data not found at {folder}; set RAG_BENCH_DATA to the folder holding {name}/")
    return folder


def read_queries(name: str) -> dict[str, str]:
    with open(dataset(name) / "queries.jsonl", encoding="utf-8") as fh:
        return {str(q["_id"]): q["text"] for q in map(json.loads, fh)}


def read_qrels(name: str) -> dict[str, dict[str, int]]:
    """``query id -> {doc id: graded relevance}`` from ``qrels/test.tsv`` (see :func:`parse_qrels`)."""
    return parse_qrels(dataset(name) / "qrels" / "test.tsv")


def parse_qrels(path: Path) -> dict[str, dict[str, int]]:
    """``query id -> {doc id: graded relevance > 0}`` from a BEIR qrels file (``query-id``, ``corpus-id``,
    ``score``, tab-separated).

    The first line is a header only when its score column is not an integer (BEIR's ``score``); a
    headerless file's first line is a judgment like the others, so it is never skipped blindly. Blank lines
    are ignored.

    Raises:
        ValueError: a line after the header has not three columns or its score is not an integer (with the
            file and line number).
    """
    qrels: dict[str, dict[str, int]] = {}
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if number == 1 and len(fields) == 3 and not _is_int(fields[2]):
                continue  # the header
            if len(fields) != 3 or not _is_int(fields[2]):
                raise ValueError(f"{path}:{number}: expected 'query-id<TAB>corpus-id<TAB>integer score', got {line!r}")
            qid, did, score = fields[0], fields[1], int(fields[2])
            if score > 0:
                qrels.setdefault(qid, {})[did] = score
    return qrels


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_corpus(name: str) -> list[dict[str, Any]]:
    with open(dataset(name) / "corpus.jsonl", encoding="utf-8") as fh:
        return [json.loads(line) for line in fh]


def engine_for(name: str, **overrides: Any) -> RagEngine:
    """An engine over ``benchmarks/.cache/<name>``, ingesting the corpus first if needed."""
    data_dir = CACHE / name
    engine = RagEngine(load_settings(data_dir=data_dir, **overrides), project_root=dataset(name))
    started = time.perf_counter()
    report = engine.ingest([dataset(name) / "corpus.jsonl"])
    if report.chunks_added:
        print(f"[{name}] ingested {report.chunks_added} chunks in {time.perf_counter() - started:.0f} s", file=sys.stderr)
    return engine


def judged_queries(name: str, limit: int | None = None) -> tuple[dict[str, str], dict[str, dict[str, int]]]:
    """The queries of ``name`` that have relevance judgements (the first ``limit`` of them), and the judgements."""
    qrels = read_qrels(name)
    queries = {qid: text for qid, text in read_queries(name).items() if qid in qrels}
    if limit:
        queries = dict(list(queries.items())[:limit])
    return queries, qrels


def shipped_engine(name: str) -> RagEngine:
    """:func:`engine_for` at the shipped retrieval settings; exits if a ``RAG_RETRIEVAL__*`` variable or a
    ``rag.toml`` changed them, since the quality benchmarks measure the defaults."""
    engine = engine_for(name)
    if engine.settings.retrieval != RetrievalSettings():
        sys.exit(f"retrieval settings differ from the shipped defaults ({engine.settings.retrieval}); "
                 "unset RAG_RETRIEVAL__* and move rag.toml away to measure the defaults")
    return engine


def add_quality_arguments(parser: argparse.ArgumentParser) -> None:
    """``--datasets``, ``--limit`` and ``--trials``, as every quality benchmark takes them."""
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "dbpedia"])
    parser.add_argument("--limit", type=int, default=None, help="Only the first N judged queries (smoke runs).")
    parser.add_argument("--trials", type=int, default=10000, help="Randomization and bootstrap trials.")


def load_average() -> list[float]:
    """The 1-, 5- and 15-minute load averages (empty where the OS does not report them)."""
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return []


def wait_for_quiet(max_load: float, max_wait_s: float, poll_s: float = 15.0) -> dict[str, Any]:
    """Wait until the 1-minute load average is below ``max_load`` (at most ``max_wait_s`` seconds).

    Timings on a small machine move with whatever else runs on it, so latency runs start when it is
    quiet if they can. Returns what happened, for the result JSON: the load at the start and at the end
    of the wait, the seconds waited and whether the machine got quiet in time.
    """
    started, first = time.monotonic(), load_average()
    while True:
        now = load_average()
        quiet = not now or now[0] < max_load
        waited = time.monotonic() - started
        if quiet or waited >= max_wait_s:
            return {
                "max_load": max_load, "load_before": first, "load_after": now, "waited_s": round(waited),
                "quiet": quiet,
            }
        print(f"waiting for a quiet machine: 1-minute load {now[0]} >= {max_load} ({waited:.0f} s)", file=sys.stderr)
        time.sleep(poll_s)


def take_turns(
    searches: Sequence[Callable[[str], list[str]]],
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
    depth: int,
    on_query: Callable[[int], None] | None = None,
) -> list[dict[str, list[float]]]:
    """Run every search on every query, the searches taking turns query by query (so load drifts hit them
    alike); per search, the per-query nDCG@10, recall@``depth``, milliseconds and documents returned.

    ``search(text)`` returns ranked document ids; ``on_query(n)`` is called after the n-th query.
    """
    per_query: list[dict[str, list[float]]] = [{"ndcg@10": [], "recall@100": [], "ms": [], "docs": []} for _ in searches]
    for done, (qid, text) in enumerate(queries.items(), start=1):
        for search, record in zip(searches, per_query):
            started = time.perf_counter()
            ranked = search(text)
            record["ms"].append((time.perf_counter() - started) * 1000)
            record["ndcg@10"].append(ndcg_at(ranked, qrels[qid]))
            record["recall@100"].append(recall_at(ranked, qrels[qid], depth))
            record["docs"].append(len(ranked))
        if on_query is not None:
            on_query(done)
    return per_query


def mean(values: Iterable[float]) -> float:
    values = list(values)
    return sum(values) / len(values) if values else 0.0


def percentile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q
    low, high = math.floor(pos), math.ceil(pos)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


# -- output ---------------------------------------------------------------------------------------


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A Markdown table (prints well in a terminal and pastes into docs)."""
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) for i, h in enumerate(headers)]
    line = lambda items: "| " + " | ".join(s.ljust(w) for s, w in zip(items, widths)) + " |"
    return "\n".join([line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, cells)])


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def write_result(name: str, payload: dict[str, Any]) -> Path:
    """Write ``benchmarks/results/<name>.json`` with the machine it ran on."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    payload = {
        "benchmark": name,
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "platform": platform.platform()},
        **payload,
    }
    path.write_text(json.dumps(payload, indent=2))
    return path
