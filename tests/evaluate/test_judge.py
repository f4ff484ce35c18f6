"""Judge plumbing against a scripted judge whose verdicts are known: exact scores, reasons, missing scores
with their reasons (never 0, never dropped), the disk cache, timeouts, retries and the schema sent."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from scripted_judge import ScriptedJudge

from rag.evaluate.judge import (
    CUTOFF_REASON,
    Judge,
    JudgeConfig,
    JudgeUnavailable,
    bounded_schema,
    default_judge_threads,
)
from rag.evaluate.metrics import JudgeMetrics, Score

QUESTION = "How big is a chunk?"
ANSWER = "A chunk has 200 tokens [1]. Windows overlap by 40 tokens [1]. It runs on Mars."
CONTEXTS = ["A chunk is a window of 200 tokens.", "Consecutive windows share 40 tokens."]
REFERENCE = "200 tokens, with 40 tokens of overlap."


def config(judge: ScriptedJudge, tmp_path: Path, **extra: Any) -> JudgeConfig:
    return JudgeConfig(base_url=judge.base_url, model=judge.model, cache_path=tmp_path / "cache.sqlite", **extra)


def score(cfg: JudgeConfig, name: str, *, answer: str | None = ANSWER, reference: str | None = REFERENCE,
          contexts: list[str] | None = None) -> tuple[Score, Judge]:
    with Judge(cfg) as judge:
        async def go() -> Score:
            metrics = JudgeMetrics(judge.llm(), lambda: judge.embeddings, [name])
            return await metrics.score(name, QUESTION, answer, CONTEXTS if contexts is None else contexts, reference)

        return asyncio.run(go()), judge


def claims(statements: list[str], verdicts: list[int]) -> dict[str, Any]:
    return {
        "StatementGeneratorOutput": lambda body: {"statements": statements},
        "NLIStatementOutput": lambda body: {"statements": [
            {"statement": s, "reason": f"reason for {s}", "verdict": v} for s, v in zip(statements, verdicts)]},
    }


def test_faithfulness_is_supported_claims_over_all_claims(judge: ScriptedJudge, tmp_path: Path) -> None:
    statements = ["a chunk has 200 tokens", "windows overlap by 40 tokens", "it runs on Mars",
                  "chunks are cited", "the overlap is 40 tokens", "the size is a setting", "it is fast"]
    verdicts = [1, 1, 0, 1, 0, 1, 1]
    judge.replies.update(claims(statements, verdicts))
    result, used = score(config(judge, tmp_path), "faithfulness")
    assert result.value == 5 / 7  # exactly: 5 supported of 7
    assert result.missing is None
    assert result.summary == "5 of 7 claims supported by the contexts"
    assert [d["verdict"] for d in result.details] == verdicts
    assert result.details[2] == {"item": "it runs on Mars", "verdict": 0, "reason": "reason for it runs on Mars"}
    # The claims the verdicts are about travel with the score, for the report to show next to them.
    assert result.claims == statements and result.to_dict()["claims"] == statements
    assert judge.kinds() == ["StatementGeneratorOutput", "NLIStatementOutput"]
    # The NLI prompt carries the claims the judge extracted and the joined contexts.
    nli_prompt = judge.requests[1][1]["messages"][-1]["content"]
    assert all(s in nli_prompt for s in statements) and all(c in nli_prompt for c in CONTEXTS)
    assert used.stats.to_dict()["sent"] == 2


@pytest.mark.parametrize(("verdicts", "expected"), [([1, 1, 1], 1.0), ([0, 0, 0], 0.0), ([0, 1, 0], 1 / 3)])
def test_faithfulness_extremes(judge: ScriptedJudge, tmp_path: Path, verdicts: list[int], expected: float) -> None:
    judge.replies.update(claims(["x", "y", "z"], verdicts))
    result, _ = score(config(judge, tmp_path), "faithfulness")
    assert result.value == expected and result.missing is None  # a real 0 stays a 0


def test_context_recall_and_precision_follow_the_verdicts(judge: ScriptedJudge, tmp_path: Path) -> None:
    judge.replies["ContextRecallOutput"] = lambda body: {"classifications": [
        {"statement": s, "reason": "r", "attributed": a} for s, a in (("200 tokens", 1), ("40 overlap", 1), ("Mars", 0))]}
    result, _ = score(config(judge, tmp_path), "context_recall")
    assert result.value == 2 / 3
    assert result.summary == "2 of 3 reference statements found in the contexts"
    verdicts = iter([0, 1])
    judge.replies["ContextPrecisionOutput"] = lambda body: {"reason": "because", "verdict": next(verdicts)}
    result, _ = score(config(judge, tmp_path / "p"), "context_precision")
    assert result.value == pytest.approx(0.5)  # average precision of [0, 1]: (1/2) / 1
    assert result.summary == "useful contexts: 2 of 2"


def test_degenerate_ragas_results_are_missing_not_zero(judge: ScriptedJudge, tmp_path: Path) -> None:
    judge.replies["StatementGeneratorOutput"] = lambda body: {"statements": []}
    result, _ = score(config(judge, tmp_path), "faithfulness")
    assert result.value is None and result.missing == "the judge extracted no claims from the answer"
    # RAGAS scores answer relevancy 0.0 when no question could be generated; that is a judge failure.
    judge.replies["AnswerRelevanceOutput"] = lambda body: {"question": "", "noncommittal": 0}
    result, _ = score(config(judge, tmp_path / "a"), "answer_relevancy")
    assert result.value is None and result.missing == "the judge generated no question from the answer"
    judge.replies["ContextRecallOutput"] = lambda body: {"classifications": []}
    result, _ = score(config(judge, tmp_path / "c"), "context_recall")
    assert result.value is None and "no reference statements" in result.missing


def test_missing_inputs_are_reasons_without_judge_calls(judge: ScriptedJudge, tmp_path: Path) -> None:
    cfg = config(judge, tmp_path)
    assert score(cfg, "faithfulness", answer=None)[0].missing.startswith("no answer to judge")
    assert score(cfg, "context_recall", reference=None)[0].missing == "no reference answer for this question"
    assert score(cfg, "faithfulness", contexts=[])[0].missing == "no retrieved contexts"
    assert judge.requests == []


def test_unparseable_output_is_missing_and_cached(judge: ScriptedJudge, tmp_path: Path) -> None:
    judge.faults["StatementGeneratorOutput"] = "garbage"
    cfg = config(judge, tmp_path, json_schema=False)
    result, used = score(cfg, "faithfulness")
    assert result.value is None and result.missing.startswith("judge output did not parse")
    sent = len(judge.requests)
    assert sent == 2  # one re-ask with the validation error, as instructor does
    assert used.stats.failed == 1
    # A re-run does not pay for a deterministic failure again: it comes from the cache, with its reason.
    again, used = score(cfg, "faithfulness")
    assert again.missing == result.missing and len(judge.requests) == sent
    assert used.stats.cached == 1 and used.stats.sent == 0


def test_http_errors_are_retried_then_missing_and_not_cached(judge: ScriptedJudge, tmp_path: Path) -> None:
    judge.faults["ContextRecallOutput"] = "http500"
    cfg = config(judge, tmp_path, max_retries=2)
    result, _ = score(cfg, "context_recall")
    assert result.value is None and result.missing == "judge endpoint answered HTTP 500"
    assert judge.kinds() == ["ContextRecallOutput"] * 3  # the first try and two retries
    del judge.faults["ContextRecallOutput"]
    again, _ = score(cfg, "context_recall")  # a transient failure is asked again next time
    assert again.value is not None and len(judge.requests) == 4


def test_a_stalled_judge_times_out_into_a_missing_score(judge: ScriptedJudge, tmp_path: Path) -> None:
    judge.faults["StatementGeneratorOutput"] = "stall"
    judge.stall_seconds = 5
    result, used = score(config(judge, tmp_path, timeout=0.5, max_retries=0), "faithfulness")
    assert result.value is None and result.missing == "judge timed out (after 0.5 s per request)"
    assert used.stats.failed == 1


def test_cache_answers_a_rerun_without_calls(judge: ScriptedJudge, tmp_path: Path) -> None:
    cfg = config(judge, tmp_path)
    first, used = score(cfg, "answer_relevancy")
    assert used.stats.sent == 3  # RAGAS asks the same prompt `strictness` (3) times
    calls = len(judge.requests)
    second, used = score(cfg, "answer_relevancy")
    assert len(judge.requests) == calls and used.stats.cached == 3 and used.stats.sent == 0
    assert second.value == first.value and second.details == first.details
    # Each of the three identical prompts is its own cache entry, so a cached run reproduces an uncached one.
    with Judge(cfg) as reopened:
        assert len(reopened.cache) == 3
    # Another judge model does not share the entries.
    other = JudgeConfig(base_url=judge.base_url, model="another-judge", cache_path=cfg.cache_path)
    score(other, "answer_relevancy")
    assert len(judge.requests) == calls + 3


def test_schema_constrained_requests(judge: ScriptedJudge, tmp_path: Path) -> None:
    score(config(judge, tmp_path, json_schema=True, max_tokens=777), "context_recall")
    body = judge.requests[0][1]
    schema = body["response_format"]["schema"]
    assert body["response_format"]["type"] == "json_object"
    assert schema["title"] == "ContextRecallOutput" and schema["additionalProperties"] is False
    assert schema["properties"]["classifications"]["maxItems"] == 32  # bounds of a strong endpoint judge
    assert body["max_tokens"] == 777 and body["model"] == judge.model
    plain = bounded_schema({"type": "object", "properties": {"a": {"type": "string", "enum": ["x"]}}})
    assert "maxLength" not in plain["properties"]["a"]
    # A verdict can only be 0 or 1: the grammar cannot produce "attributed: 2".
    attributed = re.findall(r'"attributed": (\{[^{}]*\})', json.dumps(schema))
    assert attributed and all(json.loads(a)["enum"] == [0, 1] for a in attributed)
    # An endpoint judge gets none of the llama.cpp-only fields the embedded judge sends.
    assert "cache_prompt" not in body and "seed" not in body
    # Without json_schema the request is RAGAS's own JSON mode (no schema for the endpoint to enforce).
    score(config(judge, tmp_path / "plain", json_schema=False), "context_recall")
    assert "schema" not in judge.requests[-1][1].get("response_format", {})
    # The default judge output budget is raised above RAGAS's 1024.
    score(config(judge, tmp_path / "default"), "context_recall")
    assert judge.requests[-1][1]["max_tokens"] == 4096


def test_unreachable_judge_fails_fast(tmp_path: Path) -> None:
    cfg = JudgeConfig(base_url="http://127.0.0.1:9/v1", model="m", cache_path=tmp_path / "c.sqlite", timeout=2)
    with Judge(cfg) as judge, pytest.raises(JudgeUnavailable, match="cannot reach the judge endpoint"):
        judge.check_reachable()
    assert JudgeUnavailable("x").exit_code == 3


def test_judge_config_is_validated() -> None:
    from rag.core.errors import ConfigError

    with pytest.raises(ConfigError, match="needs --judge-model"):
        JudgeConfig(base_url="http://x/v1")
    with pytest.raises(ConfigError, match="needs --judge-base-url"):
        JudgeConfig(model="gpt")
    with pytest.raises(ConfigError, match="timeout must be positive"):
        JudgeConfig(timeout=0)
    embedded = JudgeConfig()
    assert (embedded.embedded, embedded.effective_concurrency, embedded.effective_json_schema) == (True, 1, True)
    # One slot on a CPU: a long timeout, no retries, tight schema bounds, a small output budget.
    assert (embedded.effective_timeout, embedded.effective_retries, embedded.schema_bounds) == (600.0, 0, (8, 200))
    assert embedded.effective_max_tokens == 768
    assert json.dumps(JudgeConfig(base_url="http://x/v1", model="m").effective_max_tokens) == "4096"


def test_verdicts_outside_zero_and_one_are_missing_not_scores(judge: ScriptedJudge, tmp_path: Path) -> None:
    """A small judge writes `attributed: 2`; RAGAS would average it into a recall of 1.5."""
    judge.replies["ContextRecallOutput"] = lambda body: {"classifications": [
        {"statement": "a", "reason": "r", "attributed": 2}, {"statement": "b", "reason": "r", "attributed": 1}]}
    result, _ = score(config(judge, tmp_path), "context_recall")
    assert result.value is None and result.missing == "the judge returned attributed=2, not 0 or 1; no score"
    judge.replies.update(claims(["x", "y"], [1, 3]))
    result, _ = score(config(judge, tmp_path / "f"), "faithfulness")
    assert result.value is None and result.missing == "the judge returned a verdict of 3, not 0 or 1; no score"


def test_a_reply_cut_at_max_tokens_is_asked_again_under_a_larger_budget(judge: ScriptedJudge, tmp_path: Path) -> None:
    judge.faults["ContextRecallOutput"] = "length"
    first, _ = score(config(judge, tmp_path, max_tokens=50), "context_recall")
    assert first.value is None and first.missing == CUTOFF_REASON
    again, used = score(config(judge, tmp_path, max_tokens=50), "context_recall")  # same budget: from the cache
    assert again.missing == CUTOFF_REASON and len(judge.requests) == 1 and used.stats.cached == 1
    del judge.faults["ContextRecallOutput"]
    raised, used = score(config(judge, tmp_path, max_tokens=100), "context_recall")  # as the reason advises
    assert raised.value is not None and len(judge.requests) == 2 and used.stats.sent == 1
    # An entry written before the budget was recorded is asked again too.
    judge.faults["ContextRecallOutput"] = "length"
    score(config(judge, tmp_path / "old", max_tokens=50), "context_recall")
    with sqlite3.connect(tmp_path / "old" / "cache.sqlite") as db:
        db.execute("UPDATE judge_calls SET status = 'error', payload = ?", (CUTOFF_REASON,))
    del judge.faults["ContextRecallOutput"]
    legacy, _ = score(config(judge, tmp_path / "old", max_tokens=50), "context_recall")
    assert legacy.value is not None and len(judge.requests) == 4


def test_instructor_error_lines_stay_off_the_console(judge: ScriptedJudge, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """A failed call is a missing score with its reason; instructor's own ERROR line is not printed too."""
    judge.faults["ContextRecallOutput"] = "http500"
    quiet = logging.getLogger("instructor")
    try:
        quiet.setLevel(logging.ERROR)  # a level set on purpose is left alone: the line is logged
        result, _ = score(config(judge, tmp_path, max_retries=0), "context_recall")
        assert result.missing == "judge endpoint answered HTTP 500"
        assert any(r.name.startswith("instructor") and r.levelno == logging.ERROR for r in caplog.records)
        caplog.clear()
        quiet.setLevel(logging.NOTSET)  # as in a fresh `rag eval` process
        result, _ = score(config(judge, tmp_path / "q", max_retries=0), "context_recall")
        assert result.missing == "judge endpoint answered HTTP 500"
        assert [r for r in caplog.records if r.name.startswith("instructor")] == []
    finally:
        quiet.setLevel(logging.NOTSET)


def test_default_judge_threads_leave_half_the_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    for cpus, threads in ((1, 1), (2, 1), (3, 1), (8, 4), (64, 8)):
        monkeypatch.setattr("os.sched_getaffinity", lambda _pid, n=cpus: set(range(n)))
        assert default_judge_threads() == threads
        assert JudgeConfig().effective_threads == threads and JudgeConfig(threads=2).effective_threads == 2


@pytest.mark.slow
def test_embedded_judge_replies_do_not_depend_on_the_request_before(tmp_path: Path) -> None:
    """The real bundled llama.cpp, asked prompt A, then B, then A again, gives A the same reply both times (the
    judge turns off llama.cpp's prompt cache and fixes the seed). Short RAGAS-style prompts with a shared
    prefix, and a few tokens, keep it to seconds on a busy CPU."""
    import httpx
    from ragas.metrics.collections.context_recall.util import ContextRecallOutput

    instruction = ("Given a context and an answer, analyze each sentence in the answer and classify if the sentence "
                   "can be attributed to the given context or not. Use only 'Yes' (1) or 'No' (0) as a binary "
                   "classification. Output json with reason.\n\n")
    texts = [instruction + "context: A chunk is a window of 200 tokens. Consecutive windows share 40 tokens.\n"
             "answer: 200 tokens, with 40 tokens of overlap.",
             instruction + "context: rag ingest re-reads only the files whose content changed.\n"
             "answer: Only the changed file is embedded again."]
    with Judge(JudgeConfig(cache_path=tmp_path / "c.sqlite", max_tokens=32, threads=1)) as judge:
        options = judge.llm().request_options(ContextRecallOutput)
        assert options["extra_body"]["cache_prompt"] is False and "seed" in options["extra_body"]

        def ask(text: str) -> str:
            body = {"model": judge.model, "messages": [{"role": "user", "content": text}],
                    **{k: v for k, v in options.items() if k != "extra_body"}, **options["extra_body"]}
            reply = httpx.post(f"{judge.base_url}/chat/completions", json=body, timeout=300).json()
            return reply["choices"][0]["message"]["content"]

        first = ask(texts[0])
        other = ask(texts[1])
        again = ask(texts[0])
    assert again == first and other != first
    assert all(v in ("0", "1") for v in re.findall(r'"attributed":\s*(\d+)', first + other))
