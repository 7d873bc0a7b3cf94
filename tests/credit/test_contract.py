import numpy as np
import pytest

from clew.credit import CreditInput, available, compute
from clew.types import Episode, Group, Turn


def test_available_lists_metadata() -> None:
    names = available()
    for expected in [
        "reinforce",
        "grpo",
        "rloo",
        "reinforce_pp",
        "gigpo",
        "turn_returns",
        "empg",
        "pure",
        "gated",
        "tempo",
    ]:
        assert expected in names
    assert names["gigpo"].needs_state_keys and names["tempo"].needs_tokens and names["empg"].needs_entropy
    assert names["gigpo"].params["gamma"] == 0.95


def test_unknown_name_and_param_list_valid_ones() -> None:
    inp = CreditInput.from_arrays([0], [0], [0], [1.0], [1.0])
    with pytest.raises(ValueError, match=r"available: .*grpo"):
        compute("nope", inp)
    with pytest.raises(ValueError, match=r"valid: .*scale_by_std"):
        compute("grpo", inp, scale_by_sdt=False)
    with pytest.raises(ValueError, match="mode must be one of"):
        compute("gigpo", CreditInput.from_arrays([0], [0], [0], [1.0], [1.0], [0]), mode="median")


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"turn": [0, 0]}, "turn must count"),
        ({"reward": [1.0]}, "reward has length 1"),
        ({"outcome": [np.nan, 0.0]}, "outcome contains NaN"),
        ({"episode": [0, 1], "turn": [0, 0], "group": [0, 0], "outcome": [1, 2]}, None),
        ({"outcome": [1.0, 0.0]}, "outcome must be constant"),
    ],
)
def test_validation_names_the_field(kwargs: dict, message: str | None) -> None:
    base = {"group": [0, 0], "episode": [0, 0], "turn": [0, 1], "reward": [0.0, 1.0], "outcome": [1.0, 1.0]}
    base.update(kwargs)
    if message is None:
        CreditInput.from_arrays(**base)
        return
    with pytest.raises(ValueError, match=message):
        CreditInput.from_arrays(**base)


def test_non_contiguous_episodes_rejected() -> None:
    with pytest.raises(ValueError, match="contiguous"):
        CreditInput.from_arrays([0, 0, 0], [0, 1, 0], [0, 0, 0], [0, 0, 0], [0, 0, 0])


def test_from_groups_builds_columns() -> None:
    def ep(outcome: float, keys: list[str | None]) -> Episode:
        turns = [
            Turn([1], [2, 3], [-0.1, -0.2], "a", reward=0.0, state_key=k, token_entropies=[1.0, 2.0]) for k in keys
        ]
        turns[-1].reward = outcome
        return Episode("t", 0, 0, turns, outcome, True)

    groups = [Group(0, "t", 0, [ep(1.0, ["s0", "s1"]), ep(0.0, ["s0", None, "s2"])])]
    inp = CreditInput.from_groups(groups)
    assert inp.turn.tolist() == [0, 1, 0, 1, 2] and inp.episode.tolist() == [0, 0, 1, 1, 1]
    assert inp.state_key.tolist() == [0, 1, 0, -1, 2]
    assert inp.token_offsets is not None and inp.token_offsets.tolist() == [0, 2, 4, 6, 8, 10]
    assert inp.entropy is not None and inp.entropy.shape == (10,)
    credit = compute("gigpo", inp)
    assert credit.turn_advantage.shape == (5,)


def test_all_estimators_handle_one_turn_episodes_and_groups_of_one() -> None:
    inp = CreditInput.from_arrays(
        [0, 1, 1], [0, 1, 2], [0, 0, 0], [1.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0, 0, 0],
        token_offsets=[0, 2, 3, 5], entropy=[0.1, 0.2, 0.3, 0.4, 0.5], token_ids=[1, 2, 1, 1, 3],
        outcome_explicit=[True, True, True], gold_logprob=[-1.0, -2.0, np.nan], value=[0.1, 0.2, 0.3, 0.4, 0.5],
        baseline=[0.5, 0.0, 0.0], counterfactual_gain=[np.nan] * 3, privileged_logratio=[0.5, np.nan, -1.0],
        mode_logprob=[-1.0, np.nan, -2.0], mode_weight=[1.0, 0.0, 1.0], prm_logratio=[0.3, -0.2, 0.1],
        branch_value=[np.nan] * 3, segment_start=[True, True, True], logprob=[-0.1, -2.0, -0.5, -0.3, -1.0],
    )  # fmt: skip
    for name in available():
        credit = compute(name, inp)
        assert credit.turn_advantage.shape == (3,) and np.all(np.isfinite(credit.turn_advantage)), name


def test_empty_batch() -> None:
    inp = CreditInput.from_arrays(
        [],
        [],
        [],
        [],
        [],
        token_offsets=[0],
        entropy=[],
        token_ids=[],
        outcome_explicit=[],
        gold_logprob=[],
        value=[],
        baseline=[],
        counterfactual_gain=[],
        privileged_logratio=[],
        mode_logprob=[],
        mode_weight=[],
        prm_logratio=[],
        branch_value=[],
        segment_start=[],
        logprob=[],
    )
    for name in available():
        assert compute(name, inp).turn_advantage.shape == (0,), name
