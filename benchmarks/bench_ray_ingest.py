"""Distributed ingest: ``rag ingest --ray`` with 1 and 2 workers vs the in-process embedder, same chunks, same run.

A slice of nfcorpus is written as a JSONL file and ingested by the whole pipeline (load, chunk, embed,
FAISS, catalog, BM25) into a fresh data directory per run:

- ``local``: the in-process ``SentenceEmbedder`` with 2 torch threads (every core here; the baseline,
  run first and last, averaged) and with 1 thread (what one Ray worker gets);
- ``ray``: a new local Ray instance with 1 and with 2 workers (one CPU and one torch thread each); the
  instance start and the workers' model load are timed apart (``startup``), as the baseline's model is
  loaded before its clock starts;
- ``ray, actor pool per batch``: the design not taken, Ray Data ``ActorPoolStrategy`` embedding actors,
  whose pool lives for one dataset execution, so every ingest batch starts new actors (see
  :mod:`rag.ingest.ray_embed`);
- ``driver only``: Ray with an embedding function that returns constant vectors at once, into FAISS and
  into pgvector (embedded Postgres): the time the driver spends per chunk on everything but embedding
  (loading, chunking, Ray Data round trips, store writes, catalog commits). It bounds what any cluster
  can give, since the driver waits for each batch's vectors before it writes them.

From the runs it prints a throughput model for larger clusters, ``1 / (t_driver + t_embed / workers)``
chunks/s, fitted on this machine's 1-worker run. The script waits for a quiet machine first (1-minute
load below ``--max-load``, at most ``--max-wait`` seconds) and records the load average at start and end.

    python -m benchmarks.bench_ray_ingest [--docs 800] [--max-load 1.0] [--max-wait 600] [--skip-actor-pool]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import CACHE, load_average, read_corpus, table, wait_for_quiet, write_result
from rag.core.settings import load_settings
from rag.engine import RagEngine
from rag.ingest.ray_embed import MIN_BLOCK_ROWS, RayEmbedder, _quiet_data_context

WORK = CACHE / "ray-ingest-bench"
DIMENSION = 384


def constant_vectors(batch: dict[str, Any], *, model: str, batch_size: int) -> dict[str, np.ndarray]:
    """A ``batch_fn`` that costs nothing: every text gets the same unit vector (driver-only runs)."""
    vectors = np.full((len(batch["index"]), DIMENSION), 1 / np.sqrt(DIMENSION), dtype=np.float32)
    return {"index": np.asarray(batch["index"]), "vector": vectors}


class EmbedActor:
    """A Ray Data embedding actor: loads the model once per actor, embeds whole batches."""

    def __init__(self, model: str, batch_size: int) -> None:
        import torch

        from rag.core.embeddings import SentenceEmbedder

        torch.set_num_threads(1)
        self.embedder = SentenceEmbedder(model, batch_size=batch_size, onnx_queries=False)

    def __call__(self, batch: dict[str, Any]) -> dict[str, np.ndarray]:
        return {"index": np.asarray(batch["index"]), "vector": self.embedder.encode([str(t) for t in batch["text"]])}


class ActorPoolPerBatch(RayEmbedder):
    """The rejected design, for comparison: ``map_batches(EmbedActor, compute=ActorPoolStrategy)`` per batch."""

    def encode(self, texts: list[str], show_progress: bool = False) -> np.ndarray:
        import ray

        self.start()
        blocks = max(1, min(self.workers, len(texts) // MIN_BLOCK_ROWS))
        dataset = ray.data.from_items(
            [{"index": i, "text": t} for i, t in enumerate(texts)], override_num_blocks=blocks
        ).map_batches(
            EmbedActor, fn_constructor_args=(self.model_name, self.batch_size), batch_size=None,
            batch_format="numpy", compute=ray.data.ActorPoolStrategy(size=blocks), num_cpus=1,
        )
        vectors = np.empty((len(texts), DIMENSION), dtype=np.float32)
        with _quiet_data_context(ray):
            for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
                vectors[batch["index"]] = batch["vector"]
        self.batches += 1
        return vectors


def ingest_seconds(name: str, corpus: Path, ray: Any = False, **settings: Any) -> tuple[float, int]:
    """Seconds to ingest ``corpus`` into a fresh data directory, and the chunks embedded."""
    data_dir = WORK / name
    shutil.rmtree(data_dir, ignore_errors=True)
    with RagEngine(load_settings(data_dir=data_dir, **settings), project_root=WORK) as engine:
        engine.embedder.model.encode(["warm up"])  # the driver's model (tokenizer) loads outside the clock
        started = time.perf_counter()
        report = engine.ingest([corpus], ray=ray)
        seconds = time.perf_counter() - started
    assert report.ok, report.failed
    shutil.rmtree(data_dir, ignore_errors=True)
    return seconds, report.chunks_added


def local_run(corpus: Path, threads: int) -> dict[str, Any]:
    import torch

    torch.set_num_threads(threads)
    seconds, chunks = ingest_seconds(f"local-{threads}", corpus)
    return {"seconds": seconds, "chunks": chunks, "startup_s": 0.0}


def ray_run(
    corpus: Path, workers: int, embedder: type[RayEmbedder] = RayEmbedder, batch_fn: Callable[..., Any] | None = None,
    warm: bool = True, **settings: Any,
) -> dict[str, Any]:
    """Ingest on a new local Ray instance of ``workers`` CPUs; startup (ray.init, and the workers' model
    load when ``warm``) is timed apart."""
    started = time.perf_counter()
    with embedder(address="local", workers=workers, batch_fn=batch_fn) as remote:
        import ray

        ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers cannot import this script
        remote.start()
        if warm:  # one block per worker: each loads the model now, not inside the timed ingest
            remote.encode(["warm up"] * (MIN_BLOCK_ROWS * workers))
            remote.batches = 0
        startup = time.perf_counter() - started
        seconds, chunks = ingest_seconds(f"ray-{workers}", corpus, ray=remote, **settings)
        batches = remote.batches
    return {"seconds": seconds, "chunks": chunks, "startup_s": startup, "ray_batches": batches}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=800)
    parser.add_argument("--max-load", type=float, default=1.0, help="Wait for a 1-minute load below this ...")
    parser.add_argument("--max-wait", type=float, default=600, help="... for at most this many seconds.")
    parser.add_argument("--skip-actor-pool", action="store_true", help="Leave out the actor-pool-per-batch run.")
    args = parser.parse_args()

    shutil.rmtree(WORK, ignore_errors=True)
    corpus = WORK / "corpus"
    corpus.mkdir(parents=True)
    with open(corpus / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc in read_corpus("nfcorpus")[: args.docs]:
            fh.write(json.dumps(doc) + "\n")

    quiet = wait_for_quiet(args.max_load, args.max_wait)
    load_start = load_average()
    runs: dict[str, dict[str, Any]] = {}
    order = [
        ("local, 2 threads (baseline)", lambda: local_run(corpus, 2)),
        ("ray, 2 workers", lambda: ray_run(corpus, 2)),
        ("ray, 1 worker", lambda: ray_run(corpus, 1)),
        ("local, 1 thread", lambda: local_run(corpus, 1)),
        ("ray, 2 workers, actor pool per batch", lambda: ray_run(corpus, 2, ActorPoolPerBatch, warm=False)),
        ("driver only, faiss", lambda: ray_run(corpus, 2, batch_fn=constant_vectors, warm=False)),
        ("driver only, pgvector", lambda: ray_run(corpus, 2, batch_fn=constant_vectors, warm=False,
                                                  store={"kind": "pgvector"})),
        ("local, 2 threads (baseline, again)", lambda: local_run(corpus, 2)),
    ]
    for label, run in order:
        if args.skip_actor_pool and "actor pool" in label:
            continue
        runs[label] = run()
        print(f"{label}: {runs[label]['chunks']} chunks in {runs[label]['seconds']:.1f} s", file=sys.stderr)
    load_end = load_average()

    chunks = runs["ray, 1 worker"]["chunks"]
    assert all(r["chunks"] == chunks for r in runs.values()), "every run should embed the same chunks"
    first, again = runs.pop("local, 2 threads (baseline)"), runs.pop("local, 2 threads (baseline, again)")
    baseline = {"seconds": (first["seconds"] + again["seconds"]) / 2, "chunks": chunks, "startup_s": 0.0,
                "runs_s": [first["seconds"], again["seconds"]]}
    runs = {"local, 2 threads (baseline, mean of 2)": baseline, **runs}
    base_rate = chunks / baseline["seconds"]
    rows = [
        [label, r["chunks"], f"{r['seconds']:.1f}", f"{r['chunks'] / r['seconds']:.1f}",
         f"{r['chunks'] / r['seconds'] / base_rate:.2f}", f"{r['startup_s']:.1f}"]
        for label, r in runs.items()
    ]

    # Throughput model: per chunk, the driver's own time plus one worker's embedding time over the workers.
    t_driver = runs["driver only, faiss"]["seconds"] / chunks
    t_driver_pg = runs["driver only, pgvector"]["seconds"] / chunks
    t_embed = runs["ray, 1 worker"]["seconds"] / chunks - t_driver
    model = {
        "t_driver_faiss_ms": 1000 * t_driver, "t_driver_pgvector_ms": 1000 * t_driver_pg,
        "t_embed_one_worker_ms": 1000 * t_embed,
        "predicted_chunks_per_s": {
            str(w): {"faiss": 1 / (t_driver + t_embed / w), "pgvector": 1 / (t_driver_pg + t_embed / w)}
            for w in (1, 2, 8, 32, 128)
        },
        "ceiling_chunks_per_s": {"faiss": 1 / t_driver, "pgvector": 1 / t_driver_pg},
    }
    print(f"\n## Ray ingest: {args.docs} nfcorpus documents -> {chunks} chunks\n")
    print(table(["run", "chunks", "seconds", "chunks/s", "vs baseline", "startup s"], rows))
    print(f"\nper chunk: driver {1000 * t_driver:.1f} ms (faiss), {1000 * t_driver_pg:.1f} ms (pgvector); "
          f"embedding on one 1-thread worker {1000 * t_embed:.1f} ms")
    print("\n" + table(
        ["workers", "predicted chunks/s (faiss)", "predicted chunks/s (pgvector)"],
        [[w, f"{p['faiss']:.0f}", f"{p['pgvector']:.0f}"] for w, p in model["predicted_chunks_per_s"].items()]
        + [["ceiling (driver bound)", f"{1 / t_driver:.0f}", f"{1 / t_driver_pg:.0f}"]],
    ))
    print(f"\nbaseline runs {first['seconds']:.1f} s and {again['seconds']:.1f} s; "
          f"load average {load_start} at start, {load_end} at end")
    path = write_result("ray_ingest", {
        "documents": args.docs, "chunks": chunks, "runs": runs, "model": model,
        "load": {"wait": quiet, "start": load_start, "end": load_end},
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
