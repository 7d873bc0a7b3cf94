"""Cost-aware shaping: step, tool-call, token and over-budget costs by hand, HAPO's length reward against its worked
example, its per-task history (checkpointed, resumed)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from clew.trainer import Trainer
from clew.trainer.checkpoint import checkpoints
from clew.trainer.config import RunConfig
from clew.trainer.costs import HAPO_FILE, LengthHistory, hapo_length_reward, turn_cost
from clew.trainer.sections import ShapingConfig
from clew.trainer.select import shape
from clew.types import Episode, Group, Turn

Make = Callable[..., RunConfig]


@pytest.mark.parametrize(
    ("length", "correct", "want"),
    [(600, True, 0.58779), (1000, True, 0.0), (1500, True, -0.7), (2500, True, -0.7),
     (600, False, 0.0), (1500, False, -0.70711), (2500, False, -1.0)],
)  # fmt: skip
def test_hapo_worked_example(length: int, correct: bool, want: float) -> None:
    """objectives.md section 16, h = 1000."""
    assert hapo_length_reward(length, 1000, correct) == pytest.approx(want, abs=1e-5)


def test_hapo_without_history_is_zero() -> None:
    assert hapo_length_reward(10, None, True) == 0.0 == hapo_length_reward(10, None, False)


def _turn(tokens: int, **info: object) -> Turn:
    return Turn([1], list(range(5, 5 + tokens)), [-1.0] * tokens, "a", info=dict(info))


def test_turn_costs_by_hand() -> None:
    cfg = ShapingConfig(turn_cost=0.1, tool_call_cost=0.5, token_cost=0.01, turn_budget=2, over_budget_cost=1.0)
    assert turn_cost(_turn(3), 0, cfg) == pytest.approx(0.13)
    assert turn_cost(_turn(3, tool_call="1 + 2"), 1, cfg) == pytest.approx(0.63)
    assert turn_cost(_turn(2), 2, cfg) == pytest.approx(1.12)  # the third step is past a budget of two
    assert turn_cost(_turn(2), 0, ShapingConfig()) == 0.0


def test_shape_charges_env_actions_and_counts_only_them_against_the_budget() -> None:
    summary = Turn([1], [5, 6], [-1.0, -1.0], "s", context_edit="summary")
    episode = Episode("env", 0, 0, [_turn(1), summary, _turn(1, tool_call=True), _turn(1, invalid_action=True)])
    cfg = ShapingConfig(turn_cost=0.1, tool_call_cost=0.5, turn_budget=2, over_budget_cost=1.0,
                        invalid_action_penalty=0.2)  # fmt: skip
    shape([Group(0, "env", 0, [episode])], cfg, max_new_tokens=8)
    assert [t.penalty for t in episode.turns] == pytest.approx([0.1, 0.0, 0.6, 0.2 + 0.1 + 1.0])
    shape([Group(0, "env", 0, [episode])], cfg, max_new_tokens=8)  # idempotent
    assert [t.penalty for t in episode.turns] == pytest.approx([0.1, 0.0, 0.6, 1.3])


def _episode(seed: int, tokens: list[int], success: bool) -> Episode:
    turns = [_turn(n) for n in tokens]
    turns[-1].info["success"] = success
    return Episode("env", 0, seed, turns, outcome=float(success), terminated=True)


def test_the_length_history_scores_against_earlier_batches_only(tmp_path: Path) -> None:
    history = LengthHistory()
    first = [_episode(1, [4, 6], True), _episode(1, [20], True), _episode(1, [3], False)]
    history.shape([Group(0, "env", 1, first)], weight=0.5)
    assert [e.turns[-1].penalty for e in first] == [0.0, 0.0, 0.0]  # no history yet
    assert history.shortest == {"env|1": 10}
    second = [_episode(1, [5], True), _episode(1, [15], False), _episode(2, [5], True)]
    history.shape([Group(0, "env", 1, second[:2]), Group(1, "env", 2, second[2:])], weight=0.5)
    assert second[0].turns[-1].penalty == pytest.approx(-0.5 * hapo_length_reward(5, 10, True))  # a bonus: shorter
    assert second[1].turns[-1].penalty == pytest.approx(-0.5 * hapo_length_reward(15, 10, False))  # > 0: longer, wrong
    assert second[2].turns[-1].penalty == 0.0  # another task, first seen
    assert history.shortest == {"env|1": 5, "env|2": 5}
    history.save(tmp_path)
    again = LengthHistory()
    again.load(tmp_path)
    assert again.shortest == history.shortest


def test_hapo_history_is_checkpointed_and_resumed(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("iterations=3", "tasks_per_iteration=4", "env.train_seeds=2", "shaping.hapo_weight=1.0",
                   "shaping.turn_cost=0.01", "env.id=tests.contract_envs:Parity", "eval.every=0",
                   "eval.at_start=false", "eval.at_end=false")  # fmt: skip
    Trainer(cfg, tmp_path / "whole").fit()
    Trainer(cfg, tmp_path / "split").fit(stop_after=1)
    Trainer(cfg, tmp_path / "split").fit(resume=True)
    whole, split = (json.loads((checkpoints(tmp_path / r)[-1] / HAPO_FILE).read_text()) for r in ("whole", "split"))
    assert whole and whole == split and len(whole) <= 2  # two training tasks (env.train_seeds=2)
