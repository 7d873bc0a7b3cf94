"""The turn table: one flattening feeds credit, training rows and the store, in one order."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from clew.credit import CreditInput, compute
from clew.envs import StepResult
from clew.rollout import RolloutConfig, ScriptedActor, Task, collect
from clew.rollout.batch import to_rows
from clew.store.trajectories import read_trajectories, turn_records, write_trajectories
from clew.table import TurnTable
from clew.trainer.config import ShapingConfig
from clew.trainer.select import shape
from clew.types import Episode, Group, Turn


def _turn(obs: str, key: str | None, n_tokens: int = 2, invalid: bool = False) -> Turn:
    info = {"invalid_action": True} if invalid else {}
    return Turn([1], [7] * n_tokens, [-0.5] * n_tokens, "a", observation=obs, state_key=key, info=info)


def _groups() -> list[Group]:
    a = Episode("t", 0, 0, [_turn("o1", "s0"), _turn("o2", "s1", 3, invalid=True)], 1.0, terminated=True)
    b = Episode("t", 0, 0, [_turn("o3", "s0", 1)], 0.0, terminated=True, first_observation="start")
    a.first_observation = "start"
    empty = Episode("t", 1, 5, [], 0.0, truncated=True, truncation_reason="error", error="boom")
    c = Episode("t", 1, 5, [_turn("o1", None)], 0.5, terminated=True, first_observation="other")
    return [Group(0, "t", 0, [a, b]), Group(1, "t", 5, [empty, c])]


def test_columns_follow_group_episode_turn_order() -> None:
    groups = _groups()
    shape(groups, ShapingConfig(invalid_action_penalty=0.1), 16)
    table = TurnTable.from_groups(groups)
    assert table.group.tolist() == [0, 0, 0, 1] and table.episode.tolist() == [0, 0, 1, 3]
    assert table.turn.tolist() == [0, 1, 0, 0] and table.token_offsets.tolist() == [0, 2, 5, 6, 8]
    assert table.penalty.tolist() == [0.0, 0.1, 0.0, 0.0] and table.outcome.tolist() == [1.0, 1.0, 0.0, 0.5]
    assert table.state_key.tolist() == [0, 1, 0, -1]
    # turn 0 answered the first observation, turn 1 the previous turn's: "start", "o1", "start", "other"
    assert table.observation.tolist() == [0, 1, 0, 2]
    assert [list(r) for r in table.episode_rows()] == [[0, 1], [2], [], [3]]


def test_misaligned_advantages_are_refused_everywhere(tmp_path: Path) -> None:
    table = TurnTable.from_groups(_groups())
    with pytest.raises(ValueError, match="3 per-turn values for 4 turn rows"):
        to_rows(table, np.zeros(3))
    with pytest.raises(ValueError, match="7 per-token values for 8 action tokens"):
        to_rows(table, np.zeros(4), np.zeros(7))
    with pytest.raises(ValueError, match="per-turn values"):
        write_trajectories(tmp_path / "t.parquet", turn_records(table, 0, np.zeros(5), np.zeros(4)))


def test_rows_credit_and_store_see_the_same_turns(tmp_path: Path) -> None:
    groups = _groups()
    shape(groups, ShapingConfig(invalid_action_penalty=0.1), 16)
    table = TurnTable.from_groups(groups)
    credit = compute("reinforce", CreditInput.from_table(table))
    rows = to_rows(table, credit.turn_advantage)
    assert [len(r.advantages) for r in rows] == np.diff(table.token_offsets).tolist()
    assert [r.advantages[0] for r in rows] == pytest.approx(credit.turn_advantage.tolist())
    write_trajectories(tmp_path / "t.parquet", turn_records(table, 3, credit.turn_advantage, credit.turn_return))
    stored = read_trajectories(tmp_path / "t.parquet")
    assert [r["advantage"] for r in stored] == pytest.approx(credit.turn_advantage.tolist())
    assert [r["penalty"] for r in stored] == [0.0, 0.1, 0.0, 0.0]
    assert [r["action_ids"] for r in stored] == [t.action_ids for t in table.turns]


class ReportsOutcome:
    """``steps`` steps with low-level rewards 0.1, -0.1, ..., then an explicit outcome (seed-dependent)."""

    def __init__(self, steps: int = 2, **ignored: object) -> None:
        self.steps, self.seed, self.n = steps, 0, 0

    def reset(self, seed: int) -> str:
        self.seed, self.n = seed, 0
        return "go"

    def step(self, action: str) -> StepResult:
        self.n += 1
        done = self.n == self.steps
        outcome = (1.0 if self.seed % 2 else -0.5) if done else None
        return StepResult(
            "ok", 0.1 if self.n == 1 else -0.1, done, False, {"success": done and self.seed % 2 == 1}, outcome
        )

    def valid_actions(self) -> list[str]:
        return ["a"]


def test_env_reported_outcome_is_kept_apart_from_step_rewards() -> None:
    tasks = [Task("tests.test_table:ReportsOutcome", s) for s in (1, 2)]
    groups = collect(ScriptedActor("random"), tasks, RolloutConfig(group_size=1, max_turns=4), 0)
    shape(groups, ShapingConfig(invalid_action_penalty=0.5), 16)
    win, loss = groups[0].episodes[0], groups[1].episodes[0]
    assert (win.outcome, win.outcome_explicit, win.success) == (1.0, True, True)
    assert (loss.outcome, loss.outcome_explicit, loss.success) == (-0.5, True, False)
    assert [t.reward for t in win.turns] == [0.1, -0.1]  # step rewards stay the env's
