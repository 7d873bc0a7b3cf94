"""Worked examples from shared/reference/credit.md, arithmetic in comments."""

import numpy as np
import pytest

from clew.credit import CreditInput, compute


def outcome_only(rewards: list[float], group: list[int] | None = None) -> CreditInput:
    """One single-turn episode per reward."""
    n = len(rewards)
    return CreditInput.from_arrays(group or [0] * n, range(n), [0] * n, rewards, rewards)


def close(a: np.ndarray, b: list[float], tol: float = 1e-4) -> None:
    np.testing.assert_allclose(a, b, atol=tol)


def test_grpo_binary_and_graded() -> None:
    # mean 0.5, unbiased std 0.57735 -> 0.5 / 0.57735 = 0.866
    close(compute("grpo", outcome_only([1, 0, 0, 1])).turn_advantage, [0.866, -0.866, -0.866, 0.866])
    # mean 0.5, std 0.3 -> [1, -1, 0]
    close(compute("grpo", outcome_only([0.8, 0.2, 0.5])).turn_advantage, [1, -1, 0])


def test_dr_grpo_drops_std() -> None:
    close(compute("grpo", outcome_only([1, 0, 0, 1]), scale_by_std=False).turn_advantage, [0.5, -0.5, -0.5, 0.5])
    close(compute("grpo", outcome_only([0.8, 0.2, 0.5]), scale_by_std=False).turn_advantage, [0.3, -0.3, 0])


def test_grpo_edge_cases() -> None:
    close(compute("grpo", outcome_only([1, 1, 1, 1])).turn_advantage, [0, 0, 0, 0])  # zero std -> 0
    close(compute("grpo", outcome_only([0.7])).turn_advantage, [0.7])  # group of 1: mean 0, std 1
    # population std of [1, 0]: 0.5 -> (1 - 0.5) / 0.5 = 1
    close(compute("grpo", outcome_only([1, 0]), unbiased_std=False).turn_advantage, [1, -1])


def test_grpo_stats_over_episode_vs_turn_rows() -> None:
    # Flow-GRPO example: episodes with 2, 3, 1 turns, R = [1, 0, 1]
    inp = CreditInput.from_arrays([0] * 6, [0, 0, 1, 1, 1, 2], [0, 1, 0, 1, 2, 0], [0] * 6, [1, 1, 0, 0, 0, 1])
    # per episode: mean 2/3, std 0.5774 -> +0.577, -1.155
    close(compute("grpo", inp).turn_advantage, [0.5774, 0.5774, -1.1547, -1.1547, -1.1547, 0.5774])
    # over 6 rows [1,1,0,0,0,1]: mean 0.5, std 0.5477 -> +-0.913
    close(
        compute("grpo", inp, stats_over="turn").turn_advantage,
        [0.9129, 0.9129, -0.9129, -0.9129, -0.9129, 0.9129],
    )


def test_rloo() -> None:
    # 4/3 * (1 - 0.5) = 0.6667
    close(compute("rloo", outcome_only([1, 0, 0, 1])).turn_advantage, [0.6667, -0.6667, -0.6667, 0.6667])
    close(compute("rloo", outcome_only([0.8, 0.2, 0.5])).turn_advantage, [0.45, -0.45, 0.0])
    close(compute("rloo", outcome_only([0.9])).turn_advantage, [0.0])  # vectorised verl: group of 1 -> 0


def test_reinforce_pp_token_whitening() -> None:
    # response A: 2 tokens, reward 1; B: 3 tokens, reward 0. Token mean 0.4, unbiased var 0.3.
    inp = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0], token_offsets=[0, 2, 5])
    close(compute("reinforce_pp", inp).turn_advantage, [1.0954, -0.7303])  # 0.6/sqrt(0.3), -0.4/sqrt(0.3)
    close(compute("reinforce_pp", inp, group_baseline=True).turn_advantage, [1.0954, -0.7303])


def test_reinforce_discounted_returns() -> None:
    inp = CreditInput.from_arrays([0] * 3, [0] * 3, [0, 1, 2], [0, 0, 1], [1] * 3)
    close(compute("reinforce", inp, gamma=0.9).turn_advantage, [0.81, 0.9, 1.0])


def gigpo_example() -> CreditInput:
    # tau1: (s0,a)->(s1,b)->success; tau2: (s0,c),(s0,a),(s1,b)->success; tau3: (s0,c) x3, fail
    return CreditInput.from_arrays(
        [0] * 8, [0, 0, 1, 1, 1, 2, 2, 2], [0, 1, 0, 1, 2, 0, 1, 2],
        [0, 1, 0, 0, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0, 0], [0, 1, 0, 0, 1, 0, 0, 0],
    )  # fmt: skip


def test_gigpo_mean_norm_code_default_stats() -> None:
    # episode over 8 step rows: mean 0.625 -> +0.375 / -0.625; s0 step group mean 0.46708
    credit = compute("gigpo", gigpo_example(), episode_stats_over="turn")
    close(credit.turn_advantage, [0.8579, 0.375, 0.8104, 0.8579, 0.375, -1.0921, -1.0921, -1.0921])
    close(credit.turn_return, [0.95, 1, 0.9025, 0.95, 1, 0, 0, 0])


def test_gigpo_mean_std_norm() -> None:
    # step std(s0) 0.51196, episode std 0.51755
    credit = compute("gigpo", gigpo_example(), mode="mean_std_norm", episode_stats_over="turn")
    close(credit.turn_advantage, [1.6678, 0.7246, 1.5751, 1.6678, 0.7246, -2.12, -2.12, -2.12])


def test_gigpo_paper_episode_stats() -> None:
    # per trajectory: mean 2/3 -> A^E = +0.3333 / -0.6667, plus the same step terms as above
    adv = compute("gigpo", gigpo_example()).turn_advantage
    close(adv, [0.8162, 0.3333, 0.7687, 0.8162, 0.3333, -1.1338, -1.1338, -1.1338])


def test_gigpo_edges_singletons_and_missing_keys() -> None:
    inp = CreditInput.from_arrays([0, 1], [0, 1], [0, 0], [1, 0], [1, 0], [5, -1])
    credit = compute("gigpo", inp)
    close(credit.turn_advantage, [1.0, 0.0])  # episode groups of 1 -> A^E = R; step groups of 1 -> 0
    assert credit.diagnostics["credit/anchor_group_size"] == 1.0


def test_turn_returns_mapo_mixed_example() -> None:
    # turn-0 returns across 3 rollouts {2, 1, 0}; batch {2, 1, 0, 1, 0.5}: mean 0.9, std 0.742
    inp = CreditInput.from_arrays([0] * 5, [0, 0, 1, 1, 2], [0, 1, 0, 1, 0], [1, 1, 0.5, 0.5, 0], [0] * 5)
    credit = compute("turn_returns", inp, normalize="mixed", mix=0.5, eps=0.0)
    assert credit.turn_advantage[0] == pytest.approx(1.241, abs=1e-3)  # 0.5*1 + 0.5*(1.1/0.742)


def test_turn_returns_mars_agent_pools() -> None:
    # one seat: game 1 won in 3 turns G=[1,1,1]; game 2 lost in 2 turns G=[-1,-1]
    inp = CreditInput.from_arrays([0] * 5, [0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [0, 0, 1, 0, -1], [1, 1, 1, -1, -1])
    close(compute("turn_returns", inp, normalize="agent").turn_advantage, [0.8, 0.8, 0.8, -1.2, -1.2])
    close(
        compute("turn_returns", inp, normalize="agent", distinct_values=True).turn_advantage,
        [1, 1, 1, -1, -1],
    )


def test_turn_returns_matchtir_turn_normaliser() -> None:
    # MatchTIR turn returns with gamma 0.9; turn-2 reached by one rollout keeps its raw value 0.8
    rewards = [0.5, 1.0, 1.0, 0.0, 0.8, 0.0, 0.2]
    inp = CreditInput.from_arrays([0] * 7, [0, 0, 1, 1, 1, 2, 2], [0, 1, 0, 1, 2, 0, 1], rewards, [0] * 7)
    credit = compute("turn_returns", inp, gamma=0.9)
    close(credit.turn_return, [1.4, 1.0, 1.648, 0.72, 0.8, 0.18, 0.2])
    # turn 0: mean 1.076, std 0.7858 -> (1.4 - 1.076) / 0.7858 = 0.4123
    assert credit.turn_advantage[0] == pytest.approx(0.4123, abs=1e-3)
    assert credit.turn_advantage[4] == pytest.approx(0.8)


def test_pure_min_form() -> None:
    inp = CreditInput.from_arrays([0] * 3, [0] * 3, [0, 1, 2], [0.8, -0.4, 0.6], [0] * 3, token_offsets=[0, 1, 2, 3])
    close(compute("pure", inp).turn_return, [-0.39995, -0.39995, 0.00003], tol=1e-5)
    close(compute("pure", inp, form="sum").turn_return, [1.0, 0.2, 0.6])
    close(compute("pure", inp, form="strict_min").turn_return, [-0.4, -0.4, 0.6])
    one = CreditInput.from_arrays([0], [0], [0], [0.3], [0])
    close(compute("pure", one, baseline="step").turn_return, [0.3])  # a single step: w = 1


def test_gated_reward_accumulation() -> None:
    # r_low = [0.1, 0.1, -0.1]; r_high = 1 >= 0.5 -> R = 1.1; r_high = -0.5 -> R = -0.5
    inp = CreditInput.from_arrays(
        [0] * 6, [0, 0, 0, 1, 1, 1], [0, 1, 2] * 2, [0.1, 0.1, -0.1] * 2, [1] * 3 + [-0.5] * 3,
        outcome_explicit=[True] * 6,
    )  # fmt: skip
    credit = compute("gated", inp, scale_by_std=False)
    close(credit.turn_return[[0, 3]], [1.1, -0.5])
    close(credit.turn_advantage, [0.8] * 3 + [-0.8] * 3)  # mean of {1.1, -0.5} = 0.3


def test_tempo_prefix_tree() -> None:
    # A=[1,2,3] r=1; B=[1,2,4] r=0; C=[1,5,6] r=1; D=[7,8,9] r=0; mean 0.5, std 0.5774
    tokens = [1, 2, 3, 1, 2, 4, 1, 5, 6, 7, 8, 9]
    inp = CreditInput.from_arrays(
        [0] * 4,
        range(4),
        [0] * 4,
        [1, 0, 1, 0],
        [1, 0, 1, 0],
        token_offsets=[0, 3, 6, 9, 12],
        token_ids=tokens,
    )
    credit = compute("tempo", inp)
    expected = [
        1.1547,
        0.5774,
        1.7321,
        -0.5774,
        -1.1547,
        -1.7321,
        1.1547,
        1.4434,
        0.8660,
        -1.7321,
        -0.8660,
        -0.8660,
    ]
    assert credit.token_advantage is not None
    close(credit.token_advantage, expected)


def test_tempo_across_turns_equals_single_row() -> None:
    """Splitting a response into turns does not change its token advantages."""
    tokens = [1, 2, 3, 1, 2, 4, 1, 5, 6, 7, 8, 9]
    whole = CreditInput.from_arrays(
        [0] * 4,
        range(4),
        [0] * 4,
        [1, 0, 1, 0],
        [1, 0, 1, 0],
        token_offsets=[0, 3, 6, 9, 12],
        token_ids=tokens,
    )
    split = CreditInput.from_arrays(
        [0] * 8, [0, 0, 1, 1, 2, 2, 3, 3], [0, 1] * 4, [0, 1, 0, 0, 0, 1, 0, 0], [1, 1, 0, 0, 1, 1, 0, 0],
        token_offsets=[0, 1, 3, 5, 6, 7, 9, 10, 12], token_ids=tokens,
    )  # fmt: skip
    assert np.allclose(compute("tempo", whole).token_advantage, compute("tempo", split).token_advantage)  # type: ignore[arg-type]


def test_empg_example() -> None:
    # base A = +-1 (Dr.GRPO on outcomes [1, -1]); entropies [0.2, 1.0], [0.6, 1.4]
    inp = CreditInput.from_arrays(
        [0] * 4,
        [0, 0, 1, 1],
        [0, 1, 0, 1],
        [0, 1, 0, -1],
        [1, 1, -1, -1],
        token_offsets=[0, 1, 2, 3, 4],
        entropy=[0.2, 1.0, 0.6, 1.4],
    )
    credit = compute("empg", inp, base="grpo", base_params={"scale_by_std": False})
    close(credit.turn_advantage, [1.4039, 0.6034, -1.2537, -0.7536])
    flat = CreditInput.from_arrays(
        [0] * 4,
        [0, 0, 1, 1],
        [0, 1, 0, 1],
        [0, 1, 0, -1],
        [1, 1, -1, -1],
        token_offsets=[0, 1, 2, 3, 4],
        entropy=[0.5] * 4,
    )
    # equal entropies: g = 1, non-final steps get +zeta, then centring
    adv = compute("empg", flat, base="grpo", base_params={"scale_by_std": False}).turn_advantage
    close(adv, [1.05, 0.95, -0.95, -1.05])
