"""Policies and rollout engines: the engine contract, the transformers backend, the tiny offline model.

The engine contract (``clew.policy.base``) and the chat framing (``clew.policy.chat``) import without torch;
the transformers-backed names (``HFPolicy``, ``HFEngine``, ``token_logprobs``, ``TinyModelConfig``,
``build_tiny``) load torch on first use (PEP 562), so ``import clew.policy.base`` stays torch-free.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from clew.policy.base import (
    Completion,
    Engine,
    EngineError,
    EngineSpec,
    SamplingParams,
    Streams,
    engine_spec,
    engines,
    make_engine,
    register_engine,
)
from clew.policy.chat import ChatFormat

if TYPE_CHECKING:
    from clew.policy.hf import HFEngine, HFPolicy, token_logprobs
    from clew.policy.tiny import TinyModelConfig, build_tiny

_LAZY = {
    "HFEngine": "clew.policy.hf",
    "HFPolicy": "clew.policy.hf",
    "token_logprobs": "clew.policy.hf",
    "TinyModelConfig": "clew.policy.tiny",
    "build_tiny": "clew.policy.tiny",
}


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'clew.policy' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


__all__ = [
    "ChatFormat",
    "Completion",
    "Engine",
    "EngineError",
    "EngineSpec",
    "HFEngine",
    "HFPolicy",
    "SamplingParams",
    "Streams",
    "TinyModelConfig",
    "build_tiny",
    "engine_spec",
    "engines",
    "make_engine",
    "register_engine",
    "token_logprobs",
]
