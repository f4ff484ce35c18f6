"""BEIR-style JSONL corpora: one document per line (``_id``, ``title``, ``text``, ``metadata``)."""

from __future__ import annotations

import json

from rag.core.errors import LoaderError
from rag.core.types import Document, Section
from rag.ingest.parsers.base import BaseParser, ParseContext, sniff_text
from rag.ingest.parsers.encoding import decode_text


class JsonlParser(BaseParser):
    name = "jsonl"
    suffixes = (".jsonl",)
    media_types = ("application/jsonl", "application/x-ndjson")
    description = "BEIR corpus: one document per line (_id, title, text, metadata)"

    def sniff(self, head: bytes) -> str | None:
        return sniff_text(head)

    def parse(self, data: bytes, ctx: ParseContext) -> list[Document]:
        """One document per line of a BEIR corpus: ``{"_id", "title", "text", "metadata"?}``.

        The title, when present, is prepended to the text (``title\\n\\ntext``) so BM25 and the embedder
        both see it, as BEIR's own dense baselines do; one section spans the whole text. Blank lines are
        skipped. A line whose metadata uses a reserved key is reported in ``ctx.problems`` and skipped
        when ``ctx.problems`` is given; malformed lines (invalid JSON, no ``_id``, a repeated ``_id``)
        fail the whole file.
        """
        problems = ctx.problems
        docs: list[Document] = []
        seen: set[str] = set()
        text_all, _ = decode_text(data)
        for number, line in enumerate(text_all.split("\n"), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise LoaderError(f"line {number}: invalid JSON ({exc.msg})") from None
            if not isinstance(record, dict):
                raise LoaderError(f"line {number}: expected a JSON object")
            if record.get("_id") is None:
                raise LoaderError(f'line {number}: missing "_id"')
            body = record.get("text")
            if not isinstance(body, str):
                raise LoaderError(f'line {number}: missing "text"')
            line_meta = record.get("metadata") or {}
            if not isinstance(line_meta, dict):
                raise LoaderError(f'line {number}: "metadata" must be an object')
            line_id = str(record["_id"])
            if line_id in seen:
                raise LoaderError(f"line {number}: duplicate _id {line_id!r}")
            seen.add(line_id)
            title = str(record.get("title") or "").strip()
            text = f"{title}\n\n{body}" if title and body.strip() else (title or body)
            try:
                merged = ctx.merge_metadata(line_meta, format=self.name)
            except LoaderError as exc:
                if problems is None:
                    raise LoaderError(f"line {number}: {exc}") from None
                problems.append((f"line {number} (_id {line_id!r})", str(exc)))
                continue
            docs.append(
                Document(
                    doc_id=line_id,
                    text=text,
                    source=ctx.source,
                    title=title or line_id,
                    sections=[Section(text=text, start=0)] if text.strip() else [],
                    metadata=merged,
                )
            )
        return docs
