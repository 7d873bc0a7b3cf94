"""Self-play: the policy plays every seat of a game; one episode, context and group per seat."""

import numpy as np
import pytest

from clew.credit import CreditInput, compute
from clew.envs import HasSeats, StepResult, make
from clew.rollout import Framing, RolloutConfig, ScriptedActor, Task, collect
from clew.table import TurnTable
from clew.types import Episode, Group, Turn

NIM = Task("textarena/Nim-v0", 3, {"opponent": "self"})


def _by_match(groups: list[Group]) -> dict[str, list[Episode]]:
    games: dict[str, list[Episode]] = {}
    for episode in sorted((e for g in groups for e in g.episodes), key=lambda e: e.agent or 0):
        assert episode.match is not None
        games.setdefault(episode.match, []).append(episode)
    return games


def test_textarena_self_play_env_hands_every_move_to_the_caller() -> None:
    env = make("textarena/Nim-v0", opponent="self")
    assert isinstance(env, HasSeats) and env.seats() == 2
    assert isinstance(make("textarena/Nim-v0"), HasSeats) and make("textarena/Nim-v0").seats() == 1
    first = env.reset(3)
    assert env.to_act() == 0 and "Player 0" in first
    seen = env.step("[0 2]").observation
    assert env.to_act() == 1 and "Player 1" in seen and "Player 0 removes 2 from pile 0" in seen
    env.step("[9 9]")  # invalid: the same seat moves again
    assert env.to_act() == 1
    with pytest.raises(ValueError, match="two-player"):
        make("textarena/TowerOfHanoi-v0", opponent="self")


def test_self_play_gives_each_seat_its_episode_and_group(tiny_policy) -> None:  # type: ignore[no-untyped-def]
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    actor = ScriptedActor("random", tokenizer=tiny_policy.tokenizer)
    tasks = [NIM, Task("textarena/Nim-v0", 4, {"opponent": "self"})]
    groups = collect(actor, tasks, RolloutConfig(group_size=3, max_turns=40), seed=1, framing=framing, group_offset=5)
    assert [(g.group_id, g.task_id) for g in groups] == [
        (5, NIM.task_id), (6, tasks[1].task_id), (7, NIM.task_id), (8, tasks[1].task_id)
    ]  # fmt: skip
    assert [{e.agent for e in g.episodes} for g in groups] == [{0}, {0}, {1}, {1}]
    games = _by_match(groups)
    assert len(games) == 6 and all(len(seats) == 2 for seats in games.values())
    for first, second in games.values():
        assert first.terminated and second.terminated
        assert sorted([first.outcome, second.outcome]) == [-1.0, 1.0]  # Nim ends with a winner: zero-sum
        assert first.success == (first.outcome > 0) and second.success == (second.outcome > 0)
        assert "Player 0" in first.first_observation and "Player 1" in second.first_observation
        for episode in (first, second):
            assert all(turn.info.get("agent") is None for turn in episode.turns)  # the seat is the episode's
            for before, after in zip(episode.turns, episode.turns[1:]):  # the seat's own context grows exactly
                assert after.prompt_ids[: len(before.prompt_ids) + len(before.action_ids)] == (
                    before.prompt_ids + before.action_ids
                )
                assert before.observation and before.observation in tiny_policy.tokenizer.decode(after.prompt_ids)
    table = TurnTable.from_groups(groups)
    assert table.agent is not None and set(table.agent.tolist()) == {0, 1}


def _replay(seats: list[Episode]) -> None:
    """Playing the recorded moves again, in the order the seats made them, gives each seat what it recorded: a
    move's observation is the view its seat got when it was next to act, or the game's last message."""
    env = make("textarena/Nim-v0", opponent="self")
    assert isinstance(env, HasSeats)
    first = env.reset(NIM.seed)
    assert seats[env.to_act()].first_observation == first
    moves = {seat: list(episode.turns) for seat, episode in enumerate(seats)}
    last: dict[int, Turn] = {}
    while any(moves.values()):
        seat = env.to_act()
        last[seat] = moves[seat].pop(0)
        result = env.step(last[seat].action_text)
        if result.terminated:
            assert all(turn.observation == result.observation for turn in last.values())
            assert env.verdicts() == [episode.outcome for episode in seats]
            assert not any(moves.values())
        elif env.to_act() in last:
            assert last[env.to_act()].observation == result.observation
        else:
            assert seats[env.to_act()].first_observation == result.observation


def test_self_play_episodes_replay_move_by_move() -> None:
    groups = collect(ScriptedActor("random"), [NIM], RolloutConfig(group_size=4, max_turns=40), seed=7)
    for seats in _by_match(groups).values():
        _replay(seats)


def test_a_budget_ends_every_seat() -> None:
    groups = collect(ScriptedActor("random"), [NIM], RolloutConfig(group_size=4, max_turns=2), seed=0)
    cut = [seats for seats in _by_match(groups).values() if seats[0].truncated]
    assert cut  # random play seldom empties Nim 3-4-5 in four moves
    for first, second in cut:
        assert second.truncated and {first.truncation_reason, second.truncation_reason} == {"max_turns"}
        assert first.outcome == second.outcome == 0.0 and not first.success and not second.success


class _Breaks:
    """Nim in self-play whose seat-1 moves raise: a policy failure of seat 1, infra for seat 0."""

    def __init__(self) -> None:
        self.inner = make("textarena/Nim-v0", opponent="self")

    def reset(self, seed: int) -> str:
        return str(self.inner.reset(seed))

    def step(self, action: str) -> StepResult:
        if self.inner.to_act() == 1:
            raise ValueError("bad move")
        return self.inner.step(action)  # type: ignore[no-any-return]

    def seats(self) -> int:
        return 2

    def to_act(self) -> int:
        return int(self.inner.to_act())

    def verdicts(self) -> list[float]:
        return list(self.inner.verdicts())

    def valid_actions(self) -> list[str]:
        return list(self.inner.valid_actions())


def test_a_failing_move_is_its_seats_fault_and_the_others_infra() -> None:
    groups = collect(
        ScriptedActor("random"), [NIM], RolloutConfig(group_size=1), seed=0, env_factory=lambda _id, **kw: _Breaks()
    )
    (first, second), = _by_match(groups).values()  # fmt: skip
    assert (first.failure, second.failure) == ("infra", "policy")
    assert len(first.turns) == 1 and second.turns[-1].info["invalid_action"]


def test_a_resumed_rollout_keeps_whole_games_only() -> None:
    cfg = RolloutConfig(group_size=1, max_turns=40)
    groups = collect(ScriptedActor("random"), [NIM], cfg, seed=3)
    first, second = groups[0].episodes[0], groups[1].episodes[0]
    again = collect(ScriptedActor("expert"), [NIM], cfg, seed=3, finished={(0, 0): first, (1, 0): second})
    assert again[0].episodes[0] is first and again[1].episodes[0] is second
    replayed = collect(ScriptedActor("expert"), [NIM], cfg, seed=3, finished={(0, 0): first})  # seat 1 was lost
    assert replayed[0].episodes[0] is not first and replayed[0].episodes[0].outcome == 1.0  # Nim 3-4-5: first wins


def _seat(agent: int, game: str, rewards: list[float], outcome: float) -> Episode:
    turns = [Turn([1], [2], [0.0], "[0 1]", reward=r) for r in rewards]
    return Episode("nim#0", 0, 0, turns, outcome, True, outcome_explicit=True, agent=agent, match=game)


def test_per_seat_credit_matches_the_mars_worked_example() -> None:
    """credit.md section 9: seat 0 won game A in 3 moves and lost game B in 2: G = [1,1,1,-1,-1]; occurrence-weighted
    pool mean 0.2 -> [0.8,0.8,0.8,-1.2,-1.2]; distinct-value mean 0 -> [1,1,1,-1,-1]. Seat 1 lost A (2 moves) and
    won B (2): [-1,-1,1,1] either way. Per-seat groups and one group with both seats agree (the agent pools)."""
    a0, a1 = _seat(0, "A", [0, 0, 0], 1.0), _seat(1, "A", [0, 0], -1.0)
    b0, b1 = _seat(0, "B", [0, 0], -1.0), _seat(1, "B", [0, 0], 1.0)
    per_seat = CreditInput.from_table(
        TurnTable.from_groups([Group(0, "nim#0", 0, [a0, b0]), Group(1, "nim#0", 0, [a1, b1])])
    )
    together = CreditInput.from_table(TurnTable.from_groups([Group(0, "nim#0", 0, [a0, b0, a1, b1])]))
    expected = [0.8, 0.8, 0.8, -1.2, -1.2, -1, -1, 1, 1]
    for inp in (per_seat, together):
        np.testing.assert_allclose(compute("turn_returns", inp, normalize="agent").turn_advantage, expected, atol=1e-9)
        distinct = compute("turn_returns", inp, normalize="agent", distinct_values=True).turn_advantage
        np.testing.assert_allclose(distinct, [1, 1, 1, -1, -1, -1, -1, 1, 1], atol=1e-9)
    # the plain per-seat GRPO baseline: each seat's two games, (R - mean) / std with the unbiased std sqrt(2)
    grpo = compute("grpo", per_seat).turn_advantage
    np.testing.assert_allclose(grpo, [0.7071] * 3 + [-0.7071] * 2 + [-0.7071] * 2 + [0.7071] * 2, atol=1e-4)
