"""Query latency and results of this checkout against an earlier one, measured in the same run.

For a change that must not alter what a search returns or make it slower (a refactor), this script times
``RagEngine.search`` of both code trees over one index, at the shipped defaults, and compares:

- **results**: every query's ranked chunk ids and scores must be the same on both sides (scores to 1e-6);
- **latency**: each side runs in its own worker subprocess (``PYTHONPATH`` puts its tree first as
  ``rag``), and the sides take turns for ``--rounds`` rounds (before, after, after, before, ...), so a
  change in the machine's load hits both alike. A query's time is its median over the rounds; the mean
  of the per-query differences gets a paired randomization test and a bootstrap 95 % CI.

The index is the replicated nfcorpus index of ``bench_query_latency`` (real chunks, then copies with
jittered vectors), written by this checkout; both trees read it. The baseline tree is an export of the
earlier commit, for example::

    mkdir -p /tmp/base && git archive 168be2e | tar -x -C /tmp/base
    python -m benchmarks.bench_before_after --baseline /tmp/base [--chunks 20000] [--queries 200] [--rounds 6]

Goal: identical results for every query, and "after" not significantly slower (p >= 0.05, or faster).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import load_average, percentile, read_queries, table, write_result

ROOT = Path(__file__).resolve().parent.parent
WARMUP = 5


def worker(data_dir: Path, queries: list[str], out: Path) -> None:
    """Time ``engine.search(q, k=10)`` for every query with whichever ``rag`` is first on the path."""
    import rag
    from rag.core.settings import load_settings
    from rag.engine import RagEngine

    with RagEngine(load_settings(data_dir=data_dir)) as engine:
        for q in queries[:WARMUP]:  # load the model, the index and the keyword side
            engine.search(q, k=10)
        times, results = [], []
        for q in queries:
            started = time.perf_counter()
            hits = engine.search(q, k=10)
            times.append((time.perf_counter() - started) * 1000)
            results.append([[hit.chunk.chunk_id, round(hit.score, 6)] for hit in hits])
    out.write_text(json.dumps({"rag": str(Path(rag.__file__).resolve().parent), "ms": times, "hits": results}))


def run_side(tree: Path, data_dir: Path, queries_file: Path, out: Path) -> dict[str, Any]:
    """One worker subprocess with ``tree`` importable as ``rag``."""
    with tempfile.TemporaryDirectory() as shim:
        (Path(shim) / "rag").symlink_to(tree.resolve(), target_is_directory=True)
        env = {**os.environ, "PYTHONPATH": shim, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
        command = [sys.executable, "-m", "benchmarks.bench_before_after", "--worker",
                   "--data-dir", str(data_dir), "--queries-file", str(queries_file), "--out", str(out)]
        subprocess.run(command, env=env, cwd=ROOT, check=True)
    result = json.loads(out.read_text())
    if Path(result["rag"]) != tree.resolve():
        sys.exit(f"the worker imported rag from {result['rag']}, not {tree}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--baseline", type=Path, help="The earlier code tree (e.g. a git archive export).")
    parser.add_argument("--chunks", type=int, default=20_000)
    parser.add_argument("--queries", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=6, help="Turns per side (even: each side goes first alike).")
    parser.add_argument("--trials", type=int, default=10_000)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--queries-file", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.data_dir, json.loads(args.queries_file.read_text()), args.out)
        return
    if args.baseline is None or (not (args.baseline / "engine").exists() and not (args.baseline / "engine.py").exists()):
        sys.exit("--baseline must name an earlier rag code tree (the repository root of that commit)")

    from benchmarks.bench_query_latency import replicated_engine
    from rag.evaluate.significance import bootstrap_mean_ci, paired_randomization_test

    engine = replicated_engine(args.chunks)
    data_dir, chunks = engine.data_dir, engine.catalog.counts()["chunks"]
    engine.close()
    queries = list(read_queries("nfcorpus").values())[: args.queries]
    sides = {"before": args.baseline, "after": ROOT}
    load_before = load_average()
    runs: dict[str, list[dict[str, Any]]] = {"before": [], "after": []}
    with tempfile.TemporaryDirectory() as tmp:
        queries_file = Path(tmp) / "queries.json"
        queries_file.write_text(json.dumps(queries))
        for r in range(args.rounds):
            order = ["before", "after"] if r % 2 == 0 else ["after", "before"]
            for side in order:
                print(f"round {r + 1}/{args.rounds}: {side}", file=sys.stderr)
                runs[side].append(run_side(sides[side], data_dir, queries_file, Path(tmp) / f"{side}-{r}.json"))
    load_after = load_average()

    per_query = {side: [statistics.median(run["ms"][i] for run in runs[side]) for i in range(len(queries))]
                 for side in sides}
    same = sum(runs["before"][0]["hits"][i] == runs["after"][0]["hits"][i] for i in range(len(queries)))
    stable = all(run["hits"] == runs[side][0]["hits"] for side in sides for run in runs[side])
    p = paired_randomization_test(per_query["after"], per_query["before"], trials=args.trials)
    low, high = bootstrap_mean_ci([a - b for a, b in zip(per_query["after"], per_query["before"], strict=True)])
    mean = {side: statistics.fmean(per_query[side]) for side in sides}
    slower = p < 0.05 and mean["after"] > mean["before"]

    print(f"\n## Before vs after: {chunks} chunks, {len(queries)} nfcorpus queries, {args.rounds} rounds per side "
          f"(load average {load_before} -> {load_after})\n")
    print(table(["side", "mean ms", "p50 ms", "p95 ms"], [
        [side, f"{mean[side]:.2f}", f"{percentile(per_query[side], 0.5):.2f}", f"{percentile(per_query[side], 0.95):.2f}"]
        for side in sides
    ]))
    print(f"\nafter - before: {mean['after'] - mean['before']:+.2f} ms a query (95% CI [{low:+.2f}, {high:+.2f}]), "
          f"ratio {mean['after'] / mean['before']:.3f}, paired randomization p = {p:.4f}")
    print(f"identical results (ids and scores to 1e-6): {same} of {len(queries)} queries; "
          f"each side the same in every round: {stable}")
    print("goal met" if same == len(queries) and not slower else "GOAL MISSED")
    write_result("before_after", {
        "baseline": str(args.baseline), "chunks": chunks, "queries": len(queries), "rounds": args.rounds,
        "load_average": [load_before, load_after], "mean_ms": mean,
        "p50_ms": {side: percentile(per_query[side], 0.5) for side in sides},
        "p95_ms": {side: percentile(per_query[side], 0.95) for side in sides},
        "diff_ci_ms": [low, high], "p_value": p, "identical_queries": same, "stable": stable,
        "goal_met": same == len(queries) and not slower,
    })


if __name__ == "__main__":
    main()
