"""IGPO in the loop: envs with a gold reply, the learner's belief pass, a run that records it, the refusals."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from clew.envs import HasGoldReply, make
from clew.envs.pool import make_pooled
from clew.policy import HFPolicy
from clew.rollout import RolloutConfig, Task, collect
from clew.rollout.actors import ScriptedActor
from clew.rollout.context import Framing
from clew.store.run import read_jsonl
from clew.trainer import Trainer
from clew.trainer.config import RunConfig
from clew.trainer.states import gold_logprobs
from clew.types import Episode

Make = Callable[..., RunConfig]
GOLD_ENV = ["env.id=toolcalc-v0", "rollout.max_new_tokens=6"]  # with env_kwargs="{n_ops: 1}"


def test_toolcalc_gold_reply_is_a_right_answer_and_crosses_a_worker_process() -> None:
    env = make("toolcalc-v0", n_ops=2)
    env.reset(7)
    assert isinstance(env, HasGoldReply)
    gold = env.gold_reply()
    assert gold.startswith("answer: ") and env.step(gold).reward == 1.0
    pooled = make_pooled("toolcalc-v0", n_ops=2)
    try:
        pooled.reset(7)
        assert isinstance(pooled, HasGoldReply) and pooled.gold_reply() == gold
    finally:
        pooled.close()
    assert not isinstance(make_pooled("keydoor-v0"), HasGoldReply)


def test_the_rollout_records_the_gold_reply_and_it_round_trips(tiny_policy: HFPolicy) -> None:
    actor = ScriptedActor("expert", tokenizer=tiny_policy.tokenizer)
    framing, cfg = Framing(tiny_policy.tokenizer, tiny_policy.chat), RolloutConfig(group_size=2, max_turns=6)
    tasks = [Task("toolcalc-v0", 3, {"n_ops": 1}), Task("keydoor-v0", 3, {"width": 4, "height": 4})]
    toolcalc, keydoor = collect(actor, tasks, cfg, 0, framing)
    episode = toolcalc.episodes[0]
    assert episode.gold_reply is not None and episode.turns[-1].action_text == episode.gold_reply
    assert Episode.from_dict(episode.to_dict()).gold_reply == episode.gold_reply
    assert keydoor.episodes[0].gold_reply is None


def test_gold_logprobs_are_the_teacher_forced_mean_log_prob(tiny_policy: HFPolicy) -> None:
    """Batched and padded == one row at a time through the full forward's log-softmax; no gold gives NaN."""
    prompts, golds = [[5, 6, 7, 8, 9], [5, 6], [11, 12, 13], [5]], [[20, 21], [22], [], [23, 24, 25]]
    batched = gold_logprobs(tiny_policy.model, prompts, golds, tiny_policy.pad_id, rows_per_pass=2)
    assert math.isnan(batched[2]) and batched.shape == (4,)
    for i in (0, 1, 3):
        ids = torch.tensor([prompts[i] + golds[i]])
        with torch.no_grad():
            logp = torch.log_softmax(tiny_policy.model(ids).logits[0].float(), dim=-1)
        n = len(prompts[i])
        picked = [logp[n - 1 + j, tok].item() for j, tok in enumerate(golds[i])]
        assert batched[i] == pytest.approx(np.mean(picked), abs=1e-5)
    assert np.all(batched[~np.isnan(batched)] < 0)


def test_igpo_trains_on_an_env_with_gold_replies(tiny_cfg: Make, tmp_path: Path) -> None:
    run = ["credit.name=igpo", "iterations=1", "eval.every=0", "eval.at_start=false"]
    cfg = tiny_cfg(*run, *GOLD_ENV, env_kwargs="{n_ops: 1}")
    Trainer(cfg, tmp_path / "run").fit()
    (row,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert 0.0 < row["credit/gold_belief_mean"] < 1.0 and row["credit/rows_without_belief"] == 0.0
    assert row["time/credit_gold_logprob_s"] > 0.0


def test_igpo_is_refused_where_no_episode_has_a_gold_reply(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("credit.name=igpo", "iterations=1", "eval.every=0", "eval.at_start=false")  # keydoor: no answer
    with pytest.raises(ValueError, match=r"env keydoor-v0 has no gold_reply\(\) method.*HasGoldReply"):
        Trainer(cfg, tmp_path / "run").fit()


def test_a2tgpo_clip_ranges_reach_the_rows_and_the_loss(tiny_cfg: Make, tmp_path: Path, tiny_policy: HFPolicy) -> None:
    """The estimator's per-turn clip scales land on every action token of the training rows (merged or not); a
    run trains with them; an objective without a per-token clip range is refused by name."""
    from clew.rollout.batch import to_rows
    from clew.table import TurnTable

    run = ["credit.name=a2tgpo", "iterations=1", "eval.every=0", "eval.at_start=false"]
    Trainer(tiny_cfg(*run, *GOLD_ENV, env_kwargs="{n_ops: 1}"), tmp_path / "run").fit()
    (row,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert 0.0 < row["credit/clip_scale_mean"] < 2.0
    with pytest.raises(ValueError, match=r"objective.name=gspo has no per-token clip.*adaptive_clip=0"):
        tiny_cfg(*run, "objective.name=gspo", *GOLD_ENV)
    actor, framing = (
        ScriptedActor("expert", tokenizer=tiny_policy.tokenizer),
        Framing(tiny_policy.tokenizer, tiny_policy.chat),
    )
    task = Task("keydoor-v0", 1, {"width": 4, "height": 4})
    (group,) = collect(actor, [task], RolloutConfig(group_size=2), 0, framing)
    table = TurnTable.from_groups([group])
    assert table.n_turns > 2 and table.token_offsets[-1] > 0
    scale = np.linspace(0.5, 1.5, table.n_turns)
    for merge in (False, True):
        rows = to_rows(table, np.zeros(table.n_turns), merge_prefix=merge, clip_scale=scale)
        assert [x for r in rows for x in r.clip_scales or []] == pytest.approx(
            np.repeat(scale, np.diff(table.token_offsets)).tolist()
        )
