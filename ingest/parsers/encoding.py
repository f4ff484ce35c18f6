"""Bytes to text for the text formats (Markdown, plain text, HTML, CSV ...)."""

from __future__ import annotations

from rag.core.errors import LoaderError


def decode_text(data: bytes) -> tuple[str, str]:
    """``(text, encoding)``: the text with a BOM removed and newlines normalised to ``\\n``.

    Raises:
        LoaderError: the bytes are binary or not decodable, or the text is blank.
    """
    if b"\x00" in data:
        raise LoaderError("binary file, not text")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise LoaderError(f"invalid UTF-8 at byte {exc.start}") from None
    text = text.removeprefix("\ufeff").replace("\r\n", "\n").replace("\r", "\n")
    if not text.strip():
        raise LoaderError("empty file")
    return text, "utf-8"
