"""Plots for the HTML reports, rendered by matplotlib (Agg) to SVG text that is inlined in the page.

No network and no display are needed; text stays text (``svg.fonttype = none``) so the SVG is small, and
the SVG carries no creation date, so the same data gives the same bytes.
"""

from __future__ import annotations

import io
import re
from collections.abc import Mapping, Sequence

_PALETTE = ("#0969da", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#57606a", "#bc4c00", "#1b7c83")


def _pyplot():  # noqa: ANN202 - matplotlib types are not worth importing here
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt


def _svg(fig) -> str:  # noqa: ANN001 - a matplotlib Figure; matplotlib is imported on first use
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None, "Creator": None})
    _pyplot().close(fig)
    text = buffer.getvalue()
    # Inline SVG needs neither the XML declaration nor the DOCTYPE (which names a URL).
    text = re.sub(r"<\?xml[^>]*\?>\s*", "", text)
    return re.sub(r"<!DOCTYPE[^>]*>\s*", "", text)


def _empty(message: str) -> str:
    return f"<p class=\"muted\">{message}</p>"


def metric_distributions(values: Mapping[str, Sequence[float]]) -> str:
    """One histogram per metric over [0, 1] (ten bins), with the mean marked."""
    shown = {name: list(v) for name, v in values.items() if v}
    if not shown:
        return _empty("no scores to plot")
    plt = _pyplot()
    columns = min(4, len(shown))
    rows = (len(shown) + columns - 1) // columns
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 2.3 * rows), squeeze=False)
    for index, (name, data) in enumerate(shown.items()):
        ax = axes[index // columns][index % columns]
        ax.hist(data, bins=10, range=(0.0, 1.0), color=_PALETTE[index % len(_PALETTE)], edgecolor="white")
        mean = sum(data) / len(data)
        ax.axvline(mean, color="#1b1f24", linestyle="--", linewidth=1)
        ax.set_title(f"{name} (mean {mean:.3f}, n={len(data)})")
        ax.set_xlim(0, 1)
        ax.set_ylabel("questions")
    for index in range(len(shown), rows * columns):
        axes[index // columns][index % columns].axis("off")
    fig.tight_layout()
    return _svg(fig)


def latency(series: Mapping[str, Sequence[float]]) -> str:
    """Box plots of the milliseconds per stage (log scale when stages differ by orders of magnitude)."""
    shown = {name: list(v) for name, v in series.items() if v}
    if not shown:
        return _empty("no timings to plot")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(2.0 + 1.3 * len(shown), 12), 2.8))
    ax.boxplot(list(shown.values()), showfliers=True)
    ax.set_xticks(range(1, len(shown) + 1), list(shown.keys()), rotation=20, ha="right")
    ax.set_ylabel("ms per question")
    low = min(min(v) for v in shown.values())
    high = max(max(v) for v in shown.values())
    if low > 0 and high / low > 100:
        ax.set_yscale("log")
    fig.tight_layout()
    return _svg(fig)


def paired_deltas(runs: Mapping[str, Mapping[str, tuple[float | None, float | None, float | None, int]]], *,
                  baseline: str) -> str:
    """Paired differences against the baseline (comparisons): per run and metric, the mean of run minus
    baseline over the questions scored in both, its 95% bootstrap CI as an error bar, and the pair count n.

    ``runs`` maps a run label to ``{metric: (delta, ci_low, ci_high, n)}``; a metric with no pairs is skipped.
    """
    bars = [(run, metric, *value) for run, metrics in runs.items() for metric, value in metrics.items()
            if value[0] is not None]
    if not bars:
        return _empty("no questions scored in both runs: nothing to plot")
    plt = _pyplot()
    labels = list(runs)
    fig, ax = plt.subplots(figsize=(7.5, 0.9 + 0.32 * len(bars)))
    ys = list(range(len(bars)))[::-1]
    for y, (run, _metric, delta, low, high, n) in zip(ys, bars):
        color = _PALETTE[labels.index(run) % len(_PALETTE)]
        err = None if low is None else [[max(0.0, delta - low)], [max(0.0, high - delta)]]
        ax.errorbar([delta], [y], xerr=err, fmt="o", color=color, capsize=3, markersize=4)
        ax.annotate(f"n={n}", (1.0, y), xycoords=("axes fraction", "data"), xytext=(4, 0), textcoords="offset points",
                    va="center", fontsize=8, color="#57606a")
    ax.axvline(0.0, color="#1b1f24", linewidth=0.8)
    ax.set_yticks(ys, [f"{metric} ({run})" if len(labels) > 1 else metric for run, metric, *_ in bars])
    ax.set_xlabel(f"run minus {baseline}, paired by question (95% CI)")
    fig.tight_layout()
    return _svg(fig)


def calibration(bins: Sequence[Mapping[str, float]], probabilities: Sequence[float], labels: Sequence[int], *,
                threshold: float, title: str) -> str:
    """Answerability calibration: the reliability diagram (each bin's observed rate against its mean predicted
    probability, marker area by count, the diagonal for perfect calibration) and, beside it, the predicted
    probabilities of the questions labelled answerable and unanswerable; the threshold as a dashed line."""
    if not bins:
        return _empty("no labelled questions to plot")
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(8.0, 3.2))
    left.plot([0, 1], [0, 1], color="#57606a", linestyle=":", linewidth=1, label="perfect calibration")
    largest = max(b["count"] for b in bins)
    left.plot([b["mean_predicted"] for b in bins], [b["observed_rate"] for b in bins], color=_PALETTE[0], linewidth=1)
    left.scatter([b["mean_predicted"] for b in bins], [b["observed_rate"] for b in bins], color=_PALETTE[0], zorder=3,
                 s=[20 + 100 * b["count"] / largest for b in bins], label="bins (area: questions)")
    for b in bins:
        left.annotate(str(b["count"]), (b["mean_predicted"], b["observed_rate"]), xytext=(5, -9),
                      textcoords="offset points", fontsize=7, color="#57606a")
    left.set_xlim(0, 1)
    left.set_ylim(-0.03, 1.03)
    left.set_xlabel("predicted probability answerable")
    left.set_ylabel("observed share labelled answerable")
    left.set_title(title)
    left.legend(loc="lower right", fontsize=7, frameon=False)  # under the diagonal: the emptiest corner
    groups = [([p for p, y in zip(probabilities, labels) if y == 1], "labelled answerable", _PALETTE[1]),
              ([p for p, y in zip(probabilities, labels) if y == 0], "labelled unanswerable", _PALETTE[4])]
    shown = [(data, name, colour) for data, name, colour in groups if data]
    right.hist([d for d, _, _ in shown], bins=20, range=(0.0, 1.0), stacked=True, color=[c for _, _, c in shown],
               label=[f"{name} (n={len(d)})" for d, name, _ in shown], edgecolor="white")
    for axis in (left, right):
        axis.axvline(threshold, color="#1b1f24", linestyle="--", linewidth=0.8)
    right.annotate(f"threshold {threshold:g}", (threshold, 1.0), xycoords=("data", "axes fraction"), xytext=(3, -10),
                   textcoords="offset points", fontsize=7)
    right.set_xlim(0, 1)
    right.set_xlabel("predicted probability answerable")
    right.set_ylabel("questions")
    right.legend(loc="lower left", bbox_to_anchor=(0.0, 1.0), ncol=2, fontsize=7, frameon=False)
    fig.tight_layout()
    return _svg(fig)
