"""``clew compare``: runs grouped into methods, compared on final held-out success and on curves over env steps.

A run directory holds ``config.yaml`` and ``metrics.jsonl``. Runs are grouped by the value of one config key
(``by``, default ``credit.name``), so the seeds of one method form one group. Per method:

- **final**: each run's last held-out success (``eval/success_rate`` of its last eval record), summarised by
  the interquartile mean and the mean over runs with 95 % bootstrap intervals over runs (Agarwal et al.,
  "Deep RL at the Edge of the Statistical Precipice", arXiv 2108.13264; one env is one stratum);
- **curve**: training-rollout success against env steps, each run's curve interpolated onto a shared grid of
  env steps (up to the shortest run's last step, so every point averages every run), the mean over runs with
  a 95 % bootstrap band over runs at each grid point;
- **probability of improvement** P(X > Y) for every ordered pair of methods: the Mann-Whitney statistic over
  their runs' final scores, a tie counting 1/2 (arXiv 2108.13264, section 4.2), with a 95 % bootstrap
  interval resampling each method's runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from clew.eval.stats import iqm, stratified_bootstrap
from clew.store.run import read_jsonl

GRID_POINTS = 50


@dataclass(frozen=True)
class Run:
    """One run's data: its method, training curve (env steps, success) and last held-out success (or None)."""

    path: Path
    method: str
    steps: np.ndarray
    success: np.ndarray
    final: float | None


@dataclass(frozen=True)
class Method:
    """One method's runs and their summaries (``final`` and ``curve`` as in the module docstring)."""

    name: str
    runs: list[Run]
    final: dict[str, Any] = field(default_factory=dict)
    grid: list[float] = field(default_factory=list)
    curve: list[float] = field(default_factory=list)
    band: list[tuple[float, float]] = field(default_factory=list)


def load_run(path: Path, by: str) -> Run:
    """Read a run directory; its method is the value of the dotted config key ``by`` (``?`` when absent)."""
    config = yaml.safe_load((path / "config.yaml").read_text()) if (path / "config.yaml").exists() else {}
    value: Any = config
    for part in by.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    records = read_jsonl(path / "metrics.jsonl")
    train = [r for r in records if r.get("kind") == "iteration" and "rollout/success_rate" in r]
    evals = [r for r in records if r.get("kind") == "eval" and "eval/success_rate" in r]
    return Run(
        path=path,
        method="?" if value is None else str(value),
        steps=np.array([float(r["rollout/env_steps_total"]) for r in train]),
        success=np.array([float(r["rollout/success_rate"]) for r in train]),
        final=float(evals[-1]["eval/success_rate"]) if evals else None,
    )


def probability_of_improvement(x: Sequence[float] | np.ndarray, y: Sequence[float] | np.ndarray) -> float:
    """P(X > Y): the share of (x, y) pairs with x > y, a tie counting 1/2 (Mann-Whitney U / (n_x n_y))."""
    a, b = np.asarray(x, dtype=float)[:, None], np.asarray(y, dtype=float)[None, :]
    return float(((a > b) + 0.5 * (a == b)).mean())


def improvement_interval(
    x: Sequence[float], y: Sequence[float], resamples: int = 2000, seed: int = 0
) -> tuple[float, float]:
    """95 % percentile bootstrap of ``probability_of_improvement``, resampling each method's runs."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    stats = [probability_of_improvement(rng.choice(a, a.size), rng.choice(b, b.size)) for _ in range(resamples)]
    low, high = np.quantile(stats, [0.025, 0.975])
    return float(low), float(high)


def summarise(runs: Sequence[Run], resamples: int = 2000, seed: int = 0) -> list[Method]:
    """Methods in order of first appearance, each with its final-score summary and curve."""
    names = list(dict.fromkeys(r.method for r in runs))
    return [_method(name, [r for r in runs if r.method == name], resamples, seed) for name in names]


def _method(name: str, runs: list[Run], resamples: int, seed: int) -> Method:
    finals = [r.final for r in runs if r.final is not None]
    final: dict[str, Any] = {"runs": len(finals), "scores": finals}
    if finals:
        mean = lambda a: float(np.mean(a))  # noqa: E731
        for key, statistic in (("iqm", iqm), ("mean", mean)):
            final[key] = statistic(np.array(finals))
            final[f"{key}_interval"] = list(stratified_bootstrap([finals], statistic, resamples, seed=seed))
    grid, curve, band = _curve([r for r in runs if r.steps.size], resamples, seed)
    return Method(name, runs, final, grid, curve, band)


def _curve(runs: list[Run], resamples: int, seed: int) -> tuple[list[float], list[float], list[tuple[float, float]]]:
    if not runs:
        return [], [], []
    end = min(float(r.steps[-1]) for r in runs)
    start = max(float(r.steps[0]) for r in runs)
    grid = np.linspace(start, end, GRID_POINTS) if end > start else np.array([end])
    values = np.stack([np.interp(grid, r.steps, r.success) for r in runs])  # (runs, points)
    rng = np.random.default_rng(seed)
    draws = values[rng.integers(0, len(runs), (resamples, len(runs)))].mean(axis=1)  # (resamples, points)
    low, high = np.quantile(draws, [0.025, 0.975], axis=0)
    return grid.tolist(), values.mean(axis=0).tolist(), list(zip(low.tolist(), high.tolist()))


def improvements(methods: Sequence[Method], resamples: int = 2000, seed: int = 0) -> list[dict[str, Any]]:
    """P(X > Y) with its interval for every ordered pair of methods that both have final scores."""
    scored = [m for m in methods if m.final.get("scores")]
    out = []
    for x in scored:
        for y in scored:
            if x is not y:
                p = probability_of_improvement(x.final["scores"], y.final["scores"])
                low, high = improvement_interval(x.final["scores"], y.final["scores"], resamples, seed)
                out.append({"x": x.name, "y": y.name, "p": p, "interval": [low, high]})
    return out
