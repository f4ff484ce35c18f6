"""``rag eval``: offline evaluation reports (run, compare, sweep), a thin layer over :mod:`rag.evaluate`.

Heavy imports (RAGAS, matplotlib, the engine) happen inside the commands, so ``rag --help`` stays fast.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Annotated, Any

import typer

from rag import cli_common
from rag.core.errors import ConfigError

eval_app = typer.Typer(
    help="Offline evaluation reports: RAGAS faithfulness and context recall, retrieval metrics, comparisons.\n\n"
    "Example:\n\n    rag ingest docs\n\n    rag eval run docs_qa --out eval/base --limit 5",
    no_args_is_help=True,
)

SetOpt = Annotated[list[str], typer.Option("--set", help="Settings override for the run, SECTION.FIELD=VALUE, or a query option, query.NAME=VALUE (e.g. query.max_per_doc=2); repeatable.")]
MetricsOpt = Annotated[
    list[str],
    typer.Option("--metrics", "-m", help="faithfulness, context_recall (default), answer_relevancy, context_precision, "
                 "ndcg@K, recall@K, mrr@K; repeatable or comma-separated [default: faithfulness, context_recall, and "
                 "ndcg@10, recall@10, mrr@10 when the test set has reference_doc_ids]."),
]
CollectionOpt = Annotated[str, typer.Option("--collection", "-c", envvar="RAG_COLLECTION", help="Collection to evaluate.")]
JudgeUrlOpt = Annotated[str | None, typer.Option("--judge-base-url", envvar="RAG_JUDGE_BASE_URL",
                        help="OpenAI-compatible judge endpoint (…/v1) [default: the embedded SmolLM2, smoke-test scores only].")]
JudgeModelOpt = Annotated[str | None, typer.Option("--judge-model", envvar="RAG_JUDGE_MODEL", help="Judge model name (with --judge-base-url).")]
JudgeTokensOpt = Annotated[int | None, typer.Option("--judge-max-tokens", help="Judge output budget per call [default: 4096; 768 embedded].")]
JudgeTimeoutOpt = Annotated[float | None, typer.Option("--judge-timeout", help="Seconds per judge request [default: 180; 600 embedded].")]
JudgeConcOpt = Annotated[int | None, typer.Option("--judge-concurrency", help="Judge calls in flight [default: 4; 1 embedded].")]
JudgeCacheOpt = Annotated[Path | None, typer.Option("--judge-cache", help="Judge cache file [default: $RAG_CACHE_DIR/judge-cache.sqlite].")]
JudgeSchemaOpt = Annotated[bool | None, typer.Option("--judge-json-schema/--no-judge-json-schema",
                           help="Send the verdict JSON schema as response_format [default: on for the embedded judge].")]
LimitOpt = Annotated[int | None, typer.Option("--limit", "-n", help="Only the first N questions.")]
OverwriteOpt = Annotated[bool, typer.Option("--overwrite", help="Replace a run already in --out instead of resuming it.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print results.json (or comparison.json) to stdout.")]


def _judge_config(base_url: str | None, model: str | None, max_tokens: int | None, timeout: float | None,
                  concurrency: int | None, cache: Path | None, json_schema: bool | None, settings: Any) -> Any:
    from rag.evaluate.judge import JudgeConfig

    return JudgeConfig(
        base_url=base_url or None, model=model or None, max_tokens=max_tokens, timeout=timeout, concurrency=concurrency,
        cache_path=cache, json_schema=json_schema, threads=settings.llm.threads,
    )


def _spec_factory(ctx: typer.Context, testset: Any, collection: str, sets: list[str], metrics: list[str],
                  judge_args: dict[str, Any], overwrite: bool) -> Any:
    """A function ``(extra overrides, out, name) -> RunSpec`` for this command's options.

    Overrides under ``query`` (``--set query.k=3``, ``--grid query.alpha=0,1``) are query options, not
    settings: each run's :class:`~rag.core.query.QueryOptions` is the ``--set`` ones with the grid
    combination's replaced on top.
    """
    from rag.core.query import QueryOptions
    from rag.evaluate.metrics import parse_metrics
    from rag.evaluate.run import RunSpec
    from rag.workspace import Workspace, merge_overrides

    workspace = Workspace(ctx.obj.settings())
    workspace.require(collection)
    base_overrides = cli_common.parse_sets(sets)
    base_options = QueryOptions().updated(_query_part(base_overrides, "--set"), source="--set")
    specs, notes = parse_metrics(metrics or None, has_references=testset.has_references,
                                 has_reference_docs=testset.has_reference_docs, retrieval_only=testset.format == "beir")

    def make(extra: dict[str, Any], out: Path, name: str | None) -> Any:
        overrides = merge_overrides(base_overrides, extra)
        settings = workspace.settings_for(collection, **{k: v for k, v in overrides.items() if k != "query"})
        options = base_options.updated(_query_part(extra, "--grid"), source="--grid")
        return RunSpec(
            testset=testset, out=Path(out), settings=settings, metrics=specs,
            judge=_judge_config(settings=settings, **judge_args), project_root=workspace.project_root,
            collection=collection, overrides=overrides, name=name, overwrite=overwrite, notes=list(notes),
            options=options,
        )

    return make


def _query_part(overrides: dict[str, Any], flag: str) -> dict[str, Any]:
    """The ``query.NAME=VALUE`` entries of ``--set`` or ``--grid`` overrides, by option name."""
    query = overrides.get("query", {})
    if not isinstance(query, dict):
        raise ConfigError(f"{flag} query needs an option name: query.NAME=VALUE (e.g. query.k=3)")
    return query


@contextlib.contextmanager
def _progress(enabled: bool):  # noqa: ANN202
    """A progress bar on stderr for the answer and judge phases (only on a terminal)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    if not (enabled and cli_common.err.is_terminal):
        yield None
        return
    bar = Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), TimeRemainingColumn(), console=cli_common.err, transient=True)
    tasks: dict[str, Any] = {}

    def update(phase: str, done: int, total: int) -> None:
        if phase not in tasks:
            tasks[phase] = bar.add_task("answering" if phase == "answer" else "judging", total=total)
        bar.update(tasks[phase], completed=done, total=total)

    with bar:
        yield update


def _print_run(results: dict[str, Any], out: Path) -> None:
    from rich.text import Text

    from rag.evaluate.report import fmt

    judge = results.get("judge")
    if judge and judge.get("caveat"):
        cli_common.err.print(Text.assemble(("note:", "yellow"), f" {judge['caveat']}"))
    for note in results.get("notes", []):
        cli_common.err.print(Text(f"note: {note}"))
    width = max(len(name) for name in results["summary"]) + 2
    for name, s in results["summary"].items():
        ci = "" if s.get("ci_low") is None else f"  [{fmt(s['ci_low'])}, {fmt(s['ci_high'])}]"
        missing = f"  {s['missing']} missing" if s["missing"] else ""
        cli_common.out.print(Text.assemble((name.ljust(width), "bold"), f"{fmt(s['mean'])}{ci}  n={s['n']}{missing}"))
    if (section := results.get("calibration")) and section.get("label") and section.get("n"):
        ci = section["auroc_ci"]
        auroc = (f"AUROC {fmt(section['auroc'])}  [{fmt(ci[0])}, {fmt(ci[1])}]" if ci
                 else "no AUROC (one label only)" if section["auroc"] is None else f"AUROC {fmt(section['auroc'])}")
        few = f" (fewer than {section['min_n']}: too few to judge by)" if section["small_n"] else ""
        cli_common.out.print(Text.assemble(("answerable".ljust(max(width, 12)), "bold"),
                                           f"{auroc}  Brier {fmt(section['brier'])}  n={section['n']}{few}, "
                                           f"label: {section['label']['source']}"))
    if judge:
        calls = judge["calls"]
        cli_common.out.print(Text(f"judge {cli_common.visible(str(judge['model']))}: {calls.get('sent', 0)} calls, "
                                  f"{calls.get('cached', 0)} from cache, {calls.get('failed', 0)} failed"))
    cli_common.out.print(Text(f"report: {cli_common.visible(str(out / 'report.html'))}"))


@eval_app.command("run")
def run(
    ctx: typer.Context,
    testset_path: Annotated[str, typer.Argument(metavar="TESTSET", help="A .jsonl or .csv test set, a BEIR folder, or 'docs_qa' (the bundled set).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Run folder for the reports (re-running resumes it).", show_default=False)],
    collection: CollectionOpt = "default",
    sets: SetOpt = [],
    metrics: MetricsOpt = [],
    judge_base_url: JudgeUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_max_tokens: JudgeTokensOpt = None,
    judge_timeout: JudgeTimeoutOpt = None,
    judge_concurrency: JudgeConcOpt = None,
    judge_cache: JudgeCacheOpt = None,
    judge_json_schema: JudgeSchemaOpt = None,
    limit: LimitOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """Answer every question of a test set, score the answers, and write a report.

    Writes report.html (self-contained), report.md, results.json and samples.jsonl into --out. Judge calls
    are cached on disk and answers checkpointed, so a re-run or a run resumed after a kill repeats nothing.

    Examples:

        rag eval run docs_qa --out eval/base --limit 5

        rag eval run docs_qa --out eval/alpha02 --set retrieval.alpha=0.2

        rag eval run qa.csv --out eval/gpt --judge-base-url https://api.openai.com/v1 --judge-model gpt-4o-mini

        rag eval run ./nfcorpus --out eval/nf --metrics ndcg@10,recall@100   # a BEIR folder: retrieval only
    """
    from rag.evaluate.run import run_eval
    from rag.evaluate.testset import load_testset

    testset = load_testset(testset_path).limited(limit)
    make = _spec_factory(ctx, testset, collection, sets, metrics, _judge_args(
        judge_base_url, judge_model, judge_max_tokens, judge_timeout, judge_concurrency, judge_cache, judge_json_schema),
        overwrite)
    spec = make({}, out, None)
    with _progress(not as_json) as progress:
        result = run_eval(spec, progress=progress)
    if as_json:
        cli_common.emit_json(result.results, indent=2)
    else:
        _print_run(result.results, result.out)


def _judge_args(base_url: str | None, model: str | None, max_tokens: int | None, timeout: float | None,
                concurrency: int | None, cache: Path | None, json_schema: bool | None) -> dict[str, Any]:
    return {"base_url": base_url, "model": model, "max_tokens": max_tokens, "timeout": timeout,
            "concurrency": concurrency, "cache": cache, "json_schema": json_schema}


def _print_comparison(comparison: dict[str, Any], out: Path) -> None:
    from rich.text import Text

    from rag.evaluate.compare import ALPHA
    from rag.evaluate.report import fmt

    for warning in comparison["warnings"]:
        cli_common.err.print(Text.assemble(("warning:", "yellow"), f" {cli_common.visible(warning)}"))
    cli_common.out.print(Text(f"baseline: {cli_common.visible(comparison['baseline'])}"))
    for comp in comparison["comparisons"]:
        for metric, m in comp["metrics"].items():
            if m["delta"] is None:
                cli_common.out.print(Text(f"{cli_common.visible(comp['run'])}  {metric}: no questions scored in both runs"))
                continue
            mark = " (significant)" if m["significant"] else (" (too few questions to be significant)"
                                                                  if m.get("min_p_value", 0) >= ALPHA else "")
            cli_common.out.print(Text(f"{cli_common.visible(comp['run'])}  {metric}: {fmt(m['baseline_mean'])} -> "
                                      f"{fmt(m['mean'])} ({m['delta']:+.3f}, p={m['p_value']:.4f}, n={m['n']}){mark}"))
    cli_common.out.print(Text(f"report: {cli_common.visible(str(out / 'report.html'))}"))


@eval_app.command("compare")
def compare(
    runs: Annotated[list[Path], typer.Argument(metavar="RUN_DIR...", help="Two or more run folders; the first is the baseline.", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Folder for the comparison report.", show_default=False)],
    as_json: JsonOpt = False,
) -> None:
    """Compare runs side by side: per-metric deltas, a paired significance test, the questions that moved most.

    Examples:

        rag eval compare eval/base eval/alpha02 --out eval/base-vs-alpha02
    """
    from rag.evaluate.compare import compare_runs, write_comparison

    comparison = compare_runs(list(runs))
    write_comparison(out, comparison)
    if as_json:
        cli_common.emit_json(comparison, indent=2)
    else:
        _print_comparison(comparison, out)


@eval_app.command("sweep")
def sweep(
    ctx: typer.Context,
    testset_path: Annotated[str, typer.Argument(metavar="TESTSET", help="A .jsonl or .csv test set, a BEIR folder, or 'docs_qa'.", show_default=False)],
    grid: Annotated[list[str], typer.Option("--grid", "-g", help="SECTION.FIELD=V1,V2,...; repeatable (every combination runs).", show_default=False)],
    out: Annotated[Path, typer.Option("--out", "-o", help="Sweep folder: runs/ and the comparison report.", show_default=False)],
    collection: CollectionOpt = "default",
    sets: SetOpt = [],
    metrics: MetricsOpt = [],
    judge_base_url: JudgeUrlOpt = None,
    judge_model: JudgeModelOpt = None,
    judge_max_tokens: JudgeTokensOpt = None,
    judge_timeout: JudgeTimeoutOpt = None,
    judge_concurrency: JudgeConcOpt = None,
    judge_cache: JudgeCacheOpt = None,
    judge_json_schema: JudgeSchemaOpt = None,
    limit: LimitOpt = None,
    overwrite: OverwriteOpt = False,
    as_json: JsonOpt = False,
) -> None:
    """One run per combination of the --grid values, then one comparison report (the first combination is the baseline).

    Examples:

        rag eval sweep docs_qa --grid retrieval.alpha=0,0.5,1 --out eval/alpha --limit 10

        rag eval sweep docs_qa --grid retrieval.alpha=0.3,0.7 --grid retrieval.fusion=linear,rrf --out eval/grid
    """
    from rich.text import Text

    from rag.evaluate.sweep import parse_grid, run_sweep
    from rag.evaluate.testset import load_testset

    parsed = parse_grid(grid)
    testset = load_testset(testset_path).limited(limit)
    make = _spec_factory(ctx, testset, collection, sets, metrics, _judge_args(
        judge_base_url, judge_model, judge_max_tokens, judge_timeout, judge_concurrency, judge_cache, judge_json_schema),
        overwrite)

    def on_run(number: int, total: int, label: str) -> None:
        if not as_json:
            cli_common.err.print(Text(f"run {number}/{total}: {cli_common.visible(label)}"))

    with _progress(not as_json) as progress:
        result = run_sweep(out, parsed, make, on_run=on_run, progress=progress)
    if as_json:
        cli_common.emit_json(result.comparison, indent=2)
    else:
        _print_comparison(result.comparison, out)
