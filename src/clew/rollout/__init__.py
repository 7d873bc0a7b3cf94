"""Rollout: drives Env and Policy into Episodes and Groups with exact tokens."""

from clew.rollout.actors import Actor, PolicyActor, ScriptedActor, SeatActors
from clew.rollout.config import ContextConfig, RolloutConfig
from clew.rollout.context import (
    ContextStrategy,
    Framing,
    FullContext,
    History,
    WindowContext,
    make_context,
    register_context,
)
from clew.rollout.endings import env_turns
from clew.rollout.loop import collect
from clew.rollout.tasks import Task, derive_seed

__all__ = [
    "Actor",
    "ContextConfig",
    "ContextStrategy",
    "Framing",
    "FullContext",
    "History",
    "PolicyActor",
    "RolloutConfig",
    "ScriptedActor",
    "SeatActors",
    "Task",
    "WindowContext",
    "collect",
    "derive_seed",
    "env_turns",
    "make_context",
    "register_context",
]
