"""Reward shaping before credit, and the filters between credit and update."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from clew.tensors import TokenRow
from clew.trainer.config import FilterConfig, ShapingConfig
from clew.trainer.costs import turn_cost
from clew.types import Group


def shape(groups: Sequence[Group], cfg: ShapingConfig, max_new_tokens: int) -> None:
    """Set each turn's ``penalty`` in place; env rewards and episode outcomes stay as the env gave them.

    Invalid actions (``info["invalid_action"]``), env actions cut at ``max_new_tokens``
    (``Turn.cut``, whether or not the env then ended the episode) and, with DAPO's soft overlong
    punishment, env actions longer than ``max_new_tokens - L_cache`` become penalised turns of a
    recorded episode, never exceptions. Costs (``clew.trainer.costs.turn_cost``: per step, tool call, token and step
    past the turn budget) are charged to env actions. Where credit charges a penalty is the estimator's
    ``penalty_placement`` (``clew.credit.compute``). Idempotent.
    """
    buffer = round(cfg.overlong_buffer * max_new_tokens)
    for group in groups:
        for episode in group.episodes:
            step = 0
            for turn in episode.turns:
                turn.penalty = cfg.invalid_action_penalty if turn.info.get("invalid_action") else 0.0
                if not turn.env_step:
                    continue  # a cut summary is kept as written; length shaping is for env actions
                turn.penalty += cfg.overlong_penalty if turn.cut else 0.0
                turn.penalty += soft_overlong_penalty(len(turn.action_ids), max_new_tokens, buffer, cfg.overlong_soft)
                turn.penalty += turn_cost(turn, step, cfg)  # per step, tool call, token, past the budget
                step += 1


def soft_overlong_penalty(length: int, max_tokens: int, buffer_tokens: int, factor: float = 1.0) -> float:
    """DAPO's soft overlong punishment as a penalty: ``-factor * R_length(y)`` with
    R_length = clip((L_max - L_cache - |y|) / L_cache, -1, 0) (Yu et al., "DAPO", arXiv 2503.14476, Eq. 13).

    0 up to ``L_max - L_cache`` tokens, then growing linearly to ``factor`` at ``L_max``; no buffer, no penalty.
    """
    if buffer_tokens <= 0 or factor == 0:
        return 0.0
    return factor * min(max((length - (max_tokens - buffer_tokens)) / buffer_tokens, 0.0), 1.0)


def drop_env_errors(groups: Sequence[Group]) -> list[Group]:
    """Leave out episodes with an ``infra`` failure (a failed reset, a lost worker, host or engine request, an
    ``InfraError``): they are not samples of the policy, so they join neither credit nor the group baselines (a
    group left empty is dropped). Episodes with a ``policy`` failure (a step the action made raise, hang or
    crash) stay, scored as failures: leaving them out would let the policy escape its penalty by breaking the
    env. Both count in the rollout metrics (``rollout/error_rate_infra``, ``rollout/error_rate_policy``)."""
    out = []
    for group in groups:
        kept = [e for e in group.episodes if e.error is None or e.failure == "policy"]
        if kept:
            out.append(dataclasses.replace(group, episodes=kept))
    return out


def has_signal(group: Group) -> bool:
    """False for a zero-variance group (every outcome equal), which has no group-relative signal."""
    outcomes = group.outcomes
    return len(outcomes) <= 1 or max(outcomes) - min(outcomes) > 1e-12


def drop_zero_variance(groups: Sequence[Group]) -> list[Group]:
    """DAPO dynamic sampling (arXiv 2503.14476, Eq. 11): keep groups with 0 < #correct < G."""
    return [g for g in groups if has_signal(g)]


def cap_rows(rows: list[TokenRow], cfg: FilterConfig, seed: int) -> list[TokenRow]:
    """A seeded subsample of at most ``max_rows_per_iteration`` rows (order preserved)."""
    limit = cfg.max_rows_per_iteration
    if limit is None or len(rows) <= limit:
        return rows
    keep = sorted(random.Random(seed).sample(range(len(rows)), limit))
    return [rows[i] for i in keep]
