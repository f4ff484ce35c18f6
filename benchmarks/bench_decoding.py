"""Decoding that does not loop: the bundled SmolLM2 answering ``docs_qa`` with the old and the new decoding.

The repository's ``docs/`` is ingested (shipped settings) into ``benchmarks/.cache/decoding-docs``; each
question of ``evaluate/testsets/docs_qa.jsonl`` is retrieved once and the same hits are answered by the
embedded llama.cpp server (SmolLM2-135M-Instruct, structured output as shipped, i.e. ``generation.mode =
llm``) under each decoding, the decodings taking turns question by question:

- ``old``: no penalties, no repetition stop (the decoding before issue 17);
- ``new``: the shipped decoding: the embedded server's penalties (``EMBEDDED_PENALTIES``, none since
  these runs) and the repetition stop (8 words);
- ``stop``: the stop alone; ``penalties``: frequency_penalty 0.3 and repeat_penalty 1.15 with the stop
  (the first candidate defaults, rejected: see docs/benchmarks.md);
- any ``--extra NAME:fp=0.5,pp=0,rp=1.3,stop=8`` (the sweep that chose the defaults).

Every request has the same seed. Before the arms answer a question, one 1-token request with the same
prompt fills llama.cpp's prompt cache, so every arm finds the prompt processed and its seconds are the
decoding alone (otherwise the first arm would pay for the prompt and the others reuse it).

Per answer: the share of its sentences that repeat an earlier sentence, whether the text the user gets
still loops (a repeated sentence or 8-word run), whether the stop cut it, whether it is text copied from
the prompt (a block's label such as ``[1] docs/search.md § Search``, or the JSON placeholder ``<the answer``),
token F1 against the reference answer (SQuAD-style: lower case, no punctuation, articles or citation markers), seconds, completion tokens
and whether it cites a block. Paired randomization tests compare each arm with ``old``.

    python -m benchmarks.bench_decoding --arms old stop --extra "rp1.1+stop:rp=1.1,stop=8"   # results/decoding.json
    python -m benchmarks.bench_decoding --arms old penalties --out decoding_penalties
    python -m benchmarks.bench_decoding --questions 40 --arms old new penalties   # all of docs_qa
"""

from __future__ import annotations

import argparse
import collections
import json
import re
import shutil
import string
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import CACHE, ROOT, load_average, mean, table, write_result
from rag.core.settings import load_settings
from rag.engine import RagEngine
from rag.evaluate.significance import paired_randomization_test
from rag.generate import LlamaCppServer, OpenAIChatGenerator
from rag.generate.llamacpp_server import EMBEDDED_PENALTIES
from rag.generate.repetition import trim_repetition

TESTSET = ROOT.parent / "evaluate" / "testsets" / "docs_qa.jsonl"
_CITATION = re.compile(r"\[\d+(?:\s*,\s*\d+)*\]")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+|\n+")
_ARTICLES = re.compile(r"\b(a|an|the)\b")
# A context block's label ("[1] docs/search.md § Search > ...") or the prompt's JSON placeholder
# ("<the answer, citing blocks like [1]>") written as the answer: text copied from the prompt, not an answer.
_PROMPT_ECHO = re.compile(r"\S+\.\w+ § |<the answer")
_FIELDS = {"fp": "frequency_penalty", "pp": "presence_penalty", "rp": "repeat_penalty", "stop": "repeat_stop_words"}


def arm_options(spec: str) -> dict[str, Any]:
    """``fp=0.3,rp=1.15,stop=8`` -> generator keyword arguments."""
    options: dict[str, Any] = {"repeat_stop_words": 0}
    for item in filter(None, spec.split(",")):
        key, _, value = item.partition("=")
        options[_FIELDS[key.strip()]] = int(value) if key.strip() == "stop" else float(value)
    return options


ARMS = {
    "old": {"repeat_stop_words": 0},
    "new": {**EMBEDDED_PENALTIES, "repeat_stop_words": 8},
    "stop": {"repeat_stop_words": 8},
    "penalties": {"frequency_penalty": 0.3, "repeat_penalty": 1.15, "repeat_stop_words": 8},
}


def normalize(text: str) -> list[str]:
    text = _CITATION.sub(" ", text.casefold())
    text = "".join(" " if c in string.punctuation else c for c in text)
    return _ARTICLES.sub(" ", text).split()


def token_f1(answer: str, reference: str) -> float:
    got, want = normalize(answer), normalize(reference)
    common = sum((collections.Counter(got) & collections.Counter(want)).values())
    if not got or not want or not common:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def repeated_sentence_rate(answer: str) -> float:
    """The share of the answer's sentences (of 3 words or more) equal to an earlier one, words compared."""
    sentences = [tuple(normalize(s)) for s in _SENTENCE_END.split(answer)]
    sentences = [s for s in sentences if len(s) >= 3]
    seen: set[tuple[str, ...]] = set()
    repeats = 0
    for sentence in sentences:
        repeats += sentence in seen
        seen.add(sentence)
    return repeats / len(sentences) if sentences else 0.0


def docs_engine() -> RagEngine:
    """An engine over a copy of the repository's docs/ (sources read ``docs/...``, as docs_qa names them)."""
    project = CACHE / "decoding-docs"
    shutil.rmtree(project / "docs", ignore_errors=True)
    shutil.copytree(ROOT.parent / "docs", project / "docs")
    engine = RagEngine(load_settings(data_dir=project / ".rag", generation={"mode": "llm"}), project_root=project)
    report = engine.ingest([project / "docs"])
    print(f"docs: {report.chunks_added} chunks added", file=sys.stderr)
    return engine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--questions", type=int, default=12, help="First N questions of docs_qa [12 of 40].")
    parser.add_argument("--threads", type=int, default=1, help="llama.cpp threads [1: fastest on a busy machine].")
    parser.add_argument("--arms", nargs="+", default=["old", "new"], choices=list(ARMS),
                        help="Decodings to compare [old new].")
    parser.add_argument("--extra", nargs="*", default=[], help="More arms, NAME:fp=..,pp=..,rp=..,stop=..")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", default="decoding", help="Result name: benchmarks/results/NAME.json [decoding].")
    parser.add_argument("--trials", type=int, default=10000)
    args = parser.parse_args()

    arms = {name: ARMS[name] for name in args.arms}
    for spec in args.extra:
        name, _, options = spec.partition(":")
        arms[name] = arm_options(options)
    if "old" not in arms:
        sys.exit("the old decoding is the baseline: keep 'old' in --arms")
    questions = [json.loads(line) for line in TESTSET.read_text(encoding="utf-8").splitlines() if line.strip()]
    questions = questions[: args.questions]

    engine = docs_engine()
    load_before = load_average()
    records: dict[str, list[dict[str, Any]]] = {name: [] for name in arms}
    with tempfile.TemporaryDirectory(prefix="bench-decoding-") as tmp, LlamaCppServer(
        log_path=Path(tmp) / "llm-server.log", threads=args.threads
    ) as server:
        def make(**options: Any) -> OpenAIChatGenerator:
            return OpenAIChatGenerator(
                server.base_url, server.model, structured=True, count_tokens=engine.count_tokens,
                extra_body={"seed": args.seed}, **options,
            )

        generators = {name: make(**options) for name, options in arms.items()}
        warm_up = make(max_tokens=1, repeat_stop_words=0)
        for done, item in enumerate(questions, start=1):
            hits = engine.search(item["question"])
            warm_up.generate(item["question"], hits)  # the prompt into llama.cpp's cache, for every arm alike
            for name, generator in generators.items():
                started = time.perf_counter()
                answer = generator.generate(item["question"], hits)
                seconds = time.perf_counter() - started
                records[name].append({
                    "id": item["id"],
                    "answer": answer.text,
                    "f1": token_f1(answer.text, item["reference"]),
                    "repeated_sentence_rate": repeated_sentence_rate(answer.text),
                    "loops": float(trim_repetition(answer.text)[1] is not None or repeated_sentence_rate(answer.text) > 0),
                    "stopped": float(any("repeating itself" in w for w in answer.warnings)),
                    "cited": float(bool(answer.citations)),
                    "echoes_prompt": float(bool(_PROMPT_ECHO.search(answer.text))),
                    "seconds": seconds,
                    "completion_tokens": (answer.usage or {}).get("completion_tokens"),
                })
            print(f"{done}/{len(questions)}: " + ", ".join(f"{name} {r[-1]['seconds']:.1f} s" for name, r in
                  records.items()), file=sys.stderr)
    engine.close()

    metrics = ["repeated_sentence_rate", "loops", "stopped", "echoes_prompt", "f1", "seconds", "cited"]
    summary: dict[str, Any] = {}
    rows = []
    for name, rows_of in records.items():
        arm: dict[str, Any] = {"options": arms[name]}
        for metric in metrics:
            values = [r[metric] for r in rows_of]
            arm[metric] = mean(values)
            if name != "old":
                baseline = [r[metric] for r in records["old"]]
                arm[f"{metric}_p_vs_old"] = paired_randomization_test(values, baseline, trials=args.trials)
        summary[name] = arm
        rows.append([
            name, ", ".join(f"{k}={v}" for k, v in arms[name].items()),
            f"{arm['repeated_sentence_rate']:.3f}" + _p(arm, "repeated_sentence_rate"),
            f"{int(sum(r['loops'] for r in rows_of))}/{len(rows_of)}" + _p(arm, "loops"),
            f"{int(sum(r['stopped'] for r in rows_of))}",
            f"{int(sum(r['echoes_prompt'] for r in rows_of))}/{len(rows_of)}" + _p(arm, "echoes_prompt"),
            f"{arm['f1']:.3f}" + _p(arm, "f1"),
            f"{arm['seconds']:.1f}" + _p(arm, "seconds"),
            f"{int(sum(r['cited'] for r in rows_of))}/{len(rows_of)}",
        ])
    print(f"\n## Decoding: SmolLM2-135M on the first {len(questions)} docs_qa questions (structured output)\n")
    print(table(["arm", "options", "repeated sentences", "answers that loop", "cut by the stop", "label or placeholder",
                 "token F1",
                 "s/answer", "answers citing"], rows))
    print("\n(p: paired randomization test against old, two-sided)")
    path = write_result(args.out, {
        "command": " ".join(sys.argv[1:]),
        "questions": len(questions),
        "of": sum(1 for line in TESTSET.read_text(encoding="utf-8").splitlines() if line.strip()),
        "threads": args.threads,
        "seed": args.seed,
        "load_before": load_before,
        "load_after": load_average(),
        "summary": summary,
        "answers": records,
    })
    print(f"wrote {path}", file=sys.stderr)


def _p(arm: dict[str, Any], metric: str) -> str:
    p = arm.get(f"{metric}_p_vs_old")
    return "" if p is None else f" (p {p:.3f})"


if __name__ == "__main__":
    main()
