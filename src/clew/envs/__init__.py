"""Torch-free text environments: the Env protocol, a registry of versioned ids, and a checker."""

from clew.envs.base import Closeable, Env, EnvFinishedError, HasExpert, HasStateKey, HasValidActions, StepResult
from clew.envs.checker import check_env
from clew.envs.registry import EnvFamily, EnvSpec, families, make, register, register_family, registered

__all__ = [
    "Closeable",
    "Env",
    "EnvFamily",
    "EnvFinishedError",
    "EnvSpec",
    "HasExpert",
    "HasStateKey",
    "HasValidActions",
    "StepResult",
    "check_env",
    "families",
    "make",
    "register",
    "register_family",
    "registered",
]
