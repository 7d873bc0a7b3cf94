"""ScienceWorld and TextWorldExpress (JVM) and TextWorld (cached games) adapters against the env contract."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import pytest

from clew.envs import Env, EnvFinishedError, HasExpert, HasStateKey, HasValidActions, check_env, make
from clew.envs.checker import GARBAGE_ACTION

GAMES = Path(__file__).resolve().parent.parent / "data" / "textworld"
needs_java = pytest.mark.skipif(shutil.which("java") is None, reason="needs java on PATH")


def _play_expert(env: Env, seed: int, limit: int = 200) -> tuple[bool, int]:
    """Play the expert from ``seed``; return (success, steps)."""
    assert isinstance(env, HasExpert)
    env.reset(seed)
    for n in range(1, limit + 1):
        result = env.step(env.expert_action())
        if result.terminated or result.truncated:
            return bool(result.info.get("success")), n
    raise AssertionError(f"expert did not finish in {limit} steps")


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- ScienceWorld ---------------------------------------------------------------------------
@needs_java
@pytest.mark.parametrize("task", ["find-living-thing", "find-plant", "find-animal"])
def test_scienceworld_passes_check_env(task: str) -> None:
    pytest.importorskip("scienceworld")
    env = make(f"scienceworld/{task}", step_limit=12)
    try:
        assert all(isinstance(env, p) for p in (HasExpert, HasStateKey, HasValidActions))
        assert check_env(env, seeds=(0,)).episodes == 1
    finally:
        env.close()  # type: ignore[attr-defined]


@needs_java
def test_scienceworld_expert_wins_and_rewards_sum_to_the_score() -> None:
    pytest.importorskip("scienceworld")
    env = make("scienceworld/find-living-thing", step_limit=30)
    try:
        first = env.reset(0)
        assert first.startswith("Task Description:") and "This room is called" in first
        rewards, result = [], None
        while result is None or not (result.terminated or result.truncated):
            result = env.step(env.expert_action())  # type: ignore[attr-defined]
            rewards.append(result.reward)
        assert result.terminated and result.info["success"] and result.info["score"] == 100
        assert result.outcome is None and sum(rewards) == pytest.approx(1.0)  # the score once, as rewards
        with pytest.raises(EnvFinishedError):
            env.step("look around")
    finally:
        env.close()  # type: ignore[attr-defined]


@needs_java
def test_scienceworld_garbage_is_an_invalid_step_and_the_expert_tracks_the_path() -> None:
    pytest.importorskip("scienceworld")
    env = make("scienceworld/find-living-thing", step_limit=3)
    try:
        env.reset(0)
        key = env.state_key()  # type: ignore[attr-defined]
        gold = env.expert_action()  # type: ignore[attr-defined]
        result = env.step(GARBAGE_ACTION)
        assert result.info["invalid_action"] and result.reward == 0.0 and not result.terminated
        assert result.observation == "No known action matches that input."
        assert env.state_key() == key and env.expert_action() == gold  # type: ignore[attr-defined]
        assert result.info["expert_on_path"]
        detour = next(a for a in env.valid_actions() if a.startswith("open door") and a != gold)  # type: ignore[attr-defined]
        assert not env.step(detour).info["expert_on_path"]
        assert env.step("look around").truncated  # step_limit=3 counts the invalid step too
    finally:
        env.close()  # type: ignore[attr-defined]


@needs_java
def test_scienceworld_lazy_gold_leaves_the_episode_alone() -> None:
    """Generating the gold path mid-episode (a second simulator, same JVM) changes no observation."""
    pytest.importorskip("scienceworld")
    actions = ["open door to art studio", "go to art studio", "look around", "open door to hallway"]
    env = make("scienceworld/find-plant", step_limit=20)
    try:
        transcripts = []
        for ask_expert in (True, False):
            seen = [env.reset(4)]
            for i, action in enumerate(actions):
                if ask_expert and i == 2:
                    env.expert_action()  # type: ignore[attr-defined]
                seen.append(env.step(action).observation)
            transcripts.append(seen)
        assert transcripts[0] == transcripts[1]
    finally:
        env.close()  # type: ignore[attr-defined]


@needs_java
def test_scienceworld_close_shuts_the_jvm_down() -> None:
    pytest.importorskip("scienceworld")
    own = make("scienceworld/find-living-thing", jvm="own")
    shared = [make("scienceworld/find-living-thing") for _ in range(2)]
    own.reset(0)
    for env in shared:
        env.reset(0)
    pids = [env.jvm_pid for env in (own, *shared)]  # type: ignore[attr-defined]
    assert pids[1] == pids[2] != pids[0]
    own.close()  # type: ignore[attr-defined]
    shared[0].close()  # type: ignore[attr-defined]
    time.sleep(0.2)
    assert _gone(pids[0]) and not _gone(pids[1])  # the shared JVM still has a user
    shared[1].close()  # type: ignore[attr-defined]
    assert _gone(pids[1])


def test_scienceworld_refuses_bad_kwargs() -> None:
    pytest.importorskip("scienceworld")
    for kwargs in ({"split": "val"}, {"step_limit": 0}, {"simplifications": "fast"}, {"jvm": "pooled"}):
        with pytest.raises(ValueError):
            make("scienceworld/find-living-thing", **kwargs)
    with pytest.raises(ValueError, match="unknown scienceworld task"):
        make("scienceworld/find-unicorn")


# --- TextWorldExpress -----------------------------------------------------------------------
TWX_GAMES = ["cookingworld", "twc", "coin", "mapreader", "arithmetic", "sorting", "simonsays", "peckingorder"]


@needs_java
@pytest.mark.parametrize("game", ["coin", "arithmetic", "sorting", "simonsays", "mapreader"])
def test_twx_passes_check_env(game: str) -> None:
    pytest.importorskip("textworld_express")
    env = make(f"twx/{game}", step_limit=40)
    try:
        assert check_env(env).episodes == 3
    finally:
        env.close()  # type: ignore[attr-defined]


@needs_java
def test_twx_expert_wins_every_game() -> None:
    pytest.importorskip("textworld_express")
    keeper = make("twx/coin")  # holds the shared JVM, so the games below do not each start one
    keeper.reset(0)
    for game in TWX_GAMES:
        env = make(f"twx/{game}")
        try:
            for seed in (0, 1):
                won, _ = _play_expert(env, seed)
                assert won, f"twx/{game} seed {seed}: the gold path did not win"
        finally:
            env.close()  # type: ignore[attr-defined]
    keeper.close()  # type: ignore[attr-defined]


@needs_java
def test_twx_invalid_actions_splits_and_close() -> None:
    pytest.importorskip("textworld_express")
    env = make("twx/coin", split="dev", show_actions=True, jvm="own")
    first = env.reset(3)
    assert first.startswith("Your task is to search the environment and find the coin.")
    assert "Valid actions: " in first
    key = env.state_key()  # type: ignore[attr-defined]
    result = env.step(GARBAGE_ACTION)
    assert result.info["invalid_action"] and result.info["game_seed"] == 10003 and result.reward == 0.0
    assert result.observation.startswith("Unknown action") and env.state_key() == key  # type: ignore[attr-defined]
    pid = env.jvm_pid  # type: ignore[attr-defined]
    env.close()  # type: ignore[attr-defined]
    time.sleep(0.2)
    assert _gone(pid)
    with pytest.raises(EnvFinishedError):
        env.step("look around")
    with pytest.raises(ValueError, match="unknown twx game"):
        make("twx/chess")
    for params in ("foo=3", "numLocations=banana"):  # refused by load / accepted by load, refused at generation
        bad = make("twx/coin", game_params=params)
        with pytest.raises(ValueError, match="game_params"):
            bad.reset(0)
        bad.close()  # type: ignore[attr-defined]


# --- TextWorld ------------------------------------------------------------------------------
@pytest.mark.parametrize("preset", ["coin_collector", "treasure_hunter", "simple"])
def test_textworld_fixtures_pass_check_env_and_the_expert_wins(preset: str) -> None:
    pytest.importorskip("textworld")
    env = make(f"textworld/{preset}", cache_dir=GAMES, generate=False)
    try:
        assert check_env(env, seeds=(0, 1)).episodes == 2
        for seed in (0, 1):
            assert _play_expert(env, seed)[0]
    finally:
        env.close()  # type: ignore[attr-defined]


def test_textworld_text_invalid_actions_and_a_detour() -> None:
    pytest.importorskip("textworld")
    env = make("textworld/coin_collector", cache_dir=GAMES, generate=False)
    first = env.reset(0)
    assert "TextWorld" in first.splitlines()[0] and "$$" not in first  # the objective comes first, no banner
    result = env.step(GARBAGE_ACTION)
    assert result.info["invalid_action"] and result.observation == "That's not a verb I recognise."
    env.step(env.expert_action())  # type: ignore[attr-defined]
    expert = env.expert_action()  # type: ignore[attr-defined]
    detour = next(a for a in env.valid_actions() if a.startswith("go ") and a != expert)  # type: ignore[attr-defined]
    env.step(detour)  # back to the first room
    assert env.expert_action() != expert  # type: ignore[attr-defined]  # re-planned: walk back first
    result = env.step(env.expert_action())  # type: ignore[attr-defined]
    rewards = [result.reward]
    while not result.terminated:
        result = env.step(env.expert_action())  # type: ignore[attr-defined]
        rewards.append(result.reward)
    assert result.info["success"] and result.outcome is None and sum(rewards) == 1.0  # the score once, as rewards
    assert "RESTART" not in result.observation
    env.close()  # type: ignore[attr-defined]


def test_textworld_generates_missing_games_into_the_cache(tmp_path: Path) -> None:
    pytest.importorskip("textworld")
    with pytest.raises(FileNotFoundError, match="not cached"):
        make("textworld/treasure_hunter", cache_dir=tmp_path, generate=False).reset(7)
    env = make("textworld/treasure_hunter", cache_dir=tmp_path)
    first = env.reset(7)  # tw-make: about a second for a level-1 treasure hunt
    cached = sorted(p.name for p in tmp_path.iterdir())
    assert cached == ["treasure_hunter-level1-seed7.json", "treasure_hunter-level1-seed7.z8"]
    again = make("textworld/treasure_hunter", cache_dir=tmp_path, generate=False)
    assert again.reset(7) == first
    assert _play_expert(again, 7)[0]
    for e in (env, again):
        e.close()  # type: ignore[attr-defined]


def test_textworld_games_generate_and_play_safely_from_threads(tmp_path: Path) -> None:
    """Env steps run on a thread pool; TextWorld is not thread-safe, so clew serialises calls into it
    (without the lock, 4 threads raised IndexError inside its logic parser or crashed the process)."""
    from concurrent.futures import ThreadPoolExecutor

    pytest.importorskip("textworld")

    def play(seed: int) -> tuple[str, bool]:
        env = make("textworld/coin_collector", level=2, cache_dir=tmp_path)
        return env.reset(seed), _play_expert(env, seed)[0]

    with ThreadPoolExecutor(4) as pool:
        played = list(pool.map(play, [11, 12, 13, 11, 12, 13, 11, 12]))
    assert all(won for _, won in played) and played[0][0] == played[3][0]
    assert len(list(tmp_path.glob("*.z8"))) == 3


def test_textworld_control_characters_are_invalid_steps_not_crashes() -> None:
    """A control character in a command segfaults jericho's frotz; the adapter never sends one."""
    pytest.importorskip("textworld")
    env = make("textworld/coin_collector", cache_dir=GAMES, generate=False)
    env.reset(0)
    for action in ("in\x13", "\x00\x01", "go north\x1b[2J", "", "\\help"):
        result = env.step(action)
        assert result.info.get("invalid_action") and result.observation


def test_textworld_refuses_bad_settings() -> None:
    pytest.importorskip("textworld")
    with pytest.raises(ValueError, match="unknown textworld preset"):
        make("textworld/zork")
    with pytest.raises(ValueError, match="takes no 'level'"):
        make("textworld/simple", level=3)
    with pytest.raises(ValueError, match=r"1\.\.30"):
        make("textworld/treasure_hunter", level=31)
