"""The sync stage: the learner's weights go to the rollout engine, and a parity probe checks they arrived.

A sync that is silently incomplete (a tied output layer left stale, a weight the engine repacked,
a stale prefix cache) makes every later rollout off-policy without any error. So after each load
the engine samples a fixed small batch (fixed prompts, fixed seeds, the rollout temperature) and
the learner re-scores those tokens; the largest absolute log-prob difference is logged as
``engine/logprob_max_abs_diff`` and a value above ``rollout.engine_tolerance`` stops the run.

The probe costs a short generation and a re-score (10 % of a SmolLM2 step with vLLM when run at every
sync), so an engine that receives weights is probed at the first sync and every ``PROBE_EVERY``-th after
it (``rollout.parity_probe_every`` sets another cadence). In between, every update measures the same
gap for free on the tokens it trains on (the learner's log-probs at the synced weights against the
engine's, ``engine/train_logprob_max_abs_diff``); a gap above the tolerance makes the next sync probe.
A failure that only appears after some syncs (a cache that is not reset) also shows at the next cadenced
probe: its prompts are the same at every sync.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clew.envs import make as make_env
from clew.policy import Engine, EngineError, HFPolicy, SamplingParams, engine_spec, make_engine
from clew.policy.lora import is_lora, merge_into_base, merged_weights
from clew.rollout import Framing, RolloutConfig
from clew.rollout.context import FullContext, History

PROBE_EVERY = 10  # syncs between parity probes of an engine that receives weights (the first is always probed)
PROBE_SEEDS = tuple(range(900_000, 900_004))  # env seeds of the probe prompts (outside train/SFT/eval)


def probe_seeds(workers: int = 1) -> list[int]:
    """At least 4 probe seeds, and one per engine worker (a remote engine sends prompt i to worker i mod N)."""
    return list(range(PROBE_SEEDS[0], PROBE_SEEDS[0] + max(len(PROBE_SEEDS), workers)))


def open_engine(rollout: RolloutConfig, policy: HFPolicy, source: str | Path) -> Engine:
    """The configured engine on the learner's model: one that shares the learner's weights (``hf``) samples from
    the learner's model in-process (or, sampling while the learner updates, ``rollout.max_staleness >= 1``,
    from its own plain copy); others load ``source``."""
    name, params = rollout.engine, rollout.engine_params
    if not engine_spec(name).shares_learner_weights:
        return make_engine(name, source, **params)
    model = policy.model
    if rollout.max_staleness:
        model = copy.deepcopy(model)
        model = (merge_into_base(model) if is_lora(model) else model).eval()
    return make_engine(name, model, tokenizer=policy.tokenizer, **params)


def probe_prompts(env_id: str, env_kwargs: dict[str, Any], framing: Framing, workers: int = 1) -> list[list[int]]:
    """First-turn prompts of a few fixed tasks (one per engine worker at least): the same probe every iteration."""
    prompts = []
    for seed in probe_seeds(workers):
        env = make_env(env_id, **env_kwargs)
        prompts.append(FullContext().build(History([env.reset(seed)]), framing))
    return prompts


@dataclass
class EngineLink:
    """Moves weights learner -> engine and verifies them."""

    engine: Engine
    policy: HFPolicy
    prompts: list[list[int]]
    rollout: RolloutConfig
    shared: bool = True  # an in-process hf engine runs on the learner's own model (a remote one never does)
    syncs: int = 0  # syncs so far: rollout.parity_probe_every counts them (the first is always probed)

    def sync(self, iteration: int, learner_gap: float | None = None) -> dict[str, float]:
        """Load the learner's weights (every tensor of its state dict) into the engine, then probe.

        The ``hf`` engine shares the learner's model (LoRA adapters included): its own tensors, nothing to
        copy. Another engine gets plain weights; a LoRA policy's are merged (``clew.policy.lora``).
        ``learner_gap``: the last update's max |learner - engine| log-prob on the tokens it trained on
        (``engine/train_logprob_max_abs_diff``, None when they were sampled off-policy); above
        ``rollout.engine_tolerance`` it makes an engine that receives weights probe now, whatever the cadence."""
        start = time.perf_counter()
        model = self.policy.model
        shared = self.shared and engine_spec(self.rollout.engine).shares_learner_weights
        self.engine.load_weights(merged_weights(model) if is_lora(model) and not shared else model.state_dict().items())
        sync_s = time.perf_counter() - start
        every = self.rollout.parity_probe_every or (1 << 62 if shared else PROBE_EVERY)
        suspect = not shared and learner_gap is not None and learner_gap > self.rollout.engine_tolerance
        self.syncs += 1
        if (self.syncs - 1) % every and not suspect:
            return {"time/sync_s": sync_s, "time/learner/sync": sync_s}
        start = time.perf_counter()
        gap = self.parity_gap()
        probe_s = time.perf_counter() - start
        if gap > self.rollout.engine_tolerance:
            raise EngineError(
                f"parity probe after the weight sync of iteration {iteration}: the {self.rollout.engine} engine's "
                f"log-probs differ from the learner's by up to {gap:.3g} > rollout.engine_tolerance="
                f"{self.rollout.engine_tolerance:g}; the engine is not sampling from the weights being trained "
                "(an incomplete sync). The run stopped; its last checkpoint is intact (--resume)"
            )
        return {
            "time/sync_s": sync_s, "time/learner/sync": sync_s, "time/learner/probe": probe_s,
            "engine/logprob_max_abs_diff": gap,
        }  # fmt: skip

    def parity_gap(self) -> float:
        """max |log-prob(engine) - log-prob(learner)| over the probe batch's sampled tokens."""
        temperature = self.rollout.temperature if self.rollout.temperature > 0 else 1.0
        tokens = min(self.rollout.max_new_tokens, self.rollout.parity_probe_tokens)
        params = SamplingParams(temperature=temperature, max_new_tokens=tokens)
        outs = self.engine.generate(self.prompts, params, probe_seeds(len(self.prompts)))
        scored = self.policy.logprobs([(p, o.token_ids) for p, o in zip(self.prompts, outs)], temperature)
        gaps = [abs(a - b) for out, row in zip(outs, scored) for a, b in zip(out.logprobs, row)]
        return max(gaps, default=0.0)
