"""Citation markers in plain text, and the "answer" string decoded from JSON while it streams."""

from __future__ import annotations

import json
import random

import pytest

from rag.generate.answer import find_citations
from rag.generate.openai_chat import AnswerStreamDecoder, citation_response_format


@pytest.mark.parametrize(
    ("text", "valid", "invalid"),
    [
        ("Paris [1].", [1], []),
        ("Tall [1, 3] and old [2][3].", [1, 2, 3], []),
        ("See [0], [4] and [1,4].", [1], [0, 4]),
        ("No markers, [a] or [1-2] here.", [], []),
        ("Repeated [2] [2] [2].", [2], []),
    ],
)
def test_find_citations(text: str, valid: list[int], invalid: list[int]) -> None:
    assert find_citations(text, 3) == (valid, invalid)


def decode(pieces: list[str]) -> tuple[str, list[str]]:
    decoder = AnswerStreamDecoder()
    outputs = [decoder.feed(piece) for piece in pieces]
    assert "".join(outputs) == decoder.answer
    return decoder.answer, outputs


TRICKY = 'Quote " backslash \\ slash / tab \t newline \n é ✓ 😀 \u0001 [1] end'


@pytest.mark.parametrize("ensure_ascii", [True, False])
def test_every_two_way_split_decodes_like_json_loads(ensure_ascii: bool) -> None:
    reply = json.dumps({"answer": TRICKY, "citations": [1, 2]}, indent=2, ensure_ascii=ensure_ascii)
    for cut in range(len(reply) + 1):
        answer, _ = decode([reply[:cut], reply[cut:]])
        assert answer == TRICKY, f"split at {cut}: {reply[:cut]!r} | {reply[cut:]!r}"


def test_one_character_at_a_time_never_emits_half_an_escape() -> None:
    reply = json.dumps({"answer": TRICKY, "citations": [1]})  # ensure_ascii: 😀 is a \\ud83d\\ude00 pair
    answer, outputs = decode(list(reply))

    assert answer == TRICKY
    assert not any("\\u" in output for output in outputs)
    assert all(not 0xD800 <= ord(char) < 0xE000 for output in outputs for char in output)


def random_text(rng: random.Random) -> str:
    alphabet = 'ab "\\/\n\t\r\b\f\u0000\u001f\u00e9\u2713\U0001f600{}[],:'
    return "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 40)))


def random_split(rng: random.Random, reply: str) -> list[str]:
    cuts = sorted(rng.sample(range(len(reply) + 1), rng.randint(0, min(12, len(reply)))))
    return [reply[start:end] for start, end in zip([0, *cuts], [*cuts, len(reply)])]


def test_random_answers_and_random_splits_decode_like_json_loads() -> None:
    # A property test with a fixed seed (the suite has no hypothesis): answers drawn from an alphabet of
    # JSON's awkward characters, serialised in several styles, streamed in random pieces.
    rng = random.Random(20261121)
    for _ in range(1500):
        answer = random_text(rng)
        document = {"answer": answer, "citations": [rng.randint(1, 3)]}
        if rng.random() < 0.3:
            document = {"citations": document["citations"], "note": random_text(rng), "answer": answer}
        reply = json.dumps(document, ensure_ascii=rng.random() < 0.5, indent=rng.choice([None, 2]))
        decoded, _ = decode(random_split(rng, reply))
        assert decoded == answer == json.loads(reply)["answer"], reply


def test_answer_is_found_after_other_keys_and_not_inside_nested_values() -> None:
    reply = '{"meta": {"answer": "no", "list": ["answer", {"answer": "no"}]}, "answer": "yes", "x": "no"}'
    assert decode([reply])[0] == "yes"


def test_a_truncated_reply_yields_the_answer_so_far() -> None:
    answer, _ = decode(['{"answer": "The tower is 33', "0 m \\u00", "e9"])
    assert answer == "The tower is 330 m é"


def test_text_that_is_not_json_passes_through() -> None:
    decoder = AnswerStreamDecoder()
    outputs = [decoder.feed(piece) for piece in ["  ", "Paris", " is [1]."]]

    assert decoder.is_json is False
    assert "".join(outputs) == decoder.answer == "Paris is [1]."


def test_response_format_admits_only_existing_block_numbers() -> None:
    response_format = citation_response_format(3)
    schema = response_format["json_schema"]["schema"]

    assert response_format["type"] == "json_schema"
    assert list(schema["properties"]) == ["answer", "citations"]  # answer first, so it streams first
    citations = schema["properties"]["citations"]
    assert citations["items"]["enum"] == [1, 2, 3]
    assert citations["minItems"] == 1
