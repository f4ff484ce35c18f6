"""Retrieval quality: nDCG@10 and recall@100 at the shipped defaults vs BM25-only, dense-only and variants.

Runs every judged query of ``nfcorpus`` (BM25-friendly) and ``dbpedia`` (dense-friendly) through the real
engine. The "default" row takes every retrieval setting from ``RetrievalSettings()`` (the script refuses
to run if a ``rag.toml`` or ``RAG_*`` variable changes one); the other rows change one thing each: alpha
(sweep 0.0-1.0), fixed-weight fusion (``confidence_power=0``), RRF, or ``candidates=300``. A
``rank_bm25`` baseline over whole documents is computed in the same run.

How the metrics are measured: each query asks the engine for 100 hits with ``max_per_doc=1``, so a
document's best chunk stands for it. The fused list holds at most ``candidates`` chunks per retriever,
and folding chunks into documents removes a document's lower chunks, so fewer than 100 documents can
come back; recall@100 is computed over whatever came back (the "docs" column is the average count).

Per-query nDCG@10 lists feed a paired randomization test (two-sided, sign flipping) and a paired
bootstrap 95 % CI of the mean difference for: default vs dense-only, default vs BM25-only,
candidates=300 vs default (also on recall@100), and default vs fixed-weight fusion (what confidence
weighting adds). "beats" is said only where p < 0.05 (p-values are not corrected for the several
comparisons). The goal: the default significantly beats both BM25-only and dense-only on both sets.

    python -m benchmarks.bench_quality [--datasets nfcorpus dbpedia] [--limit N] [--trials 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import lru_cache
from typing import Any

from rank_bm25 import BM25Okapi

from benchmarks.common import (
    add_quality_arguments,
    judged_queries,
    mean,
    ndcg_at,
    read_corpus,
    recall_at,
    shipped_engine,
    table,
    write_result,
)
from rag.core.settings import RetrievalSettings
from rag.evaluate.significance import paired_bootstrap_ci, paired_randomization_test

ALPHAS = [round(a * 0.1, 1) for a in range(11)]
DEPTH = 100
WIDE = 300  # the candidates value weighed against the default
SIGNIFICANCE = 0.05
WIDE_LABEL = f"default with candidates={WIDE}"


def compare(label: str, a: list[float], b: list[float], a_name: str, b_name: str, trials: int) -> dict:
    """Paired test of ``a`` against ``b`` (per-query scores); the verdict says "beats" only at p < 0.05."""
    p = paired_randomization_test(a, b, trials=trials)
    low, high = paired_bootstrap_ci(a, b, trials=trials)
    diff = mean(a) - mean(b)
    if p >= SIGNIFICANCE:
        verdict = f"{a_name} not significantly different from {b_name}"
    else:
        verdict = f"{a_name} beats {b_name}" if diff > 0 else f"{a_name} is worse than {b_name}"
    return {
        "comparison": label, "mean_difference": diff, "ci95": [low, high], "p_value": p,
        "beats": bool(p < SIGNIFICANCE and diff > 0), "verdict": verdict,
    }


def evaluate(name: str, limit: int | None, trials: int) -> dict:
    queries, qrels = judged_queries(name, limit)
    shipped = RetrievalSettings()
    engine = shipped_engine(name)
    retriever = engine.retriever
    retriever.embed_query = lru_cache(maxsize=None)(engine.embedder.encode_query)  # embed each query once
    for text in queries.values():  # up front, so no row's timing pays for embedding or first-use costs
        retriever.embed_query(text)
        engine.search(text, DEPTH, max_per_doc=1)

    def run(label: str, *, candidates: int = shipped.candidates, power: float = shipped.confidence_power,
            **kwargs: Any) -> dict:
        """One row: every query through ``engine.search``; unset arguments are the engine's defaults."""
        retriever.candidates, retriever.confidence_power = candidates, power
        started = time.perf_counter()
        ndcgs, recalls, returned = [], [], []
        for qid, text in queries.items():
            ranked = [h.chunk.doc_id for h in engine.search(text, DEPTH, max_per_doc=1, **kwargs)]
            ndcgs.append(ndcg_at(ranked, qrels[qid]))
            recalls.append(recall_at(ranked, qrels[qid], DEPTH))
            returned.append(len(ranked))
        ms = (time.perf_counter() - started) * 1000 / len(queries)
        retriever.candidates, retriever.confidence_power = shipped.candidates, shipped.confidence_power
        return {
            "method": label, "ndcg@10": mean(ndcgs), "recall@100": mean(recalls), "docs_returned": mean(returned),
            "ms_per_query": ms, "candidates": candidates, "confidence_power": power, **kwargs,
            "per_query": {"ndcg@10": ndcgs, "recall@100": recalls},
        }

    default = run("default")  # nothing overridden: RetrievalSettings() throughout
    rows = [run("dense only (alpha=1)", alpha=1.0), run("BM25 only (alpha=0)", alpha=0.0)]
    for a in ALPHAS[1:-1]:
        rows.append(default if a == shipped.alpha else run(f"hybrid alpha={a}", alpha=a))
    wide = run(WIDE_LABEL, candidates=WIDE)
    fixed = run(f"fixed-weight linear alpha={shipped.alpha} (confidence_power=0)", power=0.0)
    rows += [wide, fixed, run(f"RRF (k={shipped.rrf_k}), alpha={shipped.alpha}", fusion="rrf")]
    default["method"] = (f"**default** (linear, alpha={shipped.alpha}, confidence_power={shipped.confidence_power:g}, "
                         f"candidates={shipped.candidates})")

    # Baseline: rank_bm25 over whole documents with the same analyzer, in the same run.
    analyzer = engine.bm25.analyzer
    corpus = read_corpus(name)
    ids = [str(d["_id"]) for d in corpus]
    okapi = BM25Okapi([analyzer(f"{d.get('title', '')}\n\n{d['text']}") for d in corpus])
    ndcgs, recalls = [], []
    for qid, text in queries.items():
        scores = okapi.get_scores(analyzer(text))
        ranked = [ids[i] for i in scores.argsort()[::-1][:DEPTH]]
        ndcgs.append(ndcg_at(ranked, qrels[qid]))
        recalls.append(recall_at(ranked, qrels[qid], DEPTH))
    rows.append({"method": "rank_bm25 baseline (whole documents)", "ndcg@10": mean(ndcgs),
                 "recall@100": mean(recalls), "docs_returned": float(DEPTH),
                 "per_query": {"ndcg@10": ndcgs, "recall@100": recalls}})

    nd = lambda row: row["per_query"]["ndcg@10"]
    dense, bm25 = rows[0], rows[1]
    tests = [
        compare("nDCG@10: default - dense only", nd(default), nd(dense), "default", "dense only", trials),
        compare("nDCG@10: default - BM25 only", nd(default), nd(bm25), "default", "BM25 only", trials),
        compare(f"nDCG@10: candidates={WIDE} - default", nd(wide), nd(default), f"candidates={WIDE}", "default",
                trials),
        compare(f"recall@100: candidates={WIDE} - default", wide["per_query"]["recall@100"],
                default["per_query"]["recall@100"], f"candidates={WIDE}", "default", trials),
        compare("nDCG@10: default - fixed-weight", nd(default), nd(fixed), "default", "fixed-weight", trials),
    ]
    goal = tests[0]["beats"] and tests[1]["beats"]
    status = engine.status()
    engine.close()
    return {
        "dataset": name, "queries": len(queries), "query_ids": list(queries), "chunks": status["chunks"],
        "documents": status["documents"], "defaults": shipped.model_dump(), "depth": DEPTH,
        "default_beats_both": goal, "significance_level": SIGNIFICANCE, "trials": trials,
        "tests": tests, "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quality_arguments(parser)
    args = parser.parse_args()
    results = []
    for name in args.datasets:
        result = evaluate(name, args.limit, args.trials)
        results.append(result)
        print(f"\n## {name}: {result['queries']} queries, {result['documents']} documents, {result['chunks']} chunks\n")
        print(table(
            ["method", "nDCG@10", "recall@100", "docs", "ms/query (excl. embedding)"],
            [[r["method"], r["ndcg@10"], r["recall@100"], f"{r['docs_returned']:.1f}",
              f"{r['ms_per_query']:.1f}" if "ms_per_query" in r else "-"]
             for r in result["rows"]],
        ))
        print(f"\nPaired tests over {result['queries']} queries ({args.trials} trials; two-sided randomization "
              "p-value, bootstrap 95 % CI of the mean difference):\n")
        print(table(
            ["comparison", "mean diff", "95% CI", "p", "verdict"],
            [[t["comparison"], f"{t['mean_difference']:+.4f}", f"[{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]",
              f"{t['p_value']:.4f}", t["verdict"]] for t in result["tests"]],
        ))
        verdict = "meets" if result["default_beats_both"] else "MISSES"
        print(f"\nthe default {verdict} the goal (significantly beats BM25-only and dense-only, p < {SIGNIFICANCE})")
    path = write_result("quality", {"results": results})
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
