"""Torch-free records that flow between stages: Turn, Episode, Group (DESIGN.md section 2).

Shapes and names used across clew: ``G`` group size, ``N`` turns, ``B`` rows, ``T`` tokens.
Every record round-trips through plain dicts (and therefore JSON) without loss.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

FailureType = Literal["infra", "policy"]
"""Who a failure is charged to: ``infra`` (out of credit and baselines) or ``policy`` (kept, scored as a failure)."""


REPLAYED = "replayed"  # Turn.info key: a turn of a branch's replayed prefix (Task.prefix), not a sample of its rollout


@dataclass
class Turn:
    """One decision of the agent.

    Attributes:
        prompt_ids: the exact token ids the policy conditioned on.
        action_ids: the exact token ids it sampled (including a sampled stop token).
        behavior_logprobs: log-probabilities of ``action_ids`` under the rollout engine.
        action_text: the decoded completion (the env receives it after the context strategy's ``take_action``,
            which strips blocks such as ``<memory>`` or ``<subgoal>``; with the full or window context it is that).
        reward: the environment's reward for this step (never changed by shaping).
        penalty: what reward shaping charges this turn (invalid action, overlong output); credit
            subtracts it from this turn's advantage only.
        observation: what the environment answered.
        state_key: canonical env state when the action was taken, or None.
        info: the env's details for this step (``invalid_action``, tool errors, ...); clew's own
            data about the turn lives in the typed fields below.
        context_edit: the context strategy that wrote this turn (a summary), or None for an env action.
        cut: the completion stopped at ``max_new_tokens`` without a stop token.
        token_entropies: the sampling distribution's entropy at each action token (nats), when the
            engine reported them (EMPG reads them).
    """

    prompt_ids: list[int]
    action_ids: list[int]
    behavior_logprobs: list[float]
    action_text: str
    reward: float = 0.0
    observation: str = ""
    state_key: str | None = None
    info: dict[str, Any] = field(default_factory=dict)
    penalty: float = 0.0
    context_edit: str | None = None
    cut: bool = False
    token_entropies: list[float] | None = None

    @property
    def env_step(self) -> bool:
        """The turn was an env action (context edits such as summaries are not)."""
        return self.context_edit is None

    def to_dict(self) -> dict[str, Any]:
        return {
            "prompt_ids": list(self.prompt_ids),
            "action_ids": list(self.action_ids),
            "behavior_logprobs": [float(x) for x in self.behavior_logprobs],
            "action_text": self.action_text,
            "reward": float(self.reward),
            "penalty": float(self.penalty),
            "observation": self.observation,
            "state_key": self.state_key,
            "info": dict(self.info),
            "context_edit": self.context_edit,
            "cut": self.cut,
            "token_entropies": None if self.token_entropies is None else [float(x) for x in self.token_entropies],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Turn:
        """Also reads records from before the typed fields, which kept them in ``info``."""
        d, info = dict(d), dict(d.get("info") or {})
        for key in LEGACY_INFO_FIELDS:
            if key in info:
                d.setdefault(key, info.pop(key))
        info.pop("edit_truncated", None)  # now ``context_edit`` and ``cut`` together
        return cls(**{**d, "info": info})


LEGACY_INFO_FIELDS = ("context_edit", "cut", "token_entropies")
"""Turn fields that records written before they were typed carried as ``info`` keys."""


@dataclass
class Episode:
    """One rollout of a task: its turns and how it ended.

    ``outcome`` is the episode's final scalar as the env gave it: the outcome it reported
    (``StepResult.outcome``, then ``outcome_explicit`` is True) or else the sum of its step rewards.
    Shaping penalties never enter it (they live on ``Turn.penalty``).
    ``success`` is the env's terminal verdict (``info["success"]`` on the last turn) when it gives
    one, else ``terminated and outcome > 0``.
    ``error`` records an env or tool failure (the episode then also has ``truncated=True``) and
    ``failure`` its type (set exactly when ``error`` is): ``policy`` when the policy's action can have
    caused it (whatever happens while the env processes an action: an exception from ``step``, a step
    timeout, the env's worker crashing), kept in credit and baselines, scored as a failure (no reward
    from the failing step, whose turn is flagged ``invalid_action``); ``infra`` otherwise (reset, a lost
    worker or host, a lost engine request, a ``clew.envs.InfraError``), left out of credit and baselines.
    An error without a type (a record from before failures were typed) is ``infra``, the rule it ran under.
    ``gold_reply`` is the reply that answers the task correctly when the env knows one (``HasGoldReply``):
    the policy never sees it; estimators that score the policy's belief in the answer (IGPO) read it.
    ``agent`` is the seat this episode played in a game whose every seat the policy played (self-play,
    ``clew.envs.HasSeats``), and ``match`` that game's id, shared by its seats' episodes; both None otherwise.
    Each seat's episode holds its own turns and its outcome from its own side.
    """

    task_id: str
    group_id: int
    seed: int
    turns: list[Turn] = field(default_factory=list)
    outcome: float = 0.0
    terminated: bool = False
    truncated: bool = False
    truncation_reason: str | None = None
    error: str | None = None
    first_observation: str = ""
    outcome_explicit: bool = False
    failure: FailureType | None = None
    gold_reply: str | None = None
    agent: int | None = None
    match: str | None = None

    def __post_init__(self) -> None:
        if self.error is not None and self.failure is None:
            self.failure = "infra"

    @property
    def done(self) -> bool:
        return self.terminated or self.truncated

    @property
    def success(self) -> bool:
        verdict = self.turns[-1].info.get("success") if self.turns else None
        if verdict is not None:
            return bool(verdict)
        return self.terminated and self.outcome > 0

    @property
    def invalid_actions(self) -> int:
        return sum(bool(t.info.get("invalid_action")) for t in self.turns)

    def to_dict(self) -> dict[str, Any]:
        return {
            "task_id": self.task_id,
            "group_id": self.group_id,
            "seed": self.seed,
            "turns": [t.to_dict() for t in self.turns],
            "outcome": float(self.outcome),
            "outcome_explicit": self.outcome_explicit,
            "terminated": self.terminated,
            "truncated": self.truncated,
            "truncation_reason": self.truncation_reason,
            "error": self.error,
            "failure": self.failure,
            "first_observation": self.first_observation,
            "gold_reply": self.gold_reply,
            "agent": self.agent,
            "match": self.match,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Episode:
        d = dict(d)
        d["turns"] = [Turn.from_dict(t) for t in d["turns"]]
        return cls(**d)


@dataclass
class Group:
    """The ``G`` episodes of one task from the same seed: the unit of group-relative baselines."""

    group_id: int
    task_id: str
    seed: int
    episodes: list[Episode] = field(default_factory=list)

    @property
    def outcomes(self) -> list[float]:
        return [e.outcome for e in self.episodes]

    def to_dict(self) -> dict[str, Any]:
        return {
            "group_id": self.group_id,
            "task_id": self.task_id,
            "seed": self.seed,
            "episodes": [e.to_dict() for e in self.episodes],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Group:
        d = dict(d)
        d["episodes"] = [Episode.from_dict(e) for e in d["episodes"]]
        return cls(**d)

    def to_json(self) -> str:
        return json.dumps(self.to_dict())

    @classmethod
    def from_json(cls, text: str) -> Group:
        return cls.from_dict(json.loads(text))
