"""Native (in-engine) hybrid fusion against the local fusion: what it costs or gains in quality.

With ``retrieval.native_hybrid = "auto"`` (off by default, for what this measures), a store that holds its own keyword side and can
fuse (Qdrant with its sparse BM25 vector, OpenSearch) runs a hybrid search as one request and fuses in
the engine, without the local confidence weighting. This script measures the quality of each fusion on
every judged query of ``nfcorpus`` (BM25-friendly) and ``dbpedia`` (dense-friendly), all in one run and
at the shipped retrieval settings (``alpha = 0.5``, ``candidates = 100``, ``rrf_k = 60``):

1. **baseline**: the shipped default, FAISS flat + bm25s, local confidence-weighted linear fusion
   (``confidence_power = 3``);
2. **Qdrant native**: Qdrant's local mode with ``[store.options] sparse = true`` and
   ``native_hybrid = "auto"``: the real Query API request a Qdrant >= 1.17 server runs (dense and sparse
   BM25 prefetches, weighted RRF with ``k = 2 * rrf_k + 1`` and weights ``[alpha, 1 - alpha]``), executed
   by qdrant-client's in-process engine. The script checks that the retriever takes the native path;
3. **Qdrant sparse, local fusion**: the same store with ``native_hybrid = "off"``: Qdrant's sparse BM25
   (Lucene BM25 with a fixed ``avg_len`` of 80) as the keyword side, fused locally with confidence
   weighting. Row 2 against row 3 isolates the fusion method; row 3 against row 1 the keyword flavour;
4. **OpenSearch fusion, emulated**: NOT OpenSearch (no server runs here). :func:`opensearch_fusion`
   re-implements the neural-search normalization processor on the local sides (FAISS flat + bm25s, each
   asked for ``candidates`` hits): ``min_max`` per side over that side's own hits (the lowest hit maps to
   0.001, a side with one distinct score to 1.0), ``arithmetic_mean`` with weights ``[1 - alpha, alpha]``
   (keyword, dense), a chunk missing from one side counting 0 there. The dense score is the cosine, where
   OpenSearch normalises its ``_score`` (``1 + cosine`` for a positive one): the same order and, with
   every candidate's cosine positive, the same min-max. The analyzer and BM25 are bm25s', not Lucene's;
   4b. **fixed-weight local linear fusion**: the baseline with ``confidence_power = 0``, the local fusion
   without confidence weighting (what the emulation differs from by its normalisation only).

Qdrant's index is a copy of the FAISS index's chunks and vectors written through the real catalog and
Qdrant store by bench_backends' ``copied_engine`` (no re-embedding), into
``benchmarks/.cache/<name>-qdrant-sparse``; the store computes the sparse vectors from the chunk text as
an ingest would.

Protocol, as in bench_quality.py and bench_backends.py: each query asks for 100 hits with
``max_per_doc=1`` (a document's best chunk stands for it); nDCG@10 and recall@100 over the documents
that came back. Queries are embedded once and shared by every row. Per-query nDCG@10 and recall@100 of
each row feed a paired randomization test (two-sided, sign flipping) and a paired bootstrap 95 % CI of
the mean difference against the baseline, plus native against Qdrant-sparse-local-fusion (the fusion
alone). "worse"/"better" only where p < 0.05 (p-values not corrected for the several comparisons).

    python -m benchmarks.bench_native_fusion [--datasets nfcorpus dbpedia] [--limit N] [--trials 10000]

Writes ``benchmarks/results/native_fusion.json``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from benchmarks.bench_backends import compare, copied_engine
from benchmarks.common import (
    CACHE,
    add_quality_arguments,
    judged_queries,
    load_average,
    mean,
    percentile,
    shipped_engine,
    table,
    take_turns,
    write_result,
)
from rag.core.types import ScoredId
from rag.retrieve.hybrid import FusedScore, HybridRetriever, PostFilter

DEPTH = 100
SIGNIFICANCE = 0.05
OS_MIN_SCORE = 0.001  # neural-search's min_max maps a sub-query's lowest hit here, not to 0
BASELINE = "1. baseline: FAISS flat + bm25s, local fusion (shipped default)"
QDRANT_NATIVE = "2. Qdrant sparse BM25, native weighted RRF (native_hybrid=auto)"
QDRANT_LOCAL = "3. Qdrant sparse BM25, local fusion (native_hybrid=off)"
OS_EMULATED = "4. OpenSearch fusion EMULATED (min_max + arithmetic_mean) on FAISS + bm25s"
FIXED = "4b. FAISS flat + bm25s, local fixed-weight linear (confidence_power=0)"


# -- the OpenSearch emulation (not OpenSearch) -----------------------------------------------------


def opensearch_min_max(hits: Sequence[ScoredId]) -> dict[str, float]:
    """neural-search's ``min_max`` over one sub-query's own hits (an emulation, not OpenSearch's code).

    ``(s - min) / (max - min)``, a result of 0 (the lowest hit) raised to 0.001, and 1.0 for every hit
    when all scores are equal.
    """
    if not hits:
        return {}
    scores = [h.score for h in hits]
    low, high = min(scores), max(scores)
    if high == low:
        return {h.chunk_id: 1.0 for h in hits}
    out = {}
    for h in hits:
        value = (h.score - low) / (high - low)
        out[h.chunk_id] = value if value > 0 else OS_MIN_SCORE
    return out


def opensearch_fusion(dense: Sequence[ScoredId], keyword: Sequence[ScoredId], alpha: float) -> list[FusedScore]:
    """EMULATION of OpenSearch's normalization processor (``min_max`` + ``arithmetic_mean``), not OpenSearch.

    Each side is normalised over its own hits only; the weighted mean uses ``[1 - alpha, alpha]``
    (keyword, dense; they sum to 1), and a chunk one side did not return counts 0 on that side. Ties by
    chunk id (OpenSearch's own tie order is by Lucene doc id).
    """
    nd, nk = opensearch_min_max(dense), opensearch_min_max(keyword)
    weights = (1 - alpha) + alpha
    raw_dense = {h.chunk_id: h.score for h in dense}
    raw_keyword = {h.chunk_id: h.score for h in keyword}
    fused = [
        FusedScore(cid, ((1 - alpha) * nk.get(cid, 0.0) + alpha * nd.get(cid, 0.0)) / weights,
                   raw_dense.get(cid), raw_keyword.get(cid))
        for cid in nd.keys() | nk.keys()
    ]
    fused.sort(key=lambda f: (-f.score, f.chunk_id))
    return fused


def emulated_opensearch_search(retriever: HybridRetriever, text: str, alpha: float, post: PostFilter) -> list[str]:
    """Doc ids of the emulated OpenSearch fusion over ``retriever``'s two sides (``candidates`` hits each)."""
    vector = retriever.embed_query(text)
    dense = retriever.store.search(vector, retriever.candidates)
    keyword = retriever.keyword.search(text, retriever.candidates)
    hits = retriever._finish(opensearch_fusion(dense, keyword, alpha), DEPTH, post)  # the shared post-filter
    return [h.chunk.doc_id for h in hits]


# -- the measurement -------------------------------------------------------------------------------


def evaluate(name: str, limit: int | None, trials: int) -> dict[str, Any]:
    queries, qrels = judged_queries(name, limit)
    faiss = shipped_engine(name)
    shipped = faiss.settings.retrieval
    qdrant, build = copied_engine(faiss, CACHE / f"{name}-qdrant-sparse",
                                  store={"kind": "qdrant", "options": {"sparse": True}})
    embed = lru_cache(maxsize=None)(faiss.embedder.encode_query)
    for text in queries.values():
        embed(text)
    for engine in (faiss, qdrant):
        engine.retriever.embed_query = embed

    baseline = faiss.retriever
    native = qdrant.retriever
    native.native_hybrid = "auto"  # opt in: the shipped default fuses locally
    assert native.keyword.name == "qdrant-bm25", native.keyword.name
    assert native.native_hybrid == "auto" and native.native_store(shipped.alpha, "linear") is not None, \
        f"Qdrant does not take the native path: {native.store.hybrid_search_unavailable()}"
    local_qdrant = HybridRetriever(native.store, native.keyword, embed, qdrant.catalog, shipped.candidates,
                                   shipped.rrf_k, shipped.confidence_power, native_hybrid="off")
    assert local_qdrant.native_store(shipped.alpha, "linear") is None
    fixed = HybridRetriever(baseline.store, baseline.keyword, embed, faiss.catalog, shipped.candidates,
                            shipped.rrf_k, 0.0)

    post = PostFilter(max_per_doc=1)
    alpha = shipped.alpha

    def via(retriever: HybridRetriever) -> Callable[[str], list[str]]:
        return lambda text: [h.chunk.doc_id for h in retriever.search(text, DEPTH, alpha=alpha, post=post)]

    configs: list[tuple[str, Callable[[str], list[str]]]] = [
        (BASELINE, via(baseline)),
        (QDRANT_NATIVE, via(native)),
        (QDRANT_LOCAL, via(local_qdrant)),
        (OS_EMULATED, lambda text: emulated_opensearch_search(baseline, text, alpha, post)),
        (FIXED, via(fixed)),
    ]
    for _, search in configs:  # warm-up: first-use costs
        for text in list(queries.values())[:20]:
            search(text)
    load_before = load_average()
    def progress(done: int) -> None:
        if done % 50 == 0:
            print(f"[{name}] {done}/{len(queries)} queries", file=sys.stderr)

    per_query = take_turns([search for _, search in configs], queries, qrels, DEPTH, progress)
    load_after = load_average()

    rows = []
    for (label, _), record in zip(configs, per_query):
        rows.append({
            "method": label, "ndcg@10": mean(record["ndcg@10"]), "recall@100": mean(record["recall@100"]),
            "docs_returned": mean(record["docs"]), "p50_ms": percentile(record["ms"], 0.5),
            "per_query": {"ndcg@10": record["ndcg@10"], "recall@100": record["recall@100"], "ms": record["ms"]},
        })
    by_label = {r["method"]: r for r in rows}
    pairs = [(label, BASELINE) for label, _ in configs[1:]] + [(QDRANT_NATIVE, QDRANT_LOCAL)]
    tests = []
    for a, b in pairs:
        for metric in ("ndcg@10", "recall@100"):
            tests.append(compare(f"{metric}: {a} - {b}", by_label[a]["per_query"][metric],
                                 by_label[b]["per_query"][metric], trials))
    status = faiss.status()
    qdrant_chunks = qdrant.catalog.counts()["chunks"]
    for engine in (faiss, qdrant):
        engine.close()
    return {
        "dataset": name, "queries": len(queries), "query_ids": list(queries), "chunks": status["chunks"],
        "documents": status["documents"], "qdrant_chunks": qdrant_chunks, "qdrant_build": build,
        "defaults": shipped.model_dump(), "depth": DEPTH, "significance_level": SIGNIFICANCE, "trials": trials,
        "load_average": {"before": load_before, "after": load_after}, "tests": tests, "rows": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_quality_arguments(parser)
    args = parser.parse_args()
    results = []
    for name in args.datasets:
        result = evaluate(name, args.limit, args.trials)
        results.append(result)
        tests = {t["comparison"]: t for t in result["tests"]}
        print(f"\n## {name}: {result['queries']} queries, {result['documents']} documents, {result['chunks']} chunks\n")
        cells = []
        for row in result["rows"]:
            nd = tests.get(f"ndcg@10: {row['method']} - {BASELINE}")
            rc = tests.get(f"recall@100: {row['method']} - {BASELINE}")
            cells.append([
                row["method"], row["ndcg@10"],
                f"{nd['mean_difference']:+.4f}" if nd else "", f"{nd['p_value']:.4f}" if nd else "",
                f"[{nd['ci95'][0]:+.4f}, {nd['ci95'][1]:+.4f}]" if nd else "",
                row["recall@100"], f"{rc['mean_difference']:+.4f} (p {rc['p_value']:.4f})" if rc else "",
                f"{row['docs_returned']:.1f}", f"{row['p50_ms']:.1f}",
            ])
        print(table(["method", "nDCG@10", "Δ vs baseline", "p", "95% CI", "recall@100", "Δ recall (p)", "docs",
                     "p50 ms"], cells))
        print(f"\nPaired tests over {result['queries']} queries ({args.trials} trials; two-sided randomization "
              "p-value, bootstrap 95 % CI of the mean difference):\n")
        print(table(
            ["comparison", "mean diff", "95% CI", "p", "verdict"],
            [[t["comparison"], f"{t['mean_difference']:+.4f}", f"[{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]",
              f"{t['p_value']:.4f}", t["verdict"]] for t in result["tests"]],
        ))
    path = write_result("native_fusion", {"results": results})
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
