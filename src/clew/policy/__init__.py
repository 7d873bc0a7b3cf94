"""Policies: the tiny offline model factory and the transformers backend."""

from clew.policy.chat import ChatFormat
from clew.policy.hf import Completion, HFPolicy, SamplingParams, token_logprobs
from clew.policy.tiny import TinyModelConfig, build_tiny

__all__ = [
    "ChatFormat",
    "Completion",
    "HFPolicy",
    "SamplingParams",
    "TinyModelConfig",
    "build_tiny",
    "token_logprobs",
]
