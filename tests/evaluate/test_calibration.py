"""Answerability calibration in the run report, computed from fixed probabilities and labels (no engine, no
judge): the measures against hand-computed and scipy values, the labels from context recall or qrels, the
declined share, small-n honesty, and the section in the Markdown and HTML reports."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from scipy.stats import mannwhitneyu
from test_report import METRICS, results, sample

from rag.evaluate.calibration import (
    MIN_N,
    auroc,
    auroc_ci,
    brier_score,
    calibration_notes,
    calibration_summary,
    reliability,
)
from rag.evaluate.report import run_html, run_markdown


def test_measures_on_fixed_inputs() -> None:
    p = [0.05, 0.3, 0.3, 0.35, 0.8, 0.95, 1.0]
    y = [0, 0, 1, 0, 1, 1, 1]
    # Bins: a value on a bin's low edge belongs to it (0.3 is in [0.3, 0.4)); 1.0 falls in the last bin.
    assert reliability(p, y) == [
        {"low": 0.0, "high": 0.1, "count": 1, "mean_predicted": 0.05, "observed_rate": 0.0},
        {"low": 0.3, "high": 0.4, "count": 3, "mean_predicted": pytest.approx(0.95 / 3), "observed_rate": pytest.approx(1 / 3)},
        {"low": 0.8, "high": 0.9, "count": 1, "mean_predicted": 0.8, "observed_rate": 1.0},
        {"low": 0.9, "high": 1.0, "count": 2, "mean_predicted": 0.975, "observed_rate": 1.0},
    ]
    assert brier_score(p, y) == pytest.approx((0.05**2 + 0.3**2 + 0.7**2 + 0.35**2 + 0.2**2 + 0.05**2 + 0) / 7)
    # Pairs (positive, negative) with the positive higher, ties counted half: 0.3 vs 0.3 is the one tie.
    pairs = [(a, b) for a, ya in zip(p, y) for b, yb in zip(p, y) if ya == 1 and yb == 0]
    expected = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a, b in pairs) / len(pairs)
    assert auroc(p, y) == pytest.approx(expected) == pytest.approx(10.5 / 12)
    assert auroc([0.2, 0.9], [1, 1]) is None and auroc_ci([0.2, 0.9], [0, 0]) is None
    with pytest.raises(ValueError, match=r"in \[0, 1\]"):
        brier_score([1.5], [1])
    with pytest.raises(ValueError, match="equally long"):
        auroc([0.5, 0.6], [1])


def test_auroc_and_its_interval_on_many_tied_values() -> None:
    rng = np.random.default_rng(3)
    p = rng.random(400).round(2)  # rounded: many ties
    y = (rng.random(400) < p).astype(int)
    u = mannwhitneyu(p[y == 1], p[y == 0]).statistic
    assert auroc(p, y) == pytest.approx(u / ((y == 1).sum() * (y == 0).sum()))
    low, high = auroc_ci(p, y)
    assert low < auroc(p, y) < high and high - low < 0.2
    assert auroc_ci(p, y) == (low, high)  # seeded: the same interval again
    # A perfect separation has a degenerate interval at 1.
    assert auroc_ci([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1], trials=500) == (1.0, 1.0)


def judged(qid: str, probability: float | None, recall: float | None, docs: dict[str, int] | None = None,
           retrieved: str = "docs/chunking.md") -> dict[str, Any]:
    """A report sample with an answerable probability and a context recall score (``None``: the judge failed)."""
    recall_score = ({"value": recall, "missing": None, "summary": "s", "details": []} if recall is not None
                    else {"value": None, "missing": "judge timed out", "summary": None, "details": []})
    s = sample(qid, {"context_recall": recall_score})
    s["answerable"] = probability
    s["reference_doc_ids"] = docs or {}
    s["contexts"][0]["doc_id"] = retrieved
    return s


def test_label_is_context_recall_at_least_one_half() -> None:
    samples = [judged("a", 0.9, 1.0), judged("b", 0.6, 0.5), judged("c", 0.2, 0.0), judged("d", 0.25, 0.49),
               judged("e", 0.1, None), judged("f", None, 1.0)]
    section = calibration_summary(samples, metrics=METRICS, threshold=0.3, k=5)
    assert section["label"]["source"] == "context_recall" and ">= 0.5" in section["label"]["rule"]
    assert "k" not in section["label"]  # the qrels label's k only
    # a, b labelled 1 (0.5 counts); c, d labelled 0; e has no label (judge failed); f has no probability.
    assert (section["n"], section["answerable"], section["unanswerable"]) == (4, 2, 2)
    assert (section["probabilities"], section["no_probability"], section["unlabelled"]) == (5, 1, 1)
    assert section["auroc"] == 1.0 and section["brier"] == pytest.approx((0.01 + 0.16 + 0.04 + 0.0625) / 4)
    assert sum(b["count"] for b in section["bins"]) == 4
    # Below 0.3: c, d and the unlabelled e; two of them labelled, both unanswerable.
    assert section["declined"] == {"count": 3, "share": 0.6, "answerable": 0, "unanswerable": 2}
    assert section["small_n"] and MIN_N == 20
    notes = calibration_notes(section)
    assert any("only 4 labelled questions (fewer than 20)" in note for note in notes)
    assert any("context recall >= 0.5" in note for note in notes)


def test_qrels_label_without_a_judge() -> None:
    """Retrieval-only: answerable when a relevant document is among the retrieved contexts."""
    metrics = ["ndcg@10", "mrr@10"]
    samples = [judged("a", 0.8, None, {"docs/chunking.md": 1}), judged("b", 0.4, None, {"docs/other.md": 1}),
               judged("c", 0.7, None, {"docs/chunking.md": 0, "docs/x.md": 2}), judged("d", 0.5, None, {})]
    section = calibration_summary(samples, metrics=metrics, threshold=0.3, k=5)
    assert section["label"]["source"] == "qrels" and section["label"]["k"] == 5
    assert (section["n"], section["answerable"], section["unanswerable"], section["unlabelled"]) == (3, 1, 2, 1)
    assert section["auroc"] == 1.0 and section["declined"]["count"] == 0
    # No judge and no relevant documents: the probabilities and the declined share, and why there is no label.
    bare = calibration_summary([judged("a", 0.1, None), judged("b", 0.9, None)], metrics=metrics, threshold=0.3)
    assert bare["label"] is None and "no label" in bare["reason"] and bare["declined"]["share"] == 0.5
    assert calibration_summary([judged("a", None, 1.0)], metrics=METRICS, threshold=0.3) is None


def test_reports_show_the_calibration_section() -> None:
    probabilities = [i / 24 for i in range(24)]
    samples = [judged(f"q{i}", p, 1.0 if p > 0.4 or i % 5 == 0 else 0.0) for i, p in enumerate(probabilities)]
    res = {**results(samples), "calibration": calibration_summary(samples, metrics=METRICS, threshold=0.3, k=5)}
    section = res["calibration"]
    assert section["n"] == 24 and not section["small_n"] and 0.5 < section["auroc"] < 1.0
    markdown, html = run_markdown(res, samples), run_html(res, samples)
    assert "## Answerability calibration" in markdown
    assert "| predicted probability | questions | mean predicted | observed rate |" in markdown
    low, high = section["auroc_ci"]
    assert f"AUROC: {section['auroc']:.3f} [{low:.3f}, {high:.3f}] (95% stratified bootstrap)" in markdown
    assert f"Brier score: {section['brier']:.3f}" in markdown
    declined = section["declined"]
    assert f"{declined['count']} of 24 questions ({declined['share']:.0%}) are below retrieval.answerable_threshold 0.3" in markdown
    assert "too few" not in markdown and "context recall >= 0.5" in markdown
    assert "| id | question | " + " | ".join(METRICS) + " | answerable |" in markdown
    assert 'id="calibration"' in html and 'id="reliability"' in html
    plot = html[html.index('id="plot-calibration"'):]
    assert plot.index("<svg") < plot.index("</svg>") and "threshold 0.3" in plot
    assert html.count('<tr class="detail"') == 24 and 'colspan="12"' in html  # the answerable column added
    rows = html[html.index('id="reliability"'):]
    rows = rows[:rows.index("</table>")]
    assert rows.count("<tr>") - 1 == len(section["bins"])
    # A report of an earlier run (no probabilities recorded) has neither the section nor the column.
    old = [sample("q1", {})]
    assert "calibration" not in run_markdown(results(old), old).lower() and 'colspan="11"' in run_html(results(old), old)


def test_small_runs_say_so() -> None:
    samples = [judged("a", 0.9, 1.0), judged("b", 0.2, 0.0), judged("c", 0.6, 1.0)]
    res = {**results(samples), "calibration": calibration_summary(samples, metrics=METRICS, threshold=0.3)}
    markdown, html = run_markdown(res, samples), run_html(res, samples)
    assert "only 3 labelled questions (fewer than 20)" in markdown and "(too few to judge by)" in markdown
    assert "only 3 labelled questions (fewer than 20)" in html
    assert [(b["count"], b["observed_rate"]) for b in res["calibration"]["bins"]] == [(1, 0.0), (1, 1.0), (1, 1.0)]
