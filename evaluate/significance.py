"""Paired significance tests for per-query scores of two systems run on the same queries.

Both tests work on the paired differences ``d_i = a_i - b_i`` (e.g. nDCG@10 of system A and system B on
query ``i``), so per-query difficulty cancels out, as Smucker, Allan and Carterette (CIKM 2007) recommend
for comparing retrieval systems:

- :func:`paired_randomization_test`: the two-sided p-value of the mean difference under the null
  hypothesis that the labels A and B are exchangeable on every query, i.e. each ``d_i`` is as likely to
  have the opposite sign. Exact (all ``2**n`` sign flips) when that is no more than ``trials``,
  Monte Carlo otherwise.
- :func:`paired_bootstrap_ci`: a percentile bootstrap confidence interval of the mean difference.

Only numpy is needed; results are reproducible through ``seed``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np

# Sign-flip and resample matrices are built in blocks of this many trials to bound memory.
_BLOCK = 2048


def _differences(a: Sequence[float], b: Sequence[float]) -> np.ndarray:
    """``a - b`` as float64, after checking that both are non-empty, equally long and finite."""
    a_arr = np.asarray(a, dtype=np.float64)
    b_arr = np.asarray(b, dtype=np.float64)
    if a_arr.ndim != 1 or b_arr.ndim != 1:
        raise ValueError(f"scores must be one-dimensional sequences, got shapes {a_arr.shape} and {b_arr.shape}")
    if len(a_arr) != len(b_arr):
        raise ValueError(f"paired scores must have the same length, got {len(a_arr)} and {len(b_arr)}")
    if len(a_arr) == 0:
        raise ValueError("paired scores must not be empty")
    if not (np.isfinite(a_arr).all() and np.isfinite(b_arr).all()):
        raise ValueError("paired scores must be finite numbers (no NaN or infinity)")
    return a_arr - b_arr


def _check_trials(trials: int) -> None:
    if trials <= 0:
        raise ValueError(f"trials must be positive, got {trials}")


def paired_randomization_test(a: Sequence[float], b: Sequence[float], *, trials: int = 10000, seed: int = 0) -> float:
    """Two-sided p-value that the mean of the paired differences ``a - b`` is zero, by sign flipping.

    Under the null hypothesis each paired difference is as likely to be ``+d_i`` as ``-d_i``. The p-value
    is the share of sign assignments whose mean difference is at least as far from zero as the observed
    one. When ``2**n <= trials`` every assignment is enumerated and the p-value is exact; otherwise
    ``trials`` random assignments are drawn and the p-value is ``(hits + 1) / (trials + 1)``, which counts
    the observed assignment and so is never 0.

    Args:
        a: per-query scores of system A.
        b: per-query scores of system B, in the same query order.
        trials: random sign assignments to draw (and the largest ``2**n`` that is enumerated exactly).
        seed: seed of the random generator, for reproducible p-values.

    Returns:
        The p-value in (0, 1]; 1.0 when ``a`` and ``b`` are identical.

    Raises:
        ValueError: if ``a`` and ``b`` differ in length, are empty or hold non-finite values, or if
            ``trials`` is not positive.
    """
    diffs = _differences(a, b)
    _check_trials(trials)
    n = len(diffs)
    observed = abs(diffs.mean())
    # Sign-flipped means equal to the observed one must count as "at least as extreme" despite rounding.
    threshold = observed - 1e-12 * max(1.0, float(np.abs(diffs).max()))
    if n < 63 and 2**n <= trials:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        return float(np.mean(np.abs(signs @ diffs) / n >= threshold))
    rng = np.random.default_rng(seed)
    hits = 0
    for start in range(0, trials, _BLOCK):
        size = min(_BLOCK, trials - start)
        signs = rng.choice((-1.0, 1.0), size=(size, n))
        hits += int(np.count_nonzero(np.abs(signs @ diffs) / n >= threshold))
    return (hits + 1) / (trials + 1)


def smallest_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """The smallest p-value :func:`paired_randomization_test` can give for pairs like these, whatever the scores.

    With ``m`` pairs that differ, at least the observed sign assignment and its mirror image are as extreme
    as the observed one, so the exact p-value is never below ``2 / 2**m`` (pairs that do not differ add
    nothing): 0.25 for 3 pairs, 0.0625 for 5; only from 6 differing pairs can it fall below 0.05.

    Raises:
        ValueError: as :func:`paired_randomization_test` does.
    """
    m = int(np.count_nonzero(_differences(a, b)))
    return 1.0 if m == 0 else min(1.0, 2.0 / 2.0**m)


def paired_bootstrap_ci(
    a: Sequence[float], b: Sequence[float], *, confidence: float = 0.95, trials: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean paired difference ``mean(a - b)``.

    Queries are resampled with replacement ``trials`` times, keeping each query's pair together; the
    interval runs between the ``(1 - confidence) / 2`` and ``(1 + confidence) / 2`` quantiles of the
    resampled means.

    Args:
        a: per-query scores of system A.
        b: per-query scores of system B, in the same query order.
        confidence: coverage of the interval, strictly between 0 and 1.
        trials: bootstrap resamples.
        seed: seed of the random generator, for reproducible intervals.

    Returns:
        ``(low, high)`` with ``low <= high``.

    Raises:
        ValueError: if ``a`` and ``b`` differ in length, are empty or hold non-finite values, or if
            ``confidence`` is not in (0, 1) or ``trials`` is not positive.
    """
    diffs = _differences(a, b)
    check_bootstrap(confidence, trials)
    rng = np.random.default_rng(seed)
    n = len(diffs)
    means = np.empty(trials)
    for start, size in bootstrap_blocks(trials):
        means[start : start + size] = diffs[rng.integers(0, n, size=(size, n))].mean(axis=1)
    return percentile_interval(means, confidence)


def check_bootstrap(confidence: float, trials: int) -> None:
    """Raise ``ValueError`` unless ``confidence`` is in (0, 1) and ``trials`` is positive."""
    _check_trials(trials)
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be between 0 and 1 (exclusive), got {confidence}")


def bootstrap_blocks(trials: int) -> list[tuple[int, int]]:
    """``(start, size)`` of the blocks ``trials`` resamples are drawn in, so no resample matrix grows unbounded."""
    return [(start, min(_BLOCK, trials - start)) for start in range(0, trials, _BLOCK)]


def percentile_interval(statistics: np.ndarray, confidence: float) -> tuple[float, float]:
    """The percentile bootstrap interval of resampled ``statistics``: their ``(1 - confidence) / 2`` and
    ``(1 + confidence) / 2`` quantiles."""
    tail = (1.0 - confidence) / 2
    low, high = np.quantile(statistics, [tail, 1.0 - tail])
    return float(low), float(high)


def bootstrap_mean_ci(
    values: Sequence[float], *, confidence: float = 0.95, trials: int = 10000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of ``values`` (one system's per-query scores).

    The same resampling as :func:`paired_bootstrap_ci` against a system scoring 0 everywhere.

    Raises:
        ValueError: as :func:`paired_bootstrap_ci` does.
    """
    return paired_bootstrap_ci(values, [0.0] * len(values), confidence=confidence, trials=trials, seed=seed)
