"""Anchor states beyond exact matches: normalised text, TF-IDF / hidden-state similarity, leader clustering."""

from __future__ import annotations

import numpy as np
import pytest

from clew.credit import CreditInput, compute, get
from clew.credit.anchors import (
    leader_clusters,
    normalize_observation,
    normalized_keys,
    similarity_keys,
    tfidf_features,
    tokens,
)
from clew.trainer.config import load_config
from tests.credit.test_worked_examples import gigpo_example

# gigpo_example's states as text: s0 answered with volatile numbers and spacing, s1 with the same words
TEXTS = ["You are in room 3.", "Door at 0x1F, go?", "you are in  Room 12.", "YOU ARE IN ROOM 7.",
         "door at 0xab, go?", "You are in room 3.", "you are in room 4.", "You  are in room 3."]  # fmt: skip


def _with_text(texts: list[str], state_vector: np.ndarray | None = None) -> CreditInput:
    base = gigpo_example()
    return CreditInput.from_arrays(*_columns(), base.state_key, observation_text=texts, state_vector=state_vector)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Room 12:  You see\tA KEY at (3, 4).\n", "room #: you see a key at (#, #)."),
        ("session 550E8400-e29b-41d4-a716-446655440000 open", "session <id> open"),
        ("obj 0xDEADbeef, deadbeef, 1a2b3c4d5e and 12345678", "obj <id>, deadbeef, <id> and #"),
        ("pi is 3.25 and cafe is a word", "pi is #.# and cafe is a word"),
        ("   ", ""),
    ],
)
def test_normalisation_rule(text: str, normalized: str) -> None:
    assert normalize_observation(text) == normalized


def test_tokens_are_word_unigrams_with_markers() -> None:
    assert tokens("room #: door <id>, go_on?") == ["room", "#", "door", "<id>", "go_on"]


def test_leader_clustering_by_hand() -> None:
    # group 0, visited in row order, tau 0.75 (unit vectors, so cos = dot):
    #   r0 (1, 0)     -> leader A
    #   r1 (.8, .6)   cos A = .8 >= .75 -> joins A
    #   r2 (0, 1)     cos A = 0 -> leader B
    #   r3 (.6, .8)   cos A = .6 < .75; cos B = .8 -> joins B (though cos r1 = .96: members never attract)
    # group 1: r4 (1, 0) equals r0 but is in another episode group -> leader C
    vectors = np.array([[1, 0], [0.8, 0.6], [0, 1], [0.6, 0.8], [1, 0]])
    assert leader_clusters(vectors, np.array([0, 0, 0, 0, 1]), 0.75).tolist() == [0, 0, 1, 1, 2]
    # the first leader wins: r3 joins A too when tau is 0.6 (cos A = .6), r2 then alone stays B
    assert leader_clusters(vectors, np.array([0, 0, 0, 0, 1]), 0.6).tolist() == [0, 0, 1, 0, 2]


def test_leader_clustering_visits_episode_then_turn_order() -> None:
    # rows stored episode 1 first: (episode 0, turn 0) is visited first and leads, whatever the row order
    vectors = np.array([[0.6, 0.8], [1, 0], [0.8, 0.6]])
    episode, turn, group = np.array([1, 0, 0]), np.array([0, 0, 1]), np.zeros(3, dtype=np.int64)
    # visit order: row 1 (1, 0) leads; row 2 cos .8 joins it; row 0 cos .6 < .75 -> own leader
    keys = similarity_keys(vectors, group, episode, turn, 0.75)
    assert keys[1] == keys[2] != keys[0]


def test_zero_vectors_group_with_each_other_only() -> None:
    assert leader_clusters(np.array([[0.0, 0.0], [1, 0], [0, 0]]), np.zeros(3), 1.0).tolist() == [0, 1, 0]


def test_exact_is_bit_identical_to_the_default_and_the_worked_example() -> None:
    default = compute("gigpo", gigpo_example())
    exact = compute("gigpo", gigpo_example(), state_grouping="exact", state_features="hidden", state_similarity=0.5)
    assert np.array_equal(default.turn_advantage, exact.turn_advantage)
    assert np.array_equal(default.turn_return, exact.turn_return)
    # shared/reference/credit.md section 8, paper episode statistics (tests/credit/test_worked_examples.py)
    np.testing.assert_allclose(
        exact.turn_advantage, [0.8162, 0.3333, 0.7687, 0.8162, 0.3333, -1.1338, -1.1338, -1.1338], atol=1e-4
    )
    assert exact.anchor_group is not None and exact.anchor_group.tolist() == [0, 1, 0, 0, 1, 0, 0, 0]


def test_normalized_text_rebuilds_the_state_groups() -> None:
    # TEXTS normalise to "you are in room #." (s0) and "door at <id>, go?" (s1): the worked example's groups
    assert normalized_keys(TEXTS).tolist() == [0, 1, 0, 0, 1, 0, 0, 0]
    keyless = CreditInput.from_arrays(*_columns(), observation_text=TEXTS)  # no state keys at all
    by_text = compute("gigpo", keyless, state_grouping="normalized")
    assert np.array_equal(by_text.turn_advantage, compute("gigpo", gigpo_example()).turn_advantage)
    assert by_text.diagnostics["credit/anchor_rows_grouped"] == 1.0
    assert by_text.diagnostics["credit/anchor_group_size"] == pytest.approx((6 * 6 + 2 * 2) / 8)  # s0: 6, s1: 2


def test_tau_one_tfidf_equals_normalized() -> None:
    inp = _with_text(TEXTS)
    normalized = compute("gigpo", inp, state_grouping="normalized")
    similar = compute("gigpo", inp, state_grouping="similarity", state_features="tfidf", state_similarity=1.0)
    assert np.array_equal(normalized.turn_advantage, similar.turn_advantage)
    assert normalized.anchor_group is not None and similar.anchor_group is not None
    assert normalized.anchor_group.tolist() == similar.anchor_group.tolist()


NEAR = ["you see a brass key near the old wooden door", "you see a brass key near the old wooden box"]


def test_tfidf_cosine_of_near_identical_observations() -> None:
    # N = 2 texts of 10 distinct words each, 9 shared: idf(shared) = ln(3/3) + 1 = 1, idf(door) = idf(box)
    # = ln(3/2) + 1 = 1.405465; cos = 9 / (9 + 1.405465^2) = 9 / 10.975332 = 0.820021
    x = tfidf_features(NEAR)
    cos = x[0] @ x[1] / np.linalg.norm(x[0]) / np.linalg.norm(x[1])
    assert cos == pytest.approx(0.820021, abs=1e-6)


@pytest.mark.parametrize(("tau", "merged"), [(0.8, True), (0.99, False)])
def test_similarity_merges_near_identical_observations_below_their_cosine(tau: float, merged: bool) -> None:
    # two episodes of one group, one turn each: returns 1 and 0
    inp = CreditInput.from_arrays([0, 0], [0, 1], [0, 0], [1, 0], [1, 0], observation_text=NEAR)
    credit = compute("gigpo", inp, state_grouping="similarity", state_similarity=tau)
    assert credit.anchor_group is not None and (credit.anchor_group[0] == credit.anchor_group[1]) == merged
    # A^E = +-0.5 (mean_norm); merged: A^S = +-0.5 (step mean 0.5), apart: step groups of one -> 0
    np.testing.assert_allclose(credit.turn_advantage, [1.0, -1.0] if merged else [0.5, -0.5])
    assert credit.diagnostics["credit/anchor_rows_grouped"] == float(merged)


def test_hidden_features_read_state_vector() -> None:
    vectors = [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]]  # cos(r0, r1) = 0.9939, cos(r0, r2) = 0
    inp = CreditInput.from_arrays([0, 0, 0], [0, 1, 2], [0, 0, 0], [1, 0, 0], [1, 0, 0], state_vector=vectors)
    credit = compute("gigpo", inp, state_grouping="similarity", state_features="hidden", state_similarity=0.99)
    assert credit.anchor_group is not None and credit.anchor_group.tolist() == [0, 0, 1]
    with pytest.raises(ValueError, match=r"state_features='hidden' needs CreditInput\.state_vector"):
        compute("gigpo", _with_text(TEXTS), state_grouping="similarity", state_features="hidden")


def test_groupings_refuse_input_they_cannot_group() -> None:
    with pytest.raises(ValueError, match=r"no turn has a state key; .* state_grouping='normalized'"):
        compute("gigpo", CreditInput.from_arrays(*_columns()))
    with pytest.raises(ValueError, match="state_grouping='normalized' keys on the observation text"):
        compute("gigpo", CreditInput.from_arrays(*_columns()), state_grouping="normalized")
    with pytest.raises(ValueError, match="state_vector must be finite with shape \\(8, D\\)"):
        _with_text(TEXTS, state_vector=np.zeros((7, 2)))


def test_spec_says_which_grouping_needs_what() -> None:
    spec = get("gigpo")
    assert spec.needs_env_state_keys({}) and spec.needs_env_state_keys({"state_grouping": "exact"})
    assert not spec.needs_env_state_keys({"state_grouping": "normalized"})
    assert spec.needs_state_vectors({"state_grouping": "similarity", "state_features": "hidden"})
    assert not spec.needs_state_vectors({"state_grouping": "normalized", "state_features": "hidden"})
    assert not get("grpo").needs_env_state_keys({}) and get("grpo").state_grouping({}) is None


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("state_grouping=fuzzy", r"state_grouping must be one of \['exact', 'normalized', 'similarity'\], got 'fuzzy'"),
        ("state_features=pixels", r"state_features must be one of \['tfidf', 'hidden'\], got 'pixels'"),
        ("state_similarity=0", r"state_similarity must be a number in \(0, 1\], got 0"),
        ("state_similarity=1.5", r"state_similarity must be a number in \(0, 1\], got 1.5"),
        ("state_similarity=high", r"state_similarity must be a number in \(0, 1\], got 'high'"),
    ],
)
def test_config_refuses_bad_grouping_values(override: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_config(None, ["credit.name=gigpo", f"credit.params.{override}"])


def test_config_accepts_the_groupings() -> None:
    grouping = ["credit.params.state_grouping=similarity", "credit.params.state_similarity=1"]
    cfg = load_config(None, ["preset=gigpo", *grouping])
    assert cfg.credit.params["state_grouping"] == "similarity" and cfg.credit.params["state_similarity"] == 1
    with pytest.raises(ValueError, match=r"has no parameter.*state_grouping"):
        load_config(None, ["credit.name=grpo", "credit.params.state_grouping=normalized"])


def _columns() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    base = gigpo_example()
    return base.group, base.episode, base.turn, base.reward, base.outcome
