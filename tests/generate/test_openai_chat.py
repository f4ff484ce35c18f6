"""OpenAIChatGenerator against a scripted endpoint: answers, citations, retries and error messages."""

from __future__ import annotations

import json
import socket
import time

import pytest
from fake_endpoint import Reply, ScriptedEndpoint

from rag.core.errors import ConfigError, GenerationError
from rag.core.types import Hit
from rag.generate import OpenAIChatGenerator
from rag.generate.openai_chat import NO_CONTEXT_ANSWER


def generator(endpoint: ScriptedEndpoint, **options: object) -> OpenAIChatGenerator:
    settings: dict[str, object] = {"max_retries": 0, "timeout": 5.0} | options
    return OpenAIChatGenerator(endpoint.base_url, endpoint.model, **settings)  # type: ignore[arg-type]


# --- answers and citations -------------------------------------------------------------------------


def test_plain_mode_streams_text_and_parses_markers(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    endpoint.reply(Reply(["It is 330 m", " tall [1]; see", " also [2, 9]."]))
    tokens: list[str] = []

    # With the repetition stop off the endpoint's pieces pass through as they are (with it they lag a few
    # words behind: see test_the_repetition_stop_holds_back_only_a_few_words).
    answer = generator(endpoint, repeat_stop_words=0).generate("How tall?", hits, on_token=tokens.append)

    assert tokens == ["It is 330 m", " tall [1]; see", " also [2, 9]."]
    assert answer.text == "It is 330 m tall [1]; see also [2, 9]."
    assert [(c.number, c.hit.chunk.chunk_id) for c in answer.citations] == [(1, "c1"), (2, "c2")]
    assert answer.invalid_citations == [9]
    assert answer.used_hits == hits
    assert answer.model == "fake-model"
    assert answer.warnings == []
    request = endpoint.requests[0]
    assert request["stream"] is True and "response_format" not in request


def test_structured_mode_streams_only_answer_text_and_appends_missing_markers(
    endpoint: ScriptedEndpoint, hits: list[Hit]
) -> None:
    reply = json.dumps({"answer": 'It is "330 m" tall [1].', "citations": [1, 3]}, indent=2)
    endpoint.reply(Reply([reply[i : i + 7] for i in range(0, len(reply), 7)]))
    tokens: list[str] = []

    answer = generator(endpoint, structured=True).generate("How tall?", hits, on_token=tokens.append)

    assert answer.text == 'It is "330 m" tall [1]. [3]'
    assert "".join(tokens) == answer.text
    assert [c.number for c in answer.citations] == [1, 3]
    assert answer.invalid_citations == []
    schema = endpoint.requests[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["citations"]["items"]["enum"] == [1, 2, 3]


def test_structured_reply_cut_at_max_tokens_keeps_the_text_and_warns(
    endpoint: ScriptedEndpoint, hits: list[Hit]
) -> None:
    endpoint.reply(Reply(['{"answer": "It is 330', " m tall [1] and"], finish_reason="length"))

    answer = generator(endpoint, structured=True, max_tokens=12).generate("How tall?", hits)

    assert answer.text == "It is 330 m tall [1] and"
    assert [c.number for c in answer.citations] == [1]
    assert any("llm.max_tokens (12 tokens)" in warning for warning in answer.warnings)
    assert any("not valid JSON" in warning for warning in answer.warnings)


def test_structured_mode_falls_back_to_markers_when_the_endpoint_ignores_the_schema(
    endpoint: ScriptedEndpoint, hits: list[Hit]
) -> None:
    endpoint.reply(Reply(["Berlin [2], or [7]."]))
    tokens: list[str] = []

    answer = generator(endpoint, structured=True).generate("Capital?", hits, on_token=tokens.append)

    assert tokens == ["Berlin [2], or [7]."]
    assert [c.number for c in answer.citations] == [2]
    assert answer.invalid_citations == [7]
    assert any("ignored the JSON schema" in warning for warning in answer.warnings)


def test_listed_citations_outside_the_blocks_are_reported(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    # An endpoint that does not enforce the schema may list numbers that match no block.
    endpoint.reply(Reply([json.dumps({"answer": "Berlin.", "citations": [2, 5]})]))

    answer = generator(endpoint, structured=True).generate("Capital?", hits)

    assert answer.text == "Berlin. [2]"
    assert answer.invalid_citations == [5]


def test_no_hits_answers_without_calling_the_model(endpoint: ScriptedEndpoint) -> None:
    tokens: list[str] = []

    answer = generator(endpoint).generate("Anything?", [], on_token=tokens.append)

    assert endpoint.requests == []
    assert answer.text == NO_CONTEXT_ANSWER == "".join(tokens)
    assert answer.text.startswith("No relevant context was found")
    assert answer.citations == [] and answer.used_hits == []


def test_bad_arguments_fail_at_construction() -> None:
    with pytest.raises(ConfigError, match=r"llm.context_tokens must be positive, got 0"):
        OpenAIChatGenerator("http://127.0.0.1:1/v1", "m", context_tokens=0)
    with pytest.raises(ConfigError, match=r"llm.max_retries"):
        OpenAIChatGenerator("http://127.0.0.1:1/v1", "m", max_retries=-1)


# --- failures ---------------------------------------------------------------------------------------


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unreachable_endpoint_fails_fast_naming_the_url(hits: list[Hit]) -> None:
    url = f"http://127.0.0.1:{closed_port()}/v1"
    started = time.monotonic()

    with pytest.raises(GenerationError) as caught:
        OpenAIChatGenerator(url, "m", max_retries=0, timeout=5).generate("q", hits)

    assert time.monotonic() - started < 3
    message = str(caught.value)
    assert f"cannot reach the LLM endpoint at {url}" in message
    assert "rag llm serve" in message and "RAG_LLM__BASE_URL" in message


def test_a_500_is_retried_and_then_succeeds(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    endpoint.reply(Reply(status=500, body='{"error": {"message": "overloaded"}}'), Reply(["Fine [1]."]))

    answer = generator(endpoint, max_retries=2).generate("q", hits)

    assert answer.text == "Fine [1]."
    assert len(endpoint.requests) == 2


def test_a_persistent_500_reports_status_and_body(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    endpoint.reply(Reply(status=500, body='{"error": {"message": "model crashed"}}'))

    with pytest.raises(GenerationError, match=r"answered HTTP 500: .*model crashed"):
        generator(endpoint).generate("q", hits)


def test_a_stall_past_the_timeout_names_the_timeout_setting(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    endpoint.reply(Reply(["late"], delay=3.0))

    with pytest.raises(GenerationError, match=r"timed out: no response within 0.5 s \(llm.timeout"):
        generator(endpoint, timeout=0.5).generate("q", hits)


def test_a_stall_mid_stream_is_a_timeout_too(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    endpoint.reply(Reply(["It is", " late"], stall_after_first=3.0))
    tokens: list[str] = []

    with pytest.raises(GenerationError, match="timed out"):
        generator(endpoint, timeout=0.5, repeat_stop_words=0).generate("q", hits, on_token=tokens.append)
    assert tokens == ["It is"]


@pytest.mark.parametrize("status", [401, 403])
def test_a_refused_key_names_the_setting_but_never_the_key(
    endpoint: ScriptedEndpoint, hits: list[Hit], status: int
) -> None:
    endpoint.reply(Reply(status=status, body='{"error": {"message": "Incorrect API key provided: sk-secret-42"}}'))

    with pytest.raises(GenerationError) as caught:
        generator(endpoint, api_key="sk-secret-42").generate("q", hits)

    message = str(caught.value)
    assert f"HTTP {status}" in message and "llm.api_key" in message
    assert "sk-secret" not in message


def test_an_unknown_model_is_named(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    endpoint.reply(Reply(status=404, body='{"error": {"message": "model not found"}}'))

    with pytest.raises(GenerationError, match=r"does not serve model 'fake-model' \(HTTP 404\)"):
        generator(endpoint).generate("q", hits)


# --- decoding: penalties and the repetition stop ----------------------------------------------------------


LOOP = "You should not change the embedding model [1]. " * 6


def test_a_looping_answer_is_cut_and_the_stream_is_left_unread(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    # After the loop the endpoint stalls past the timeout: reading on would fail the answer.
    endpoint.reply(Reply([LOOP, "Then more [2]."], stall_after_first=3.0))
    tokens: list[str] = []

    answer = generator(endpoint, timeout=0.5).generate("Can I change it?", hits, on_token=tokens.append)

    assert answer.text == "You should not change the embedding model [1]."
    assert "".join(tokens).strip() == answer.text
    assert [c.number for c in answer.citations] == [1]
    assert len(answer.warnings) == 1
    assert answer.warnings[0].startswith("the answer started repeating itself; cut at character 46")
    assert "You should not change the embedding model [1]." in answer.warnings[0]


def test_a_looping_structured_answer_is_cut_on_its_text_not_its_json(
    endpoint: ScriptedEndpoint, hits: list[Hit]
) -> None:
    reply = '{"answer": "' + "It is 330 m tall [1]. " * 4 + '", "citations": [1]}'
    endpoint.reply(Reply([reply[i : i + 5] for i in range(0, len(reply), 5)]))
    tokens: list[str] = []

    answer = generator(endpoint, structured=True).generate("How tall?", hits, on_token=tokens.append)

    assert answer.text == "It is 330 m tall [1]." == "".join(tokens).strip()
    assert [c.number for c in answer.citations] == [1]  # from the inline marker: the list was never read
    assert "not read" in answer.warnings[0] and len(answer.warnings) == 1


def test_an_answer_without_a_loop_streams_whole_a_few_words_behind(
    endpoint: ScriptedEndpoint, hits: list[Hit]
) -> None:
    text = "The Eiffel Tower is 330 metres tall [1] and it was completed in 1889 [1], long before Berlin [2]."
    endpoint.reply(Reply(text.split(" ")[:1] + [" " + word for word in text.split(" ")[1:]]))
    tokens: list[str] = []

    answer = generator(endpoint).generate("How tall?", hits, on_token=tokens.append)

    assert answer.text == text == "".join(tokens)
    assert answer.warnings == []
    assert len(tokens) > 5  # released word by word once 7 words are held back, not all at the end


def test_the_stop_is_off_with_zero_words(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    endpoint.reply(Reply([LOOP]))

    answer = generator(endpoint, repeat_stop_words=0).generate("Can I change it?", hits)

    assert answer.text == LOOP.strip() and answer.warnings == []


def test_penalties_are_sent_only_when_set_and_extra_body_wins(endpoint: ScriptedEndpoint, hits: list[Hit]) -> None:
    endpoint.reply(Reply(["Berlin [2]."]))

    generator(endpoint).generate("Capital?", hits)
    generator(endpoint, frequency_penalty=0.3, presence_penalty=0.0, repeat_penalty=1.15).generate("Capital?", hits)
    generator(endpoint, repeat_penalty=1.15, extra_body={"repeat_penalty": 1.0, "top_k": 40}).generate("Capital?", hits)

    unset, both, overridden = endpoint.requests
    assert not {"frequency_penalty", "presence_penalty", "repeat_penalty"} & set(unset)
    assert (both["frequency_penalty"], both["presence_penalty"], both["repeat_penalty"]) == (0.3, 0.0, 1.15)
    assert overridden["repeat_penalty"] == 1.0 and overridden["top_k"] == 40
    assert "frequency_penalty" not in overridden


@pytest.mark.parametrize(
    ("option", "value"),
    [("frequency_penalty", 2.5), ("presence_penalty", -3), ("repeat_penalty", 0), ("repeat_stop_words", 1)],
)
def test_bad_decoding_options_fail_at_construction_naming_the_setting(option: str, value: float) -> None:
    with pytest.raises(ConfigError, match=f"llm.{option}"):
        OpenAIChatGenerator("http://127.0.0.1:9/v1", "m", **{option: value})  # type: ignore[arg-type]
