"""Row scoring for the learner: log-probs and entropies at action positions only, the LM head in chunks.

A causal LM's vocabulary projection is the largest single matmul on small models (SmolLM2-135M: 576 x
49,152, a fifth of its weights) and its float32 logits the largest tensor ((tokens x vocab) x 4 bytes).
Prompt and observation tokens never need it: only the hidden state at ``t - 1`` of an action token at
``t`` is projected. ``action_logprobs`` therefore runs the model's backbone (``get_decoder()``), gathers
those hidden states and applies the head (``get_output_embeddings()``) to them in chunks of at most
``logits_budget`` float32 elements; under autograd a chunk beyond the first is recomputed in backward
(activation checkpointing), so full float32 logits of the batch never exist at once.

The split is checked once per model against the model's own forward on a few tokens; a model whose
logits are more than ``head(backbone(x))`` (Gemma-2's soft-capping, Cohere's logit scale, ...) fails
the check and is scored through its full forward instead, with the same result.
"""

from __future__ import annotations

import contextlib
import weakref
from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from clew.tensors import positions

LOGITS_BUDGET = 1 << 25  # float32 logits per chunk: 128 MiB (683 tokens at SmolLM2's 49,152 vocabulary)
_SPLITS: weakref.WeakKeyDictionary[Any, tuple[Any, Any] | None] = weakref.WeakKeyDictionary()


@contextlib.contextmanager
def eval_mode(model: Any) -> Iterator[None]:
    """Every module in eval mode, then each back to its own flag (a loss forward keeps dropout off)."""
    modes = [m.training for m in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, mode in zip(model.modules(), modes):
            module.training = mode


def full_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of every token given its prefix, (B, T); position 0 gets 0. The whole
    (B, T, V) logits: kept for models whose head does not split off, and as the reference in tests."""
    out = model(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask), use_cache=False
    )
    logits = out.logits[:, :-1].float() / (temperature if temperature > 0 else 1.0)  # (B, T-1, V)
    logp_all = torch.log_softmax(logits, dim=-1)
    picked = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    pad = torch.zeros_like(picked[:, :1])
    return torch.cat([pad, picked], dim=1), torch.cat([pad, entropy], dim=1)


def action_logprobs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    action_mask: torch.Tensor,
    temperature: float = 1.0,
    logits_budget: int = LOGITS_BUDGET,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob, entropy) of the tokens where ``action_mask`` is 1 given their prefix, (B, T), 0 elsewhere.

    Equal to ``full_logprobs`` masked by ``action_mask`` up to float rounding (a matmul over fewer rows
    may block differently); differentiable."""
    split = head_split(model)
    if split is None:
        logp, entropy = full_logprobs(model, input_ids, attention_mask, temperature)
        mask = action_mask.to(logp.dtype)
        return logp * mask, entropy * mask
    backbone, head = split
    hidden = backbone(
        input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask), use_cache=False
    ).last_hidden_state
    where = action_mask[:, 1:].bool()  # the token at t is scored by the hidden state at t - 1
    picked, entropy = head_logprobs(head, hidden[:, :-1][where], input_ids[:, 1:][where], temperature, logits_budget)
    return _scatter(picked, where), _scatter(entropy, where)


def action_outputs(
    model: Any,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    action_mask: torch.Tensor,
    temperature: float = 1.0,
    logits_budget: int = LOGITS_BUDGET,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``action_logprobs`` plus the final hidden state that scores each action token, (n, H) in row-major order of
    the action positions (what a value head reads; ``scatter_actions`` puts per-token values back to (B, T))."""
    split = head_split(model)
    where = action_mask[:, 1:].bool()
    kwargs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": positions(attention_mask)}
    if split is None:
        out = model(**kwargs, use_cache=False, output_hidden_states=True)
        logits = out.logits[:, :-1][where].float() / (temperature if temperature > 0 else 1.0)
        logp_all = torch.log_softmax(logits, dim=-1)
        picked = logp_all.gather(-1, input_ids[:, 1:][where][:, None]).squeeze(-1)
        entropy = -(logp_all.exp() * logp_all).sum(-1)
        states = out.hidden_states[-1][:, :-1][where]
    else:
        backbone, head = split
        hidden = backbone(**kwargs, use_cache=False).last_hidden_state
        states = hidden[:, :-1][where]
        picked, entropy = head_logprobs(head, states, input_ids[:, 1:][where], temperature, logits_budget)
    return _scatter(picked, where), _scatter(entropy, where), states


def scatter_actions(values: torch.Tensor, action_mask: torch.Tensor) -> torch.Tensor:
    """(B, T) with per-action-token ``values`` (n,) at the action positions, 0 elsewhere."""
    return _scatter(values, action_mask[:, 1:].bool())


def head_logprobs(
    head: Any, hidden: torch.Tensor, targets: torch.Tensor, temperature: float, logits_budget: int = LOGITS_BUDGET
) -> tuple[torch.Tensor, torch.Tensor]:
    """(log-prob of ``targets``, entropy), (N,) each, from (N, H) hidden states, ``logits_budget`` logits at a time."""
    vocab = int(head.weight.shape[0])
    size = max(1, logits_budget // vocab)
    if hidden.shape[0] <= size:
        return _chunk(head, hidden, targets, temperature)
    recompute = torch.is_grad_enabled() and hidden.requires_grad
    parts = []
    for start in range(0, hidden.shape[0], size):
        h, t = hidden[start : start + size], targets[start : start + size]
        if recompute:
            parts.append(checkpoint(_chunk, head, h, t, temperature, use_reentrant=False))
        else:
            parts.append(_chunk(head, h, t, temperature))
    return torch.cat([p[0] for p in parts]), torch.cat([p[1] for p in parts])


def _chunk(
    head: Any, hidden: torch.Tensor, targets: torch.Tensor, temperature: float
) -> tuple[torch.Tensor, torch.Tensor]:
    logits = head(hidden).float() / (temperature if temperature > 0 else 1.0)  # (n, V)
    logp_all = torch.log_softmax(logits, dim=-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp_all.gather(-1, targets[:, None]).squeeze(-1), entropy


def _scatter(values: torch.Tensor, where: torch.Tensor) -> torch.Tensor:
    """(B, T) with ``values`` at the true positions of ``where`` (B, T - 1) shifted right by one, 0 elsewhere."""
    inner = torch.zeros(where.shape, dtype=values.dtype, device=values.device).masked_scatter(where, values)
    return torch.cat([torch.zeros_like(inner[:, :1]), inner], dim=1)


def head_split(model: Any) -> tuple[Any, Any] | None:
    """(backbone, LM head) of ``model`` when its logits are exactly ``head(backbone(x).last_hidden_state)``
    (checked once per model on a few tokens), else None."""
    if model not in _SPLITS:
        _SPLITS[model] = _find_split(model)
    return _SPLITS[model]


def _find_split(model: Any) -> tuple[Any, Any] | None:
    try:
        backbone, head = model.get_decoder(), model.get_output_embeddings()
    except (AttributeError, NotImplementedError, ValueError):
        return None
    if backbone is None or backbone is model or not isinstance(getattr(head, "weight", None), torch.Tensor):
        return None
    device = head.weight.device
    ids = (torch.arange(1, 9, device=device) % int(head.weight.shape[0]))[None]
    mask = torch.ones_like(ids)
    try:
        with torch.no_grad(), eval_mode(model):
            whole = model(input_ids=ids, attention_mask=mask, use_cache=False).logits.float()
            parts = head(backbone(input_ids=ids, attention_mask=mask, use_cache=False).last_hidden_state).float()
    except (TypeError, AttributeError, RuntimeError):
        return None
    same = whole.shape == parts.shape and torch.allclose(whole, parts, rtol=1e-4, atol=1e-5)
    return (backbone, head) if same else None
