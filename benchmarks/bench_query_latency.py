"""Query latency at ~100k chunks vs LangChain's EnsembleRetriever, and HNSW recall@10 on real text.

**Latency.** The index is nfcorpus ingested by ``rag`` and then replicated up to ``--chunks`` through the
real catalog, FAISS store and BM25 index; copy 0 keeps the real vectors, every other copy gets a
*jittered* (Gaussian noise, sd 0.02 per dimension, re-normalised) vector, because embedding 100k
passages takes ~50 minutes on two cores. The peer gets the same texts and vectors: ``BM25Retriever``
(rank_bm25) + LangChain's ``FAISS`` vector store, fused by ``EnsembleRetriever``. Both sides get the
same ``--queries`` nfcorpus queries, embed each query with the same ONNX Runtime encoder inside the
timed call, and return k = 10; no LLM. The retrievers take turns on every query (order rotated per
query), so a change in the machine's load hits them all alike. Each thread configuration runs in a fresh
subprocess, so thread settings are fixed before any library is imported:

- ``single-thread``: ``OMP_NUM_THREADS=MKL_NUM_THREADS=OPENBLAS_NUM_THREADS=1``, ``torch.set_num_threads(1)``
  and ONNX Runtime sessions created with ``intra_op_num_threads=1`` (``core/onnx_query.py`` sets 2 and
  has no setting for it, so the worker wraps ``onnxruntime.InferenceSession``);
- ``default threads``: nothing limited (ONNX Runtime 2 threads as shipped, torch and FAISS all cores).

rag's ``FaissStore`` runs each search on one OpenMP thread in both configurations, on purpose
(``stores/faiss_store.py``, ``_one_omp_thread``); the peer's LangChain FAISS uses FAISS' default.
Goals: p50 <= 30 ms and >= 10x faster than the peer.

**HNSW recall on real text.** The real chunks of nfcorpus, dbpedia and business-reports (no copies,
no jitter) go into one index, searched with all of their real queries by the exact flat index and by
HNSW (``store.index = "hnsw"``, default ``hnsw_m`` and ``hnsw_ef_search``). recall@10 is
``|HNSW top 10 & exact top 10| / 10``, averaged over queries, for the index alone (``store.search``,
k = 10), rag dense-only (alpha = 1) and the rag hybrid default. The top-10 agreement on the jittered
100k index is reported too, but it is not recall on real text: jittered copies form tight clusters of
near-duplicates, unlike real data.

    python -m benchmarks.bench_query_latency [--chunks 100000] [--queries 200] [--max-load 1.0] [--max-wait 1200]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import (
    CACHE,
    ROOT,
    engine_for,
    load_average,
    mean,
    percentile,
    read_queries,
    table,
    wait_for_quiet,
    write_result,
)
from rag.core.catalog import DocumentWrite
from rag.core.settings import load_settings
from rag.core.types import Chunk
from rag.engine import RagEngine, Writer
from rag.stores.base import StoredChunk

K = 10
WIDE = 300  # the candidates value weighed against the default (see bench_quality)
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
CONFIGS = {"single-thread": 1, "default threads": None}  # name -> thread limit (None: nothing limited)
REAL_TEXT = ("nfcorpus", "dbpedia", "business-reports")


# -- indexes ---------------------------------------------------------------------------------------


def open_engine(data_dir: Path, **overrides: Any) -> RagEngine:
    return RagEngine(load_settings(data_dir=data_dir, **overrides), project_root=data_dir)


def write_chunks(
    writer: Writer,
    rows: Sequence[tuple[str, str, dict[str, Any]]],
    vectors: dict[str, np.ndarray],
    rename: Callable[[str], str],
    path: str,
    extra: dict[str, Any],
    noise: Callable[[tuple[int, ...]], np.ndarray] | None = None,
) -> None:
    """Store ``rows`` (chunk id, text, metadata) with their vectors under new ids, as one committed batch.

    Goes through the real FAISS store and catalog under the writer lock, so searches see exactly what an
    ingest would write (vectors flushed first, then the catalog commit). Unlike ingest it journals
    nothing: a build that dies halfway is simply rebuilt, since the chunk count will not match.
    """
    docs: dict[str, list[Chunk]] = defaultdict(list)
    stored = []
    for cid, text, meta in rows:
        doc_id = rename(meta["doc_id"])
        chunk = Chunk(rename(cid), doc_id, text, {**meta, "doc_id": doc_id, **extra})
        docs[doc_id].append(chunk)
        vec = vectors[cid] if noise is None else vectors[cid] + noise(vectors[cid].shape)
        stored.append(StoredChunk(chunk.chunk_id, vec / np.linalg.norm(vec), text, chunk.metadata))
    writer.store.upsert(stored)
    writer.store.flush()
    with writer.catalog.transaction() as db:
        writer.catalog.write_documents(db, [DocumentWrite(d, path, "", d, chunks) for d, chunks in docs.items()])
        writer.catalog.bump_generation(db)


def record_chunking(engine: RagEngine, writer: Writer) -> None:
    """Record the chunking the copied chunks were made with, as an ingest would (the sources used it)."""
    chunking = engine.settings.chunking
    writer.catalog.check_identity({"chunk_size": str(chunking.size), "chunk_overlap": str(chunking.overlap)}, "")


def replicated_engine(target: int) -> RagEngine:
    """An engine over ``target`` chunks: nfcorpus' real chunks, then copies with jittered vectors."""
    engine = open_engine(CACHE / f"latency-{target}")
    if engine.catalog.counts()["chunks"] >= target:
        return engine
    source = engine_for("nfcorpus")
    rows = list(source.catalog.iter_chunks())
    vectors = source.store.get_vectors([cid for cid, _, _ in rows])
    rng = np.random.default_rng(0)
    copies = -(-target // len(rows))
    print(f"building a {target}-chunk index from {len(rows)} chunks x {copies}", file=sys.stderr)
    with engine.writing(rebuild=True) as writer:
        record_chunking(engine, writer)
        made = 0
        for copy in range(copies):
            batch = rows[: target - made]
            jitter = None if copy == 0 else lambda shape: rng.normal(scale=0.02, size=shape).astype(np.float32)
            write_chunks(writer, batch, vectors, lambda s, c=copy: f"{s}~{c}", "corpus.jsonl", {"copy": copy}, jitter)
            made += len(batch)
    source.close()
    return engine


def real_text_engine() -> RagEngine:
    """An engine over the real chunks of every :data:`REAL_TEXT` set, each id prefixed with its set."""
    engine = open_engine(CACHE / "real-text")
    sources = {name: engine_for(name) for name in REAL_TEXT}
    expected = sum(source.catalog.counts()["chunks"] for source in sources.values())
    if engine.catalog.counts()["chunks"] != expected:
        with engine.writing(rebuild=True) as writer:
            record_chunking(engine, writer)
            for name, source in sources.items():
                rows = list(source.catalog.iter_chunks())
                vectors = source.store.get_vectors([cid for cid, _, _ in rows])
                write_chunks(writer, rows, vectors, lambda s, n=name: f"{n}/{s}", f"{name}/corpus.jsonl", {"set": name})
    for source in sources.values():
        source.close()
    return engine


# -- timing (runs in a worker subprocess per thread configuration) -------------------------------


def time_interleaved(calls: dict[str, Callable[[str], Any]], queries: list[str]) -> dict[str, list[float]]:
    """Milliseconds per call of every retriever on every query, the retrievers taking turns per query.

    Taking turns (in an order rotated per query) spreads any change in the machine's load over all the
    retrievers alike, so their ratios stay fair even when the absolute figures move.
    """
    names = list(calls)
    for q in queries[:5]:  # warm caches and lazy loads
        for name in names:
            calls[name](q)
    times: dict[str, list[float]] = {name: [] for name in names}
    for i, q in enumerate(queries):
        for name in names[i % len(names):] + names[: i % len(names)]:
            started = time.perf_counter()
            calls[name](q)
            times[name].append((time.perf_counter() - started) * 1000)
    return times


def langchain_peer(engine: RagEngine) -> tuple[Any, float]:
    """The peer over the engine's chunk texts and stored vectors; returns it and its build seconds."""
    from langchain.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_community.vectorstores import FAISS
    from langchain_core.embeddings import Embeddings

    model = engine.embedder

    class MiniLM(Embeddings):
        """The same query encoder rag uses (ONNX Runtime), so both sides pay the same embedding cost."""

        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            return model.encode(texts).tolist()

        def embed_query(self, text: str) -> list[float]:
            return model.encode_query(text).tolist()

    rows = list(engine.catalog.iter_chunks())
    texts = [text for _, text, _ in rows]
    vectors = engine.store.get_vectors([cid for cid, _, _ in rows])
    started = time.perf_counter()
    bm25 = BM25Retriever.from_texts(texts, k=K)
    dense = FAISS.from_embeddings(
        [(text, vectors[cid].tolist()) for cid, text, _ in rows], MiniLM(), distance_strategy="MAX_INNER_PRODUCT"
    ).as_retriever(search_kwargs={"k": K})
    ensemble = EnsembleRetriever(retrievers=[bm25, dense], weights=[0.5, 0.5])
    return ensemble, time.perf_counter() - started


def limit_threads(limit: int | None) -> list[int]:
    """Apply ``limit`` to torch and to every ONNX Runtime session created from now on.

    Returns a list that fills with the ``intra_op_num_threads`` of each session created, so the result
    records what the query encoder really ran with (0 means ONNX Runtime's own default).
    """
    import onnxruntime as ort
    import torch

    if limit is not None:
        torch.set_num_threads(limit)
    seen: list[int] = []
    real = ort.InferenceSession

    def session(path: Any, sess_options: Any = None, *args: Any, **kwargs: Any) -> Any:
        options = sess_options if sess_options is not None else ort.SessionOptions()
        if limit is not None:
            options.intra_op_num_threads = limit
            options.inter_op_num_threads = limit
        seen.append(options.intra_op_num_threads)
        return real(path, options, *args, **kwargs)

    ort.InferenceSession = session  # core/onnx_query.py looks it up at call time
    return seen


def worker(config: str, chunks: int, n_queries: int, out: Path) -> None:
    """Time every retriever under one thread configuration and write the raw timings to ``out``."""
    import faiss
    import torch

    onnx_threads = limit_threads(CONFIGS[config])
    queries = list(read_queries("nfcorpus").values())[:n_queries]
    data_dir = CACHE / f"latency-{chunks}"
    flat = open_engine(data_dir)
    wide = open_engine(data_dir, retrieval={"candidates": WIDE})
    hnsw = open_engine(data_dir, store={"index": "hnsw"})  # a reader builds the graph in memory at open
    for other in (wide, hnsw):  # one query encoder for all: idle ONNX thread pools would compete
        other.embedder = flat.embedder
    peer, peer_build_s = langchain_peer(flat)
    hnsw.search(queries[0], K)  # build the HNSW graph before the clock starts
    load_start = load_average()
    timings = time_interleaved({
        "flat": lambda q: flat.search(q, K),
        "flat_wide": lambda q: wide.search(q, K),
        "flat_rrf": lambda q: flat.search(q, K, fusion="rrf"),
        "flat_filtered": lambda q: flat.search(q, K, filter={"copy": {"lt": 3}}),
        "hnsw": lambda q: hnsw.search(q, K),
        "peer": peer.invoke,
    }, queries)
    for engine in (flat, wide, hnsw):
        engine.close()
    out.write_text(json.dumps({
        "config": config, "timings_ms": timings, "peer_build_s": peer_build_s,
        "threads": {
            "limit": CONFIGS[config], "env": {v: os.environ.get(v) for v in THREAD_VARIABLES},
            "torch": torch.get_num_threads(), "faiss_omp_max": faiss.omp_get_max_threads(),
            "onnxruntime_intra_op": onnx_threads,
        },
        "load_start": load_start, "load_end": load_average(),
    }))


def run_config(config: str, chunks: int, n_queries: int) -> dict:
    """Run :func:`worker` for ``config`` in a fresh interpreter with the thread variables set (or unset)."""
    env = {k: v for k, v in os.environ.items() if k not in THREAD_VARIABLES}
    if CONFIGS[config] is not None:
        env.update({v: str(CONFIGS[config]) for v in THREAD_VARIABLES})
    out = CACHE / f"latency-{config.replace(' ', '-')}.json"
    out.unlink(missing_ok=True)
    command = [sys.executable, "-m", "benchmarks.bench_query_latency", "--worker", config,
               "--chunks", str(chunks), "--queries", str(n_queries), "--out", str(out)]
    print(f"timing {config} in a subprocess", file=sys.stderr)
    subprocess.run(command, env=env, cwd=ROOT.parent, check=True)
    return json.loads(out.read_text())


# -- agreement of HNSW with exact search -----------------------------------------------------------


def top_ids(engine: RagEngine, vectors: dict[str, np.ndarray], mode: str) -> dict[str, list[str]]:
    """Top-10 chunk ids per query: the vector index alone, rag dense-only or the rag hybrid default."""
    if mode == "index":
        return {q: [h.chunk_id for h in engine.store.search(v, K)] for q, v in vectors.items()}
    alpha = 1.0 if mode == "dense" else None
    return {q: [h.chunk.chunk_id for h in engine.search(q, K, alpha=alpha)] for q in vectors}


def recall_at_k(exact: dict[str, list[str]], approx: dict[str, list[str]], keys: list[str]) -> float:
    return mean(len(set(exact[q]) & set(approx[q])) / K for q in keys)


MODES = {"index": "FAISS HNSW index alone (store.search, k=10)", "dense": "rag dense-only (alpha=1)",
         "hybrid": "rag hybrid default"}


def hnsw_recall(data_dir: Path, queries: dict[str, list[str]]) -> dict[str, dict[str, float]]:
    """recall@10 of HNSW against the flat index, per mode and per query set (plus ``all``)."""
    everything = sorted({q for qs in queries.values() for q in qs})
    results: dict[str, dict[str, list[str]]] = {}
    for index in ("flat", "hnsw"):
        engine = open_engine(data_dir, store={"index": index})
        vectors = {q: engine.embedder.encode_query(q) for q in everything}
        for mode in MODES:
            results[f"{index}/{mode}"] = top_ids(engine, vectors, mode)
        engine.close()
    sets = {**queries, "all": everything}
    return {
        mode: {name: recall_at_k(results[f"flat/{mode}"], results[f"hnsw/{mode}"], qs) for name, qs in sets.items()}
        for mode in MODES
    }


# -- report ----------------------------------------------------------------------------------------

ROWS = {
    "flat": "rag hybrid, FAISS flat (exact; all defaults)",
    "flat_wide": f"rag hybrid, FAISS flat, candidates={WIDE}",
    "flat_rrf": "rag hybrid, FAISS flat, rrf",
    "flat_filtered": "rag hybrid, FAISS flat + pre-filter (copy<3)",
    "hnsw": "rag hybrid, FAISS HNSW (store.index=hnsw)",
    "peer": "LangChain EnsembleRetriever (BM25Retriever + FAISS)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200, help="The same nfcorpus queries for rag and the peer.")
    parser.add_argument("--max-load", type=float, default=1.0, help="Wait for a 1-minute load below this ...")
    parser.add_argument("--max-wait", type=float, default=1200, help="... for at most this many seconds.")
    parser.add_argument("--worker", choices=list(CONFIGS), help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.chunks, args.queries, args.out)
        return

    # Build (or reuse) both indexes before any clock starts; time one HNSW open (a reader builds the graph).
    engine = replicated_engine(args.chunks)
    chunks = engine.catalog.counts()["chunks"]
    engine.close()
    started = time.perf_counter()
    engine = open_engine(CACHE / f"latency-{chunks}", store={"index": "hnsw"})
    engine.search("warm up", K)
    hnsw_open_s = time.perf_counter() - started
    engine.close()
    real = real_text_engine()
    real_counts = real.catalog.counts()
    real.close()

    quiet = wait_for_quiet(args.max_load, args.max_wait)
    load_start = load_average()
    runs = {config: run_config(config, chunks, args.queries) for config in CONFIGS}
    load_end = load_average()

    # HNSW vs exact: jittered 100k index (agreement only) and the real-text index (recall@10).
    queries = list(read_queries("nfcorpus").values())[: args.queries]
    jitter_recall = hnsw_recall(CACHE / f"latency-{chunks}", {"nfcorpus": queries})
    real_queries = {name: list(read_queries(name).values()) for name in REAL_TEXT}
    real_recall = hnsw_recall(CACHE / "real-text", real_queries)

    def row(label: str, times: list[float]) -> list:
        return [label, len(times), percentile(times, 0.5), percentile(times, 0.95), mean(times)]

    result_rows, verdicts = {}, {}
    print(f"\n## Query latency at {chunks} chunks (nfcorpus chunks, replicated with jittered vectors; k={K}, "
          f"{args.queries} queries on both sides, query embedding included, no LLM)")
    for config, run in runs.items():
        timings = run["timings_ms"]
        rows = [row(label, timings[key]) for key, label in ROWS.items()]
        result_rows[config] = [dict(zip(["retriever", "queries", "p50_ms", "p95_ms", "mean_ms"], r)) for r in rows]
        threads = run["threads"]
        onnx = ",".join(map(str, sorted(set(threads["onnxruntime_intra_op"]))))
        print(f"\n### {config}: torch {threads['torch']}, ONNX Runtime {onnx}, "
              f"FAISS OpenMP max {threads['faiss_omp_max']} (rag's FaissStore: 1 per search); load "
              f"{run['load_start']} -> {run['load_end']}\n")
        print(table(["retriever", "queries", "p50 ms", "p95 ms", "mean ms"],
                    [[label, n, *(f"{ms:.1f}" for ms in times)] for label, n, *times in rows]))
        peer_p50 = percentile(timings["peer"], 0.5)
        verdicts[config] = {}
        for key in ("flat", "flat_wide", "hnsw"):
            p50 = percentile(timings[key], 0.5)
            verdicts[config][key] = {"p50_ms": p50, "speedup_p50": peer_p50 / p50,
                                     "meets_goal": bool(p50 <= 30 and peer_p50 / p50 >= 10)}
            print(f"{ROWS[key]}: p50 {p50:.1f} ms (goal <= 30), {peer_p50 / p50:.1f}x the peer at p50 (goal >= 10x)")
        extra = percentile(timings["flat_wide"], 0.5) - percentile(timings["flat"], 0.5)
        print(f"candidates={WIDE} costs {extra:+.1f} ms at p50 over the default")

    print(f"\n## HNSW recall@10 against exact flat search on real text ({real_counts['chunks']} real chunks of "
          f"{', '.join(REAL_TEXT)}; their real queries)\n")
    names = [*REAL_TEXT, "all"]
    counts = {n: len(q) for n, q in real_queries.items()}
    counts["all"] = len({q for qs in real_queries.values() for q in qs})
    print(table(["search", *[f"{n} ({counts[n]} q)" for n in names]],
                [[MODES[m], *[real_recall[m][n] for n in names]] for m in MODES]))
    print(f"\nJittered {chunks}-chunk index, {len(queries)} nfcorpus queries, HNSW top-10 agreement with exact search "
          f"(near-duplicate clusters, NOT recall on real text): "
          + ", ".join(f"{MODES[m]} {jitter_recall[m]['all']:.3f}" for m in MODES))
    print(f"HNSW open (graph built in memory) {hnsw_open_s:.0f} s; peer build "
          + ", ".join(f"{c} {r['peer_build_s']:.0f} s" for c, r in runs.items())
          + f"; load average {load_start} at start, {load_end} at end")

    path = write_result("query_latency", {
        "chunks": chunks, "k": K, "queries": len(queries), "configs": {
            config: {"rows": result_rows[config], "threads": run["threads"], "load_start": run["load_start"],
                     "load_end": run["load_end"], "peer_build_s": run["peer_build_s"], "timings_ms": run["timings_ms"]}
            for config, run in runs.items()
        },
        "verdicts": verdicts, "goal_p50_ms": 30, "goal_speedup": 10,
        "hnsw": {"m": load_settings().store.hnsw_m, "ef_search": load_settings().store.hnsw_ef_search,
                 "open_s": hnsw_open_s},
        "hnsw_recall_at_10_real_text": {"chunks": real_counts["chunks"], "queries": counts, "recall": real_recall},
        "hnsw_top10_agreement_jittered": {m: jitter_recall[m]["all"] for m in MODES},
        "load": {"wait": quiet, "start": load_start, "end": load_end},
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
