"""Correctness round 3 in shaping: overlong penalties fire on the cut action, DAPO's soft punishment."""

from __future__ import annotations

import pytest

from clew.envs import StepResult
from clew.policy import HFPolicy, SamplingParams
from clew.rollout import Framing, PolicyActor, RolloutConfig, Task, collect
from clew.trainer.config import ShapingConfig, load_config
from clew.trainer.select import shape, soft_overlong_penalty


class OneShot:
    """A single-turn task: any answer ends the episode (every single-turn verifier env works like this)."""

    def reset(self, seed: int) -> str:
        return "Answer in one word."

    def step(self, action: str) -> StepResult:
        return StepResult("graded", 1.0, True, False)


def test_overlong_penalty_fires_when_the_env_ends_the_episode_on_the_cut_action(
    tiny_policy: HFPolicy, tiny_engine: object
) -> None:
    actor = PolicyActor(tiny_engine, SamplingParams(temperature=1.0, max_new_tokens=2))  # type: ignore[arg-type]
    cfg = RolloutConfig(group_size=8, max_turns=1, max_new_tokens=2)
    groups = collect(actor, [Task(f"{__name__}:OneShot", 0)], cfg, 0, Framing(tiny_policy.tokenizer, tiny_policy.chat))
    episodes = groups[0].episodes
    cut = [e for e in episodes if e.turns[-1].cut]
    assert cut, "a 2-token budget cuts some answers of the untrained tiny model"
    assert all(e.terminated and not e.truncated for e in cut)  # the env ended them: no max_new_tokens truncation
    shape(groups, ShapingConfig(overlong_penalty=0.5), max_new_tokens=2)
    for episode in episodes:
        assert episode.turns[-1].penalty == (0.5 if episode in cut else 0.0)


@pytest.mark.parametrize(
    ("length", "penalty"),
    [
        # DAPO: L_max = 20480, L_cache = 4096, threshold 16384 (shared/reference/objectives.md section 3)
        (10000, 0.0),
        (16384, 0.0),
        (18432, 0.5),  # (18432 - 16384) / 4096
        (20480, 1.0),
    ],
)
def test_soft_overlong_punishment_paper_numbers(length: int, penalty: float) -> None:
    assert soft_overlong_penalty(length, 20480, 4096) == pytest.approx(penalty)


def test_soft_overlong_in_shape_and_the_dapo_preset() -> None:
    cfg = load_config(None, ["preset=dapo", "rollout.max_new_tokens=20"])
    assert cfg.shaping.overlong_soft == 1.0 and cfg.shaping.overlong_buffer == 0.2
    assert cfg.credit.params["penalty_placement"] == "statistics"  # a reward term, inside the group statistics
    with pytest.raises(ValueError, match="overlong_buffer"):
        load_config(None, ["shaping.overlong_soft=1.0"])


def test_soft_overlong_charges_by_length() -> None:
    from clew.types import Episode, Group, Turn

    # max_new_tokens 20, buffer 0.2 -> L_cache 4: free up to 16 tokens, 18 tokens cost 0.5, 20 cost 1.0
    turns = [Turn([1], [7] * n, [0.0] * n, "x") for n in (10, 16, 18, 20)]
    groups = [Group(0, "t", 0, [Episode("t", 0, 0, [t]) for t in turns])]
    shape(groups, ShapingConfig(overlong_soft=1.0, overlong_buffer=0.2), max_new_tokens=20)
    assert [e.turns[0].penalty for e in groups[0].episodes] == pytest.approx([0.0, 0.0, 0.5, 1.0])


def test_dr_grpo_constant_follows_the_token_budget() -> None:
    assert load_config(None, ["preset=dr_grpo", "rollout.max_new_tokens=24"]).objective.aggregation_const == 24
    assert load_config(None, ["preset=dr_grpo"]).objective.aggregation_const == 16  # the default budget
    explicit = load_config(None, ["preset=dr_grpo", "rollout.max_new_tokens=24", "objective.aggregation_const=100"])
    assert explicit.objective.aggregation_const == 100
