"""Transformers policy: batched sampling with exact token ids and log-probs, and row scoring.

Log-probabilities are those of ``softmax(logits / temperature)`` at the sampled token (top-p
truncation changes which tokens can be drawn, not the reported log-prob), so the learner's
``logprobs`` on the same rows reproduces ``behavior_logprobs`` up to float error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from clew.policy.chat import ChatFormat
from clew.tensors import left_pad, pack_rows, positions


@dataclass(frozen=True)
class SamplingParams:
    """How to sample one completion per prompt."""

    temperature: float = 1.0
    top_p: float = 1.0
    max_new_tokens: int = 32
    stop_token_ids: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise ValueError(f"temperature must be >= 0 (0 = greedy), got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Completion:
    """One sampled completion: exact ids (a sampled stop token included) and their log-probs."""

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" or "length"
    text: str = ""
    entropies: list[float] = field(default_factory=list)


def token_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of every token given its prefix, (B, T); position 0 gets 0.

    Differentiable; the learner uses it for the policy, the reference model and SFT.
    """
    logits = model(input_ids=input_ids, attention_mask=attention_mask, position_ids=positions(attention_mask))
    logits = logits.logits[:, :-1].float() / (temperature if temperature > 0 else 1.0)  # (B, T-1, V)
    logp_all = torch.log_softmax(logits, dim=-1)
    picked = logp_all.gather(-1, input_ids[:, 1:, None]).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    pad = torch.zeros_like(picked[:, :1])
    return torch.cat([pad, picked], dim=1), torch.cat([pad, entropy], dim=1)


class HFPolicy:
    """Any Hugging Face causal LM (by name or path) as a clew policy."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.chat = ChatFormat.from_tokenizer(tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, dtype: torch.dtype = torch.float32) -> HFPolicy:
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
        model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype)
        return cls(model, tokenizer)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    @torch.no_grad()
    def generate(self, prompts: Sequence[Sequence[int]], params: SamplingParams, seed: int) -> list[Completion]:
        """Sample one completion per prompt in one batched, KV-cached decode (seeded)."""
        if not prompts:
            return []
        gen = torch.Generator().manual_seed(seed)
        ids, mask = left_pad(prompts, self.pad_id)
        stops = torch.tensor(sorted({self.eos_id, *params.stop_token_ids}), dtype=torch.long)
        out = self.model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True)
        pos = positions(mask)[:, -1]
        alive = torch.ones(len(prompts), dtype=torch.bool)
        tokens, logps, ents = [], [], []
        for step in range(params.max_new_tokens):
            tok, logp, ent = _sample(out.logits[:, -1].float(), params, gen)
            tok = torch.where(alive, tok, torch.full_like(tok, self.pad_id))
            tokens.append(tok)
            logps.append(logp)
            ents.append(ent)
            alive = alive & ~torch.isin(tok, stops)
            if not bool(alive.any()) or step == params.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos + 1
            out = self.model(
                input_ids=tok[:, None],
                attention_mask=mask,
                position_ids=pos[:, None],
                past_key_values=out.past_key_values,
                use_cache=True,
            )
        return self._completions(torch.stack(tokens, 1), torch.stack(logps, 1), torch.stack(ents, 1), stops)

    def _completions(
        self, tokens: torch.Tensor, logps: torch.Tensor, ents: torch.Tensor, stops: torch.Tensor
    ) -> list[Completion]:
        result = []
        for row, lrow, erow in zip(tokens.tolist(), logps.tolist(), ents.tolist()):
            end = next((i + 1 for i, t in enumerate(row) if t in set(stops.tolist())), None)
            n = end if end is not None else len(row)
            ids = row[:n]
            reason = "stop" if end is not None else "length"
            result.append(Completion(ids, lrow[:n], reason, self.decode(ids), erow[:n]))
        return result

    @torch.no_grad()
    def logprobs(
        self, rows: Sequence[tuple[Sequence[int], Sequence[int]]], temperature: float = 1.0
    ) -> list[list[float]]:
        """Score ``(prompt_ids, action_ids)`` rows: the log-prob of each action token."""
        packed = pack_rows(rows, self.pad_id)
        logp, _ = token_logprobs(self.model, packed.input_ids, packed.attention_mask, temperature)
        out = []
        for i in range(len(rows)):
            sel = packed.action_mask[i].bool()
            out.append(logp[i][sel].tolist())
        return out


def _sample(
    logits: torch.Tensor, params: SamplingParams, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one token per row; return (token, log-prob under softmax(logits/T), entropy)."""
    temp = params.temperature if params.temperature > 0 else 1.0
    logp = torch.log_softmax(logits / temp, dim=-1)  # (B, V)
    entropy = -(logp.exp() * logp).sum(-1)
    if params.temperature == 0:
        tok = logp.argmax(-1)
    else:
        probs = _top_p(logp.exp(), params.top_p)
        tok = torch.multinomial(probs, 1, generator=gen).squeeze(-1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1), entropy


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = (sorted_p.cumsum(-1) - sorted_p) < top_p
    sorted_p = sorted_p * keep
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)
