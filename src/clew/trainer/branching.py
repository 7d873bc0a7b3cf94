"""Branching rollouts: k continuations from a shared prefix of an episode, grouped by their branch point.

After an iteration's groups are played, ``rollout.branch_roots`` episodes of each group are cut at one turn t each and
``rollout.branch_k`` continuations are played from the state before turn t: the env replays the root's first t
actions (or restores its snapshot, ``clew.envs.HasSnapshot``) and the policy samples from turn t on with the prompt
the root had there. Each branch point's continuations are a group of their own, so every estimator sees a step-level
group directly: continuations that differ only from turn t on, compared with each other. Their replayed turns are
marked (``info["replayed"]``) and make no training rows (the root trains on them) and no env steps.

The branch turn: ``uniform`` over the root's actions after the first, or ``entropy``, the action with the highest
mean token entropy under the sampler (LATR, "Lookahead Tree-Based Rollouts for Enhanced Trajectory-Level Exploration
in Reinforcement Learning with Verifiable Rewards", branches at high-uncertainty generation steps; clew branches at
turn boundaries, where an env state exists, and neither simulates lookahead nor prunes similar branches). SLATE
("Truncated Step-Level Sampling with Process Rewards for Retrieval-Augmented Reasoning", arXiv 2602.23440) samples
k continuations of only the next step and scores them with an LLM judge; without a step judge, clew's continuations
play to the end and the outcome scores them, as tree rollouts do. Both papers' details are unconfirmed here (their
abstracts only).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np

from clew.types import REPLAYED, Episode, Group


def branchable(episode: Episode) -> bool:
    """An episode a branch can cut: no error, at least two turns, every turn an env action of this rollout."""
    turns = episode.turns
    return episode.error is None and len(turns) >= 2 and all(t.env_step and not t.info.get(REPLAYED) for t in turns)


def branch_turn(episode: Episode, at: str, rng: random.Random) -> int:
    """The turn t >= 1 the continuations re-decide (the prefix is the first t turns)."""
    if at == "uniform":
        return rng.randrange(1, len(episode.turns))
    if at == "entropy":
        spread = [float(np.mean(t.token_entropies)) if t.token_entropies else 0.0 for t in episode.turns[1:]]
        return 1 + int(np.argmax(spread))
    raise ValueError(f"rollout.branch_at must be 'uniform' or 'entropy', got {at!r}")


def branch_points(groups: Sequence[Group], roots: int, at: str, seed: int) -> list[tuple[Episode, int]]:
    """(root episode, branch turn) for the first ``roots`` branchable episodes of every group, seeded."""
    rng = random.Random(seed)
    points = []
    for group in groups:
        for episode in [e for e in group.episodes if branchable(e)][:roots]:
            points.append((episode, branch_turn(episode, at, rng)))
    return points
