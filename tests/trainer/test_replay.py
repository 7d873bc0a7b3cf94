"""Experience replay: the store, ARPO's injection, self-imitation rows by hand, the loop (resume with the store),
a fixed training task set, config errors."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clew.credit import CreditInput, compute
from clew.store.run import read_jsonl
from clew.store.trajectories import read_trajectories
from clew.trainer import Trainer
from clew.trainer.checkpoint import checkpoints
from clew.trainer.config import RunConfig
from clew.trainer.replay import REPLAY_FILE, ReplayBuffer, all_failed, imitation_rows, inject
from clew.types import Episode, Group, Turn

Make = Callable[..., RunConfig]
MIXED = ["env.id=tests.contract_envs:Parity", "eval.every=0", "eval.at_start=false", "eval.at_end=false"]


def _episode(seed: int, success: bool, turns: int = 1, group: int = 0) -> Episode:
    steps = [Turn([1, 2], [5 + t, 6], [-0.5, -0.25], "a", info={"success": success}) for t in range(turns)]
    return Episode("parity", group, seed, steps, outcome=float(success), terminated=True)


def test_the_store_keeps_the_newest_successes(tmp_path: Path) -> None:
    store = ReplayBuffer(capacity=2)
    assert store.add([Group(0, "parity", 1, [_episode(1, True), _episode(1, False)])]) == 1
    store.add([Group(1, "parity", 2, [_episode(2, True), _episode(3, True)])])
    assert [e.seed for e in store.episodes] == [2, 3]  # the first success fell out
    assert store.successes_of("parity", 3) == [store.episodes[1]] and store.successes_of("parity", 1) == []
    assert sorted(e.seed for e in store.sample(5, 0)) == [2, 3] and len(store.sample(1, 0)) == 1
    store.save(tmp_path)
    again = ReplayBuffer(capacity=2)
    again.load(tmp_path)
    assert [e.to_dict() for e in again.episodes] == [e.to_dict() for e in store.episodes]
    assert (tmp_path / REPLAY_FILE).exists()


def test_arpo_puts_a_stored_success_into_an_all_failure_group() -> None:
    store = ReplayBuffer(16, [_episode(7, True, group=99), _episode(9, True)], per_task=8)
    failed = Group(3, "parity", 7, [_episode(7, False, group=3) for _ in range(8)])
    mixed = Group(4, "parity", 7, [_episode(7, True, group=4), _episode(7, False, group=4)])
    other = Group(5, "parity", 8, [_episode(8, False, group=5)])
    groups, injected = inject([failed, mixed, other], store, seed=0)
    assert injected == 1
    assert groups[0].episodes[0].success and groups[0].episodes[1:] == failed.episodes[1:]  # the first replaced
    assert groups[0].episodes[0].group_id == 3 and store.episodes[0].group_id == 99  # a copy, the store unchanged
    assert groups[1] is mixed and groups[2] is other
    # objectives.md section 22: [0 x 8] with a stored success -> [1, 0 x 7]: GRPO's A = [2.47487, -0.35355 x 7]
    outcomes = [e.outcome for e in groups[0].episodes]
    inp = CreditInput.from_arrays(group=[0] * 8, episode=list(range(8)), turn=[0] * 8, reward=outcomes,
                                  outcome=outcomes)  # fmt: skip
    advantage = compute("grpo", inp).turn_advantage
    assert advantage[0] == pytest.approx(2.47487, abs=1e-5) and advantage[1:] == pytest.approx([-0.35355] * 7, abs=1e-5)


def test_arpo_draws_among_a_tasks_newest_successes() -> None:
    store = ReplayBuffer(16, [_episode(7, True, turns=n) for n in (1, 2, 3)], per_task=2)
    assert [len(e.turns) for e in store.successes_of("parity", 7)] == [2, 3]
    drawn = {len(inject([Group(0, "parity", 7, [_episode(7, False)])], store, seed=s)[0][0].episodes[0].turns)
             for s in range(20)}  # fmt: skip
    assert drawn == {2, 3}
    assert not all_failed(Group(0, "parity", 7, [_episode(7, False), _episode(7, True)]))


def test_imitation_rows_by_hand() -> None:
    """Baseline 0.25: a success of two turns gets advantage 0.75 on every action token, a failure no row; episode ids
    start after the fresh batch's."""
    rows = imitation_rows([_episode(1, True, turns=2), _episode(2, False)], 0.25, first_episode=10, merge_prefix=False)
    assert [r.episode for r in rows] == [10, 10]
    assert all(r.advantages == [0.75, 0.75] for r in rows)
    assert all(r.behavior_logprobs == [-0.5, -0.25] for r in rows)  # the stored behaviour log-probs, for TIS
    assert imitation_rows([_episode(1, True)], 1.0, 0, False) == []  # no advantage left: nothing to imitate


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return load_file(str(checkpoints(run)[-1] / "policy" / "model.safetensors"))


def test_self_imitation_trains_and_resumes_with_its_store(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("iterations=3", "tasks_per_iteration=4", "replay.capacity=16", "replay.mode=sil",
                   "replay.per_iteration=4", "objective.tis_cap=2.0", *MIXED)  # fmt: skip
    Trainer(cfg, tmp_path / "whole").fit()
    rows = [r for r in read_jsonl(tmp_path / "whole" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert rows[0]["replay/imitation_rows"] == 0 and rows[0]["replay/added"] > 0  # nothing stored before the first
    assert any(r["replay/imitation_rows"] > 0 for r in rows[1:])
    assert [r["replay/stored"] for r in rows] == sorted(r["replay/stored"] for r in rows)
    assert (checkpoints(tmp_path / "whole")[-1] / REPLAY_FILE).exists()
    Trainer(cfg, tmp_path / "split").fit(stop_after=1)
    Trainer(cfg, tmp_path / "split").fit(resume=True)
    whole, split = _weights(tmp_path / "whole"), _weights(tmp_path / "split")
    assert all(torch.equal(whole[k], split[k]) for k in whole)


def test_arpo_on_a_fixed_task_set(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("iterations=3", "tasks_per_iteration=4", "env.train_seeds=3", "replay.capacity=8",
                   "replay.mode=arpo", "objective.tis_cap=2.0", *MIXED)  # fmt: skip
    Trainer(cfg, tmp_path / "run").fit()
    seeds = {
        t["seed"]
        for i in (1, 2, 3)
        for t in read_trajectories(tmp_path / "run" / "trajectories" / f"iter_00000{i}.parquet")
    }
    assert seeds <= {0, 1, 2}
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert all(r["replay/imitation_rows"] == 0 and r["replay/injected"] >= 0 for r in rows)


def test_replay_needs_importance_sampling(tiny_cfg: Make) -> None:
    with pytest.raises(ValueError, match=r"replay.capacity=4 .* objective.tis_cap"):
        tiny_cfg("replay.capacity=4")
