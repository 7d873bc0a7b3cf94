"""Policies and rollout engines: the engine contract, the transformers backend, the tiny offline model."""

from clew.policy.base import Completion, Engine, EngineError, SamplingParams, Streams, engines, make_engine
from clew.policy.chat import ChatFormat
from clew.policy.hf import HFEngine, HFPolicy, token_logprobs
from clew.policy.tiny import TinyModelConfig, build_tiny

__all__ = [
    "ChatFormat",
    "Completion",
    "Engine",
    "EngineError",
    "HFEngine",
    "HFPolicy",
    "SamplingParams",
    "Streams",
    "TinyModelConfig",
    "build_tiny",
    "engines",
    "make_engine",
    "token_logprobs",
]
