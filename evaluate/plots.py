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
