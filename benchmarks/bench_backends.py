"""Backends side by side: retrieval quality and query latency of every vector store that runs here.

Backends measured, all in one run and at the shipped retrieval settings (linear fusion, ``alpha = 0.5``,
``confidence_power = 3``, ``candidates = 100``):

* **FAISS flat + bm25s**, the baseline: the shipped default (exact search);
* **FAISS HNSW + bm25s**: ``store.index = "hnsw"`` at the default ``hnsw_m = 32``, ``hnsw_ef_search = 128``;
* **Qdrant local + bm25s**: ``store.kind = "qdrant"`` without a URL, qdrant-client's in-process local mode
  on disk (exact numpy search; the store offers no keyword side, so the engine uses bm25s);
* **pgvector + Postgres FTS**: ``store.kind = "pgvector"`` on the embedded server, at its default
  ``retrieval.keyword = "auto"`` (the store's own full-text search);
* **pgvector + bm25s**: the same store with ``retrieval.keyword = "local"``.

OpenSearch and a Qdrant server cannot run on this machine and are left out.

**Quality** (``--part quality``) runs every judged query of ``nfcorpus`` and ``dbpedia`` through each
backend, plus the keyword sides alone (``alpha = 0``) and every Postgres rank variant (``ts_rank`` /
``ts_rank_cd`` with several length normalisations, keyword-only and hybrid: the measurement the ranking
before BM25, ``ts_rank_idf``, was chosen by). Protocol, as in bench_quality.py: 100 hits per query with
``max_per_doc=1`` (a document's best chunk stands for it), nDCG@10 and recall@100 over the documents that
came back.
Per-query nDCG@10 (and recall@100) feed a paired randomization test (two-sided, sign flipping) and a
paired bootstrap 95 % CI of the mean difference against the baseline (keyword-only rows against bm25s
alone). "worse"/"better" is said only where p < 0.05. The FAISS indexes are ``benchmarks/.cache/<name>``
(ingested by the real pipeline); pgvector's is its own ingest of the same corpus
(``benchmarks/.cache/<name>-pgvector``); Qdrant's (``<name>-qdrant``) is a copy of the FAISS index's chunks
and vectors written through the real catalog and Qdrant store (no re-embedding). Each backend's dense
top 10 (``store.search``, k = 10) is compared with FAISS flat's: the share of exact FAISS's top 10 it
returns ("dense recall@10 vs exact"). Latency there is per query at ~5,000 chunks, query embedding
excluded; the retrievers take turns query by query after one untimed warm-up pass each.

**Parity** (``--part parity``) answers one question: is pgvector's default (Postgres full-text search as
the keyword side) as good as FAISS's (bm25s)? It runs the judged queries through FAISS flat + bm25s (the
baseline), pgvector + bm25s, and pgvector + Postgres FTS ranked both ways, in one run: ``ts_rank_idf`` (the
ranking before issue 17) and ``bm25`` (BM25 computed in SQL, the shipped ranking since), hybrid at the
shipped settings and alone (``alpha = 0``). Every hybrid row is tested against the baseline, every alone row
against bm25s alone, and ``bm25`` against ``ts_rank_idf`` (paired, per query, as above). pgvector holds a
copy of the FAISS index's chunks and vectors (``benchmarks/.cache/<name>-pgvector-copy``, no re-embedding),
opened once as a writer so its keyword postings are current. Latency columns there come from one pass
after a warm-up of 20 queries, on whatever else the machine runs: read them as rough.

**Latency** (``--part latency``) at 100,000 chunks: the index of bench_query_latency.py (NFCorpus'
5,424 real chunks, replicated with jittered vectors up to 100,000; embedding 100,000 real passages would
take about 50 minutes on two cores, and the shared data hold only 11,136 real chunks), copied chunk for
chunk (same ids, texts, metadata and vectors) into each backend by one routine that writes through the
real catalog and store; its duration is the backend's build time. Then, in a fresh subprocess with the
thread settings fixed before any library is imported (``--threads``, default 1: ``OMP_NUM_THREADS``,
``MKL_NUM_THREADS`` and ``OPENBLAS_NUM_THREADS``, ``torch.set_num_threads``, ``faiss.omp_set_num_threads``,
ONNX Runtime's intra-op threads, and Postgres' ``max_parallel_workers_per_gather = threads - 1`` through
``PGOPTIONS``), every backend is opened once (timed up to its first answer: the open time), and the same
NFCorpus queries (``--queries``, default all 323) go through ``RagEngine.search(query, k=10)`` at the
defaults, through each store's ``search`` alone (k = 10 and k = 100, the candidate depth hybrid search
asks for) and through each keyword side alone (k = 100). Queries are embedded once, up front (timed
separately), so the figures are the backends' own. One untimed warm-up pass over all queries, then the
timed pass, the calls taking turns on every query in an order rotated per query; p50/p95/mean ms, and
each row's ratio to its FAISS flat counterpart measured in the same run. The top-10 agreement of each row
with FAISS flat is reported too; on this index it is not recall on real text (each real chunk has up to
18 jittered near-duplicates), and for pgvector + Postgres FTS it also reflects the other keyword side.

    python -m benchmarks.bench_backends [--part quality|parity|latency|all] [--datasets nfcorpus dbpedia] [--limit N]
        [--trials 10000] [--chunks 100000] [--queries N] [--threads 1] [--max-load 1.0] [--max-wait 900]

Writes ``benchmarks/results/backends.json`` (quality), ``benchmarks/results/backends_parity.json`` (parity) and
``benchmarks/results/backends_latency.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from benchmarks.common import (
    CACHE,
    ROOT,
    add_quality_arguments,
    dataset,
    judged_queries,
    load_average,
    mean,
    percentile,
    read_queries,
    shipped_engine,
    table,
    take_turns,
    wait_for_quiet,
    write_result,
)
from rag.core.settings import RetrievalSettings, load_settings
from rag.engine import RagEngine
from rag.evaluate.significance import paired_bootstrap_ci, paired_randomization_test
from rag.retrieve.bm25 import Analyzer, BM25Index
from rag.retrieve.hybrid import HybridRetriever, PostFilter
from rag.retrieve.keyword import KeywordIndex, LocalBM25
from rag.stores.pgvector import DEFAULT_NORMALIZATION, DEFAULT_RANK, PostgresKeywordIndex

DEPTH = 100
K = 10
SIGNIFICANCE = 0.05
BASELINE = "FAISS flat + bm25s (baseline)"
# (rank function, normalisation) tried for the Postgres keyword side; the shipped one is among them.
RANK_VARIANTS = [("ts_rank_idf", 0), ("ts_rank_idf", 1), ("ts_rank_idf", 2), ("ts_rank", 0), ("ts_rank", 1),
                 ("ts_rank", 2), ("ts_rank", 16), ("ts_rank_cd", 0), ("ts_rank_cd", 1), ("ts_rank_cd", 2)]
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
BUILD_RECORD = "bench-build.json"
# Latency backends: name -> (label, data-dir suffix, settings overrides). "pgvector" runs at its default
# keyword side (the store's full-text search); "pgvector-bm25s" is the same store and folder with bm25s.
LATENCY_BACKENDS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "faiss-flat": ("FAISS flat", "faiss", {}),
    "faiss-hnsw": ("FAISS HNSW", "faiss-hnsw", {"store": {"index": "hnsw"}}),
    "pgvector": ("pgvector", "pgvector", {"store": {"kind": "pgvector"}}),
    "pgvector-bm25s": ("pgvector", "pgvector", {"store": {"kind": "pgvector"}, "retrieval": {"keyword": "local"}}),
    "qdrant-local": ("Qdrant local", "qdrant", {"store": {"kind": "qdrant"}}),
}
KEYWORD_LABELS = {"bm25s": "bm25s", "postgres-fts": "Postgres FTS"}
STORES = ("faiss-flat", "faiss-hnsw", "pgvector", "qdrant-local")  # one per vector store, for dense-only rows


# -- indexes ---------------------------------------------------------------------------------------


def open_engine(data_dir: Path, **overrides: Any) -> RagEngine:
    return RagEngine(load_settings(data_dir=data_dir, **overrides), project_root=data_dir)


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


def copied_engine(source: RagEngine, data_dir: Path, batch: int = 2000, **overrides: Any) -> tuple[RagEngine, dict]:
    """An engine over ``data_dir`` holding exactly ``source``'s chunks, on the backend ``overrides`` selects.

    Every chunk keeps its id, text, metadata and stored vector (nothing is embedded again); they go through
    the real catalog and store under the writer lock, whole documents at a time, and the writer builds the
    local BM25 index as an ingest would (unless the store searches text itself). The copy is reused when a
    build record says it is complete. Returns the engine and the build record (chunks, seconds, load).
    """
    from benchmarks.bench_query_latency import record_chunking, write_chunks

    engine = open_engine(data_dir, **overrides)
    wanted = source.catalog.counts()["chunks"]
    record_file = data_dir / BUILD_RECORD
    if record_file.is_file() and engine.catalog.counts()["chunks"] == wanted:
        record = json.loads(record_file.read_text())
        if record.get("chunks") == wanted:
            return engine, {**record, "cached": True}
    record_file.unlink(missing_ok=True)
    rows = list(source.catalog.iter_chunks())
    by_doc: dict[str, list[tuple[str, str, dict[str, Any]]]] = {}
    for row in rows:  # catalog writes replace whole documents, so a batch never splits one
        by_doc.setdefault(row[2]["doc_id"], []).append(row)
    print(f"copying {len(rows)} chunks into {data_dir.name} ({overrides or 'defaults'})", file=sys.stderr)
    load_before, started = load_average(), time.perf_counter()
    with engine.writing(rebuild=True) as writer:
        record_chunking(engine, writer)
        pending: list[tuple[str, str, dict[str, Any]]] = []
        done = 0
        for doc_rows in [*by_doc.values(), None]:
            if doc_rows is not None:
                pending.extend(doc_rows)
            if pending and (doc_rows is None or len(pending) >= batch):
                vectors = source.store.get_vectors([cid for cid, _, _ in pending])
                write_chunks(writer, pending, vectors, lambda s: s, "corpus.jsonl", {})
                done += len(pending)
                pending = []
                print(f"  {done}/{len(rows)} chunks, {time.perf_counter() - started:.0f} s", file=sys.stderr)
    record = {"chunks": len(rows), "build_s": time.perf_counter() - started, "date": time.strftime("%Y-%m-%d"),
              "load_average": {"before": load_before, "after": load_average()}}
    record_file.write_text(json.dumps(record))
    return engine, {**record, "cached": False}


def local_bm25(engine: RagEngine) -> LocalBM25:
    """A bm25s index built from ``engine``'s catalog with the configured BM25 settings (as the engine does)."""
    cfg = engine.settings.retrieval
    index = BM25Index(cfg.bm25_method, cfg.bm25_k1, cfg.bm25_b, Analyzer(stemmer=cfg.stemmer, stopwords=cfg.stopwords))
    rows = engine.catalog.chunk_rows()
    index.build(rows.ids, rows.texts, rows.metadata)
    return LocalBM25(index)


def overlap_at_k(exact: Sequence[str], approx: Sequence[str], k: int = K) -> float:
    """``|approx top k & exact top k| / min(k, |exact|)``: recall@k of ``approx`` against ``exact``."""
    wanted = set(exact[:k])
    return len(wanted & set(approx[:k])) / len(wanted) if wanted else 1.0


# -- quality ---------------------------------------------------------------------------------------


def compare(label: str, a: list[float], b: list[float], trials: int) -> dict[str, Any]:
    """Paired test of ``a`` against ``b``; the verdict names a difference only at p < 0.05."""
    p = paired_randomization_test(a, b, trials=trials)
    low, high = paired_bootstrap_ci(a, b, trials=trials)
    diff = mean(a) - mean(b)
    verdict = "no significant difference" if p >= SIGNIFICANCE else ("better" if diff > 0 else "worse")
    return {"comparison": label, "mean_difference": diff, "ci95": [low, high], "p_value": p, "verdict": verdict}


def evaluate(name: str, limit: int | None, trials: int) -> dict[str, Any]:
    queries, qrels = judged_queries(name, limit)
    shipped = RetrievalSettings()
    faiss = shipped_engine(name)
    hnsw = open_engine(CACHE / name, store={"index": "hnsw"})  # a reader: builds the graph in memory
    qdrant, _ = copied_engine(faiss, CACHE / f"{name}-qdrant", store={"kind": "qdrant"})
    pg = pgvector_engine(name)
    embed = lru_cache(maxsize=None)(faiss.embedder.encode_query)
    for text in queries.values():
        embed(text)

    baseline = faiss.retriever
    pg_auto = pg.retriever
    assert pg_auto.keyword.name == "postgres-fts", pg_auto.keyword.name
    for engine in (faiss, hnsw, qdrant, pg):
        engine.retriever.embed_query = embed

    def retriever(keyword: KeywordIndex) -> HybridRetriever:
        return HybridRetriever(pg_auto.store, keyword, embed, pg.catalog, shipped.candidates, shipped.rrf_k,
                               shipped.confidence_power)

    pg_local = retriever(local_bm25(pg))
    # (label, retriever, alpha, what it is compared with)
    configs: list[tuple[str, HybridRetriever, float, str | None]] = [
        (BASELINE, baseline, shipped.alpha, None),
        (f"FAISS HNSW + {hnsw.retriever.keyword.name}", hnsw.retriever, shipped.alpha, BASELINE),
        (f"Qdrant local + {qdrant.retriever.keyword.name}", qdrant.retriever, shipped.alpha, BASELINE),
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
    per_query = take_turns(searches, queries, qrels, DEPTH)  # the configurations take turns, query by query
    load_after = load_average()

    # Dense top 10 of each store against exact FAISS, on the same real queries.
    stores = {"FAISS HNSW": hnsw.store, "Qdrant local": qdrant.store, "pgvector": pg.store}
    exact = {q: [h.chunk_id for h in faiss.store.search(embed(q), K)] for q in queries.values()}
    dense_recall = {
        label: mean(overlap_at_k(exact[q], [h.chunk_id for h in store.search(embed(q), K)]) for q in queries.values())
        for label, store in stores.items()
    }

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
    for engine in (faiss, hnsw, qdrant, pg):
        engine.close()
    return {
        "dataset": name, "queries": len(queries), "query_ids": list(queries), "chunks": status["chunks"],
        "documents": status["documents"], "defaults": shipped.model_dump(), "depth": DEPTH,
        "shipped_postgres_rank": {"function": DEFAULT_RANK, "normalization": DEFAULT_NORMALIZATION},
        "significance_level": SIGNIFICANCE, "trials": trials,
        "load_average": {"before": load_before, "after": load_after},
        "dense_recall_at_10_vs_exact_faiss": dense_recall,
        "tests": tests, "rows": rows,
    }


PARITY_BEFORE, PARITY_AFTER = "ts_rank_idf", "bm25"


def evaluate_parity(name: str, limit: int | None, trials: int) -> dict[str, Any]:
    """The parity rows of one dataset (see the module docstring), with their paired tests."""
    queries, qrels = judged_queries(name, limit)
    shipped = RetrievalSettings()
    faiss = shipped_engine(name)
    pg, build = copied_engine(faiss, CACHE / f"{name}-pgvector-copy", store={"kind": "pgvector"})
    with pg.writing(purpose="bring the keyword postings up to date"):
        pass  # a writer opens the store: postings of an earlier layout are made again
    pg.close()
    pg = open_engine(CACHE / f"{name}-pgvector-copy", store={"kind": "pgvector"})
    embed = lru_cache(maxsize=None)(faiss.embedder.encode_query)
    for text in queries.values():
        embed(text)
    faiss.retriever.embed_query = embed
    store = pg.retriever.store
    assert pg.retriever.keyword.name == "postgres-fts" and pg.retriever.keyword.rank == DEFAULT_RANK == PARITY_AFTER
    assert store._postings, "the postings were not brought up to date"

    def retriever(keyword: KeywordIndex) -> HybridRetriever:
        return HybridRetriever(store, keyword, embed, pg.catalog, shipped.candidates, shipped.rrf_k,
                               shipped.confidence_power)

    before = retriever(PostgresKeywordIndex(store, rank=PARITY_BEFORE, normalization=DEFAULT_NORMALIZATION))
    after = retriever(PostgresKeywordIndex(store, rank=PARITY_AFTER))
    alone = "bm25s alone (alpha=0)"
    hybrid_before, hybrid_after = f"pgvector + Postgres FTS, {PARITY_BEFORE} (before)", \
        f"pgvector + Postgres FTS, {PARITY_AFTER} (after, shipped)"
    alone_before, alone_after = f"Postgres FTS {PARITY_BEFORE} alone (before)", f"Postgres FTS {PARITY_AFTER} alone (after)"
    # (label, retriever, alpha, compared with)
    configs: list[tuple[str, HybridRetriever, float, list[str]]] = [
        (BASELINE, faiss.retriever, shipped.alpha, []),
        ("pgvector + bm25s", retriever(local_bm25(pg)), shipped.alpha, [BASELINE]),
        (hybrid_before, before, shipped.alpha, [BASELINE]),
        (hybrid_after, after, shipped.alpha, [BASELINE, hybrid_before]),
        (alone, faiss.retriever, 0.0, []),
        (alone_before, before, 0.0, [alone]),
        (alone_after, after, 0.0, [alone, alone_before]),
    ]
    post = PostFilter(max_per_doc=1)
    searches: list[Callable[[str], list[str]]] = [
        (lambda text, r=r, a=a: [h.chunk.doc_id for h in r.search(text, DEPTH, alpha=a, post=post)])
        for _, r, a, _ in configs
    ]
    for search in searches:  # warm-up: first-use costs, Postgres' buffer cache
        for text in list(queries.values())[:20]:
            search(text)
    load_before = load_average()
    per_query = take_turns(searches, queries, qrels, DEPTH)
    load_after = load_average()
    rows, by_label = [], {}
    for (label, _, alpha, against), record in zip(configs, per_query):
        row = {
            "method": label, "alpha": alpha, "ndcg@10": mean(record["ndcg@10"]), "recall@100": mean(record["recall@100"]),
            "docs_returned": mean(record["docs"]), "p50_ms": percentile(record["ms"], 0.5),
            "p95_ms": percentile(record["ms"], 0.95), "against": against,
            "per_query": {"ndcg@10": record["ndcg@10"], "recall@100": record["recall@100"], "ms": record["ms"]},
        }
        rows.append(row)
        by_label[label] = row
    tests = [
        compare(f"{metric}: {row['method']} - {other}", row["per_query"][metric], by_label[other]["per_query"][metric],
                trials)
        for row in rows for other in row["against"] for metric in ("ndcg@10", "recall@100")
    ]
    status = pg.status()
    faiss.close()
    pg.close()
    return {
        "dataset": name, "queries": len(queries), "query_ids": list(queries), "chunks": status["chunks"],
        "documents": status["documents"], "defaults": shipped.model_dump(), "depth": DEPTH,
        "pgvector_copy": build, "significance_level": SIGNIFICANCE, "trials": trials,
        "load_average": {"before": load_before, "after": load_after}, "tests": tests, "rows": rows,
    }


def parity(args: argparse.Namespace) -> None:
    results = []
    for name in args.datasets:
        result = evaluate_parity(name, args.limit, args.trials)
        results.append(result)
        tests = {t["comparison"]: t for t in result["tests"]}
        print(f"\n## Parity, {name}: {result['queries']} queries, {result['documents']} documents, "
              f"{result['chunks']} chunks (load {result['load_average']['before']} -> "
              f"{result['load_average']['after']})\n")

        def p_cell(row: dict[str, Any]) -> str:
            if not row["against"]:
                return ""
            test = tests[f"ndcg@10: {row['method']} - {row['against'][0]}"]  # noqa: B023 - this iteration only
            return f"{test['p_value']:.4f}"

        print(table(
            ["method", "nDCG@10", "p", "recall@100", "p50 ms", "p95 ms"],
            [[r["method"], r["ndcg@10"], p_cell(r), r["recall@100"], f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}"]
             for r in result["rows"]],
        ))
        print(f"\nPaired tests over {result['queries']} queries ({args.trials} trials):\n")
        print(table(
            ["comparison", "mean diff", "95% CI", "p", "verdict"],
            [[t["comparison"], f"{t['mean_difference']:+.4f}", f"[{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]",
              f"{t['p_value']:.4f}", t["verdict"]] for t in result["tests"]],
        ))
    path = write_result("backends_parity", {"limit": args.limit, "results": results})
    print(f"\nwrote {path}", file=sys.stderr)


def _variant_cells(hybrid: dict[str, Any], rows: list[dict[str, Any]], tests: dict[str, dict[str, Any]]) -> list[Any]:
    name = hybrid["method"].removesuffix(": hybrid")
    alone = next(r for r in rows if r["method"] == f"{name}: alone")
    p = lambda row: tests[f"ndcg@10: {row['method']} - {row['against']}"]["p_value"]
    return [name.removeprefix("variant "), hybrid["ndcg@10"], f"{p(hybrid):.4f}", hybrid["recall@100"],
            alone["ndcg@10"], f"{p(alone):.4f}", f"{alone['p50_ms']:.1f}"]


def quality(args: argparse.Namespace) -> None:
    results = []
    for name in args.datasets:
        result = evaluate(name, args.limit, args.trials)
        results.append(result)
        tests = {t["comparison"]: t for t in result["tests"]}
        print(f"\n## {name}: {result['queries']} queries, {result['documents']} documents, {result['chunks']} chunks\n")
        main_rows = [r for r in result["rows"] if not r["method"].startswith("variant")]

        def p_cell(row: dict[str, Any]) -> str:
            test = tests.get(f"ndcg@10: {row['method']} - {row['against']}")  # noqa: B023 - called in this iteration only
            return f"{test['p_value']:.4f}" if test else ""

        print(table(
            ["method", "nDCG@10", "p", "recall@100", "docs", "p50 ms", "p95 ms"],
            [[r["method"], r["ndcg@10"], p_cell(r), r["recall@100"], f"{r['docs_returned']:.1f}", f"{r['p50_ms']:.1f}",
              f"{r['p95_ms']:.1f}"] for r in main_rows],
        ))
        print("\nDense top 10 against exact FAISS (store.search, k=10): "
              + ", ".join(f"{label} {value:.4f}"
                          for label, value in result["dense_recall_at_10_vs_exact_faiss"].items()))
        print(f"\nPaired tests over {result['queries']} queries ({args.trials} trials; two-sided randomization "
              "p-value, bootstrap 95 % CI of the mean difference):\n")
        print(table(
            ["comparison", "mean diff", "95% CI", "p", "verdict"],
            [[t["comparison"], f"{t['mean_difference']:+.4f}", f"[{t['ci95'][0]:+.4f}, {t['ci95'][1]:+.4f}]",
              f"{t['p_value']:.4f}", t["verdict"]] for t in result["tests"] if "variant" not in t["comparison"]],
        ))
        print("\nPostgres rank variants (nDCG@10; p: paired randomization test against the baseline for hybrid, "
              "against bm25s alone for alone):\n")
        variants = [r for r in result["rows"] if r["method"].startswith("variant") and r["alpha"] > 0]
        print(table(
            ["variant", "hybrid nDCG@10", "p", "hybrid recall@100", "alone nDCG@10", "p", "alone p50 ms"],
            [_variant_cells(r, result["rows"], tests) for r in variants],
        ))
    path = write_result("backends", {"results": results})
    print(f"\nwrote {path}", file=sys.stderr)


# -- latency ---------------------------------------------------------------------------------------


def latency_dir(chunks: int, backend: str) -> Path:
    return CACHE / f"latency-{chunks}-{LATENCY_BACKENDS[backend][1]}"


def build_latency_indexes(chunks: int) -> dict[str, dict[str, Any]]:
    """Copy bench_query_latency's ``chunks``-chunk index into every backend (reused when complete)."""
    from benchmarks.bench_query_latency import replicated_engine

    source = replicated_engine(chunks)
    builds = {}
    for backend in STORES:
        _, _, overrides = LATENCY_BACKENDS[backend]
        engine, record = copied_engine(source, latency_dir(chunks, backend), **overrides)
        engine.close()
        builds[backend] = record
    source.close()
    return builds


def interleaved(calls: dict[str, Callable[[str], list[str]]], queries: list[str]) -> tuple[dict, dict]:
    """One untimed pass over every query, then the timed pass with the calls taking turns per query.

    Returns milliseconds per call and the ids each call returned, by call name.
    """
    names = list(calls)
    for q in queries:  # warm-up: lazy loads, Postgres' buffer cache, the page cache under every store
        for name in names:
            calls[name](q)
    times: dict[str, list[float]] = {name: [] for name in names}
    ids: dict[str, list[list[str]]] = {name: [] for name in names}
    for i, q in enumerate(queries):
        for name in names[i % len(names):] + names[: i % len(names)]:
            started = time.perf_counter()
            found = calls[name](q)
            times[name].append((time.perf_counter() - started) * 1000)
            ids[name].append(found)
    return times, ids


def postgres_facts(url: str) -> dict[str, Any]:
    """Server settings that bear on latency, and the table's sizes, read on a connection of our own."""
    import psycopg

    with psycopg.connect(url) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]
        return {
            "server_version": one("SHOW server_version"),
            "pgvector": one("SELECT extversion FROM pg_extension WHERE extname = 'vector'"),
            "max_parallel_workers_per_gather": one("SHOW max_parallel_workers_per_gather"),
            "shared_buffers": one("SHOW shared_buffers"),
            "table_bytes": one("SELECT pg_table_size('rag')"),
            "indexes_bytes": one("SELECT pg_indexes_size('rag')"),
            "hnsw_index_bytes": one("SELECT pg_relation_size('rag_hnsw')"),
        }


def latency_worker(chunks: int, n_queries: int | None, threads: int, out: Path) -> None:
    """Open every backend, time the same queries through each, and write the raw figures to ``out``."""
    import faiss
    import torch

    from benchmarks.bench_query_latency import limit_threads

    onnx_threads = limit_threads(threads)
    faiss.omp_set_num_threads(threads)
    queries = list(read_queries("nfcorpus").values())[:n_queries]
    load_open = load_average()

    # Queries are embedded once, up front, by one encoder every engine shares.
    first = open_engine(latency_dir(chunks, "faiss-flat"))
    encoder = first.embedder
    first.close()
    encoder.encode_query("warm up")
    embed_ms, vectors = [], {}
    for q in queries:
        started = time.perf_counter()
        vectors[q] = encoder.encode_query(q)
        embed_ms.append((time.perf_counter() - started) * 1000)
    plain = encoder.encode_query
    encoder.encode_query = lambda text: vectors[text] if text in vectors else plain(text)  # type: ignore[method-assign]

    engines: dict[str, RagEngine] = {}
    open_s: dict[str, float] = {}
    for backend, (_, _, overrides) in LATENCY_BACKENDS.items():
        started = time.perf_counter()
        engine = open_engine(latency_dir(chunks, backend), **overrides)
        engine.embedder = encoder
        engine.search(queries[0], K)
        open_s[backend] = time.perf_counter() - started
        engines[backend] = engine
        print(f"opened {backend} in {open_s[backend]:.1f} s", file=sys.stderr)
    keyword_names = {backend: engine.retriever.keyword.name for backend, engine in engines.items()}
    assert keyword_names["pgvector"] == "postgres-fts" and keyword_names["pgvector-bm25s"] == "bm25s", keyword_names

    calls: dict[str, Callable[[str], list[str]]] = {}
    for backend, engine in engines.items():
        calls[f"hybrid/{backend}"] = lambda q, e=engine: [h.chunk.chunk_id for h in e.search(q, K)]
    for backend in STORES:
        store = engines[backend].store
        for k in (K, DEPTH):
            calls[f"dense{k}/{backend}"] = lambda q, s=store, k=k: [h.chunk_id for h in s.search(vectors[q], k)]
    for backend in ("faiss-flat", "pgvector"):
        keyword = engines[backend].retriever.keyword
        calls[f"keyword/{keyword.name}"] = lambda q, kw=keyword: [h.chunk_id for h in kw.search(q, DEPTH)]
    load_start = load_average()
    started = time.perf_counter()
    times, ids = interleaved(calls, queries)
    timed_s = time.perf_counter() - started
    load_end = load_average()

    sizes = {backend: engines[backend].store.size_bytes() for backend in STORES}
    pg_url = engines["pgvector"].store.url  # type: ignore[attr-defined]
    facts = postgres_facts(pg_url)
    for engine in engines.values():
        engine.close()
    out.write_text(json.dumps({
        "queries": len(queries), "timings_ms": times, "ids": ids, "embed_ms": embed_ms, "open_s": open_s,
        "keyword_sides": keyword_names, "store_size_bytes": sizes, "postgres": facts, "timed_pass_s": timed_s,
        "threads": {
            "limit": threads, "env": {v: os.environ.get(v) for v in (*THREAD_VARIABLES, "PGOPTIONS")},
            "torch": torch.get_num_threads(), "faiss_omp_max": faiss.omp_get_max_threads(),
            "onnxruntime_intra_op": onnx_threads,
        },
        "load_average": {"before_open": load_open, "start": load_start, "end": load_end},
    }))


def latency_rows(run: dict[str, Any]) -> list[dict[str, Any]]:
    """Table rows: latency, ratio to the FAISS flat row of the same kind, top-10 agreement with it."""
    times, ids, sides = run["timings_ms"], run["ids"], run["keyword_sides"]
    rows = []
    for key, ms in times.items():
        kind, backend = key.split("/")
        if kind == "keyword":
            label, reference = f"{KEYWORD_LABELS.get(backend, backend)} alone (k={DEPTH})", "keyword/bm25s"
        else:
            name = LATENCY_BACKENDS[backend][0]
            side = KEYWORD_LABELS.get(sides[backend], sides[backend])
            label = f"{name} + {side}" if kind == "hybrid" else f"{name}, store.search k={kind[5:]}"
            reference = f"{kind}/faiss-flat"
        base = percentile(times[reference], 0.5), percentile(times[reference], 0.95)
        p50, p95 = percentile(ms, 0.5), percentile(ms, 0.95)
        agreement = mean(overlap_at_k(e, a) for e, a in zip(ids[reference], ids[key])) if kind != "keyword" else None
        rows.append({
            "key": key, "kind": kind, "label": label, "queries": len(ms), "p50_ms": p50, "p95_ms": p95,
            "mean_ms": mean(ms), "p50_ratio": p50 / base[0], "p95_ratio": p95 / base[1], "against": reference,
            "top10_agreement_with_faiss_flat": agreement,
        })
    return rows


def latency(args: argparse.Namespace) -> None:
    builds = build_latency_indexes(args.chunks)
    quiet = wait_for_quiet(args.max_load, args.max_wait)
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    env.update({v: str(args.threads) for v in THREAD_VARIABLES})
    env["PGOPTIONS"] = f"-c max_parallel_workers_per_gather={args.threads - 1}"
    out = CACHE / "backends-latency-worker.json"
    out.unlink(missing_ok=True)
    load_before = load_average()
    command = [sys.executable, "-m", "benchmarks.bench_backends", "--worker", "--chunks", str(args.chunks),
               "--threads", str(args.threads), "--out", str(out)]
    if args.queries:
        command += ["--queries", str(args.queries)]
    print(f"timing in a subprocess with {args.threads} thread(s)", file=sys.stderr)
    subprocess.run(command, env=env, cwd=ROOT.parent, check=True)
    load_after = load_average()
    run = json.loads(out.read_text())
    rows = latency_rows(run)

    threads = run["threads"]
    print(f"\n## Query latency at {args.chunks} chunks, k={K}, {run['queries']} NFCorpus queries, query embedding "
          f"excluded (embedded up front: p50 {percentile(run['embed_ms'], 0.5):.1f} ms)\n")
    print(f"threads: {threads['env']}, torch {threads['torch']}, FAISS OpenMP {threads['faiss_omp_max']}, ONNX Runtime "
          f"{sorted(set(threads['onnxruntime_intra_op']))}; Postgres max_parallel_workers_per_gather "
          f"{run['postgres']['max_parallel_workers_per_gather']}; load {run['load_average']['start']} -> "
          f"{run['load_average']['end']}\n")
    print(table(
        ["search", "p50 ms", "p95 ms", "mean ms", "p50 vs FAISS flat", "p95 vs FAISS flat", "top-10 agreement"],
        [[r["label"], f"{r['p50_ms']:.1f}", f"{r['p95_ms']:.1f}", f"{r['mean_ms']:.1f}", f"{r['p50_ratio']:.2f}x",
          f"{r['p95_ratio']:.2f}x", "" if r["top10_agreement_with_faiss_flat"] is None
          else f"{r['top10_agreement_with_faiss_flat']:.3f}"] for r in rows],
    ))
    print("\n## Build, open and size\n")
    print(table(
        ["backend", f"build s (copy of {args.chunks} chunks)", "open s (to first answer)", "vector store on disk MiB"],
        [[LATENCY_BACKENDS[b][0] + ("" if b in STORES else " + bm25s"),
          f"{builds[b]['build_s']:.0f}" if b in builds else "(same folder)", f"{run['open_s'][b]:.1f}",
          f"{run['store_size_bytes'][b] / 2**20:.0f}" if b in run["store_size_bytes"] else ""]
         for b in LATENCY_BACKENDS],
    ))
    pg = run["postgres"]
    print(f"\npgvector table {pg['table_bytes'] / 2**20:.0f} MiB, indexes {pg['indexes_bytes'] / 2**20:.0f} MiB "
          f"(HNSW {pg['hnsw_index_bytes'] / 2**20:.0f} MiB); Postgres {pg['server_version']}, "
          f"pgvector {pg['pgvector']}")
    settings = load_settings()
    path = write_result("backends_latency", {
        "chunks": args.chunks, "k": K, "queries": run["queries"], "defaults": RetrievalSettings().model_dump(),
        "store_defaults": {"hnsw_m": settings.store.hnsw_m, "hnsw_ef_search": settings.store.hnsw_ef_search},
        "rows": rows, "builds": builds, "open_s": run["open_s"], "store_size_bytes": run["store_size_bytes"],
        "postgres": pg, "keyword_sides": run["keyword_sides"], "threads": threads,
        "embed_ms": {"p50": percentile(run["embed_ms"], 0.5), "p95": percentile(run["embed_ms"], 0.95)},
        "timed_pass_s": run["timed_pass_s"],
        "load": {"wait": quiet, "before": load_before, "after": load_after, "worker": run["load_average"]},
        "timings_ms": run["timings_ms"],
    })
    print(f"\nwrote {path}", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--part", choices=["quality", "parity", "latency", "all"], default="all")
    add_quality_arguments(parser)
    parser.add_argument("--chunks", type=int, default=100_000, help="Latency: chunks in every backend.")
    parser.add_argument("--queries", type=int, default=None,
                        help="Latency: the first N NFCorpus queries, the same for all (default: all 323).")
    parser.add_argument("--threads", type=int, default=1, help="Latency: threads for every library and Postgres.")
    parser.add_argument("--max-load", type=float, default=1.0, help="Latency: wait for a 1-minute load below this ...")
    parser.add_argument("--max-wait", type=float, default=900, help="... for at most this many seconds.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads < 1:
        parser.error(f"--threads must be at least 1, got {args.threads}")
    if args.worker:
        latency_worker(args.chunks, args.queries, args.threads, args.out)
        return
    if args.part in ("quality", "all"):
        quality(args)
    if args.part == "parity":
        parity(args)
    if args.part in ("latency", "all"):
        latency(args)


if __name__ == "__main__":
    main()
