"""Actors choose actions for a batch of active episodes: a model policy or a scripted agent."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from clew.envs import Env
from clew.policy.hf import Completion, HFPolicy, SamplingParams


class Actor(Protocol):
    """One batched decision for every active episode (prompts and envs are aligned)."""

    def act(self, prompts: Sequence[list[int]], envs: Sequence[Env], seed: int) -> list[Completion]: ...


@dataclass
class PolicyActor:
    """Samples actions from a model; ids and log-probs are exactly the engine's."""

    policy: HFPolicy
    params: SamplingParams

    def act(self, prompts: Sequence[list[int]], envs: Sequence[Env], seed: int) -> list[Completion]:
        return self.policy.generate(prompts, self.params, seed)


@dataclass
class ScriptedActor:
    """The env's scripted expert, a uniformly random valid action, or an expert with noise.

    With ``noise > 0`` each action is replaced by a random valid one with that probability (an
    imperfect demonstrator for SFT warm starts). Action ids are the encoded text + eos (these
    are demonstrations, not samples, so their log-probs are recorded as 0).
    """

    kind: str = "expert"
    noise: float = 0.0
    tokenizer: Any = None

    def __post_init__(self) -> None:
        if self.kind not in ("expert", "random"):
            raise ValueError(f"scripted policy must be 'expert' or 'random', got {self.kind!r}")
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be in [0, 1], got {self.noise}")

    def act(self, prompts: Sequence[list[int]], envs: Sequence[Env], seed: int) -> list[Completion]:
        rng = random.Random(seed)
        return [self._one(env, rng) for env in envs]

    def _one(self, env: Env, rng: random.Random) -> Completion:
        if self.kind == "expert" and rng.random() >= self.noise:
            text = str(env.expert_action())  # type: ignore[attr-defined]
        else:
            text = str(rng.choice(env.valid_actions()))  # type: ignore[attr-defined]
        ids: list[int] = []
        if self.tokenizer is not None:
            ids = list(self.tokenizer.encode(text, add_special_tokens=False)) + [self.tokenizer.eos_token_id]
        return Completion(ids, [0.0] * len(ids), "stop", text)
