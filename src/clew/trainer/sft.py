"""The SFT warm start: cross-entropy on the action tokens of demonstrations, before RL."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from clew.policy.hf import HFPolicy
from clew.policy.lora import trainable
from clew.policy.scoring import action_logprobs
from clew.tensors import pack_spans
from clew.trainer.config import SFTConfig
from clew.trainer.torch_helpers import adamw, chunks, compute_dtype

StepReport = Callable[[int, int, float], None]  # (steps done, steps in all, the last step's loss)


def sft(
    policy: HFPolicy,
    rows: Sequence[tuple[list[int], list[int]]],
    cfg: SFTConfig,
    seed: int,
    dtype: str = "float32",
    on_step: StepReport | None = None,
) -> list[float]:
    """Cross-entropy on action tokens only (token mean per batch); returns the loss per step.

    Trains what RL trains: every weight, or a LoRA policy's adapters. ``on_step`` hears of every optimizer step
    (the CLI's progress bar)."""
    params = trainable(policy.model)
    optimizer = adamw(params, lr=cfg.lr)
    total_steps = cfg.epochs * -(-len(rows) // cfg.batch_rows)
    losses: list[float] = []
    policy.model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(len(rows), generator=torch.Generator().manual_seed(seed + epoch)).tolist()
        for batch_idx in chunks(order, cfg.batch_rows):
            total = max(1, sum(len(rows[i][1]) for i in batch_idx))  # the batch's action tokens: its token mean
            loss = torch.zeros(())
            for micro in chunks(batch_idx, cfg.microbatch_rows or len(batch_idx)):  # gradients accumulate exactly
                packed = pack_spans([[(rows[i][0], False), (rows[i][1], True)] for i in micro], policy.pad_id)
                with compute_dtype(policy.model, dtype):
                    logp, _ = action_logprobs(policy.model, packed.input_ids, packed.attention_mask, packed.action_mask)
                part = -(logp * packed.action_mask).sum() / total
                part.backward()
                loss = loss + part.detach()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if on_step:
                on_step(len(losses), total_steps, losses[-1])
    policy.model.eval()
    return losses
