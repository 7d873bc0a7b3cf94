"""clew.eval.stats: IQM, the stratified bootstrap (rliable), paired IQM differences, steps to a threshold."""

from __future__ import annotations

import math

import numpy as np
import pytest

from clew.eval.stats import (
    bootstrap_interval,
    censor_at_budget,
    iqm,
    steps_to_threshold,
    stratified_bootstrap,
    stratified_difference,
)


def test_iqm_is_the_mean_of_the_middle_half() -> None:
    assert iqm(np.arange(1.0, 9.0)) == pytest.approx(4.5)  # [3, 4, 5, 6]
    assert iqm(np.array([1.0, 2.0, 3.0, 4.0, 100.0])) == pytest.approx(3.0)  # [2, 3, 4]: the outlier is out
    assert iqm(np.array([0.0, 0.0, 0.0, 10.0])) == 0.0  # [0, 0]


def test_one_stratum_is_the_ordinary_bootstrap() -> None:
    values = [0.1, 0.5, 0.3, 0.9, 0.7, 0.2]
    assert stratified_bootstrap([values], iqm, resamples=500) == bootstrap_interval(values, iqm, resamples=500)


def test_strata_are_resampled_apart() -> None:
    # Pooled, a resample of {0, 0, 1, 1} is all zeros with probability 1/16 = 6.25 % > 2.5 % (and all ones
    # alike): the interval is (0, 1). Stratified, every replicate draws two zeros and two ones: mean 0.5.
    assert bootstrap_interval([0, 0, 1, 1], np.mean) == (0.0, 1.0)
    assert stratified_bootstrap([[0, 0], [1, 1]], np.mean) == (0.5, 0.5)
    assert stratified_bootstrap([[0.3], [0.7]], np.mean) == (0.5, 0.5)  # a one-run cell never varies
    low, high = stratified_bootstrap([[0.0, 1.0], [1.0, 1.0]], np.mean)  # means 2/4, 3/4 or 4/4 of the ones
    assert (low, high) == (0.5, 1.0)  # 0.5 and 1.0 each have probability 1/4


def test_stratified_bootstrap_refuses_an_empty_cell() -> None:
    with pytest.raises(ValueError, match=r"every stratum needs at least one run, got sizes \[2, 0\]"):
        stratified_bootstrap([[1.0, 2.0], []])
    assert all(math.isnan(x) for x in stratified_bootstrap([]))


def test_difference_of_cells_constant_within_is_exact() -> None:
    first = [[0.2, 0.2], [0.6, 0.6, 0.6]]
    second = [[0.1, 0.1], [0.5, 0.5, 0.5]]
    # pooled IQM of [0.2, 0.2, 0.6, 0.6, 0.6] is mean(0.2, 0.6, 0.6) = 0.4667; of the second 0.3667
    assert stratified_difference(first, second) == pytest.approx((0.1, 0.1, 0.1))
    assert stratified_difference(first, second, np.mean) == pytest.approx((0.1, 0.1, 0.1))  # 0.44 - 0.34


def test_difference_separates_only_what_differs() -> None:
    good = [[0.9, 0.8, 1.0, 0.9, 0.85], [0.7, 0.75, 0.8, 0.7, 0.65]]
    bad = [[0.1, 0.2, 0.0, 0.15, 0.1], [0.2, 0.1, 0.3, 0.2, 0.25]]
    point, low, high = stratified_difference(good, bad)
    assert 0 < low <= point <= high
    point, low, high = stratified_difference(good, good)
    assert point == 0.0 and low < 0 < high


def test_difference_needs_the_same_cells() -> None:
    with pytest.raises(ValueError, match=r"the two methods must cover the same cells, got 2 and 1"):
        stratified_difference([[1.0], [2.0]], [[1.0]])


def test_steps_to_threshold_uses_a_two_iteration_window() -> None:
    success, steps = [0.5, 0.9, 0.7, 0.95], [100, 200, 300, 400]
    assert steps_to_threshold(success, steps, 0.8) == 300  # (0.5 + 0.9) / 2 = 0.7 < 0.8; (0.9 + 0.7) / 2 = 0.8
    assert steps_to_threshold(success, steps, 0.8, window=1) == 200
    assert steps_to_threshold([0.9], [50], 0.8) == 50  # the first iteration averages over itself alone
    assert steps_to_threshold(success, steps, 0.99) == math.inf
    with pytest.raises(ValueError, match=r"differ in length: 2 vs 1"):
        steps_to_threshold([0.1, 0.2], [10], 0.5)


def test_censored_runs_count_as_the_budget_plus_one() -> None:
    values = censor_at_budget([100, math.inf, 250], budget=300)
    assert values.tolist() == [100, 301, 250]
    assert float(np.median(censor_at_budget([100, math.inf, math.inf], 300))) == 301  # the median: not reached
    assert iqm(censor_at_budget([100, 200, math.inf, math.inf], 300)) == pytest.approx(250.5)  # mean(200, 301)
    with pytest.raises(ValueError, match=r"steps above the budget 300 cannot be censored runs: \[400.0\]"):
        censor_at_budget([400, math.inf, 100], 300)
