"""Torch helpers every training stage shares (RL learner, SFT, preference, PRM, state vectors): train mode without
dropout, the forward's compute dtype, AdamW with the fused kernel, index chunks."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from typing import Any

import torch


@contextlib.contextmanager
def training_mode(model: Any) -> Iterator[None]:
    """Train mode with every dropout off, then eval mode.

    The old log-probs were scored in eval mode (the engine, ``recompute_old_logprobs``), so the loss forward
    must be deterministic too, or the first PPO ratio is not 1. Modules stay in train mode (gradient
    checkpointing keys on it) while every ``Dropout`` module (LoRA's, GPT-2's, most HF hidden dropout) and
    every module with an ``attention_dropout`` rate (Llama, Qwen, SmolLM attention) is switched to eval; a
    model that applies functional dropout keyed on a decoder layer's own ``training`` flag (OPT's
    ``dropout``, Falcon's ``hidden_dropout``) is not covered: set those rates to 0 in its config.
    """
    model.train()
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) or isinstance(getattr(module, "attention_dropout", None), float):
            module.eval()
    try:
        yield
    finally:
        model.eval()


def chunks(items: Sequence[int], size: int) -> Iterator[list[int]]:
    for start in range(0, len(items), size):
        yield list(items[start : start + size])


def adamw(params: list[torch.nn.Parameter], lr: float, weight_decay: float = 0.0) -> torch.optim.AdamW:
    """AdamW with torch's fused kernel where every parameter allows it (float tensors on CPU or CUDA): the same
    update as the default per-tensor loop, an order of magnitude faster on CPU (benchmarks/README.md, issue 27)."""
    fused = bool(params) and all(p.dtype.is_floating_point and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused or None)


def compute_dtype(model: Any, dtype: str) -> AbstractContextManager[Any]:
    """Forward passes in ``dtype``: bfloat16 is autocast over float32 master weights, float32 is plain."""
    if dtype == "float32":
        return contextlib.nullcontext()
    device = next(model.parameters()).device.type
    return torch.autocast(device_type=device, dtype=getattr(torch, dtype))
