"""Where judgements come from: any clew engine with its tokenizer (a local HF or vLLM model), or any
OpenAI-compatible chat endpoint. Torch-free: a local judge is handed an engine built elsewhere
(``clew.trainer.judging``)."""

from __future__ import annotations

import json
import os
import threading
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from clew.policy.base import Engine, SamplingParams
from clew.rewards.prompts import Messages, approximate_count


class JudgeBackend(Protocol):
    """Chat completions for judgements. ``name`` keys the cache; ``context_tokens`` bounds a request (the
    judged text is cut to fit); ``batch`` is how many requests one ``complete`` call should take (a local
    engine decodes them as one batch; an endpoint takes one, the service's threads send several at once)."""

    @property
    def name(self) -> str: ...

    @property
    def context_tokens(self) -> int: ...

    @property
    def batch(self) -> int: ...

    @property
    def special_tokens(self) -> tuple[str, ...]: ...

    def count(self, text: str) -> int: ...

    def complete(self, requests: Sequence[Messages], temperature: float, max_tokens: int,
                 seeds: Sequence[int], prefix: str = "") -> list[str]: ...  # fmt: skip

    def close(self) -> None: ...


@dataclass
class EngineJudge:
    """A clew engine (``hf``, ``vllm``, ...) and its tokenizer: messages rendered by the tokenizer's chat template
    (a template without a system role gets the rubric at the top of the user message), replies decoded without
    special tokens. One ``complete`` at a time (an engine is not shared across threads)."""

    engine: Engine
    tokenizer: Any
    name: str
    batch: int = 16
    context_tokens: int = 0  # 0: the engine's max_model_len
    special_tokens: tuple[str, ...] = ()
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.context_tokens = self.context_tokens or int(self.engine.max_model_len)
        added = getattr(self.tokenizer, "added_tokens_decoder", {}) or {}
        strings = [*getattr(self.tokenizer, "all_special_tokens", []), *(str(t) for t in added.values())]
        self.special_tokens = self.special_tokens or tuple(sorted(set(strings)))

    def count(self, text: str) -> int:
        return len(self.tokenizer.encode(text, add_special_tokens=False))

    def render(self, messages: Messages) -> list[int]:
        try:
            text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception:  # a template without a system role
            merged = [{"role": "user", "content": "\n\n".join(m["content"] for m in messages)}]
            text = self.tokenizer.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)
        return list(self.tokenizer.encode(str(text), add_special_tokens=False))

    def complete(self, requests: Sequence[Messages], temperature: float, max_tokens: int,
                 seeds: Sequence[int], prefix: str = "") -> list[str]:  # fmt: skip
        """Replies to ``requests``; ``prefix`` starts each reply (the judge continues it: ``"SCORE:"`` keeps a small
        model to the format) and is part of the returned text."""
        start = list(self.tokenizer.encode(prefix, add_special_tokens=False)) if prefix else []
        prompts = [self.render(m) + start for m in requests]
        eos = getattr(self.tokenizer, "eos_token_id", None)
        params = SamplingParams(temperature, 1.0, max_tokens, (eos,) if eos is not None else ())
        with self._lock:
            out = self.engine.generate(prompts, params, list(seeds))
        return [prefix + str(self.tokenizer.decode(c.token_ids, skip_special_tokens=True)) for c in out]

    def close(self) -> None:
        self.engine.close()


@dataclass
class OpenAIJudge:
    """``URL/chat/completions`` with ``model`` (a served clew policy, vLLM's server, a hosted API); the key from the
    environment variable ``api_key_env`` when set. Token counts are approximate (``approximate_count``) and
    ``context_tokens`` is the caller's statement of the model's context. A failed request raises; the service
    records it as a failed judgement."""

    url: str
    model: str
    context_tokens: int = 4096
    timeout_s: float = 60.0
    api_key_env: str = "OPENAI_API_KEY"
    batch: int = 1
    special_tokens: tuple[str, ...] = ()

    @property
    def name(self) -> str:
        return f"openai:{self.url}|{self.model}"

    def count(self, text: str) -> int:
        return approximate_count(text)

    def complete(self, requests: Sequence[Messages], temperature: float, max_tokens: int,
                 seeds: Sequence[int], prefix: str = "") -> list[str]:  # fmt: skip
        """Replies to ``requests``; a chat endpoint cannot be made to continue a ``prefix``, so it is not sent (the
        parser finds the verdict anywhere in the reply)."""
        return [self._one(m, temperature, max_tokens, s) for m, s in zip(requests, seeds)]

    def _one(self, messages: Messages, temperature: float, max_tokens: int, seed: int) -> str:
        body = {"model": self.model, "messages": messages, "temperature": temperature, "max_tokens": max_tokens,
                "seed": seed % (1 << 31)}  # fmt: skip
        headers = {"Content-Type": "application/json",
                   "Authorization": f"Bearer {os.environ.get(self.api_key_env, 'none')}"}  # fmt: skip
        endpoint = self.url.rstrip("/") + "/chat/completions"
        request = urllib.request.Request(endpoint, json.dumps(body).encode(), headers, method="POST")
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            data = json.load(response)
        return str(data["choices"][0]["message"].get("content") or "")

    def close(self) -> None:
        return None
