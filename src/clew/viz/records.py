"""Typed, JSON-ready results of the viewer's queries: runs, curves, groups, episodes, comparisons.

Every record is a frozen dataclass; ``to_json`` turns any of them (nested) into plain JSON values.
Names follow the store: ``turn_return`` is the column ``return`` (a Python keyword), ``G`` the group size.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import Any

STATUSES = ("all", "success", "failure", "invalid", "truncated", "error", "infra_error", "policy_error")
SORTS = ("group", "success", "outcome", "spread", "turns")


@dataclass(frozen=True)
class EvalPoint:
    """One held-out evaluation: success rate with its 95 % interval, at ``env_steps``."""

    iteration: int
    env_steps: float
    success: float
    low: float
    high: float
    mean_return: float | None


@dataclass(frozen=True)
class MonitorMarker:
    """A monitor detector that tripped (``clew.trainer.monitor``) at ``iteration``, drawn at ``env_steps``."""

    iteration: int
    env_steps: float
    detector: str
    stops_run: bool


@dataclass(frozen=True)
class RunCurves:
    """A run's training curves: ``series[key]`` is a list of ``(env_steps, value)`` points; ``markers`` the
    monitor's trips."""

    run: str
    series: dict[str, list[tuple[float, float]]]
    evals: tuple[EvalPoint, ...]
    markers: tuple[MonitorMarker, ...] = ()


@dataclass(frozen=True)
class RunInfo:
    """A run directory as the viewer lists it."""

    name: str
    iterations: tuple[int, ...]
    env_steps: float | None
    last_eval: EvalPoint | None
    tokenizer: str | None


@dataclass(frozen=True)
class EpisodeSummary:
    """One episode of a group: how it ended. ``total_reward`` sums its step rewards; ``failure`` types its
    ``error`` (``infra``: left out of credit, ``policy``: kept and scored as a failure); ``agent``/``match``: its
    seat and game in self-play (None otherwise)."""

    episode: int
    group: int
    outcome: float
    total_reward: float
    turns: int
    success: bool
    terminated: bool
    truncated: bool
    truncation_reason: str | None
    error: str | None
    failure: str | None
    invalid_actions: int
    matches: int
    agent: int | None = None  # the seat it played in a self-play game (its group holds that seat's episodes)
    match: str | None = None  # that game's id, shared by its seats' episodes


@dataclass(frozen=True)
class GroupSummary:
    """The ``G`` episodes of one task and seed in one iteration, with group statistics over outcomes."""

    group: int
    task_id: str
    seed: int
    success_rate: float
    mean_outcome: float
    outcome_std: float
    episodes: tuple[EpisodeSummary, ...]


@dataclass(frozen=True)
class GroupPage:
    """An iteration's groups after filtering (``status``), sorting (``sort``) and searching (``query``)."""

    run: str
    iteration: int
    iterations: tuple[int, ...]
    status: str
    sort: str
    query: str
    total_groups: int
    total_episodes: int
    groups: tuple[GroupSummary, ...]


@dataclass(frozen=True)
class Token:
    """One sampled action token with the numbers the learner saw for it."""

    index: int
    id: int
    text: str
    logprob: float
    advantage: float
    entropy: float | None


@dataclass(frozen=True)
class AnchorMate:
    """Another turn of the same group and iteration in the same anchor-state group (GiGPO's step group): the same
    ``anchor_group`` the credit formed (any ``state_grouping``), or, in files without one, the same ``state_key``."""

    episode: int
    turn: int
    turn_return: float
    advantage: float
    action_text: str


@dataclass(frozen=True)
class TurnView:
    """One turn: the action (as tokens), the env's answer, and its per-turn credit."""

    turn: int
    action_text: str
    observation: str
    reward: float
    penalty: float
    turn_return: float
    advantage: float
    state_key: str | None
    invalid: bool
    info: str
    tokens: tuple[Token, ...]
    anchor: tuple[AnchorMate, ...]
    anchor_group: int | None = None
    segment_start: bool = False  # its prompt does not extend the last turn's: a new segment (trained apart)
    agent: int | None = None  # the seat that acted (self-play), else None


@dataclass(frozen=True)
class GameSeat:
    """One seat's episode of a self-play game: its return (the outcome from its side) and its mean turn advantage."""

    episode: int
    agent: int
    outcome: float
    turns: int
    mean_advantage: float


@dataclass(frozen=True)
class EpisodeView:
    """A whole episode; ``prompt_text`` is turn 0's decoded prompt (framing + first observation), given a tokenizer."""

    run: str
    iteration: int
    summary: EpisodeSummary
    task_id: str
    seed: int
    prompt_text: str | None
    prompt_tokens: int
    tokenizer: str | None
    turns: tuple[TurnView, ...]
    game: tuple[GameSeat, ...] = ()  # every seat of its self-play game (itself included), by seat; () otherwise


@dataclass(frozen=True)
class Comparison:
    """Two episodes of one group aligned by turn; ``first_divergence`` is the first turn whose actions differ."""

    run: str
    iteration: int
    a: EpisodeView
    b: EpisodeView
    first_divergence: int | None


def to_json(record: Any) -> Any:
    """A record (or list/dict of them) as plain JSON values; non-finite floats become None."""
    if dataclasses.is_dataclass(record) and not isinstance(record, type):
        return {f.name: to_json(getattr(record, f.name)) for f in dataclasses.fields(record)}
    if isinstance(record, dict):
        return {str(k): to_json(v) for k, v in record.items()}
    if isinstance(record, list | tuple):
        return [to_json(v) for v in record]
    if isinstance(record, float) and not math.isfinite(record):
        return None
    return record


def dumps(record: Any) -> str:
    """Compact JSON text of a record."""
    return json.dumps(to_json(record), separators=(",", ":"), allow_nan=False)
