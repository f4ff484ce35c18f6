"""Answerability calibration in a run report: does the engine's ``answerable`` probability match how often
retrieval actually found the answer?

Every question's record holds the probability the engine computed from the retrieval its answer used
(``sample["answerable"]``; see :mod:`rag.retrieve.answerable`). An evaluation test set has no
"unanswerable" questions, so the label is what the run itself measured about that same retrieval:

- ``context_recall`` (when the judge scored it): answerable when context recall >= 0.5, i.e. the retrieved
  contexts hold at least half of the reference answer's statements;
- ``qrels`` (no context recall, but the test set names relevant documents): answerable when any relevant
  document is among the hits the question retrieved (its top k contexts).

From the labelled questions it computes a reliability table (equal-width probability bins: count, mean
predicted probability, observed share answerable), the Brier score, the AUROC with a stratified percentile
bootstrap interval, and the share of questions that ``retrieval.answerable_threshold`` declines (``ask``
answers "not covered" below it). Fewer than :data:`MIN_N` labelled questions are flagged as too few: a
reliability table of a handful of questions is mostly noise.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rag.evaluate.significance import bootstrap_blocks, check_bootstrap, percentile_interval

RECALL_LABEL = 0.5
"""Context recall at or above this labels a question answerable."""

MIN_N = 20
"""Fewer labelled questions than this are reported as too few to judge calibration by."""

BINS = 10
"""Equal-width probability bins of the reliability table."""


# -- the measures -------------------------------------------------------------------------------------


def _check(probabilities: Sequence[float], labels: Sequence[int]) -> tuple[np.ndarray, np.ndarray]:
    p = np.asarray(probabilities, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if p.ndim != 1 or y.ndim != 1 or len(p) != len(y):
        raise ValueError(f"probabilities and labels must be equally long sequences, got {len(p)} and {len(y)}")
    if not len(p):
        raise ValueError("no labelled probabilities")
    if not np.isfinite(p).all() or (p < 0).any() or (p > 1).any():
        raise ValueError("probabilities must be finite numbers in [0, 1]")
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return p, y


def reliability(probabilities: Sequence[float], labels: Sequence[int], bins: int = BINS) -> list[dict[str, Any]]:
    """The non-empty bins of ``bins`` equal-width ones over [0, 1] (the last one closed): each bin's ``low``,
    ``high``, ``count``, ``mean_predicted`` probability and ``observed_rate`` of label 1."""
    if bins <= 0:
        raise ValueError(f"bins must be positive, got {bins}")
    p, y = _check(probabilities, labels)
    edges = np.arange(bins + 1) / bins  # the bin of p is the one whose low edge i / bins is <= p
    index = np.minimum(np.searchsorted(edges, p, side="right") - 1, bins - 1)
    table = []
    for b in range(bins):
        inside = index == b
        if inside.any():
            table.append({"low": b / bins, "high": (b + 1) / bins, "count": int(inside.sum()),
                          "mean_predicted": float(p[inside].mean()), "observed_rate": float(y[inside].mean())})
    return table


def brier_score(probabilities: Sequence[float], labels: Sequence[int]) -> float:
    """Mean squared difference between probability and label: 0 is perfect, 0.25 is a constant 0.5."""
    p, y = _check(probabilities, labels)
    return float(np.mean((p - y) ** 2))


def _auroc_of_counts(positives: np.ndarray, negatives: np.ndarray) -> np.ndarray:
    """AUROC from per-value counts (last axis: the distinct probabilities, ascending): for each positive, the
    negatives below it plus half those tied with it, over all pairs."""
    below = np.cumsum(negatives, axis=-1) - negatives
    wins = (positives * (below + 0.5 * negatives)).sum(axis=-1)
    return wins / (positives.sum(axis=-1) * negatives.sum(axis=-1))


def auroc(probabilities: Sequence[float], labels: Sequence[int]) -> float | None:
    """The probability that a random label-1 question scores above a random label-0 one (ties count half);
    ``None`` when either label is absent."""
    p, y = _check(probabilities, labels)
    if y.all() or not y.any():
        return None
    values, index = np.unique(p, return_inverse=True)
    positives = np.bincount(index[y == 1], minlength=len(values))
    negatives = np.bincount(index[y == 0], minlength=len(values))
    return float(_auroc_of_counts(positives, negatives))


def auroc_ci(probabilities: Sequence[float], labels: Sequence[int], *, confidence: float = 0.95,
             trials: int = 10000, seed: int = 0) -> tuple[float, float] | None:
    """Percentile bootstrap interval of :func:`auroc`, resampling the label-1 and the label-0 questions
    separately (stratified, so every resample has both labels); ``None`` when either label is absent.

    Raises:
        ValueError: bad inputs, ``confidence`` not in (0, 1) or ``trials`` not positive.
    """
    p, y = _check(probabilities, labels)
    check_bootstrap(confidence, trials)
    if y.all() or not y.any():
        return None
    values, index = np.unique(p, return_inverse=True)
    m = len(values)
    pos, neg = index[y == 1], index[y == 0]
    rng = np.random.default_rng(seed)
    stats = np.empty(trials)
    for start, size in bootstrap_blocks(trials):
        stats[start : start + size] = _auroc_of_counts(_resampled_counts(pos, size, m, rng),
                                                       _resampled_counts(neg, size, m, rng))
    return percentile_interval(stats, confidence)


def _resampled_counts(group: np.ndarray, size: int, m: int, rng: np.random.Generator) -> np.ndarray:
    """``size`` resamples (with replacement) of ``group``'s value indices, each counted over the ``m`` values."""
    drawn = group[rng.integers(0, len(group), size=(size, len(group)))]
    rows = np.arange(size)[:, None] * m  # each resample counts into its own row of ``m`` values
    return np.bincount((rows + drawn).ravel(), minlength=size * m).reshape(size, m)


# -- the report section -------------------------------------------------------------------------------


def _labels(samples: Sequence[Mapping[str, Any]], metrics: Sequence[str]) -> tuple[dict[str, Any] | None, list[int | None]]:
    """The label source and each sample's label (``None``: unlabelled), or ``(None, [])`` with no source."""
    if "context_recall" in metrics:
        labels = []
        for sample in samples:
            value = ((sample.get("scores") or {}).get("context_recall") or {}).get("value")
            labels.append(None if value is None else int(value >= RECALL_LABEL))
        source = {"source": "context_recall", "rule": f"answerable when the judge's context recall >= {RECALL_LABEL:g}"}
        return source, labels
    if any(sample.get("reference_doc_ids") for sample in samples):
        labels = []
        for sample in samples:
            relevant = {str(doc) for doc, grade in (sample.get("reference_doc_ids") or {}).items() if grade > 0}
            if not relevant:
                labels.append(None)
                continue
            retrieved = {ctx.get("doc_id") for ctx in sample.get("contexts") or []}
            labels.append(int(bool(retrieved & relevant)))
        source = {"source": "qrels", "rule": "answerable when a relevant document of the test set is among the "
                  "top k hits retrieved for the question"}
        return source, labels
    return None, []


def labelled_probabilities(samples: Sequence[Mapping[str, Any]],
                           metrics: Sequence[str]) -> tuple[list[float], list[int]]:
    """The probabilities and labels of the questions that have both (see the module docstring), in order."""
    _, labels = _labels(samples, metrics)
    pairs = [(float(s["answerable"]), label) for s, label in zip(samples, labels)
             if s.get("answerable") is not None and label is not None]
    return [p for p, _ in pairs], [y for _, y in pairs]


def calibration_summary(samples: Sequence[Mapping[str, Any]], *, metrics: Sequence[str], threshold: float,
                        k: int | None = None, confidence: float = 0.95) -> dict[str, Any] | None:
    """The ``calibration`` section of ``results.json``, or ``None`` when no question has a probability.

    Args:
        samples: the run's records, scored (``answerable``, ``scores``, ``contexts``, ``reference_doc_ids``).
        metrics: the run's metric names (context recall, when among them, is the label).
        threshold: ``retrieval.answerable_threshold``: questions below it are declined.
        k: the hits each question retrieved, stated with the qrels label.
        confidence: coverage of the AUROC interval.

    Returns:
        ``probabilities`` (questions with one), ``no_probability``, ``threshold`` and ``declined`` always; with
        a label source also ``label``, ``n`` (labelled), ``answerable``/``unanswerable`` counts, ``small_n``,
        ``bins``, ``brier``, ``auroc`` and ``auroc_ci``; without one, ``reason``.
    """
    scored = [(i, float(s["answerable"])) for i, s in enumerate(samples) if s.get("answerable") is not None]
    if not scored:
        return None
    below = [i for i, p in scored if p < threshold]
    section: dict[str, Any] = {
        "probabilities": len(scored), "no_probability": len(samples) - len(scored),
        "mean_probability": float(np.mean([p for _, p in scored])), "threshold": threshold,
        "declined": {"count": len(below), "share": len(below) / len(scored)}, "min_n": MIN_N,
        "confidence": confidence,
    }
    source, labels = _labels(samples, metrics)
    if source is None:
        section.update(label=None, reason="no label: the run has no context recall scores and the test set names "
                       "no relevant documents")
        return section
    if source["source"] == "qrels" and k is not None:
        source = {**source, "k": k}
    p, y = labelled_probabilities(samples, metrics)
    section.update(label=source, n=len(p), unlabelled=len(scored) - len(p), small_n=len(p) < MIN_N)
    if not p:
        section.update(answerable=0, unanswerable=0, bins=[], brier=None, auroc=None, auroc_ci=None,
                       reason="no question has both a probability and a label")
        return section
    declined_labels = [labels[i] for i in below if labels[i] is not None]
    section["declined"].update(answerable=declined_labels.count(1), unanswerable=declined_labels.count(0))
    ci = auroc_ci(p, y, confidence=confidence)
    section.update(answerable=sum(y), unanswerable=len(y) - sum(y), bins=reliability(p, y), brier=brier_score(p, y),
                   auroc=auroc(p, y), auroc_ci=list(ci) if ci else None)
    if section["auroc"] is None:
        section["reason"] = "every labelled question has the same label, so there is no AUROC"
    return section


def calibration_notes(section: Mapping[str, Any]) -> list[str]:
    """What a reader must know before trusting the section: the label, too few questions, no AUROC."""
    notes = []
    if section.get("label"):
        label = section["label"]
        k = f" (k = {label['k']})" if label.get("k") is not None else ""
        notes.append(f"label: {label['rule']}{k}; the test set has no unanswerable questions, so this measures "
                     "whether the probability tracks how well retrieval found the answer")
    if section.get("small_n"):
        notes.append(f"only {section['n']} labelled questions (fewer than {MIN_N}): the bins, the Brier score and "
                     "the AUROC say little at this size")
    if section.get("reason"):
        notes.append(section["reason"])
    return notes
