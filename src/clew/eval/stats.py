"""Torch-free statistics for evaluation: Wilson intervals, (stratified) bootstrap intervals, steps to a threshold."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95 % Wilson score interval for a binomial proportion (well-behaved at 0 and 1)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return (max(0.0, centre - half), min(1.0, centre + half))


def bootstrap_interval(
    values: Sequence[float],
    statistic: Callable[[np.ndarray], float] = np.mean,  # type: ignore[assignment]
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of ``statistic`` over ``values``."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return (math.nan, math.nan)
    rng = np.random.default_rng(seed)
    stats = [statistic(arr[rng.integers(0, arr.size, arr.size)]) for _ in range(resamples)]
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def iqm(values: np.ndarray) -> float:
    """Interquartile mean: the mean of the middle 50 % (rliable's robust aggregate)."""
    arr = np.sort(np.asarray(values, dtype=float))
    n = arr.size
    lo, hi = int(math.floor(0.25 * n)), int(math.ceil(0.75 * n))
    return float(arr[lo:hi].mean()) if hi > lo else float(arr.mean())


# --- stratified bootstrap (rliable) -----------------------------------------------------------------
# Strata are cells (tasks): a sequence of S 1-D arrays, stratum s holding the n_s runs' scores of one cell.


def _pooled(strata: Sequence[Sequence[float]]) -> list[np.ndarray]:
    arrays = [np.asarray(s, dtype=float).ravel() for s in strata]
    if any(a.size == 0 for a in arrays):
        raise ValueError(f"every stratum needs at least one run, got sizes {[a.size for a in arrays]}")
    return arrays


def _resample(arrays: list[np.ndarray], resamples: int, rng: np.random.Generator) -> np.ndarray:
    """(resamples, N): each row draws n_s runs with replacement from each stratum s, strata kept apart."""
    return np.concatenate([a[rng.integers(0, a.size, (resamples, a.size))] for a in arrays], axis=1)


def _percentiles(stats: np.ndarray, level: float) -> tuple[float, float]:
    lo, hi = np.quantile(stats, [(1 - level) / 2, 1 - (1 - level) / 2])
    return (float(lo), float(hi))


def stratified_bootstrap(
    strata: Sequence[Sequence[float]],
    statistic: Callable[[np.ndarray], float] = iqm,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile interval of ``statistic`` over all runs, resampling runs within each stratum.

    Agarwal et al., "Deep Reinforcement Learning at the Edge of the Statistical Precipice"
    (arXiv 2108.13264), section 4: each bootstrap replicate draws, independently for every task
    (here: cell), as many runs as that task has, with replacement, and recomputes the aggregate
    (default: the IQM of all drawn runs pooled, so a cell with more runs weighs more; rliable's
    cells have equal counts). A cell's runs never stand in for another cell's, so differences
    between cells add no spread. One stratum is the ordinary percentile bootstrap.

    Args:
        strata: S sequences, the runs' scores of each cell (each non-empty).
        statistic: aggregate of a 1-D array of scores.
        resamples: bootstrap replicates.
        level: coverage of the two-sided percentile interval.
        seed: seeds the resampling.
    """
    if not strata:
        return (math.nan, math.nan)
    arrays = _pooled(strata)
    draws = _resample(arrays, resamples, np.random.default_rng(seed))
    return _percentiles(np.array([statistic(row) for row in draws]), level)


def stratified_difference(
    first: Sequence[Sequence[float]],
    second: Sequence[Sequence[float]],
    statistic: Callable[[np.ndarray], float] = iqm,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float, float, float]:
    """(point, low, high) of ``statistic(first) - statistic(second)``, two methods paired by cell.

    ``first[s]`` and ``second[s]`` are the two methods' runs in the same cell s. Each replicate
    resamples both methods within every cell (independently: runs of two methods are separate
    trainings even when they share a seed) and takes the difference of the pooled aggregates, so
    the interval reflects run-to-run spread only, never which cells were studied. An interval that
    excludes 0 separates the methods at this ``level``.
    """
    if len(first) != len(second):
        raise ValueError(f"the two methods must cover the same cells, got {len(first)} and {len(second)}")
    if not first:
        return (math.nan, math.nan, math.nan)
    a, b = _pooled(first), _pooled(second)
    rng = np.random.default_rng(seed)
    draws_a, draws_b = _resample(a, resamples, rng), _resample(b, resamples, rng)
    diffs = np.array([statistic(x) - statistic(y) for x, y in zip(draws_a, draws_b)])
    point = statistic(np.concatenate(a)) - statistic(np.concatenate(b))
    return (float(point), *_percentiles(diffs, level))


# --- env steps to a threshold, with censored runs ----------------------------------------------------


def steps_to_threshold(
    success: Sequence[float], env_steps: Sequence[float], threshold: float, window: int = 2
) -> float:
    """Env steps at the first iteration whose success, averaged over the last ``window`` iterations
    (fewer at the start), reaches ``threshold``; ``math.inf`` when no iteration does (censored).

    ``success[i]`` and ``env_steps[i]`` are iteration i's training success rate and the env steps
    taken by its end. The window keeps one lucky batch from counting.
    """
    if len(success) != len(env_steps):
        raise ValueError(f"success and env_steps differ in length: {len(success)} vs {len(env_steps)}")
    for i, steps in enumerate(env_steps):
        if float(np.mean(success[max(0, i - window + 1) : i + 1])) >= threshold:
            return float(steps)
    return math.inf


def censor_at_budget(values: Sequence[float], budget: float) -> np.ndarray:
    """Censored runs (``inf``: never reached the threshold) count as ``budget + 1`` env steps.

    The convention: a run that did not get there within its ``budget`` env steps ranks after every
    run that did, and all such runs tie. An IQM or quantile over these values is then a lower bound
    of the true one whenever a censored run falls inside it, and a bound of exactly ``budget + 1``
    reads "not reached". Finite values above the budget are refused (they cannot be censored ones).
    """
    arr = np.asarray(values, dtype=float)
    over = np.isfinite(arr) & (arr > budget)
    if over.any():
        raise ValueError(f"steps above the budget {budget:g} cannot be censored runs: {arr[over].tolist()}")
    return np.where(np.isfinite(arr), arr, budget + 1)
