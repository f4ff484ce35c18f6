"""Extractive answers against the bundled LLM on the bundled docs QA set, with the same retrieval for both.

The repository's ``docs/`` is ingested (the shipped defaults) into ``benchmarks/.cache/answers-docs``. For
each question of ``evaluate/testsets/docs_qa.jsonl`` the hits are retrieved once (``retrieval.k`` = 5) and
both generators answer from exactly those hits:

- ``extractive``: ``generation.mode = "extractive"`` (the default with no ``llm.base_url``);
- ``llm``: ``generation.mode = "llm"``, the embedded llama.cpp server with the packaged SmolLM2-135M and
  the shipped ``[llm]`` settings (structured output on), ``--threads`` llama.cpp threads.

Measures that need no judge, per answer, with ``[n]`` markers removed first:

- token F1 and ROUGE-L (F) against the reference answer (SQuAD normalisation: lower case, no punctuation,
  no articles);
- verbatim: the share of the answer's sentences found word for word (whitespace aside) in a passage the
  answer cites;
- repeated: the answer holds a sentence twice; restates: a sentence of it adds fewer than two content
  terms to the question (:func:`rag.generate.extractive.restates`); empty: no answer text;
- latency: seconds to generate the answer from the hits (retrieval excluded: it is shared); the start-up
  (the embedder's first use, or llama.cpp starting) is timed apart.

Token F1 and ROUGE-L are compared with a paired randomization test and a paired bootstrap 95 % interval
(:mod:`rag.evaluate.significance`). RAGAS faithfulness with the embedded judge is not run here (see
``rag eval``); the verbatim share is its judge-free counterpart.

    python -m benchmarks.bench_answers [--questions N] [--threads 1] [--modes extractive,llm]

With one mode (``--modes extractive``: a minute, where the LLM takes about 50 s an answer on a busy
machine) the table has that column only and the result goes to ``results/answers-<mode>.json``.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import string
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, ROOT, load_average, mean, percentile, table, write_result
from rag.core.analysis import Analyzer
from rag.core.answers import CITATION_MARKER, Answer
from rag.core.settings import load_settings
from rag.engine import RagEngine
from rag.evaluate.significance import paired_bootstrap_ci, paired_randomization_test
from rag.generate.extractive import restates, split_sentences

TESTSET = ROOT.parent / "evaluate" / "testsets" / "docs_qa.jsonl"
MODES = ("extractive", "llm")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = str.maketrans("", "", string.punctuation)


def normalise(text: str) -> list[str]:
    """SQuAD's answer normalisation, as tokens: lower case, punctuation and articles removed."""
    return _ARTICLES.sub(" ", text.lower().translate(_PUNCTUATION)).split()


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 between two texts."""
    pred, ref = normalise(prediction), normalise(reference)
    common = sum((Counter(pred) & Counter(ref)).values())
    if not pred or not ref or not common:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure (longest common subsequence of normalised tokens)."""
    pred, ref = normalise(prediction), normalise(reference)
    if not pred or not ref:
        return 0.0
    previous = [0] * (len(ref) + 1)
    for token in pred:
        current = [0]
        for j, other in enumerate(ref, start=1):
            current.append(previous[j - 1] + 1 if token == other else max(previous[j], current[j - 1]))
        previous = current
    lcs = previous[-1]
    if not lcs:
        return 0.0
    precision, recall = lcs / len(pred), lcs / len(ref)
    return 2 * precision * recall / (precision + recall)


def _plain(text: str) -> str:
    return " ".join(CITATION_MARKER.sub(" ", text).split())


def answer_measures(question: str, reference: str, answer: Answer, analyzer: Analyzer) -> dict[str, Any]:
    """The judge-free measures of one answer (see the module docstring)."""
    text = _plain(answer.text)
    sentences = split_sentences(text) if text else []
    cited = [_plain(c.hit.chunk.text) for c in answer.citations]  # a passage may hold "[1]" itself
    verbatim = [any(s in passage for passage in cited) for s in sentences]
    keys = [s.lower() for s in sentences]
    question_terms = frozenset(analyzer(question))
    return {
        "f1": token_f1(text, reference),
        "rouge_l": rouge_l(text, reference),
        "sentences": len(sentences),
        "verbatim": sum(verbatim) / len(sentences) if sentences else 0.0,
        "repeated": len(set(keys)) < len(keys),
        "restates": any(restates(frozenset(analyzer(s)), question_terms) for s in sentences),
        "empty": not text,
        "words": len(text.split()),
        "citations": [c.number for c in answer.citations],
    }


def _project() -> Path:
    project = CACHE / "answers-docs"
    shutil.rmtree(project / "docs", ignore_errors=True)
    shutil.copytree(ROOT.parent / "docs", project / "docs")
    return project


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=None, help="First N questions of docs_qa [default: all 40].")
    parser.add_argument("--threads", type=int, default=1,
                        help="llama.cpp threads (1 is fastest on a busy machine) [default: 1].")
    parser.add_argument("--modes", default="extractive,llm", help="Which generators answer [default: both].")
    args = parser.parse_args()
    modes = tuple(m for m in MODES if m in args.modes.split(","))
    if not modes:
        parser.error(f"--modes names none of {', '.join(MODES)}")

    cases = [json.loads(line) for line in TESTSET.read_text(encoding="utf-8").splitlines() if line.strip()]
    cases = cases[: args.questions] if args.questions else cases
    project = _project()
    settings = {"data_dir": project / ".rag", "llm": {"threads": args.threads}}
    analyzer = Analyzer()
    load_before = load_average()
    records: list[dict[str, Any]] = [{"id": c["id"], "question": c["question"]} for c in cases]
    startup: dict[str, float] = {}
    with RagEngine(load_settings(**settings, generation={"mode": "extractive"}), project_root=project) as engine:
        report = engine.ingest([project / "docs"])
        print(f"ingested docs/: {len(report.added) + len(report.updated)} files (re)indexed, {len(report.unchanged)} unchanged")
        hits = [engine.retrieve(c["question"]).hits for c in cases]
        started = time.perf_counter()
        engine.generator().generate("warm up", hits[0])
        startup["extractive"] = time.perf_counter() - started
        for record, case, found in zip(records, cases, hits if "extractive" in modes else []):
            started = time.perf_counter()
            answer = engine.generator().generate(case["question"], found)
            record["extractive"] = {"seconds": time.perf_counter() - started, "answer": answer.text,
                                    **answer_measures(case["question"], case["reference"], answer, analyzer)}
    if "llm" in modes:
        with RagEngine(load_settings(**settings, generation={"mode": "llm"}), project_root=project) as engine:
            started = time.perf_counter()
            generator = engine.generator()  # starts llama.cpp
            startup["llm"] = time.perf_counter() - started
            for number, (record, case, found) in enumerate(zip(records, cases, hits), start=1):
                started = time.perf_counter()
                answer = generator.generate(case["question"], found)
                record["llm"] = {"seconds": time.perf_counter() - started, "answer": answer.text,
                                 **answer_measures(case["question"], case["reference"], answer, analyzer)}
                print(f"  llm {number}/{len(cases)}: {record['llm']['seconds']:.1f} s", flush=True)

    summary: dict[str, dict[str, float]] = {}
    for mode in modes:
        rows = [r[mode] for r in records]
        seconds = [r["seconds"] for r in rows]
        summary[mode] = {
            "token_f1": mean(r["f1"] for r in rows),
            "rouge_l": mean(r["rouge_l"] for r in rows),
            "verbatim_sentences": mean(r["verbatim"] for r in rows),
            "answers_with_repeated_sentence": mean(float(r["repeated"]) for r in rows),
            "answers_restating_question": mean(float(r["restates"]) for r in rows),
            "empty_answers": mean(float(r["empty"]) for r in rows),
            "mean_words": mean(r["words"] for r in rows),
            "latency_p50_s": percentile(seconds, 0.5),
            "latency_p95_s": percentile(seconds, 0.95),
            "startup_s": startup[mode],
        }
    tests = {}
    for metric, key in (("token_f1", "f1"), ("rouge_l", "rouge_l")) if modes == MODES else ():
        a = [r["extractive"][key] for r in records]
        b = [r["llm"][key] for r in records]
        low, high = paired_bootstrap_ci(a, b)
        tests[metric] = {"difference": mean(a) - mean(b), "ci95": [low, high],
                         "p_randomization": paired_randomization_test(a, b)}

    headers = ["measure", *modes]
    print(f"\ndocs_qa, {len(cases)} questions, same hits for both (k = 5); llm = embedded SmolLM2-135M, "
          f"{args.threads} thread(s)")
    print(table(headers, [[name, *(summary[m][name] for m in modes)] for name in summary[modes[0]]]))
    print()
    if tests:
        print(table(["extractive - llm", "difference", "95% CI", "p (paired randomization)"],
                [[m, t["difference"], f"[{t['ci95'][0]:.4f}, {t['ci95'][1]:.4f}]", t["p_randomization"]]
                 for m, t in tests.items()]))
    path = write_result("answers" if modes == MODES else f"answers-{modes[0]}", {
        "command": "python -m benchmarks.bench_answers"
                   + (f" --questions {args.questions}" if args.questions else "") + f" --threads {args.threads}"
                   + ("" if modes == MODES else f" --modes {modes[0]}"),
        "testset": "evaluate/testsets/docs_qa.jsonl", "questions": len(cases), "k": 5,
        "llm": "embedded SmolLM2-135M-Instruct (llama.cpp), shipped [llm] settings",
        "load_average_before": load_before, "load_average_after": load_average(),
        "summary": summary, "tests": tests, "per_question": records,
    })
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
