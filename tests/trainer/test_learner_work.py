"""The learner does no work twice: the head at action positions only, one packing, a guard probed once per
step, the proximal policy from the loss forward; and each saving leaves the update as it was."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch

from clew.policy import HFPolicy, make_engine
from clew.policy import lora as lora_lib
from clew.policy.scoring import action_logprobs, full_logprobs, head_split
from clew.rollout import Framing, RolloutConfig, ScriptedActor, Task, collect
from clew.rollout.batch import to_rows
from clew.table import TurnTable
from clew.tensors import TokenRow, pack_batch
from clew.trainer import checkpoint
from clew.trainer import learner as learner_lib
from clew.trainer.config import ObjectiveConfig, TrainConfig
from clew.trainer.guard import undo_adamw_moments
from clew.trainer.learner import Learner
from clew.trainer.sync import EngineLink, probe_prompts
from clew.trainer.torch_helpers import training_mode


def _rows(policy: HFPolicy, n: int = 12) -> list[TokenRow]:
    """Per-turn rows of mixed lengths (keydoor turns grow with the history), off-policy by a little."""
    actor = ScriptedActor("expert", noise=0.5, tokenizer=policy.tokenizer)
    tasks = [Task("keydoor-v0", 3, {"width": 4, "height": 4}), Task("toolcalc-v0", 4)]
    groups = collect(actor, tasks, RolloutConfig(group_size=2, max_turns=6), 0, Framing(policy.tokenizer, policy.chat))
    table = TurnTable.from_groups(groups)
    rng = np.random.default_rng(0)
    rows = to_rows(table, rng.normal(size=table.n_turns))
    return [
        TokenRow(r.spans, r.advantages, [x - 0.05 * rng.random() for x in r.behavior_logprobs], r.episode, r.turns)
        for r in rows
    ][:n]


def _score(model: Any, rows: list[TokenRow], pad_id: int, **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
    b = pack_batch(rows, pad_id).rows
    return action_logprobs(model, b.input_ids, b.attention_mask, b.action_mask, **kwargs)


@pytest.mark.parametrize("lora", [False, True])
def test_action_positions_only_equal_the_full_logits(tiny_dir: Path, lora: bool) -> None:
    policy = HFPolicy.from_pretrained(tiny_dir)
    if lora:
        policy.model = lora_lib.attach(policy.model, r=4, alpha=8, dropout=0.0, target_modules=["q_proj", "v_proj"])
    assert head_split(policy.model) is not None
    rows = _rows(policy)
    b = pack_batch(rows, policy.pad_id).rows
    logp, ent = action_logprobs(policy.model, b.input_ids, b.attention_mask, b.action_mask, 0.7)
    full_logp, full_ent = full_logprobs(policy.model, b.input_ids, b.attention_mask, 0.7)
    torch.testing.assert_close(logp, full_logp * b.action_mask, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ent, full_ent * b.action_mask, atol=1e-5, rtol=1e-5)
    assert bool((logp[b.action_mask == 0] == 0).all())


def _grads(model: Any, loss: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad()
    loss.backward()
    return [p.grad.clone() for p in model.parameters() if p.grad is not None]


def test_the_head_in_chunks_gives_the_same_values_and_gradients(tiny_policy: HFPolicy) -> None:
    """Three tokens per chunk (recomputed in backward) against one chunk: the same log-probs and gradients."""
    model, rows = tiny_policy.model, _rows(tiny_policy)
    vocab = model.get_output_embeddings().weight.shape[0]
    one_logp, one_ent = _score(model, rows, tiny_policy.pad_id)
    many_logp, many_ent = _score(model, rows, tiny_policy.pad_id, logits_budget=3 * vocab)
    torch.testing.assert_close(one_logp, many_logp)
    torch.testing.assert_close(one_ent, many_ent)
    # float32 sums the chunks' gradient contributions in another order: a few 1e-6 apart on some CPUs
    for a, b in zip(_grads(model, (one_logp + 0.1 * one_ent).sum()), _grads(model, (many_logp + 0.1 * many_ent).sum())):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)


class _Scaled(torch.nn.Module):
    """A model whose logits are twice its head's output (as soft-capping or a logit scale would change them)."""

    def __init__(self, inner: Any) -> None:
        super().__init__()
        self.inner = inner

    def get_decoder(self) -> Any:
        return self.inner.get_decoder()

    def get_output_embeddings(self) -> Any:
        return self.inner.get_output_embeddings()

    def forward(self, **kwargs: Any) -> Any:
        return SimpleNamespace(logits=2 * self.inner(**kwargs).logits)


def test_a_model_whose_logits_are_not_head_of_backbone_is_scored_whole(tiny_policy: HFPolicy) -> None:
    scaled = _Scaled(tiny_policy.model)
    assert head_split(scaled) is None
    rows = _rows(tiny_policy)
    b = pack_batch(rows, tiny_policy.pad_id).rows
    logp, _ = action_logprobs(scaled, b.input_ids, b.attention_mask, b.action_mask)
    torch.testing.assert_close(logp, full_logprobs(scaled, b.input_ids, b.attention_mask)[0] * b.action_mask)


def test_a_microbatch_is_a_slice_of_the_batch_packed_once(tiny_policy: HFPolicy) -> None:
    rows = [
        dataclasses.replace(
            r, behavior_logprobs=[x + 0.01 for x in r.behavior_logprobs], old_logprobs=r.behavior_logprobs
        )
        for r in _rows(tiny_policy)
    ]
    whole = pack_batch(rows, tiny_policy.pad_id)
    picked = [5, 0, 3]
    part, alone = whole.select(picked), pack_batch([rows[i] for i in picked], tiny_policy.pad_id)
    for a, b in [
        (part.rows.input_ids, alone.rows.input_ids), (part.rows.attention_mask, alone.rows.attention_mask),
        (part.rows.action_mask, alone.rows.action_mask), (part.advantages, alone.advantages),
        (part.old_logprobs, alone.old_logprobs), (part.behavior_logprobs, alone.behavior_logprobs),
        (part.episode_ids, alone.episode_ids),
    ]:  # fmt: skip
        assert torch.equal(a, b)


def _update(tiny_dir: Path, rows: list[TokenRow], **train: Any) -> tuple[list[torch.Tensor], dict[str, float]]:
    policy = HFPolicy.from_pretrained(tiny_dir)
    cfg = TrainConfig(**{"lr": 1e-3, "minibatch_rows": 12, "microbatch_rows": 3, "guard_max_kl": None, **train})
    metrics = Learner(policy, cfg, ObjectiveConfig()).update(rows, seed=0)
    return [p.detach().clone() for p in policy.model.parameters()], metrics


def test_length_buckets_cut_padding_and_keep_the_update(tiny_dir: Path, tiny_policy: HFPolicy) -> None:
    rows = _rows(tiny_policy)
    assert len({r.n_tokens for r in rows}) > 3
    bucketed, with_buckets = _update(tiny_dir, rows, bucket_by_length=True)
    shuffled, without = _update(tiny_dir, rows, bucket_by_length=False)
    assert 0 <= with_buckets["train/padding_share"] < without["train/padding_share"] < 1
    for a, b in zip(bucketed, shuffled):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_the_update_reports_where_its_seconds_went(tiny_dir: Path, tiny_policy: HFPolicy) -> None:
    _, metrics = _update(tiny_dir, _rows(tiny_policy), guard_max_kl=0.05, guard_probe_rows=2)
    for stage in ("pack", "forward_backward", "optimizer", "guard"):
        assert metrics[f"time/learner/{stage}"] > 0
    assert "time/learner/old_logprobs" not in metrics  # no TIS: nothing re-scored


def test_one_step_updates_take_the_proximal_policy_from_the_loss_forward(tiny_dir: Path, tiny_policy: HFPolicy) -> None:
    """With TIS and one optimizer step, old log-probs from the loss forward (detached) equal a separate re-scoring
    pass: the same loss and gradients."""
    rows = [
        dataclasses.replace(r, behavior_logprobs=[x - 0.3 for x in r.behavior_logprobs]) for r in _rows(tiny_policy)
    ]
    learner = Learner(tiny_policy, TrainConfig(guard_max_kl=None), ObjectiveConfig(tis_cap=2.0))
    batch = pack_batch(rows, tiny_policy.pad_id)
    weights = learner._weights(rows, batch)
    with training_mode(tiny_policy.model):
        from_forward, _ = learner._loss(batch, weights, proximal_from_forward=True)
        grads_a = _grads(tiny_policy.model, from_forward)
        rescored, _ = learner._loss(learner._with_proximal(batch), weights)
        grads_b = _grads(tiny_policy.model, rescored)
    assert float(from_forward.detach()) == pytest.approx(float(rescored.detach()), abs=1e-6)
    for a, b in zip(grads_a, grads_b):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-5)


def test_a_multi_step_update_rescores_the_proximal_policy_first(tiny_dir: Path, tiny_policy: HFPolicy) -> None:
    rows = _rows(tiny_policy)
    policy = HFPolicy.from_pretrained(tiny_dir)
    cfg = TrainConfig(minibatch_rows=4, guard_max_kl=None)
    metrics = Learner(policy, cfg, ObjectiveConfig(tis_cap=2.0)).update(rows, seed=0)
    assert metrics["train/optimizer_steps"] == 3 and metrics["time/learner/old_logprobs"] > 0


def test_the_guard_probe_is_held_back_once_per_run(
    tiny_dir: Path, tiny_policy: HFPolicy, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []
    real = learner_lib.hold_back

    def counted(*args: Any) -> Any:
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(learner_lib, "hold_back", counted)
    rows = _rows(tiny_policy)
    learner = Learner(HFPolicy.from_pretrained(tiny_dir), TrainConfig(guard_probe_rows=2), ObjectiveConfig())
    learner.update(rows, seed=0)
    guard = learner.guard
    assert guard is not None and len(guard.rows) == 2
    learner.update(rows, seed=1)
    assert learner.guard is guard and calls == [1]
    # after an accepted step the probe's "before" is the current policy's score: no second forward needed
    torch.testing.assert_close(guard.reference, guard._score())


def test_a_rejected_step_restores_parameters_exactly_and_adam_state_to_rounding(
    tiny_dir: Path, tiny_policy: HFPolicy
) -> None:
    rows = _rows(tiny_policy)
    policy = HFPolicy.from_pretrained(tiny_dir)
    learner = Learner(policy, TrainConfig(guard_max_kl=1e-12, guard_backtracks=1), ObjectiveConfig())
    start = [p.detach().clone() for p in policy.model.parameters()]
    assert learner.update(rows, seed=0)["train/rejected_steps"] == 1
    assert not learner.optimizer.state  # the first step was rejected: AdamW starts afresh
    assert all(torch.equal(a, p) for a, p in zip(start, policy.model.parameters()))
    assert learner.guard is not None
    learner.guard.max_kl = 1e9
    learner.update(rows, seed=1)  # accepted: AdamW state exists now
    params = [p.detach().clone() for p in policy.model.parameters()]
    state = copy.deepcopy(learner.optimizer.state_dict()["state"])
    learner.guard.max_kl = 1e-12
    metrics = learner.update(rows, seed=2)
    assert metrics["train/rejected_steps"] == 1 and metrics["train/backtracks"] == 1  # undone twice
    assert all(torch.equal(a, p) for a, p in zip(params, policy.model.parameters()))
    after = learner.optimizer.state_dict()["state"]
    assert state.keys() == after.keys()
    for key in state:
        assert int(state[key]["step"]) == int(after[key]["step"])
        for name in ("exp_avg", "exp_avg_sq"):
            torch.testing.assert_close(after[key][name], state[key][name], atol=1e-9, rtol=1e-5)


def test_undoing_adamw_moments_inverts_one_step() -> None:
    torch.manual_seed(0)
    p = torch.nn.Parameter(torch.randn(40))
    opt = torch.optim.AdamW([p], lr=1e-2, betas=(0.9, 0.99))
    for _ in range(3):
        p.grad = torch.randn(40)
        opt.step()
    before = copy.deepcopy(opt.state[p])
    p.grad = torch.randn(40)
    opt.step()
    undo_adamw_moments(opt.state[p], p.grad, (0.9, 0.99))
    assert int(opt.state[p]["step"]) == int(before["step"]) == 3
    for name in ("exp_avg", "exp_avg_sq"):
        torch.testing.assert_close(opt.state[p][name], before[name], atol=1e-9, rtol=1e-5)
        assert not torch.equal(opt.state[p][name], torch.zeros(40))


def test_the_probe_rows_survive_a_checkpoint(tmp_path: Path, tiny_policy: HFPolicy) -> None:
    rows = _rows(tiny_policy, n=3)
    state = checkpoint.TrainerState(1, 1, 10)
    learner = Learner(tiny_policy, TrainConfig(guard_max_kl=None), ObjectiveConfig())
    path = checkpoint.save_checkpoint(
        tmp_path, state, tiny_policy.model, tiny_policy.tokenizer, learner.optimizer, 1, rows
    )
    assert checkpoint.load_probe(path) == rows


def test_the_parity_probe_cadence(tiny_policy: HFPolicy) -> None:
    """The in-process hf engine shares the learner's tensors: probed at its first sync only by default; an
    explicit cadence probes every N-th sync."""
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    prompts = probe_prompts("keydoor-v0", {"width": 3, "height": 3}, framing)
    engine = make_engine("hf", tiny_policy.model, tokenizer=tiny_policy.tokenizer)
    for every, probed in [(None, [True, False, False, False]), (2, [True, False, True, False])]:
        rollout = RolloutConfig(max_new_tokens=3, parity_probe_every=every)
        link = EngineLink(engine, tiny_policy, prompts, rollout)
        seen = [link.sync(i) for i in range(-1, 3)]
        assert ["engine/logprob_max_abs_diff" in m for m in seen] == probed
        assert all(m["engine/logprob_max_abs_diff"] < 1e-3 for m in seen if "engine/logprob_max_abs_diff" in m)
        assert all(m["time/learner/sync"] >= 0 for m in seen)


def test_an_engine_that_receives_weights_is_probed_every_tenth_sync_or_when_training_saw_a_gap(
    tiny_policy: HFPolicy,
) -> None:
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    prompts = probe_prompts("keydoor-v0", {"width": 3, "height": 3}, framing)
    engine = make_engine("hf", tiny_policy.model, tokenizer=tiny_policy.tokenizer)
    link = EngineLink(engine, tiny_policy, prompts, RolloutConfig(max_new_tokens=3), shared=False)
    seen = [link.sync(i) for i in range(-1, 11)]
    assert ["engine/logprob_max_abs_diff" in m for m in seen] == [True] + [False] * 9 + [True, False]
    gaps = [None, 0.0, 5e-4, 2e-3]  # the last update's learner-vs-engine gap; above engine_tolerance: probe now
    assert ["engine/logprob_max_abs_diff" in link.sync(11, g) for g in gaps] == [False, False, False, True]


def test_the_learner_measures_the_sync_gap_on_its_first_step(tiny_policy: HFPolicy) -> None:
    """engine/train_logprob_max_abs_diff: max |learner - behaviour| log-prob over the first optimizer step's
    action tokens, at the weights the rows were sampled with (later steps do not count)."""
    cfg = TrainConfig(lr=1e-2, minibatch_rows=4, microbatch_rows=2, ppo_epochs=2, guard_max_kl=None)
    scored = Learner(copy.deepcopy(tiny_policy), cfg, ObjectiveConfig()).recompute_old_logprobs(_rows(tiny_policy, 8))
    rows = [dataclasses.replace(r, behavior_logprobs=r.old_logprobs, old_logprobs=None) for r in scored]
    shifted = [dataclasses.replace(r, behavior_logprobs=[b + 0.25 for b in r.behavior_logprobs]) for r in rows]
    for batch, expected in [(rows, 0.0), (shifted, 0.25)]:  # 4 steps of lr 1e-2 move the policy by more than 1e-4
        learner = Learner(copy.deepcopy(tiny_policy), cfg, ObjectiveConfig(tis_cap=2.0))
        gap = learner.update(batch, seed=0)["engine/train_logprob_max_abs_diff"]
        assert gap == pytest.approx(expected, abs=1e-4)


def test_the_parity_probe_samples_a_few_tokens(tiny_policy: HFPolicy) -> None:
    framing = Framing(tiny_policy.tokenizer, tiny_policy.chat)
    engine = make_engine("hf", tiny_policy.model, tokenizer=tiny_policy.tokenizer)
    asked: list[int] = []
    real = engine.generate

    def generate(prompts: Any, params: Any, seeds: Any) -> Any:
        asked.append(params.max_new_tokens)
        return real(prompts, params, seeds)

    engine.generate = generate  # type: ignore[method-assign]
    prompts = probe_prompts("keydoor-v0", {"width": 3, "height": 3}, framing)
    for max_new, probe, expected in [(32, 8, 8), (5, 8, 5), (32, 2, 2)]:
        rollout = RolloutConfig(max_new_tokens=max_new, parity_probe_tokens=probe)
        EngineLink(engine, tiny_policy, prompts, rollout).sync(-1)
        assert asked[-1] == expected


def test_fused_adamw_is_the_default_loop_up_to_rounding() -> None:
    torch.manual_seed(0)
    plain = [torch.nn.Parameter(torch.randn(20, 30)) for _ in range(3)]
    fast = [torch.nn.Parameter(p.detach().clone()) for p in plain]
    loop_opt = torch.optim.AdamW(plain, lr=1e-2, weight_decay=0.01)
    fused_opt = learner_lib.adamw(fast, lr=1e-2, weight_decay=0.01)
    assert fused_opt.defaults["fused"]
    for _ in range(4):
        grads = [torch.randn(20, 30) for _ in plain]
        for params in (plain, fast):
            for p, g in zip(params, grads):
                p.grad = g.clone()
        loop_opt.step()
        fused_opt.step()
    for a, b in zip(plain, fast):
        torch.testing.assert_close(a.detach(), b.detach(), atol=1e-6, rtol=1e-6)


def test_one_process_overlaps_the_next_rollout_with_the_update(tiny_cfg: Any, tmp_path: Path) -> None:
    """max_staleness 1 without a cluster: the update runs in a thread while the hf engine, on its own copy of the
    weights, samples the next iteration one update behind; each sync copies the weights and is probed."""
    from clew.store.run import read_jsonl
    from clew.trainer.loop import Trainer

    cfg = tiny_cfg(
        "iterations=3", "rollout.max_staleness=1", "eval.every=0", "eval.at_start=false",
        "shaping.invalid_action_penalty=0.5", "train.lr=0.01", "rollout.parity_probe_every=1",
    )  # fmt: skip
    assert cfg.objective.tis_cap == 2.0
    Trainer(cfg, tmp_path / "run").fit()
    its = [r for r in read_jsonl(tmp_path / "run" / "metrics.jsonl") if r["kind"] == "iteration"]
    assert [r["rollout/staleness"] for r in its] == [0, 1, 1]
    assert its[0]["time/rollout_ahead_s"] > 0 and "time/rollout_ahead_s" not in its[2]
    assert all(r["engine/logprob_max_abs_diff"] < 1e-3 for r in its)  # the engine's own copy is synced
    assert its[0]["train/grad_norm"] > 0  # the first update moved the weights, so iteration 1 was sampled off-policy
    assert its[1]["policy/is_weight_mean"] != pytest.approx(1.0, abs=1e-9)  # behaviour != proximal weights


def test_sft_microbatches_accumulate_the_whole_batch_gradient(tiny_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``sft.microbatch_rows`` bounds memory without changing the update: the same loss and gradients as one batch."""
    from clew.trainer import sft as sft_lib
    from clew.trainer.config import SFTConfig

    class Recorder:  # stands in for AdamW: records the gradient each step would apply
        def __init__(self, params: list[torch.Tensor], lr: float) -> None:
            self.params, self.grads = list(params), []  # type: ignore[var-annotated]

        def step(self) -> None:
            self.grads.append([p.grad.clone() for p in self.params])  # type: ignore[union-attr]

        def zero_grad(self, set_to_none: bool = True) -> None:
            for p in self.params:
                p.grad = None

    rng = np.random.default_rng(0)
    rows = [([1, *rng.integers(5, 300, size=int(n)).tolist()], rng.integers(5, 300, size=int(k)).tolist())
            for n, k in zip(rng.integers(3, 20, size=6), rng.integers(1, 5, size=6), strict=True)]  # fmt: skip
    made: list[Recorder] = []
    monkeypatch.setattr(sft_lib, "adamw", lambda params, lr: made.append(Recorder(params, lr)) or made[-1])
    policy = HFPolicy.from_pretrained(tiny_dir)
    losses = [sft_lib.sft(policy, rows, SFTConfig(enabled=True, epochs=1, batch_rows=6, microbatch_rows=m), 0)
              for m in (None, 2)]  # fmt: skip
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    whole, split = made[0].grads[0], made[1].grads[0]
    assert all(torch.allclose(a, b, rtol=1e-4, atol=1e-7) for a, b in zip(whole, split, strict=True))


def test_sft_reports_every_step_to_the_progress_bar(tiny_dir: Path) -> None:
    """``on_step`` hears each optimizer step with the whole run's step count (epochs x batches, a partial last
    batch included) and the loss that step returned."""
    from clew.trainer import sft as sft_lib
    from clew.trainer.config import SFTConfig

    rows = [([1, 2, 3 + i], [7, 8]) for i in range(5)]
    heard: list[tuple[int, int, float]] = []
    losses = sft_lib.sft(HFPolicy.from_pretrained(tiny_dir), rows, SFTConfig(enabled=True, epochs=2, batch_rows=2), 0,
                         on_step=lambda done, total, loss: heard.append((done, total, loss)))  # fmt: skip
    assert [(d, t) for d, t, _ in heard] == [(i, 6) for i in range(1, 7)]
    assert [loss for _, _, loss in heard] == losses
