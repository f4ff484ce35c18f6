"""generate stage of rag-platform: grounded, cited answers from an OpenAI-compatible chat endpoint.

- :class:`OpenAIChatGenerator` streams an :class:`Answer` with :class:`Citation` s from any endpoint;
- :func:`build_messages` packs numbered context blocks into a token budget;
- :class:`LlamaCppServer` runs the embedded llama.cpp endpoint in a child process (offline default);
  :func:`serve_forever` runs it in the foreground for ``rag llm serve``.

Names are imported on first use (PEP 562), so that the server's child process,
``python -m rag.generate.llamacpp_server``, neither pays for importing the openai SDK nor makes runpy
warn that the module was imported by its package before being run.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rag.core.answers import Answer, Citation  # noqa: F401 - what type checkers see of the lazy exports
    from rag.generate.llamacpp_server import LlamaCppServer, packaged_gguf, serve_forever  # noqa: F401 - what type checkers see of the lazy exports
    from rag.generate.openai_chat import OpenAIChatGenerator  # noqa: F401 - what type checkers see of the lazy exports
    from rag.generate.prompt import approx_token_count, build_messages  # noqa: F401 - what type checkers see of the lazy exports

_EXPORTS = {
    "Answer": "rag.core.answers",
    "Citation": "rag.core.answers",
    "LlamaCppServer": "rag.generate.llamacpp_server",
    "packaged_gguf": "rag.generate.llamacpp_server",
    "serve_forever": "rag.generate.llamacpp_server",
    "OpenAIChatGenerator": "rag.generate.openai_chat",
    "approx_token_count": "rag.generate.prompt",
    "build_messages": "rag.generate.prompt",
}

__all__ = sorted(_EXPORTS)  # noqa: PLE0605 - the lazy-import table is the one list of names


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
