"""Ingest throughput: the whole pipeline vs ``SentenceTransformer.encode`` alone, same chunks, same run.

A slice of nfcorpus is written as a JSONL file and ingested by ``rag`` into a fresh data directory
(loading, chunking, embedding, FAISS, catalog and BM25 all included; the model is loaded before the
clock starts). Then the same chunk texts are embedded by the bare model with the same batch size.
Goals: pipeline throughput >= 0.85 of raw encode; re-ingest of the unchanged corpus <= 5 % of the first
ingest's time.

    python -m benchmarks.bench_ingest [--docs 800]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from benchmarks.common import CACHE, read_corpus, table, write_result
from rag.core.settings import load_settings
from rag.engine import RagEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=800)
    args = parser.parse_args()

    work = CACHE / "ingest-bench"
    shutil.rmtree(work, ignore_errors=True)
    (work / "corpus").mkdir(parents=True)
    with open(work / "corpus" / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc in read_corpus("nfcorpus")[: args.docs]:
            fh.write(json.dumps(doc) + "\n")

    engine = RagEngine(load_settings(data_dir=work / ".rag"), project_root=work)
    model = engine.embedder.model  # load outside the timed region, as the baseline's model is
    model.encode(["warm up"])

    started = time.perf_counter()
    first = engine.ingest([work / "corpus"])
    pipeline_s = time.perf_counter() - started
    started = time.perf_counter()
    again = engine.ingest([work / "corpus"])
    reingest_s = time.perf_counter() - started
    assert again.chunks_added == 0 and len(again.unchanged) == 1, "re-ingest should change nothing"

    texts = [text for _, text, _ in engine.catalog.iter_chunks()]
    started = time.perf_counter()
    model.encode(texts, batch_size=engine.settings.embedding.batch_size, normalize_embeddings=True)
    raw_s = time.perf_counter() - started
    engine.close()

    n = len(texts)
    ratio = (n / pipeline_s) / (n / raw_s)
    rows = [
        ["SentenceTransformer.encode (baseline)", n, raw_s, n / raw_s, 1.0],
        ["rag ingest (full pipeline)", n, pipeline_s, n / pipeline_s, ratio],
        ["rag ingest again (unchanged)", 0, reingest_s, "-", reingest_s / pipeline_s],
    ]
    print(f"\n## Ingest: {args.docs} nfcorpus documents -> {n} chunks\n")
    print(table(["run", "chunks", "seconds", "chunks/s", "ratio"], rows))
    print(f"\npipeline/raw throughput {ratio:.2f} (goal >= 0.85); "
          f"re-ingest {100 * reingest_s / pipeline_s:.1f} % of first ingest (goal <= 5 %)")
    path = write_result("ingest", {
        "documents": args.docs, "chunks": n, "raw_encode_s": raw_s, "pipeline_s": pipeline_s,
        "reingest_s": reingest_s, "throughput_ratio": ratio, "reingest_fraction": reingest_s / pipeline_s,
        "meets_goal": bool(ratio >= 0.85 and reingest_s / pipeline_s <= 0.05),
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
