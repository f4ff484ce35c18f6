"""Decode speed of the embedded judge (packaged SmolLM2 in llama.cpp) by thread count, on this machine as it is.

Why: llama.cpp's own default takes every core; on a busy 2-core machine its threads wait for each other. This
measures tokens per second of one judge-sized request per thread count (the server started fresh for each,
prompt cache off, fixed seed, so every count decodes the same tokens) and prints the default
:func:`rag.evaluate.judge.default_judge_threads` picks here. A request that takes longer than --timeout is
reported as timed out rather than waited for.

    python -m benchmarks.bench_judge_threads            # threads 1 and 2, 32 tokens
    python -m benchmarks.bench_judge_threads --threads 1 2 4 --tokens 64
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.common import load_average, table, write_result
from rag.evaluate.judge import EMBEDDED_REQUEST, default_judge_threads
from rag.generate import LlamaCppServer

PROMPT = ("Given a context and an answer, analyze each sentence in the answer and classify if the sentence can be "
          "attributed to the given context or not. Use only 'Yes' (1) or 'No' (0) as a binary classification. "
          "Output json with reason.\n\ncontext: A chunk is a window of 200 tokens. Consecutive windows share 40 "
          "tokens.\nanswer: 200 tokens, with 40 tokens of overlap.")


def measure(threads: int, tokens: int, timeout: float, log: Path) -> dict[str, object]:
    with LlamaCppServer(log_path=log, n_ctx=2048, threads=threads) as server:
        body = {"model": server.model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": tokens,
                "temperature": 0.01, "ignore_eos": True, **EMBEDDED_REQUEST}
        started = time.perf_counter()
        try:
            reply = httpx.post(f"{server.base_url}/chat/completions", json=body, timeout=timeout).json()
        except httpx.TimeoutException:
            return {"threads": threads, "tokens_per_s": None, "seconds": None, "timed_out": True}
        seconds = time.perf_counter() - started
        timings = reply.get("timings") or {}
        return {"threads": threads, "tokens_per_s": timings.get("predicted_per_second"),
                "prompt_tokens_per_s": timings.get("prompt_per_second"), "seconds": seconds, "timed_out": False}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--timeout", type=float, default=120.0)
    args = parser.parse_args()
    load_before = load_average()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(t, args.tokens, args.timeout, Path(tmp) / "server.log") for t in args.threads]
    cpus = len(os.sched_getaffinity(0))
    print(f"CPUs {cpus}, load average before {load_before}, default judge threads here: {default_judge_threads()}")
    print(table(["threads", "tokens/s", "seconds", "timed out"],
                [[r["threads"], r["tokens_per_s"], r["seconds"], r["timed_out"]] for r in rows]))
    write_result("judge_threads", {"cpus": cpus, "load_average": load_before, "tokens": args.tokens,
                                   "default_judge_threads": default_judge_threads(), "rows": rows})


if __name__ == "__main__":
    main()
