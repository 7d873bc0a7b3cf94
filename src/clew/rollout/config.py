"""``rollout``: how episodes are collected, and ``rollout.context``, the context strategy and its parameters."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from clew.policy.base import engine_spec, engines
from clew.rollout.context import CONTEXTS, ContextStrategy, make_context


class ContextConfig(BaseModel):
    """``rollout.context``: a registered strategy (``clew.rollout.context.CONTEXTS``) and its parameters."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str = Field("full", description=f"context strategy: {', '.join(CONTEXTS.available())}")
    params: dict[str, Any] = Field(default_factory=dict, description="the strategy's parameters")

    @model_validator(mode="after")
    def _known(self) -> ContextConfig:
        make_context(self.name, self.params)  # unknown names, parameters and bad values fail here, naming them
        return self

    def make(self) -> ContextStrategy:
        return make_context(self.name, self.params)


class RolloutConfig(BaseModel):
    """How episodes are collected."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_validator(mode="before")
    @classmethod
    def _context_shorthand(cls, data: Any) -> Any:
        """``context: window`` means ``{name: window}``; runs from before the registry wrote ``window_turns``."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        turns = data.pop("window_turns", None)
        if isinstance(data.get("context"), str):
            data["context"] = {"name": data["context"]}
        if turns is not None and isinstance(data.get("context"), dict) and data["context"].get("name") == "window":
            data["context"] = {**data["context"], "params": {"turns": turns, **data["context"].get("params", {})}}
        return data

    group_size: int = Field(8, ge=1, description="episodes per task, all from the task's seed")
    max_turns: int = Field(64, ge=1, description="turn budget per episode")
    max_new_tokens: int = Field(16, ge=1, description="token budget per action")
    max_prompt_tokens: int = Field(4096, ge=1, description="longest prompt a turn may have")
    temperature: float = Field(1.0, ge=0.0, description="sampling temperature (0 = greedy)")
    top_p: float = Field(1.0, gt=0.0, le=1.0, description="nucleus sampling mass")
    context: ContextConfig = Field(
        default_factory=ContextConfig, description="how prompts are built from the episode: {name, params}"
    )
    env_step_timeout_s: float | None = Field(
        60.0,
        gt=0,
        description="seconds an env step may take, in threads, worker processes (env_processes) and on env hosts "
        "alike; past it the step is abandoned (its worker killed) and the episode ends as a policy failure, "
        "penalised like an invalid action (an action can hang an env). null: no limit",
    )
    env_workers: int = Field(4, ge=1, description="threads that step envs")
    env_processes: bool = Field(
        False,
        description="run each episode's env in its own worker process (JVM, slow or crash-prone envs): a crashed or "
        "hung worker is killed and its episode recorded as an error (a policy failure when it died in a step, "
        "an infra one, left out of credit and baselines, otherwise)",
    )
    batch_window_s: float | None = Field(
        None,
        ge=0,
        description="engines that decode in waves (hf): how long to wait for env steps in flight so that their "
        "next requests share one batch. None: wait for all of them (the batches are then those of a lock-step "
        "loop, so runs repeat bit for bit); a few ms lets fast episodes pass a slow env. Continuous-batching "
        "engines (vllm) never wait",
    )
    branch_roots: int = Field(
        0, ge=0, description="branching rollouts: episodes per group that k continuations branch from, at one turn "
        "each (0: off); every branch point's continuations form a group of their own"
    )  # fmt: skip
    branch_k: int = Field(4, ge=2, description="continuations per branch point (its group's size)")
    branch_at: Literal["uniform", "entropy"] = Field(
        "uniform", description="the branch turn: uniform over the episode's turns after the first, or the one whose "
        "tokens had the highest mean entropy (LATR's branching where the policy is least sure)"
    )  # fmt: skip
    engine: str = Field("hf", description=f"rollout engine, a registered name: {', '.join(engines())}")
    engine_tolerance: float = Field(
        1e-3, gt=0, description="max |engine - learner| log-prob on the parity probe after each sync"
    )
    parity_probe_every: int | None = Field(
        None,
        ge=1,
        description="run the parity probe after every N-th weight sync (the first sync always). None: every 10th "
        "sync for an engine that receives weights (vllm, any engine on a cluster), and at once whenever the last "
        "update saw its tokens' learner and engine log-probs differ by more than engine_tolerance; only the first "
        "for the in-process hf engine, which samples from the learner's own tensors (nothing can arrive stale)",
    )
    parity_probe_tokens: int = Field(
        8,
        ge=1,
        description="tokens sampled per probe prompt (at most rollout.max_new_tokens): a weight that did not arrive "
        "changes every token's log-prob, so a few decode steps check a sync as well as many",
    )
    engine_params: dict[str, Any] = Field(
        default_factory=dict, description="engine constructor options, e.g. {kv_cache_gib: 2} for vllm"
    )
    max_staleness: int = Field(
        0,
        ge=0,
        description="updates the weights that sampled a batch may lag the learner's (0: synchronous). With >= 1 the "
        "next iteration's rollout runs while the learner updates, one update behind (on a cluster the learner "
        "ranks update; in one process the update runs in a thread and the hf engine samples from its own copy of "
        "the weights). clew overlaps one rollout at most, so 2 or more act as 1; TIS (objective.tis_cap) corrects "
        "the mismatch",
    )

    @field_validator("engine")
    @classmethod
    def _registered_engine(cls, name: str) -> str:
        engine_spec(name)  # an unknown name fails listing the registered ones (plug-ins included)
        return name
