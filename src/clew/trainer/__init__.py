"""Training: config, learner, SFT warm start, the loop, checkpoints."""

from clew.trainer.config import RunConfig, load_config
from clew.trainer.loop import Trainer

__all__ = ["RunConfig", "Trainer", "load_config"]
