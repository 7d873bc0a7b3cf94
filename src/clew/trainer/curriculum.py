"""Curricula: which difficulty the training tasks have at each iteration.

A curriculum sets one env keyword (``curriculum.key``: a horizon, a number of composed problems, a grid size) to one
of ``curriculum.levels``, easiest first, for the training tasks; held-out evaluation stays on ``env.kwargs``, the
target. Two rules move the level:

- ``schedule``: fixed iterations (``curriculum.at``: the iteration each level after the first starts; without it
  the levels share the run evenly): a horizon schedule as in h1 ("h1: Bootstrapping LLMs to Reason over Longer
  Horizons via Reinforcement Learning", whose curriculum raises the length of composed problem chains) and R-Horizon
  ("R-Horizon: How Far Can Your Large Reasoning Model Really Go in Breadth and Depth?", query composition); only
  their abstracts are in the seed list, so their stage lengths and thresholds are unconfirmed;
- ``success``: the level rises once the mean training success of its last ``window`` iterations reaches
  ``advance_at`` (difficulty driven by success rate; the level never falls).

``replay_share`` of the tasks come from an easier level (uniform among them, seeded by the task), so earlier
skills stay in the batch. The level and its recent successes are part of the checkpoint: a resumed run continues
the same curriculum.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from clew.trainer.data_sections import CurriculumConfig


@dataclass(frozen=True)
class CurriculumState:
    """The current level and the training success rates recorded at it (newest last)."""

    level: int = 0
    recent: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"level": self.level, "recent": list(self.recent)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> CurriculumState:
        return cls() if not data else cls(int(data["level"]), tuple(float(x) for x in data["recent"]))


def scheduled_level(iteration: int, iterations: int, n_levels: int, at: Sequence[int] | None) -> int:
    """The ``schedule`` rule: the number of boundaries in ``at`` already reached, or, without ``at``, the level of
    an even split of ``iterations`` (level i from iteration ceil(i * iterations / n_levels))."""
    if at is not None:
        return sum(1 for start in at if iteration >= start)
    return min(n_levels - 1, iteration * n_levels // max(iterations, 1))


def after_success(
    state: CurriculumState, success: float, n_levels: int, advance_at: float, window: int
) -> CurriculumState:
    """The ``success`` rule after an iteration with training success ``success``: up one level (with a fresh record)
    once the last ``window`` rates at this level average ``advance_at`` or more."""
    recent = (*state.recent, success)[-window:]
    if state.level + 1 < n_levels and len(recent) == window and sum(recent) / window >= advance_at:
        return CurriculumState(state.level + 1, ())
    return dataclasses.replace(state, recent=recent)


def task_level(level: int, replay_share: float, seed: int) -> int:
    """The level of one task: ``level``, or with probability ``replay_share`` an easier one (uniform), drawn from the
    task's own seed so that the same task gets the same level on a rerun."""
    rng = random.Random(seed)
    if level == 0 or rng.random() >= replay_share:
        return level
    return rng.randrange(level)


def level_now(cfg: CurriculumConfig, state: CurriculumState, iteration: int, iterations: int) -> int:
    """The level the tasks of ``iteration`` are drawn at (the base level; some may replay easier ones)."""
    if cfg.rule == "schedule":
        return scheduled_level(iteration, iterations, len(cfg.levels), cfg.at)
    return state.level


def task_kwargs(
    cfg: CurriculumConfig, env_kwargs: dict[str, Any], state: CurriculumState, iteration: int, iterations: int,
    seed: int,
) -> dict[str, Any]:  # fmt: skip
    """A training task's env keywords: ``env_kwargs`` with the curriculum's key at this task's level."""
    if cfg.key is None:
        return dict(env_kwargs)
    level = task_level(level_now(cfg, state, iteration, iterations), cfg.replay_share, seed)
    return {**env_kwargs, cfg.key: cfg.levels[level]}


def after_iteration(cfg: CurriculumConfig, state: CurriculumState, iteration: int, iterations: int,
                    success: float) -> tuple[CurriculumState, dict[str, float]]:  # fmt: skip
    """The state for the next iteration (the ``success`` rule moves it) and this iteration's ``curriculum/*``
    metrics: the level its tasks were drawn at (none without a curriculum)."""
    if cfg.key is None:
        return state, {}
    level = level_now(cfg, state, iteration, iterations)
    metrics = {"curriculum/level": float(level)}
    value = cfg.levels[level]
    if isinstance(value, int | float):
        metrics["curriculum/value"] = float(value)
    if cfg.rule == "success":
        state = after_success(state, success, len(cfg.levels), cfg.advance_at, cfg.window)
    return state, metrics
