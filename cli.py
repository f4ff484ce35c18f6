"""The ``rag`` command line: a thin layer over :class:`rag.engine.RagEngine`.

The CLI owns the console: progress bars and tables on the terminal, ``--json`` for scripts, and every
:class:`~rag.core.errors.RagError` turned into a one-line message and an exit code (0 ok, 1 some files
failed or a runtime error, 2 bad usage or configuration, 3 the LLM endpoint failed).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from rag.core.errors import ConfigError, GenerationError, RagError
from rag.core.settings import Settings, load_settings
from rag.core.types import Hit

out = Console(highlight=False, soft_wrap=True)
err = Console(stderr=True, highlight=False)

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

    def settings(self, **more: Any) -> Settings:
        merged: dict[str, Any] = dict(self.overrides)
        for key, value in more.items():
            if value is None:
                continue
            section, _, name = key.partition("__")
            if name:
                merged.setdefault(section, {})[name] = value
            else:
                merged[key] = value
        return load_settings(**merged)


@app.callback()
def _global(
    ctx: typer.Context,
    data_dir: Annotated[Optional[Path], typer.Option("--data-dir", help="Index folder [default: ./.rag; env RAG_DATA_DIR].")] = None,
    config: Annotated[Optional[Path], typer.Option("--config", help="Config file [default: ./rag.toml; env RAG_CONFIG].")] = None,
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
    if config is not None:
        os.environ["RAG_CONFIG"] = str(config)
    ctx.obj = State({"data_dir": data_dir} if data_dir else {})


def _engine(ctx: typer.Context, **overrides: Any) -> Any:
    from rag.engine import RagEngine

    return RagEngine(ctx.obj.settings(**overrides))


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
    meta: Annotated[list[str], typer.Option("--meta", "-m", help="KEY=VALUE attached to every chunk; repeatable.")] = [],  # noqa: B006
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Drop the index first (after changing model or chunking).")] = False,
    chunk_size: Annotated[Optional[int], typer.Option(help="Window size in tokens [default: 200].")] = None,
    chunk_overlap: Annotated[Optional[int], typer.Option(help="Overlap in tokens [default: 40].")] = None,
    store: Annotated[Optional[str], typer.Option(help="Vector store: faiss or qdrant [default: faiss].")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the summary as JSON.")] = False,
) -> None:
    """Load, chunk, embed and index files; re-running only touches what changed.

    Supported: Markdown (front-matter becomes metadata), text, HTML, PDF, JSONL (BEIR `_id`/`title`/`text`).
    Unreadable files are reported and skipped; the exit code is 1 if any failed.

    Examples:

        rag ingest ./docs

        rag ingest ./reports --meta team=finance --meta year=2026

        rag ingest --rebuild --chunk-size 128 ./docs
    """
    engine = _engine(ctx, chunking__size=chunk_size, chunking__overlap=chunk_overlap, store__kind=store)
    with engine:
        user_meta = _parse_meta(meta)
        with Progress(
            TextColumn("[bold]ingest"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
            TextColumn("{task.description}"), console=err, transient=True, disable=as_json,
        ) as bar:
            task = bar.add_task("", total=None)

            def progress(done: int, total: int, path: str) -> None:
                bar.update(task, completed=done, total=total, description=escape(path))

            report = engine.ingest(list(paths), user_meta, rebuild=rebuild, progress=progress)
        status = engine.status()
    if as_json:
        out.print_json(data={**report.to_dict(), "documents": status["documents"], "chunks": status["chunks"]})
    else:
        for path, reason in report.failed:
            err.print(f"[red]failed[/] {escape(path)}: {escape(reason)}")
        out.print(
            f"{len(report.added)} added, {len(report.updated)} updated, {len(report.unchanged)} unchanged, "
            f"{len(report.removed)} removed, {len(report.failed)} failed; "
            f"{report.chunks_added} chunks embedded, {report.chunks_removed} removed; "
            f"index: {status['documents']} documents, {status['chunks']} chunks ({report.seconds:.1f} s)"
        )
    if report.failed:
        raise typer.Exit(1)


# -- search and ask -------------------------------------------------------------------------------

KOpt = Annotated[Optional[int], typer.Option("--k", "-k", help="Number of chunks [default: 5].")]
AlphaOpt = Annotated[Optional[float], typer.Option(help="Dense weight in [0,1]: 1 = dense only, 0 = BM25 only [default: 0.5].")]
FusionOpt = Annotated[Optional[str], typer.Option(help="linear (score blend) or rrf (reciprocal rank) [default: linear].")]
FilterOpt = Annotated[list[str], typer.Option("--filter", "-f", help="Pre-filter, repeatable (ANDed): 'lang=en', 'page>=2', 'tags in a,b', 'source~docs/*.md', 'modified>=2026-01-01' or JSON.")]
MinScoreOpt = Annotated[Optional[float], typer.Option(help="Post-filter: drop hits whose fused score is below this.")]
PerDocOpt = Annotated[Optional[int], typer.Option(help="Post-filter: at most N chunks per document.")]


def _search_args(k, alpha, fusion, filters, min_score, max_per_doc) -> dict[str, Any]:  # noqa: ANN001
    return {"k": k, "alpha": alpha, "fusion": fusion, "filter": filters, "min_score": min_score, "max_per_doc": max_per_doc}


@app.command()
def search(
    ctx: typer.Context,
    query: Annotated[Optional[str], typer.Argument(help="What to look for.", show_default=False)] = None,
    k: KOpt = None,
    alpha: AlphaOpt = None,
    fusion: FusionOpt = None,
    filters: FilterOpt = [],  # noqa: B006
    min_score: MinScoreOpt = None,
    max_per_doc: PerDocOpt = None,
    queries: Annotated[Optional[Path], typer.Option(help="A JSONL file of queries (`_id`, `text`): one JSON line of hits per query.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print hits as JSON: doc_id, chunk_id, score, metadata, text.")] = False,
) -> None:
    """Hybrid search (BM25 + dense), no LLM: ranked chunks with scores.

    Examples:

        rag search "sliding window chunking"

        rag search "alpha" --alpha 0.8 --k 10 --filter 'source~docs/*.md'

        rag search --queries queries.jsonl --json > runs.jsonl
    """
    if (query is None) == (queries is None):
        raise ConfigError("give either a QUERY or --queries FILE.jsonl")
    args = _search_args(k, alpha, fusion, filters, min_score, max_per_doc)
    with _engine(ctx) as engine:
        if queries is not None:
            for qid, text in _read_queries(queries):
                hits = engine.search(text, **args)
                out.print(json.dumps({"_id": qid, "hits": [h.to_dict() for h in hits]}, ensure_ascii=False), soft_wrap=True)
            return
        hits = engine.search(query, **args)
    if as_json:
        out.print(json.dumps([h.to_dict() for h in hits], ensure_ascii=False, indent=2), soft_wrap=True)
        return
    if not hits:
        out.print("no matching chunks")
        return
    table = Table(show_lines=False, header_style="bold")
    for col in ("#", "score", "dense", "bm25", "source", "text"):
        table.add_column(col, overflow="fold")
    for rank, hit in enumerate(hits, start=1):
        table.add_row(
            str(rank), f"{hit.score:.3f}", _fmt(hit.dense_score), _fmt(hit.bm25_score),
            escape(hit.chunk.citation_label()), escape(_snippet(hit.chunk.text, 160)),
        )
    out.print(table)


def _read_queries(path: Path) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"cannot read --queries {path}: {exc.strerror}") from None
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


def _snippet(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


@app.command()
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(help="Your question.", show_default=False)],
    k: KOpt = None,
    alpha: AlphaOpt = None,
    fusion: FusionOpt = None,
    filters: FilterOpt = [],  # noqa: B006
    min_score: MinScoreOpt = None,
    max_per_doc: PerDocOpt = None,
    stream: Annotated[bool, typer.Option("--stream/--no-stream", help="Print the answer as it is generated.")] = True,
    show_chunks: Annotated[bool, typer.Option("--chunks/--no-chunks", help="Also print the retrieved chunks.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="Print answer, citations and hits as JSON.")] = False,
) -> None:
    """Answer a question from the index, citing numbered sources [n].

    Uses the OpenAI-compatible endpoint in `llm.base_url` (OpenAI, vLLM, Ollama, llama.cpp); with none
    configured it starts the embedded llama.cpp server with the packaged SmolLM2 and stops it afterwards.

    Examples:

        rag ask "How do I re-index after changing the embedding model?"

        RAG_LLM__BASE_URL=http://localhost:11434/v1 RAG_LLM__MODEL=llama3.2 rag ask "What is alpha?"
    """
    args = _search_args(k, alpha, fusion, filters, min_score, max_per_doc)
    with _engine(ctx) as engine:
        hits = engine.search(question, **args)
        answer = None
        failure: GenerationError | None = None
        live = stream and not as_json
        try:
            with engine.generator() as generator:
                if live:
                    out.print("[bold]Answer[/]")
                answer = generator.generate(
                    question, hits, on_token=(lambda piece: out.print(piece, end="", markup=False)) if live else None
                )
                if live:
                    out.print()
        except GenerationError as exc:
            failure = exc
    if as_json:
        out.print(json.dumps(_answer_json(question, answer, hits, failure), ensure_ascii=False, indent=2), soft_wrap=True)
    else:
        if failure is not None:
            err.print(f"[red]error:[/] {escape(str(failure))}")
            err.print("The retrieved sources are below.")
        elif not live:
            out.print("[bold]Answer[/]")
            out.print(answer.text, markup=False)
        for warning in answer.warnings if answer is not None else ():
            err.print(f"[yellow]note:[/] {escape(warning)}")
        _print_sources(answer, hits, show_chunks)
    if failure is not None:
        raise typer.Exit(failure.exit_code)


def _print_sources(answer: Any, hits: list[Hit], show_chunks: bool) -> None:
    used = answer.used_hits if answer is not None else hits
    cited = {c.number for c in answer.citations} if answer is not None else set()
    out.print("\n[bold]Sources[/]")
    for number, hit in enumerate(used, start=1):
        mark = "*" if number in cited else " "
        out.print(f" {mark}[{number}] {escape(hit.chunk.citation_label())}  [dim](score {hit.score:.3f})[/]")
    if cited:
        out.print("[dim] * cited in the answer[/]")
    if show_chunks:
        out.print("\n[bold]Retrieved chunks[/]")
        for number, hit in enumerate(used, start=1):
            out.print(f"[{number}] [cyan]{escape(hit.chunk.citation_label())}[/]")
            out.print("    " + escape(_snippet(hit.chunk.text, 400)))


def _answer_json(question: str, answer: Any, hits: list[Hit], failure: GenerationError | None) -> dict[str, Any]:
    used = answer.used_hits if answer is not None else hits
    return {
        "question": question,
        "answer": answer.text if answer is not None else None,
        "error": str(failure) if failure is not None else None,
        "model": answer.model if answer is not None else None,
        "warnings": list(answer.warnings) if answer is not None else [],
        "citations": [
            {"number": c.number, "doc_id": c.hit.chunk.doc_id, "chunk_id": c.hit.chunk.chunk_id,
             "source": c.hit.chunk.source, "section": c.hit.chunk.section}
            for c in (answer.citations if answer is not None else [])
        ],
        "hits": [{"number": n, **h.to_dict()} for n, h in enumerate(used, start=1)],
    }


# -- status and llm -------------------------------------------------------------------------------


@app.command()
def status(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print as JSON.")] = False,
) -> None:
    """Show what is indexed: documents, chunks, embedding model, store and size on disk.

    Example:

        rag status --json
    """
    with _engine(ctx) as engine:
        info = engine.status()
    if as_json:
        out.print_json(data=info)
        return
    table = Table(show_header=False, box=None)
    for key, value in info.items():
        if key == "size_bytes":
            value = f"{value / 1e6:.1f} MB"
        table.add_row(f"[bold]{key}[/]", escape(str(value)))
    out.print(table)


@llm_app.command("serve")
def llm_serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8080,
    gguf: Annotated[Optional[Path], typer.Option(help="GGUF model file [default: packaged SmolLM2-135M-Instruct].")] = None,
    n_ctx: Annotated[Optional[int], typer.Option(help="Context window in tokens [default: 4096].")] = None,
    threads: Annotated[Optional[int], typer.Option(help="CPU threads [default: all].")] = None,
) -> None:
    """Run the embedded llama.cpp server (OpenAI-compatible API) in the foreground until Ctrl-C.

    Example:

        rag llm serve --port 8080   # then: RAG_LLM__BASE_URL=http://127.0.0.1:8080/v1 rag ask "..."
    """
    from rag.generate.llamacpp_server import packaged_gguf, serve_forever

    settings = ctx.obj.settings()
    model = gguf or (Path(settings.llm.gguf) if settings.llm.gguf else packaged_gguf())
    err.print(f"starting {model.name} ...")
    serve_forever(
        model, host, port, n_ctx or settings.llm.n_ctx, threads or settings.llm.threads,
        on_ready=lambda url: err.print(f"serving {model.name} at {url} (OpenAI-compatible); Ctrl-C stops it"),
    )


def main() -> None:
    """Console-script entry point: run the app and turn library errors into messages and exit codes."""
    try:
        app()
    except RagError as exc:
        err.print(f"[red]error:[/] {escape(str(exc))}")
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
