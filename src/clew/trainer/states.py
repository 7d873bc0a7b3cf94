"""What the policy holds before each turn, scored by the learner's weights for credit: its hidden state at the turn's
last prompt token (the ``hidden`` features of similarity anchor groups) and its belief in the gold answer (IGPO)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from clew.policy.scoring import action_logprobs, eval_mode, head_split
from clew.tensors import TokenRow, left_pad, pack_spans, positions
from clew.trainer.torch_helpers import chunks, compute_dtype


def prompt_states(
    model: Any, prompts: Sequence[Sequence[int]], pad_id: int, rows_per_pass: int, dtype: str = "float32"
) -> np.ndarray:
    """(N, D) float64: the last hidden state (the backbone's output, after its final norm) at the last token of
    each prompt, under ``model``'s current weights, without gradients, in eval mode, ``rows_per_pass`` prompts
    per forward (left-padded, so that the last position is every prompt's last token)."""
    backbone = split[0] if (split := head_split(model)) else None
    parts: list[np.ndarray] = []
    with torch.no_grad(), eval_mode(model), compute_dtype(model, dtype):
        for rows in chunks(range(len(prompts)), rows_per_pass):
            parts.append(_last_states(model, backbone, [prompts[i] for i in rows], pad_id))
    return np.concatenate(parts) if parts else np.zeros((0, 0))


def _last_states(model: Any, backbone: Any, prompts: list[Sequence[int]], pad_id: int) -> np.ndarray:
    """(B, D) the final hidden state at the last position of each left-padded prompt."""
    device = next(model.parameters()).device
    ids, mask = (t.to(device) for t in left_pad(prompts, pad_id))
    kwargs = {"input_ids": ids, "attention_mask": mask, "position_ids": positions(mask), "use_cache": False}
    if backbone is not None:  # no (B, T, V) logits
        hidden = backbone(**kwargs).last_hidden_state
    else:
        hidden = model(**kwargs, output_hidden_states=True).hidden_states[-1]
    return hidden[:, -1].float().cpu().numpy().astype(np.float64)  # (B, D)


def gold_logprobs(
    model: Any, prompts: Sequence[Sequence[int]], golds: Sequence[Sequence[int]], pad_id: int, rows_per_pass: int,
    dtype: str = "float32",
) -> np.ndarray:  # fmt: skip
    """(N,) float64: the mean log-prob per token of ``golds[i]`` teacher-forced right after ``prompts[i]`` (the
    model's own distribution, temperature 1), under ``model``'s current weights, without gradients, in eval
    mode, ``rows_per_pass`` rows per forward; NaN where ``golds[i]`` is empty (no gold reply)."""
    return span_logprobs(model, prompts, golds, pad_id, rows_per_pass, dtype, reduce="mean")


def span_logprobs(
    model: Any, prompts: Sequence[Sequence[int]], spans: Sequence[Sequence[int]], pad_id: int, rows_per_pass: int,
    dtype: str = "float32", reduce: str = "mean",
) -> np.ndarray:  # fmt: skip
    """(N,) float64: the log-prob of ``spans[i]`` teacher-forced right after ``prompts[i]`` at temperature 1,
    summed over its tokens (``reduce="sum"``) or averaged (``"mean"``), under ``model``'s current weights, without
    gradients, in eval mode, ``rows_per_pass`` rows per forward; NaN where ``spans[i]`` is empty."""
    if reduce not in ("mean", "sum"):
        raise ValueError(f"reduce must be one of ['mean', 'sum'], got {reduce!r}")
    out = np.full(len(prompts), np.nan)
    scored = [i for i, span in enumerate(spans) if span]
    with torch.no_grad(), eval_mode(model), compute_dtype(model, dtype):
        for rows in chunks(scored, rows_per_pass):
            total, count = _span_logprobs(model, [prompts[i] for i in rows], [spans[i] for i in rows], pad_id)
            out[rows] = total / count if reduce == "mean" else total
    return out


def _span_logprobs(
    model: Any, prompts: list[Sequence[int]], spans: list[Sequence[int]], pad_id: int
) -> tuple[np.ndarray, np.ndarray]:
    """(B,) the summed log-prob of each span after its prompt, and (B,) its token count."""
    packed = pack_spans([[(list(p), False), (list(g), True)] for p, g in zip(prompts, spans)], pad_id)
    device = next(model.parameters()).device
    ids, mask, span = (t.to(device) for t in (packed.input_ids, packed.attention_mask, packed.action_mask))
    logp, _ = action_logprobs(model, ids, mask, span, 1.0)
    total = (logp.float() * span).sum(dim=1).cpu().numpy().astype(np.float64)
    return total, span.sum(dim=1).float().cpu().numpy().astype(np.float64)


def token_entropies(
    model: Any, rows: Sequence[TokenRow], pad_id: int, rows_per_pass: int, dtype: str = "float32",
    temperature: float = 1.0,
) -> list[list[float]]:  # fmt: skip
    """Each row's policy entropy (of softmax(logits / ``temperature``)) at every action token, in the row's token
    order, under ``model``'s current weights, without gradients, in eval mode, ``rows_per_pass`` rows per forward."""
    out: list[list[float]] = [[] for _ in rows]
    device = next(model.parameters()).device
    with torch.no_grad(), eval_mode(model), compute_dtype(model, dtype):
        for part in chunks(range(len(rows)), rows_per_pass):
            packed = pack_spans([rows[i].spans for i in part], pad_id)
            ids, mask, action = (t.to(device) for t in (packed.input_ids, packed.attention_mask, packed.action_mask))
            _, entropy = action_logprobs(model, ids, mask, action, temperature)
            for j, i in enumerate(part):
                out[i] = entropy[j][action[j].bool()].float().cpu().tolist()
    return out


def token_logprobs(
    model: Any, turns: Sequence[tuple[Sequence[int], Sequence[int]]], pad_id: int, rows_per_pass: int,
    dtype: str = "float32", temperature: float = 1.0,
) -> np.ndarray:  # fmt: skip
    """(K,) float64: the log-prob (of softmax(logits / ``temperature``)) of every action token of each (prompt ids,
    action ids) pair, concatenated in order, under ``model``'s weights, without gradients, in eval mode."""
    parts: list[np.ndarray] = []
    device = next(model.parameters()).device
    with torch.no_grad(), eval_mode(model), compute_dtype(model, dtype):
        for part in chunks(range(len(turns)), rows_per_pass):
            packed = pack_spans([[(list(turns[i][0]), False), (list(turns[i][1]), True)] for i in part], pad_id)
            ids, mask, action = (t.to(device) for t in (packed.input_ids, packed.attention_mask, packed.action_mask))
            logp, _ = action_logprobs(model, ids, mask, action, temperature)
            parts.append(logp[action.bool()].float().cpu().numpy().astype(np.float64))
    return np.concatenate(parts) if parts else np.zeros(0)
