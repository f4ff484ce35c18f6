"""Ingest throughput: the whole pipeline vs ``SentenceTransformer.encode`` alone, same chunks, same run.

A slice of nfcorpus is written as a JSONL file and ingested by ``rag`` into a fresh data directory
(loading, chunking, embedding, FAISS, catalog and BM25 all included; the model is loaded before the
clock starts). Then the same chunk texts are embedded by the bare model with the same batch size, and
the two alternate once more (pipeline into a second fresh directory, encode again): each side's mean
is compared, so a change in the machine's load during the run hits both alike. Goals: pipeline
throughput >= 0.85 of raw encode; re-ingest of the unchanged corpus <= 5 % of the first ingest's time.
The script waits for a quiet machine first (1-minute load below ``--max-load``, at most ``--max-wait``
seconds) and records the load average at start and end.

    python -m benchmarks.bench_ingest [--docs 800] [--max-load 1.0] [--max-wait 1200]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time

from benchmarks.common import CACHE, load_average, read_corpus, table, wait_for_quiet, write_result
from rag.core.settings import load_settings
from rag.engine import RagEngine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--max-load", type=float, default=1.0, help="Wait for a 1-minute load below this ...")
    parser.add_argument("--max-wait", type=float, default=1200, help="... for at most this many seconds.")
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

    def pipeline(target: RagEngine) -> float:
        """Seconds to ingest the corpus into ``target``'s empty data directory."""
        started = time.perf_counter()
        target.ingest([work / "corpus"])
        return time.perf_counter() - started

    def raw(texts: list[str]) -> float:
        started = time.perf_counter()
        model.encode(texts, batch_size=engine.settings.embedding.batch_size, normalize_embeddings=True)
        return time.perf_counter() - started

    quiet = wait_for_quiet(args.max_load, args.max_wait)
    load_start = load_average()
    # Pipeline and bare encode alternate (P R P R) and each side's mean is compared, so a load change
    # during the run (e.g. a linear drift) hits both sides alike instead of whichever ran second.
    pipeline_1 = pipeline(engine)
    started = time.perf_counter()
    again = engine.ingest([work / "corpus"])
    reingest_s = time.perf_counter() - started
    assert again.chunks_added == 0 and len(again.unchanged) == 1, "re-ingest should change nothing"
    texts = [text for _, text, _ in engine.catalog.iter_chunks()]
    raw_1 = raw(texts)
    second = RagEngine(load_settings(data_dir=work / ".rag-2"), project_root=work)
    second.embedder = engine.embedder  # the same loaded model
    pipeline_2 = pipeline(second)
    assert second.catalog.counts()["chunks"] == len(texts), "both pipeline runs should make the same chunks"
    second.close()
    raw_2 = raw(texts)
    load_end = load_average()
    engine.close()

    n = len(texts)
    pipeline_s, raw_s = (pipeline_1 + pipeline_2) / 2, (raw_1 + raw_2) / 2
    ratio = raw_s / pipeline_s
    rows = [
        ["SentenceTransformer.encode (baseline, mean of 2)", n, raw_s, n / raw_s, 1.0],
        ["rag ingest (full pipeline, mean of 2)", n, pipeline_s, n / pipeline_s, ratio],
        ["rag ingest again (unchanged)", 0, reingest_s, "-", reingest_s / pipeline_1],
    ]
    print(f"\n## Ingest: {args.docs} nfcorpus documents -> {n} chunks\n")
    print(table(["run", "chunks", "seconds", "chunks/s", "ratio"],
                [[label, c, f"{sec:.3g}" if sec < 1 else f"{sec:.1f}", cps if cps == "-" else f"{cps:.1f}", f"{r:.4g}"]
                 for label, c, sec, cps, r in rows]))
    print(f"\nruns in order: pipeline {pipeline_1:.1f} s, encode {raw_1:.1f} s, pipeline {pipeline_2:.1f} s, "
          f"encode {raw_2:.1f} s; pipeline/raw throughput {ratio:.2f} (goal >= 0.85); "
          f"re-ingest {100 * reingest_s / pipeline_1:.2f} % of the first ingest (goal <= 5 %); "
          f"load average {load_start} at start, {load_end} at end")
    path = write_result("ingest", {
        "documents": args.docs, "chunks": n, "raw_encode_s": [raw_1, raw_2], "pipeline_s": [pipeline_1, pipeline_2],
        "reingest_s": reingest_s, "throughput_ratio": ratio, "reingest_fraction": reingest_s / pipeline_1,
        "meets_goal": bool(ratio >= 0.85 and reingest_s / pipeline_1 <= 0.05),
        "load": {"wait": quiet, "start": load_start, "end": load_end},
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
