"""Branched rollouts (``Task.prefix``): a replayed prefix opens the episode and the policy goes on from its state; a
replay that diverges is an infra failure; SPO values its cutpoints with them in a run, and refuses what it cannot
replay."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import pytest

from clew.policy import HFPolicy
from clew.rollout import RolloutConfig, Task, collect
from clew.rollout.actors import ScriptedActor
from clew.rollout.context import Framing
from clew.store.run import read_jsonl
from clew.trainer import Trainer
from clew.trainer.config import RunConfig

Make = Callable[..., RunConfig]


def _expert(policy: HFPolicy, task: Task, context: str = "full") -> list:  # type: ignore[type-arg]
    framing = Framing(policy.tokenizer, policy.chat)
    cfg = RolloutConfig(group_size=2, max_turns=20, context=context)  # type: ignore[arg-type]
    (group,) = collect(ScriptedActor("expert", tokenizer=policy.tokenizer), [task], cfg, 0, framing)
    return group.episodes


def test_a_replayed_prefix_continues_where_the_episode_was(tiny_policy: HFPolicy) -> None:
    task = Task("keydoor-v0", 4, {"width": 5, "height": 5})
    (original, _) = _expert(tiny_policy, task)
    assert len(original.turns) >= 4 and original.success
    (branched, again) = _expert(tiny_policy, dataclasses.replace(task, prefix=tuple(original.turns[:3])))
    for episode in (branched, again):
        assert [t.action_text for t in episode.turns] == [t.action_text for t in original.turns]
        assert [t.prompt_ids for t in episode.turns] == [t.prompt_ids for t in original.turns]  # prompts rebuilt
        assert episode.outcome == original.outcome and episode.failure is None


def test_a_replay_that_diverges_is_an_infra_failure(tiny_policy: HFPolicy) -> None:
    task = Task("keydoor-v0", 4, {"width": 5, "height": 5})
    (original, _) = _expert(tiny_policy, task)
    wrong = dataclasses.replace(original.turns[0], observation="something else")
    (episode, _) = _expert(tiny_policy, dataclasses.replace(task, prefix=(wrong,)))
    assert episode.failure == "infra" and "diverged" in (episode.error or "")


def test_spo_values_cutpoints_with_branched_rollouts(tiny_cfg: Make, tmp_path: Path) -> None:
    sft = ["sft.enabled=true", "sft.episodes=64", "sft.epochs=3", "sft.lr=0.003"]  # multi-turn episodes to cut
    cfg = tiny_cfg("preset=spo", "iterations=1", "eval.every=0", "eval.at_start=false", "credit.params.rollouts=2",
                   "credit.params.cutpoint_interval=1", *sft)  # fmt: skip
    Trainer(cfg, tmp_path / "run").fit()
    (row,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert row["rollout/mean_turns"] > 1.5 and row["credit/spo_cutpoints"] > 0
    assert row["rollout/branch_env_steps"] > 0 and row["time/credit_branch_value_s"] > 0


def test_spo_is_refused_where_histories_cannot_be_replayed(tiny_cfg: Make) -> None:
    with pytest.raises(ValueError, match=r"rollout.context=summary cannot rebuild.*\['full', 'window'\]"):
        tiny_cfg("preset=spo", "rollout.context=summary")


def test_a_group_replays_its_branch_point_once_and_restores_it(tiny_policy: HFPolicy, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """With ``HasSnapshot`` (keydoor) only the first member steps the prefix; the others restore its snapshot."""
    from clew.envs.library.keydoor import KeyDoor

    task = Task("keydoor-v0", 4, {"width": 5, "height": 5})
    (original, _) = _expert(tiny_policy, task)
    calls = {"step": 0, "restore": 0}
    step, restore = KeyDoor.step, KeyDoor.restore

    def counted_step(self, action):  # type: ignore[no-untyped-def]
        calls["step"] += 1
        return step(self, action)

    def counted_restore(self, state):  # type: ignore[no-untyped-def]
        calls["restore"] += 1
        return restore(self, state)

    monkeypatch.setattr(KeyDoor, "step", counted_step)
    monkeypatch.setattr(KeyDoor, "restore", counted_restore)
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    cfg = RolloutConfig(group_size=3, max_turns=20)
    branched = dataclasses.replace(task, prefix=tuple(original.turns[:3]))
    (group,) = collect(ScriptedActor("expert", tokenizer=tiny_policy.tokenizer), [branched], cfg, 0, framing)
    total = len(original.turns)
    assert calls == {"step": 3 + 3 * (total - 3), "restore": 2}
    for episode in group.episodes:
        assert [t.action_text for t in episode.turns] == [t.action_text for t in original.turns]
        assert episode.outcome == original.outcome


def test_spo_refuses_settings_that_cannot_branch(tiny_cfg: Make) -> None:
    for name in ("cutpoint_interval", "rollouts"):
        with pytest.raises(ValueError, match=rf"credit.params.{name} must be >= 1, got 0"):
            tiny_cfg("preset=spo", f"credit.params.{name}=0")
