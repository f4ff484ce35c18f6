"""The ``rag`` command line: a thin layer over :class:`rag.engine.RagEngine`.

The CLI owns the console: progress bars and readable lists on the terminal, ``--json`` for scripts, and
every :class:`~rag.core.errors.RagError` turned into a one-line message and an exit code (0 ok, 1 some
files failed or a runtime error, 2 bad usage or configuration, 3 the LLM endpoint failed, 4 another
ingest holds the index and ``--no-wait`` was given).

Two kinds of output, kept apart:

- machine output (every ``--json``, ``search --queries``) is ``json.dumps`` written to stdout by
  :func:`_emit_json`, never through Rich, so document text comes back exactly;
- human output goes through Rich, but document, path and model text only ever as
  :class:`rich.text.Text` (never parsed as markup or emoji codes), on consoles with emoji codes and
  highlighting off.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.text import Text

from rag.cli_common import emit_json as _emit_json
from rag.cli_common import err, out
from rag.cli_common import parse_sets as _parse_sets
from rag.cli_common import visible as _visible
from rag.core.errors import ConfigError, RagError
from rag.core.query import MULTI_QUERY_MAX, QueryOptions, option_help, validate_history
from rag.core.settings import Settings, load_settings
from rag.core.types import Hit
from rag.generate.answer import Answer, AnswerError, numbered_hits

# The consoles (out, err), exact JSON output and terminal-safe text are rag.cli_common's, shared with
# `rag eval`; the private names are kept so this module reads as before.


def _snippet(text: str, limit: int) -> str:
    """One line of at most ``limit`` characters: whitespace runs (tabs, newlines, U+2028) become one space."""
    flat = _visible(" ".join(text.split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


app = typer.Typer(
    help="rag: point it at a folder of documents, then search and question them with cited answers.\n\n"
    "Quick start:\n\n    rag ingest ./docs\n\n    rag ask 'How does incremental ingest work?'",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode="markdown",
    context_settings={"help_option_names": ["-h", "--help"]},
)
llm_app = typer.Typer(help="The embedded llama.cpp server (packaged SmolLM2) for offline use.", no_args_is_help=True)
app.add_typer(llm_app, name="llm")


@dataclass
class State:
    """Options given before the verb, merged into settings when a command needs them."""

    overrides: dict[str, Any] = field(default_factory=dict)
    config: Path | None = None

    def settings(self, **more: Any) -> Settings:
        return load_settings(config=self.config, **self.overrides, **_nested(more))


def _nested(flags: dict[str, Any]) -> dict[str, Any]:
    """``{"chunking__size": 128}`` -> ``{"chunking": {"size": 128}}``; unset (``None``) flags are left out."""
    nested: dict[str, Any] = {}
    for key, value in flags.items():
        if value is None:
            continue
        section, _, name = key.partition("__")
        if name:
            nested.setdefault(section, {})[name] = value
        else:
            nested[key] = value
    return nested


@app.callback()
def _global(
    ctx: typer.Context,
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Index folder [default: ./.rag; env RAG_DATA_DIR].")] = None,
    config: Annotated[Path | None, typer.Option("--config", help="Config file [default: ./rag.toml; env RAG_CONFIG].")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Log what happens (to stderr).")] = False,
) -> None:
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    if not verbose:
        # Model loading chatter is not the user's business unless they ask for it.
        for noisy in ("sentence_transformers", "transformers", "httpx", "faiss", "bm25s"):
            logging.getLogger(noisy).setLevel(logging.ERROR)
        os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")  # the CLI draws its own progress
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    ctx.obj = State({"data_dir": data_dir} if data_dir else {}, config)
    if ctx.invoked_subcommand:
        from opentelemetry import trace

        trace.get_current_span().update_name(f"rag {ctx.invoked_subcommand}")  # main()'s root span (if traced)


CollectionOpt = Annotated[
    str,
    typer.Option("--collection", "-c", envvar="RAG_COLLECTION", help="Collection to use (see `rag collections`).", show_default=True),
]


def _workspace(ctx: typer.Context) -> Any:
    from rag.workspace import Workspace

    return Workspace(ctx.obj.settings())


def _engine(ctx: typer.Context, collection: str = "default", **flags: Any) -> Any:
    """The engine of ``collection``: its stored settings, then this command's flags on top."""
    from rag.engine import RagEngine

    workspace = _workspace(ctx)
    return RagEngine(workspace.settings_for(collection, **_nested(flags)), project_root=workspace.project_root)


def _parse_meta(pairs: list[str]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--meta expects KEY=VALUE, got {pair!r}")
        try:  # numbers and booleans keep their type so range filters work on them
            parsed = json.loads(value)
            meta[key.strip()] = parsed if isinstance(parsed, (int, float, bool)) else value
        except ValueError:
            meta[key.strip()] = value
    return meta


# -- ingest ---------------------------------------------------------------------------------------


@app.command()
def ingest(
    ctx: typer.Context,
    paths: Annotated[list[Path], typer.Argument(help="Files or folders (walked recursively).", show_default=False)],
    meta: Annotated[list[str], typer.Option("--meta", "-m", help="KEY=VALUE attached to every chunk; repeatable.")] = [],
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Drop the index first (after changing model or chunking).")] = False,
    chunk_size: Annotated[int | None, typer.Option(help="Window size in tokens [default: 200].")] = None,
    chunk_overlap: Annotated[int | None, typer.Option(help="Overlap in tokens [default: 40].")] = None,
    store: Annotated[str | None, typer.Option(help="Vector store: faiss, qdrant, pgvector or opensearch [default: faiss].")] = None,
    wait: Annotated[bool, typer.Option("--wait/--no-wait", help="If another ingest is running: wait for it, or fail at once (exit 4).")] = True,
    collection: CollectionOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
    ray: Annotated[bool | None, typer.Option("--ray/--no-ray", help="Embed on Ray: `--ray` starts a local instance (or uses ingest.ray_address), `--ray ADDRESS` joins a cluster (auto, ray://HOST:10001, HOST:PORT); loading, chunking and writing stay here [default: off unless ingest.ray_address is set].", show_default=False)] = None,
    ray_address: Annotated[str | None, typer.Option("--ray-address", metavar="ADDRESS", help="The Ray cluster to embed on (`--ray ADDRESS` is short for it); implies --ray.", show_default=False)] = None,
    ray_workers: Annotated[int | None, typer.Option("--ray-workers", metavar="N", help="Ray embedding workers, one CPU each [default: every CPU of the instance or cluster]; implies --ray.", show_default=False)] = None,
) -> None:
    """Load, chunk, embed and index files; re-running only touches what changed.

    `rag formats` lists the file types read. Every file is counted: files that cannot be read are
    reported as failed (exit code 1); files of other types, and links to files ingested anyway, as
    skipped (listed with --json or -v). Hidden files of other types and tool folders (.git,
    node_modules ...) are left out silently. A symbolic link is cited by its own path.

    With --ray the embedding runs on Ray workers (install: pip install 'rag-platform[ray]'); everything
    else, and the same incremental and crash-safe commits, stays in this process. The word after --ray
    is the address only if it looks like one (auto, local, SCHEME://..., HOST:PORT); write --ray=ADDRESS
    to be explicit.

    Examples:

        rag ingest ./docs

        rag ingest ./reports --meta team=finance --meta year=2026

        rag ingest --rebuild --chunk-size 128 ./docs

        rag ingest --no-wait ./docs   # exit 4 at once if another ingest is running

        rag ingest -c handbook ./handbook   # into the collection 'handbook' (rag collections create handbook)

        rag ingest ./corpus --ray --ray-workers 4   # embed on a new local Ray instance with 4 workers

        rag ingest ./corpus --store pgvector --ray ray://head:10001   # embed on a remote Ray cluster
    """
    if ray is False and (ray_address is not None or ray_workers is not None):
        raise ConfigError("--no-ray contradicts --ray ADDRESS and --ray-workers; give one")
    use_ray: bool | str | None = ray  # None: as ingest.ray_address says
    if ray_address is not None:
        use_ray = ray_address
    elif ray_workers is not None:
        use_ray = True
    engine = _engine(
        ctx, collection, chunking__size=chunk_size, chunking__overlap=chunk_overlap, store__kind=store,
        ingest__ray_workers=ray_workers,
    )
    with engine:
        user_meta = _parse_meta(meta)
        bar = Progress(
            TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}", markup=False), console=err, transient=True,
        )
        task = bar.add_task("", total=None)

        def progress(done: int, total: int, path: str) -> None:
            bar.update(task, completed=done, total=total, description=_visible(path))

        def on_wait(message: str) -> None:
            err.print(Text(_visible(message)))

        # Only on a terminal: elsewhere Rich ends even an invisible bar with a blank line.
        with bar if err.is_terminal and not as_json else contextlib.nullcontext():
            report = engine.ingest(
                list(paths), user_meta, rebuild=rebuild, progress=progress, wait=wait, on_wait=on_wait, ray=use_ray
            )
        status = engine.status()
    if as_json:
        _emit_json({**report.to_dict(), "documents": status["documents"], "chunks": status["chunks"]}, indent=2)
    else:
        for path, reason in report.failed:
            err.print(Text.assemble(("failed", "red"), f" {_visible(path)}: {_visible(reason)}"))
        if ctx.find_root().params.get("verbose"):
            for path, reason in report.skipped:
                err.print(Text.assemble(("skipped", "yellow"), f" {_visible(path)}: {_visible(reason)}"))
        out.print(
            f"{len(report.added)} added, {len(report.updated)} updated, {len(report.unchanged)} unchanged, "
            f"{len(report.removed)} removed, {len(report.failed)} failed, {len(report.skipped)} skipped; "
            f"{report.chunks_added} chunks embedded, {report.chunks_removed} removed; "
            f"index: {status['documents']} documents, {status['chunks']} chunks ({report.seconds:.1f} s)",
            markup=False,
        )
    if report.failed:
        raise typer.Exit(1)


# -- search and ask -------------------------------------------------------------------------------

# The query flags: each one's help (and the multi-query range) is QueryOptions' own (rag.core.query).
KOpt = Annotated[int | None, typer.Option("--k", "-k", help=option_help("k"))]
AlphaOpt = Annotated[float | None, typer.Option(help=option_help("alpha"))]
FusionOpt = Annotated[str | None, typer.Option(help=option_help("fusion"))]
FilterOpt = Annotated[list[str], typer.Option("--filter", "-f", help=option_help("filter") + " Repeatable (ANDed).")]
MinScoreOpt = Annotated[float | None, typer.Option(help=option_help("min_score"))]
PerDocOpt = Annotated[int | None, typer.Option(help=option_help("max_per_doc"))]

HydeOpt = Annotated[bool | None, typer.Option("--hyde/--no-hyde", help=option_help("hyde"), show_default=False)]
RewriteOpt = Annotated[bool | None, typer.Option("--rewrite/--no-rewrite", help=option_help("rewrite"), show_default=False)]
MultiQueryOpt = Annotated[int | None, typer.Option("--multi-query", min=0, max=MULTI_QUERY_MAX, help=option_help("multi_query"), show_default=False)]
RerankOpt = Annotated[bool | None, typer.Option("--rerank/--no-rerank", help="Rerank the top candidates with rerank.model; `--rerank=MODEL` picks one [default: off].", show_default=False)]
RerankModelOpt = Annotated[str | None, typer.Option("--rerank-model", metavar="MODEL", help="Rerank with this CrossEncoder (id or folder), or `llm` for the configured LLM; implies --rerank.", show_default=False)]
ExplainOpt = Annotated[bool, typer.Option("--explain", help="Show each stage: rewritten queries, HyDE passage, ranks before and after reranking, time taken (`explain` in JSON).")]

SEARCH_SNIPPET = 300
"""Characters of each hit's text shown by human ``rag search``."""

ASK_SNIPPET = 400
"""Characters of each retrieved chunk shown under ``rag ask``'s "Retrieved chunks"."""


def _query_options(*, rerank_model: str | None = None, **flags: Any) -> QueryOptions:
    """A command's query flags as one :class:`QueryOptions`; ``--rerank-model`` is ``rerank`` naming a model.

    Raises:
        ConfigError: ``--no-rerank`` with ``--rerank-model``, or a flag's value is out of range.
    """
    if rerank_model is not None:
        if flags.get("rerank") is False:
            raise ConfigError("--no-rerank and --rerank-model contradict each other; give one")
        flags["rerank"] = rerank_model
    return QueryOptions(**flags)


def _print_explain(explain: dict[str, Any]) -> None:
    """The stage record of ``--explain``, for people (``explain`` in JSON is the same data)."""
    out.print()
    out.print("Explain", style="bold", markup=False)
    if explain.get("standalone_question"):
        out.print(Text.assemble("  standalone question: ", _visible(explain["standalone_question"])))
    for stage in explain["stages"]:
        line = Text.assemble(("  " + stage["stage"].ljust(12), "cyan"), f"{stage['ms']:9.1f} ms")
        if stage.get("cached"):
            line.append("  (cached)", "dim")
        if stage.get("fallback"):
            line.append(f"  fell back: {_visible(stage['fallback'])}", "yellow")
        out.print(line)
        output = stage.get("output")
        if isinstance(output, list):
            for item in output:
                out.print(Text("      - " + _snippet(item, 200)))
        elif output:
            out.print(Text("      " + _snippet(output, 300)))
        if stage["stage"] == "search":
            for query in stage["queries"]:
                out.print(Text("      query: " + _snippet(query, 200)))
        for rank in stage.get("ranks", [])[:20]:
            score = "-" if rank["rerank_score"] is None else f"{rank['rerank_score']:.3f}"
            out.print(Text(f"      {rank['before']:>3} -> {rank['after']:<3} {score:>7}  " + _visible(rank["doc_id"])))
    out.print(Text(f"  total {explain['total_ms']:.1f} ms", "dim"))


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[str | None, typer.Argument(help="What to look for.", show_default=False)] = None,
    k: KOpt = None,
    alpha: AlphaOpt = None,
    fusion: FusionOpt = None,
    filters: FilterOpt = [],
    min_score: MinScoreOpt = None,
    max_per_doc: PerDocOpt = None,
    hyde: HydeOpt = None,
    rewrite: RewriteOpt = None,
    multi_query: MultiQueryOpt = None,
    rerank: RerankOpt = None,
    rerank_model: RerankModelOpt = None,
    explain: ExplainOpt = False,
    queries: Annotated[Path | None, typer.Option(help="A JSONL file of queries (`_id`, `text`): one JSON line of hits per query, with or without --json.")] = None,
    collection: CollectionOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON: doc_id, chunk_id, score, metadata, text (with --explain: {hits, explain}).")] = False,
) -> None:
    """Hybrid search (BM25 + dense): ranked chunks with scores.

    Optional stages (off by default; see docs/search.md): --hyde, --rewrite and --multi-query ask the
    LLM to transform the query (falling back to the plain query if it fails); --rerank reorders the
    top candidates with a cross-encoder or the LLM.

    Examples:

        rag search "sliding window chunking"

        rag search "alpha" --alpha 0.8 --k 10 --filter 'source~docs/*.md'

        rag search "undo an ingest" --rewrite --multi-query 3 --explain

        rag search "refund policy" --rerank-model ./models/my-cross-encoder

        rag search --queries queries.jsonl --json > runs.jsonl
    """
    if (query is None) == (queries is None):
        raise ConfigError("give either a QUERY or --queries FILE.jsonl")
    options = _query_options(
        k=k, alpha=alpha, fusion=fusion, filter=filters, min_score=min_score, max_per_doc=max_per_doc, hyde=hyde,
        rewrite=rewrite, multi_query=multi_query, rerank=rerank, rerank_model=rerank_model,
    )
    with _engine(ctx, collection) as engine:
        if queries is not None:
            for qid, text in _read_queries(queries):
                found = engine.retrieve(text, options=options)
                line = {"_id": qid, "hits": [h.to_dict() for h in found.hits], **found.answerability()}
                if explain:
                    line["explain"] = found.explain
                _emit_json(line)
            return
        found = engine.retrieve(query, options=options)
    hits = found.hits
    if as_json:
        hits_json = [h.to_dict() for h in hits]
        # The bare list stays the plain --json shape (scripts read it); the object forms carry answerability.
        _emit_json({"hits": hits_json, **found.answerability(), "explain": found.explain} if explain else hits_json,
                   indent=2)
        return
    for warning in found.warnings:
        err.print(Text.assemble(("note:", "yellow"), f" {_visible(warning)}"))
    if not hits:
        out.print("no matching chunks")
    for rank, hit in enumerate(hits, start=1):
        scores = f"dense {_fmt(hit.dense_score)}, bm25 {_fmt(hit.bm25_score)}"
        if hit.rerank_score is not None:
            scores += f", rerank {_fmt(hit.rerank_score)}"
        out.print(Text.assemble(
            (f"{rank}. ", "bold"), (_visible(hit.chunk.citation_label()), "cyan"),
            (f"  score {hit.score:.3f} ({scores})", "dim"),
        ))
        out.print(Text("   " + _snippet(hit.chunk.text, SEARCH_SNIPPET)))
    if hits:
        _print_answerable(found.answerable)
    if explain:
        _print_explain(found.explain)


def _print_answerable(probability: float | None) -> None:
    """One line: how likely the documents hold an answer (docs/search.md#answerability)."""
    if probability is None:
        return
    verdict = "the documents seem to cover this" if probability >= 0.5 else "the documents do not seem to cover this"
    out.print(Text(f"answerable {probability:.2f}: {verdict}", "dim"))


def _read_queries(path: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"cannot read --queries {path}: {reason}") from None
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            item = json.loads(line)
            rows.append((str(item["_id"]), str(item["text"])))
        except (ValueError, KeyError, TypeError):
            raise ConfigError(f"{path}:{number}: expected a JSON object with _id and text") from None
    return rows


def _fmt(score: float | None) -> str:
    return "-" if score is None else f"{score:.3f}"


def _answer_json(question: str, outcome: Answer | AnswerError) -> dict[str, Any]:
    """The ``ask --json`` object: :meth:`Answer.to_dict` plus ``question`` and ``error`` (null on success).

    On failure the answer fields are empty and ``hits`` are the retrieved sources.
    """
    if isinstance(outcome, Answer):
        data = outcome.to_dict()
        return {"question": question, "answer": data.pop("answer"), "error": None, **data}
    retrieval = outcome.retrieval
    return {
        "question": question, "answer": None, "error": str(outcome), "model": None, "usage": None, "warnings": [],
        "invalid_citations": [], "citations": [], "hits": numbered_hits(outcome.hits),
        **(retrieval.answerability() if retrieval is not None else {"answerable": None, "evidence": None}),
    }


ModeOpt = Annotated[str | None, typer.Option("--mode", metavar="auto|llm|extractive", help="Who writes the answer: `extractive` (the passages' own sentences, cited; no LLM), `llm`, or `auto` (extractive with the bundled model, llm with a configured endpoint) [default: auto, from generation.mode].", show_default=False)]
HistoryOpt = Annotated[Path | None, typer.Option("--history", help="A JSON file of earlier turns ([{role, content}, ...]); the question is read as a follow-up, and the new turn is appended to the file.", show_default=False)]


@app.command()
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="Your question.", show_default=False)],
    k: KOpt = None,
    alpha: AlphaOpt = None,
    fusion: FusionOpt = None,
    filters: FilterOpt = [],
    min_score: MinScoreOpt = None,
    max_per_doc: PerDocOpt = None,
    hyde: HydeOpt = None,
    rewrite: RewriteOpt = None,
    multi_query: MultiQueryOpt = None,
    rerank: RerankOpt = None,
    rerank_model: RerankModelOpt = None,
    history: HistoryOpt = None,
    mode: ModeOpt = None,
    explain: ExplainOpt = False,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print the answer as it is generated.")] = True,
    show_chunks: Annotated[bool, typer.Option("--chunks/--no-chunks", help="Also print the retrieved chunks.")] = True,
    collection: CollectionOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print answer, citations and hits as JSON.")] = False,
) -> None:
    """Answer a question from the index, citing numbered sources [n].

    Uses the OpenAI-compatible endpoint in `llm.base_url` (OpenAI, vLLM, Ollama, llama.cpp); with none
    configured the answer is extractive: the retrieved passages' own sentences that answer the question,
    each cited, with no LLM started (`--mode llm` starts the embedded llama.cpp server with the packaged
    SmolLM2 instead, and stops it afterwards). The retrieval stages of `rag search` (--hyde, --rewrite, --multi-query, --rerank) apply here too.

    Examples:

        rag ask "How do I re-index after changing the embedding model?"

        rag ask --history chat.json "How do I rebuild the index?"   # then, as a follow-up:

        rag ask --history chat.json "and how long does that take?"

        RAG_LLM__BASE_URL=http://localhost:11434/v1 RAG_LLM__MODEL=llama3.2 rag ask "What is alpha?"
    """
    options = _query_options(
        k=k, alpha=alpha, fusion=fusion, filter=filters, min_score=min_score, max_per_doc=max_per_doc, hyde=hyde,
        rewrite=rewrite, multi_query=multi_query, rerank=rerank, rerank_model=rerank_model,
    )
    turns = _read_history(history) if history is not None else []
    with _engine(ctx, collection, generation__mode=mode) as engine:
        outcome = _answer(engine, question, options, turns, stream=stream and not as_json)
    if as_json:
        data = _answer_json(question, outcome)
        if explain:
            data["explain"] = outcome.retrieval.explain if outcome.retrieval is not None else None
        _emit_json(data, indent=2)
    else:
        _print_outcome(outcome, stream=stream, show_chunks=show_chunks, explain=explain)
    if isinstance(outcome, AnswerError):
        raise typer.Exit(outcome.exit_code)
    if history is not None:
        _write_history(history, [*turns, {"role": "user", "content": question}, {"role": "assistant", "content": outcome.text}])


def _answer(engine: Any, question: str, options: QueryOptions, history: list[dict[str, str]], *, stream: bool) -> Answer | AnswerError:
    """Ask ``engine`` with ``options`` and the conversation so far, streaming the answer to the terminal when
    ``stream``; an LLM failure is returned."""
    streamed = False

    def on_sources(hits: list[Hit]) -> None:
        nonlocal streamed
        if stream:
            out.print("Answer", style="bold", markup=False)
            streamed = True

    def on_token(piece: str) -> None:
        out.print(Text(_visible(piece)), end="")

    try:
        outcome: Answer | AnswerError = engine.ask(
            question, options=replace(options, history=history), on_sources=on_sources,
            on_token=on_token if stream else None,
        )
    except AnswerError as exc:  # the endpoint failed; the sources are still worth showing
        outcome = exc
    if streamed:
        out.print()  # end the streamed answer's line
    return outcome


def _print_outcome(outcome: Answer | AnswerError, *, stream: bool, show_chunks: bool, explain: bool) -> None:
    if isinstance(outcome, AnswerError):
        err.print(Text.assemble(("error:", "red"), f" {_visible(str(outcome))}"))
        err.print("The retrieved sources are below.", markup=False)
        _print_sources(None, outcome.hits, show_chunks)
    else:
        if not stream:
            out.print("Answer", style="bold", markup=False)
            out.print(Text(_visible(outcome.text)))
        for warning in outcome.warnings:
            err.print(Text.assemble(("note:", "yellow"), f" {_visible(warning)}"))
        _print_sources(outcome, outcome.used_hits, show_chunks)
        if outcome.used_hits:
            _print_answerable(outcome.answerable)
    if explain and outcome.retrieval is not None:
        _print_explain(outcome.retrieval.explain)


def _read_history(path: Path) -> list[dict[str, str]]:
    """The turns in a ``--history`` file; a missing file is a new conversation."""
    if not path.exists():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8") or "[]")
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"cannot read --history {path}: {exc}") from None
    if not isinstance(data, list):
        raise ConfigError(f"--history {path} must hold a JSON array of {{role, content}} turns")
    try:
        return validate_history(data)
    except ConfigError as exc:
        raise ConfigError(f"--history {path}: {exc}") from None


def _write_history(path: Path, turns: list[dict[str, str]]) -> None:
    """Replace ``path`` with ``turns`` atomically, so an interrupted write never loses the conversation."""
    temporary = path.with_name(f".{path.name}.tmp")
    try:
        temporary.write_text(json.dumps(turns, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        raise ConfigError(f"cannot write --history {path}: {exc.strerror or exc}") from None


@app.command()
def chat(
    ctx: typer.Context,
    k: KOpt = None,
    alpha: AlphaOpt = None,
    filters: FilterOpt = [],
    hyde: HydeOpt = None,
    rewrite: RewriteOpt = None,
    multi_query: MultiQueryOpt = None,
    rerank: RerankOpt = None,
    rerank_model: RerankModelOpt = None,
    history: HistoryOpt = None,
    mode: ModeOpt = None,
    explain: ExplainOpt = False,
    show_chunks: Annotated[bool, typer.Option("--chunks/--no-chunks", help="Also print the retrieved chunks.")] = False,
    collection: CollectionOpt = "default",
) -> None:
    """Ask questions in a conversation: follow-ups ("and how do I undo it?") are understood in context.

    Each follow-up is rewritten by the LLM into a standalone question before retrieval (see
    retrieval.condense). Type /reset to start over and /exit (or Ctrl-D) to leave; with --history the
    conversation is kept in that file and resumed next time.

    Example:

        rag chat --history chat.json
    """
    options = _query_options(
        k=k, alpha=alpha, filter=filters, hyde=hyde, rewrite=rewrite, multi_query=multi_query, rerank=rerank,
        rerank_model=rerank_model,
    )
    turns = _read_history(history) if history is not None else []
    interactive = sys.stdin.isatty()
    with _engine(ctx, collection, generation__mode=mode) as engine:
        if interactive:
            err.print("Ask a question (/reset starts over, /exit or Ctrl-D leaves).", markup=False)
        while True:
            try:
                line = input("> " if interactive else "")
            except EOFError:
                break
            question = line.strip()
            if not question:
                continue
            if question in ("/exit", "/quit"):
                break
            if question == "/reset":
                turns = []
                err.print("(conversation cleared)", markup=False)
                continue
            outcome = _answer(engine, question, options, turns, stream=True)
            _print_outcome(outcome, stream=True, show_chunks=show_chunks, explain=explain)
            out.print()
            if isinstance(outcome, Answer):
                turns += [{"role": "user", "content": question}, {"role": "assistant", "content": outcome.text}]
                if history is not None:
                    _write_history(history, turns)


def _print_sources(answer: Answer | None, hits: list[Hit], show_chunks: bool) -> None:
    cited = {c.number for c in answer.citations} if answer is not None else set()
    out.print()
    out.print("Sources", style="bold", markup=False)
    for number, hit in enumerate(hits, start=1):
        mark = "*" if number in cited else " "
        out.print(Text.assemble(
            f" {mark}[{number}] ", _visible(hit.chunk.citation_label()), (f"  (score {hit.score:.3f})", "dim"),
        ))
    if cited:
        out.print(" * cited in the answer", style="dim", markup=False)
    if show_chunks:
        out.print()
        out.print("Retrieved chunks", style="bold", markup=False)
        for number, hit in enumerate(hits, start=1):
            out.print(Text.assemble(f"[{number}] ", (_visible(hit.chunk.citation_label()), "cyan")))
            out.print(Text("    " + _snippet(hit.chunk.text, ASK_SNIPPET)))


# -- status and llm -------------------------------------------------------------------------------


@app.command()
def status(
    ctx: typer.Context,
    collection: CollectionOpt = "default",
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show what is indexed: documents, chunks, embedding model, store and size on disk.

    Example:

        rag status --json
    """
    with _engine(ctx, collection) as engine:
        info = engine.status()
    if as_json:
        _emit_json(info, indent=2)
        return
    width = max(map(len, info)) + 2
    for key, value in info.items():
        if key == "size_bytes":
            value = f"{value / 1e6:.1f} MB"
        out.print(Text.assemble((key.ljust(width), "bold"), _visible(str(value))))


@app.command()
def formats(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the file formats ingest reads: suffixes, the parser serving each, and the extra it needs.

    A parser marked unavailable names the install that enables it. Third-party parsers come from the
    `rag.parsers` entry points; `ingest.parsers` in rag.toml picks the parser for a suffix.

    Example:

        rag formats --json
    """
    from rag.workspace import file_formats

    rows = file_formats(ctx.obj.settings())
    if as_json:
        _emit_json([row.to_dict() for row in rows], indent=2)
        return
    width = max(len(row.name) for row in rows) + 2
    for row in rows:
        line = Text.assemble((row.name.ljust(width), "bold"), " ".join(row.suffixes))
        if row.plugin:
            line.append("  (plugin)", "cyan")
        out.print(line)
        out.print(Text(" " * width + _visible(row.description), "dim"))
        if row.unavailable:
            out.print(Text(" " * width + "unavailable: " + _visible(row.unavailable), "yellow"))
        elif row.extra:
            out.print(Text(" " * width + f"from the extra [{row.extra}] (installed)", "dim"))


@llm_app.command("serve")
def llm_serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    gguf: Annotated[Path | None, typer.Option(help="GGUF model file [default: packaged SmolLM2-135M-Instruct].")] = None,
    n_ctx: Annotated[int | None, typer.Option(help="Context window in tokens [default: 4096].")] = None,
    threads: Annotated[int | None, typer.Option(help="CPU threads [default: all].")] = None,
) -> None:
    """Run the embedded llama.cpp server (OpenAI-compatible API) in the foreground until Ctrl-C.

    Example:

        rag llm serve --port 8080   # then: RAG_LLM__BASE_URL=http://127.0.0.1:8080/v1 rag ask "..."
    """
    from rag.generate.llamacpp_server import packaged_gguf, serve_forever

    settings = ctx.obj.settings()
    model = gguf or (Path(settings.llm.gguf) if settings.llm.gguf else packaged_gguf())
    name = _visible(model.name)
    err.print(f"starting {name} ...", markup=False)
    serve_forever(
        model, host, port, n_ctx or settings.llm.n_ctx, threads or settings.llm.threads,
        on_ready=lambda url: err.print(f"serving {name} at {url} (OpenAI-compatible); Ctrl-C stops it", markup=False),
    )


# -- collections, keys and the API server ---------------------------------------------------------

collections_app = typer.Typer(help="Named collections: each has its own index and settings.", no_args_is_help=True)
keys_app = typer.Typer(help="API keys for `rag serve`, scoped to a collection and a role.", no_args_is_help=True)
app.add_typer(collections_app, name="collections")
app.add_typer(keys_app, name="keys")

# Its heavy imports (RAGAS, matplotlib) happen inside the commands, so `rag --help` stays fast.
from rag.evaluate.cli import eval_app  # noqa: E402

app.add_typer(eval_app, name="eval")


@collections_app.command("list")
def collections_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List the collections with their document and chunk counts.

    Example:

        rag collections list --json
    """
    with _workspace(ctx) as workspace:
        rows = []
        for name in workspace.names():
            info = workspace.engine(name).status()
            rows.append({"name": name, "documents": info["documents"], "chunks": info["chunks"],
                         "settings": workspace.overrides(name)})
    if as_json:
        _emit_json(rows, indent=2)
        return
    width = max(len(r["name"]) for r in rows) + 2
    for row in rows:
        out.print(Text.assemble(
            (row["name"].ljust(width), "bold"), f"{row['documents']} documents, {row['chunks']} chunks",
            (f"  {json.dumps(row['settings'])}" if row["settings"] else "", "dim"),
        ))


@collections_app.command("create")
def collections_create(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="1-63 lower-case letters, digits, '-' or '_'.", show_default=False)],
    sets: Annotated[list[str], typer.Option("--set", help="Settings override SECTION.FIELD=VALUE, repeatable.")] = [],
) -> None:
    """Create a collection, optionally with its own settings.

    Examples:

        rag collections create handbook

        rag collections create papers --set chunking.size=128 --set retrieval.alpha=0.3

        rag ingest -c papers ./papers
    """
    with _workspace(ctx) as workspace:
        workspace.create(name, _parse_sets(sets))
    out.print(Text(f"created collection {name}; add documents with: rag ingest -c {name} PATH"))


@collections_app.command("delete")
def collections_delete(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="The collection.", show_default=False)],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
) -> None:
    """Delete a collection and everything indexed in it ('default' is emptied, not removed).

    Example:

        rag collections delete papers --yes
    """
    with _workspace(ctx) as workspace:
        workspace.require(name)
        if not yes and not typer.confirm(f"delete collection {name!r} and everything indexed in it?", err=True):
            raise typer.Exit(1)
        workspace.delete(name)
    out.print(Text(f"deleted collection {name}"))


@keys_app.command("create")
def keys_create(
    ctx: typer.Context,
    collection: Annotated[str, typer.Option("--collection", "-c", help="The collection the key grants, or '*' for all.")],
    role: Annotated[str, typer.Option(help="read (search, ask), write (also add/delete documents) or admin.")] = "read",
    name: Annotated[str, typer.Option(help="A label to recognise the key by in `rag keys list`.")] = "",
    as_json: Annotated[bool, typer.Option("--json", help="Print the key and its record as JSON.")] = False,
) -> None:
    """Create an API key and print it once (only its hash is stored).

    Examples:

        rag keys create --collection handbook --role read --name website

        rag keys create --collection '*' --role admin
    """
    from rag.api.keys import key_store

    settings = ctx.obj.settings()
    if collection != "*":
        from rag.workspace import Workspace

        Workspace(settings).require(collection)
    key, record = key_store(settings).create(collection, role, name)
    if as_json:
        _emit_json({"key": key, **record.to_dict()}, indent=2)
        return
    out.print(Text(key))
    err.print(Text(f"key {record.id}: {record.role} on {record.collection}; store it now, it is not shown again"))


@keys_app.command("list")
def keys_list(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """List API keys (ids, scopes and roles; never the keys themselves)."""
    from rag.api.keys import key_store

    keys = key_store(ctx.obj.settings(), read_only=True).list()
    if as_json:
        _emit_json([k.to_dict() for k in keys], indent=2)
        return
    if not keys:
        out.print("no keys; the API is open to anyone who can reach it (fine on 127.0.0.1)", markup=False)
    for key in keys:
        state = f"revoked {key.revoked}" if key.revoked else "active"
        out.print(Text(f"{key.id}  {key.role:<5}  {_visible(key.collection)}  {state}  created {key.created}  {_visible(key.name)}"))


@keys_app.command("revoke")
def keys_revoke(
    ctx: typer.Context,
    key_id: Annotated[str, typer.Argument(help="The key's id (from `rag keys list`).", show_default=False)],
) -> None:
    """Revoke an API key; requests with it get 401 from then on."""
    from rag.api.keys import key_store

    if not key_store(ctx.obj.settings()).revoke(key_id):
        raise ConfigError(f"no active key with id {key_id!r}; see `rag keys list`")
    out.print(Text(f"revoked key {key_id}"))


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Interface to listen on [default: 127.0.0.1; api.host].")] = None,
    port: Annotated[int | None, typer.Option(help="Port [default: 8000; api.port].")] = None,
    insecure: Annotated[bool, typer.Option("--insecure", help="Serve on a non-loopback interface without API keys.")] = False,
) -> None:
    """Run the REST API and the web chat page until Ctrl-C.

    Endpoints under /v1 (collections, documents, search, ask with streaming, OpenAI-compatible chat),
    /docs for the interactive API docs, and a chat page at /. See docs/api.md.

    Examples:

        rag serve

        rag keys create --collection '*' --role admin && rag serve --host 0.0.0.0 --port 8080
    """
    from rag.api.server import serve as run_server

    settings = ctx.obj.settings()
    run_server(
        settings, host=host, port=port, insecure=insecure,
        on_ready=lambda url: err.print(f"serving at {url} (API docs at {url}/docs); Ctrl-C stops it", markup=False),
    )


_MCP_EPILOG = """\
**Claude Desktop** (claude_desktop_config.json), **Cursor** (.cursor/mcp.json) and most MCP clients:

    {"mcpServers": {"docs": {"command": "rag",
        "args": ["--data-dir", "/path/to/project/.rag", "mcp", "--collection", "default"]}}}

Give an absolute `--data-dir`: a client starts the server in a folder of its own choosing. Over HTTP,
`rag serve` offers the same tools at `http://HOST:8000/mcp` (send the API key as `Authorization: Bearer KEY`).
See docs/integrations.md.
"""


@app.command(epilog=_MCP_EPILOG)
def mcp(
    ctx: typer.Context,
    collection: CollectionOpt = "default",
) -> None:
    """Serve the collections to an AI agent over MCP (the Model Context Protocol), on stdin/stdout.

    An MCP client (Claude Desktop, Cursor, an agent framework) starts this command and calls its tools:
    search (hits and the answerability probability), ask (a cited answer and the cited passages),
    list_collections, list_documents, get_document and get_chunk (a chunk with its neighbours).
    `--collection` is the one they read when a call names none. Only protocol goes to stdout; logs go to
    stderr (`-v` for more). It reads the index and never writes it, so `rag ingest` may run meanwhile.

    Try it by hand with the MCP inspector:

        npx @modelcontextprotocol/inspector rag --data-dir "$PWD/.rag" mcp
    """
    from rag.api.mcp import serve_stdio

    serve_stdio(ctx.obj.settings(), collection)


def _split_rerank_value(argv: list[str]) -> list[str]:
    """``--rerank=MODEL`` as ``--rerank-model MODEL``: a flag that may carry a value, which typer cannot
    declare (a bare ``--rerank`` stays the flag)."""
    split: list[str] = []
    for index, arg in enumerate(argv):
        if arg == "--":  # what follows is arguments, not options
            split += argv[index:]
            break
        if arg.startswith("--rerank="):
            split += ["--rerank-model", arg.removeprefix("--rerank=")]
        else:
            split.append(arg)
    return split


# What `--ray WORD` takes as an address rather than a path: Ray's own names, a URL, or HOST:PORT.
_RAY_ADDRESS = re.compile(r"(auto|local|[A-Za-z][A-Za-z0-9+.-]*://\S+|[\w.-]+:\d+|\[[0-9A-Fa-f:.]+\]:\d+)")


def _split_ray_value(argv: list[str]) -> list[str]:
    """``--ray=ADDRESS`` and ``--ray ADDRESS`` as ``--ray-address ADDRESS`` (a bare ``--ray`` stays the
    flag): an option whose value is optional, which typer cannot declare. After a bare ``--ray`` the next
    word is the address only if it has an address's form, so ``rag ingest --ray ./docs`` keeps its path."""
    split: list[str] = []
    index = 0
    while index < len(argv):
        arg = argv[index]
        if arg == "--":  # what follows is arguments, not options
            split += argv[index:]
            break
        if arg.startswith("--ray="):
            split += ["--ray-address", arg.removeprefix("--ray=")]
        elif arg == "--ray" and index + 1 < len(argv) and _RAY_ADDRESS.fullmatch(argv[index + 1]):
            split += ["--ray-address", argv[index + 1]]
            index += 1
        else:
            split.append(arg)
        index += 1
    return split


@contextlib.contextmanager
def _traced_run() -> Iterator[None]:
    """The command's root span (``rag search``: the callback names it), when ``OTEL_*`` variables ask for
    traces (docs/integrations.md); the spans are exported when the process exits."""
    from rag import __version__
    from rag.core.tracing import span
    from rag.core.tracing_setup import configure_tracing

    if not configure_tracing(__version__):
        yield
        return
    from opentelemetry.trace import Status, StatusCode

    with span("rag") as root:
        try:
            yield
        except SystemExit as exc:  # typer ends every command with one; only a non-zero code is a failure
            if exc.code not in (None, 0):
                root.set_status(Status(StatusCode.ERROR, f"exit code {exc.code}"))
            raise


def main() -> None:
    """Console-script entry point: run the app and turn library errors into messages and exit codes."""
    sys.argv[1:] = _split_ray_value(_split_rerank_value(sys.argv[1:]))
    try:
        with _traced_run():
            app()
    except RagError as exc:
        err.print(Text.assemble(("error:", "red"), f" {_visible(str(exc))}"))
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted", markup=False)
        sys.exit(130)


if __name__ == "__main__":
    main()
