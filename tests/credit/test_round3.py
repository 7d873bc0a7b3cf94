"""Correctness round 3: penalty placement (GiGPO, DAPO), context edits in the discount, REINFORCE++ KL-in-reward."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from clew.credit import CreditInput, compute
from tests.credit.test_worked_examples import gigpo_example

TAU3_LAST_INVALID = [0.0] * 7 + [0.1]


def _cost(mode: str, stats_over: str, placement: str) -> float:
    """What the invalid last turn of tau3 costs that turn's advantage, against no penalty."""
    plain = compute("gigpo", gigpo_example(), mode=mode, episode_stats_over=stats_over)
    inp = dataclasses.replace(gigpo_example(), penalty=np.array(TAU3_LAST_INVALID))
    charged = compute("gigpo", inp, mode=mode, episode_stats_over=stats_over, penalty_placement=placement)
    return float(charged.turn_advantage[7] - plain.turn_advantage[7])


@pytest.mark.parametrize(
    ("mode", "stats_over", "placement", "cost"),
    [
        # after credit, on its own row only: exactly the coefficient, whatever the statistics
        ("mean_norm", "turn", "advantage", -0.100),
        ("mean_std_norm", "episode", "advantage", -0.100),
        # verl-agent: row score 0 - 0.1 vs row mean 4.9/8 = 0.6125 (-0.0875); its return 0 -> -0.1 in the
        # s0 anchor group {0.95, 0.9025, 0.95, 0, 0, -0.1}, mean 0.45042 (-0.0833): -0.171 in all
        ("mean_norm", "turn", "statistics", -0.171),
        ("mean_std_norm", "turn", "statistics", -0.246),
        # per episode: tau3 scores -0.1, mean 1.9/3 = 0.6333 (-0.0667), plus the same -0.0833 step term
        ("mean_norm", "episode", "statistics", -0.150),
        ("mean_std_norm", "episode", "statistics", -0.123),
    ],
)
def test_gigpo_invalid_action_penalty_placements(mode: str, stats_over: str, placement: str, cost: float) -> None:
    assert _cost(mode, stats_over, placement) == pytest.approx(cost, abs=5e-4)


def test_statistics_placement_leaves_nothing_for_compute_to_charge() -> None:
    inp = dataclasses.replace(gigpo_example(), penalty=np.array(TAU3_LAST_INVALID))
    credit = compute("gigpo", inp, penalty_placement="statistics")
    assert credit.penalty_charged
    assert "credit/penalty_mean" not in credit.diagnostics  # charge_penalties did not run on top


def test_grpo_penalty_in_statistics_moves_the_group() -> None:
    # one-turn episodes, outcomes [1, 1, 0, 0]; the first is penalised 0.5 (an overlong answer): scores
    # [0.5, 1, 0, 0], mean 0.375 -> Dr.GRPO advantages [0.125, 0.625, -0.375, -0.375]
    inp = CreditInput.from_arrays([0] * 4, [0, 1, 2, 3], [0] * 4, [0] * 4, [1, 1, 0, 0], penalty=[0.5, 0, 0, 0])
    stats = compute("grpo", inp, scale_by_std=False, penalty_placement="statistics").turn_advantage
    np.testing.assert_allclose(stats, [0.125, 0.625, -0.375, -0.375])
    after = compute("grpo", inp, scale_by_std=False).turn_advantage  # mean 0.5: [0.5 - 0.5, 0.5, -0.5, -0.5]
    np.testing.assert_allclose(after, [0.0, 0.5, -0.5, -0.5])


def test_penalty_placement_is_validated() -> None:
    with pytest.raises(ValueError, match="penalty_placement must be one of"):
        compute("gigpo", gigpo_example(), penalty_placement="reward")


def test_context_edit_turns_add_no_discount_step() -> None:
    # rows: a0, a1, a2, a3, summary, a4 (win, reward 1); gamma 0.95 counts env steps only
    # a0 is 4 env steps before the win: 0.95^4 = 0.81451 (not 0.95^5); the summary takes a4's return 1
    n = 6
    inp = CreditInput.from_arrays(
        [0] * n, [0] * n, range(n), [0, 0, 0, 0, 0, 1], [1] * n, env_step=[True, True, True, True, False, True]
    )
    returns = compute("reinforce", inp, gamma=0.95).turn_return
    np.testing.assert_allclose(returns, [0.95**4, 0.95**3, 0.95**2, 0.95, 1.0, 1.0])


@pytest.mark.parametrize(
    ("name", "params"),
    [("reinforce", {"gamma": 0.9}), ("gigpo", {}), ("turn_returns", {"gamma": 0.9}), ("matchtir", {}),
     ("reinforce_pp", {"gamma": 0.9, "discount_over": "turn"}), ("reinforce_pp", {"gamma": 0.9})],
)  # fmt: skip
def test_edits_between_steps_do_not_change_env_step_returns(name: str, params: dict) -> None:
    # the same two episodes with and without a 3-token summary row: the env steps' returns are equal
    plain = CreditInput.from_arrays(
        [0] * 5, [0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [0, 0, 1, 0, 0], [1, 1, 1, 0, 0], [0, 1, 2, 0, 1],
        token_offsets=[0, 2, 4, 6, 8, 10], token_ids=[1] * 10,
    )  # fmt: skip
    edited = CreditInput.from_arrays(
        [0] * 6, [0, 0, 0, 0, 1, 1], [0, 1, 2, 3, 0, 1], [0, 0, 0, 1, 0, 0], [1, 1, 1, 1, 0, 0],
        [0, 7, 1, 2, 0, 1], env_step=[True, False, True, True, True, True],
        token_offsets=[0, 2, 5, 7, 9, 11, 13], token_ids=[1] * 13,
    )  # fmt: skip
    keep = [0, 2, 3, 4, 5]
    np.testing.assert_allclose(
        compute(name, edited, **params).turn_return[keep], compute(name, plain, **params).turn_return
    )


def _kl_example(**extra: object) -> CreditInput:
    # response A: 2 tokens, reward 1; B: 3 tokens, reward 0 (single-turn, one group)
    return CreditInput.from_arrays(
        [0, 0], [0, 1], [0, 0], [1, 0], [1, 0], token_offsets=[0, 2, 5], token_ids=[5, 6, 7, 8, 9],
        logprob=[-1.0, -1.0, -1.0, -1.0, -1.0], ref_logprob=[-1.2, -1.4, -1.1, -1.0, -1.3], **extra,
    )  # fmt: skip


def test_reinforce_pp_kl_in_reward_worked_example() -> None:
    # KL per token A [0.2, 0.4], B [0.1, 0, 0.3]; beta 0.1: token rewards [-0.02, 0.96], [-0.01, 0, -0.03];
    # returns [0.94, 0.96], [-0.04, -0.03, -0.03]; mean 0.36, unbiased var 1.1606 / 4 = 0.29015
    credit = compute("reinforce_pp", _kl_example(), kl_coef=0.1)
    assert credit.token_advantage is not None
    np.testing.assert_allclose(credit.token_advantage, [1.0768, 1.1139, -0.7426, -0.7240, -0.7240], atol=1e-4)
    np.testing.assert_allclose(credit.turn_return, [0.94, -0.04], atol=1e-12)


def test_reinforce_pp_kl_zero_is_todays_estimator_and_turn_form_sums_the_kl() -> None:
    plain = compute("reinforce_pp", _kl_example())
    np.testing.assert_allclose(compute("reinforce_pp", _kl_example(), kl_coef=0.0).turn_advantage, plain.turn_advantage)
    # per turn: A 1 - 0.1 * 0.6 = 0.94, B 0 - 0.1 * 0.4 = -0.04
    turn = compute("reinforce_pp", _kl_example(), kl_coef=0.1, discount_over="turn")
    np.testing.assert_allclose(turn.turn_return, [0.94, -0.04])


def test_reinforce_pp_kl_needs_reference_logprobs() -> None:
    inp = dataclasses.replace(_kl_example(), ref_logprob=None)
    with pytest.raises(ValueError, match="ref_logprob"):
        compute("reinforce_pp", inp, kl_coef=0.1)
    from clew.credit import get

    assert get("reinforce_pp").needs_reference({"kl_coef": 0.1})
    assert not get("reinforce_pp").needs_reference({})
    assert not get("grpo").needs_reference({"kl_coef": 0.1})


def test_context_edit_turns_reach_credit_as_non_env_steps() -> None:
    from clew.types import Episode, Group, Turn

    turns = [Turn([1], [2], [0.0], "a"), Turn([1], [3], [0.0], "summary"), Turn([1], [4], [0.0], "b", reward=1.0)]
    turns[1].context_edit = "summary"
    inp = CreditInput.from_groups([Group(0, "t", 0, [Episode("t", 0, 0, turns, outcome=1.0, terminated=True)])])
    assert inp.env_step is not None and inp.env_step.tolist() == [True, False, True]
    np.testing.assert_allclose(compute("reinforce", inp, gamma=0.5).turn_return, [0.5, 1.0, 1.0])
