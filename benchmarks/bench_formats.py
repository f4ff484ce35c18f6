"""Formats: does every file format people keep reach the index intact? Retrieval, OCR, speed and memory.

:mod:`benchmarks.formats_corpus` writes real files of 19 formats with the real libraries (Markdown, text,
reStructuredText, HTML with boilerplate, PDF with a text layer, a two-column PDF with a ruled table,
image-only scanned PDFs at 150 dpi, PNG/JPEG/TIFF photos of text, DOCX, PPTX, XLSX, CSV, EML with PDF and
DOCX attachments, MBOX, EPUB, IPYNB, ``.md.gz``), each holding invented facts, with distractors of the same
kind, and 43 questions that each have exactly one answering document (or table row). Then, per format:

- **hit@1 / hit@5**: the whole corpus is ingested by the real engine at the shipped defaults into a fresh
  data directory, and every question is searched with the default hybrid retrieval (``engine.search(q, 5)``).
  A hit is a chunk of the answering file (``doc_id`` is the file, or ``<file>#...`` for documents inside it);
  where the answer is one document inside the file (an attachment, one message of a mailbox) that document,
  told by its id or title; where the answer is a table row, a chunk with a line holding both the row's key
  cell and the answering cell. Whether that chunk's ``row_start..row_end`` covers the row is recorded too.
- **OCR character error rate**: Levenshtein distance between the parsed text of each scan or photo and the
  text it was rendered from (both whitespace-normalised), over the length of the known text.
- **files/s and pages/s**: each format's files are parsed with ``rag.ingest.loaders.load_file`` in a fresh
  subprocess, after one untimed warm-up parse of the first file (which loads libraries and OCR models); the
  pass over all files is repeated until a second has gone by, and the rate is that of the mean pass.
- **peak RSS**: that subprocess's maximum resident set size (``VmHWM``; see :func:`peak_rss_mib`); the
  "(baseline)" row is the same subprocess parsing nothing, i.e. the interpreter with ``rag.ingest`` imported.
- **CPU seconds** per pass (all threads), beside the wall time, since wall time moves with the load of a
  shared machine.

A file whose parser is missing or fails shows up in the "status" column with the reason from the
``IngestReport`` (and the parse worker); the script does not stop. Goals: hit@5 >= 0.9 for every format,
CER <= 3 % on the clean 150-dpi scans (pdf-scan), OCR >= 1 page/s on two cores (pdf-scan).

    python -m benchmarks.bench_formats [--formats pdf-scan xlsx ...] [--skip-speed] [--corpus DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

# Only the standard library, numpy and the corpus builder (whose file libraries load lazily) at module
# level: the parse worker runs this module too, and its peak RSS must be what parsing costs, not the engine.
from benchmarks.formats_corpus import FORMATS, OCR_FORMATS, Corpus, Question, build_corpus, text_images

BASELINE = "(baseline)"
PAGED = frozenset({"pdf", "pdf-2col", "pdf-scan", "png", "jpeg", "tiff"})
K = 5  # hits asked per question; hit@1 and hit@5 are reported
GOAL_HIT5, GOAL_CER, GOAL_OCR_PAGES_S = 0.9, 0.03, 1.0
MIN_TIMED_S = 1.0  # a parse pass is repeated until this long has gone by


# -- scoring ----------------------------------------------------------------------------------------


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions all cost 1), one numpy row per char of ``a``.

    Within a row, ``new[j] = min(sub_or_del[j], new[j-1] + 1)`` unrolls to ``j + min_{k<=j}(sub_or_del[k] - k)``,
    a running minimum, so the insertions need no Python loop either.
    """
    if not a or not b:
        return len(a) + len(b)
    codes = np.frombuffer(b.encode("utf-32-le"), dtype=np.uint32)
    index = np.arange(len(b) + 1)
    row = index.copy()
    for i, char in enumerate(a, start=1):
        step = np.empty_like(row)
        step[0] = i
        step[1:] = np.minimum(row[:-1] + (codes != ord(char)), row[1:] + 1)
        row = np.minimum.accumulate(step - index) + index
    return int(row[-1])


def normalise(text: str) -> str:
    """Whitespace runs as single spaces: OCR's line breaks are not errors."""
    return " ".join(text.split())


def character_error_rate(recognised: str, known: str) -> float:
    """Edit distance from ``recognised`` to ``known`` over the length of ``known`` (both normalised)."""
    known = normalise(known)
    return edit_distance(normalise(recognised), known) / max(len(known), 1)


def answers(question: Question, doc_id: str, text: str, metadata: dict[str, Any]) -> bool:
    """Whether a retrieved chunk (its document id, text and metadata) answers ``question``."""
    if doc_id != question.path and not doc_id.startswith(question.path + "#"):
        return False
    if question.part is not None:
        title = str(metadata.get("title") or "")
        # An attachment is named in its id (``message.eml#1/report.pdf``) or title; a message by its subject.
        named = question.part in doc_id or title == question.part
        if "." in question.part and question.part in title:
            named = True
        if metadata.get("subject") == question.part and not metadata.get("parent_id"):
            named = True
        if not named:
            return False
    if question.row_key is not None:
        return any(question.row_key in line and str(question.row_value) in line for line in text.splitlines())
    return True


# -- parse worker (a subprocess per format) ---------------------------------------------------------


def parse_worker(fmt: str, manifest: Path, out: Path) -> None:
    """Parse every file of ``fmt`` with ``load_file`` at the shipped limits; write timings and texts to ``out``."""
    from rag.core.errors import LoaderError
    from rag.core.settings import load_settings
    from rag.ingest.loaders import load_file
    from rag.ingest.parsers import ParseLimits

    corpus = Corpus.from_json(manifest.read_text())
    files = corpus.files_of(fmt)
    ingest = load_settings().ingest
    limits = ParseLimits(
        max_file_mb=ingest.max_file_mb, max_unpacked_mb=ingest.max_unpacked_mb, max_pages=ingest.max_pages,
        max_rows=ingest.max_rows, max_depth=ingest.max_depth, ocr=ingest.ocr,
    )

    def load(rel: str) -> list[Any]:
        return load_file(corpus.root / rel, doc_id=rel, source=rel, limits=limits, problems=[])

    warm_up_s = None
    if files:
        # Untimed: loads the parser's libraries (and the OCR models). OCR formats warm up on a one-line
        # image rather than their first file, which would cost a full page of OCR for nothing.
        warm_up = files[0].path
        if fmt in OCR_FORMATS:
            image, _ = next(text_images(["Warm-up line for the OCR models 0123456789"], height_in=None))
            image.save(out.with_suffix(".png"))
            warm_up = str(out.with_suffix(".png"))
        started = time.perf_counter()
        try:
            load(warm_up)
        except LoaderError:
            pass  # reported by the timed pass below
        warm_up_s = time.perf_counter() - started
    records: list[dict[str, Any]] = []
    passes, started, cpu_started = 0, time.perf_counter(), time.process_time()
    # Fast formats parse in milliseconds: repeat the pass until a second has gone by, so their rate is not
    # timer noise. Slow ones (OCR) run once. The records are those of the first pass.
    while not passes or time.perf_counter() - started < MIN_TIMED_S:
        for item in files:
            began = time.perf_counter()
            record: dict[str, Any] = {"path": item.path}
            try:
                docs = load(item.path)
            except LoaderError as exc:
                record.update(ok=False, reason=str(exc))
            else:
                record.update(ok=True, documents=len(docs), chars=sum(len(d.text) for d in docs))
                if item.known_text is not None:
                    record["text"] = "\n".join(d.text for d in docs)
            record["seconds"] = time.perf_counter() - began
            if not passes:
                records.append(record)
        passes += 1
    seconds = (time.perf_counter() - started) / passes
    cpu_s = (time.process_time() - cpu_started) / passes  # all threads: load-independent where wall time is not
    out.write_text(json.dumps({
        "warm_up_s": warm_up_s, "seconds": seconds, "cpu_s": cpu_s, "passes": passes, "files": records,
        "peak_rss_mib": peak_rss_mib(),
    }))


def peak_rss_mib() -> float | None:
    """This process's peak resident set size since it exec'd (``VmHWM``), in MiB; ``None`` off Linux.

    ``getrusage``'s ``ru_maxrss`` would not do: Linux carries it across ``fork`` and ``exec``, so a child
    started by a parent of 140 MiB reports at least 140 MiB however little it uses itself.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure_parsing(fmt: str, manifest: Path, work: Path) -> dict[str, Any]:
    """Run :func:`parse_worker` for ``fmt`` in a fresh interpreter; its result plus the child's peak RSS."""
    out = work / f"parse-{fmt.strip('()')}.json"
    command = [sys.executable, "-m", "benchmarks.bench_formats", "--worker", fmt, "--manifest", str(manifest),
               "--worker-out", str(out)]
    returncode = subprocess.call(command, cwd=Path(__file__).resolve().parent.parent)
    if returncode != 0 or not out.is_file():
        return {"error": f"parse worker exited with status {returncode}", "peak_rss_mib": None}
    return json.loads(out.read_text())


# -- retrieval through the engine -------------------------------------------------------------------


def evaluate_retrieval(corpus: Corpus, data_dir: Path, k: int) -> dict[str, Any]:
    """Ingest the corpus at the shipped defaults and search every question; the report and per-question ranks."""
    from rag.core.settings import ChunkingSettings, IngestSettings, RetrievalSettings, load_settings
    from rag.engine import RagEngine

    shutil.rmtree(data_dir, ignore_errors=True)
    engine = RagEngine(load_settings(data_dir=data_dir), project_root=corpus.root)
    settings = engine.settings
    if (settings.retrieval, settings.ingest, settings.chunking) != (RetrievalSettings(), IngestSettings(), ChunkingSettings()):
        sys.exit("retrieval, ingest or chunking settings differ from the shipped defaults; unset RAG_* variables "
                 "and move rag.toml away to measure the defaults")
    engine.embedder.encode_query("warm up")  # load the model outside the ingest clock
    started = time.perf_counter()
    # Files are passed one by one (not the folder), so a file no parser reads is reported as failed with
    # the registry's reason instead of being skipped silently by the folder walk.
    report = engine.ingest([corpus.root / f.path for f in corpus.files])
    ingest_s = time.perf_counter() - started
    results = []
    for question in corpus.questions:
        hits = engine.search(question.text, k)
        rank, row_covered = None, None
        for position, hit in enumerate(hits, start=1):
            if answers(question, hit.chunk.doc_id, hit.chunk.text, hit.chunk.metadata):
                rank = position
                meta = hit.chunk.metadata
                if question.row is not None and meta.get("row_start") is not None:
                    row_covered = bool(meta["row_start"] <= question.row <= meta.get("row_end", meta["row_start"]))
                break
        results.append({
            "question": question.text, "format": question.fmt, "path": question.path, "rank": rank,
            "row_covered": row_covered, "top": [h.chunk.doc_id for h in hits],
        })
    status = engine.status()
    engine.close()
    return {
        "ingest_s": ingest_s, "documents": status["documents"], "chunks": status["chunks"],
        "added": report.added, "failed": [list(item) for item in report.failed], "questions": results,
    }


# -- per-format rows --------------------------------------------------------------------------------


def format_row(fmt: str, corpus: Corpus, retrieval: dict[str, Any], parsing: dict[str, Any] | None) -> dict[str, Any]:
    """Everything measured for one format, for the table and the JSON."""
    files = corpus.files_of(fmt)
    paths = {f.path for f in files}
    failed = {what: reason for what, reason in retrieval["failed"] if what in paths}
    problems = [f"{what}: {reason}" for what, reason in retrieval["failed"]
                if what not in paths and any(what.startswith(p + ":") for p in paths)]
    asked = [q for q in retrieval["questions"] if q["format"] == fmt]
    ingested = len(paths) - len(failed)
    hit = lambda n: sum(1 for q in asked if q["rank"] is not None and q["rank"] <= n) / len(asked) if asked else None
    row: dict[str, Any] = {
        "format": fmt, "files": len(files), "ingested": ingested, "questions": len(asked),
        "hit@1": hit(1) if ingested else None, "hit@5": hit(5) if ingested else None,
        "row_covered": [q["row_covered"] for q in asked if q["row_covered"] is not None],
        "failed": failed, "problems": problems,
    }
    pages = sum(f.pages or 0 for f in files) if fmt in PAGED else None
    row["pages"] = pages
    if parsing is not None:
        row["peak_rss_mib"] = parsing["peak_rss_mib"]
        records = parsing.get("files", [])
        all_ok = bool(records) and all(r["ok"] for r in records)
        seconds = parsing.get("seconds")
        row["parse_s"] = seconds
        row["warm_up_s"] = parsing.get("warm_up_s")
        row["files_per_s"] = len(records) / seconds if all_ok and seconds else None
        row["pages_per_s"] = pages / seconds if all_ok and seconds and pages else None
        row["cpu_s"] = parsing.get("cpu_s")
        row["cpu_s_per_page"] = row["cpu_s"] / pages if all_ok and row["cpu_s"] is not None and pages else None
        row["parse_error"] = parsing.get("error") or next((r["reason"] for r in records if not r["ok"]), None)
        if fmt in OCR_FORMATS:
            known = {f.path: f.known_text for f in files}
            per_file = {r["path"]: character_error_rate(r["text"], known[r["path"]]) for r in records if r.get("text") is not None}
            row["cer_per_file"] = per_file
            if per_file and len(per_file) == len(files):
                total_known = sum(len(normalise(known[p])) for p in per_file)
                row["cer"] = sum(per_file[p] * len(normalise(known[p])) for p in per_file) / total_known
    return row


def status_text(row: dict[str, Any]) -> str:
    """A short verdict for the table: ok, or the first reason something failed."""
    if row["failed"]:
        reason = next(iter(row["failed"].values()))
        return f"{len(row['failed'])}/{row['files']} failed: {reason}"[:90]
    if row.get("parse_error"):
        return f"parse: {row['parse_error']}"[:90]
    if row["problems"]:
        return f"{len(row['problems'])} problem(s): {row['problems'][0]}"[:90]
    return "ok"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--formats", nargs="+", choices=FORMATS, default=None,
                        help="Measure speed and memory for these formats only (retrieval always uses the whole corpus).")
    parser.add_argument("--skip-speed", action="store_true", help="No parse subprocesses: retrieval and ingest only.")
    parser.add_argument("--corpus", type=Path, default=None, help="Where to write the corpus (default benchmarks/.cache/formats).")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--manifest", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--worker-out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        parse_worker(args.worker, args.manifest, args.worker_out)
        return
    run(args)


def run(args: argparse.Namespace) -> None:
    """The benchmark proper (the parent process)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from benchmarks.common import CACHE, load_average, table, write_result

    work = CACHE / "formats"
    root = args.corpus or work / "corpus"
    shutil.rmtree(root, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    corpus = build_corpus(root)
    build_s = time.perf_counter() - started
    manifest = work / "manifest.json"
    manifest.write_text(corpus.to_json())
    print(f"corpus: {len(corpus.files)} files, {len(corpus.questions)} questions, built in {build_s:.1f} s",
          file=sys.stderr)
    load_start = load_average()

    parsing: dict[str, dict[str, Any]] = {}
    if not args.skip_speed:
        for fmt in [BASELINE, *(args.formats or FORMATS)]:
            parsing[fmt] = measure_parsing(fmt, manifest, work)
            print(f"parsed {fmt}: {parsing[fmt].get('seconds', float('nan')):.2f} s, "
                  f"{parsing[fmt]['peak_rss_mib'] or float('nan'):.0f} MiB", file=sys.stderr)
    retrieval = evaluate_retrieval(corpus, work / ".rag", K)
    load_end = load_average()

    rows = [format_row(fmt, corpus, retrieval, parsing.get(fmt)) for fmt in FORMATS]
    baseline = parsing.get(BASELINE)
    fmt_num = lambda v, spec: "-" if v is None else format(v, spec)
    print(f"\n## Formats: {len(corpus.files)} files, {len(corpus.questions)} questions, "
          f"{retrieval['documents']} documents, {retrieval['chunks']} chunks (ingest {retrieval['ingest_s']:.0f} s)\n")
    lines = [[r["format"], f"{r['ingested']}/{r['files']}", fmt_num(r["pages"], "d"), r["questions"],
              fmt_num(r["hit@1"], ".2f"), fmt_num(r["hit@5"], ".2f"), fmt_num(r.get("cer"), ".2%"),
              fmt_num(r.get("files_per_s"), ".1f"), fmt_num(r.get("pages_per_s"), ".2f"),
              fmt_num(r.get("cpu_s_per_page"), ".2f"), fmt_num(r.get("peak_rss_mib"), ".0f"), status_text(r)]
             for r in rows]
    if baseline is not None:
        lines.append([BASELINE, "-", "-", "-", "-", "-", "-", "-", "-", "-", fmt_num(baseline["peak_rss_mib"], ".0f"),
                      "interpreter + rag.ingest, nothing parsed"])
    print(table(["format", "ingested", "pages", "questions", "hit@1", f"hit@{K}", "OCR CER", "files/s",
                 "pages/s", "CPU s/page", "peak RSS MiB", "status"], lines))

    asked = retrieval["questions"]
    overall = {n: sum(1 for q in asked if q["rank"] is not None and q["rank"] <= n) / len(asked) for n in (1, K)}
    scan = next(r for r in rows if r["format"] == "pdf-scan")
    goals = {
        f"hit@{K} >= {GOAL_HIT5} for every format": all((r["hit@5"] or 0) >= GOAL_HIT5 for r in rows),
        f"CER <= {GOAL_CER:.0%} on 150-dpi scans": scan.get("cer") is not None and scan["cer"] <= GOAL_CER,
        f"OCR >= {GOAL_OCR_PAGES_S:g} page/s": (scan.get("pages_per_s") or 0) >= GOAL_OCR_PAGES_S,
    }
    print(f"\noverall hit@1 {overall[1]:.2f}, hit@{K} {overall[K]:.2f} over {len(asked)} questions; "
          f"load average {load_start} at start, {load_end} at end")
    if scan.get("cpu_s_per_page"):
        # Wall time on a shared machine says little; the CPU time says what two idle cores would do at best.
        print(f"pdf-scan OCR used {scan['cpu_s_per_page']:.2f} CPU s per page: at best "
              f"{2 / scan['cpu_s_per_page']:.2f} pages/s on two otherwise idle cores")
    for goal, met in goals.items():
        print(f"- {goal}: {'met' if met else 'MISSED'}")
    misses = [q for q in asked if q["rank"] is None]
    if misses:
        print("\nquestions without an answering chunk in the top k:")
        for q in misses:
            print(f"- [{q['format']}] {q['question']} (expected {q['path']}; got {', '.join(q['top'][:3]) or 'nothing'})")
    path = write_result("formats", {
        "files": len(corpus.files), "questions": len(asked), "k": K, "scan_dpi": 150,
        "overall": {"hit@1": overall[1], f"hit@{K}": overall[K]},
        "goals": goals, "ingest": {k: retrieval[k] for k in ("ingest_s", "documents", "chunks", "failed")},
        "baseline_peak_rss_mib": baseline["peak_rss_mib"] if baseline else None,
        "formats": rows, "per_question": asked, "load": {"start": load_start, "end": load_end},
    })
    print(f"wrote {path}", file=sys.stderr)


if __name__ == "__main__":
    main()
