"""Torch-free text environments: the Env protocol, a registry of versioned ids, and a checker."""

from clew.envs.base import Env, EnvFinishedError, HasStateKey, StepResult
from clew.envs.checker import check_env
from clew.envs.registry import EnvSpec, make, register, registered

__all__ = [
    "Env",
    "EnvFinishedError",
    "EnvSpec",
    "HasStateKey",
    "StepResult",
    "check_env",
    "make",
    "register",
    "registered",
]
