"""dial-v0: each dial does what its docstring says, and the env meets the contract at its extremes."""

from __future__ import annotations

import pytest

from clew.credit import CreditInput, compute
from clew.envs import check_env
from clew.envs.library.dial import ACTIONS, Dial, cue_mapping
from clew.rollout import RolloutConfig, ScriptedActor, Task, collect


def _against(env: Dial, step: int) -> str:
    """A valid action other than the way the sign shows at ``step`` (wrong there if the step is decisive)."""
    return next(a for a in env.actions if a != env.mapping[env.signs[step]])


def _play(env: Dial, seed: int, policy: dict[int, str] | None = None) -> list[tuple[float, str, dict]]:
    """Play one episode: the expert, except at the steps in ``policy``; (reward, state key before, info) per step."""
    env.reset(seed)
    rows = []
    for t in range(env.horizon):
        key = env.state_key()
        result = env.step((policy or {}).get(t, env.expert_action()))
        rows.append((result.reward, key, result.info))
    assert result.terminated and not result.truncated
    return rows


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"horizon": 1}, r"dial horizon must be in \[2, 200\], got 1"),
        ({"horizon": 201}, r"dial horizon must be in \[2, 200\], got 201"),
        ({"horizon": 10, "decisive": 11}, r"dial decisive must be in \[1, 10\], got 11"),
        ({"decisive": 0}, r"dial decisive must be in \[1, 25\], got 0"),
        ({"repeat": 1.5}, r"dial repeat must be in \[0, 1\], got 1.5"),
        ({"dense": -0.1}, r"dial dense must be in \[0, 1\], got -0.1"),
        ({"choices": 5}, r"dial choices must be in \[2, 4\], got 5"),
        ({"cue": "sound"}, r"dial cue must be 'arrow' or 'colour', got 'sound'"),
    ],
)
def test_dials_out_of_range_name_the_field_and_range(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Dial(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"horizon": 2, "decisive": 1},
        {"horizon": 12, "decisive": 12, "choices": 2},
        {"horizon": 30, "decisive": 3, "repeat": 0.5, "dense": 0.5, "choices": 4},
        {"horizon": 100, "decisive": 1, "repeat": 0.0, "dense": 1.0},
        {"horizon": 20, "decisive": 5, "cue": "colour", "mapping_seed": 3},
    ],
)
def test_check_env_passes_at_the_extremes(kwargs: dict) -> None:
    assert check_env(Dial(**kwargs), seeds=(0, 1, 2), max_steps=120).episodes == 3


def test_the_episode_runs_exactly_the_horizon_and_the_expert_wins() -> None:
    for kwargs in [{"horizon": 10}, {"horizon": 50, "decisive": 7, "repeat": 0.0}, {"horizon": 5, "decisive": 5}]:
        env = Dial(**kwargs)  # type: ignore[arg-type]
        for seed in range(20):
            rows = _play(env, seed)
            assert len(rows) == env.horizon and env.steps == env.horizon
            assert rows[-1][2]["success"] is True and sum(r for r, _, _ in rows) == pytest.approx(1.0)


def test_decisive_positions_and_cues_are_drawn_from_the_task_seed() -> None:
    env, other = Dial(horizon=20, decisive=3), Dial(horizon=20, decisive=3)
    env.reset(7)
    other.reset(7)
    assert env.decisive_steps == other.decisive_steps and env.signs == other.signs  # a group shares its seed
    assert len(env.decisive_steps) == 3 and all(0 <= t < 20 for t in env.decisive_steps)
    positions = set()
    for seed in range(10):
        env.reset(seed)
        positions.add(tuple(env.decisive_steps))
    assert len(positions) == 10  # 1140 possible placements: ten seeds give ten different ones
    env = Dial(horizon=6, decisive=6)
    env.reset(0)
    assert env.decisive_steps == list(range(6))  # decisive = horizon: every step decides


def test_the_sign_shows_the_way_and_says_whether_it_counts() -> None:
    env = Dial(horizon=6, decisive=1)
    observation = env.reset(2)
    (decisive,) = env.decisive_steps
    for t in range(6):
        rule = "only its way counts." if t == decisive else "any way will do."
        assert f"Step {t + 1} of 6. Tag " in observation
        assert f"The sign points {env.expert_action()}: {rule}" in observation
        observation = env.step(env.expert_action()).observation
    assert observation == "The trail is done: every sign that counted was followed.\nStep 6 of 6 is over."


def test_a_colour_sign_hides_the_way_behind_a_fixed_mapping() -> None:
    assert cue_mapping(3, "arrow") == {"up": "up", "down": "down", "left": "left"}
    mapping = cue_mapping(3, "colour", mapping_seed=0)
    assert sorted(mapping.values()) == ["down", "down", "left", "left", "up", "up"]  # two colours for each way
    assert cue_mapping(3, "colour", 0) == mapping and Dial(cue="colour").mapping == mapping
    assert any(cue_mapping(3, "colour", s) != mapping for s in range(1, 5))
    assert set(cue_mapping(4, "colour", 1).values()) == set(ACTIONS)
    env = Dial(horizon=4, decisive=4, cue="colour")
    first = env.reset(0)
    assert f"The sign is {env.signs[0]}: only its way counts." in first
    assert env.expert_action() == mapping[env.signs[0]] and _play(env, 0)[-1][2]["success"] is True


def test_only_decisive_choices_decide_and_a_mistake_is_silent() -> None:
    env = Dial(horizon=12, decisive=2)
    env.reset(3)
    first, second = env.decisive_steps
    filler = next(t for t in range(12) if t not in env.decisive_steps)
    others = {t: _against(env, t) for t in range(12) if t not in env.decisive_steps}
    assert _play(env, 3, others)[-1][2]["success"] is True  # against the sign at every other step
    assert _play(env, 3, {filler: "dance"})[-1][2]["success"] is True  # even an invalid one
    assert [t for t, (_, _, info) in enumerate(_play(env, 3)) if info["decisive"]] == [first, second]
    right, wrong = Dial(horizon=12, decisive=2), Dial(horizon=12, decisive=2)
    right.reset(3)
    wrong.reset(3)
    for _ in range(second):
        right.step(right.expert_action())
        wrong.step(wrong.expert_action())
    after_right, after_wrong = right.step(right.expert_action()), wrong.step(_against(wrong, second))
    assert after_wrong.observation == after_right.observation  # silent: the same text (tags shared at repeat=1)
    assert not after_wrong.terminated and after_wrong.reward == after_right.reward == 0.0
    rows = _play(env, 3, {first: "dance"})  # invalid text at a decisive step is a wrong choice
    assert rows[first][2] == {"decisive": True, "invalid_action": True} and rows[-1][2]["success"] is False
    assert len(rows) == 12 and sum(r for r, _, _ in rows) == 0.0


@pytest.mark.parametrize(
    ("dense", "win", "lose"),
    [
        (0.0, [0, 0, 1.0], [0, 0, 0]),  # the outcome alone, on the last step
        (0.5, [0.25, 0.25, 0.5], [0.25, 0, 0]),  # 0.5 / 2 per right choice, the other 0.5 at the end on success
        (1.0, [0.5, 0.5, 0], [0.5, 0, 0]),
    ],
)
def test_dense_pays_a_share_of_the_outcome_at_right_decisive_steps(dense: float, win: list, lose: list) -> None:
    env = Dial(horizon=9, decisive=2, dense=dense)
    env.reset(4)
    first, second = env.decisive_steps
    assert second < 8  # seed 4: neither decisive step is the last one, so the three payments are apart
    rows = _play(env, 4)
    assert [rows[first][0], rows[second][0], rows[-1][0]] == pytest.approx(win)
    assert sum(r for r, _, _ in rows) == pytest.approx(sum(win))
    env.reset(4)
    lost = _play(env, 4, {second: _against(env, second)})
    assert [lost[first][0], lost[second][0], lost[-1][0]] == pytest.approx(lose)
    assert lost[-1][2]["success"] is False


@pytest.mark.parametrize("dense", [0.0, 0.5, 1.0])
def test_the_outcome_is_counted_once_through_the_rollout(dense: float) -> None:
    cfg = RolloutConfig(group_size=1, max_turns=40)
    task = Task("dial-v0", 2, {"horizon": 30, "decisive": 3, "dense": dense})
    (group,) = collect(ScriptedActor("expert"), [task], cfg, seed=0)
    (episode,) = group.episodes
    credit = compute("reinforce", CreditInput.from_groups([group]), gamma=1.0)
    assert episode.success and episode.outcome == pytest.approx(1.0)
    assert credit.turn_return[0] == pytest.approx(1.0)


def test_repeat_1_gives_one_key_per_situation_across_episodes_of_a_seed() -> None:
    env = Dial(horizon=15, decisive=2, repeat=1.0)
    env.reset(5)
    fillers = [t for t in range(15) if t not in env.decisive_steps]
    expert = [key for _, key, _ in _play(env, 5)]
    other = [key for _, key, _ in _play(env, 5, {t: _against(env, t) for t in fillers})]  # against every free sign
    assert expert == other and all(k.endswith("|shared") for k in expert)
    lost = [key for _, key, _ in _play(env, 5, {env.decisive_steps[0]: "dance"})]
    cut = env.decisive_steps[0] + 1  # after the mistake the episode is in other states: lost
    assert lost[:cut] == expert[:cut] and all("|lost|" in k for k in lost[cut:]) and set(lost[cut:]).isdisjoint(expert)


def test_repeat_0_shares_no_key_once_the_actions_differ() -> None:
    env = Dial(horizon=15, decisive=2, repeat=0.0)
    env.reset(5)
    fillers = [t for t in range(15) if t not in env.decisive_steps]
    expert = [key for _, key, _ in _play(env, 5)]
    first_filler = fillers[0]
    other = [key for _, key, _ in _play(env, 5, {first_filler: _against(env, first_filler)})]
    assert other[: first_filler + 1] == expert[: first_filler + 1]  # the same actions so far: the same state
    assert set(other[first_filler + 1 :]).isdisjoint(expert)
    assert expert == [key for _, key, _ in _play(env, 5)]  # the same actions: the same keys (deterministic)


def test_repeat_sets_the_share_of_shared_tags() -> None:
    for repeat in (0.0, 0.25, 0.5, 1.0):
        env = Dial(horizon=200, decisive=1, repeat=repeat)
        keys = [key for seed in range(10) for _, key, _ in _play(env, seed)]
        shared = sum(k.endswith("|shared") for k in keys) / len(keys)
        assert shared == pytest.approx(repeat, abs=0.04), (repeat, shared)  # 2,000 stable hash draws


def test_the_tag_is_always_shown_and_looks_alike_at_every_repeat() -> None:
    for repeat in (0.0, 1.0):
        env = Dial(horizon=10, repeat=repeat)
        first = env.reset(0)
        assert first.startswith("Step 1 of 10. Tag ") and first.endswith("Actions: up, down, left.")


@pytest.mark.parametrize(("repeat", "low", "high"), [(1.0, 0.9, 1.0), (0.0, 0.0, 0.35)])
def test_gigpo_anchor_groups_form_only_when_states_repeat(repeat: float, low: float, high: float) -> None:
    """Random play, G = 8, three actions: with repeat=1 nearly every row shares its anchor state; with
    repeat=0 only rows whose episodes acted alike so far do (mostly the first steps)."""
    cfg = RolloutConfig(group_size=8, max_turns=20)
    tasks = [Task("dial-v0", seed, {"horizon": 12, "decisive": 2, "repeat": repeat}) for seed in range(4)]
    groups = collect(ScriptedActor("random"), tasks, cfg, seed=0)
    credit = compute("gigpo", CreditInput.from_groups(groups))
    assert low <= credit.diagnostics["credit/anchor_rows_grouped"] <= high, credit.diagnostics
