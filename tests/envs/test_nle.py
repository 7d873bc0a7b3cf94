"""minihack/<task> and nethack/<task>: NLE as text — the contract (seeded replay; no snapshots), the map and status
in words, named actions, invalid actions as a flagged wait, the scripted navigator, bad tasks refused by name, and
the env in a worker process (where a native crash is contained)."""

from __future__ import annotations

import pytest

pytest.importorskip("nle")
pytest.importorskip("minihack")

from clew.envs import make as make_env
from clew.envs.checker import check_env
from clew.envs.pool import make_pooled


@pytest.mark.parametrize("env_id", ["minihack/Room-5x5-v0", "minihack/Room-Random-5x5-v0", "minihack/Corridor-R2-v0"])
def test_minihack_passes_check_env(env_id: str) -> None:
    assert check_env(make_env(env_id, max_steps=60)).episodes == 3


def test_nethack_passes_check_env() -> None:
    assert check_env(make_env("nethack/score", max_steps=40), seeds=(0, 1)).episodes == 2


def test_the_observation_is_the_map_and_status_in_words() -> None:
    env = make_env("minihack/Room-5x5-v0")
    text = env.reset(0)
    assert "Map:\n@...." in text and "staircase down (>): 4 south, 4 east" in text
    assert "Status: HP" in text and "dungeon level 1" in text
    assert env.valid_actions() == ["north", "east", "south", "west", "northeast", "southeast", "southwest", "northwest"]
    bad = env.step("fly")
    assert bad.info["invalid_action"] and not bad.terminated and bad.observation.startswith("Error: 'fly'")
    assert "Map:\n@...." in bad.observation  # the game did not move
    assert "far west" in make_env("nethack/score").valid_actions()


def test_the_navigator_reaches_the_stairs() -> None:
    env = make_env("minihack/Room-Random-5x5-v0")
    for seed in range(5):
        env.reset(seed)
        result = None
        while result is None or not (result.terminated or result.truncated):
            result = env.step(env.expert_action())
        assert result.terminated and result.info["success"]


def test_bad_tasks_are_refused_by_name() -> None:
    with pytest.raises(ValueError, match="not one of"):
        make_env("minihack/Nowhere-v0")
    with pytest.raises(ValueError, match="not one of"):
        make_env("nethack/tourism")


def test_runs_in_a_worker_process() -> None:
    env = make_pooled("minihack/Room-5x5-v0")
    try:
        assert "Map:" in env.reset(0)
        assert env.step(env.expert_action()).observation.startswith("Message:")
    finally:
        env.close()
