"""One evaluation run: answer every question of a test set, judge the answers, write the reports.

A run has two phases, each resumable:

1. **Answers.** Every question goes through :meth:`RagEngine.ask` (or only retrieval when no judge metric
   needs an answer), timed per stage. Each result is appended to ``<out>/checkpoint/answers.jsonl`` as soon
   as it exists, so a run killed mid-way and started again with the same ``--out`` answers only the
   questions that were not answered yet. The checkpoint is stamped with a fingerprint of the settings and
   the test set; a different configuration in the same folder is refused rather than mixed in.
2. **Scores.** Judge metrics go to the judge (see :mod:`rag.evaluate.judge`, whose disk cache makes a
   resumed run skip every call already answered); retrieval metrics are computed from the ranked
   documents.

Then ``results.json``, ``samples.jsonl``, ``report.md`` and ``report.html`` are written (see
:mod:`rag.evaluate.report`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import shutil
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from rag.core.errors import ConfigError
from rag.core.filters import Filter, parse_filter
from rag.core.query import QueryOptions
from rag.core.settings import Settings
from rag.evaluate.judge import Judge, JudgeConfig
from rag.evaluate.metrics import JudgeMetrics, MetricSpec, score_retrieval
from rag.evaluate.testset import TestCase, TestSet

log = logging.getLogger(__name__)

CHECKPOINT = "checkpoint"
REPORT_FILES = ("results.json", "samples.jsonl", "report.md", "report.html")

# Settings that do not change an answer, only its speed or how long it is waited for.
RESULT_NEUTRAL = {"llm": ("threads", "timeout", "max_retries"), "retrieval": ("stage_timeout",)}

Progress = Callable[[str, int, int], None]
"""``progress(phase, done, total)``; phase is ``"answer"`` or ``"judge"``."""


@dataclass(slots=True)
class RunSpec:
    """What to evaluate and where the reports go.

    Args:
        testset: the questions.
        out: the run folder (created; a finished or interrupted run there with the same fingerprint is resumed).
        settings: the settings of the collection under test, overrides applied.
        metrics: what to compute (see :func:`rag.evaluate.metrics.parse_metrics`).
        judge: the judge configuration (unused when no judge metric is asked for).
        project_root: passed to the engine (document ids are relative to it).
        collection: the collection's name, for the report.
        overrides: the ``--set`` overrides, for the report.
        options: the query options every question is asked with (a test case's own filters are ANDed
            with ``options.filter``); by default the collection's configured defaults.
        name: a label for the run in comparisons (default: the folder name).
        overwrite: discard whatever the folder holds instead of resuming or refusing.
        notes: remarks for the report (defaults left out, ...).
    """

    testset: TestSet
    out: Path
    settings: Settings
    metrics: list[MetricSpec]
    judge: JudgeConfig = field(default_factory=JudgeConfig)
    project_root: Path | None = None
    collection: str = "default"
    overrides: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    overwrite: bool = False
    notes: list[str] = field(default_factory=list)
    options: QueryOptions = field(default_factory=QueryOptions)

    @property
    def judge_metrics(self) -> list[str]:
        return [m.name for m in self.metrics if m.kind == "judge"]

    @property
    def needs_answers(self) -> bool:
        return bool(self.judge_metrics)

    @property
    def max_cutoff(self) -> int:
        return max((m.cutoff or 0 for m in self.metrics if m.kind == "retrieval"), default=0)

    def fingerprint(self, *, legacy: bool = False) -> str:
        """What makes two runs' answers interchangeable: settings, collection, test set, whether answers are made.

        Settings that change only how fast or how patiently answers are made (:data:`RESULT_NEUTRAL`: threads,
        timeouts, retries) are left out, so a run that timed out can be resumed with other values.
        ``legacy`` gives the fingerprint of earlier versions, which included them.
        """
        settings = self.settings.model_dump(mode="json")
        if not legacy:
            for section, names in RESULT_NEUTRAL.items():
                for name in names:
                    settings.get(section, {}).pop(name, None)
        identity = {"settings": settings, "collection": self.collection, "testset": self.testset.sha256,
                    "answers": self.needs_answers, "cutoff": self.max_cutoff}
        if options := self.options.given():  # only when set, so runs made before options existed still resume
            identity["options"] = {
                name: [[c.field, c.op, c.value] for c in value.conditions] if isinstance(value, Filter) else value
                for name, value in options.items()
            }
        blob = json.dumps(identity, sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(slots=True)
class RunResult:
    """A finished run: the summary written to ``results.json`` and the per-question records."""

    out: Path
    results: dict[str, Any]
    samples: list[dict[str, Any]]


# -- phase 1: answers ---------------------------------------------------------------------------------


def _prepare_folder(spec: RunSpec) -> Path:
    """Create the run folder and its checkpoint; refuse a folder holding another configuration's run."""
    out = spec.out
    checkpoint = out / CHECKPOINT
    if spec.overwrite:
        shutil.rmtree(checkpoint, ignore_errors=True)
        for name in REPORT_FILES:
            (out / name).unlink(missing_ok=True)
    try:
        checkpoint.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the run folder {out}: {exc.strerror or exc}") from None
    stamp = checkpoint / "run.json"
    fingerprint = spec.fingerprint()
    if stamp.is_file():
        try:
            recorded = json.loads(stamp.read_text(encoding="utf-8")).get("fingerprint")
        except (OSError, ValueError):
            recorded = None
        if recorded not in (fingerprint, spec.fingerprint(legacy=True)):
            raise ConfigError(
                f"{out} holds a run with other settings or another test set; choose another --out, "
                "or pass --overwrite to replace it"
            )
    stamp.write_text(json.dumps({"fingerprint": fingerprint}), encoding="utf-8")
    return checkpoint / "answers.jsonl"


def _read_checkpoint(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # the line a kill cut short
            done[record["id"]] = record
    return done


def _context(number: int, hit: Any) -> dict[str, Any]:
    chunk = hit.chunk
    return {
        "number": number,
        "doc_id": chunk.doc_id,
        "chunk_id": chunk.chunk_id,
        "source": chunk.metadata.get("source", chunk.doc_id),
        "section": chunk.metadata.get("section", ""),
        "score": hit.score,
        "text": hit.context_text,  # what the generator read: the chunk, or it widened by generation.expand
    }


def _stages(retrieval: Any) -> dict[str, float]:
    """Per-stage milliseconds from an answer's retrieval record (``explain["stages"]``), when there is one."""
    explain = getattr(retrieval, "explain", None)
    if isinstance(explain, dict):
        stages: dict[str, float] = {}
        for stage in explain.get("stages", []) or []:
            if isinstance(stage, dict) and "stage" in stage and isinstance(stage.get("ms"), (int, float)):
                stages[str(stage["stage"])] = stages.get(str(stage["stage"]), 0.0) + float(stage["ms"])
        return stages
    return {}


def case_options(options: QueryOptions, case: TestCase) -> QueryOptions:
    """The run's ``options`` for one test case: the case's own filters ANDed with the run's filter."""
    if not case.filters:
        return options
    own = parse_filter(case.filters)
    return replace(options, filter=own if options.filter is None else options.filter & own)


def answer_case(
    engine: Any, case: TestCase, *, answers: bool, cutoff: int, options: QueryOptions | None = None
) -> dict[str, Any]:
    """Retrieve (and answer, with ``answers``) one question; the record the checkpoint and reports hold.

    ``options`` are the run's query options (default: the configured ones); see :func:`case_options`.
    """
    from rag.core.answers import AnswerError

    asked = case_options(options or QueryOptions(), case)

    record: dict[str, Any] = {**case.to_dict(), "answer": None, "error": None, "model": None, "warnings": [],
                              "usage": None, "contexts": [], "ranked_doc_ids": [], "timings": {}, "answerable": None}
    started = time.perf_counter()
    sources_at: list[float] = []
    hits: list[Any] = []
    retrieval: Any = None
    if answers:
        def on_sources(found: list[Any]) -> None:
            sources_at.append(time.perf_counter())

        try:
            answer = engine.ask(case.question, options=asked, on_sources=on_sources)
        except AnswerError as exc:
            record["error"] = str(exc)
            hits = list(exc.hits)
            retrieval = getattr(exc, "retrieval", None)
        else:
            record.update(answer=answer.text, model=answer.model, warnings=list(answer.warnings), usage=answer.usage)
            hits = list(answer.used_hits)
            retrieval = getattr(answer, "retrieval", None)
        ended = time.perf_counter()
        split = sources_at[0] if sources_at else ended
        record["timings"] = {"retrieval_ms": (split - started) * 1000, "generation_ms": (ended - split) * 1000}
    else:
        retrieval = engine.retrieve(case.question, options=asked)
        hits = list(retrieval.hits)
        record["timings"] = {"retrieval_ms": (time.perf_counter() - started) * 1000}
    record["timings"]["stages"] = _stages(retrieval)
    # The probability of the retrieval the hits (and the answer) came from: no second retrieval for it.
    record["answerable"] = getattr(retrieval, "answerable", None)
    record["contexts"] = [_context(n, hit) for n, hit in enumerate(hits, start=1)]
    if cutoff:
        # A document ranking for the retrieval metrics: one hit per document, best first.
        ranked = engine.search(case.question, options=replace(asked, k=cutoff, max_per_doc=1))
        record["ranked_doc_ids"] = list(dict.fromkeys(hit.chunk.doc_id for hit in ranked))
    record["timings"]["total_ms"] = (time.perf_counter() - started) * 1000
    return record


def _answering_settings(settings: Settings) -> Settings:
    """The run's settings as the engine gets them: an embedded answering LLM is asked, like the judge, without
    llama.cpp's prompt cache and with a fixed seed, so an answer does not depend on the question before it.
    Fields the user set in ``llm.extra_body`` win."""
    from rag.evaluate.judge import EMBEDDED_REQUEST

    if settings.llm.base_url:
        return settings
    llm = settings.llm.model_copy(update={"extra_body": {**EMBEDDED_REQUEST, **settings.llm.extra_body}})
    return settings.model_copy(update={"llm": llm})


def _answer_all(spec: RunSpec, checkpoint: Path,
                progress: Progress | None) -> tuple[list[dict[str, Any]], float, set[str]]:
    """Every question's record, the seconds spent answering now, and the ids whose answers the checkpoint held."""
    from rag.engine import RagEngine

    done = _read_checkpoint(checkpoint)
    cases = spec.testset.cases
    todo = [case for case in cases if case.id not in done]
    reused = {case.id for case in cases if case.id in done}
    resumed = len(reused)
    if resumed:
        log.info("resuming %s: %d of %d questions answered already", spec.out, resumed, len(cases))
    seconds = 0.0
    if progress:
        progress("answer", resumed, len(cases))
    if todo:
        for case in todo:  # bad filters fail before anything is asked
            try:
                parse_filter(case.filters)
            except ConfigError as exc:
                raise ConfigError(f"test case {case.id}: {exc}") from None
        started = time.perf_counter()
        with RagEngine(_answering_settings(spec.settings), project_root=spec.project_root) as engine, checkpoint.open("a", encoding="utf-8") as fh:
            # Load the models (and start an embedded LLM) before the clock runs, so the first question's
            # latency is not the start-up time.
            engine.search(todo[0].question, k=1)
            if spec.needs_answers:
                engine.generator()
            for number, case in enumerate(todo, start=resumed + 1):
                record = answer_case(
                    engine, case, answers=spec.needs_answers, cutoff=spec.max_cutoff, options=spec.options
                )
                fh.write(json.dumps(record, ensure_ascii=False) + "\n")
                fh.flush()
                done[case.id] = record
                if progress:
                    progress("answer", number, len(cases))
        seconds = time.perf_counter() - started
    return [done[case.id] for case in cases], seconds, reused


# -- phase 2: scores ----------------------------------------------------------------------------------


async def _judge_all(judge: Judge, spec: RunSpec, samples: list[dict[str, Any]], progress: Progress | None) -> None:
    metrics = JudgeMetrics(judge.llm(), lambda: judge.embeddings, spec.judge_metrics)
    # More questions in flight than judge slots keeps the slots busy; the LLM wrapper bounds the calls.
    gate = asyncio.Semaphore(max(2, judge.config.effective_concurrency * 2))
    finished = 0

    async def one(sample: dict[str, Any]) -> None:
        nonlocal finished
        async with gate:
            contexts = [c["text"] for c in sample["contexts"]]
            for name in spec.judge_metrics:
                score = await metrics.score(name, sample["question"], sample["answer"], contexts, sample["reference"])
                sample["scores"][name] = score.to_dict()
        finished += 1
        if progress:
            progress("judge", finished, len(samples))

    if progress:
        progress("judge", 0, len(samples))
    await asyncio.gather(*(one(sample) for sample in samples))


def score_samples(spec: RunSpec, samples: list[dict[str, Any]], judge: Judge | None,
                  progress: Progress | None = None) -> float:
    """Fill ``sample["scores"]`` for every metric; returns the seconds spent judging."""
    for sample in samples:
        sample["scores"] = {}
        for metric in spec.metrics:
            if metric.kind == "retrieval":
                relevant = {str(k): int(v) for k, v in (sample.get("reference_doc_ids") or {}).items()}
                sample["scores"][metric.name] = score_retrieval(metric, sample["ranked_doc_ids"], relevant).to_dict()
    if not spec.judge_metrics:
        return 0.0
    assert judge is not None
    started = time.perf_counter()
    asyncio.run(_judge_all(judge, spec, samples, progress))
    return time.perf_counter() - started


def run_eval(spec: RunSpec, *, judge: Judge | None = None, progress: Progress | None = None) -> RunResult:
    """Answer, score and report one run (see the module docstring).

    Args:
        spec: what to run.
        judge: an entered :class:`Judge` to share between runs (a sweep); by default one is made from
            ``spec.judge`` for this run, once the answers are in.
        progress: called as questions are answered and judged.

    Raises:
        ConfigError: the folder holds another run, a test case's filter is invalid, bad settings.
        JudgeUnavailable: nothing answers at the judge's address.
        plus what :meth:`RagEngine.ask` raises before generation (no index, index mismatch).
    """
    from rag.evaluate import report

    spec.out = Path(spec.out)
    checkpoint = _prepare_folder(spec)
    started = time.perf_counter()
    with ExitStack() as stack:
        if spec.judge_metrics and judge is None:
            judge = Judge(spec.judge)
            stack.callback(judge.cache.close)
            if not spec.judge.embedded:
                judge.check_reachable()  # before the answers, not after them
        samples, answer_seconds, reused = _answer_all(spec, checkpoint, progress)
        if spec.judge_metrics and judge is not None and not judge.started:
            stack.enter_context(judge)  # the embedded server starts once the answering LLM is gone
        before = judge.stats.to_dict() if judge is not None else {}
        judge_seconds = score_samples(spec, samples, judge, progress)
        calls = {key: round(value - before.get(key, 0), 3) for key, value in judge.stats.to_dict().items()} if judge else {}
        results = report.summarize(spec, samples, judge, calls, answer_seconds=answer_seconds,
                                   judge_seconds=judge_seconds, total_seconds=time.perf_counter() - started,
                                   reused=reused)
    report.write_run(spec.out, results, samples)
    return RunResult(spec.out, results, samples)

