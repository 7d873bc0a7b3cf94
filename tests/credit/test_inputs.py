"""What credit is fed: explicit outcomes (G-RA), penalties after returns (GiGPO), needs that act."""

from __future__ import annotations

import numpy as np
import pytest

from clew.credit import CreditInput, compute
from clew.trainer.config import load_config
from clew.trainer.session import check_env_serves


def _gigpo_input(penalty: list[float] | None = None) -> CreditInput:
    """The GiGPO worked example of shared/reference/credit.md section 8 (gamma 0.95; states s0=0, s1=1),
    with tau3 cut to two s0 steps: tau1 s0->s1->win, tau2 s0->s0->s1->win, tau3 s0->s0, fail."""
    return CreditInput.from_arrays(
        group=[0] * 7, episode=[0, 0, 1, 1, 1, 2, 2], turn=[0, 1, 0, 1, 2, 0, 1], reward=[0, 1, 0, 0, 1, 0, 0],
        outcome=[1, 1, 1, 1, 1, 0, 0], state_key=[0, 1, 0, 0, 1, 0, 0], penalty=penalty,
    )  # fmt: skip


def test_penalty_hits_only_its_own_row_after_returns() -> None:
    plain = compute("gigpo", _gigpo_input())
    charged = compute("gigpo", _gigpo_input([0, 0, 0, 0, 0, 0, 0.1]))  # tau3's second (invalid) step
    # A^E (paper form, mean_norm): outcomes [1, 1, 0], mean 2/3 -> tau3 gets -0.66667.
    # s0 step group: returns {0.95, 0.9025, 0.95, 0, 0}, mean 0.5605 -> tau3's step: -0.5605.
    # Its advantage: -0.66667 - 0.5605 - 0.1 (penalty, undiscounted, this row only) = -1.32717.
    assert charged.turn_advantage[6] == pytest.approx(-2 / 3 - 0.5605 - 0.1, abs=1e-9)
    np.testing.assert_allclose(charged.turn_advantage[:6], plain.turn_advantage[:6], atol=0)
    np.testing.assert_allclose(charged.turn_return, plain.turn_return, atol=0)  # returns untouched


def test_penalty_reaches_every_token_of_token_level_credit() -> None:
    inp = CreditInput.from_arrays(
        [0, 0], [0, 1], [0, 0], [1, 0], [1, 0], token_offsets=[0, 2, 5], token_ids=[1, 2, 1, 3, 4], penalty=[0.0, 0.25]
    )
    plain = compute("tempo", CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0], token_offsets=[0, 2, 5],
                                                      token_ids=[1, 2, 1, 3, 4]))  # fmt: skip
    charged = compute("tempo", inp)
    assert charged.token_advantage is not None and plain.token_advantage is not None
    np.testing.assert_allclose(charged.token_advantage - plain.token_advantage, [0, 0, -0.25, -0.25, -0.25])


def test_gated_reads_the_env_outcome_not_the_reward_sum() -> None:
    # ep0: r_low [0.1, 0.1, -0.1], r_high 1 >= 0.5 -> R = 1 + 0.1 = 1.1
    # ep1: r_low [0.1, 0.1], r_high -0.5 < 0.5 -> gate closed, R = -0.5
    # GRPO over R: mean 0.3, unbiased std 1.6 / sqrt(2) = 1.131371 -> A = +-0.8 / 1.131371 = +-0.707106
    inp = CreditInput.from_arrays(
        [0] * 5, [0, 0, 0, 1, 1], [0, 1, 2, 0, 1], [0.1, 0.1, -0.1, 0.1, 0.1], [1, 1, 1, -0.5, -0.5],
        outcome_explicit=[True] * 5,
    )  # fmt: skip
    credit = compute("gated", inp)
    np.testing.assert_allclose(credit.turn_advantage, [0.707106] * 3 + [-0.707106] * 2, atol=1e-5)


def test_gated_refuses_an_outcome_that_is_only_the_reward_sum() -> None:
    inp = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0])
    with pytest.raises(ValueError, match="needs the outcome_explicit column"):
        compute("gated", inp)


def test_state_key_estimators_refuse_keyless_input() -> None:
    inp = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0])  # state_key all -1
    with pytest.raises(ValueError, match="no turn has a state key"):
        compute("gigpo", inp)


def test_trainer_refuses_an_env_without_state_keys_for_gigpo() -> None:
    cfg = load_config(None, ["credit.name=gigpo", "env.id=tests.test_table:ReportsOutcome"])
    with pytest.raises(ValueError, match="has no state_key"):
        check_env_serves(cfg)
    check_env_serves(load_config(None, ["credit.name=gigpo", "env.id=keydoor-v0"]))  # keydoor has keys


def test_gated_gives_an_episode_cut_short_no_outcome() -> None:
    # ep0 reported r_high 1 with r_low [0.5] -> R = 1.5; ep1 was cut short (no report; its "outcome" 0.5 is
    # only its reward sum) -> r_high 0, gate closed -> R = 0. GRPO: mean 0.75, std 1.5/sqrt(2) -> A = +-0.707107
    inp = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [0.5, 0.5], [1.0, 0.5], outcome_explicit=[True, False])
    credit = compute("gated", inp)
    np.testing.assert_allclose(credit.turn_advantage, [0.707106, -0.707106], atol=1e-5)
    np.testing.assert_allclose(credit.turn_return, [1.5, 0.0])


def test_empg_charges_a_penalty_once() -> None:
    cols = dict(
        group=[0, 0], episode=[0, 1], turn=[0, 0], reward=[1, 0], outcome=[1, 0],
        token_offsets=[0, 2, 4], entropy=[0.1, 0.2, 0.3, 0.4],
    )  # fmt: skip
    plain = compute("empg", CreditInput.from_arrays(**cols))
    charged = compute("empg", CreditInput.from_arrays(**cols, penalty=[0.0, 0.3]))
    np.testing.assert_allclose(charged.turn_advantage - plain.turn_advantage, [0.0, -0.3], atol=1e-12)


def test_step_return_estimators_see_an_env_outcome_as_a_final_reward() -> None:
    # step rewards [0.1, 0.1] and a reported outcome 1 -> rewards [0.1, 1.1]; gamma 1 returns [1.2, 1.1]
    inp = CreditInput.from_arrays([0, 0], [0, 0], [0, 1], [0.1, 0.1], [1, 1], outcome_explicit=[True, True])
    np.testing.assert_allclose(compute("reinforce", inp).turn_return, [1.2, 1.1])
