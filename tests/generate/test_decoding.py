"""Decoding options reach every LLM call: the settings, the embedded server's defaults, the stage completer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from fake_endpoint import Reply, ScriptedEndpoint

from rag.core.errors import ConfigError
from rag.core.settings import load_settings
from rag.engine.llm import LLMServices
from rag.generate.completion import ChatCompleter, CompletionCache
from rag.generate.llamacpp_server import EMBEDDED_PENALTIES, sampling_penalties

PENALTIES = ("frequency_penalty", "presence_penalty", "repeat_penalty")


def test_penalties_are_sent_only_when_configured_on_any_endpoint() -> None:
    # bench_decoding found every penalty tried made the bundled model copy block labels: no embedded default.
    assert EMBEDDED_PENALTIES == {}
    for embedded in (True, False):
        assert sampling_penalties(None, None, None, embedded=embedded) == dict.fromkeys(PENALTIES)
        assert sampling_penalties(0.0, 0.5, 1.2, embedded=embedded) == {
            "frequency_penalty": 0.0, "presence_penalty": 0.5, "repeat_penalty": 1.2,
        }


def test_the_engine_passes_the_llm_settings_to_the_generator_and_the_stage_completer(tmp_path: Path) -> None:
    remote = load_settings(data_dir=tmp_path, llm={"base_url": "http://127.0.0.1:9/v1", "repeat_stop_words": 12})
    configured = load_settings(
        data_dir=tmp_path, llm={"base_url": "http://127.0.0.1:9/v1", "repeat_penalty": 1.2, "frequency_penalty": 0.4}
    )
    embedded = load_settings(data_dir=tmp_path)

    services = LLMServices(remote, len, threading.RLock())
    generator, completer = services.generator(), services.completer()
    assert generator.sampling == {} and generator.extra_sampling == {} and generator.repeat_stop_words == 12
    assert completer.sampling == {} and completer.extra_body == {}
    services.close()

    services = LLMServices(configured, len, threading.RLock())
    generator, completer = services.generator(), services.completer()
    assert generator.sampling == completer.sampling == {"frequency_penalty": 0.4}
    assert generator.extra_sampling == completer.extra_body == {"repeat_penalty": 1.2}
    services.close()

    # Without llm.base_url the embedded server answers (not started here: only what would be asked of it).
    assert LLMServices(embedded, len, threading.RLock())._penalties() == sampling_penalties(
        None, None, None, embedded=True
    )


@pytest.mark.parametrize(
    ("field", "value"),
    [("repeat_stop_words", 1), ("repeat_stop_words", -1), ("repeat_penalty", 0), ("frequency_penalty", 2.5)],
)
def test_out_of_range_decoding_settings_are_config_errors(tmp_path: Path, field: str, value: float) -> None:
    with pytest.raises(ConfigError, match=field):
        load_settings(data_dir=tmp_path, llm={field: value})


def test_the_stage_completer_sends_penalties_keys_its_cache_on_them_and_cuts_loops(tmp_path: Path) -> None:
    loop = "Chunks hold 200 tokens of text. " * 5
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply([loop]))
        cache = CompletionCache(tmp_path / "cache.sqlite")
        plain = ChatCompleter(endpoint.base_url, endpoint.model, cache=cache)
        penalized = ChatCompleter(
            endpoint.base_url, endpoint.model, cache=cache, frequency_penalty=0.3, repeat_penalty=1.15
        )
        messages = [{"role": "user", "content": "How big is a chunk?"}]

        first = penalized.complete(messages, max_tokens=64)
        assert plain.complete(messages, max_tokens=64).cached is False  # other sampling: another cache entry
        assert penalized.complete(messages, max_tokens=64).cached is True
        as_json = plain.complete(messages, max_tokens=64, response_format={"type": "json_object"})

    assert first.text == "Chunks hold 200 tokens of text."
    assert as_json.text == loop.strip()  # a JSON reply is never cut
    sent = endpoint.requests[0]
    assert (sent["frequency_penalty"], sent["repeat_penalty"]) == (0.3, 1.15)
    assert not set(PENALTIES) & set(endpoint.requests[1])
