"""Rollout: drives Env and Policy into Episodes and Groups with exact tokens."""

from clew.rollout.actors import Actor, PolicyActor, ScriptedActor
from clew.rollout.context import Framing, FullContext, History, WindowContext, make_context
from clew.rollout.loop import RolloutConfig, Task, collect, derive_seed, env_turns

__all__ = [
    "Actor",
    "Framing",
    "FullContext",
    "History",
    "PolicyActor",
    "RolloutConfig",
    "ScriptedActor",
    "Task",
    "WindowContext",
    "collect",
    "derive_seed",
    "env_turns",
    "make_context",
]
