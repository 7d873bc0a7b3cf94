"""Cost-aware shaping: what a turn costs (a step, a tool call, its tokens, a step past the budget) and HAPO's
history-aware length reward. Everything lands in ``Turn.penalty`` (a negative penalty is a bonus); the env's rewards
and outcomes stay as the env gave them, and the estimator's ``penalty_placement`` decides where credit charges it.

HAPO: Huang, Zhang, Cardie, "HAPO: Training Language Models to Reason Concisely via History-Aware Policy
Optimization" (arXiv 2505.11225), the cosine length reward of its code (``compute_len_reward``, per
``shared/reference/objectives.md`` section 16). Per task, h is the fewest tokens of a correct answer seen so far
(updated after the batch is scored, "to avoid leakage"); with c = cos((|y| / h) pi / 2) (-1 from |y| >= 2h), a correct
answer earns max(-0.7, c), an incorrect one min(0, c), and 0 while h is unknown. For an agent, |y| is every token the
policy generated in the episode (all its turns) and "correct" is the episode's success; the task is the env and seed,
so h builds up only where training tasks recur (``env.train_seeds``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from clew.store.run import atomic_write_text
from clew.trainer.sections import ShapingConfig
from clew.types import Episode, Group, Turn

HAPO_FILE = "hapo.json"
HAPO_FLOOR = -0.7  # a correct answer's floor: any correct answer (>= 0.3 with the outcome) beats any incorrect one


def turn_cost(turn: Turn, env_step: int, cfg: ShapingConfig) -> float:
    """The cost of an env action that is the episode's ``env_step``-th (from 0): the step, a tool call, its tokens,
    and the over-budget cost past ``turn_budget`` steps."""
    cost = cfg.turn_cost + cfg.token_cost * len(turn.action_ids)
    cost += cfg.tool_call_cost if turn.info.get("tool_call") else 0.0
    over = cfg.turn_budget is not None and env_step >= cfg.turn_budget
    return cost + (cfg.over_budget_cost if over else 0.0)


def hapo_length_reward(length: int, shortest: int | None, correct: bool) -> float:
    """HAPO's cosine length reward of an answer of ``length`` tokens against the task's ``shortest`` correct one."""
    if shortest is None:
        return 0.0
    c = math.cos(length / shortest * math.pi / 2) if length < 2 * shortest else -1.0
    return max(HAPO_FLOOR, c) if correct else min(0.0, c)


def generated_tokens(episode: Episode) -> int:
    return sum(len(t.action_ids) for t in episode.turns)


@dataclass
class LengthHistory:
    """HAPO's h per task: the fewest generated tokens of a successful episode so far, keyed ``"env|seed"``."""

    shortest: dict[str, int] = field(default_factory=dict)

    def shape(self, groups: Sequence[Group], weight: float) -> None:
        """Charge each episode's last turn -weight * r_len with the history before this batch, then update it."""
        for group in groups:
            key = f"{group.task_id}|{group.seed}"
            for episode in group.episodes:
                if episode.turns:
                    reward = hapo_length_reward(generated_tokens(episode), self.shortest.get(key), episode.success)
                    episode.turns[-1].penalty -= weight * reward
        for group in groups:
            key = f"{group.task_id}|{group.seed}"
            for episode in group.episodes:
                if episode.success and episode.turns:
                    self.shortest[key] = min(
                        self.shortest.get(key, generated_tokens(episode)), generated_tokens(episode)
                    )

    def save(self, folder: Path) -> None:
        atomic_write_text(folder / HAPO_FILE, json.dumps(self.shortest))

    def load(self, folder: Path) -> None:
        path = folder / HAPO_FILE
        if path.exists():
            self.shortest = {k: int(v) for k, v in json.loads(path.read_text()).items()}
