"""Cold start: ``rag search`` wall time from a fresh process on the quickstart index, with and without torch.

Each run is a new ``python -m rag.cli search QUERY`` process, as a user or a script starts it, timed
from spawn to exit (wall), with its CPU seconds and peak RSS from ``wait4``. The sides, in the same run:

- ``torch``: ``embedding.onnx_queries=false``, the query embedded by sentence-transformers on PyTorch:
  the process imports torch and loads the model, as every query process did before the torch-free
  encoder (it also built the ONNX session on top, so the old path was slower still; ``--baseline``
  measures it);
- ``onnx``: the shipped default, the torch-free ONNX query encoder exported at ingest;
- ``baseline`` (with ``--baseline TREE``): an earlier checkout exported as a tree, e.g.
  ``git archive 3c40bc1 | tar -x -C /tmp/base``, run with the tree first on ``PYTHONPATH`` as ``rag``.

The sides take turns run by run (the order reversed every round), so a drift in the machine's load hits
them alike; each side reports the median and the spread of its runs. One extra run per side under
``python -X importtime`` lists the slowest imports (cumulative) and whether torch was imported.

The index is the quickstart's: ``rag ingest docs`` into ``benchmarks/.cache/quickstart`` (incremental,
so only the first run embeds), with its own ``RAG_CACHE_DIR`` so the ONNX export made by ingest is part
of what is measured. Goal (issue 20): ``onnx`` median <= 1.5 s wall and no torch import.

    python -m benchmarks.bench_coldstart [--runs 10] [--baseline /tmp/base]
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, load_average, percentile, table, write_result

ROOT = Path(__file__).resolve().parent.parent
INDEX = CACHE / "quickstart"
ONNX_CACHE = CACHE / "quickstart-model-cache"
QUERIES = [
    "What happens when I re-run rag ingest on a folder where only one file changed?",
    "How do I filter search results by metadata?",
    "Which vector stores are supported?",
    "How do API keys and scopes work?",
]
HEAVY = ("torch", "transformers", "sentence_transformers", "onnxruntime", "tokenizers")


def env_for(side: str, baseline: Path | None, pythonpath: Path) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAG_CACHE_DIR": str(ONNX_CACHE),
           "PYTHONPATH": str(pythonpath), "RAG_EMBEDDING__ONNX_QUERIES": "false" if side == "torch" else "true"}
    if side == "baseline" and baseline is not None:
        env["PYTHONPATH"] = str(baseline)
    return env


def search_command(query: str) -> list[str]:
    return [sys.executable, "-m", "rag.cli", "--data-dir", str(INDEX), "search", query, "-k", "5", "--json"]


def timed_run(command: list[str], env: dict[str, str]) -> dict[str, float]:
    """Wall seconds from spawn to exit, CPU seconds (user + system) and peak RSS of one process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read().decode() if process.stderr else ""
    if process.returncode != 0:
        sys.exit(f"`{' '.join(command)}` failed ({process.returncode}): {error[-2000:]}")
    return {"wall_s": wall, "cpu_s": usage.ru_utime + usage.ru_stime, "rss_mb": usage.ru_maxrss / 1024}


def import_profile(env: dict[str, str], query: str, top: int = 12) -> dict[str, Any]:
    """The slowest imports (cumulative, top level and their direct imports) of one search under
    ``python -X importtime``, the total import time and which heavy modules were imported."""
    done = subprocess.run([sys.executable, "-X", "importtime", *search_command(query)[1:]], env=env, cwd=ROOT,
                          capture_output=True, text=True, check=True)
    rows = []
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if match:
            rows.append((int(match[2]), len(match[3]) // 2, match[4]))
    top_level = sum(us for us, depth, _ in rows if depth == 0)
    return {
        "total_import_s": round(top_level / 1e6, 3),
        "heavy_imported": [name for name in HEAVY if any(module == name for _, _, module in rows)],
        "top": [{"module": module, "cumulative_ms": round(us / 1000, 1)}
                for us, depth, module in sorted(rows, reverse=True) if depth <= 1][:top],
    }


def ensure_index(env: dict[str, str]) -> None:
    """``rag ingest docs`` into the benchmark's index (the quickstart); incremental after the first time."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "rag.cli", "--data-dir", str(INDEX), "ingest", str(ROOT / "docs")],
                          check=False, env=env, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"ingest failed: {done.stderr[-2000:]}")
    print(f"index ready in {time.perf_counter() - started:.1f} s: {done.stdout.strip().splitlines()[-1]}", file=sys.stderr)


def summary(runs: list[dict[str, float]]) -> dict[str, Any]:
    wall = [r["wall_s"] for r in runs]
    return {
        "runs": len(runs),
        "wall_median_s": round(statistics.median(wall), 3),
        "wall_p25_s": round(percentile(wall, 0.25), 3), "wall_p75_s": round(percentile(wall, 0.75), 3),
        "wall_min_s": round(min(wall), 3), "wall_max_s": round(max(wall), 3),
        "cpu_median_s": round(statistics.median(r["cpu_s"] for r in runs), 3),
        "rss_median_mb": round(statistics.median(r["rss_mb"] for r in runs), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=10, help="timed processes per side (default 10)")
    parser.add_argument("--baseline", type=Path, help="an earlier checkout's tree, measured as a third side")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        pythonpath = Path(tmp)
        (pythonpath / "rag").symlink_to(ROOT)  # this checkout as ``rag``, whatever else is installed
        sides = ["torch", "onnx"]
        baseline = None
        if args.baseline:
            baseline = Path(tempfile.mkdtemp(dir=tmp))
            (baseline / "rag").symlink_to(args.baseline.resolve())
            sides.append("baseline")
        envs = {side: env_for(side, baseline, pythonpath) for side in sides}
        ensure_index(envs["onnx"])
        load_start = load_average()
        for side in sides:  # warm the page cache and make sure each side's exports exist, untimed
            timed_run(search_command(QUERIES[0]), envs[side])
        runs: dict[str, list[dict[str, float]]] = {side: [] for side in sides}
        for number in range(args.runs):
            order = sides if number % 2 == 0 else sides[::-1]
            for side in order:
                runs[side].append(timed_run(search_command(QUERIES[number % len(QUERIES)]), envs[side]))
            print(f"round {number + 1}/{args.runs}: " + ", ".join(
                f"{side} {runs[side][-1]['wall_s']:.2f} s" for side in sides), file=sys.stderr)
        imports = {side: import_profile(envs[side], QUERIES[1]) for side in sides}
        load_end = load_average()

    results = {side: summary(runs[side]) | {"imports": imports[side], "runs_detail": runs[side]} for side in sides}
    rows = [[side, s["wall_median_s"], f"{s['wall_p25_s']:.2f}–{s['wall_p75_s']:.2f}",
             f"{s['wall_min_s']:.2f}–{s['wall_max_s']:.2f}", s["cpu_median_s"], s["rss_median_mb"],
             s["imports"]["total_import_s"], ", ".join(s["imports"]["heavy_imported"]) or "none"]
            for side, s in results.items()]
    print(f"\n`rag search` from a fresh process, {args.runs} runs per side, interleaved; "
          f"load average {load_start} at the start, {load_end} at the end\n")
    print(table(["side", "wall median s", "p25–p75", "min–max", "CPU s", "RSS MB", "imports s", "heavy imports"], rows))
    for side in sides:
        print(f"\nslowest imports ({side}, cumulative ms):")
        print(table(["module", "ms"], [[t["module"], t["cumulative_ms"]] for t in imports[side]["top"][:8]]))
    speedup = results["torch"]["wall_median_s"] / results["onnx"]["wall_median_s"]
    print(f"\nonnx vs torch: {speedup:.1f}x faster (median wall); goal: onnx median <= 1.5 s and no torch import")
    path = write_result("coldstart", {
        "index": str(INDEX.relative_to(ROOT)), "queries": QUERIES, "runs_per_side": args.runs,
        "load_start": load_start, "load_end": load_end, "speedup_median_wall": round(speedup, 2),
        "sides": results,
    })
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
