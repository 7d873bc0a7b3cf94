"""Torch-free statistics for evaluation: Wilson intervals and bootstrap intervals."""

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
