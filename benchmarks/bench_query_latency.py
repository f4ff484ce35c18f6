"""Query latency at ~100k chunks: rag hybrid search vs LangChain's EnsembleRetriever, same data, same run.

The index is nfcorpus ingested by ``rag`` and then replicated (each chunk copied with a jittered,
re-normalised vector) up to ``--chunks`` through the real catalog, FAISS store and BM25 index, because
embedding 100k passages takes ~50 minutes on two cores. The peer gets the same texts and vectors:
``BM25Retriever`` (rank_bm25) + LangChain's ``FAISS`` vector store, fused by ``EnsembleRetriever``.
Both sides embed the query with the same model inside the timed call; no LLM. Goal: p50 <= 30 ms and
>= 10x faster than the peer.

    python -m benchmarks.bench_query_latency [--chunks 100000] [--queries 200] [--peer-queries 40]
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict

import numpy as np

from benchmarks.common import CACHE, engine_for, percentile, read_queries, table, write_result
from rag.core.catalog import DocumentWrite
from rag.core.settings import load_settings
from rag.core.types import Chunk
from rag.engine import RagEngine
from rag.stores.base import StoredChunk

K = 10


def replicated_engine(target: int) -> RagEngine:
    """An engine over ``target`` chunks: nfcorpus' real chunks, copied with jittered vectors."""
    data_dir = CACHE / f"latency-{target}"
    engine = RagEngine(load_settings(data_dir=data_dir), project_root=data_dir)
    if engine.catalog.counts()["chunks"] >= target:
        return engine
    engine._wipe()
    source = engine_for("nfcorpus")
    rows = list(source.catalog.iter_chunks())
    vectors = source.store.get_vectors([cid for cid, _, _ in rows])
    rng = np.random.default_rng(0)
    copies = -(-target // len(rows))
    print(f"building a {target}-chunk index from {len(rows)} chunks x {copies}", file=sys.stderr)
    store = engine.store
    engine.catalog.check_identity({"chunk_size": "200", "chunk_overlap": "40"}, "")
    made = 0
    for copy in range(copies):
        batch = rows[: target - made]
        docs: dict[str, list[Chunk]] = defaultdict(list)
        stored = []
        for cid, text, meta in batch:
            doc_id = f"{meta['doc_id']}~{copy}"
            chunk = Chunk(f"{cid}~{copy}", doc_id, text, {**meta, "doc_id": doc_id, "copy": copy})
            docs[doc_id].append(chunk)
            vec = vectors[cid] + rng.normal(scale=0.02, size=vectors[cid].shape).astype(np.float32) * (copy > 0)
            stored.append(StoredChunk(chunk.chunk_id, vec / np.linalg.norm(vec), text, chunk.metadata))
        store.upsert(stored)
        store.flush()
        with engine.catalog.transaction() as db:
            engine.catalog.write_documents(
                db, [DocumentWrite(d, "corpus.jsonl", "", d, chunks) for d, chunks in docs.items()]
            )
            engine.catalog.bump_generation(db)
        made += len(batch)
    source.close()
    return engine


def time_calls(fn, queries: list[str]) -> list[float]:  # noqa: ANN001
    for q in queries[:5]:  # warm caches and lazy loads
        fn(q)
    times = []
    for q in queries:
        started = time.perf_counter()
        fn(q)
        times.append((time.perf_counter() - started) * 1000)
    return times


def langchain_peer(engine: RagEngine):  # noqa: ANN201
    from langchain.retrievers import EnsembleRetriever
    from langchain_community.retrievers import BM25Retriever
    from langchain_community.vectorstores import FAISS
    from langchain_core.embeddings import Embeddings

    model = engine.embedder

    class MiniLM(Embeddings):
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--peer-queries", type=int, default=40, help="The peer is slow; fewer queries suffice.")
    args = parser.parse_args()

    queries = list(read_queries("nfcorpus").values())[: args.queries]
    engine = replicated_engine(args.chunks)
    chunks = engine.catalog.counts()["chunks"]
    exact = {q: [h.chunk.chunk_id for h in engine.search(q, K)] for q in queries}
    flat = time_calls(lambda q: engine.search(q, K), queries)
    flat_rrf = time_calls(lambda q: engine.search(q, K, fusion="rrf"), queries)
    flat_filtered = time_calls(lambda q: engine.search(q, K, filter={"copy": {"lt": 3}}), queries)
    peer, peer_build_s = langchain_peer(engine)
    theirs = time_calls(peer.invoke, queries[: args.peer_queries])
    engine.close()

    # The same index searched through HNSW (store.index = "hnsw"; built from the stored vectors on first open).
    started = time.perf_counter()
    engine = RagEngine(load_settings(data_dir=engine.data_dir, store={"index": "hnsw"}), project_root=engine.data_dir)
    engine.search(queries[0], K)
    hnsw_open_s = time.perf_counter() - started
    hnsw = time_calls(lambda q: engine.search(q, K), queries)
    agreement = sum(len(set(exact[q]) & {h.chunk.chunk_id for h in engine.search(q, K)}) for q in queries) / (K * len(queries))
    engine.close()

    def row(label: str, times: list[float]) -> list:
        return [label, len(times), percentile(times, 0.5), percentile(times, 0.95), sum(times) / len(times)]

    peer_p50 = percentile(theirs, 0.5)
    rows = [
        row("rag hybrid, FAISS flat (exact, default)", flat),
        row("rag hybrid, FAISS flat, rrf", flat_rrf),
        row("rag hybrid, FAISS flat + pre-filter (copy<3)", flat_filtered),
        row("rag hybrid, FAISS HNSW (store.index=hnsw)", hnsw),
        row("LangChain EnsembleRetriever (BM25Retriever + FAISS)", theirs),
    ]
    print(f"\n## Query latency at {chunks} chunks (k={K}, query embedding included, no LLM)\n")
    print(table(["retriever", "queries", "p50 ms", "p95 ms", "mean ms"], rows))
    verdicts = {}
    for label, times in (("flat", flat), ("hnsw", hnsw)):
        p50 = percentile(times, 0.5)
        verdicts[label] = {"p50_ms": p50, "speedup_p50": peer_p50 / p50, "meets_goal": bool(p50 <= 30 and peer_p50 / p50 >= 10)}
        print(f"{label}: p50 {p50:.1f} ms (goal <= 30), {peer_p50 / p50:.1f}x the peer at p50 (goal >= 10x)")
    print(f"HNSW top-{K} agreement with exact search: {agreement:.3f}; HNSW open/build {hnsw_open_s:.0f} s; "
          f"peer build {peer_build_s:.0f} s")
    path = write_result("query_latency", {
        "chunks": chunks, "k": K,
        "rows": [dict(zip(["retriever", "queries", "p50_ms", "p95_ms", "mean_ms"], r)) for r in rows],
        "verdicts": verdicts, "hnsw_top_k_agreement": agreement, "goal_p50_ms": 30, "goal_speedup": 10,
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
