"""A run killed inside a rollout resumes with the episodes that had ended kept, and ends bit-identical."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
from safetensors.torch import load_file

from clew.policy import make_engine
from clew.rollout import RolloutConfig, Task, collect
from clew.store.run import checkpoints, read_jsonl
from clew.store.trajectories import read_trajectories
from clew.trainer.loop import Trainer
from clew.trainer.partial import EpisodeLog

Make = Callable[..., Any]
RUN = ("rollout.engine_params={batch_invariant: true}", "iterations=3", "eval.every=0", "eval.at_start=false",
       "shaping.invalid_action_penalty=0.5", "train.lr=0.01")  # fmt: skip


class Killed(BaseException):  # not an Exception: the rollout's engine retry must not catch it
    """Stands for SIGKILL: raised right after the n-th episode of the target iteration was kept."""


def _kill_after(monkeypatch: pytest.MonkeyPatch, iteration: int, n: int) -> list[int]:
    real, kept = EpisodeLog.record, []

    def record(self: EpisodeLog, it: int, round_seed: int, episode: Any, member: int) -> None:
        real(self, it, round_seed, episode, member)
        kept.append(it)
        if it == iteration and kept.count(it) == n:
            raise Killed(f"killed after {n} episodes of iteration {it}")

    monkeypatch.setattr(EpisodeLog, "record", record)
    return kept


def _records(run: Path) -> list[dict[str, Any]]:
    keep = ("iteration", "eval")
    return [
        {k: v for k, v in r.items() if not k.startswith("time/")}
        for r in read_jsonl(run / "metrics.jsonl")
        if r["kind"] in keep
    ]


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoints(run)[-1] / "policy" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tiny_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from clew.trainer.config import load_config

    run = tmp_path_factory.mktemp("partial") / "whole"
    cfg = load_config(None, [*_base(tiny_dir), *RUN])
    Trainer(cfg, run).fit()
    return run


def _base(tiny_dir: Path) -> list[str]:
    return [
        f"policy.model={tiny_dir}", "tasks_per_iteration=2", "env.kwargs={width: 3, height: 3, max_steps: 5}",
        "rollout.group_size=4", "rollout.max_turns=5", "rollout.max_new_tokens=3", "rollout.context=window",
        "train.minibatch_rows=16", "train.microbatch_rows=8", "eval.episodes=4",
    ]  # fmt: skip


@pytest.mark.parametrize("iteration, n", [(1, 1), (1, 3), (1, 7), (2, 2), (2, 5), (2, 8)])
def test_a_kill_inside_a_rollout_resumes_bit_identical(
    reference: Path, tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, iteration: int, n: int
) -> None:
    from clew.trainer.config import load_config

    cfg = load_config(None, [*_base(tiny_dir), *RUN])
    run = tmp_path / "killed"
    _kill_after(monkeypatch, iteration, n)
    with pytest.raises(Killed):
        Trainer(cfg, run).fit()
    assert len(read_jsonl(EpisodeLog(run).path(iteration))) == n  # what the kill left: n ended episodes
    monkeypatch.undo()
    played = _kill_after(monkeypatch, -1, 0)  # counts only
    Trainer(cfg, run).fit(resume=True)
    assert played.count(iteration) == 8 - n  # the kept episodes were not played again
    assert _records(run) == _records(reference)
    for it in (1, 2, 3):  # trajectory files are named by the iteration count after them
        name = f"iter_{it:06d}.parquet"
        assert read_trajectories(run / "trajectories" / name) == read_trajectories(reference / "trajectories" / name)
    mine, theirs = _weights(run), _weights(reference)
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert not list((run / "rollout").glob("*.jsonl"))  # recorded iterations leave no kept episodes behind


def test_a_torn_line_and_a_kill_in_a_refill_round_or_before_the_first_checkpoint(
    tiny_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Refill rounds (dynamic sampling) are kept by their round; a kill in iteration 0 resumes as a fresh start
    that keeps iteration 0's episodes; a torn last line (a kill inside a write) is dropped, not glued to."""
    from clew.trainer.config import load_config

    refill = ("filters.drop_zero_variance_groups=true", "filters.max_refill_rounds=2")
    cfg = load_config(None, [*_base(tiny_dir), *RUN, *refill])
    Trainer(cfg, tmp_path / "whole").fit()
    for iteration, n in ((0, 3), (2, 9)):
        run = tmp_path / f"killed-{iteration}"
        _kill_after(monkeypatch, iteration, n)
        with pytest.raises(Killed):
            Trainer(cfg, run).fit()
        monkeypatch.undo()
        with open(EpisodeLog(run).path(iteration), "a") as handle:
            handle.write('{"round_seed": 1, "group')  # a write cut by the kill
        Trainer(cfg, run).fit(resume=True)
        assert _records(run) == _records(tmp_path / "whole")
        mine, theirs = _weights(run), _weights(tmp_path / "whole")
        assert all(torch.equal(mine[k], theirs[k]) for k in mine)


def test_collect_keeps_finished_episodes_and_plays_the_rest_with_their_own_seeds(tiny_policy: Any) -> None:
    from clew.policy import SamplingParams
    from clew.rollout import Framing, PolicyActor

    engine = make_engine("hf", tiny_policy.model, tokenizer=tiny_policy.tokenizer, batch_invariant=True)
    actor = PolicyActor(engine, SamplingParams(temperature=1.0, max_new_tokens=3))
    cfg = RolloutConfig(group_size=3, max_turns=4, max_new_tokens=3)
    tasks = [Task("keydoor-v0", s, {"width": 3, "height": 3}) for s in (1, 2)]
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    ended: list[tuple[int, int]] = []
    whole = collect(actor, tasks, cfg, 9, framing, on_episode=lambda e, m: ended.append((e.group_id, m)))
    assert sorted(ended) == [(g, m) for g in range(2) for m in range(3)]
    first = {key: whole[key[0]].episodes[key[1]] for key in ended[:2]}
    again: list[tuple[int, int]] = []
    resumed = collect(
        actor, tasks, cfg, 9, framing, finished=first, on_episode=lambda e, m: again.append((e.group_id, m))
    )
    assert [g.to_dict() for g in resumed] == [g.to_dict() for g in whole]
    assert sorted(again) == sorted(set(ended) - set(first))
