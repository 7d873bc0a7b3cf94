"""Branching rollouts as a training mode: branch points (uniform, entropy), continuations that equal independent
rollouts of the same seed up to the branch point, no rows and no env steps for the replayed prefix, the loop."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clew.policy import HFPolicy
from clew.rollout import RolloutConfig, Task, collect, env_turns
from clew.rollout.actors import ScriptedActor
from clew.rollout.batch import to_rows
from clew.rollout.context import Framing
from clew.store.run import read_jsonl
from clew.table import TurnTable
from clew.trainer import Trainer
from clew.trainer.branching import branch_points, branch_turn, branchable
from clew.trainer.config import RunConfig
from clew.types import REPLAYED, Episode, Group, Turn

Make = Callable[..., RunConfig]


def _episode(entropies: list[float], **kwargs: object) -> Episode:
    turns = [Turn([1], [5], [-1.0], "a", token_entropies=[h]) for h in entropies]
    return Episode("env", 0, 0, turns, **kwargs)  # type: ignore[arg-type]


def test_branch_turns() -> None:
    episode = _episode([3.0, 0.1, 2.0, 0.5])
    assert branch_turn(episode, "entropy", random.Random(0)) == 2  # turn 0 is never re-decided: no prefix
    assert {branch_turn(episode, "uniform", random.Random(s)) for s in range(100)} == {1, 2, 3}
    with pytest.raises(ValueError, match="branch_at"):
        branch_turn(episode, "middle", random.Random(0))
    assert not branchable(_episode([1.0])) and not branchable(_episode([1.0, 1.0], error="boom"))
    group = Group(0, "env", 0, [_episode([1.0]), _episode([1.0, 2.0]), _episode([1.0, 2.0, 0.0])])
    assert [(len(e.turns), t) for e, t in branch_points([group], 1, "entropy", 0)] == [(2, 1)]
    assert len(branch_points([group], 5, "uniform", 0)) == 2


def test_continuations_equal_independent_rollouts_up_to_the_branch_point(tiny_policy: HFPolicy) -> None:
    """Continuations of a seeded episode cut at turn t hold its first t turns (ids, prompts, observations), marked
    replayed; from turn t on each one samples again from the prompt the root had there. Their replayed turns make no
    rows and count no env steps."""
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    cfg = RolloutConfig(group_size=1, max_turns=20, context="full")  # type: ignore[arg-type]
    expert = ScriptedActor("expert", tokenizer=tiny_policy.tokenizer)
    task = Task("keydoor-v0", 4, {"width": 5, "height": 5})
    (root,) = collect(expert, [task], cfg, 0, framing)[0].episodes
    t = 3
    branch = Task(task.env_id, task.seed, task.env_kwargs, tuple(root.turns[:t]))
    noisy = ScriptedActor("random", tokenizer=tiny_policy.tokenizer)
    group = collect(noisy, [branch], cfg.model_copy(update={"group_size": 3}), 7, framing)[0]
    for episode in group.episodes:
        for mine, theirs in zip(episode.turns[:t], root.turns[:t], strict=True):
            assert (mine.prompt_ids, mine.action_ids, mine.observation) == (theirs.prompt_ids, theirs.action_ids,
                                                                             theirs.observation)  # fmt: skip
            assert mine.info[REPLAYED] and not theirs.info.get(REPLAYED)
        assert episode.turns[t].prompt_ids == root.turns[t].prompt_ids  # the same state, decided again
        assert env_turns(episode) == len(episode.turns) - t
    table = TurnTable.from_groups([group])
    rows = to_rows(table, np.ones(table.n_turns), values=(np.zeros(int(table.token_offsets[-1])),) * 2)
    assert sum(len(r.advantages) for r in rows) == int(table.trained_tokens.sum())
    assert len(rows) == sum(len(e.turns) - t for e in group.episodes if e.turns)


def test_the_loop_trains_on_branch_groups(tiny_cfg: Make, tmp_path: Path) -> None:
    sft = ["sft.enabled=true", "sft.episodes=64", "sft.epochs=3", "sft.lr=0.003"]  # multi-turn episodes to cut
    cfg = tiny_cfg("iterations=1", "eval.every=0", "eval.at_start=false", "rollout.branch_roots=2",
                   "rollout.branch_k=2", *sft)  # fmt: skip
    Trainer(cfg, tmp_path / "run").fit()
    (row,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert row["train/groups"] > cfg.tasks_per_iteration  # the tasks' groups and a group per branch point
    assert row["rollout/mean_turns"] > 1.5


def test_branching_is_refused_where_histories_cannot_be_replayed(tiny_cfg: Make) -> None:
    with pytest.raises(ValueError, match=r"rollout\.branch_roots branches from replayed histories"):
        tiny_cfg("rollout.branch_roots=1", "rollout.context=summary")
