"""A harness run (``harness:`` in the config): the run's engine behind the gateway, episodes from your agent.

The engine, the learner, credit and the weight sync are the same as for an env run; only the rollout
differs: ``Harness.collect`` runs the agent ``rollout.group_size`` times per task against its own gateway
session, at the run's temperature, and returns the recorded groups. Held-out evaluation does the same on
the seeds from 1,000,000 on, at ``eval.temperature``. The parity probe uses the first training tasks'
opening prompts as the template renders them (the task as one user message).
"""

from __future__ import annotations

from typing import Any

from clew.gateway import Gateway, GatewayConfig
from clew.gateway.expert import ExpertEngine
from clew.gateway.harness import Harness, entry
from clew.gateway.render import Renderer
from clew.rollout import Task
from clew.trainer.config import HarnessConfig, RunConfig
from clew.trainer.sync import probe_seeds
from clew.types import Group


def load_harness(cfg: HarnessConfig) -> Harness:
    return Harness(cfg.run, cfg.tasks, cfg.timeout_s, cfg.concurrency)


def open_gateway(engine: Any, tokenizer: Any, cfg: RunConfig) -> Gateway:
    """The gateway on the run's engine: unknown sessions refused, calls capped at ``rollout.max_new_tokens``."""
    budget = cfg.rollout.max_new_tokens
    return Gateway(engine, tokenizer, GatewayConfig(max_tokens=budget, max_tokens_cap=budget, seed=cfg.seed))


def demonstrations(harness: Harness, tokenizer: Any, cfg: RunConfig) -> list[Group]:
    """``sft.episodes`` episodes of the harness against its expert (``harness.expert``), one per demo seed."""
    assert cfg.harness is not None and cfg.harness.expert is not None
    engine = ExpertEngine(entry(cfg.harness.expert, "harness expert"), tokenizer)
    tasks = [Task("harness", cfg.sft.seed_offset + i, {}) for i in range(cfg.sft.episodes)]
    with Gateway(engine, tokenizer, GatewayConfig(max_tokens=1 << 20, seed=cfg.seed)) as gateway:
        return harness.collect(gateway, tasks, 1, cfg.seed)


def probe_prompts(harness: Harness, tokenizer: Any, workers: int = 1) -> list[list[int]]:
    """Opening prompts of a few fixed tasks, as the parity probe's fixed inputs."""
    renderer = Renderer.of(tokenizer)
    return [renderer.chat([{"role": "user", "content": str(harness.tasks(seed))}]) for seed in probe_seeds(workers)]
