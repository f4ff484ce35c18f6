"""Contextual chunk text (``chunking.context_prefix``) and neighbouring context (``generation.expand``).

**Prefix.** Each dataset is ingested twice by the real pipeline, without and with the prefix, at the
shipped retrieval settings, and every judged query is searched in both (``k=10``, ``max_per_doc=1``, so a
document's best chunk stands for it): nDCG@10 and recall@10 per query, paired randomization test
(two-sided) and paired bootstrap 95 % CI of the difference. Datasets: ``nfcorpus`` and ``dbpedia``
(``RAG_BENCH_DATA``; JSONL, a title per record and no headings) and ``docs_qa``: the bundled
``evaluate/testsets/docs_qa.jsonl`` over this repository's ``docs/`` (Markdown with headings), relevant
documents from its ``reference_doc_ids`` (grade 1).

Vectors are a function of the text embedded, so the second ingest of a dataset takes the vector of every
text the first one embedded from a cache instead of embedding it again (:class:`CachedEmbedder`); only
chunks that gain a prefix are embedded. This changes the run time, not a number.

**Expansion.** Retrieval is untouched by ``generation.expand``, so what is measured is the context handed
to the generator: for each docs_qa question the engine's hits (``retrieval.k``) are widened as ``ask``
widens them and packed into ``llm.context_tokens`` by the real prompt builder; *token recall* is the share
of the reference answer's distinct content words (lower-cased, BM25's English stop words removed) found in
that context. Rows: ``none`` (the default), ``neighbours``, ``section``, and ``none`` with twice as many
hits, a control that fills the same budget with more retrieved chunks instead of neighbours. Paired tests
against ``none``, and of each widening against the control. The context size (tokens) is reported
beside, since more text covers more words.

    python -m benchmarks.bench_context [--datasets docs_qa nfcorpus dbpedia] [--limit N] [--trials 10000]
        [--no-expand] [--out context]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    CACHE,
    ROOT,
    add_quality_arguments,
    dataset,
    judged_queries,
    mean,
    ndcg_at,
    recall_at,
    table,
    write_result,
)
from rag.core.errors import IndexMismatchError
from rag.core.settings import RetrievalSettings, load_settings
from rag.core.types import indexed_text
from rag.engine import RagEngine
from rag.evaluate.significance import paired_bootstrap_ci, paired_randomization_test
from rag.generate.prompt import build_messages

K = 10
SIGNIFICANCE = 0.05
REPO = ROOT.parent
DOCS_QA = REPO / "evaluate" / "testsets" / "docs_qa.jsonl"
EXPAND_ROWS = [("none", 1), ("neighbours", 1), ("section", 1), ("none", 2)]
_WORD = re.compile(r"\w+")


class CachedEmbedder:
    """The engine's embedder, with the vectors of texts embedded before taken from ``cache`` (same model)."""

    def __init__(self, inner: Any, cache: dict[str, np.ndarray]) -> None:
        self._inner = inner
        self.cache = cache
        self.embedded = 0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        todo = sorted({t for t in texts if t not in self.cache})
        if todo:
            for text, vector in zip(todo, self._inner.encode(todo), strict=True):
                self.cache[text] = vector
            self.embedded += len(todo)
        if not texts:
            return self._inner.encode(texts)
        return np.stack([self.cache[t] for t in texts])


def compare(label: str, a: Sequence[float], b: Sequence[float], trials: int) -> dict[str, Any]:
    """Paired test of ``a`` against ``b``; "better"/"worse" only at p < 0.05."""
    p = paired_randomization_test(a, b, trials=trials)
    low, high = paired_bootstrap_ci(a, b, trials=trials)
    diff = mean(a) - mean(b)
    verdict = "no significant difference" if p >= SIGNIFICANCE else ("better" if diff > 0 else "worse")
    return {"comparison": label, "mean_difference": diff, "ci95": [low, high], "p_value": p, "verdict": verdict}


def corpus_of(name: str) -> tuple[list[Path], Path, dict[str, str], dict[str, dict[str, int]]]:
    """``(paths to ingest, project root, queries, qrels)`` of a dataset."""
    if name == "docs_qa":
        queries, qrels = {}, {}
        for line in DOCS_QA.read_text(encoding="utf-8").splitlines():
            case = json.loads(line)
            if case.get("reference_doc_ids"):
                queries[case["id"]] = case["question"]
                qrels[case["id"]] = dict.fromkeys(case["reference_doc_ids"], 1)
        return [REPO / "docs"], REPO, queries, qrels
    queries, qrels = judged_queries(name)
    return [dataset(name) / "corpus.jsonl"], dataset(name), queries, qrels


def engine_for(name: str, prefix: bool, cache: dict[str, np.ndarray], **overrides: Any) -> tuple[RagEngine, dict]:
    """An engine over ``benchmarks/.cache/context-<name>-<on|off>``, ingested (incrementally) first."""
    paths, root, _, _ = corpus_of(name)
    data_dir = CACHE / f"context-{name}-{'on' if prefix else 'off'}"
    settings = load_settings(data_dir=data_dir, chunking={"context_prefix": prefix}, **overrides)
    if settings.retrieval != RetrievalSettings():
        sys.exit("retrieval settings differ from the shipped defaults; unset RAG_RETRIEVAL__* and move rag.toml away")
    engine = RagEngine(settings, project_root=root)
    embedder = CachedEmbedder(engine.embedder, cache)
    engine.embedder = embedder
    started = time.perf_counter()
    try:
        report = engine.ingest(paths)
    except IndexMismatchError:  # an index left by an older run of another shape: start over
        report = engine.ingest(paths, rebuild=True)
    seconds = time.perf_counter() - started
    if not cache or report.chunks_added:  # fill the cache from what the store holds (a run that embedded nothing)
        rows = engine.catalog.chunk_rows()
        meta = dict(zip(rows.ids, rows.metadata))
        texts = dict(zip(rows.ids, rows.texts))
        for cid, vector in engine.store.get_vectors(rows.ids).items():
            cache.setdefault(indexed_text(texts[cid], meta[cid]), vector)
    prefixed = sum(1 for m in engine.catalog.chunk_rows().metadata if m.get("context_prefix"))
    info = {
        "chunks": engine.status()["chunks"], "chunks_with_prefix": prefixed, "embedded_this_run": embedder.embedded,
        "ingest_seconds": round(seconds, 1),
    }
    print(f"[{name} prefix={'on' if prefix else 'off'}] {info}", file=sys.stderr)
    return engine, info


def ranked_docs(engine: RagEngine, query: str) -> list[str]:
    return [hit.chunk.doc_id for hit in engine.search(query, K, max_per_doc=1)]


def prefix_benchmark(name: str, limit: int | None, trials: int) -> dict[str, Any]:
    _, _, queries, qrels = corpus_of(name)
    if limit:
        queries = dict(list(queries.items())[:limit])
    cache: dict[str, np.ndarray] = {}
    scores: dict[str, dict[str, list[float]]] = {}
    indexes = {}
    for prefix in (False, True):
        engine, info = engine_for(name, prefix, cache)
        label = "prefix" if prefix else "no prefix"
        indexes[label] = info
        with engine:
            ndcg, recall = [], []
            for qid, text in queries.items():
                ranked = ranked_docs(engine, text)
                ndcg.append(ndcg_at(ranked, qrels[qid], K))
                recall.append(recall_at(ranked, qrels[qid], K))
        scores[label] = {"ndcg@10": ndcg, "recall@10": recall}
    comparisons = [
        compare(f"prefix vs no prefix, {metric}", scores["prefix"][metric], scores["no prefix"][metric], trials)
        for metric in ("ndcg@10", "recall@10")
    ]
    return {
        "dataset": name, "queries": len(queries), "indexes": indexes,
        "rows": [
            {"config": label, "ndcg@10": mean(values["ndcg@10"]), "recall@10": mean(values["recall@10"])}
            for label, values in scores.items()
        ],
        "comparisons": comparisons,
        "per_query": scores,
    }


def content_words(text: str, stopwords: frozenset[str]) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in stopwords}


def expand_benchmark(limit: int | None, trials: int) -> dict[str, Any]:
    from bm25s.stopwords import STOPWORDS_EN

    stopwords = frozenset(STOPWORDS_EN)
    cases = [json.loads(line) for line in DOCS_QA.read_text(encoding="utf-8").splitlines()]
    cases = [c for c in cases if c.get("reference")][: limit or None]
    engine, _ = engine_for("docs_qa", False, {})
    budget, k = engine.settings.llm.context_tokens, engine.settings.retrieval.k
    recall: dict[str, list[float]] = {}
    size: dict[str, list[int]] = {}
    with engine:
        for case in cases:
            reference = content_words(case["reference"], stopwords)
            wide = engine.search(case["question"], 2 * k)
            for mode, factor in EXPAND_ROWS:
                label = mode if factor == 1 else f"none, {factor * k} hits"
                hits = engine.expand(wide[: factor * k], mode)
                _, used = build_messages(case["question"], hits, budget_tokens=budget, count_tokens=engine.count_tokens)
                context = "\n\n".join(hit.context_text for hit in used)
                recall.setdefault(label, []).append(len(reference & content_words(context, stopwords)) / len(reference))
                size.setdefault(label, []).append(engine.count_tokens(context))
    baseline = recall["none"]
    control = f"none, {2 * k} hits"
    return {
        "dataset": "docs_qa", "questions": len(cases), "k": k, "context_tokens": budget,
        "rows": [
            {"expand": label, "token_recall": mean(values), "context_tokens_mean": mean(size[label])}
            for label, values in recall.items()
        ],
        "comparisons": [
            *(compare(f"{label} vs none, token recall", values, baseline, trials)
              for label, values in recall.items() if label != "none"),
            # Does widening beat filling the same budget with more retrieved chunks?
            *(compare(f"{label} vs {control}, token recall", recall[label], recall[control], trials)
              for label in ("neighbours", "section")),
        ],
        "per_query": recall,
    }


def _print_comparisons(comparisons: list[dict[str, Any]]) -> None:
    print(table(
        ["comparison", "diff", "95% CI", "p", "verdict"],
        [[c["comparison"], c["mean_difference"], f"[{c['ci95'][0]:+.4f}, {c['ci95'][1]:+.4f}]", c["p_value"],
          c["verdict"]] for c in comparisons],
    ))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    add_quality_arguments(parser)
    parser.set_defaults(datasets=["docs_qa", "nfcorpus", "dbpedia"])
    parser.add_argument("--no-expand", action="store_true", help="Skip the expansion measurement.")
    parser.add_argument("--out", default="context", help="Name of the JSON in benchmarks/results/.")
    args = parser.parse_args()
    results: dict[str, Any] = {
        "datasets": args.datasets, "prefix": [], "expand": None, "limit": args.limit, "trials": args.trials,
    }
    # The expansion runs on the docs_qa index without prefix, so right after docs_qa (or first without it);
    # the JSON is written after every step, so a run stopped early keeps what it measured.
    steps = list(args.datasets)
    if not args.no_expand:
        steps.insert(steps.index("docs_qa") + 1 if "docs_qa" in steps else 0, "expand")
    for step in steps:
        if step == "expand":
            result = expand_benchmark(args.limit, args.trials)
            results["expand"] = result
            print(f"\ndocs_qa expansion: {result['questions']} questions, k={result['k']}, "
                  f"budget {result['context_tokens']} tokens")
            print(table(["expand", "token recall", "context tokens"],
                        [[r["expand"], r["token_recall"], r["context_tokens_mean"]] for r in result["rows"]]))
            _print_comparisons(result["comparisons"])
        else:
            result = prefix_benchmark(step, args.limit, args.trials)
            results["prefix"].append(result)
            indexes = result["indexes"]["prefix"]
            print(f"\n{step}: {result['queries']} queries, {indexes['chunks_with_prefix']} of {indexes['chunks']} "
                  "chunks with a prefix")
            print(table(["config", "nDCG@10", "recall@10"],
                        [[r["config"], r["ndcg@10"], r["recall@10"]] for r in result["rows"]]))
            _print_comparisons(result["comparisons"])
        path = write_result(args.out, results)
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
