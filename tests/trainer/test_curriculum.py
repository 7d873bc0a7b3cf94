"""Curricula: the schedule and success rules by hand, replayed easier levels, task keywords, config and env checks,
the loop (levels in the tasks, logged) and resume (the level and its record come back)."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

import pytest

from clew.store.run import checkpoints, read_jsonl
from clew.trainer import Trainer, stages
from clew.trainer.config import RunConfig
from clew.trainer.curriculum import (
    CurriculumState,
    after_success,
    scheduled_level,
    task_kwargs,
    task_level,
)
from clew.trainer.data_sections import CurriculumConfig

Make = Callable[..., RunConfig]


def test_schedule_splits_the_run_or_follows_its_boundaries() -> None:
    assert [scheduled_level(i, 9, 3, None) for i in range(9)] == [0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [scheduled_level(i, 10, 3, None) for i in range(10)] == [0, 0, 0, 0, 1, 1, 1, 2, 2, 2]
    assert [scheduled_level(i, 9, 3, (2, 5)) for i in range(7)] == [0, 0, 1, 1, 1, 2, 2]


def test_success_rule_moves_up_once_the_window_averages_the_threshold() -> None:
    state = CurriculumState()
    state = after_success(state, 0.6, 3, 0.7, 2)
    assert state == CurriculumState(0, (0.6,))  # a window not yet full
    state = after_success(state, 0.75, 3, 0.7, 2)
    assert state == CurriculumState(0, (0.6, 0.75))  # mean 0.675
    state = after_success(state, 0.8, 3, 0.7, 2)
    assert state == CurriculumState(1, ())  # mean of the last two 0.775: up, with a fresh record
    top = after_success(CurriculumState(2, (1.0,)), 1.0, 3, 0.7, 2)
    assert top == CurriculumState(2, (1.0, 1.0))  # the last level stays
    assert CurriculumState.from_json(top.to_json()) == top and CurriculumState.from_json(None) == CurriculumState()


def test_replayed_levels_are_easier_seeded_and_about_the_share() -> None:
    assert {task_level(2, 0.0, seed) for seed in range(200)} == {2}
    assert {task_level(0, 0.9, seed) for seed in range(200)} == {0}
    levels = Counter(task_level(3, 0.25, seed) for seed in range(4000))
    assert set(levels) == {0, 1, 2, 3}
    assert 0.22 < 1 - levels[3] / 4000 < 0.28
    assert [task_level(3, 0.5, s) for s in range(50)] == [task_level(3, 0.5, s) for s in range(50)]


def test_task_kwargs_set_the_key_and_keep_the_rest() -> None:
    cfg = CurriculumConfig(key="horizon", levels=(10, 25, 50), rule="schedule")
    assert task_kwargs(cfg, {"horizon": 50, "choices": 3}, CurriculumState(), 0, 9, 1) == {"horizon": 10, "choices": 3}
    assert task_kwargs(cfg, {"choices": 3}, CurriculumState(), 8, 9, 1) == {"choices": 3, "horizon": 50}
    success = cfg.model_copy(update={"rule": "success"})
    assert task_kwargs(success, {}, CurriculumState(1, ()), 0, 9, 1) == {"horizon": 25}
    assert task_kwargs(CurriculumConfig(), {"a": 1}, CurriculumState(), 0, 9, 1) == {"a": 1}


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["curriculum.key=max_steps", "curriculum.levels=[3]"], "two or more curriculum.levels"),
        (["curriculum.levels=[3, 5]"], "needs curriculum.key"),
        (["curriculum.key=max_steps", "curriculum.levels=[2, 3, 5]", "curriculum.at=[4]"], "curriculum.at"),
        (["curriculum.key=max_steps", "curriculum.levels=[2, 3, 5]", "curriculum.at=[4, 2]"], "increasing order"),
        (["curriculum.key=max_steps", "curriculum.levels=[2, 5]", "curriculum.rule=linear"], "curriculum.rule"),
    ],
)
def test_curriculum_config_errors(tiny_cfg: Make, overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_cfg(*overrides)


def test_a_level_the_env_refuses_stops_the_run_before_work(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("curriculum.key=max_stepz", "curriculum.levels=[2, 4]", "eval.every=0")
    with pytest.raises(ValueError, match=r"curriculum.key=max_stepz\) cannot be built"):
        Trainer(cfg, tmp_path / "run").fit()


def test_the_loop_logs_the_scheduled_level(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("curriculum.key=max_steps", "curriculum.levels=[3, 5]", "curriculum.rule=schedule", "eval.every=0")
    Trainer(cfg, tmp_path / "run").fit()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert [r["curriculum/level"] for r in rows] == [0.0, 1.0]
    assert [r["curriculum/value"] for r in rows] == [3.0, 5.0]


def test_training_tasks_carry_the_level_and_evaluation_keeps_the_target(tiny_cfg: Make) -> None:
    cfg = tiny_cfg("iterations=4", "curriculum.key=max_steps", "curriculum.levels=[2, 3, 5]",
                   "curriculum.replay_share=0.5")  # fmt: skip
    session = SimpleNamespace(cfg=cfg, curriculum=CurriculumState(2, ()), league=None)
    levels = {stages.task(session, 0, 0, i).env_kwargs["max_steps"] for i in range(40)}  # type: ignore[arg-type]
    assert levels == {2, 3, 5}  # level 2, half of the tasks replayed at an easier one
    assert stages.task(session, 0, 0, 0).env_kwargs["width"] == 3  # the rest of env.kwargs  # type: ignore[arg-type]
    assert cfg.env.kwargs["max_steps"] == 5  # held-out evaluation reads env.kwargs


def test_resume_continues_the_curriculum(tiny_cfg: Make, tmp_path: Path) -> None:
    """The success rule's record is checkpointed: a run stopped after one iteration and resumed ends with the same
    curriculum state as one that ran through (three rates in a window of three, not two)."""
    cfg = tiny_cfg("iterations=3", "eval.every=0", "curriculum.key=max_steps", "curriculum.levels=[3, 5]",
                   "curriculum.window=3", "curriculum.advance_at=1.0")  # fmt: skip
    Trainer(cfg, tmp_path / "whole").fit()
    Trainer(cfg, tmp_path / "split").fit(stop_after=1)
    Trainer(cfg, tmp_path / "split").fit(resume=True)
    states = [json.loads((checkpoints(tmp_path / r)[-1] / "state.json").read_text()) for r in ("whole", "split")]
    assert states[0]["curriculum"] == states[1]["curriculum"]
    assert len(states[0]["curriculum"]["recent"]) == 3
