"""Run configuration: small frozen pydantic models per component, YAML + presets + dotted overrides.

``load_config("cfg.yaml", ["credit.name=grpo", "seed=3"])`` merges, in order: the preset named
by ``preset:`` (a YAML fragment in ``clew/presets``), the file, then the overrides. Every value is
validated before any work starts; errors name the field and the allowed values.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from clew import credit, objectives
from clew.envs.registry import resolve
from clew.plugins import load_plugins
from clew.policy.base import EngineSpec, engine_spec, engines
from clew.rollout import RolloutConfig

DEFAULT_TIS_CAP = 2.0


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


TINY_LINEAR = ("down_proj", "gate_proj", "k_proj", "lm_head", "o_proj", "q_proj", "up_proj", "v_proj")


class LoraConfig(_Frozen):
    """LoRA adapters through peft (arXiv 2106.09685): only they are trained; the base is the KL reference."""

    r: int = Field(8, ge=1, description="adapter rank")
    alpha: int = Field(16, ge=1, description="scale numerator: the delta is (alpha / r) * B @ A")
    dropout: float = Field(0.0, ge=0, lt=1, description="dropout on the adapter's input")
    target_modules: tuple[str, ...] | Literal["all-linear"] = Field(
        ("q_proj", "k_proj", "v_proj", "o_proj"),
        description="leaf names of the linear layers to adapt (checked against the model), or 'all-linear'",
    )


class PolicyConfig(_Frozen):
    """Which model to train."""

    model: str = Field(
        "tiny", description="'tiny' (built offline), a registered model name (`clew models`) or an HF model name/path"
    )
    hidden_size: int = Field(128, ge=8, description="tiny model width")
    num_layers: int = Field(4, ge=1, description="tiny model depth")
    num_heads: int = Field(4, ge=1, description="tiny model attention heads")
    intermediate_size: int = Field(384, ge=8, description="tiny model MLP width")
    init_seed: int = Field(0, description="tiny model initialisation seed")
    lora: LoraConfig | None = Field(None, description="train LoRA adapters instead of every weight (None: full)")

    @model_validator(mode="after")
    def _tiny_targets(self) -> PolicyConfig:
        """The tiny model's layers are known here; other models are checked when they load."""
        targets = self.lora.target_modules if self.lora else "all-linear"
        if self.model == "tiny" and targets != "all-linear":
            unknown = [t for t in targets if t not in TINY_LINEAR]
            if unknown or "lm_head" in targets:
                raise ValueError(
                    f"policy.lora.target_modules: {unknown or ['lm_head']} cannot be adapted on the tiny model "
                    f"(lm_head is tied to the embeddings); allowed: {[t for t in TINY_LINEAR if t != 'lm_head']}"
                )
        return self


class EnvConfig(_Frozen):
    """The task distribution: an env id and its constructor kwargs."""

    id: str = Field("keydoor-v0", description="registered env id or module:Class")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="env constructor kwargs")

    @field_validator("id")
    @classmethod
    def _known(cls, env_id: str) -> str:
        """An unknown id, a family without its package or a path that does not import fails here."""
        resolve(env_id)
        return env_id


class CreditConfig(_Frozen):
    """Advantage estimator by name (see ``clew.credit.available()``) and its parameters."""

    name: str = "grpo"
    params: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _known(self) -> CreditConfig:
        credit.check_params(self.name, self.params)
        return self


class ObjectiveConfig(_Frozen):
    """Policy loss, aggregation and regularisers."""

    name: str = "ppo_clip"
    params: dict[str, Any] = Field(default_factory=dict)
    aggregation: Literal["token_mean", "seq_mean_token_mean", "seq_mean_token_sum", "seq_sum_const"] = Field(
        "seq_mean_token_mean",
        description="how token losses become one number; the default weighs every episode equally (with "
        "weighting=episode), token_mean gives long episodes more weight on shared tokens such as end-of-turn",
    )
    weighting: Literal["episode", "segment", "turn", "row"] = Field(
        "episode",
        description="the unit of the sequence aggregations: episode (turns and context segments never become loss "
        "weights), segment (each context segment weighs alike), turn (each action), row (each training row)",
    )
    aggregation_const: float | None = Field(
        None, gt=0, description="constant for seq_sum_const (unset: rollout.max_new_tokens, Dr.GRPO's L_max)"
    )
    kl_coef: float = Field(0.0, ge=0, description="KL-in-loss coefficient (needs a reference model)")
    kl_estimator: Literal["k1", "k2", "k3"] = "k3"
    entropy_coef: float = Field(0.0, ge=0)
    tis_cap: float | None = Field(
        None,
        gt=0,
        description="truncated IS cap for rollout/trainer mismatch (None: off; 2.0 unless set when rollout.engine "
        "is not hf, train.dtype is bfloat16 or rollout.max_staleness > 0)",
    )

    @model_validator(mode="after")
    def _known(self) -> ObjectiveConfig:
        objectives.check_params(self.name, self.params)
        return self


class ShapingConfig(_Frozen):
    """Per-turn penalties (``Turn.penalty``; the env's rewards and outcomes are never changed). Credit charges
    them to the penalised turn's advantage after the estimator, or, with an estimator's
    ``penalty_placement: statistics`` (grpo, gigpo), inside its group statistics."""

    invalid_action_penalty: float = Field(0.0, ge=0, description="charged to turns flagged invalid")
    overlong_penalty: float = Field(0.0, ge=0, description="charged to an env action cut at max_new_tokens")
    overlong_soft: float = Field(
        0.0,
        ge=0,
        description="DAPO soft overlong punishment factor (arXiv 2503.14476, Eq. 13): an env action of |y| tokens "
        "is charged factor * clip((|y| - (L_max - L_cache)) / L_cache, 0, 1), L_max = rollout.max_new_tokens",
    )
    overlong_buffer: float = Field(
        0.0,
        ge=0,
        lt=1,
        description="DAPO's L_cache as a fraction of rollout.max_new_tokens (0.2 is DAPO's 4096 of 20480); "
        "0 turns the soft punishment off",
    )

    @model_validator(mode="after")
    def _soft_needs_buffer(self) -> ShapingConfig:
        if self.overlong_soft > 0 and self.overlong_buffer == 0:
            raise ValueError(
                f"shaping.overlong_soft={self.overlong_soft} needs shaping.overlong_buffer > 0 (DAPO's L_cache as a "
                "fraction of rollout.max_new_tokens, e.g. 0.2)"
            )
        return self


class FilterConfig(_Frozen):
    """Selection between credit and update."""

    drop_zero_variance_groups: bool = Field(False, description="DAPO dynamic sampling (with refill)")
    max_refill_rounds: int = Field(3, ge=0, description="extra rollout rounds to refill dropped groups")
    max_rows_per_iteration: int | None = Field(None, ge=1, description="cap on training rows (seeded subsample)")


class TrainConfig(_Frozen):
    """The learner."""

    lr: float = Field(3e-4, gt=0)
    warmup_steps: int = Field(0, ge=0, description="linear warm-up in optimizer steps")
    weight_decay: float = Field(0.0, ge=0)
    max_grad_norm: float = Field(1.0, gt=0)
    ppo_epochs: int = Field(1, ge=1)
    minibatch_rows: int = Field(256, ge=1, description="rows per optimizer step")
    microbatch_rows: int = Field(64, ge=1, description="rows per forward/backward (gradient accumulation)")
    merge_prefix: bool = Field(False, description="merge an episode's prefix-extending turns into one row")
    bucket_by_length: bool = Field(
        True, description="microbatch a minibatch's rows in length order (less padding; the same update)"
    )
    guard_max_kl: float | None = Field(
        0.05,
        gt=0,
        description="step guard: halve the lr of an optimizer step whose k3 KL on held-back probe rows exceeds "
        "this, and roll the step back after guard_backtracks halvings (None: off). The probe rows are not "
        "trained on (held back once per run), and each step snapshots the trained parameters (one copy of them)",
    )
    guard_probe_rows: int = Field(8, ge=1, description="rows held back to probe each step (at most a quarter)")
    guard_backtracks: int = Field(3, ge=0, description="learning-rate halvings tried before a step is rejected")
    dtype: Literal["float32", "bfloat16"] = Field(
        "float32",
        description="learner compute: bfloat16 runs forward/backward under CPU/CUDA autocast with float32 master "
        "weights and optimizer state (benchmarks/README.md, Memory, says why); rollouts stay float32",
    )
    gradient_checkpointing: bool = Field(False, description="recompute activations in backward (less memory)")


class SFTConfig(_Frozen):
    """Supervised warm start on scripted-expert episodes (cross-entropy on action tokens only)."""

    enabled: bool = False
    episodes: int = Field(256, ge=1)
    noise: float = Field(0.0, ge=0, le=1, description="fraction of deliberately random demo actions")
    epochs: int = Field(2, ge=1)
    lr: float = Field(1e-3, gt=0)
    batch_rows: int = Field(64, ge=1)
    seed_offset: int = Field(500_000, ge=0, description="demo seeds start here (disjoint from RL and eval)")


class ClusterConfig(_Frozen):
    """``cluster``: rollout engines, env hosts and data-parallel learner ranks as Ray actors (DESIGN.md
    section 6). Absent, the run is one process; present, the same config runs on Ray."""

    address: str = Field(
        "local",
        description="'local' starts a Ray instance of processes here (ended with the run); 'auto' joins the cluster "
        "`ray start --head` began on this machine; 'ray://host:port' or 'host:port' joins a remote one",
    )
    rollout_workers: int = Field(1, ge=1, description="rollout engine actors (each its own model copy)")
    env_workers: int = Field(0, ge=0, description="env host actors (0: envs step in the driver, as without cluster)")
    learners: int = Field(1, ge=1, description="data-parallel learner ranks (torch.distributed)")
    backend: Literal["gloo", "nccl"] = Field(
        "gloo", description="collectives: gloo (CPU learner ranks); nccl waits for GPU placement of learner ranks"
    )
    worker_threads: int = Field(1, ge=1, description="torch threads in each engine and learner actor")
    worker_cpus: float = Field(1.0, ge=0, description="logical CPUs Ray reserves for each engine and learner actor")
    max_restarts: int = Field(
        3,
        ge=0,
        description="restarts of a dead engine or env actor; past them an engine reopens once (fresh actors), then "
        "the run stops, and a run whose env hosts are all gone stops",
    )
    timeout_s: float = Field(600.0, gt=0, description="how long a learner rank waits for the others in a collective")

    @field_validator("backend")
    @classmethod
    def _backend(cls, value: str) -> str:
        if value == "nccl":
            raise ValueError(
                "cluster.backend=nccl needs learner ranks on GPUs, which clew does not place yet (learner ranks "
                "train on CPU); use cluster.backend=gloo"
            )
        return value

    @field_validator("address")
    @classmethod
    def _address(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if value in ("local", "auto") or value.startswith("ray://") or (sep and host and port.isdigit()):
            return value
        raise ValueError(f"cluster.address must be 'local', 'auto', 'ray://host:port' or 'host:port', got {value!r}")


class EvalConfig(_Frozen):
    """Periodic evaluation on held-out seeds."""

    every: int = Field(5, ge=0, description="iterations between evaluations (0 = none in between)")
    at_start: bool = Field(True, description="evaluate the starting (e.g. SFT) policy before RL")
    at_end: bool = Field(True, description="evaluate the final policy")
    episodes: int = Field(64, ge=1)
    temperature: float = Field(1.0, ge=0)


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
    shaping: ShapingConfig = ShapingConfig()
    filters: FilterConfig = FilterConfig()
    train: TrainConfig = TrainConfig()
    sft: SFTConfig = SFTConfig()
    eval: EvalConfig = EvalConfig()
    cluster: ClusterConfig | None = Field(None, description="run on Ray (None: one process)")

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
        if spec.needs_entropy and self.rollout.temperature == 0:
            raise ValueError(
                f"credit.name={self.credit.name} needs the entropies of sampled tokens; set rollout.temperature > 0"
            )
        return self

    def _staleness_served(self) -> None:
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


def preset_names() -> list[str]:
    folder = resources.files("clew") / "presets"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def read_preset(name: str) -> dict[str, Any]:
    path = resources.files("clew") / "presets" / f"{name}.yaml"
    if not path.is_file():
        raise ValueError(f"unknown preset {name!r}; available: {', '.join(preset_names())}")
    return yaml.safe_load(path.read_text()) or {}


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        out[key] = deep_merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


NAMED = (("credit",), ("objective",), ("rollout", "context"))  # {name, params} blocks


def apply_override(tree: dict[str, Any], item: str) -> dict[str, Any]:
    """``"credit.params.gamma=0.9"`` sets a nested key (value parsed as YAML).

    A named component (``credit``, ``objective``, ``rollout.context``) whose ``name`` changes loses its
    old ``params``, as with presets: one component's parameters never leak into another's.
    """
    key, sep, raw = item.partition("=")
    if not sep or not key:
        raise ValueError(f"override {item!r} must look like dotted.key=value")
    parts = key.split(".")
    value: Any = yaml.safe_load(raw)
    for part in reversed(parts):
        value = {part: value}
    for path in NAMED:
        old, new = _lookup(tree, path), _lookup(value, path)
        if (
            isinstance(old, dict)
            and isinstance(new, dict)
            and "name" in old
            and new.get("name", old["name"]) != old["name"]
        ):
            tree = _replace(tree, path, {k: v for k, v in old.items() if k != "params"})
    return deep_merge(tree, value)


def _lookup(tree: Any, path: Sequence[str]) -> Any:
    for part in path:
        tree = tree.get(part) if isinstance(tree, dict) else None
    return tree


def _replace(tree: dict[str, Any], path: Sequence[str], value: Any) -> dict[str, Any]:
    """A copy of ``tree`` with the block at ``path`` replaced by ``value``."""
    head, *rest = path
    return {**tree, head: _replace(tree[head], rest, value) if rest else value}


def load_config(path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()) -> RunConfig:
    """Resolve preset + file + overrides into a validated ``RunConfig``."""
    tree: dict[str, Any] = yaml.safe_load(Path(path).read_text()) or {} if path else {}
    for item in overrides:
        tree = apply_override(tree, item)
    preset = tree.pop("preset", None)
    if preset:
        tree = deep_merge(_without_foreign_params(read_preset(str(preset)), tree), tree)
    return validate(tree)


def _without_foreign_params(preset: dict[str, Any], user: dict[str, Any]) -> dict[str, Any]:
    """Drop a preset's ``credit``/``objective`` params when the user picks a different name there:
    ``preset=gigpo credit.name=grpo`` must not hand GiGPO's ``gamma`` to GRPO."""
    out = dict(preset)
    for section in ("credit", "objective"):
        mine, theirs = user.get(section) or {}, preset.get(section) or {}
        if "name" in mine and mine["name"] != theirs.get("name"):
            out[section] = {k: v for k, v in theirs.items() if k != "params"}
    return out


def validate(tree: dict[str, Any]) -> RunConfig:
    """Build a ``RunConfig``; turn pydantic's errors into one message naming each field."""
    try:
        return RunConfig.model_validate(tree)
    except ValidationError as exc:
        lines = [f"{'.'.join(str(p) for p in err['loc']) or 'config'}: {err['msg']}" for err in exc.errors()]
        raise ValueError("invalid config:\n  " + "\n  ".join(lines)) from None


def dump_config(cfg: RunConfig) -> str:
    return yaml.safe_dump(cfg.model_dump(mode="json"), sort_keys=False)
