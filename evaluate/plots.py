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


def metric_means(names: Sequence[str], runs: Mapping[str, Sequence[float | None]]) -> str:
    """Grouped bars: each run's mean per metric (for comparisons)."""
    if not names or not runs:
        return _empty("nothing to compare")
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(min(2.5 + 1.2 * len(names) * max(1, len(runs)) * 0.5, 12), 3.0))
    width = 0.8 / len(runs)
    for index, (run, means) in enumerate(runs.items()):
        xs = [m + index * width for m in range(len(names))]
        ax.bar(xs, [v if v is not None else 0.0 for v in means], width=width, label=run,
               color=_PALETTE[index % len(_PALETTE)])
    ax.set_xticks([m + 0.4 - width / 2 for m in range(len(names))], list(names))
    ax.set_ylim(0, 1)
    ax.set_ylabel("mean")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return _svg(fig)
