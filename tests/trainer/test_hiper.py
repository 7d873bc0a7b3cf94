"""HiPER in the loop: the plan context keeps subgoals from the env and shows the current one, the trainer marks the
segments, a run trains the value head on them, and the estimator is refused without the plan context."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from clew.policy import HFPolicy
from clew.rollout.context import Framing, History, make_context
from clew.store.run import read_jsonl
from clew.trainer import Trainer
from clew.trainer.config import RunConfig
from clew.trainer.credit_inputs import segment_starts

Make = Callable[..., RunConfig]


def test_the_plan_context_strips_and_shows_the_subgoal(tiny_policy: HFPolicy) -> None:
    framing, plan = Framing(tiny_policy.tokenizer, tiny_policy.chat), make_context("plan")
    history = History(["find the key"])
    assert plan.take_action(history, "<subgoal>reach the key</subgoal> move up") == "move up"
    assert plan.take_action(history, "move left") == "move left"  # keeps the subgoal
    shown = tiny_policy.tokenizer.decode(plan.build(history, framing))
    assert "Current subgoal: reach the key" in shown and "<subgoal>" in shown  # the instruction names the tag


def test_segments_open_at_turn_zero_and_at_every_subgoal() -> None:
    texts = ["move up", "<subgoal>open door</subgoal> use key", "move", "<subgoal>x</subgoal> a", "b"]
    table = SimpleNamespace(turn=np.array([0, 1, 2, 0, 1]), turns=[SimpleNamespace(action_text=t) for t in texts])
    starts = segment_starts(None, table)["segment_start"]  # type: ignore[arg-type]
    assert starts.tolist() == [True, True, False, True, False]


def test_hiper_trains_and_is_refused_without_the_plan_context(tiny_cfg: Make, tmp_path: Path) -> None:
    run = ["preset=hiper", "rollout.context=plan", "iterations=1", "eval.every=0", "eval.at_start=false"]
    Trainer(tiny_cfg(*run), tmp_path / "run").fit()
    (row,) = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert row["credit/segments_per_episode"] >= 1.0 and "critic/value_loss" in row
    with pytest.raises(ValueError, match=r"only rollout.context=plan asks for"):
        tiny_cfg("preset=hiper", "rollout.context=window")
