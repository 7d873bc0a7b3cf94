"""crafter/<task>: Crafter as text — the contract (check-env, snapshots), named actions and their aliases, invalid
actions as flagged no-ops, the progression outcome on every step, tasks that end on their achievement, and the
scripted baseline."""

from __future__ import annotations

import pytest

pytest.importorskip("crafter")

from clew.envs import make as make_env
from clew.envs.adapters.crafter_text import NAMES, achievements
from clew.envs.checker import check_env


@pytest.mark.parametrize(("task", "kwargs"), [("collect_wood", {}), ("place_table", {}), ("default", {"length": 60})])
def test_passes_check_env(task: str, kwargs: dict[str, object]) -> None:
    assert check_env(make_env(f"crafter/{task}", **kwargs)).episodes == 3


def test_the_observation_is_words_and_actions_are_named() -> None:
    env = make_env("crafter/default", length=100)
    first = env.reset(0)
    assert first.startswith("You see:") and "Status: health 9/9, food 9/9, drink 9/9, energy 9/9." in first
    assert "Inventory: nothing." in first and len(env.valid_actions()) == 17 == len(NAMES)
    assert env.step("Move North").info.get("invalid_action") is None
    assert env.step("move_up").info.get("invalid_action") is None  # Crafter's own name
    bad = env.step("dance")
    assert bad.info["invalid_action"] and not bad.terminated


def test_the_outcome_is_the_share_of_achievements() -> None:
    env = make_env("crafter/default", length=300)
    env.reset(1)
    result = None
    while result is None or not (result.terminated or result.truncated):
        result = env.step(env.expert_action())
        assert result.info["progression"] == pytest.approx(len(result.info["achievements"]) / 22)
        assert result.outcome is None or result.terminated or result.truncated  # reported when it ends
    assert result.outcome == pytest.approx(len(result.info["achievements"]) / 22)
    assert len(result.info["achievements"]) >= 4  # the scripted baseline gets somewhere


@pytest.mark.parametrize("task", ["collect_wood", "place_table", "make_wood_pickaxe", "collect_drink"])
def test_a_task_ends_with_success_on_its_achievement(task: str) -> None:
    env = make_env(f"crafter/{task}")
    for seed in range(3):
        env.reset(seed)
        result = None
        while result is None or not (result.terminated or result.truncated):
            result = env.step(env.expert_action())
        assert result.terminated and result.info["success"] and task in result.info["achievements"]


def test_bad_arguments_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="achievement"):
        make_env("crafter/fly_to_moon")
    with pytest.raises(ValueError, match="length"):
        make_env("crafter/default", length=0)
    assert "collect_diamond" in achievements()
