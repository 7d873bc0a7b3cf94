"""Dynamic sampling's refill rounds: every group of an iteration keeps its own id, with or without seats."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from clew.rollout import Task
from clew.trainer import stages
from clew.trainer.config import load_config
from clew.types import Episode, Group, Turn


def _group(group_id: int, task: Task, outcomes: list[float], agent: int | None = None) -> Group:
    episodes = [
        Episode(task.task_id, group_id, task.seed, [Turn([1], [2], [0.0], "a")], r, True, agent=agent) for r in outcomes
    ]
    return Group(group_id, task.task_id, task.seed, episodes)


def _session() -> Any:
    cfg = load_config(None, ["tasks_per_iteration=3", "rollout.group_size=2", "filters.drop_zero_variance_groups=true",
                             "filters.max_refill_rounds=2"])  # fmt: skip
    session = SimpleNamespace(cfg=cfg, judging=None, lengths=None, replay=None, curriculum=None, league=None)
    return session


@pytest.mark.parametrize("seats", [1, 2])
def test_refill_rounds_never_reuse_a_group_id(monkeypatch: pytest.MonkeyPatch, seats: int) -> None:
    """Round 0's first group has no signal and is dropped; the refill's groups must not take a kept group's id (they
    did: the refill started at len(kept), and two groups sharing an id share one baseline)."""
    offsets: list[int] = []

    def fake_round(session: Any, tasks: list[Task], seed: int, offset: int, it: int, keep: bool = False) -> list[Group]:
        offsets.append(offset)
        flat = [(i, seat) for seat in range(seats) for i in range(len(tasks))]
        dead = len(offsets) == 1  # the first task of round 0 gives every seat the same outcome
        return [
            _group(offset + seat * len(tasks) + i, tasks[i], [1.0, 1.0] if dead and i == 0 else [1.0, 0.0],
                   None if seats == 1 else seat)
            for i, seat in flat
        ]  # fmt: skip

    monkeypatch.setattr(stages, "collect_round", fake_round)
    kept, collected = stages.rollout(_session(), 0)  # type: ignore[arg-type]
    ids = [g.group_id for g in kept]
    assert len(ids) == len(set(ids)) == 3 * seats  # tasks_per_iteration tasks' worth of groups, each id once
    assert offsets == [0, 3 * seats]  # the refill follows every group collected, kept or not
    assert len(collected) == 3 * seats + seats * 1  # one task more for the dropped group
