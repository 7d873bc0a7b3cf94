"""Torch-free text environments: the Env protocol, a registry of versioned ids, and a checker."""

from clew.envs.base import (
    Closeable,
    Env,
    EnvFinishedError,
    HasExpert,
    HasGoldReply,
    HasSeats,
    HasSnapshot,
    HasStateKey,
    HasValidActions,
    InfraError,
    PickledSnapshot,
    StepResult,
    failure_type,
)
from clew.envs.checker import check_env
from clew.envs.registry import EnvFamily, EnvSpec, families, make, register, register_family, registered

__all__ = [
    "Closeable",
    "Env",
    "EnvFamily",
    "EnvFinishedError",
    "EnvSpec",
    "HasExpert",
    "HasGoldReply",
    "HasSeats",
    "HasSnapshot",
    "HasStateKey",
    "HasValidActions",
    "InfraError",
    "PickledSnapshot",
    "StepResult",
    "check_env",
    "failure_type",
    "families",
    "make",
    "register",
    "register_family",
    "registered",
]
