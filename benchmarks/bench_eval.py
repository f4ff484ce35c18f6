"""Time per question of ``rag eval run`` with the embedded judge (SmolLM2-135M in llama.cpp), offline.

The repository's ``docs/`` is ingested into ``benchmarks/.cache/eval-docs`` and the bundled QA set
(``docs_qa``, first ``--questions``) is evaluated with the shipped defaults: answers from the embedded
SmolLM2, faithfulness and context recall judged by the embedded SmolLM2 (grammar-constrained JSON,
``--judge-max-tokens`` 1024), plus nDCG/recall/MRR@10. Each run uses a fresh judge cache. The same-run
baselines are the answering phase alone (what ``rag ask`` costs per question) and a second, identical
``rag eval run`` into the same folder, which must answer from the checkpoint and the judge cache.

    python -m benchmarks.bench_eval [--questions 8] [--threads N]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, ROOT, load_average, table, write_result

RAG = [sys.executable, "-m", "rag.cli"]


def _env(cache: Path, threads: int | None) -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "RAG_CACHE_DIR": str(cache)}
    if threads:
        env["RAG_LLM__THREADS"] = str(threads)
    return env


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=8, help="First N questions of docs_qa.")
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads for answers and judge [default: all].")
    args = parser.parse_args()

    project = CACHE / "eval-docs"
    shutil.rmtree(project / "docs", ignore_errors=True)
    shutil.copytree(ROOT.parent / "docs", project / "docs")
    with tempfile.TemporaryDirectory(prefix="bench-eval-") as tmp:
        cache = Path(tmp) / "cache"
        env = _env(cache, args.threads)
        ingest = subprocess.run([*RAG, "--data-dir", str(project / ".rag"), "ingest", "docs", "--json"], cwd=project,
                                capture_output=True, text=True, env=env, check=False)
        if ingest.returncode != 0:
            sys.exit(f"ingest failed: {ingest.stderr}")
        out = Path(tmp) / "run"
        command = [*RAG, "--data-dir", str(project / ".rag"), "eval", "run", "docs_qa", "--out", str(out),
                   "--limit", str(args.questions), "--json"]
        runs: list[dict[str, Any]] = []
        for label in ("first run (fresh judge cache)", "same command again"):
            load_before = load_average()
            started = time.perf_counter()
            done = subprocess.run(command, cwd=project, capture_output=True, text=True, env=env, check=False)
            wall = time.perf_counter() - started
            if done.returncode != 0:
                sys.exit(f"rag eval run failed: {done.stderr}")
            results = json.loads(done.stdout)
            runs.append({"label": label, "wall_seconds": round(wall, 1), "load_before": load_before,
                         "load_after": load_average(), "results": results})
    n = args.questions
    rows = []
    for run in runs:
        r = run["results"]
        timing, calls = r["timing"], r["judge"]["calls"]
        rows.append([run["label"], round(run["wall_seconds"] / n, 1), round(timing["answer_seconds"] / n, 1),
                     round(timing["judge_seconds"] / n, 1), calls["sent"], calls["cached"], calls["failed"]])
    first = runs[0]["results"]
    missing = {m: s["missing"] for m, s in first["summary"].items()}
    print(f"\n## rag eval run, embedded judge: {n} questions of docs_qa\n")
    print(table(["run", "s/question (wall)", "answering s/question", "judging s/question", "judge calls sent",
                 "from cache", "failed"], rows))
    print("\nscores (smoke-test only, 135M judge): " + ", ".join(
        f"{m} {s['mean']:.3f} (missing {s['missing']})" if s["mean"] is not None else f"{m} - (missing {s['missing']})"
        for m, s in first["summary"].items()))
    path = write_result("eval", {
        "questions": n,
        "threads": args.threads,
        "judge": {k: first["judge"][k] for k in ("model", "embedded", "max_tokens", "json_schema", "concurrency")},
        "runs": [{**{k: v for k, v in run.items() if k != "results"}, "timing": run["results"]["timing"],
                  "judge_calls": run["results"]["judge"]["calls"], "latency": run["results"]["latency"],
                  "summary": run["results"]["summary"]} for run in runs],
        "missing": missing,
        "versions": first["versions"],
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
