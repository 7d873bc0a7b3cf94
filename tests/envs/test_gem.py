"""gem/<GEM id> (clew.envs.adapters.gem_text): GEM 0.1.0's offline games and reasoning-gym questions."""

from __future__ import annotations

import logging
import random

import pytest

pytest.importorskip("gem")

from clew.envs.adapters.gem_text import ENDED, GemEnv
from clew.envs.base import (
    EnvFinishedError,
    HasExpert,
    HasGoldReply,
    HasSnapshot,
    HasStateKey,
    HasValidActions,
    StepResult,
)
from clew.envs.checker import check_env

GARBAGE = "I think the answer is seven."


def play(env: GemEnv, seed: int, policy) -> tuple[list[StepResult], float]:
    env.reset(seed)
    results = []
    while True:
        result = env.step(policy(env))
        results.append(result)
        if result.terminated or result.truncated:
            return results, sum(r.reward for r in results)


@pytest.mark.parametrize(
    "env_id",
    ["game:GuessTheNumber-v0-easy", "game:Mastermind-v0-easy", "game:Minesweeper-v0-easy",
     "game:TowerofHanoi-v0-easy", "game:Sudoku-v0-easy", "game:Game2048-v0-easy", "rg:chain_sum"],
)  # fmt: skip
def test_check_env_passes(env_id: str) -> None:
    report = check_env(GemEnv(env_id), seeds=(0, 1, 2))
    assert report.episodes == 3 and report.steps >= 3


def test_reset_text_and_determinism() -> None:
    env = GemEnv("game:GuessTheNumber-v0-hard")
    first = env.reset(7)
    assert "Guess The Number" in first and "between 1 and 50" in first and first.endswith("Enter your next guess.")
    assert env.reset(7) == first
    assert GemEnv("game:GuessTheNumber-v0-hard").reset(7) == first
    board = GemEnv("game:TowerofHanoi-v0-easy").reset(0)
    assert "A: [3, 2, 1]" in board and "\\boxed{A C}" in board  # the suffix (board) follows the instructions


def test_guess_the_number_hints_rewards_and_win() -> None:
    env = GemEnv("game:GuessTheNumber-v0-hard")
    env.reset(3)
    target = env._env.game_number
    low = env.step("\\boxed{1}" if target != 1 else "\\boxed{2}")
    assert not low.terminated and not low.truncated and low.reward == 0.0 and not low.info.get("invalid_action")
    assert "target number is" in low.observation and low.observation.endswith("Enter your next guess.")
    again = env.step("\\boxed{1}" if target != 1 else "\\boxed{2}")  # a repeated guess: GEM rejects it, pays 0
    assert again.info["invalid_action"] and not again.terminated
    out_of_range = env.step("\\boxed{99}")
    assert out_of_range.info["invalid_action"]
    win = env.step(f"My guess: \\boxed{{{target}}}")
    assert win.terminated and not win.truncated and win.reward == 1.0
    assert win.info["success"] is True and win.observation.startswith("Congratulations!")
    with pytest.raises(EnvFinishedError):
        env.step("\\boxed{1}")


def test_format_error_ends_the_episode() -> None:
    env = GemEnv("game:Mastermind-v0-easy")
    env.reset(0)
    result = env.step(GARBAGE)
    assert result.terminated and not result.truncated
    assert result.reward == pytest.approx(-0.1)
    assert result.info["invalid_action"] and result.info["format_error"] and result.info["success"] is False


def test_turn_limit_is_a_truncation_with_partial_credit() -> None:
    env = GemEnv("game:GuessTheNumber-v0-easy")  # 1..10, 4 turns
    env.reset(1)
    target = env._env.game_number
    wrong = [n for n in range(1, 11) if n != target][:4]
    results = [env.step(f"\\boxed{{{n}}}") for n in wrong]
    assert all(not (r.terminated or r.truncated) for r in results[:-1])
    last = results[-1]
    assert last.truncated and not last.terminated and last.info["success"] is False
    assert 0.0 < last.reward < 1.0  # GEM's closeness credit at the limit
    assert last.observation == "You have reached the maximum number of turns."


def test_mastermind_dense_rewards_sum_to_one_for_the_expert() -> None:
    env = GemEnv("game:Mastermind-v0-hard")
    assert isinstance(env, HasExpert) and isinstance(env, HasValidActions)
    results, total = play(env, 5, lambda e: e.expert_action())
    assert results[-1].info["success"] and results[-1].terminated
    assert total == pytest.approx(1.0)  # GEM pays each new black peg's share


def test_binary_reward_mode_reports_an_outcome() -> None:
    env = GemEnv("game:TowerofHanoi-v0-easy", reward_mode="binary")
    results, total = play(env, 0, lambda e: e.expert_action())
    assert len(results) == 7 and total == 0.0  # optimal: 2^3 - 1 moves
    assert results[-1].outcome == 1.0 and all(r.outcome is None for r in results[:-1])
    results, _ = play(env, 0, lambda e: GARBAGE)
    assert results[-1].outcome == 0.0


def test_valid_actions_are_accepted_and_random_play_ends() -> None:
    for env_id in ("game:Minesweeper-v0-easy", "game:Sudoku-v0-easy", "game:FifteenPuzzle-v0-easy",
                   "game:Sokoban-v0-easy", "game:Crosswords-v0-easy"):  # fmt: skip
        env = GemEnv(env_id)
        rng = random.Random(0)
        results, _ = play(env, 0, lambda e, rng=rng: rng.choice(e.valid_actions()))
        assert not any(r.info.get("format_error") for r in results), env_id
        assert len(results) <= 50


def test_experts_win() -> None:
    for env_id in ("game:GuessTheNumber-v0-random", "game:Minesweeper-v0-hard", "game:Sudoku-v0-hard",
                   "game:TowerofHanoi-v0-hard", "game:Mastermind-v0-random"):  # fmt: skip
        for seed in range(3):
            results, _ = play(GemEnv(env_id), seed, lambda e: e.expert_action())
            assert results[-1].info["success"], (env_id, seed)


def test_rg_single_turn_answer_and_gold() -> None:
    env = GemEnv("rg:chain_sum")
    assert isinstance(env, HasGoldReply) and not isinstance(env, HasValidActions)
    question = env.reset(4)
    assert question.endswith("within \\boxed{}.")
    gold = env.gold_reply()
    right = env.step(f"Let me add.\n{gold}")
    assert right.terminated and not right.truncated and right.reward == 1.0 and right.info["success"]
    assert right.observation == ENDED
    env.reset(4)
    wrong = env.step("42")  # no \boxed{}: GEM scores None
    assert wrong.reward == 0.0 and wrong.info["invalid_action"] and wrong.info["success"] is False
    assert GemEnv("rg:chain_sum").reset(4) == question
    assert not isinstance(GemEnv("rg:boxnet"), HasExpert)  # no gold answers in that dataset


def test_envs_do_not_share_or_disturb_global_rng() -> None:
    def moves(env: GemEnv, seed: int, other: GemEnv | None) -> list[str]:
        env.reset(seed)
        seen = []
        for _ in range(8):
            if other is not None:
                other.reset(seed + 100)  # reseeds GEM's global RNG in between
            result = env.step(env.valid_actions()[0])
            seen.append(result.observation)
            if result.terminated or result.truncated:
                break
        return seen

    alone = moves(GemEnv("game:Game2048-v0-easy"), 3, None)
    random.seed(123)
    before = random.random()
    random.seed(123)
    interleaved = moves(GemEnv("game:Game2048-v0-easy"), 3, GemEnv("game:Minesweeper-v0-easy"))
    assert interleaved == alone
    assert random.random() == before  # the caller's RNG is untouched


def test_snapshot_and_state_key() -> None:
    env = GemEnv("game:Minesweeper-v0-easy")
    assert isinstance(env, HasSnapshot) and isinstance(env, HasStateKey)
    env.reset(2)
    env.step(env.expert_action())
    key, snap = env.state_key(), env.snapshot()
    after = env.step(env.expert_action())
    env.reset(9)
    env.restore(snap)
    assert env.state_key() == key
    assert env.step(env.expert_action()) == after


def test_ids_kwargs_and_refusals() -> None:
    assert GemEnv("game/TowerofHanoi-v0-easy").env_id == "game:TowerofHanoi-v0-easy"
    assert GemEnv("game:TowerofHanoi-v0-easy", num_disks=4, max_turns=20).reset(0).count("4") >= 1
    with pytest.raises(ValueError, match="did you mean"):
        GemEnv("game:GuessTheNumber-v0")
    with pytest.raises(ValueError, match="unknown kwargs"):
        GemEnv("game:TowerofHanoi-v0-easy", max_turn=5)  # GEM would swallow the typo
    with pytest.raises(ValueError, match=r"broken|fails"):
        GemEnv("game:FifteenPuzzle-v0-random")
    with pytest.raises(ValueError, match="reward_mode"):
        GemEnv("game:TowerofHanoi-v0-easy", reward_mode="dense")


def test_import_keeps_root_logging() -> None:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    GemEnv("game:GuessTheNumber-v0-easy")
    assert root.handlers == handlers and root.level == level


def test_clew_registry_serves_colon_ids() -> None:
    from clew.envs import registry

    if "gem" not in registry.FAMILIES:
        registry.register_family("gem", "gem_env:GemEnv", extra="gem", requires="gem", examples=("x",))
    env = registry.make("gem/game:GuessTheNumber-v0-easy")
    assert isinstance(env, GemEnv) and env.env_id == "game:GuessTheNumber-v0-easy"
    assert registry.make("gem/game/Mastermind-v0-easy", max_turns=3).reset(0)
