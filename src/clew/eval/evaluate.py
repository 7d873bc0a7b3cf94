"""Evaluate a frozen actor on held-out seeds: success with a 95 % interval and episode metrics."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from clew.eval.sampling import NotComparable, final_answer, maj_at_k, mean_at_k, pass_at_k
from clew.eval.stats import bootstrap_interval, wilson_interval
from clew.rollout import Actor, Framing, RolloutConfig, Task, collect
from clew.types import Episode, Group

EVAL_SEED_BASE = 1_000_000  # training seeds stay below this, evaluation seeds start here


@dataclass(frozen=True)
class EvalResult:
    """Trajectory-level metrics over ``episodes`` episodes."""

    episodes: int
    success_rate: float
    success_low: float
    success_high: float
    mean_turns: float
    mean_return: float
    invalid_action_rate: float
    truncation_rate: float
    error_rate: float

    def as_dict(self) -> dict[str, float]:
        return {k: float(v) for k, v in asdict(self).items()}

    def summary(self) -> str:
        return (
            f"success {self.success_rate:.1%} [{self.success_low:.1%}, {self.success_high:.1%}] "
            f"over {self.episodes} episodes; mean turns {self.mean_turns:.1f}; "
            f"invalid actions {self.invalid_action_rate:.1%}; truncated {self.truncation_rate:.1%}"
        )


def eval_tasks(env_id: str, episodes: int, group_size: int, env_kwargs: dict[str, Any], offset: int = 0) -> list[Task]:
    """Held-out tasks: ``episodes / group_size`` seeds starting at ``EVAL_SEED_BASE + offset``."""
    n_tasks = max(1, -(-episodes // group_size))
    return [Task(env_id, EVAL_SEED_BASE + offset + i, dict(env_kwargs)) for i in range(n_tasks)]


def evaluate(
    actor: Actor,
    tasks: Sequence[Task],
    cfg: RolloutConfig,
    seed: int = 0,
    framing: Framing | None = None,
    chunk_tasks: int = 16,
    on_progress: Callable[[int], None] | None = None,
) -> tuple[EvalResult, list[Group]]:
    """Roll out every task (in chunks, so memory stays flat) and summarise."""
    groups: list[Group] = []
    for start in range(0, len(tasks), chunk_tasks):
        chunk = tasks[start : start + chunk_tasks]
        groups += collect(actor, chunk, cfg, seed=seed + start, framing=framing, group_offset=len(groups))
        if on_progress:
            on_progress(sum(len(g.episodes) for g in groups))
    return summarize([e for g in groups for e in g.episodes]), groups


def summarize(episodes: Sequence[Episode]) -> EvalResult:
    n = len(episodes)
    wins = sum(e.success for e in episodes)
    turns = sum(len(e.turns) for e in episodes)
    low, high = wilson_interval(wins, n)
    return EvalResult(
        episodes=n,
        success_rate=wins / n if n else 0.0,
        success_low=low,
        success_high=high,
        mean_turns=turns / n if n else 0.0,
        mean_return=sum(e.outcome for e in episodes) / n if n else 0.0,
        invalid_action_rate=sum(e.invalid_actions for e in episodes) / turns if turns else 0.0,
        truncation_rate=sum(e.truncated for e in episodes) / n if n else 0.0,
        error_rate=sum(e.error is not None for e in episodes) / n if n else 0.0,
    )


@dataclass(frozen=True)
class AtK:
    """One of pass@k, mean@k, maj@k: the mean over tasks, with a 95 % percentile bootstrap over tasks (NaN with
    one task)."""

    name: str
    value: float
    low: float
    high: float
    tasks: int

    def summary(self) -> str:
        spread = "" if math.isnan(self.low) else f" [{self.low:.1%}, {self.high:.1%}]"
        return f"{self.name} {self.value:.1%}{spread}"


def at_k(groups: Sequence[Group], ks: Sequence[int], seed: int = 0) -> list[AtK]:
    """pass@k, mean@k and maj@k for each k (``clew.eval.sampling``), a task being a group of samples. A sample
    without ``info["answer"]`` (cut by a budget, failed) is a wrong vote of its own; maj@k is left out when no
    sample of any task answered (an env that reports no answers) or some task's answers are not comparable
    (one answer scored both ways)."""
    out = []
    for k in ks:
        per_task: dict[str, list[float]] = {"pass": [], "mean": [], "maj": []}  # maj: NaN where nothing answered
        for group in groups:
            n, c = len(group.episodes), sum(e.success for e in group.episodes)
            per_task["pass"].append(pass_at_k(n, c, k))
            per_task["mean"].append(mean_at_k(n, c, k))
            per_task["maj"].append(_maj(group.episodes, k, seed))
        majority = per_task["maj"]
        if all(math.isnan(v) for v in majority) or any(math.isnan(v) for v in _comparable(groups, majority)):
            del per_task["maj"]  # no task answered, or one task's answers are not comparable
        else:  # a task where no sample answered scores 0
            per_task["maj"] = [0.0 if math.isnan(v) else v for v in majority]
        for name, values in per_task.items():
            out.append(_summarised(f"{name}@{k}", values, seed))
    return out


def _comparable(groups: Sequence[Group], majority: list[float]) -> list[float]:
    """maj@k of the tasks where some sample answered (NaN there means the answers were not comparable)."""
    answered = [any(e.turns and e.turns[-1].info.get("answer") is not None for e in g.episodes) for g in groups]
    return [v for v, a in zip(majority, answered) if a]


def _maj(episodes: Sequence[Episode], k: int, seed: int) -> float:
    answers = [e.turns[-1].info.get("answer") if e.turns else None for e in episodes]
    if all(a is None for a in answers):  # no answer to vote on (an env that reports none, or every sample cut)
        return math.nan
    votes = [final_answer(a) if a is not None else f"\0no answer {i}" for i, a in enumerate(answers)]
    try:  # an episode without an answer (cut, failed) is a wrong vote of its own
        return maj_at_k(votes, [e.success and a is not None for e, a in zip(episodes, answers)], k, seed)
    except NotComparable:
        return math.nan


def _summarised(name: str, values: list[float], seed: int) -> AtK:
    low, high = bootstrap_interval(values, seed=seed) if len(values) > 1 else (math.nan, math.nan)
    return AtK(name, sum(values) / len(values), low, high, len(values))
