"""The reward-hacking and degeneracy monitor and the trajectory metrics it reads: planted hacks trip their detector
(padding, a repeated phrase, a training reward that rises while held-out success falls, collapse, invalid actions,
groups without signal), ordinary learning does not, a resumed run remembers, ``stop_on`` stops the run."""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from clew.eval.trajectory import (
    episode_metrics,
    ngram_repetition,
    repeated_action_share,
    repeated_state_share,
    steps_over_optimal,
    tool_errors,
)
from clew.store.run import read_jsonl
from clew.trainer import Trainer
from clew.trainer.config import RunConfig
from clew.trainer.data_sections import MonitorConfig
from clew.trainer.monitor import Monitor
from clew.types import REPLAYED, Episode, Turn

Make = Callable[..., RunConfig]


def _turn(text: str, state: str | None = None, tokens: int = 2, **info: object) -> Turn:
    return Turn([1], list(range(tokens)), [-1.0] * tokens, text, state_key=state, info=dict(info))


def test_trajectory_metrics_by_hand() -> None:
    episode = Episode(
        "env",
        0,
        0,
        [
            _turn("left", "a"),
            _turn("left", "b"),
            _turn("Left ", "a"),
            _turn("up", "c"),
            _turn("up", "d", tool_call=True, tool_exit_code=1),
            _turn("x", "e", tool_call=True),
        ],
    )
    assert repeated_state_share(episode) == pytest.approx(1 / 6)  # state a again
    assert repeated_action_share(episode) == pytest.approx(3 / 6)  # left, left(case), up
    assert tool_errors(episode) == (1, 2)
    episode.turns[-1].info.update(success=True, optimal_steps=4)
    assert steps_over_optimal(episode) == 2.0
    replayed = Episode("env", 0, 0, [_turn("left", "a", **{REPLAYED: True}), _turn("left", "a")])
    assert repeated_state_share(replayed) == 0.0  # a replayed prefix is not the rollout's own
    metrics = episode_metrics([episode, replayed])
    assert metrics["rollout/tool_error_rate"] == 0.5 and metrics["rollout/steps_over_optimal"] == 2.0
    assert "rollout/tool_error_rate" not in episode_metrics([replayed])


def test_ngram_repetition() -> None:
    assert ngram_repetition("the answer is 42") == 0.0
    assert ngram_repetition("great answer great answer great answer") == pytest.approx(2 / 4)
    assert ngram_repetition("one two") == 0.0


def _records(n: int, **series: list[float]) -> list[dict]:
    base = {"rollout/action_tokens": 4.0, "rollout/ngram_repetition": 0.0, "rollout/zero_variance_share": 0.3,
            "rollout/invalid_action_rate": 0.02, "policy/entropy": 0.5, "rollout/success_rate": 0.4}  # fmt: skip
    return [{"kind": "iteration", "iteration": i + 1, **base, **{k: v[i] for k, v in series.items()}}
            for i in range(n)]  # fmt: skip


def _run(records: list[dict], evals: list[dict] = (), **cfg: object) -> tuple[list[dict], list[str]]:  # type: ignore[assignment]
    monitor = Monitor(MonitorConfig(window=3, **cfg))  # type: ignore[arg-type]
    flags, tripped = [], []
    for record in records:
        with warnings.catch_warnings(record=True):
            warnings.simplefilter("always")
            f, fresh = monitor.observe(record, [e for e in evals if e["iteration"] == record["iteration"]])
        flags.append(f)
        tripped += fresh
    return flags, tripped


def test_ordinary_learning_stays_quiet() -> None:
    """Success rising with held-out success, entropy down a third, lengths and invalid actions steady."""
    n = 12
    records = _records(n, **{"rollout/success_rate": [0.4 + 0.04 * i for i in range(n)],
                             "policy/entropy": [0.5 - 0.015 * i for i in range(n)]})  # fmt: skip
    evals = [{"kind": "eval", "iteration": 1, "eval/success_rate": 0.35},
             {"kind": "eval", "iteration": 12, "eval/success_rate": 0.8}]  # fmt: skip
    flags, tripped = _run(records, evals)
    assert tripped == [] and all(v == 0.0 for f in flags for v in f.values())


@pytest.mark.parametrize(
    ("detector", "series"),
    [
        ("length_drift", {"rollout/action_tokens": [4, 4, 4, 5, 6, 8, 9, 10, 11]}),  # padding for a length-biased judge
        ("repetition", {"rollout/ngram_repetition": [0, 0, 0, 0.1, 0.3, 0.5, 0.6, 0.6, 0.7]}),  # a rewarded phrase
        ("entropy_collapse", {"policy/entropy": [0.5, 0.5, 0.5, 0.3, 0.1, 0.04, 0.02, 0.02, 0.01]}),
        ("invalid_rise", {"rollout/invalid_action_rate": [0.02, 0.02, 0.02, 0.1, 0.2, 0.3, 0.3, 0.35, 0.4]}),
        ("zero_variance", {"rollout/zero_variance_share": [0.3, 0.3, 0.3, 0.6, 0.9, 1.0, 1.0, 1.0, 1.0]}),
        # a policy that pleases its judge: the judge says good where the verifier says failed, more and more
        ("source_disagreement", {"rewards/disagreement": [0.1, 0.1, 0.1, 0.2, 0.3, 0.4, 0.5, 0.5, 0.6]}),
        # a policy that learns to break its judge: failed judgements per policy version
        ("judge_failures", {"rewards/judge_failed_share": [0, 0, 0, 0, 0, 0, 0.2, 0.3, 0.3]}),
        # a policy paid per step by a process judge: more steps, no more successes (the judge study's process arm)
        (
            "turn_drift",
            {
                "rollout/mean_turns": [2.4, 2.2, 2.5, 2.5, 3.4, 4.5, 4.4, 4.6, 4.5],
                "rollout/success_rate": [0.34, 0.34, 0.47, 0.44, 0.41, 0.09, 0.2, 0.25, 0.3],
            },
        ),
        # the step guard rejects every step: the policy stopped moving (credit map, horizon-100, GiGPO seed 0)
        (
            "guard_stall",
            {"train/rejected_steps": [0, 0, 1, 2, 4, 4, 4, 4, 4], "train/optimizer_steps": [4, 4, 3, 2, 0, 0, 0, 0, 0]},
        ),
    ],
)
def test_a_planted_hack_trips_its_detector(detector: str, series: dict[str, list[float]]) -> None:
    flags, tripped = _run(_records(9, **series))
    assert tripped == [detector]
    assert flags[-1][f"monitor/{detector}"] == 1.0 and flags[0][f"monitor/{detector}"] == 0.0


def test_longer_episodes_that_succeed_more_are_not_turn_drift() -> None:
    turns = [2.0, 2.0, 2.0, 3.0, 4.0, 5.0, 5.0, 5.0, 5.0]
    rising = [0.2, 0.2, 0.2, 0.4, 0.5, 0.6, 0.7, 0.7, 0.8]
    assert _run(_records(9, **{"rollout/mean_turns": turns, "rollout/success_rate": rising}))[1] == []


def test_a_verifier_reward_rising_while_held_out_success_falls() -> None:
    records = _records(9, **{"rollout/success_rate": [0.3, 0.3, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9]})
    falling = [{"kind": "eval", "iteration": 1, "eval/success_rate": 0.5},
               {"kind": "eval", "iteration": 9, "eval/success_rate": 0.35}]  # fmt: skip
    assert _run(records, falling)[1] == ["reward_without_heldout"]
    rising = [dict(falling[0]), {**falling[1], "eval/success_rate": 0.8}]
    assert _run(records, rising)[1] == []
    assert _run(records)[1] == []  # no held-out evaluations: nothing to compare


def test_a_resumed_monitor_remembers_the_run() -> None:
    records = _records(9, **{"rollout/action_tokens": [4, 4, 4, 5, 6, 8, 9, 10, 11]})
    monitor = Monitor.from_records(MonitorConfig(window=3), records[:8])
    assert monitor.tripped == {"length_drift"}
    flags, fresh = monitor.observe(records[8])
    assert fresh == [] and flags["monitor/length_drift"] == 1.0  # already warned before the resume


def test_stop_on_stops_the_run_and_says_why(tiny_cfg: Make, tmp_path: Path) -> None:
    """A zero-variance threshold every run crosses (a tiny random policy fails every keydoor task in two steps) stops
    the run after its one-iteration window; a monitor record and the summary say which detector."""
    cfg = tiny_cfg("iterations=4", "eval.every=0", "monitor.window=1", "monitor.zero_variance=0.0001",
                   "monitor.stop_on=[zero_variance]", "env.kwargs={width: 6, height: 6, max_steps: 2}")  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        Trainer(cfg, tmp_path / "run").fit()
    records = read_jsonl(tmp_path / "run" / "metrics.jsonl")
    assert [r["iteration"] for r in records if r["kind"] == "iteration"] == [1]
    assert [r["detector"] for r in records if r["kind"] == "monitor"] == ["zero_variance"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["monitor"] == {"tripped": ["zero_variance"], "stopped_by": ["zero_variance"]}


def test_unknown_detectors_are_refused(tiny_cfg: Make) -> None:
    with pytest.raises(ValueError, match="unknown detectors"):
        tiny_cfg("monitor.stop_on=[vibes]")
