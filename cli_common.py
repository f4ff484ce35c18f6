"""What the command-line front ends share: the consoles, exact JSON output, terminal-safe text, ``--set``.

``rag`` (:mod:`rag.cli`) and its ``rag eval`` sub-app (:mod:`rag.evaluate.cli`) both print through these,
so the sub-app needs nothing from :mod:`rag.cli` (which imports it: importing back would be a cycle).
"""

from __future__ import annotations

import json
import re
import sys
from typing import Any

from rich.console import Console

from rag.core.errors import ConfigError
from rag.core.settings import put_dotted

# emoji=False: ``:smile:`` in a message stays ``:smile:``; highlight=False: no guessed colouring;
# soft_wrap: long lines are left to the terminal, not cut with inserted newlines.
out = Console(emoji=False, highlight=False, soft_wrap=True)
err = Console(stderr=True, emoji=False, highlight=False, soft_wrap=True)

# JSON allows these raw inside strings, but some line splitters (str.splitlines, JavaScript) break on
# U+0085/U+2028/U+2029, and lone surrogates (possible from a JSONL corpus) cannot be encoded as UTF-8.
_JSON_UNSAFE = re.compile("[\x85\u2028\u2029\ud800-\udfff]")

# Control characters are shown as ``\x1b`` so a document cannot drive the terminal; tab and line ends
# are left to Rich (which expands tabs and drops carriage returns).
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if chr(c) not in "\t\n\r"}


def emit_json(data: Any, *, indent: int | None = None) -> None:
    """Write ``data`` as JSON and a newline to stdout, exactly: no console, no markup, no wrapping.

    Always UTF-8 whatever the locale. U+0085, U+2028, U+2029 and lone surrogates are written as ``\\u``
    escapes, which parse back to the same string, so one JSON value is one line for every reader.
    Flushed, so ``search --queries`` streams line by line.
    """
    text = json.dumps(data, ensure_ascii=False, indent=indent)
    text = _JSON_UNSAFE.sub(lambda m: f"\\u{ord(m.group()):04x}", text) + "\n"
    binary = getattr(sys.stdout, "buffer", None)
    if binary is None:  # a text-only stream, such as a test capturing stdout
        sys.stdout.write(text)
    else:
        sys.stdout.flush()  # keep the order with anything written as text before
        binary.write(text.encode("utf-8"))
    sys.stdout.flush()


def visible(text: str) -> str:
    """``text`` for the terminal: every character kept, control characters spelled out."""
    return text.translate(_CONTROLS)


def parse_sets(pairs: list[str]) -> dict[str, Any]:
    """``--set retrieval.alpha=0.3`` pairs as nested settings overrides (values read as JSON when they parse).

    Raises:
        ConfigError: a pair is not ``SECTION.FIELD=VALUE``, or two pairs conflict.
    """
    overrides: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set expects SECTION.FIELD=VALUE, got {pair!r}")
        try:
            value: Any = json.loads(raw)
        except ValueError:
            value = raw
        put_dotted(overrides, key.strip(), value, f"--set {pair!r} conflicts with another --set")
    return overrides
