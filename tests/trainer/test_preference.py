"""Trajectory DPO and KTO: the losses by hand, the microbatched step against whole-batch autograd, the pairs and
labels of a batch, online and offline training through the loop (offline resume bit for bit), config errors."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from clew.objectives.preference import dpo_loss, kto_loss, kto_reference_point
from clew.policy import HFPolicy
from clew.policy.scoring import action_logprobs
from clew.store.run import read_jsonl
from clew.tensors import pack_spans
from clew.trainer import Trainer
from clew.trainer.checkpoint import checkpoints
from clew.trainer.config import RunConfig
from clew.trainer.data_sections import PreferenceConfig
from clew.trainer.preference import REFERENCE_FILE, Episodes, load_run_episodes, preference_step

Make = Callable[..., RunConfig]
MIXED = ["env.id=tests.contract_envs:Parity", "eval.every=0", "eval.at_start=false", "eval.at_end=false"]


def test_dpo_by_hand() -> None:
    """pi_w - ref_w = 2, pi_l - ref_l = -3, beta 0.1: margin 0.5, loss log(1 + e^-0.5) = 0.474077."""
    policy, ref = torch.tensor([-1.0, -6.0]), torch.tensor([-3.0, -3.0])
    loss, metrics = dpo_loss(policy, ref, [(0, 1)], 0.1)
    assert float(loss) == pytest.approx(math.log1p(math.exp(-0.5))) == pytest.approx(0.474077, abs=1e-6)
    assert float(metrics["preference/margin"]) == pytest.approx(0.5) and float(metrics["preference/accuracy"]) == 1.0
    empty, _ = dpo_loss(policy.requires_grad_(True), ref, [], 0.1)
    assert float(empty.detach()) == 0.0


def test_kto_by_hand() -> None:
    """r = [2, -1], z0 = max(0, 0.5) = 0.5, beta 0.1: desirable 1 - s(0.15), undesirable 1 - s(0.15) = 0.462570."""
    policy, ref, good = torch.tensor([2.0, -1.0]), torch.zeros(2), torch.tensor([True, False])
    loss, metrics = kto_loss(policy, ref, good, 0.1)
    assert float(metrics["preference/kto_z0"]) == pytest.approx(0.5)
    assert float(loss) == pytest.approx(1 - 1 / (1 + math.exp(-0.15))) == pytest.approx(0.462570, abs=1e-6)
    weighted, _ = kto_loss(policy, ref, good, 0.1, desirable_weight=2.0)
    assert float(weighted) == pytest.approx(1.5 * 0.4625701, abs=1e-6)
    assert float(kto_reference_point(torch.tensor([-2.0, -1.0]), torch.zeros(2))) == 0.0  # KL estimate clamped at 0


def _rows() -> tuple[list[tuple[list[int], list[int]]], np.ndarray]:
    rng = np.random.default_rng(3)
    rows = [([1, *rng.integers(5, 200, size=int(n)).tolist()], rng.integers(5, 200, size=3).tolist())
            for n in rng.integers(3, 9, size=6)]  # fmt: skip
    return rows, np.array([0, 0, 1, 1, 2, 2])


def test_the_kto_step_has_the_whole_batch_gradient(tiny_policy: HFPolicy) -> None:
    """The memory-bounded step (two rows per pass) equals autograd through all episodes' summed log-probs at once."""
    rows, episode = _rows()
    model = __import__("copy").deepcopy(tiny_policy.model).eval()
    ref, good = torch.tensor([-25.0, -30.0, -28.0], dtype=torch.float64), torch.tensor([True, False, True])
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    grads: list[list[torch.Tensor]] = []
    optimizer.step = lambda: grads.append([p.grad.clone() for p in model.parameters()])  # type: ignore[method-assign,union-attr,misc]
    loss_of = lambda logp: kto_loss(logp, ref, good, 0.5)  # noqa: E731
    preference_step(model, optimizer, rows, episode, 3, loss_of, tiny_policy.pad_id, rows_per_pass=2, max_grad_norm=1e9)
    packed = pack_spans([[(p, False), (a, True)] for p, a in rows], tiny_policy.pad_id)
    logp, _ = action_logprobs(model, packed.input_ids, packed.attention_mask, packed.action_mask)
    per_episode = torch.zeros(3).index_add(0, torch.from_numpy(episode), (logp * packed.action_mask).sum(dim=1))
    kto_loss(per_episode.double(), ref, good, 0.5)[0].backward()
    for got, want in zip(grads[0], [p.grad for p in model.parameters()], strict=True):
        torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-4)


def test_pairs_and_labels_of_a_batch() -> None:
    data = Episodes([], np.zeros(0, dtype=np.int64), [0, 0, 0, 1, 1], [1.0, 0.0, 0.5, 1.0, 1.0],
                    [True, False, False, True, True], np.zeros(5))  # fmt: skip
    policy = torch.tensor([-1.0, -2.0, -3.0, -4.0, -5.0])
    _, metrics = data.loss(PreferenceConfig(loss="dpo"), range(5))(policy)
    # pairs (0, 1), (0, 2), (2, 1); group 1 ties: margins 0.1 * [1, 2, -1] -> accuracy 2/3
    assert float(metrics["preference/accuracy"]) == pytest.approx(2 / 3)
    assert float(metrics["preference/margin"]) == pytest.approx(0.1 * 2 / 3)


@pytest.mark.parametrize("loss", ["dpo", "kto"])
def test_online_preference_updates(tiny_cfg: Make, tmp_path: Path, loss: str) -> None:
    Trainer(tiny_cfg(f"preference.loss={loss}", "tasks_per_iteration=4", *MIXED), tmp_path / "run").fit()
    rows = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert all(r["train/optimizer_steps"] >= 1 and math.isfinite(r["preference/loss"]) for r in rows)
    assert (loss == "kto") == all("preference/kto_z0" in r for r in rows)


def test_offline_dpo_reads_a_run_and_resumes_bit_exact(tiny_cfg: Make, tmp_path: Path) -> None:
    Trainer(tiny_cfg("iterations=2", "tasks_per_iteration=4", *MIXED), tmp_path / "data").fit()
    rows, episode, group, _, _ = load_run_episodes(tmp_path / "data")
    assert len(group) == 2 * 4 * 4 and len(set(group)) == 8 and len(rows) == len(episode)
    cfg = tiny_cfg("iterations=3", "preference.loss=dpo", f"preference.data={tmp_path / 'data'}",
                   "preference.groups_per_step=2", "train.lr=0.001", *MIXED)  # fmt: skip
    Trainer(cfg, tmp_path / "whole").fit()
    records = [r for r in read_jsonl(tmp_path / "whole" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert [r["iteration"] for r in records] == [1, 2, 3] and all(r["preference/episodes"] == 32 for r in records)
    assert records[-1]["preference/loss"] < records[0]["preference/loss"]  # the data set's own pairs, learned
    assert (tmp_path / "whole" / REFERENCE_FILE).exists() and (tmp_path / "whole" / "curves.png").exists()
    Trainer(cfg, tmp_path / "split").fit(stop_after=1)
    Trainer(cfg, tmp_path / "split").fit(resume=True)
    whole, split = (load_file(str(checkpoints(tmp_path / r)[-1] / "policy" / "model.safetensors"))
                    for r in ("whole", "split"))  # fmt: skip
    assert all(torch.equal(whole[k], split[k]) for k in whole)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        (["preference.data=/nonexistent"], "set preference.loss"),
        (["preference.loss=dpo", "preference.data=/nonexistent"], "not a clew run directory"),
        (["preference.loss=ipo"], "preference.loss"),
    ],
)
def test_preference_config_errors(tiny_cfg: Make, overrides: list[str], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        tiny_cfg(*overrides)
