"""The contract every parser keeps, as a pytest mixin a plugin's tests subclass.

Subclass :class:`ParserContractTests` in a ``test_*.py`` module and provide two fixtures, ``parser`` (the
parser under test) and ``sample`` (a ``(file name, bytes)`` pair of a real file of the format)::

    import pytest
    from rag.testing.parsers import ParserContractTests

    class TestVisioParser(ParserContractTests):
        @pytest.fixture
        def parser(self):
            return VisioParser()

        @pytest.fixture
        def sample(self, tmp_path):
            return "plan.vsdx", make_real_vsdx(tmp_path).read_bytes()

The suite needs only pytest. It checks what the pipeline relies on: the declared identity, that the
sample is recognised, that sections tile the document text exactly (chunk offsets and citations point
into it), that metadata is JSON data carrying ``format``, that location keys are reserved ones (so no
user key is overwritten), that parsing is deterministic (incremental ingest compares content hashes), and
that garbage fails with :class:`~rag.core.errors.LoaderError`, the one error the pipeline reports and
moves past.
"""

from __future__ import annotations

import json
import random

import pytest

from rag.core.errors import LoaderError
from rag.core.types import RESERVED_METADATA_KEYS, Document
from rag.ingest.parsers.base import ParseContext, ParseLimits, Parser

__all__ = ["ParserContractTests", "assert_sections_tile", "parse_sample"]


def parse_sample(parser: Parser, name: str, data: bytes, limits: ParseLimits | None = None) -> list[Document]:
    """Parse ``data`` as the pipeline does for a file called ``name`` (sniff first, then parse)."""
    reason = parser.sniff(data[:8192])
    if reason:
        raise LoaderError(reason)
    ctx = ParseContext(
        name=name, doc_id=name, source=f"docs/{name}", metadata={"team": "contract"},
        fixed={"modified": "2026-01-02T03:04:05Z"}, limits=limits or ParseLimits(), problems=[],
        parse_child=lambda child, child_name, doc_id: [],
    )
    return parser.parse(data, ctx)


def assert_sections_tile(doc: Document) -> None:
    """Every section is the exact slice of the text its offset says, in order, without overlap; a table
    section starts with its header."""
    end = 0
    for section in doc.sections:
        assert section.start >= end, "sections overlap or are out of order"
        assert doc.text[section.start : section.start + len(section.text)] == section.text
        end = section.start + len(section.text)
        if section.table is not None:
            assert section.text.startswith(section.table.header)


class ParserContractTests:
    """Contract tests for one parser; subclasses provide the ``parser`` and ``sample`` fixtures."""

    @pytest.fixture
    def parser(self) -> Parser:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("provide a `parser` fixture")

    @pytest.fixture
    def sample(self) -> tuple[str, bytes]:  # pragma: no cover - provided by the subclass
        raise NotImplementedError("provide a `sample` fixture: (file name, bytes of a real file)")

    @pytest.fixture
    def documents(self, parser: Parser, sample: tuple[str, bytes]) -> list[Document]:
        if parser.available() is not None:
            pytest.skip(f"{parser.name} cannot run here: {parser.available()}")
        return parse_sample(parser, *sample)

    def test_declares_its_identity(self, parser: Parser, sample: tuple[str, bytes]) -> None:
        assert isinstance(parser, Parser)
        assert parser.name and parser.name == parser.name.strip()
        assert parser.suffixes and all(s.startswith(".") and s == s.lower() for s in parser.suffixes)
        assert isinstance(parser.media_types, tuple)
        assert parser.description.strip()
        assert parser.extra is None or parser.extra.strip()
        assert any(sample[0].lower().endswith(s) for s in parser.suffixes), "the sample's suffix is not claimed"

    def test_availability_is_none_or_a_reason(self, parser: Parser) -> None:
        reason = parser.available()
        assert reason is None or (isinstance(reason, str) and reason.strip())

    def test_recognises_the_sample(self, parser: Parser, sample: tuple[str, bytes]) -> None:
        assert parser.sniff(sample[1][:8192]) is None

    def test_documents_have_text_and_a_title(self, documents: list[Document]) -> None:
        assert documents
        for doc in documents:
            assert doc.text.strip()
            assert isinstance(doc.title, str) and doc.title.strip()
            assert doc.doc_id and doc.source == documents[0].source

    def test_sections_tile_the_text(self, documents: list[Document]) -> None:
        for doc in documents:
            assert_sections_tile(doc)
            covered = " ".join(s.text for s in doc.sections)
            assert len(covered.split()) >= 0.9 * len(doc.text.split()), "sections leave text out"

    def test_metadata_is_json_with_format_and_user_tags(self, parser: Parser, documents: list[Document]) -> None:
        for doc in documents:
            json.dumps(doc.metadata)
            assert doc.metadata.get("format"), "set format=parser.name through ctx.merge_metadata"
            assert doc.metadata.get("team") == "contract", "user tags (--meta) must reach the metadata"
            assert doc.metadata.get("modified") == "2026-01-02T03:04:05Z", "fixed keys come last"

    def test_location_keys_are_reserved(self, documents: list[Document]) -> None:
        for doc in documents:
            for section in doc.sections:
                assert set(section.location) <= RESERVED_METADATA_KEYS, (
                    f"location keys {set(section.location) - RESERVED_METADATA_KEYS} could overwrite user metadata"
                )
                json.dumps(dict(section.location))

    def test_parsing_is_deterministic(self, parser: Parser, sample: tuple[str, bytes], documents: list[Document]) -> None:
        again = parse_sample(parser, *sample)
        assert [(d.doc_id, d.text, d.title, d.metadata, d.sections) for d in again] == [
            (d.doc_id, d.text, d.title, d.metadata, d.sections) for d in documents
        ]

    @pytest.mark.parametrize("damage", ["truncated", "noise", "empty-ish"])
    def test_garbage_fails_with_a_loader_error(self, parser: Parser, sample: tuple[str, bytes], damage: str) -> None:
        name, data = sample
        if damage == "truncated":
            garbage = data[: max(1, len(data) // 3)]
        elif damage == "noise":
            garbage = bytes(random.Random(7).randrange(256) for _ in range(4096))
        else:
            garbage = b" \n\t " * 8
        try:
            documents = parse_sample(parser, name, garbage)
        except LoaderError as exc:
            assert str(exc).strip() and "\n" not in str(exc), "a reason is one line"  # noqa: PT017 - refusing is allowed, not required
            return
        # A damaged file may still yield text (a truncated text file is text); it must be well formed.
        for doc in documents:
            assert doc.text.strip()
