"""Retrieval quality: nDCG@10 and recall@100 for BM25-only, dense-only, hybrid alpha 0.0-1.0 and RRF.

Hybrid rows use the configured confidence weighting (``retrieval.confidence_power``); one row shows
plain fixed-weight linear fusion for comparison. Runs on ``nfcorpus`` (BM25-friendly) and ``dbpedia``
(dense-friendly) through the real engine, with a
``rank_bm25`` baseline over whole documents computed in the same run. Chunk hits are mapped to their
document (best chunk wins, via ``max_per_doc=1``). The goal: the default hybrid setting beats both
BM25-only and dense-only on both sets.

    python -m benchmarks.bench_quality [--datasets nfcorpus dbpedia] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from functools import lru_cache

from rank_bm25 import BM25Okapi

from benchmarks.common import (
    engine_for, mean, ndcg_at, read_corpus, read_qrels, read_queries, recall_at, table, write_result,
)
from rag.core.settings import RetrievalSettings

ALPHAS = [round(a * 0.1, 1) for a in range(11)]
DEPTH = 100


def evaluate(name: str, limit: int | None) -> dict:
    qrels = read_qrels(name)
    queries = {qid: text for qid, text in read_queries(name).items() if qid in qrels}
    if limit:
        queries = dict(list(queries.items())[:limit])
    # Doc-level recall@100 needs more than 100 chunk candidates once chunks are folded into documents.
    engine = engine_for(name, retrieval={"candidates": 3 * DEPTH})
    retriever = engine.retriever
    retriever.embed_query = lru_cache(maxsize=None)(engine.embedder.encode_query)  # embed each query once
    for text in queries.values():  # up front, so no row's timing pays for embedding
        retriever.embed_query(text)
    default_alpha = RetrievalSettings().alpha

    def run(label: str, power: float | None = None, **kwargs) -> dict:
        retriever.confidence_power = engine.settings.retrieval.confidence_power if power is None else power
        started = time.perf_counter()
        ndcgs, recalls = [], []
        for qid, text in queries.items():
            hits = engine.search(text, DEPTH, max_per_doc=1, **kwargs)
            ranked = [h.chunk.doc_id for h in hits]
            ndcgs.append(ndcg_at(ranked, qrels[qid]))
            recalls.append(recall_at(ranked, qrels[qid], DEPTH))
        ms = (time.perf_counter() - started) * 1000 / len(queries)
        return {"method": label, "ndcg@10": mean(ndcgs), "recall@100": mean(recalls), "ms_per_query": ms, **kwargs}

    rows = [run("dense only", alpha=1.0), run("BM25 only", alpha=0.0)]
    rows += [run(f"hybrid alpha={a}", alpha=a, fusion="linear") for a in ALPHAS[1:-1]]
    rows.append(run(f"fixed-weight linear alpha={default_alpha} (confidence_power=0)", power=0.0, alpha=default_alpha))
    rows.append(run("RRF (k=60)", alpha=0.5, fusion="rrf"))

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
    rows.append({"method": "rank_bm25 baseline (docs)", "ndcg@10": mean(ndcgs), "recall@100": mean(recalls)})

    by_label = {r["method"]: r for r in rows}
    default = by_label.get(f"hybrid alpha={default_alpha}")
    goal = (
        default is not None
        and default["ndcg@10"] > by_label["dense only"]["ndcg@10"]
        and default["ndcg@10"] > by_label["BM25 only"]["ndcg@10"]
    )
    status = engine.status()
    engine.close()
    return {
        "dataset": name, "queries": len(queries), "chunks": status["chunks"], "documents": status["documents"],
        "default_alpha": default_alpha, "default_beats_both": goal, "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "dbpedia"])
    parser.add_argument("--limit", type=int, default=None, help="Only the first N judged queries (smoke runs).")
    args = parser.parse_args()
    results = []
    for name in args.datasets:
        result = evaluate(name, args.limit)
        results.append(result)
        print(f"\n## {name}: {result['queries']} queries, {result['documents']} documents, {result['chunks']} chunks\n")
        print(table(
            ["method", "nDCG@10", "recall@100", "ms/query (excl. embedding)"],
            [[r["method"], r["ndcg@10"], r["recall@100"], r.get("ms_per_query", "-")] for r in result["rows"]],
        ))
        verdict = "meets" if result["default_beats_both"] else "MISSES"
        print(f"\ndefault alpha={result['default_alpha']} {verdict} the goal (beats BM25-only and dense-only)")
    path = write_result("quality", {"results": results})
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
