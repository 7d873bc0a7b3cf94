"""clew: reinforcement learning for long-horizon, multi-turn LLM agents, with credit first-class."""

__version__ = "0.1.0"
