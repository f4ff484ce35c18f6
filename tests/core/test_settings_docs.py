"""docs/configuration.md documents every setting: a new field without a row there is a test failure."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from rag.core.settings import Settings

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def _fields(model: type[BaseModel], prefix: str = "") -> list[str]:
    names = []
    for name, info in model.model_fields.items():
        annotation = info.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names += _fields(annotation, f"{prefix}{name}.")
        else:
            names.append(prefix + name)
    return names


def test_every_setting_has_a_row_with_its_variable() -> None:
    text = DOC.read_text(encoding="utf-8")
    missing = [
        name for name in _fields(Settings)
        if f"| `{name}` |" not in text or f"`RAG_{name.upper().replace('.', '__')}`" not in text
    ]
    assert missing == []
