"""Backends: FAISS + local bm25s (the shipped default) vs pgvector + local bm25s vs pgvector + Postgres FTS.

Runs every judged query of ``nfcorpus`` and ``dbpedia`` through three hybrid retrievers at the shipped
retrieval settings, in one run, on the same queries:

* **FAISS + bm25s**, the baseline: ``engine_for(name)``'s retriever, exactly what ``rag search`` runs;
* **pgvector + bm25s**: the same corpus ingested with ``store.kind = "pgvector"`` (the embedded server,
  cached under ``benchmarks/.cache/<name>-pgvector``), with a local bm25s index built from its catalog;
* **pgvector + Postgres FTS**: the same store with its own keyword side (``retrieval.keyword = "auto"``).

and, to see the keyword sides on their own, both at ``alpha = 0`` (keyword only), plus every Postgres rank
variant (``ts_rank`` / ``ts_rank_cd`` with several length normalisations) keyword-only and hybrid: the
measurement the shipped ranking was chosen by.

Protocol, as in bench_quality.py: 100 hits per query with ``max_per_doc=1`` (a document's best chunk stands
for it), nDCG@10 and recall@100 over the documents that came back. Per-query nDCG@10 (and recall@100)
feed a paired randomization test (two-sided, sign flipping) and a paired bootstrap 95 % CI of the mean
difference against the baseline (keyword-only rows against bm25s alone). "worse"/"better" is said only
where p < 0.05.

Latency is per query, query embedding excluded (every query is embedded once, up front): the retrievers
take turns query by query, after one untimed warm-up pass each, so they share the machine's load
equally. The dense side of pgvector is an exact scan at these sizes (under ``exact_search_max`` = 10,000
chunks), as FAISS's flat index is.

    python -m benchmarks.bench_backends [--datasets nfcorpus dbpedia] [--limit N] [--trials 10000]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from benchmarks.common import (
    CACHE, dataset, engine_for, load_average, mean, ndcg_at, percentile, read_qrels, read_queries, recall_at,
    table, write_result,
)
from rag.core.settings import RetrievalSettings, load_settings
from rag.engine import RagEngine
from rag.evaluate.significance import paired_bootstrap_ci, paired_randomization_test
from rag.retrieve.bm25 import Analyzer, BM25Index
from rag.retrieve.hybrid import HybridRetriever, PostFilter
from rag.retrieve.keyword import KeywordIndex, LocalBM25
from rag.stores.pgvector_store import DEFAULT_NORMALIZATION, DEFAULT_RANK, PostgresKeywordIndex

DEPTH = 100
SIGNIFICANCE = 0.05
BASELINE = "FAISS + bm25s (baseline)"
# (rank function, normalisation) tried for the Postgres keyword side; the shipped one is among them.
RANK_VARIANTS = [("ts_rank_idf", 0), ("ts_rank_idf", 1), ("ts_rank_idf", 2), ("ts_rank", 0), ("ts_rank", 1),
                 ("ts_rank", 2), ("ts_rank", 16), ("ts_rank_cd", 0), ("ts_rank_cd", 1), ("ts_rank_cd", 2)]


def pgvector_engine(name: str) -> RagEngine:
    """An engine on the embedded pgvector store over ``benchmarks/.cache/<name>-pgvector``, ingested if needed."""
    engine = RagEngine(
        load_settings(data_dir=CACHE / f"{name}-pgvector", store={"kind": "pgvector"}), project_root=dataset(name)
    )
    started = time.perf_counter()
    report = engine.ingest([dataset(name) / "corpus.jsonl"])
    if report.chunks_added:
        print(f"[{name}] ingested {report.chunks_added} chunks into pgvector in {time.perf_counter() - started:.0f} s",
              file=sys.stderr)
    return engine


def local_bm25(engine: RagEngine) -> LocalBM25:
    """A bm25s index built from ``engine``'s catalog with the configured BM25 settings (as the engine does)."""
    cfg = engine.settings.retrieval
    index = BM25Index(cfg.bm25_method, cfg.bm25_k1, cfg.bm25_b, Analyzer(stemmer=cfg.stemmer, stopwords=cfg.stopwords))
    rows = engine.catalog.chunk_rows()
    index.build(rows.ids, rows.texts, rows.metadata)
    return LocalBM25(index)


def compare(label: str, a: list[float], b: list[float], trials: int) -> dict[str, Any]:
    """Paired test of ``a`` against ``b``; the verdict names a difference only at p < 0.05."""
    p = paired_randomization_test(a, b, trials=trials)
    low, high = paired_bootstrap_ci(a, b, trials=trials)
    diff = mean(a) - mean(b)
    verdict = "no significant difference" if p >= SIGNIFICANCE else ("better" if diff > 0 else "worse")
    return {"comparison": label, "mean_difference": diff, "ci95": [low, high], "p_value": p, "verdict": verdict}


def evaluate(name: str, limit: int | None, trials: int) -> dict[str, Any]:
    qrels = read_qrels(name)
    queries = {qid: text for qid, text in read_queries(name).items() if qid in qrels}
    if limit:
        queries = dict(list(queries.items())[:limit])
    shipped = RetrievalSettings()
    faiss = engine_for(name)
    if faiss.settings.retrieval != shipped:
        sys.exit(f"retrieval settings differ from the shipped defaults ({faiss.settings.retrieval}); "
                 "unset RAG_RETRIEVAL__* and move rag.toml away to measure the defaults")
    pg = pgvector_engine(name)
    embed = lru_cache(maxsize=None)(faiss.embedder.encode_query)
    for text in queries.values():
        embed(text)

    baseline = faiss.retriever
    pg_auto = pg.retriever
    assert pg_auto.keyword.name == "postgres-fts", pg_auto.keyword.name
    baseline.embed_query = pg_auto.embed_query = embed

    def retriever(keyword: KeywordIndex) -> HybridRetriever:
        return HybridRetriever(pg_auto.store, keyword, embed, pg.catalog, shipped.candidates, shipped.rrf_k,
                               shipped.confidence_power)

    pg_local = retriever(local_bm25(pg))
    # (label, retriever, alpha, what it is compared with)
    configs: list[tuple[str, HybridRetriever, float, str | None]] = [
        (BASELINE, baseline, shipped.alpha, None),
        ("pgvector + bm25s", pg_local, shipped.alpha, BASELINE),
        ("pgvector + Postgres FTS", pg_auto, shipped.alpha, BASELINE),
        ("bm25s alone (alpha=0)", baseline, 0.0, None),
        ("Postgres FTS alone (alpha=0)", pg_auto, 0.0, "bm25s alone (alpha=0)"),
    ]
    for rank, norm in RANK_VARIANTS:
        variant = retriever(PostgresKeywordIndex(pg_auto.store, rank=rank, normalization=norm))
        shipped_mark = " (shipped)" if (rank, norm) == (DEFAULT_RANK, DEFAULT_NORMALIZATION) else ""
        configs.append((f"variant {rank}/{norm}{shipped_mark}: hybrid", variant, shipped.alpha, BASELINE))
        configs.append((f"variant {rank}/{norm}{shipped_mark}: alone", variant, 0.0, "bm25s alone (alpha=0)"))

    post = PostFilter(max_per_doc=1)
    searches: list[Callable[[str], list[str]]] = [
        (lambda text, r=r, a=a: [h.chunk.doc_id for h in r.search(text, DEPTH, alpha=a, post=post)])
        for _, r, a, _ in configs
    ]
    for search in searches:  # warm-up: first-use costs, Postgres' buffer cache
        for text in queries.values():
            search(text)
    load_before = load_average()
    per_query: list[dict[str, list[float]]] = [{"ndcg@10": [], "recall@100": [], "ms": [], "docs": []} for _ in configs]
    for qid, text in queries.items():  # the configurations take turns, query by query
        for search, record in zip(searches, per_query):
            started = time.perf_counter()
            ranked = search(text)
            record["ms"].append((time.perf_counter() - started) * 1000)
            record["ndcg@10"].append(ndcg_at(ranked, qrels[qid]))
            record["recall@100"].append(recall_at(ranked, qrels[qid], DEPTH))
            record["docs"].append(len(ranked))

    rows, by_label = [], {}
    for (label, _, alpha, against), record in zip(configs, per_query):
        row = {
            "method": label, "alpha": alpha, "ndcg@10": mean(record["ndcg@10"]),
            "recall@100": mean(record["recall@100"]),
            "docs_returned": mean(record["docs"]), "p50_ms": percentile(record["ms"], 0.5),
            "p95_ms": percentile(record["ms"], 0.95), "against": against,
            "per_query": {"ndcg@10": record["ndcg@10"], "recall@100": record["recall@100"], "ms": record["ms"]},
        }
        rows.append(row)
        by_label[label] = row
    tests = []
    for row in rows:
        if row["against"] is None:
            continue
        other = by_label[row["against"]]
        for metric in ("ndcg@10", "recall@100"):
            tests.append(compare(f"{metric}: {row['method']} - {row['against']}", row["per_query"][metric],
                                 other["per_query"][metric], trials))
    status = pg.status()
    faiss.close()
    pg.close()
    return {
        "dataset": name, "queries": len(queries), "query_ids": list(queries), "chunks": status["chunks"],
        "documents": status["documents"], "defaults": shipped.model_dump(), "depth": DEPTH,
        "shipped_postgres_rank": {"function": DEFAULT_RANK, "normalization": DEFAULT_NORMALIZATION},
        "significance_level": SIGNIFICANCE, "trials": trials,
        "load_average": {"before": load_before, "after": load_average()},
        "tests": tests, "rows": rows,
    }


def _variant_cells(hybrid: dict[str, Any], rows: list[dict[str, Any]], tests: dict[str, dict[str, Any]]) -> list[Any]:
    name = hybrid["method"].removesuffix(": hybrid")
    alone = next(r for r in rows if r["method"] == f"{name}: alone")
    p = lambda row: tests[f"ndcg@10: {row['method']} - {row['against']}"]["p_value"]  # noqa: E731
    return [name.removeprefix("variant "), hybrid["ndcg@10"], f"{p(hybrid):.4f}", hybrid["recall@100"],
            alone["ndcg@10"], f"{p(alone):.4f}", f"{alone['p50_ms']:.1f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["nfcorpus", "dbpedia"])
    parser.add_argument("--limit", type=int, default=None, help="Only the first N judged queries (smoke runs).")
    parser.add_argument("--trials", type=int, default=10000, help="Randomization and bootstrap trials.")
    args = parser.parse_args()
    results = []
    for name in args.datasets:
        result = evaluate(name, args.limit, args.trials)
        results.append(result)
        print(f"\n## {name}: {result['queries']} queries, {result['documents']} documents, {result['chunks']} chunks\n")
        main_rows = [r for r in result["rows"] if not r["method"].startswith("variant")]
        print(table(
            ["method", "nDCG@10", "recall@100", "docs", "p50 ms", "p95 ms"],
            [[r["method"], r["ndcg@10"], r["recall@100"], f"{r['docs_returned']:.1f}", f"{r['p50_ms']:.1f}",
              f"{r['p95_ms']:.1f}"] for r in main_rows],
        ))
        print(f"\nPaired tests over {result['queries']} queries ({args.trials} trials; two-sided randomization "
              "p-value, bootstrap 95 % CI of the mean difference):\n")
        print(table(
            ["comparison", "mean diff", "95% CI", "p", "verdict"],
            [[t["comparison"], f"{t['mean_difference']:+.4f}", f"[{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]",
              f"{t['p_value']:.4f}", t["verdict"]] for t in result["tests"] if "variant" not in t["comparison"]],
        ))
        tests = {t["comparison"]: t for t in result["tests"]}
        print("\nPostgres rank variants (nDCG@10; p: paired randomization test against the baseline for hybrid, "
              "against bm25s alone for alone):\n")
        variants = [r for r in result["rows"] if r["method"].startswith("variant") and r["alpha"] > 0]
        print(table(
            ["variant", "hybrid nDCG@10", "p", "hybrid recall@100", "alone nDCG@10", "p", "alone p50 ms"],
            [_variant_cells(r, result["rows"], tests) for r in variants],
        ))
    path = write_result("backends", {"results": results})
    print(f"\nwrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
