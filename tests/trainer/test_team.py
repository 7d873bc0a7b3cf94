"""A team of policies: solve-verify-v0's roles by hand, seat routing, and a two-policy run that resumes bit for bit."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from clew.cli import main
from clew.envs import HasSeats, make
from clew.policy import Completion
from clew.rollout import RolloutConfig, ScriptedActor, SeatActors, Task, collect
from clew.store.run import checkpoints, read_jsonl
from clew.trainer.config import load_config
from clew.trainer.team import TeamTrainer


def test_solve_verify_scores_each_role_by_hand() -> None:
    env = make("solve-verify-v0", digits=2)
    assert isinstance(env, HasSeats) and env.seats() == 2
    first = env.reset(4)
    a, b = env.a, env.b  # type: ignore[attr-defined]
    assert env.to_act() == 0 and f"What is {a} + {b}?" in first
    seen = env.step(f"answer: {a + b + 1}").observation  # a wrong answer ...
    assert env.to_act() == 1 and f"answer: {a + b + 1}" in seen
    assert env.step("wrong").terminated and env.verdicts() == [0.0, 1.0]  # ... that the verifier catches
    env.reset(4)
    env.step(f"answer: {a + b}")
    result = env.step("maybe")
    assert env.verdicts() == [1.0, 0.0] and result.info["invalid_action"]
    with pytest.raises(ValueError, match="digits"):
        make("solve-verify-v0", digits=9)


class _Counting(ScriptedActor):
    """A scripted actor that counts its requests."""

    def __init__(self, kind: str) -> None:
        super().__init__(kind)
        self.asked = 0

    def submit(self, key: int, prompt: list[int], env: object, seed: int) -> None:
        self.asked += 1
        super().submit(key, prompt, env, seed)  # type: ignore[arg-type]

    def poll(self) -> list[tuple[int, Completion | Exception]]:
        return list(super().poll())


def test_each_seat_asks_its_own_policy() -> None:
    solver, verifier = _Counting("expert"), _Counting("random")
    groups = collect(SeatActors([solver, verifier]), [Task("solve-verify-v0", s) for s in range(3)],
                     RolloutConfig(group_size=4), seed=0)  # fmt: skip
    assert solver.asked == verifier.asked == 12  # one move each per game
    solvers, verifiers = groups[:3], groups[3:]
    assert all(e.outcome == 1.0 and e.agent == 0 for g in solvers for e in g.episodes)  # the expert solves
    verdicts = [e.turns[0].action_text for g in verifiers for e in g.episodes]
    assert set(verdicts) <= {"correct", "wrong"} and [e.outcome for g in verifiers for e in g.episodes] == [
        1.0 if v == "correct" else 0.0 for v in verdicts
    ]  # the random verifier is right exactly when it says "correct" to a right answer


def test_a_team_needs_two_named_roles_and_a_game_with_a_seat_each(tiny_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="two or more"):
        load_config(None, [f"policy.model={tiny_dir}", "roles=[solo]"])
    with pytest.raises(ValueError, match="twice"):
        load_config(None, [f"policy.model={tiny_dir}", "roles=[a, a]"])
    cfg = load_config(None, [f"policy.model={tiny_dir}", "roles=[a, b]", "env.id=keydoor-v0"])
    with pytest.raises(ValueError, match="hands 1 seat"):
        TeamTrainer(cfg, tmp_path / "r").fit()


CONFIG = """
env: {{id: solve-verify-v0, kwargs: {{digits: 1}}}}
policy: {{model: {model}}}
roles: [solver, verifier]
iterations: 2
tasks_per_iteration: 4
rollout: {{group_size: 4, max_new_tokens: 12, context: window, engine_params: {{batch_invariant: true}}}}
sft: {{enabled: true, episodes: 32, epochs: 25, batch_rows: 16, noise: 0.5}}
shaping: {{invalid_action_penalty: 0.1, overlong_penalty: 0.1}}
train: {{minibatch_rows: 16, microbatch_rows: 8}}
eval: {{every: 0, at_start: false, at_end: true, episodes: 8}}
checkpoint_every: 1
"""


def _weights(ckpt: Path) -> dict[str, torch.Tensor]:
    return load_file(str(ckpt / "model.safetensors"))


def test_a_two_policy_run_trains_both_and_resumes_both_bit_for_bit(tiny_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "team.yaml").write_text(CONFIG.format(model=tiny_dir))
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    assert main(["train", str(tmp_path / "team.yaml"), "--out", str(whole)]) == 0
    cfg = load_config(tmp_path / "team.yaml", [])
    TeamTrainer(cfg, cut).fit(stop_after=1)
    TeamTrainer(cfg, cut).fit(resume=True)
    for role in ("solver", "verifier"):
        mine, theirs = checkpoints(cut / "roles" / role)[-1], checkpoints(whole / "roles" / role)[-1]
        assert mine.name == theirs.name == "iter_000002"
        a, b = _weights(mine / "policy"), _weights(theirs / "policy")
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # restored bit for bit
        start = _weights(whole / "roles" / role / "sft" / "policy")
        assert any(not torch.equal(start[k], b[k]) for k in b)  # RL changed this role's policy
        evals = [r for r in read_jsonl(whole / "roles" / role / "metrics.jsonl") if r.get("kind") == "eval"]
        assert evals and evals[-1]["eval/episodes"] == 8  # its own seat of the team's 8 held-out games
    solver_sft = [r for r in read_jsonl(whole / "roles" / "solver" / "metrics.jsonl") if r.get("kind") == "sft"]
    verifier_sft = [r for r in read_jsonl(whole / "roles" / "verifier" / "metrics.jsonl") if r.get("kind") == "sft"]
    assert solver_sft[0]["sft/rows"] == verifier_sft[0]["sft/rows"] == 32  # each role imitates its own seat's moves
    solver, verifier = (
        _weights(checkpoints(whole / "roles" / "solver")[-1] / "policy"),
        _weights(checkpoints(whole / "roles" / "verifier")[-1] / "policy"),
    )
    assert any(not torch.equal(solver[k], verifier[k]) for k in solver)  # two policies, not one
