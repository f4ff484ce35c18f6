"""Load on the REST API: 1, 4 and 16 concurrent clients on /search (100k chunks) and /ask (embedded LLM).

A real ``python -m rag.api`` server process serves the ~100k-chunk index of ``bench_query_latency``
(NFCorpus replicated through the real catalog, store and BM25) as its default collection, at the shipped
defaults (``api.concurrency = 4``, exact FAISS, the embedded SmolLM2 for answers). Clients are threads
with their own HTTP connection; each sends its next request as soon as the last one is answered
(closed loop), with NFCorpus queries in a fixed order. For every level the script reports requests,
errors (any non-200 or transport error), throughput and p50/p95/p99 latency. The server's resident
memory (its own process; the llama.cpp child separately) is read from ``/proc`` after warm-up and after
a soak of ``--soak-minutes`` of /search load at 4 clients. The baseline is the same server in the same
run at one client: the goal compares throughput at 4 clients with it.

Goals (2 cores): 0 errors; /search throughput at 4 clients >= 1.6x that at 1 client; memory growth
during the soak < 5 %.

    python -m benchmarks.bench_api_load [--chunks 100000] [--seconds 30] [--ask-seconds 60] [--soak-minutes 10]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from benchmarks.bench_query_latency import replicated_engine
from benchmarks.common import load_average, percentile, read_queries, table, write_result

LEVELS = (1, 4, 16)


def start_server(data_dir: Path) -> tuple[subprocess.Popen, str]:
    server = subprocess.Popen(
        [sys.executable, "-m", "rag.api", "--data-dir", str(data_dir), "--port", "0"],
        stderr=subprocess.PIPE, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    assert server.stderr is not None
    line = server.stderr.readline()
    match = re.search(r"serving at (\S+)", line)
    if not match:
        server.kill()
        sys.exit(f"the API server did not start: {line}{server.stderr.read()}")
    threading.Thread(target=server.stderr.read, daemon=True).start()  # keep draining its log
    return server, match.group(1)


def rss_mb(pid: int) -> float:
    """Resident memory of one process, from /proc (MB)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def load(url: str, path: str, bodies: list[dict[str, Any]], clients: int, seconds: float, timeout: float) -> dict[str, Any]:
    """``clients`` closed-loop clients for ``seconds``; latencies of the requests that finished in time."""
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.monotonic() + seconds

    def client(offset: int) -> None:
        with httpx.Client(base_url=url, timeout=timeout) as http:
            i = offset
            while time.monotonic() < deadline:
                body = bodies[i % len(bodies)]
                i += clients
                started = time.perf_counter()
                try:
                    response = http.post(path, json=body)
                    ok = response.status_code == 200
                    problem = None if ok else f"HTTP {response.status_code}: {response.text[:200]}"
                except httpx.HTTPError as exc:
                    problem = f"{type(exc).__name__}: {exc}"
                elapsed = (time.perf_counter() - started) * 1000
                with lock:
                    if problem:
                        errors.append(problem)
                    else:
                        latencies.append(elapsed)

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(n,)) for n in range(clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    return {
        "endpoint": path.rsplit("/", 1)[-1], "clients": clients, "requests": len(latencies) + len(errors),
        "errors": len(errors), "error_samples": errors[:3], "seconds": wall,
        "throughput_rps": len(latencies) / wall,
        "p50_ms": percentile(latencies, 0.5), "p95_ms": percentile(latencies, 0.95), "p99_ms": percentile(latencies, 0.99),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--chunks", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0, help="Duration of each /search level.")
    parser.add_argument("--ask-seconds", type=float, default=60.0, help="Duration of each /ask level.")
    parser.add_argument("--soak-minutes", type=float, default=10.0)
    args = parser.parse_args()

    engine = replicated_engine(args.chunks)
    data_dir, chunks = engine.data_dir, engine.catalog.counts()["chunks"]
    engine.close()
    queries = list(read_queries("nfcorpus").values())
    searches = [{"query": q, "k": 10} for q in queries]
    questions = [{"question": q, "k": 5} for q in queries]

    load_start = load_average()
    server, url = start_server(data_dir)
    try:
        load(url, "/v1/collections/default/search", searches[:20], 1, 5, 120)  # load the index, warm caches
        load(url, "/v1/collections/default/ask", questions[:2], 1, 1, 300)  # start the embedded LLM
        rows = [load(url, "/v1/collections/default/search", searches, n, args.seconds, 120) for n in LEVELS]
        rows += [load(url, "/v1/collections/default/ask", questions, n, args.ask_seconds, 600) for n in LEVELS]
        rss_start = rss_mb(server.pid)
        llm = children(server.pid)
        llm_start = rss_mb(llm[0]) if llm else None
        soak = load(url, "/v1/collections/default/search", searches, 4, args.soak_minutes * 60, 120)
        rss_end = rss_mb(server.pid)
        llm_end = rss_mb(llm[0]) if llm else None
    finally:
        server.terminate()
        server.wait(timeout=60)
    load_end = load_average()

    one, four = rows[0]["throughput_rps"], rows[1]["throughput_rps"]
    growth = (rss_end - rss_start) / rss_start
    errors = sum(r["errors"] for r in rows) + soak["errors"]
    print(f"\n## REST API under load ({chunks} chunks; closed-loop clients; load average {load_start} -> {load_end})\n")
    print(table(
        ["endpoint", "clients", "requests", "errors", "req/s", "p50 ms", "p95 ms", "p99 ms"],
        [[r["endpoint"], r["clients"], r["requests"], r["errors"], r["throughput_rps"], r["p50_ms"], r["p95_ms"], r["p99_ms"]]
         for r in [*rows, {**soak, "endpoint": f"search (soak, {args.soak_minutes:g} min)"}]],
    ))
    print(f"\n/search throughput at 4 clients: {four / one:.2f}x that at 1 client (goal >= 1.6)")
    print(f"server RSS {rss_start:.0f} MB -> {rss_end:.0f} MB after the soak: {100 * growth:+.1f} % (goal < 5 %)"
          + (f"; llama.cpp child {llm_start:.0f} -> {llm_end:.0f} MB" if llm_start else ""))
    print(f"errors: {errors} (goal 0)")
    path = write_result("api_load", {
        "chunks": chunks, "levels": list(LEVELS), "rows": rows, "soak": soak,
        "search_scaling_4_vs_1": four / one, "rss_mb": {"start": rss_start, "end": rss_end, "growth": growth},
        "llm_rss_mb": {"start": llm_start, "end": llm_end}, "errors": errors,
        "load_average": {"start": load_start, "end": load_end},
        "meets_goal": bool(errors == 0 and four / one >= 1.6 and growth < 0.05),
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
