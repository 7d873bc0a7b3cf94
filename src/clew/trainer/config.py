"""Run configuration: small frozen pydantic models per component, YAML + presets + dotted overrides.

``load_config("cfg.yaml", ["credit.name=grpo", "seed=3"])`` merges, in order: the preset named
by ``preset:`` (a YAML fragment in ``clew/presets``), the file, then the overrides. Every value is
validated before any work starts; errors name the field and the allowed values.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, ValidationError, model_validator

from clew import credit, objectives
from clew.credit import EstimatorSpec
from clew.plugins import load_plugins
from clew.policy.base import EngineSpec, engine_spec, engines
from clew.rollout import RolloutConfig
from clew.trainer.data_sections import (
    CurriculumConfig,
    DistillConfig,
    JudgingConfig,
    LeagueConfig,
    MonitorConfig,
    PreferenceConfig,
    ReplayConfig,
    RewardSourceConfig,
    check_league,
    check_rewards,
    check_roles,
)
from clew.trainer.overrides import (
    apply_override,
    deep_merge,
    preset_names,
    read_preset,
    without_foreign_params,
)
from clew.trainer.sections import (
    DEFAULT_TIS_CAP,
    TINY_LINEAR,
    ClusterConfig,
    CreditConfig,
    CriticConfig,
    EnvConfig,
    EvalConfig,
    FilterConfig,
    HarnessConfig,
    LoggingConfig,
    LoraConfig,
    ObjectiveConfig,
    PolicyConfig,
    SFTConfig,
    ShapingConfig,
    TrainConfig,
    _Frozen,
)

__all__ = [
    "DEFAULT_TIS_CAP",
    "TINY_LINEAR",
    "ClusterConfig",
    "CreditConfig",
    "CriticConfig",
    "CurriculumConfig",
    "DistillConfig",
    "EnvConfig",
    "EvalConfig",
    "FilterConfig",
    "HarnessConfig",
    "LoggingConfig",
    "LoraConfig",
    "MonitorConfig",
    "ObjectiveConfig",
    "PolicyConfig",
    "PreferenceConfig",
    "ReplayConfig",
    "RolloutConfig",
    "RunConfig",
    "SFTConfig",
    "ShapingConfig",
    "TrainConfig",
    "apply_override",
    "deep_merge",
    "dump_config",
    "load_config",
    "preset_names",
    "read_preset",
    "validate",
]


REPLAYABLE_CONTEXTS = ("full", "window")  # prompts rebuilt from the history alone (branched rollouts)


class RunConfig(_Frozen):
    """Everything a run needs; the composed config saved as ``config.yaml`` in the run directory."""

    plugins: tuple[str, ...] = Field(
        (), description="plug-in modules (dotted names or .py paths) loaded before the rest is validated: clew.plugins"
    )
    seed: int = 0
    iterations: int = Field(10, ge=0)
    tasks_per_iteration: int = Field(8, ge=1, description="groups per iteration")
    checkpoint_every: int = Field(1, ge=1)
    keep_checkpoints: int = Field(2, ge=1)
    threads: int = Field(2, ge=1, description="torch CPU threads")
    policy: PolicyConfig = PolicyConfig()
    env: EnvConfig = EnvConfig()
    rollout: RolloutConfig = RolloutConfig()
    credit: CreditConfig = CreditConfig()
    objective: ObjectiveConfig = ObjectiveConfig()
    critic: CriticConfig = CriticConfig()
    shaping: ShapingConfig = ShapingConfig()
    filters: FilterConfig = FilterConfig()
    distill: DistillConfig = DistillConfig()
    curriculum: CurriculumConfig = CurriculumConfig()
    preference: PreferenceConfig = PreferenceConfig()
    replay: ReplayConfig = ReplayConfig()
    monitor: MonitorConfig = MonitorConfig()
    rewards: tuple[RewardSourceConfig, ...] = Field(
        (), description="reward sources (clew.rewards): verifier, judge, rank, process (empty: the env's reward)"
    )
    judging: JudgingConfig = JudgingConfig()
    league: LeagueConfig = LeagueConfig()
    train: TrainConfig = TrainConfig()
    sft: SFTConfig = SFTConfig()
    eval: EvalConfig = EvalConfig()
    logging: LoggingConfig = LoggingConfig()
    roles: tuple[str, ...] = Field(
        (), description="a team: one policy per seat of a multi-seat game, by seat (clew.trainer.team); () one policy"
    )
    cluster: ClusterConfig | None = Field(None, description="run on Ray (None: one process)")
    harness: HarnessConfig | None = Field(None, description="train your own agent through the gateway (env unused)")

    @model_validator(mode="before")
    @classmethod
    def _tis_with_foreign_engine(cls, data: Any) -> Any:
        """TIS (cap 2.0, verl's default) is on unless set whenever rollouts and learner compute differently:
        another engine, a bfloat16 learner under float32 rollouts, or rollouts one update stale."""
        if not isinstance(data, dict):
            return data
        rollout, objective = data.get("rollout") or {}, data.get("objective") or {}
        train = data.get("train") or {}
        foreign = isinstance(rollout, dict) and not _shares_weights(rollout.get("engine", "hf"))
        foreign |= isinstance(train, dict) and train.get("dtype", "float32") != "float32"
        foreign |= isinstance(rollout, dict) and bool(rollout.get("max_staleness", 0))  # off-policy by design
        if foreign and isinstance(objective, dict) and "tis_cap" not in objective:
            return {**data, "objective": {**objective, "tis_cap": DEFAULT_TIS_CAP}}
        return data

    @model_validator(mode="before")
    @classmethod
    def _sum_constant_from_budget(cls, data: Any) -> Any:
        """``seq_sum_const`` without a constant divides by the per-action token budget, Dr.GRPO's L_max
        (arXiv 2503.20783): ``rollout.max_new_tokens``, so the two cannot drift apart."""
        objective = data.get("objective") if isinstance(data, dict) else None
        if not isinstance(objective, dict) or objective.get("aggregation") != "seq_sum_const":
            return data
        if objective.get("aggregation_const") is not None:
            return data
        rollout = data.get("rollout") or {}
        budget = rollout.get("max_new_tokens") if isinstance(rollout, dict) else rollout.max_new_tokens
        budget = budget or RolloutConfig.model_fields["max_new_tokens"].default
        return {**data, "objective": {**objective, "aggregation_const": float(budget)}}

    @model_validator(mode="before")
    @classmethod
    def _load_plugins(cls, data: Any) -> Any:
        """Import ``plugins`` first, so every other field may name their entries. Pydantic runs "before" model
        validators last-defined first: this one stays the last defined."""
        if isinstance(data, dict):
            load_plugins(data.get("plugins") or ())
        return data

    @model_validator(mode="after")
    def _consistent(self) -> RunConfig:
        self._engine_serves()
        check_rewards(self.rewards, self.rollout.group_size)
        check_league(self.league, self.env.kwargs, "harness" if self.harness else "cluster" if self.cluster else None)
        check_roles(self.roles, {
            "league": self.league.enabled, "harness": self.harness is not None, "cluster": self.cluster is not None,
            "rollout.max_staleness": self.rollout.max_staleness > 0,
            "rollout.branch_roots": self.rollout.branch_roots > 0,
            "preference": self.preference.loss is not None or self.preference.data is not None,
        })  # fmt: skip
        self._harness_served()
        self._staleness_served()
        spec = credit.get(self.credit.name)
        if spec.needs_group and self.rollout.group_size < 2:
            raise ValueError(
                f"rollout.group_size {self.rollout.group_size} cannot form a group-relative baseline for "
                f"credit.name={self.credit.name}; use >= 2 or credit.name=reinforce"
            )
        if spec.needs_reference(self.credit.params) and self.cluster is not None:
            raise ValueError(
                f"credit.name={self.credit.name} with KL in its rewards scores every turn with the reference in the "
                "driver, which a cluster run (learner ranks of their own) does not do yet; drop cluster or set "
                f"credit.params.{spec.reference_param}=0"
            )
        self._critic_served(spec)
        self._down_sampling_served()
        self._branching_served()
        if self.preference.loss is not None and (self.cluster is not None or self.harness is not None):
            raise ValueError("preference.loss trains in the driver's learner on one process's rollouts or on a "
                             "stored run; drop cluster/harness")  # fmt: skip
        if self.distill.teacher is not None and self.cluster is not None:
            raise ValueError("distill.teacher scores the rollouts in the driver, which a cluster run (learner ranks "
                             "of their own) does not do yet; drop cluster or distill.teacher")  # fmt: skip
        if spec.needs_greedy_baseline and self.harness is not None:
            raise ValueError(
                f"credit.name={self.credit.name} plays each task once more greedily through the env; a harness run "
                "has no env to replay: pick an estimator without it (e.g. grpo)"
            )
        self._branches_served(spec)
        self._segments_served(spec)
        if spec.scales_clip(self.credit.params) and "clip_scale" not in objectives.get(self.objective.name).params:
            raise ValueError(
                f"credit.name={self.credit.name} sets a clip range per turn (credit.params.{spec.clip_scale_param}), "
                f"which objective.name={self.objective.name} has no per-token clip for; use ppo_clip or set "
                f"credit.params.{spec.clip_scale_param}=0"
            )
        if spec.scores_with_policy and (self.harness is not None or self.cluster is not None):
            raise ValueError(
                f"credit.name={self.credit.name} scores extra spans with the policy in the driver before credit (the "
                "gold answer, a counterfactual observation, the group's outcome modes): a harness run (its prompts "
                "are not clew's framing) or a cluster run (learner ranks of their own) does not do that yet; drop "
                "harness/cluster or pick an estimator without it (e.g. grpo)"
            )
        if spec.needs_entropy and self.rollout.temperature == 0:
            raise ValueError(
                f"credit.name={self.credit.name} needs the entropies of sampled tokens; set rollout.temperature > 0"
            )
        return self

    def _branching_served(self) -> None:
        """Branching rollouts replay a root episode's actions and rebuild its prompts (as SPO's branches do)."""
        if not self.rollout.branch_roots:
            return
        if self.harness is not None:
            raise ValueError("rollout.branch_roots replays episodes through the env; a harness run has none")
        if self.rollout.context.name not in REPLAYABLE_CONTEXTS:
            raise ValueError(
                f"rollout.branch_roots branches from replayed histories, which rollout.context="
                f"{self.rollout.context.name} cannot rebuild; use one of {list(REPLAYABLE_CONTEXTS)}"
            )

    def _down_sampling_served(self) -> None:
        samples, tokens = self.filters.d3s_samples, self.filters.d3s_tokens
        if samples is not None and max(samples) > self.rollout.group_size:
            raise ValueError(
                f"filters.d3s_samples={list(samples)} keeps more episodes per group than rollout.group_size="
                f"{self.rollout.group_size} samples"
            )
        if tokens is not None and self.cluster is not None:
            raise ValueError("filters.d3s_tokens scores every kept token's entropy with the policy in the driver, "
                             "which a cluster run (learner ranks of their own) does not do yet; drop cluster or "
                             "filters.d3s_tokens")  # fmt: skip

    def _segments_served(self, spec: EstimatorSpec) -> None:
        """Subgoal segments come from the ``plan`` context's ``<subgoal>`` blocks (which it keeps from the env)."""
        if spec.needs_segments and self.rollout.context.name != "plan":
            raise ValueError(
                f"credit.name={self.credit.name} reads subgoal segments from <subgoal> blocks, which only "
                f"rollout.context=plan asks for and strips before the env; got rollout.context="
                f"{self.rollout.context.name}"
            )

    def _branches_served(self, spec: EstimatorSpec) -> None:
        """Branched rollouts replay an episode's env actions and rebuild its prompts: an env and a context whose
        prompts follow from the history alone."""
        if not spec.needs_branch_values:
            return
        for name in ("cutpoint_interval", "rollouts"):
            if int(self.credit.params.get(name, spec.params.get(name, 1))) < 1:
                raise ValueError(f"credit.params.{name} must be >= 1, got {self.credit.params[name]}")
        if self.harness is not None:
            raise ValueError(f"credit.name={self.credit.name} branches rollouts by replaying the env; a harness run "
                             "has no env to replay: pick an estimator without it (e.g. grpo)")  # fmt: skip
        if self.rollout.context.name not in REPLAYABLE_CONTEXTS:
            raise ValueError(
                f"credit.name={self.credit.name} branches rollouts from replayed histories, which rollout.context="
                f"{self.rollout.context.name} cannot rebuild (its edits are the policy's own); use one of "
                f"{list(REPLAYABLE_CONTEXTS)}"
            )

    def _critic_served(self, spec: EstimatorSpec) -> None:
        has_critic = self.critic.value_coef > 0
        if spec.needs_values and not has_critic:
            raise ValueError(
                f"credit.name={self.credit.name} reads a value head; set critic.value_coef > 0 (TRL's vf_coef: 0.1)"
            )
        if has_critic and not spec.needs_values:
            readers = ", ".join(n for n, s in credit.available().items() if s.needs_values)
            raise ValueError(
                f"critic.value_coef={self.critic.value_coef} trains a value head that credit.name={self.credit.name} "
                f"never reads; set critic.value_coef=0 or use an estimator with values ({readers})"
            )
        if has_critic and (self.cluster is not None or self.harness is not None):
            raise ValueError("a critic (critic.value_coef > 0) runs in the driver's learner only: drop cluster/harness")

    def _harness_served(self) -> None:
        if self.harness is None:
            return
        if self.sft.enabled and self.harness.expert is None:
            raise ValueError("sft.enabled with a harness needs harness.expert (the demonstrations are the harness "
                             "run against it)")  # fmt: skip
        for field, used in (("cluster", self.cluster is not None),
                            ("rollout.max_staleness", self.rollout.max_staleness > 0),
                            ("rollout.top_p < 1", self.rollout.top_p < 1)):  # fmt: skip
            if used:
                raise ValueError(
                    f"harness runs do not support {field} yet (a harness has no scripted expert, runs in this "
                    "process, samples through the gateway at the rollout temperature)"
                )

    def _staleness_served(self) -> None:
        if self.replay.capacity > 0 and self.objective.tis_cap is None:
            raise ValueError(
                f"replay.capacity={self.replay.capacity} trains on episodes sampled by older weights; set "
                f"objective.tis_cap (e.g. {DEFAULT_TIS_CAP}) so truncated importance sampling corrects the mismatch"
            )
        if self.rollout.max_staleness == 0:
            return
        if self.objective.tis_cap is None:
            raise ValueError(
                f"rollout.max_staleness={self.rollout.max_staleness} samples with weights one update old; set "
                f"objective.tis_cap (e.g. {DEFAULT_TIS_CAP}) so truncated importance sampling corrects the mismatch"
            )

    def _engine_serves(self) -> None:
        engine = engine_spec(self.rollout.engine)
        if self.rollout.top_p < 1 and not engine.exact_under_top_p:
            exact = ", ".join(_engines_with(lambda e: e.exact_under_top_p))
            raise ValueError(
                f"rollout.top_p={self.rollout.top_p} with rollout.engine={self.rollout.engine}: that engine reports "
                "log-probs renormalised over the top-p nucleus, which the learner does not reproduce; use "
                f"rollout.top_p=1 or an engine that keeps them exact ({exact})"
            )
        if credit.get(self.credit.name).needs_entropy and not engine.reports_entropies:
            reporting = ", ".join(_engines_with(lambda e: e.reports_entropies))
            raise ValueError(
                f"credit.name={self.credit.name} needs per-token entropies, which rollout.engine={engine.name} does "
                f"not report; use one that does ({reporting})"
            )


def _shares_weights(engine: Any) -> bool:
    """Whether ``engine`` samples from the learner's own weights; an unknown name is left to the field's check."""
    return isinstance(engine, str) and engine in engines() and engine_spec(engine).shares_learner_weights


def _engines_with(capability: Callable[[EngineSpec], bool]) -> list[str]:
    return [name for name in engines() if capability(engine_spec(name))]


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Resolve preset + file + overrides into a validated ``RunConfig``."""
    tree: dict[str, Any] = yaml.safe_load(Path(path).read_text()) or {} if path else {}
    for item in overrides:
        tree = apply_override(tree, item)
    preset = tree.pop("preset", None)
    if preset:
        tree = deep_merge(without_foreign_params(read_preset(str(preset)), tree), tree)
    return validate(tree)


def validate(tree: dict[str, Any]) -> RunConfig:
    """Build a ``RunConfig``; turn pydantic's errors into one message naming each field."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()]
        raise ValueError("invalid config:\n  " + "\n  ".join(lines)) from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
