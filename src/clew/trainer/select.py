"""Reward shaping before credit, and the filters between credit and update."""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Sequence

from clew.tensors import TokenRow
from clew.trainer.config import FilterConfig, ShapingConfig
from clew.types import Group


def shape(groups: Sequence[Group], cfg: ShapingConfig) -> None:
    """Set each turn's ``penalty`` in place; env rewards and episode outcomes stay as the env gave them.

    Invalid actions (``info["invalid_action"]``) and actions cut at ``max_new_tokens`` become
    penalised turns of a recorded episode, never exceptions. Credit charges a penalty to its own
    turn's advantage only (``clew.credit.compute``). Idempotent.
    """
    for group in groups:
        for episode in group.episodes:
            for turn in episode.turns:
                turn.penalty = cfg.invalid_action_penalty if turn.info.get("invalid_action") else 0.0
            if episode.truncation_reason == "max_new_tokens" and episode.turns:
                episode.turns[-1].penalty += cfg.overlong_penalty


def drop_env_errors(groups: Sequence[Group]) -> list[Group]:
    """Leave out episodes the env failed (an exception, a timeout, a crashed worker): they are not samples of
    the policy, so they join neither credit nor the group baselines (a group left empty is dropped). They stay
    in the rollout metrics (``rollout/error_rate``)."""
    out = []
    for group in groups:
        kept = [e for e in group.episodes if e.error is None]
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
