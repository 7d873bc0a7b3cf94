"""Config sections of what the update trains on beyond the rollout and its credit: the monitor, replay, preference
objectives, curricula, distillation (``RunConfig`` composes them with ``clew.trainer.sections``)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from clew.trainer.sections import _Frozen

MONITOR_DETECTORS = ("length_drift", "repetition", "zero_variance", "invalid_rise", "entropy_collapse",
                     "reward_without_heldout", "source_disagreement", "judge_failures", "turn_drift",
                     "guard_stall")  # fmt: skip


class MonitorConfig(_Frozen):
    """The reward-hacking and degeneracy monitor (``clew.trainer.monitor``): thresholds of its detectors."""

    enabled: bool = Field(True, description="run the detectors every iteration (monitor/* metrics)")
    window: int = Field(5, ge=1, description="iterations per window: the last window against the first")
    length_drift: float = Field(1.0, gt=0, description="tokens per env action grew by more than this share")
    repetition: float = Field(0.3, gt=0, le=1, description="repeated word 3-grams within actions above this share")
    zero_variance: float = Field(0.95, gt=0, le=1, description="groups with a single outcome above this share")
    invalid_rise: float = Field(0.2, gt=0, description="the invalid-action rate rose by more than this")
    entropy_collapse: float = Field(0.1, gt=0, lt=1, description="entropy fell below this share of its start")
    reward_without_heldout: float = Field(
        0.2, gt=0, description="training success rose by more than this while held-out success did not rise"
    )
    source_disagreement: float = Field(
        0.2, gt=0, le=1, description="the share of episodes where a judge and the verifier disagree rose by more"
    )
    judge_failures: float = Field(0.1, gt=0, le=1, description="failed judgements above this share in the last window")
    turn_drift: float = Field(
        0.5, gt=0, description="turns per episode grew by more than this share while training success did not rise"
    )
    guard_stall: float = Field(
        0.9, gt=0, le=1, description="the step guard rejected more than this share of the last window's steps"
    )
    stop_on: tuple[str, ...] = Field((), description=f"detectors that stop the run: {', '.join(MONITOR_DETECTORS)}")

    @field_validator("stop_on")
    @classmethod
    def _known(cls, names: tuple[str, ...]) -> tuple[str, ...]:
        unknown = [n for n in names if n not in MONITOR_DETECTORS]
        if unknown:
            raise ValueError(
                f"monitor.stop_on: unknown detectors {unknown}; the detectors are {list(MONITOR_DETECTORS)}"
            )
        return names


class ReplayConfig(_Frozen):
    """Experience replay of the run's successful episodes (``clew.trainer.replay``); off with capacity 0."""

    capacity: int = Field(0, ge=0, description="successful episodes kept, newest first out last (0: off)")
    mode: Literal["arpo", "sil"] = Field(
        "sil", description="arpo: a stored success of the task joins each all-failure group; sil: stored successes "
        "join each update with advantage max(R - batch mean, 0)"
    )  # fmt: skip
    per_iteration: int = Field(4, ge=1, description="sil: stored episodes replayed per update")
    per_task: int = Field(8, ge=1, description="arpo: a task's newest stored successes drawn from (ARPO's 8)")


class PreferenceConfig(_Frozen):
    """Trajectory preference training (``clew.trainer.preference``): DPO on each group's (better, worse) episode pairs
    or KTO on its successes and failures, instead of the policy-gradient update. Off without a loss."""

    loss: Literal["dpo", "kto"] | None = Field(None, description="dpo | kto (None: policy-gradient RL)")
    data: str | None = Field(
        None, description="offline: a run directory whose stored episodes are the data (iterations = passes over "
        "them); None: online, on each iteration's rollouts"
    )  # fmt: skip
    beta: float = Field(0.1, gt=0, description="the implicit reward's scale (DPO's and KTO's beta)")
    groups_per_step: int = Field(8, ge=1, description="groups (tasks) per optimizer step")
    desirable_weight: float = Field(1.0, gt=0, description="KTO's lambda_D")
    undesirable_weight: float = Field(1.0, gt=0, description="KTO's lambda_U")

    @model_validator(mode="after")
    def _data(self) -> PreferenceConfig:
        if self.data is not None and self.loss is None:
            raise ValueError("preference.data trains on a run's episodes with a preference loss: set preference.loss "
                             "(dpo or kto)")  # fmt: skip
        if self.data is not None and not (Path(self.data) / "trajectories").is_dir():
            raise ValueError(f"preference.data={self.data} is not a clew run directory with stored trajectories")
        return self


class CurriculumConfig(_Frozen):
    """A difficulty curriculum over one env keyword (``clew.trainer.curriculum``); off without a key."""

    key: str | None = Field(None, description="the env keyword the levels set for training tasks (None: off)")
    levels: tuple[Any, ...] = Field((), description="its values, easiest first; held-out evaluation keeps env.kwargs")
    rule: Literal["schedule", "success"] = Field(
        "success", description="schedule: levels at fixed iterations (curriculum.at, else an even split); success: "
        "up a level once the training success of its last `window` iterations averages advance_at"
    )  # fmt: skip
    at: tuple[int, ...] | None = Field(None, description="schedule: the iteration each level after the first starts")
    advance_at: float = Field(0.7, gt=0, le=1, description="success: the mean training success that moves up a level")
    window: int = Field(2, ge=1, description="success: iterations averaged")
    replay_share: float = Field(0.0, ge=0, lt=1, description="share of tasks drawn from an easier level")

    @model_validator(mode="after")
    def _levels(self) -> CurriculumConfig:
        if self.key is None and self.levels:
            raise ValueError("curriculum.levels needs curriculum.key, the env keyword they set")
        if self.key is not None and len(self.levels) < 2:
            raise ValueError(f"curriculum.key={self.key} needs two or more curriculum.levels, easiest first")
        if self.at is not None and (len(self.at) != len(self.levels) - 1 or list(self.at) != sorted(set(self.at))):
            raise ValueError(
                f"curriculum.at={list(self.at)} must give, in increasing order, the start iteration of each level "
                f"after the first ({len(self.levels) - 1} for {len(self.levels)} levels)"
            )
        return self


class DistillConfig(_Frozen):
    """On-policy distillation (``clew.trainer.distill``): a teacher with the student's tokenizer scores the student's
    sampled tokens; its reverse KL enters the advantages or the loss. Off without a teacher."""

    teacher: str | None = Field(
        None, description="a model name or directory, or a clew run directory (its last checkpoint), sharing the "
        "student's tokenizer (None: no distillation)"
    )  # fmt: skip
    coef: float = Field(1.0, gt=0, description="weight of the reverse KL term")
    mode: Literal["advantage", "loss"] = Field(
        "advantage", description="advantage: A_t -= coef (log pi - log pi_teacher) on every sampled token; loss: coef "
        "* KL estimate beside the policy loss"
    )  # fmt: skip
    estimator: Literal["k1", "k2", "k3"] = Field(
        "k2", description="the loss mode's per-token KL estimate (k2: the reverse KL's on-policy gradient)"
    )
    gate: float | None = Field(
        None, description="KEPO's quality gate: only episodes whose outcome reaches this are distilled (None: all)"
    )


class RewardSourceConfig(_Frozen):
    """One reward source (``clew.rewards.sources``): ``name`` (its kind), ``weight`` and ``params``."""

    name: Literal["verifier", "judge", "rank", "process"] = Field(
        ..., description="verifier (the env's reward) | judge (a rubric score per episode) | rank (the group scored "
        "together) | process (a score per env step, as step rewards)"
    )  # fmt: skip
    weight: float = Field(1.0, description="its score's weight in the outcome (process: in the step rewards)")
    label: str | None = Field(None, description="its name in logs and info (default: name; unique)")
    params: dict[str, Any] = Field(default_factory=dict, description="the source's params (clew.rewards.sources)")

    @model_validator(mode="after")
    def _params_known(self) -> RewardSourceConfig:
        from clew.rewards.sources import parse_params

        try:
            parse_params(self.name, self.params)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"rewards[{self.label or self.name}].params: {exc}") from None
        return self

    @property
    def parsed(self) -> Any:
        from clew.rewards.sources import parse_params

        return parse_params(self.name, self.params)


class JudgingConfig(_Frozen):
    """How judge sources run: their services' threads, deadlines, cache and sampling, and the success verdict of a
    task whose env gives none."""

    concurrency: int = Field(4, ge=1, description="judgements in flight per judge (a local engine batches instead)")
    timeout_s: float = Field(300.0, gt=0, description="a judgement not done this long after submission failed (infra)")
    cache_entries: int = Field(100_000, ge=0, description="judgements kept by content (least recently used go first)")
    temperature: float = Field(0.0, ge=0, description="the judge's sampling temperature (0: greedy)")
    retry_temperature: float = Field(0.7, gt=0, description="the one retry of an unparsable reply samples at this")
    on_eval: bool = Field(True, description="held-out episodes are scored by the reward sources too (eval/rewards/*)")
    success_threshold: float | None = Field(
        None, description="an episode whose env gives no success verdict succeeds when its outcome reaches this"
    )


def check_rewards(sources: tuple[RewardSourceConfig, ...], group_size: int) -> None:
    """Labels unique, at most one verifier, a ranking's group within its letters."""
    labels = [s.label or s.name for s in sources]
    twice = sorted({x for x in labels if labels.count(x) > 1})
    if twice:
        raise ValueError(f"rewards: labels {twice} appear twice; give each source its own label")
    if sum(s.name == "verifier" for s in sources) > 1:
        raise ValueError("rewards: at most one verifier source (the env has one reward)")
    if any(s.name == "rank" for s in sources) and group_size > 26:
        raise ValueError(f"rewards: a rank source compares at most 26 episodes; rollout.group_size is {group_size}")


class LeagueConfig(_Frozen):
    """An opponent league for two-player games (``clew.trainer.league``): the policy meets itself (both seats learn)
    and a pool of its past snapshots (frozen, greedy), rated by Elo."""

    snapshot_every: int = Field(
        0, ge=0, description="iterations between snapshots of the policy into the pool (0: off)"
    )
    pool_size: int = Field(4, ge=1, description="snapshots the pool keeps (the oldest leaves)")
    self_share: float = Field(
        0.5, ge=0, le=1, description="share of tasks played against itself; the others meet a pool member"
    )
    pick: Literal["recency", "rating"] = Field(
        "recency", description="a pool member uniformly (recency: the pool holds the latest) or by rating (PFSP)"
    )
    elo_k: float = Field(16.0, gt=0, description="Elo's K: the rating change of a full surprise")
    initial_rating: float = Field(1000.0, description="the policy's rating before its first league game")

    @property
    def enabled(self) -> bool:
        return self.snapshot_every > 0


def check_league(league: LeagueConfig, env_kwargs: dict[str, Any], elsewhere: str | None) -> None:
    """A league seats its opponents through the env's ``opponent`` kwarg, in this process's env workers."""
    if not league.enabled:
        return
    if env_kwargs.get("opponent") != "self":
        raise ValueError(
            "league.snapshot_every > 0 needs a self-play env (env.kwargs.opponent: self, a two-player TextArena game): "
            f"the league sets each task's opponent; env.kwargs.opponent is {env_kwargs.get('opponent')!r}"
        )
    if elsewhere is not None:
        raise ValueError(f"league snapshots are loaded by this process's envs; drop {elsewhere} or league")


ROLE_NAME = re.compile(r"[A-Za-z0-9_-]{1,40}")


def check_roles(roles: tuple[str, ...], conflicts: dict[str, bool]) -> None:
    """A team names two or more roles, each a folder name, once; ``conflicts``: the settings a team cannot use yet."""
    if not roles:
        return
    if len(roles) < 2:
        raise ValueError(f"roles names one policy per seat: give two or more (one policy needs none): {list(roles)}")
    if bad := [r for r in roles if not ROLE_NAME.fullmatch(r)]:
        raise ValueError(f"roles are folder names (letters, digits, _ and -, up to 40): {bad}")
    if len(set(roles)) != len(roles):
        raise ValueError(f"roles names a role twice: {list(roles)}")
    if used := [name for name, on in conflicts.items() if on]:
        raise ValueError(f"roles (a team of policies) does not run with {', '.join(used)} yet")
