"""Resume after a kill: how much of an interrupted ingest of one big JSONL file is kept.

The nfcorpus corpus (all 3,162 documents unless ``--docs`` takes a slice) is written as one JSONL file
into a fresh folder, and ``rag ingest FOLDER --json`` runs as a subprocess. ``rag status --json`` is
polled until at least half of the documents are committed; then the ingest gets SIGKILL (no chance to
clean up), ``rag status --json`` is read right after the kill, and the same ingest runs again to the
end. The re-run's ``chunks_added`` over the chunks in the finished index is the share of the work that
was done twice or never kept.

Goals: the re-run embeds at most 60 % of the chunks, and ``rag status`` right after the kill already
shows the committed documents. As a check, the finished index must hold every document once, and as
many chunks as a clean ingest (the cached ``benchmarks/.cache/nfcorpus`` index, when present, for the
full corpus).

    python -m benchmarks.bench_resume [--docs 3162] [--poll 0.5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, read_corpus, table, write_result

GOAL_RERUN_FRACTION = 0.60
RAG = [str(Path(sys.executable).with_name("rag"))]  # the installed console script of this environment


def rag(data_dir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``rag --data-dir DATA_DIR ARGS`` to the end, capturing its output."""
    return subprocess.run([*RAG, "--data-dir", str(data_dir), *args], capture_output=True, text=True, env=_env(),
                          check=False)


def status(data_dir: Path) -> dict[str, Any] | None:
    """``rag status --json``, or ``None`` when it fails (e.g. before the first commit creates the index)."""
    done = rag(data_dir, "status", "--json")
    if done.returncode != 0:
        return None
    return json.loads(done.stdout)


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=None, help="Only the first N nfcorpus documents.")
    parser.add_argument("--poll", type=float, default=0.5, help="Seconds between status polls.")
    args = parser.parse_args()

    docs = read_corpus("nfcorpus")[: args.docs]
    work = CACHE / "resume-bench"
    shutil.rmtree(work, ignore_errors=True)
    (work / "corpus").mkdir(parents=True)
    with open(work / "corpus" / "corpus.jsonl", "w", encoding="utf-8") as fh:
        for doc in docs:
            fh.write(json.dumps(doc) + "\n")
    data_dir = work / ".rag"
    half = -(-len(docs) // 2)

    # First run: poll until half the documents are committed, then kill -9.
    log = work / "first-run.stderr"
    started = time.perf_counter()
    with open(log, "w", encoding="utf-8") as err:  # a file, not a pipe: a full pipe would stall the ingest
        ingest = subprocess.Popen(
            [*RAG, "--data-dir", str(data_dir), "ingest", str(work / "corpus"), "--json"],
            stdout=subprocess.DEVNULL, stderr=err, env=_env(),
        )
    polls: list[dict[str, Any]] = []
    killed_at = None
    while ingest.poll() is None:
        seen = status(data_dir)
        polls.append({"s": round(time.perf_counter() - started, 2), "documents": seen and seen["documents"],
                      "chunks": seen and seen["chunks"]})
        if seen and seen["documents"] >= half:
            ingest.send_signal(signal.SIGKILL)
            ingest.wait()
            killed_at = time.perf_counter() - started
            break
        time.sleep(args.poll)
    at_kill = status(data_dir)
    if killed_at is None:
        print(f"the ingest ended (exit {ingest.returncode}) before {half} documents were committed; "
              f"last status {polls[-1] if polls else None}\n{log.read_text()[-2000:]}", file=sys.stderr)

    # Second run: the same command, to the end.
    started = time.perf_counter()
    rerun = rag(data_dir, "ingest", str(work / "corpus"), "--json")
    rerun_s = time.perf_counter() - started
    if rerun.returncode != 0:
        sys.exit(f"the re-run failed (exit {rerun.returncode}):\n{rerun.stderr[-2000:]}")
    report = json.loads(rerun.stdout)
    final = status(data_dir) or {}

    clean = None
    if args.docs is None and (CACHE / "nfcorpus").is_dir():
        clean = (status(CACHE / "nfcorpus") or {}).get("chunks")
    total = final.get("chunks", 0)
    fraction = report["chunks_added"] / total if total else float("nan")
    docs_at_kill = (at_kill or {}).get("documents", 0)
    complete = final.get("documents") == len(docs) and (clean is None or total == clean)
    meets = bool(killed_at is not None and fraction <= GOAL_RERUN_FRACTION and docs_at_kill > 0 and complete)

    rows = [
        ["first run, killed (SIGKILL)", f"{killed_at:.1f}" if killed_at is not None else "not killed",
         docs_at_kill, (at_kill or {}).get("chunks", 0), "-"],
        ["re-run to the end", f"{rerun_s:.1f}", final.get("documents"), total, report["chunks_added"]],
    ]
    print(f"\n## Resume: {len(docs)} nfcorpus documents in one JSONL file, killed at >= {half} committed documents\n")
    print(table(["run", "seconds", "documents (status after)", "chunks (status after)", "chunks embedded"], rows))
    print(f"\nre-run embedded {report['chunks_added']} of {total} chunks = {fraction:.2f} "
          f"(goal <= {GOAL_RERUN_FRACTION}); "
          f"status right after the kill: {docs_at_kill} documents (goal > 0); finished index complete: {complete}"
          + (f" ({total} chunks, clean ingest {clean})" if clean is not None else ""))
    path = write_result("resume", {
        "documents": len(docs), "kill_at_documents": half, "killed_after_s": killed_at,
        "status_after_kill": at_kill, "polls": polls, "rerun": report, "rerun_s": rerun_s, "final_status": final,
        "clean_ingest_chunks": clean, "rerun_fraction": fraction, "goal_rerun_fraction": GOAL_RERUN_FRACTION,
        "complete": complete, "meets_goal": meets,
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
