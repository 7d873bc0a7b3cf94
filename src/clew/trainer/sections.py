"""The run config's sections: one small frozen pydantic model per component (``clew.trainer.config`` composes
them into ``RunConfig``). Every value is validated at construction; errors name the field and the allowed
values."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clew import credit, objectives
from clew.envs.registry import resolve
from clew.gateway.harness import entry
from clew.tensors import Aggregation, Weighting

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


class HarnessConfig(_Frozen):
    """``harness``: your own agent trained through the gateway (``clew.gateway.harness``) instead of an env.

    ``run`` names ``async def run(task, client) -> reward`` and ``tasks`` names ``tasks(seed) -> task``, both as
    ``module:name`` (a plug-in's, or any importable module); held-out tasks are the seeds from 1,000,000 on, as
    for envs. The run's ``rollout.temperature`` overrides the client's (the learner scores at it)."""

    run: str = Field(description="module:function or file.py:function, async def run(task, client) -> reward")
    tasks: str = Field(description="module:function or file.py:function, tasks(seed) -> a task for run")
    expert: str | None = Field(
        None,
        description="module:function or file.py:function, expert(prompt_text) -> reply: SFT demonstrations "
        "(sft.enabled) are the harness run against it, recorded by the gateway (clew.gateway.expert)",
    )
    timeout_s: float = Field(300.0, gt=0, description="an episode running longer is a recorded policy failure")
    concurrency: int = Field(64, ge=1, description="episodes running at once")

    @field_validator("run", "tasks", "expert")
    @classmethod
    def _imports(cls, spec: str | None) -> str | None:
        """``module:name`` or ``file.py:name`` that imports and is callable, or a clear error naming it."""
        if spec is not None:
            entry(spec, "harness entry")
        return spec


class EnvConfig(_Frozen):
    """The task distribution: an env id and its constructor kwargs."""

    id: str = Field("keydoor-v0", description="registered env id or module:Class")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="env constructor kwargs")
    train_seeds: int | None = Field(
        None, ge=1, le=500_000, description="training tasks drawn from seeds 0..N-1, a fixed task set as a "
        "dataset's (None: a fresh seed per task); held-out evaluation seeds stay apart"
    )  # fmt: skip

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
    aggregation: Aggregation = Field(
        "seq_mean_token_mean",
        description="how token losses become one number; the default weighs every episode equally (with "
        "weighting=episode), token_mean gives long episodes more weight on shared tokens such as end-of-turn",
    )
    weighting: Weighting = Field(
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


class CriticConfig(_Frozen):
    """A value head on the policy's final hidden state, for estimators that read values (``credit.name=gae``: PPO).

    The head is a linear layer trained with the policy in the same optimizer step (its loss flows into the shared
    backbone, or LoRA adapters); it is saved with each checkpoint (``value_head.pt``), not exported with the policy.
    """

    value_coef: float = Field(
        0.0, ge=0, description="weight of the value loss (0: no critic; > 0 puts a value head on the policy)"
    )
    value_clip: float | None = Field(
        0.2, gt=0, description="clip the new values within this distance of the old ones in the loss (None: off)"
    )
    lr: float | None = Field(None, gt=0, description="the value head's learning rate (None: train.lr)")
    warmup_steps: int = Field(
        0, ge=0, description="first optimizer steps that fit only the value head (policy loss off, backbone frozen)"
    )


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

    turn_cost: float = Field(0.0, ge=0, description="charged to every env action (a cost per step)")
    tool_call_cost: float = Field(0.0, ge=0, description="charged to every tool call (a turn with info['tool_call'])")
    token_cost: float = Field(0.0, ge=0, description="charged per action token (a cost per generated token)")
    turn_budget: int | None = Field(None, ge=1, description="env actions free of over_budget_cost (None: no budget)")
    over_budget_cost: float = Field(0.0, ge=0, description="charged to each env action past turn_budget")
    hapo_weight: float = Field(
        0.0, ge=0, description="HAPO's history-aware length reward (arXiv 2505.11225) at this weight, on each "
        "episode's last turn: its generated tokens against the shortest success of the same task so far (0: off)"
    )  # fmt: skip

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
    min_abs_advantage: float | None = Field(
        None, gt=0, description="LOOP's filter (0.01 in its code): leave out rows whose every action token has |A| "
        "below this (None: off)"
    )  # fmt: skip
    d3s_samples: tuple[int, int] | None = Field(
        None, description="D³S sample level: [N_init, N_final] episodes kept per group, those whose advantages vary "
        "most, N moving linearly over the run (None: off; the paper gives no values)"
    )  # fmt: skip
    d3s_tokens: tuple[float, float] | None = Field(
        None, description="D³S token level: [K_init, K_final] share of action tokens kept, the top by |A| * entropy "
        "(one extra no-grad forward per iteration; None: off; the paper gives no values)"
    )  # fmt: skip
    d3s_scope: Literal["group", "batch"] = Field(
        "group", description="D³S sample level within each group, or over the whole batch (N x groups)"
    )

    @model_validator(mode="after")
    def _d3s_ranges(self) -> FilterConfig:
        if self.d3s_samples is not None and min(self.d3s_samples) < 1:
            raise ValueError(f"filters.d3s_samples must be >= 1 episodes per group, got {list(self.d3s_samples)}")
        if self.d3s_tokens is not None and not all(0 < k <= 1 for k in self.d3s_tokens):
            raise ValueError(f"filters.d3s_tokens must be shares in (0, 1], got {list(self.d3s_tokens)}")
        return self


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
    microbatch_rows: int | None = Field(
        None,
        ge=1,
        description="rows per forward/backward, gradients accumulated (None: the whole batch at once); "
        "long prompts (a harness's tool schemas) need it to bound memory",
    )
    seed_offset: int = Field(500_000, ge=0, description="demo seeds start here (disjoint from RL and eval)")
    seat: int | None = Field(None, ge=0, description="train on one seat's demos only (a team's role; None: all)")


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
    env_kwargs: dict[str, Any] = Field(
        default_factory=dict,
        description="env kwargs for evaluation, over env.kwargs (a self-play run meets a fixed opponent: "
        "{opponent: random})",
    )


class LoggingConfig(_Frozen):
    """Experiment trackers beside ``metrics.jsonl``: metrics, config, eval tables and curves (clew.trainer.trackers)."""

    trackers: tuple[Literal["tensorboard", "wandb", "mlflow", "trackio"], ...] = Field(
        (), description="trackers to mirror the run to, each offline by default: tensorboard, wandb, mlflow, trackio"
    )
    project: str = Field("clew", min_length=1, description="the trackers' project (MLflow: experiment) name")
    run_name: str | None = Field(None, description="the run's name in the trackers (None: the run directory's name)")

    @field_validator("trackers")
    @classmethod
    def _once_each(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"logging.trackers names a tracker twice: {list(value)}")
        return value
