"""Third-party adapters: reasoning-gym (rg/...), gymnasium toy-text (gym/...), TextArena (textarena/...)."""

from __future__ import annotations

import random
from typing import Any

import pytest

from clew.envs import HasExpert, HasGoldReply, HasStateKey, HasValidActions, check_env, make
from clew.envs.base import Env, StepResult
from clew.envs.checker import GARBAGE_ACTION


def _play_expert(env: Env, seed: int, max_steps: int = 300) -> StepResult:
    assert isinstance(env, HasExpert)
    env.reset(seed)
    for _ in range(max_steps):
        result = env.step(env.expert_action())
        if result.terminated or result.truncated:
            return result
    raise AssertionError(f"expert did not finish within {max_steps} steps")


# --- reasoning-gym ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rg() -> Any:
    return pytest.importorskip("reasoning_gym")


@pytest.mark.parametrize("env_id", ["rg/chain_sum", "rg/basic_arithmetic", "rg/leg_counting"])
def test_rg_passes_check_env_and_expert_scores_one(rg: Any, env_id: str) -> None:
    check_env(env_id)
    env = make(env_id, size=50)
    for seed in range(5):
        result = _play_expert(env, seed)
        assert (result.outcome, result.info["success"]) == (1.0, True)
        assert result.reward + (result.outcome or 0.0) == 1.0  # a one-step episode's return: the score once


def test_rg_gold_reply_scores_one_and_only_datasets_with_answers_have_one(rg: Any) -> None:
    env = make("rg/chain_sum", size=10)
    env.reset(2)
    assert isinstance(env, HasGoldReply) and env.step(env.gold_reply()).outcome == 1.0
    assert not isinstance(make("rg/rush_hour", size=5), HasGoldReply)  # answer=None: no expert, no gold reply


def test_rg_seed_picks_the_item_and_state_key_names_it(rg: Any) -> None:
    env = make("rg/chain_sum", size=10)
    assert isinstance(env, HasStateKey)
    first = env.reset(3)
    assert env.reset(13) == first  # index = seed % size
    assert env.reset(4) != first
    assert env.state_key() == "chain_sum:4:0"


def test_rg_multi_turn_wrong_then_right_gives_outcome_one(rg: Any) -> None:
    env = make("rg/chain_sum", max_attempts=3, dataset_kwargs={"max_terms": 2, "max_digits": 1})
    assert isinstance(env, HasExpert) and isinstance(env, HasStateKey)
    env.reset(7)
    wrong = env.step("not a number")
    assert not wrong.terminated and wrong.reward == 0.0 and wrong.outcome is None
    assert "try again" in wrong.observation.lower() and "2 attempt(s) left" in wrong.observation
    assert env.state_key() == "chain_sum:7:1"
    right = env.step(env.expert_action())
    assert right.terminated and right.outcome == 1.0
    assert right.info == {"score": 1.0, "attempt": 2, "success": True, "answer": env.expert_action()}


def test_rg_runs_out_of_attempts_with_the_last_score(rg: Any) -> None:
    env = make("rg/chain_sum", max_attempts=2)
    env.reset(0)
    env.step("1")
    last = env.step("2")
    assert last.terminated and last.outcome == 0.0 and last.info["success"] is False


def test_rg_last_number_extraction_scores_a_chatty_reply(rg: Any) -> None:
    env = make("rg/chain_sum", answer_extraction="last_number", dataset_kwargs={"max_terms": 2, "max_digits": 1})
    env.reset(5)
    gold = env.expert_action()  # type: ignore[attr-defined]
    right = env.step(f"Sure! The sum is 12 - 3 = {gold}.")
    assert right.outcome == 1.0 and right.info["success"] is True
    env.reset(5)
    wrong = env.step(f"{gold} is wrong, it is {int(gold) + 1}")  # the last number counts
    assert wrong.outcome == 0.0
    env.reset(5)
    assert env.step("I do not know.").info["invalid_action"] is True


def test_rg_whole_reply_gives_only_partial_credit_to_chat(rg: Any) -> None:
    # reasoning-gym's own partial credit is opt-in (scoring="dataset"); the default exact match gives 0
    env = make("rg/chain_sum", dataset_kwargs={"max_terms": 2, "max_digits": 1}, scoring="dataset")
    env.reset(5)
    result = env.step(f"The answer is {env.expert_action()}.")  # type: ignore[attr-defined]
    assert result.outcome is not None and 0.0 < result.outcome < 1.0 and result.info["success"] is False
    exact = make("rg/chain_sum", dataset_kwargs={"max_terms": 2, "max_digits": 1})
    exact.reset(5)
    assert exact.step(f"The answer is {exact.expert_action()}.").outcome == 0.0  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="answer_extraction must be one of"):
        make("rg/chain_sum", answer_extraction="first_number")


def test_rg_crashing_scorer_is_a_recorded_invalid_step(rg: Any) -> None:
    env = make("rg/prime_factorization")  # its score_answer raises on a non-number
    env.reset(0)
    result = env.step(GARBAGE_ACTION)
    assert result.terminated and result.outcome == 0.0 and result.info["invalid_action"] is True


def test_rg_datasets_without_gold_answers_have_no_expert(rg: Any) -> None:
    assert not isinstance(make("rg/graph_color"), HasExpert)
    with pytest.raises(ValueError, match="not registered"):
        make("rg/no_such_dataset")
    with pytest.raises(ValueError, match="composite"):
        make("rg/composite")


# --- gymnasium toy-text ----------------------------------------------------------------------
@pytest.fixture(scope="module")
def gym() -> Any:
    return pytest.importorskip("gymnasium")


GYM_IDS = ["gym/FrozenLake-v1", "gym/Taxi-v4", "gym/CliffWalking-v1"]


@pytest.mark.parametrize("env_id", GYM_IDS)
def test_gym_passes_check_env_and_expert_reaches_the_goal(gym: Any, env_id: str) -> None:
    check_env(env_id)
    env = make(env_id)
    for seed in range(5):
        assert _play_expert(env, seed).info["success"] is True


def test_gym_expert_takes_the_shortest_path(gym: Any) -> None:
    # FrozenLake 4x4 from (0,0) to (3,3) around the holes: 6 moves; CliffWalking along row 2: 13 moves.
    for env_id, optimal in [("gym/FrozenLake-v1", 6), ("gym/CliffWalking-v1", 13)]:
        env = make(env_id)
        env.reset(0)
        steps = 1
        while not (result := env.step(env.expert_action())).terminated:  # type: ignore[attr-defined]
            steps += 1
        assert result.info["success"] and steps == optimal


def test_gym_observation_is_plain_text_with_words(gym: Any) -> None:
    env = make("gym/Taxi-v4")
    obs = env.reset(0)
    assert "\x1b" not in obs and "Actions: south, north, east, west, pickup, dropoff." in obs
    assert isinstance(env, HasValidActions) and isinstance(env, HasStateKey)
    assert env.valid_actions() == ["south", "north", "east", "west", "pickup", "dropoff"]
    assert env.state_key() == str(env._env.unwrapped.s)  # type: ignore[attr-defined]


def test_gym_garbage_is_an_invalid_step_that_keeps_the_state(gym: Any) -> None:
    env = make("gym/FrozenLake-v1", max_steps=3)
    assert isinstance(env, HasStateKey)
    env.reset(0)
    before = env.state_key()
    results = [env.step(GARBAGE_ACTION) for _ in range(3)]
    assert all(r.info.get("invalid_action") for r in results) and env.state_key() == before
    assert [r.truncated for r in results] == [False, False, True]  # invalid steps count toward max_steps


def test_gym_random_maps_and_slippery_ice(gym: Any) -> None:
    env = make("gym/FrozenLake-v1", map_size=5)
    assert env.reset(1) != env.reset(2) and env.reset(1) == env.reset(1)
    assert _play_expert(env, 1).info["success"]
    slippery = make("gym/FrozenLake-v1", is_slippery=True)
    wins = sum(bool(_play_expert(slippery, seed).info["success"]) for seed in range(20))
    assert wins >= 10  # the optimal policy on slippery 4x4 wins about 74% of the time


def test_gym_refuses_unsupported_ids(gym: Any) -> None:
    with pytest.raises(ValueError, match="Taxi-v4"):
        make("gym/Taxi-v3")
    with pytest.raises(ValueError, match="not supported"):
        make("gym/CartPole-v1")


# --- TextArena -------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ta() -> Any:
    return pytest.importorskip("textarena")


TA_IDS = ["textarena/TicTacToe-v0", "textarena/ConnectFour-v0", "textarena/Mastermind-v0", "textarena/TowerOfHanoi-v0"]


@pytest.mark.parametrize("env_id", TA_IDS)
def test_textarena_passes_check_env(ta: Any, env_id: str) -> None:
    check_env(env_id)


@pytest.mark.parametrize(
    ("env_id", "kwargs", "min_wins"),
    [
        ("textarena/TowerOfHanoi-v0", {}, 4),
        ("textarena/Mastermind-v0", {}, 4),
        ("textarena/TicTacToe-v0", {"opponent": "random"}, 3),  # minimax never loses; random allows draws
        ("textarena/Nim-v0", {}, 4),
    ],
)
def test_textarena_experts_win(ta: Any, env_id: str, kwargs: dict[str, Any], min_wins: int) -> None:
    env = make(env_id, **kwargs)
    results = [_play_expert(env, seed) for seed in range(4)]
    assert all(r.outcome is not None and r.outcome >= 0 for r in results)
    assert all(r.reward == 0.0 for r in results)  # the verdict is the outcome, not also a reward
    assert sum(bool(r.info["success"]) for r in results) >= min(min_wins, 4)


def test_textarena_minimax_draws_against_itself(ta: Any) -> None:
    env = make("textarena/TicTacToe-v0", opponent="scripted")
    assert {_play_expert(env, seed).outcome for seed in range(2)} == {0.0}


def test_textarena_other_games_list_the_moves_their_board_names(ta: Any) -> None:
    env = make("textarena/Othello-v0-tiny")  # no kit: moves parsed from "Valid moves: '[0, 1]', ..."
    env.reset(0)
    assert isinstance(env, HasValidActions) and env.valid_actions() == ["[0, 1]", "[1, 0]", "[2, 3]", "[3, 2]"]
    check_env(env, seeds=(0,))


def test_textarena_games_without_a_real_expert_have_none(ta: Any) -> None:
    for env_id in ("textarena/ConnectFour-v0", "textarena/LightsOut-v0", "textarena/Minesweeper-v0"):
        env = make(env_id)
        assert not isinstance(env, HasExpert) and isinstance(env, HasValidActions)


def test_textarena_garbage_is_a_recorded_invalid_step_and_the_game_goes_on(ta: Any) -> None:
    env = make("textarena/Mastermind-v0", max_steps=3)
    env.reset(0)
    results = [env.step(GARBAGE_ACTION) for _ in range(3)]
    assert all(r.info.get("invalid_action") for r in results)
    assert [r.terminated or r.truncated for r in results] == [False, False, True]
    assert "invalid move" in results[0].observation.lower()


def test_textarena_error_allowance_restores_the_games_rule(ta: Any) -> None:
    env = make("textarena/TicTacToe-v0", error_allowance=1)
    env.reset(0)
    first, second = env.step(GARBAGE_ACTION), env.step(GARBAGE_ACTION)
    assert not first.terminated and first.info["invalid_action"]
    assert second.terminated and second.outcome == -1.0 and second.info["success"] is False


def test_textarena_leaves_the_global_random_state_alone(ta: Any) -> None:
    random.seed(1234)
    env = make("textarena/Minesweeper-v0")  # mines are placed with `random` at the first move
    before = random.getstate()
    env.reset(5)
    env.step("[3 3]")
    assert random.getstate() == before
    # Interleaving another env (and the caller's own draws) does not change this env's episode.
    alone = [env.reset(5), env.step("[3 3]").observation]
    other = make("textarena/Minesweeper-v0")
    first = env.reset(5)
    other.reset(6)
    other.step("[0 0]")
    random.random()
    assert [first, env.step("[3 3]").observation] == alone


def test_textarena_opponent_moves_inside_step_and_seats_alternate(ta: Any) -> None:
    env = make("textarena/TicTacToe-v0")
    assert isinstance(env, HasValidActions)
    first = env.reset(0)  # seat 0 moves first: an empty board
    assert "Player 1" not in first and len(env.valid_actions()) == 9
    result = env.step("[4]")
    assert "Player 1 placed" in result.observation and len(env.valid_actions()) == 7
    second = env.reset(1)  # seat 1: the opponent (player 0) has already moved
    assert "You are Player 1" in second and "Player 0 placed" in second and len(env.valid_actions()) == 8
    fixed = make("textarena/TicTacToe-v0", seat=1)
    assert "You are Player 1" in fixed.reset(0)


def test_textarena_custom_opponent_object(ta: Any) -> None:
    seen: list[tuple[str, int]] = []

    class Corner:
        def act(self, observation: str, seed: int) -> str:
            seen.append((observation, seed))
            return "[0]" if "[0]" in observation.split("Available Moves:")[-1] else "[8]"

    env = make("textarena/TicTacToe-v0", opponent=Corner(), seat=0)
    env.reset(0)
    env.step("[4]")
    assert len(seen) == 1 and "Tic Tac Toe" in seen[0][0]  # it sees its own prompt and the board
    assert "O" in env._ta.state.game_state["board"][1][1]  # type: ignore[attr-defined]


def test_textarena_refuses_what_it_cannot_run(ta: Any) -> None:
    with pytest.raises(ValueError, match="NLTK"):
        make("textarena/Wordle-v0")
    with pytest.raises(ValueError, match="OpenRouter"):
        make("textarena/TwentyQuestions-v0")
    with pytest.raises(ValueError, match="did you mean"):
        make("textarena/TicTacToes-v0")
    with pytest.raises(ValueError, match="no scripted opponent"):
        make("textarena/Othello-v0-tiny", opponent="scripted")
    with pytest.raises(ValueError, match="model directory"):
        make("textarena/ConnectFour-v0", opponent="nonsense")
    with pytest.raises(ValueError, match="single-player"):
        make("textarena/Mastermind-v0", opponent="random")


@pytest.mark.slow  # imports transformers (about 5 s); the model itself is built in 0.1 s
def test_textarena_model_opponent_is_an_injected_engine_loaded_once_per_process(ta: Any, tmp_path: Any) -> None:
    from clew.policy import TinyModelConfig, build_tiny
    from clew.policy.opponent import EngineOpponent

    cfg = TinyModelConfig(hidden_size=32, num_layers=1, num_heads=2, intermediate_size=32)
    build_tiny(tmp_path / "policy", [str(i) for i in range(50)] + ["Tic Tac Toe [4]"], cfg)  # a clew checkpoint
    env = make("textarena/TicTacToe-v0", opponent=str(tmp_path), seat=0)
    opponent = env.opponent  # type: ignore[attr-defined]
    assert isinstance(opponent, EngineOpponent)
    again = make("textarena/TicTacToe-v0", opponent=str(tmp_path), seat=1).opponent  # type: ignore[attr-defined]
    assert again.engine is opponent.engine  # one model per process, shared by every env built per episode
    env.reset(0)
    result = env.step("[4]")  # an untrained model's move is invalid: a random valid move replaces it
    assert "Player 1 placed" in result.observation
    assert opponent.act("Tic Tac Toe [4]", 0) == opponent.act("Tic Tac Toe [4]", 1)  # greedy: the seed is unused
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="is not a model directory"):
        make("textarena/TicTacToe-v0", opponent=str(tmp_path / "empty"))


def test_textarena_opponent_by_entry_point(ta: Any) -> None:
    env = make("textarena/TicTacToe-v0", opponent="tests.envs.test_adapters_rg_gym_textarena:corner_bot", seat=0)
    assert isinstance(env.opponent, _Corner)  # type: ignore[attr-defined]
    with pytest.raises(ValueError, match="has no opponent factory 'nope'"):
        make("textarena/TicTacToe-v0", opponent="tests.envs.test_adapters_rg_gym_textarena:nope")
    with pytest.raises(ValueError, match="must have act"):
        make("textarena/TicTacToe-v0", opponent="tests.envs.test_adapters_rg_gym_textarena:_Missing")


class _Corner:
    def act(self, observation: str, seed: int) -> str:
        return "[0]"


class _Missing:
    pass


def corner_bot() -> _Corner:
    return _Corner()


def test_textarena_game_that_crashes_on_the_text_is_a_recorded_invalid_step(ta: Any) -> None:
    env = make("textarena/TowerOfHanoi-v0")
    env.reset(0)
    game = env._ta  # type: ignore[attr-defined]

    def crash(action: str) -> None:
        raise IndexError("bad parse")

    real_step, game.step = game.step, crash
    result = env.step("[A")
    assert result.info == {"invalid_action": True, "game_error": "IndexError: bad parse"} and not result.terminated
    game.step = real_step
    assert not env.step("[A C]").info  # the game goes on
