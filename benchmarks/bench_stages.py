"""Retrieval stages: nDCG@10, recall@100 and added latency of HyDE, rewriting, multi-query and reranking,
against the plain hybrid search in the same run, with paired significance tests.

Every row runs the same judged queries of ``nfcorpus`` and ``dbpedia`` through ``RagEngine.retrieve`` at
the shipped defaults, switching stages on one at a time and in a few combinations. The LLM is the
offline default (the packaged SmolLM2-135M on the embedded llama.cpp server), or the endpoint in
``RAG_LLM__BASE_URL`` when it is set (the model name is recorded). The cross-encoder is the one
``benchmarks/build_cross_encoder.py`` trains from the packaged MiniLM on synthetic title→text pairs of
NFCorpus (no cross-encoder ships; pass ``--cross-encoder`` to measure a real one). The stage cache is off,
so every row pays for its own LLM calls and the latency column is honest.

As in ``bench_quality``: each query asks for 100 hits with ``max_per_doc=1`` (a document's best chunk
stands for it); per-query nDCG@10 feeds a two-sided paired randomization test and a bootstrap 95 % CI of
the difference with the plain hybrid. A stage "helps" only where p < 0.05 and the mean rises. Latency is
the added mean milliseconds per query over the plain row.

    python -m benchmarks.bench_stages [--datasets nfcorpus dbpedia] [--limit 80] [--llm-rerank-limit 30]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from typing import Any

from benchmarks.common import (
    CACHE,
    engine_for,
    judged_queries,
    load_average,
    mean,
    ndcg_at,
    recall_at,
    table,
    write_result,
)
from rag.evaluate.significance import paired_bootstrap_ci, paired_randomization_test

DEPTH = 100
SIGNIFICANCE = 0.05
DEFAULT_CE = CACHE / "cross-encoder-minilm-nfcorpus"

ROWS: list[tuple[str, dict[str, Any]]] = [
    ("plain hybrid (default)", {}),
    ("HyDE", {"hyde": True}),
    ("rewrite", {"rewrite": True}),
    ("multi-query 3", {"multi_query": 3}),
    ("rerank: cross-encoder", {"rerank": "CE"}),
    ("HyDE + rerank: cross-encoder", {"hyde": True, "rerank": "CE"}),
    ("rewrite + multi-query 3 + HyDE", {"rewrite": True, "multi_query": 3, "hyde": True}),
    ("rerank: LLM (pointwise)", {"rerank": "llm"}),  # on the first --llm-rerank-limit queries only
]


def compare(a: list[float], b: list[float], trials: int) -> dict[str, Any]:
    p = paired_randomization_test(a, b, trials=trials)
    low, high = paired_bootstrap_ci(a, b, trials=trials)
    diff = mean(a) - mean(b)
    if p >= SIGNIFICANCE:
        verdict = "no significant difference"
    else:
        verdict = "helps" if diff > 0 else "hurts"
    return {"mean_difference": diff, "ci95": [low, high], "p_value": p, "verdict": verdict}


def evaluate(name: str, limit: int | None, llm_limit: int, cross_encoder: str, trials: int) -> dict[str, Any]:
    judged, qrels = judged_queries(name, limit)
    queries = list(judged.items())
    engine = engine_for(name, retrieval={"stage_cache": False})
    llm = engine.settings.llm
    for _, text in queries:  # warm: the model, BM25, the query encoder, the LLM server and the reranker
        engine.retrieve(text, DEPTH, max_per_doc=1)
    engine.retrieve(queries[0][1], 1, rewrite=True, rerank=cross_encoder)

    rows = []
    for label, stages in ROWS:
        stages = {k: (cross_encoder if v == "CE" else v) for k, v in stages.items()}
        subset = queries[:llm_limit] if stages.get("rerank") == "llm" else queries
        ndcgs, recalls, ms, fallbacks = [], [], [], 0
        started = time.perf_counter()
        for number, (qid, text) in enumerate(subset, start=1):
            t0 = time.perf_counter()
            found = engine.retrieve(text, DEPTH, max_per_doc=1, **stages)
            ms.append((time.perf_counter() - t0) * 1000)
            fallbacks += len(found.warnings)
            ranked = [h.chunk.doc_id for h in found.hits]
            ndcgs.append(ndcg_at(ranked, qrels[qid]))
            recalls.append(recall_at(ranked, qrels[qid], DEPTH))
            print(f"\r[{name}] {label}: {number}/{len(subset)}", end="", file=sys.stderr, flush=True)
        print(f"  ({time.perf_counter() - started:.0f} s)", file=sys.stderr)
        rows.append({"method": label, "stages": stages, "queries": len(subset), "ndcg@10": mean(ndcgs),
                     "recall@100": mean(recalls), "ms_per_query": mean(ms), "fallbacks": fallbacks,
                     "per_query": {"ndcg@10": ndcgs, "recall@100": recalls, "ms": ms}})
    plain = rows[0]
    for row in rows[1:]:
        n = row["queries"]
        base = plain["per_query"]
        row["vs_plain"] = {
            "ndcg@10": compare(row["per_query"]["ndcg@10"], base["ndcg@10"][:n], trials),
            "recall@100": compare(row["per_query"]["recall@100"], base["recall@100"][:n], trials),
            "added_ms": row["ms_per_query"] - mean(base["ms"][:n]),
        }
    status = engine.status()
    engine.close()
    return {
        "dataset": name, "queries": len(queries), "llm_rerank_queries": min(llm_limit, len(queries)),
        "chunks": status["chunks"], "llm": {"base_url": llm.base_url or "embedded llama.cpp", "model": llm.model},
        "cross_encoder": cross_encoder, "rerank_top_n": engine.settings.rerank.top_n,
        "stage_max_tokens": engine.settings.retrieval.stage_max_tokens, "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "dbpedia"])
    parser.add_argument("--limit", type=int, default=80, help="The first N judged queries of each set.")
    parser.add_argument("--llm-rerank-limit", type=int, default=30, help="Queries for the LLM-reranking row.")
    parser.add_argument("--cross-encoder", default=str(DEFAULT_CE), help="CrossEncoder id or folder.")
    parser.add_argument("--trials", type=int, default=10000)
    args = parser.parse_args()
    if args.cross_encoder == str(DEFAULT_CE) and not DEFAULT_CE.exists():
        sys.exit(f"{DEFAULT_CE} is missing: run `python -m benchmarks.build_cross_encoder` first")
    load = load_average()
    results = [evaluate(n, args.limit, args.llm_rerank_limit, args.cross_encoder, args.trials) for n in args.datasets]
    for result in results:
        print(f"\n## {result['dataset']}: {result['queries']} queries ({result['llm_rerank_queries']} for LLM "
              f"reranking), LLM {result['llm']['model']} ({result['llm']['base_url']})\n")
        rows = []
        for row in result["rows"]:
            test = row.get("vs_plain")
            rows.append([
                row["method"], row["queries"], row["ndcg@10"], row["recall@100"],
                "-" if test is None else f"{test['ndcg@10']['mean_difference']:+.4f}",
                "-" if test is None else f"{test['ndcg@10']['p_value']:.4f}",
                "-" if test is None else test["ndcg@10"]["verdict"],
                f"{row['ms_per_query']:.0f}", "-" if test is None else f"{test['added_ms']:+.0f}", row["fallbacks"],
            ])
        print(table(["method", "queries", "nDCG@10", "recall@100", "ΔnDCG", "p", "verdict", "ms/query",
                     "added ms", "fallbacks"], rows))
    path = write_result("stages", {"results": results, "load_average_at_start": load,
                                   "llm_base_url": os.environ.get("RAG_LLM__BASE_URL")})
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
