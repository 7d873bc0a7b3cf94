"""InfoPO's masked observations, PBSD's answer-conditioned prompts and SIOP's outcome modes in the loop: the prompts
are the rows' own tokens with only env text re-framed, the runs record the scores, and the refusals name the fix."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from clew.credit.counterfactual import PLACEHOLDER_OBSERVATION, PRIVILEGED_HINT
from clew.policy import HFPolicy
from clew.rollout import RolloutConfig, Task, collect
from clew.rollout.actors import ScriptedActor
from clew.rollout.context import Framing
from clew.store.run import read_jsonl
from clew.trainer import Trainer
from clew.trainer.config import RunConfig
from clew.trainer.counterfactuals import masked_observation_prompt, privileged_hint, privileged_prompt
from clew.trainer.credit_inputs import final_answer
from clew.types import Episode

Make = Callable[..., RunConfig]
RUN = ["iterations=1", "eval.every=0", "eval.at_start=false"]
GOLD_ENV = ["env.id=toolcalc-v0", "rollout.max_new_tokens=6"]


def _expert_episode(policy: HFPolicy, context: str = "full") -> tuple[Episode, Framing]:
    framing = Framing(policy.tokenizer, policy.chat)
    cfg = RolloutConfig(group_size=1, max_turns=6, context=context)  # type: ignore[arg-type]
    (group,) = collect(ScriptedActor("expert", tokenizer=policy.tokenizer), [Task("toolcalc-v0", 5, {"n_ops": 2})],
                       cfg, 0, framing)  # fmt: skip
    episode = group.episodes[0]
    assert len(episode.turns) >= 2
    return episode, framing


def test_the_masked_prompt_swaps_only_the_observation(tiny_policy: HFPolicy) -> None:
    episode, framing = _expert_episode(tiny_policy)
    for turn, following in zip(episode.turns, episode.turns[1:], strict=False):
        masked = masked_observation_prompt(turn, following, framing, PLACEHOLDER_OBSERVATION)
        real_segment = framing.after(turn.action_ids, turn.observation)
        head = following.prompt_ids[: -len(real_segment)]
        assert masked == head + framing.after(turn.action_ids, PLACEHOLDER_OBSERVATION)
        assert head[-len(turn.action_ids) :] == turn.action_ids  # the sampled tokens kept as they were
        assert PLACEHOLDER_OBSERVATION in tiny_policy.tokenizer.decode(masked[len(head) :])


def test_the_masked_prompt_in_a_window_and_a_foreign_prompt(tiny_policy: HFPolicy) -> None:
    episode, framing = _expert_episode(tiny_policy, context="window")
    turn, following = episode.turns[0], episode.turns[1]
    assert following.prompt_ids == framing.first(turn.observation)
    assert masked_observation_prompt(turn, following, framing, "x") == framing.first("x")
    following.prompt_ids = [1, 2, 3]  # built by something else: no guess
    assert masked_observation_prompt(turn, following, framing, "x") is None


def test_the_privileged_prompt_adds_the_answer_to_the_opening_message(tiny_policy: HFPolicy) -> None:
    episode, framing = _expert_episode(tiny_policy)
    assert episode.gold_reply is not None
    hint = privileged_hint(episode.gold_reply, PRIVILEGED_HINT)
    assert episode.gold_reply in hint
    opening = framing.first(episode.first_observation)
    for t, turn in enumerate(episode.turns):
        prompt = privileged_prompt(episode, t, framing, hint)
        assert prompt == framing.first(f"{episode.first_observation}\n\n{hint}") + turn.prompt_ids[len(opening) :]
    episode.turns[1].prompt_ids = [1, 2, 3]
    assert privileged_prompt(episode, 1, framing, hint) is None


def _iteration(run: Path) -> dict[str, float]:
    (row,) = [r for r in read_jsonl(run / "metrics.jsonl") if r["kind"] == "iteration"]
    return row


def test_infopo_trains_and_scores_every_counterfactual(tiny_cfg: Make, tmp_path: Path) -> None:
    Trainer(tiny_cfg("credit.name=infopo", *RUN), tmp_path / "run").fit()  # keydoor: no gold answer needed
    row = _iteration(tmp_path / "run")
    assert row["credit/rows_without_counterfactual"] == 0.0 and row["time/credit_counterfactual_gain_s"] > 0
    assert np.isfinite(row["credit/info_gain_mean"]) and 0.0 <= row["credit/info_gate_mean"] <= 0.5


def test_pbsd_trains_on_gold_replies_and_is_refused_without(tiny_cfg: Make, tmp_path: Path) -> None:
    Trainer(tiny_cfg("credit.name=pbsd", *RUN, *GOLD_ENV, env_kwargs="{n_ops: 1}"), tmp_path / "run").fit()
    row = _iteration(tmp_path / "run")
    assert row["credit/privileged_logratio_mean"] != 0.0 and row["time/credit_privileged_logratio_s"] > 0
    with pytest.raises(ValueError, match=r"env keydoor-v0 has no gold_reply\(\) method"):
        Trainer(tiny_cfg("credit.name=pbsd", *RUN), tmp_path / "refused").fit()


def test_siop_trains_without_a_gold_answer(tiny_cfg: Make, tmp_path: Path) -> None:
    Trainer(tiny_cfg("credit.name=siop", *RUN, *GOLD_ENV, env_kwargs="{n_ops: 1}"), tmp_path / "run").fit()
    row = _iteration(tmp_path / "run")
    assert 0.0 <= row["credit/mode_weight_mean"] <= 1.0 and row["time/credit_outcome_modes_s"] > 0


def test_scoring_estimators_are_refused_with_a_cluster(tiny_cfg: Make) -> None:
    for name in ("infopo", "pbsd", "siop"):
        with pytest.raises(ValueError, match="scores extra spans with the policy in the driver"):
            tiny_cfg(f"credit.name={name}", "cluster.learners=1")


def test_the_final_answer_is_the_one_the_env_parsed(tiny_policy: HFPolicy) -> None:
    """toolcalc reports the parsed number (``info["answer"]``): "answer: 4.50" and "answer: 4.5" are one mode, and
    the number is what tool outputs are searched for."""
    episode, _ = _expert_episode(tiny_policy)
    parsed = episode.turns[-1].info["answer"]
    assert final_answer(episode) == parsed and parsed in episode.gold_reply  # type: ignore[operator]
    episode.terminated = False
    assert final_answer(episode) is None
