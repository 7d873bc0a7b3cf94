"""Transformers: the policy the learner trains (model + tokenizer + chat framing), row scoring, and the
``hf`` rollout engine.

Log-probabilities are those of ``softmax(logits / temperature)`` at the sampled token (top-p
truncation changes which tokens can be drawn, not the reported log-prob), so the learner's
``logprobs`` on the same rows reproduces ``behavior_logprobs`` up to float error.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging

from clew.policy.base import Completion, EngineError, SamplingParams
from clew.policy.chat import ChatFormat
from clew.policy.models import resolve_model
from clew.policy.scoring import action_logprobs, full_logprobs
from clew.tensors import left_pad, pack_rows, positions


def token_logprobs(
    model: Any, input_ids: torch.Tensor, attention_mask: torch.Tensor, temperature: float = 1.0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-prob and entropy of every token given its prefix, (B, T); position 0 gets 0 (the full logits;
    the learner scores action positions only, ``clew.policy.scoring.action_logprobs``)."""
    return full_logprobs(model, input_ids, attention_mask, temperature)


class HFPolicy:
    """Any Hugging Face causal LM (by name or path) with its tokenizer and chat framing: what the learner trains."""

    def __init__(self, model: Any, tokenizer: Any) -> None:
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.eos_id = tokenizer.eos_token_id
        self.chat = ChatFormat.from_tokenizer(tokenizer)

    @classmethod
    def from_pretrained(cls, name_or_path: str | Path, dtype: torch.dtype = torch.float32) -> HFPolicy:
        """Load model and tokenizer; a model that fails to load is one ``EngineError`` naming path and reason."""
        name_or_path = resolve_model(str(name_or_path))
        hf_logging.disable_progress_bar()
        hf_logging.set_verbosity_error()
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(name_or_path))
            model = AutoModelForCausalLM.from_pretrained(str(name_or_path), dtype=dtype)
        except (OSError, ValueError, KeyError) as exc:
            reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise EngineError(f"cannot load model {name_or_path}: {reason}") from None
        return cls(model, tokenizer)

    def decode(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))

    @torch.no_grad()
    def logprobs(
        self, rows: Sequence[tuple[Sequence[int], Sequence[int]]], temperature: float = 1.0
    ) -> list[list[float]]:
        """Score ``(prompt_ids, action_ids)`` rows: the log-prob of each action token."""
        packed = pack_rows(rows, self.pad_id)
        logp, _ = action_logprobs(self.model, packed.input_ids, packed.attention_mask, packed.action_mask, temperature)
        out = []
        for i in range(len(rows)):
            sel = packed.action_mask[i].bool()
            out.append(logp[i][sel].tolist())
        return out


class HFEngine:
    """The ``hf`` engine: batched, KV-cached decoding with transformers; every request has its own seed.

    Built on a loaded model (``make_engine("hf", policy.model, tokenizer=policy.tokenizer)``), the engine
    *is* the learner's model: ``load_weights`` of the learner's own tensors copies nothing. Built on a
    path, it loads its own copy. Requests submitted to the stream are decoded together at the next
    ``poll`` (one batch per poll); each row draws its tokens from its own generator, so a request's
    sample does not depend on its batch mates (up to float rounding of batched matmuls: log-probs move in the
    last bits, ~5e-7, with the batch's size and padding). ``batch_invariant=True``
    (``rollout.engine_params={batch_invariant: true}``) decodes every request alone, so a completion is the
    same bits whatever else was asked with it (slower: no batching); a run resumed in the middle of a
    rollout then ends bit-identical to an uninterrupted one (``clew.trainer.partial``).
    """

    continuous_batching = False  # one batch per poll: the scheduler gathers requests before polling

    def __init__(self, model: Any, tokenizer: Any = None, batch_invariant: bool = False) -> None:
        if isinstance(model, str | Path):
            policy = HFPolicy.from_pretrained(model)
            model, tokenizer = policy.model, policy.tokenizer
        if tokenizer is None:
            raise ValueError("the hf engine needs the model's tokenizer (tokenizer=...) when given a loaded model")
        self.policy, self.batch_invariant = HFPolicy(model, tokenizer), batch_invariant
        self.max_model_len = int(getattr(model.config, "max_position_embeddings", 1 << 30))
        self._queue: list[tuple[int, list[int], SamplingParams, int]] = []

    # --- Engine -----------------------------------------------------------------------------------
    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]:
        """One completion per prompt, decoded as one batch; ``seeds[i]`` drives request i's draws."""
        if len(seeds) != len(prompts):
            raise ValueError(f"generate needs one seed per prompt: {len(prompts)} prompts, {len(seeds)} seeds")
        if not prompts:
            return []
        return self._batch(prompts, params, seeds)

    @torch.no_grad()
    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        """Copy tensors into the model by name (a no-op for the model's own tensors)."""
        own = dict(self.policy.model.state_dict())
        for name, tensor in named_tensors:
            if name not in own:
                raise KeyError(f"hf engine: the model has no tensor {name!r}")
            if own[name].data_ptr() != tensor.data_ptr():
                own[name].copy_(tensor)

    def close(self) -> None:
        self._queue.clear()

    # --- Streams ----------------------------------------------------------------------------------
    def submit(self, key: int, prompt: Sequence[int], params: SamplingParams, seed: int) -> None:
        self._queue.append((key, list(prompt), params, seed))

    def pending(self) -> int:
        return len(self._queue)

    def poll(self) -> list[tuple[int, Completion]]:
        """Decode everything submitted so far (one batch per distinct ``SamplingParams``)."""
        queue, self._queue = self._queue, []
        done: list[tuple[int, Completion]] = []
        for params in dict.fromkeys(q[2] for q in queue):
            batch = [q for q in queue if q[2] == params]
            outs = self._batch([q[1] for q in batch], params, [q[3] for q in batch])
            done += [(q[0], c) for q, c in zip(batch, outs)]
        return done

    def _batch(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]:
        if self.batch_invariant:
            return [self._decode([prompt], params, [seed])[0] for prompt, seed in zip(prompts, seeds)]
        return self._decode(prompts, params, seeds)

    # --- decoding ---------------------------------------------------------------------------------
    @torch.no_grad()
    def _decode(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]:
        model, pad_id = self.policy.model, self.policy.pad_id
        gens = [torch.Generator().manual_seed(int(s) % (1 << 63)) for s in seeds]
        ids, mask = left_pad(prompts, pad_id)
        stops = torch.tensor(sorted({self.policy.eos_id, *params.stop_token_ids}), dtype=torch.long)
        out = model(input_ids=ids, attention_mask=mask, position_ids=positions(mask), use_cache=True)
        pos = positions(mask)[:, -1]
        alive = torch.ones(len(prompts), dtype=torch.bool)
        tokens, logps, ents = [], [], []
        for step in range(params.max_new_tokens):
            tok, logp, ent = _sample(out.logits[:, -1].float(), params, gens)
            tok = torch.where(alive, tok, torch.full_like(tok, pad_id))
            tokens.append(tok)
            logps.append(logp)
            ents.append(ent)
            alive = alive & ~torch.isin(tok, stops)
            if not bool(alive.any()) or step == params.max_new_tokens - 1:
                break
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
            pos = pos + 1
            out = model(
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
        stop_set = set(stops.tolist())
        result = []
        for row, lrow, erow in zip(tokens.tolist(), logps.tolist(), ents.tolist()):
            end = next((i + 1 for i, t in enumerate(row) if t in stop_set), None)
            n = end if end is not None else len(row)
            ids = row[:n]
            reason = "stop" if end is not None else "length"
            result.append(Completion(ids, lrow[:n], reason, self.policy.decode(ids), erow[:n]))
        return result


def _sample(
    logits: torch.Tensor, params: SamplingParams, gens: Sequence[torch.Generator]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw one token per row (row i from ``gens[i]``, by inverse CDF); return (token, log-prob under
    softmax(logits/T), entropy)."""
    temp = params.temperature if params.temperature > 0 else 1.0
    logp = torch.log_softmax(logits / temp, dim=-1)  # (B, V)
    entropy = -(logp.exp() * logp).sum(-1)
    if params.temperature == 0:
        tok = logp.argmax(-1)
    else:
        cdf = _top_p(logp.exp(), params.top_p).cumsum(-1)
        u = torch.cat([torch.rand(1, generator=g, dtype=cdf.dtype) for g in gens]) * cdf[:, -1]
        tok = torch.searchsorted(cdf, u[:, None], right=True).squeeze(-1).clamp(max=cdf.shape[-1] - 1)
    return tok, logp.gather(-1, tok[:, None]).squeeze(-1), entropy


def _top_p(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return probs
    sorted_p, order = probs.sort(dim=-1, descending=True)
    keep = (sorted_p.cumsum(-1) - sorted_p) < top_p
    sorted_p = sorted_p * keep
    return torch.zeros_like(probs).scatter(-1, order, sorted_p)
