"""Gzip-compressed files (written with the gzip module): read as the file inside, within the limits.

No ``ParserContractTests`` class here: the contract parses with a ``parse_child`` that returns nothing,
and a ``.gz`` file's documents are all its inner file's; the tests below go through the real registry.
"""

from __future__ import annotations

import gzip
import re
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from rag.core.errors import LoaderError
from rag.ingest.loaders import load_file
from rag.ingest.parsers import ParseLimits, ParserRegistry

NOTES = "---\nteam: ops\n---\n# Runbook\n\nRestart the queue.\n\n## Escalation\n\nPage the on-call engineer.\n"


def load(path: Path, **kwargs: object) -> list:
    return load_file(path, doc_id=f"docs/{path.name}", source=f"docs/{path.name}", **kwargs)


def test_compressed_markdown_reads_exactly_like_the_plain_file(tmp_path: Path) -> None:
    (tmp_path / "notes.md").write_text(NOTES)
    (tmp_path / "notes.md.gz").write_bytes(gzip.compress(NOTES.encode()))
    [plain] = load(tmp_path / "notes.md")
    [packed] = load(tmp_path / "notes.md.gz")
    assert packed.doc_id == "docs/notes.md.gz" and packed.source == "docs/notes.md.gz"
    assert (packed.text, packed.sections, packed.title) == (plain.text, plain.sections, plain.title)
    assert packed.metadata["format"] == "markdown" and packed.metadata["team"] == "ops"


def test_compressed_pdf_and_multi_member_gzip(tmp_path: Path, make_pdf: Callable[..., Path]) -> None:
    pdf = make_pdf(["Compressed page one."], name="scan.pdf").read_bytes()
    (tmp_path / "scan.pdf.gz").write_bytes(gzip.compress(pdf))
    [doc] = load(tmp_path / "scan.pdf.gz")
    assert doc.metadata["format"] == "pdf" and "Compressed page one." in doc.text
    # `cat a.gz b.gz` is a valid gzip file holding both parts.
    (tmp_path / "log.txt.gz").write_bytes(gzip.compress(b"first part\n") + gzip.compress(b"second part\n"))
    [log] = load(tmp_path / "log.txt.gz")
    assert log.text == "first part\nsecond part\n"


@pytest.mark.parametrize(("name", "reason"), [
    ("tool.exe.gz", "unsupported file type .exe inside the .gz"),
    ("archive.gz", "no file suffix (type unknown) inside the .gz"),
])
def test_inner_name_without_a_parser_is_a_clear_reason(tmp_path: Path, name: str, reason: str) -> None:
    (tmp_path / name).write_bytes(gzip.compress(b"some bytes"))
    with pytest.raises(LoaderError, match="^" + re.escape(reason)):
        load(tmp_path / name)


def test_gzip_bomb_stops_at_the_unpacked_limit(tmp_path: Path) -> None:
    bomb = gzip.compress(b"\0" * (64 * 2**20), compresslevel=9)  # 64 MiB of zeros in ~64 KB
    (tmp_path / "bomb.txt.gz").write_bytes(bomb)
    assert len(bomb) < 200_000
    started = time.perf_counter()
    with pytest.raises(LoaderError, match=r"^gzip file unpacks to more than ingest.max_unpacked_mb \(4 MiB\)$"):
        load(tmp_path / "bomb.txt.gz", limits=ParseLimits(max_unpacked_mb=4))
    assert time.perf_counter() - started < 5


def test_truncated_or_fake_gzip(tmp_path: Path) -> None:
    packed = gzip.compress(("line of text\n" * 2000).encode())
    (tmp_path / "cut.txt.gz").write_bytes(packed[: len(packed) // 2])
    with pytest.raises(LoaderError, match=r"^corrupt gzip file: truncated$"):
        load(tmp_path / "cut.txt.gz")
    (tmp_path / "fake.md.gz").write_text("# not compressed at all\n")
    with pytest.raises(LoaderError, match=r"^not a gzip file \(unrecognised content\)$"):
        load(tmp_path / "fake.md.gz")


def test_nested_compression_counts_against_max_depth(tmp_path: Path) -> None:
    (tmp_path / "twice.md.gz.gz").write_bytes(gzip.compress(gzip.compress(NOTES.encode())))
    assert load(tmp_path / "twice.md.gz.gz")[0].title == "Runbook"
    with pytest.raises(LoaderError, match=r"^nested more than 1 deep \(ingest.max_depth\)$"):
        load(tmp_path / "twice.md.gz.gz", limits=ParseLimits(max_depth=1))


def test_formats_listing_explains_the_gz_rule() -> None:
    rows = {row.name: row for row in ParserRegistry(plugins=False).formats()}
    assert rows["gzip"].suffixes == (".gz",) and "name without .gz" in rows["gzip"].description
    for name, suffix in (("eml", ".eml"), ("mbox", ".mbox"), ("epub", ".epub"), ("ipynb", ".ipynb")):
        assert rows[name].suffixes == (suffix,) and rows[name].unavailable is None
