"""Jupyter notebooks: Markdown cells with their heading structure, code cells as fenced code, short outputs.

Markdown headings (found by markdown-it, so ``#`` lines inside code fences are not headings) open the
heading path every later cell lies under, code cells included, so a chunk of code is cited as
``Data loading > Cleaning``. Code is fenced with the kernel's language; a cell's text outputs (stdout,
``text/plain`` results, error names) follow it, capped at :data:`MAX_OUTPUT_CHARS`, because a printed
value often answers the question while a 10,000-line log only buries the code.
"""

from __future__ import annotations

import re
from typing import Any

from rag.core.errors import LoaderError
from rag.core.types import Document
from rag.ingest.parsers.base import BaseParser, ParseContext, missing_module, sniff_text
from rag.ingest.parsers.builder import DocumentBuilder

MAX_OUTPUT_CHARS = 1000
"""Most characters of text output kept per code cell; the rest is replaced by a truncation note."""

_ANSI = re.compile(r"\x1b\[[0-9;?]*[ -/]*[@-~]")  # colour codes in tracebacks and progress output


def _source(cell: Any) -> str:
    source = cell.get("source", "")
    return "".join(source) if isinstance(source, list) else str(source or "")


def _outputs_text(outputs: Any) -> str:
    """The text outputs of a code cell (stream, ``text/plain`` results, ``ename: evalue``), capped."""
    pieces = []
    for output in outputs or []:
        kind = output.get("output_type")
        if kind == "stream":
            text = output.get("text", "")
        elif kind in ("execute_result", "display_data"):
            text = (output.get("data") or {}).get("text/plain", "")
        elif kind == "error":
            text = f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"
        else:
            continue
        text = _ANSI.sub("", "".join(text) if isinstance(text, list) else str(text)).strip("\n")
        if text.strip():
            pieces.append(text)
    joined = "\n".join(pieces)
    if len(joined) > MAX_OUTPUT_CHARS:
        joined = joined[:MAX_OUTPUT_CHARS].rstrip() + f"\n… ({len(joined) - MAX_OUTPUT_CHARS} more characters of output)"
    return joined


def _fence(text: str, info: str) -> str:
    """``text`` as a fenced block whose fence is longer than any backtick run inside it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    fence = "`" * max(3, longest + 1)
    return f"{fence}{info}\n{text}\n{fence}"


def _heading_text(inline: Any) -> str:
    """A heading's plain text: the text of its inline tokens, without emphasis or link markup."""
    if not inline.children:
        return inline.content
    return "".join(child.content for child in inline.children if child.type in ("text", "code_inline"))


def _add_markdown(builder: DocumentBuilder, source: str, parser: Any) -> list[str]:
    """Append a Markdown cell, opening a heading for each heading in it; returns the headings' titles."""
    lines = source.splitlines()
    tokens = parser.parse(source)
    found = []
    done = 0
    for index, token in enumerate(tokens):
        if token.type != "heading_open" or token.map is None or token.level != 0:
            continue  # headings nested in lists or quotes stay text
        start, end = token.map
        builder.paragraph("\n".join(lines[done:start]))
        title = _heading_text(tokens[index + 1])
        builder.heading(int(token.tag[1:]), title)
        if title.strip():
            found.append(title)
        done = end
    builder.paragraph("\n".join(lines[done:]))
    return found


def _language(metadata: dict[str, Any]) -> str:
    info = metadata.get("language_info") or {}
    kernel = metadata.get("kernelspec") or {}
    return str(info.get("name") or kernel.get("language") or "")


class NotebookParser(BaseParser):
    """Jupyter notebooks (nbformat 4, older versions upgraded): headings, fenced code, short outputs."""

    name = "ipynb"
    suffixes = (".ipynb",)
    media_types = ("application/x-ipynb+json",)
    description = ("Jupyter notebook: Markdown headings as sections, code cells fenced with the kernel "
                   f"language, text outputs (up to {MAX_OUTPUT_CHARS} characters a cell)")

    def available(self) -> str | None:
        return missing_module("nbformat", None, "nbformat")

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        import nbformat
        from markdown_it import MarkdownIt

        try:
            # reader.reads + convert, not nbformat.reads: the latter also validates against the schema and
            # logs a long ERROR for harmless drift (an extra cell key) while returning the notebook anyway.
            notebook = nbformat.convert(nbformat.reader.reads(data.decode("utf-8-sig")), 4)
        except UnicodeDecodeError as exc:
            raise LoaderError(f"invalid notebook: not UTF-8 (byte {exc.start})") from None
        except (AttributeError, TypeError, KeyError):  # valid JSON, but not shaped like a notebook
            raise LoaderError("invalid notebook: the JSON is not a Jupyter notebook") from None
        except Exception as exc:  # noqa: BLE001 - NotJSONError, NBFormatError, ValidationError
            reason = " ".join(str(exc).split())[:200]
            raise LoaderError(f"invalid notebook: {type(exc).__name__}: {reason}") from None
        metadata = dict(notebook.get("metadata") or {})
        language = _language(metadata)
        markdown = MarkdownIt("commonmark")
        builder = DocumentBuilder()
        headings: list[str] = []
        for cell in notebook.get("cells") or []:
            kind, source = cell.get("cell_type"), _source(cell)
            if kind == "markdown":
                headings += _add_markdown(builder, source, markdown)
            elif kind == "code":
                if source.strip():
                    builder.paragraph(_fence(source.strip("\n"), language))
                output = _outputs_text(cell.get("outputs"))
                if output:
                    builder.paragraph(_fence(output, "output"))
            elif kind == "raw":
                builder.paragraph(source)
        title = str(metadata.get("title") or "").strip() or (headings[0] if headings else ctx.stem)
        kernel = (metadata.get("kernelspec") or {}).get("name")
        fmt = {"kernel": kernel, "kernel_language": language or None}
        return [
            builder.build(
                doc_id=ctx.doc_id, source=ctx.source, title=title,
                metadata=ctx.merge_metadata({k: v for k, v in fmt.items() if v}, format=self.name),
            )
        ]
