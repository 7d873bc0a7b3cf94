"""OPRL's implicit PRM: the DPO loss by hand, the memory-bounded step against plain autograd, a step that prefers
the better episode, and a run that trains, checkpoints and resumes it."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from clew.objectives.preference import dpo_loss
from clew.policy import HFPolicy
from clew.policy.scoring import action_logprobs
from clew.store.run import read_jsonl
from clew.tensors import pack_spans
from clew.trainer import Trainer
from clew.trainer.checkpoint import checkpoints
from clew.trainer.config import RunConfig
from clew.trainer.preference import preference_pairs
from clew.trainer.prm import ImplicitPRM

Make = Callable[..., RunConfig]
MIXED = ["env.id=tests.contract_envs:Parity", "eval.every=0", "eval.at_start=false", "eval.at_end=false"]


def test_pairs_and_the_dpo_loss_by_hand() -> None:
    assert preference_pairs([1, 0, 1, 0.5], [0, 0, 1, 1]) == [(0, 1), (2, 3)]
    prm, ref = torch.tensor([-1.0, -3.0]), torch.tensor([-2.0, -2.0])
    margin = (-1.0 + 2.0) - (-3.0 + 2.0)  # 2
    assert float(dpo_loss(prm, ref, [(0, 1)], 0.5)[0]) == pytest.approx(math.log1p(math.exp(-0.5 * margin)))


def _rows() -> tuple[list[tuple[list[int], list[int]]], np.ndarray]:
    rng = np.random.default_rng(1)
    rows = [([1, *rng.integers(5, 200, size=int(n)).tolist()], rng.integers(5, 200, size=3).tolist())
            for n in rng.integers(3, 9, size=6)]  # fmt: skip
    return rows, np.array([0, 0, 1, 1, 2, 2])  # three episodes of two turns


def test_the_microbatched_step_has_the_whole_batch_gradient(tiny_policy: HFPolicy) -> None:
    rows, episode = _rows()
    ref, pairs, beta = np.array([-20.0, -18.0, -22.0, -19.0, -21.0, -20.5]), [(0, 1), (0, 2)], 0.5
    prm = ImplicitPRM(tiny_policy.model, tiny_policy.pad_id, lr=1e-3, rows_per_pass=2)
    grads: list[list[torch.Tensor]] = []
    prm.optimizer.step = lambda: grads.append([p.grad.clone() for p in prm.params])  # type: ignore[method-assign,union-attr]
    prm.dpo_step(rows, episode, ref, pairs, beta)
    prm.optimizer.zero_grad(set_to_none=True)
    packed = pack_spans([[(p, False), (a, True)] for p, a in rows], tiny_policy.pad_id)
    prm.model.eval()
    logp, _ = action_logprobs(prm.model, packed.input_ids, packed.attention_mask, packed.action_mask)
    per_row = (logp.float() * packed.action_mask).sum(dim=1)
    per_episode = torch.zeros(3).index_add(0, torch.from_numpy(episode), per_row)
    ref_episode = torch.zeros(3, dtype=torch.float64).index_add(0, torch.from_numpy(episode), torch.from_numpy(ref))
    dpo_loss(per_episode.double(), ref_episode, pairs, beta)[0].backward()
    torch.nn.utils.clip_grad_norm_(prm.params, 1.0)
    for got, want in zip(grads[0], [p.grad for p in prm.params], strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_a_dpo_step_raises_the_better_episode_against_the_worse(tiny_policy: HFPolicy) -> None:
    rows, episode = _rows()
    prm = ImplicitPRM(tiny_policy.model, tiny_policy.pad_id, lr=1e-2, rows_per_pass=4)
    before = prm.score(rows)
    losses = [prm.dpo_step(rows, episode, before, [(0, 1)], 0.5) for _ in range(3)]
    after = prm.score(rows) - before
    assert losses[0] == pytest.approx(math.log(2), abs=1e-6) and losses[-1] < losses[0]
    assert after[:2].sum() > 0 > after[2:4].sum()  # episode 0 up, episode 1 down
    assert all(torch.equal(a, b) for a, b in zip(tiny_policy.model.parameters(), prm.model.parameters())) is False


def test_oprl_trains_its_prm_and_resumes_bit_exact(tiny_cfg: Make, tmp_path: Path) -> None:
    cfg = tiny_cfg("credit.name=oprl", "iterations=3", "checkpoint_every=1", *MIXED)
    Trainer(cfg, tmp_path / "full").fit()
    rows = [r for r in read_jsonl(tmp_path / "full" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert all(r["time/credit_prm_logratio_s"] > 0 for r in rows)
    assert any(r["prm/pairs"] > 0 and r["prm/dpo_loss"] > 0 for r in rows)
    assert any(r["credit/prm_step_reward_abs_mean"] > 0 for r in rows)
    Trainer(cfg, tmp_path / "split").fit(stop_after=1)
    Trainer(cfg, tmp_path / "split").fit(resume=True)  # the PRM restored from its checkpoint, trained on
    for run in ("full", "split"):
        assert (checkpoints(tmp_path / run)[-1] / "prm.pt").exists()
    full, split = (torch.load(checkpoints(tmp_path / r)[-1] / "prm.pt", weights_only=True) for r in ("full", "split"))
    assert all(torch.equal(a, b) for a, b in zip(full["params"], split["params"], strict=True))


def test_a_row_without_action_tokens_leaves_the_prm_finite(tiny_policy: HFPolicy) -> None:
    rows, episode = _rows()
    rows[1] = (rows[1][0], [])  # a turn that sampled nothing
    prm = ImplicitPRM(tiny_policy.model, tiny_policy.pad_id, lr=1e-3, rows_per_pass=4)
    ref = prm.score(rows)
    assert np.isnan(ref[1])
    loss = prm.dpo_step(rows, episode, ref, [(0, 1), (0, 2)], 0.5, n_episodes=4)  # episode 3 has no rows
    assert np.isfinite(loss) and all(bool(torch.isfinite(p).all()) for p in prm.params)
    assert np.isfinite(prm.score(rows)[[0, 2, 3, 4, 5]]).all()
