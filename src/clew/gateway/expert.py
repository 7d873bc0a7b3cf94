"""A scripted expert behind the gateway, for SFT demonstrations from an unmodified harness.

``ExpertEngine(expert, tokenizer)`` is an engine whose every completion is ``expert(prompt_text)``: the text an
expert writes in reply to the prompt (the harness's real prompt, decoded with its special tokens, so the
expert can read the question and any tool results), encoded and closed with the stop token. Run the harness
against a gateway on it and the gateway records what the harness really sent, token for token, with the
expert's replies as the actions: SFT rows in exactly the format RL will sample in (the agent's own system
prompt, tool schemas and history rendering), with no demonstration format to keep in sync by hand.
Log-probs are 0 (the expert is deterministic); these episodes are never trained by RL.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from clew.policy.base import Completion, SamplingParams


class ExpertEngine:
    """The ``Engine`` contract over a function ``expert(prompt_text) -> reply_text``."""

    continuous_batching = False
    max_model_len = 1 << 30

    def __init__(self, expert: Callable[[str], str], tokenizer: Any) -> None:
        self.expert, self.tokenizer = expert, tokenizer
        self.eos_id = int(tokenizer.eos_token_id)

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]:
        out = []
        for prompt in prompts:
            reply = str(self.expert(self.tokenizer.decode(list(prompt))))
            ids = [*self.tokenizer.encode(reply, add_special_tokens=False), self.eos_id]
            out.append(Completion(ids, [0.0] * len(ids), "stop", reply))
        return out

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None:
        raise RuntimeError("the expert engine has no weights")

    def close(self) -> None:
        pass
