"""The metrics of ``rag eval``: RAGAS judge metrics and retrieval metrics, each giving a score or a reason.

Judge metrics (RAGAS 0.4 collections metrics, scored with ``await metric.ascore(...)``):

- ``faithfulness``: the share of the answer's claims that the retrieved contexts support;
- ``context_recall``: the share of the reference answer's statements that the contexts contain;
- ``answer_relevancy``: how closely questions the judge derives from the answer match the question
  (cosine similarity of MiniLM embeddings), 0 for a noncommittal answer;
- ``context_precision``: average precision of the contexts judged useful for the reference answer.

Retrieval metrics need ``reference_doc_ids`` and no judge: ``ndcg@k``, ``recall@k`` and ``mrr@k`` (``mrr`` is
``mrr@10``) over the ranked list of distinct documents retrieved for the question.

A score is never made up: a judge call that fails, a reply that does not parse, or a degenerate case that
RAGAS would score as 0 or NaN (no claims extracted, no question generated) gives ``value = None`` and a
``missing`` reason, which the report counts.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.core.errors import ConfigError
from rag.evaluate.retrieval_metrics import mrr_at, ndcg_at, recall_at

JUDGE_METRICS = ("faithfulness", "context_recall", "answer_relevancy", "context_precision")
DEFAULT_JUDGE_METRICS = ("faithfulness", "context_recall")
DEFAULT_CUTOFF = 10
log = logging.getLogger(__name__)
_RETRIEVAL = re.compile(r"^(ndcg|recall|mrr)(?:@(\d+))?$")
# What each judge metric needs from a sample, besides the question.
_NEEDS = {
    "faithfulness": ("answer", "contexts"),
    "context_recall": ("reference", "contexts"),
    "answer_relevancy": ("answer",),
    "context_precision": ("reference", "contexts"),
}


@dataclass(frozen=True, slots=True)
class MetricSpec:
    """A metric to compute: its report name, kind (``judge`` or ``retrieval``) and cut-off."""

    name: str
    kind: str
    cutoff: int | None = None


@dataclass(slots=True)
class Score:
    """One metric on one question: ``value`` in [0, 1], or ``None`` with the ``missing`` reason.

    ``summary`` is the judge's verdict in a line; ``details`` its itemised verdicts and reasons. ``claims``
    (faithfulness only) are the claims the judge extracted from the answer, which its verdicts are about.
    """

    value: float | None
    missing: str | None = None
    summary: str | None = None
    details: list[dict[str, Any]] = field(default_factory=list)
    claims: list[str] | None = None

    def to_dict(self) -> dict[str, Any]:
        data = {"value": self.value, "missing": self.missing, "summary": self.summary, "details": self.details}
        if self.claims is not None:
            data["claims"] = self.claims
        return data


def parse_metrics(names: Sequence[str] | None, *, has_references: bool, has_reference_docs: bool,
                  retrieval_only: bool = False) -> tuple[list[MetricSpec], list[str]]:
    """The metrics to compute, and notes about defaults left out.

    Args:
        names: metric names (comma-separated items allowed); ``None`` for the defaults: ``faithfulness`` and
            ``context_recall`` (the latter only when the test set has reference answers), plus ``ndcg@10``,
            ``recall@10`` and ``mrr@10`` when it has reference documents.
        retrieval_only: the test set is a BEIR folder: only retrieval metrics are allowed.

    Raises:
        ConfigError: an unknown metric, a bad cut-off, or a judge metric on a retrieval-only test set.
    """
    notes: list[str] = []
    if names is None or not [n for n in names if n.strip()]:
        wanted: list[str] = []
        if not retrieval_only:
            wanted.append("faithfulness")
            if has_references:
                wanted.append("context_recall")
            else:
                notes.append("context_recall left out: the test set has no reference answers")
        if has_reference_docs:
            wanted += [f"ndcg@{DEFAULT_CUTOFF}", f"recall@{DEFAULT_CUTOFF}", f"mrr@{DEFAULT_CUTOFF}"]
    else:
        wanted = [part.strip().lower() for name in names for part in name.split(",") if part.strip()]
    specs: list[MetricSpec] = []
    for name in wanted:
        match = _RETRIEVAL.match(name)
        if name in JUDGE_METRICS:
            if retrieval_only:
                raise ConfigError(f"metric {name!r} needs generated answers; a BEIR folder is for retrieval metrics only")
            spec = MetricSpec(name, "judge")
        elif match:
            cutoff = int(match.group(2) or DEFAULT_CUTOFF)
            if cutoff <= 0:
                raise ConfigError(f"metric {name!r}: the cut-off must be positive")
            spec = MetricSpec(f"{match.group(1)}@{cutoff}", "retrieval", cutoff)
        else:
            raise ConfigError(
                f"unknown metric {name!r}; choose from {', '.join(JUDGE_METRICS)}, ndcg@K, recall@K, mrr@K"
            )
        if spec not in specs:
            specs.append(spec)
    if not specs:
        raise ConfigError("no metric to compute: give --metrics, or a test set with reference_doc_ids")
    return specs, notes


def score_retrieval(spec: MetricSpec, ranked: Sequence[str], relevant: Mapping[str, int]) -> Score:
    """A retrieval metric over the ranked distinct document ids; missing without reference documents."""
    if not relevant:
        return Score(None, "no reference_doc_ids for this question")
    base = spec.name.split("@")[0]
    cutoff = spec.cutoff or DEFAULT_CUTOFF
    value = {"ndcg": ndcg_at, "recall": recall_at, "mrr": mrr_at}[base](list(ranked), relevant, cutoff)
    found = [doc for doc in ranked[:cutoff] if relevant.get(doc, 0) > 0]
    return Score(float(value), None, f"{len(found)} of {len(relevant)} reference documents in the top {cutoff}")


class JudgeMetrics:
    """The RAGAS metric objects of one scoring session, sharing one judge LLM and the MiniLM embeddings."""

    def __init__(self, llm: Any, embeddings_factory: Any, names: Sequence[str]) -> None:
        from ragas.metrics.collections import AnswerRelevancy, ContextPrecision, ContextRecall, Faithfulness

        self.metrics: dict[str, Any] = {}
        for name in names:
            if name == "faithfulness":
                self.metrics[name] = Faithfulness(llm=llm)
            elif name == "context_recall":
                self.metrics[name] = ContextRecall(llm=llm)
            elif name == "answer_relevancy":
                self.metrics[name] = AnswerRelevancy(llm=llm, embeddings=embeddings_factory())
            elif name == "context_precision":
                self.metrics[name] = ContextPrecision(llm=llm)

    async def score(self, name: str, question: str, answer: str | None, contexts: list[str],
                    reference: str | None) -> Score:
        """Score one metric on one question; never raises for a judge failure (see module docstring)."""
        from rag.evaluate.judge import JudgeCallError, recording, stop_recording

        available = {"answer": answer, "contexts": contexts, "reference": reference}
        for need in _NEEDS[name]:
            if not available[need]:
                return Score(None, {
                    "answer": "no answer to judge (generation failed or was empty)",
                    "contexts": "no retrieved contexts",
                    "reference": "no reference answer for this question",
                }[need])
        metric = self.metrics[name]
        record, token = recording()
        try:
            if name == "faithfulness":
                result = await metric.ascore(user_input=question, response=answer, retrieved_contexts=contexts)
            elif name == "context_recall":
                result = await metric.ascore(user_input=question, retrieved_contexts=contexts, reference=reference)
            elif name == "answer_relevancy":
                result = await metric.ascore(user_input=question, response=answer)
            else:
                result = await metric.ascore(user_input=question, reference=reference, retrieved_contexts=contexts)
        except JudgeCallError as exc:
            return Score(None, exc.reason, details=_calls(record), claims=_claims(name, record))
        except Exception as exc:  # noqa: BLE001 - RAGAS input checks and anything else become a reason
            return Score(None, f"RAGAS failed: {exc.__class__.__name__}: {' '.join(str(exc).split())[:200]}",
                         details=_calls(record), claims=_claims(name, record))
        finally:
            stop_recording(token)
        value = result.value
        return _explain(name, None if value is None else float(value), record)


def _calls(record: Any) -> list[dict[str, Any]]:
    return [{"call": c.response_model, "error": c.error, "cached": c.cached} for c in record.calls if c.error]


def _outputs(record: Any, model: str) -> list[dict[str, Any]]:
    return [c.output for c in record.calls if c.response_model == model and c.output is not None]


def _claims(name: str, record: Any) -> list[str] | None:
    """The claims the judge extracted from the answer (faithfulness), ``None`` for other metrics."""
    if name != "faithfulness":
        return None
    return [str(s) for out in _outputs(record, "StatementGeneratorOutput") for s in out.get("statements", [])]


def _not_binary(items: list[dict[str, Any]], key: str) -> Any:
    """The first value of ``key`` that is not 0 or 1 (a small judge writes 2 or "yes"), or ``None``."""
    for item in items:
        value = item.get(key)
        if value not in (0, 1):  # True and False compare equal to 1 and 0
            return value
    return None


def _explain(name: str, value: float | None, record: Any) -> Score:
    """The score with the judge's reasons, or a missing reason where RAGAS's number is not a real score."""
    nan = value is None or math.isnan(value)
    claims = _claims(name, record)
    if name == "faithfulness":
        statements = claims or []
        verdicts = [v for out in _outputs(record, "NLIStatementOutput") for v in out.get("statements", [])]
        if not statements:
            return Score(None, "the judge extracted no claims from the answer", claims=claims)
        if not verdicts:
            return Score(None, "the judge returned no verdicts for the claims", claims=claims)
        bad = _not_binary(verdicts, "verdict")
        if bad is not None:
            return Score(None, f"the judge returned a verdict of {bad!r}, not 0 or 1; no score", claims=claims)
        supported = sum(1 for v in verdicts if v.get("verdict"))
        details = [{"item": v.get("statement"), "verdict": int(bool(v.get("verdict"))), "reason": v.get("reason")}
                   for v in verdicts]
        summary = f"{supported} of {len(verdicts)} claims supported by the contexts"
    elif name == "context_recall":
        items = [c for out in _outputs(record, "ContextRecallOutput") for c in out.get("classifications", [])]
        if not items:
            return Score(None, "the judge returned no reference statements to check")
        bad = _not_binary(items, "attributed")
        if bad is not None:
            # RAGAS averages the values as given, so "attributed: 2" would score above 1.
            return Score(None, f"the judge returned attributed={bad!r}, not 0 or 1; no score")
        found = sum(1 for c in items if c.get("attributed"))
        details = [{"item": c.get("statement"), "verdict": int(bool(c.get("attributed"))), "reason": c.get("reason")}
                   for c in items]
        summary = f"{found} of {len(items)} reference statements found in the contexts"
    elif name == "answer_relevancy":
        outs = _outputs(record, "AnswerRelevanceOutput")
        questions = [o for o in outs if (o.get("question") or "").strip()]
        if not questions:
            # RAGAS scores this case 0.0; it is a judge failure, not an irrelevant answer.
            return Score(None, "the judge generated no question from the answer")
        details = [{"item": o.get("question"), "verdict": int(not o.get("noncommittal")),
                    "reason": "noncommittal" if o.get("noncommittal") else "committal"} for o in questions]
        noncommittal = all(o.get("noncommittal") for o in questions)
        summary = ("answer judged noncommittal (scored 0); " if noncommittal else "") + "questions derived: " + \
            " | ".join(str(o.get("question")) for o in questions)
    else:  # context_precision
        outs = _outputs(record, "ContextPrecisionOutput")
        if not outs:
            return Score(None, "the judge returned no verdicts for the contexts")
        useful = [i for i, o in enumerate(outs, start=1) if o.get("verdict")]
        details = [{"item": f"context {i}", "verdict": int(bool(o.get("verdict"))), "reason": o.get("reason")}
                   for i, o in enumerate(outs, start=1)]
        summary = f"useful contexts: {', '.join(map(str, useful)) or 'none'} of {len(outs)}"
    if nan:
        return Score(None, "RAGAS returned no score (NaN)", summary, details, claims)
    if not -1e-9 <= value <= 1 + 1e-9:  # verdicts are checked above; this keeps every score in [0, 1]
        log.warning("%s: RAGAS returned %r, outside [0, 1]; no score", name, value)
        return Score(None, f"RAGAS returned {value:.4g}, outside [0, 1]; no score", summary, details, claims)
    return Score(float(value), None, summary, details, claims)
