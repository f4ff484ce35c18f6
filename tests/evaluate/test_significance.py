"""Paired significance tests against hand-checkable cases."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from rag.evaluate.significance import paired_bootstrap_ci, paired_randomization_test


def test_identical_scores_give_p_one() -> None:
    scores = [0.1, 0.5, 0.9, 0.3]
    assert paired_randomization_test(scores, scores) == 1.0  # exact: 2**4 flips <= trials
    many = list(np.linspace(0, 1, 100))
    assert paired_randomization_test(many, many, trials=500) == 1.0  # Monte Carlo: (500 + 1) / (500 + 1)


def test_exact_p_value_by_hand() -> None:
    # d = (1, 2, 3): of the 8 sign flips only (+,+,+) and (-,-,-) reach |sum| = 6, so p = 2 / 8.
    assert paired_randomization_test([1, 2, 3], [0, 0, 0]) == pytest.approx(0.25)
    # d = (1, 1, 2): |sum| >= 4 for (+,+,+), (-,-,-); sums of +-1 +-1 +-2 reach 4 only there, so p = 2 / 8.
    assert paired_randomization_test([1, 1, 2], [0, 0, 0]) == pytest.approx(0.25)
    # d = (1, -1, 0, 0): the observed mean is 0, so every flip is at least as extreme and p = 1.
    assert paired_randomization_test([1, 0, 0, 0], [0, 1, 0, 0]) == 1.0


def test_exact_matches_enumeration_of_all_sign_flips() -> None:
    rng = np.random.default_rng(7)
    a, b = rng.random(10), rng.random(10)
    d = a - b
    flips = [abs(sum(s * x for s, x in zip(signs, d))) for signs in itertools.product((1, -1), repeat=len(d))]
    expected = sum(f >= abs(d.sum()) - 1e-12 for f in flips) / len(flips)
    assert paired_randomization_test(a, b, trials=2**10) == pytest.approx(expected)
    # The Monte Carlo estimate (fewer trials than flips) lands near the exact value.
    assert paired_randomization_test(a, b, trials=1000, seed=3) == pytest.approx(expected, abs=0.05)


def test_clear_difference_gives_small_p_and_is_symmetric() -> None:
    rng = np.random.default_rng(0)
    b = rng.random(60)
    a = b + 0.1 + rng.normal(scale=0.02, size=60)
    p = paired_randomization_test(a, b, trials=2000)
    assert p == pytest.approx(1 / 2001)  # no random flip beats an all-positive difference
    assert paired_randomization_test(b, a, trials=2000) == p  # two-sided
    assert paired_randomization_test(a, b, trials=2000, seed=5) == p  # seed only moves ties, none here


def test_bootstrap_ci_of_a_constant_shift_is_the_shift() -> None:
    b = [0.2, 0.4, 0.6, 0.8, 1.0]
    low, high = paired_bootstrap_ci([x + 0.25 for x in b], b, trials=500)
    assert low == pytest.approx(0.25) and high == pytest.approx(0.25)


def test_bootstrap_ci_brackets_the_observed_mean_and_narrows_with_confidence() -> None:
    rng = np.random.default_rng(1)
    b = rng.random(200)
    a = b + 0.05 + rng.normal(scale=0.1, size=200)
    low, high = paired_bootstrap_ci(a, b, trials=2000)
    assert low < np.mean(a - b) < high and low > 0  # a shift of 0.05 with sd 0.1 over 200 queries
    low80, high80 = paired_bootstrap_ci(a, b, confidence=0.8, trials=2000)
    assert low < low80 < high80 < high
    assert paired_bootstrap_ci(a, b, trials=2000) == (low, high)  # same seed, same interval


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([1.0, 2.0], [1.0], "same length"),
        ([], [], "must not be empty"),
        ([1.0, float("nan")], [1.0, 2.0], "finite"),
    ],
)
def test_bad_inputs_raise(a: list[float], b: list[float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        paired_randomization_test(a, b)
    with pytest.raises(ValueError, match=message):
        paired_bootstrap_ci(a, b)


def test_bad_parameters_raise() -> None:
    with pytest.raises(ValueError, match="trials must be positive, got 0"):
        paired_randomization_test([1.0], [0.0], trials=0)
    with pytest.raises(ValueError, match="confidence must be between 0 and 1"):
        paired_bootstrap_ci([1.0], [0.0], confidence=1.5)
